//! The store commands (list, put, import, remove) and inspect.

use crate::args::PutArgs;
use crate::Failure;
use serde_json::{json, Map, Value};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use wmlicense_core::code;
use wmlicense_core::format::{self, BACKUP_FILE};
use wmlicense_core::license::{self, unix_now, License};
use wmlicense_core::service::{hex, unhex};
use wmlicense_core::Store;

/// The rights names of `--rights`, in bit order.
const RIGHTS: &[(&str, u32)] = &[
    ("playback", license::RIGHT_PLAYBACK),
    (
        "copy-to-non-sdmi-device",
        license::RIGHT_COPY_TO_NON_SDMI_DEVICE,
    ),
    ("copy-to-cd", license::RIGHT_COPY_TO_CD),
    ("copy-to-sdmi-device", license::RIGHT_COPY_TO_SDMI_DEVICE),
    ("one-time", license::RIGHT_ONE_TIME),
    (
        "save-stream-protected",
        license::RIGHT_SAVE_STREAM_PROTECTED,
    ),
    ("copy", license::RIGHT_COPY),
    ("collaborative-play", license::RIGHT_COLLABORATIVE_PLAY),
    ("backup", license::RIGHT_BACKUP),
];

fn parse_rights(list: &str) -> Result<u32, Failure> {
    let mut bits = 0;
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let (_, bit) = RIGHTS.iter().find(|(n, _)| *n == name).ok_or_else(|| {
            Failure::invalid(format!(
                "unknown right {name:?}; the rights are {}",
                RIGHTS
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        bits |= bit;
    }
    Ok(bits)
}

fn rights_text(bits: u32) -> String {
    let names: Vec<&str> = RIGHTS
        .iter()
        .filter(|(_, b)| bits & b != 0)
        .map(|(n, _)| *n)
        .collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(",")
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A time: unix seconds, `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SSZ` (UTC).
pub fn parse_time(what: &str, s: &str) -> Result<i64, Failure> {
    let bad = || {
        Failure::invalid(format!(
            "{what} {s:?}: a time is unix seconds, YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ"
        ))
    };
    if let Ok(n) = s.parse::<i64>() {
        return if n >= 0 { Ok(n) } else { Err(bad()) };
    }
    let (date, time) = match s.split_once('T') {
        Some((d, t)) => (d, Some(t.strip_suffix('Z').ok_or_else(bad)?)),
        None => (s, None),
    };
    let num = |p: &str, lo: i64, hi: i64| -> Result<i64, Failure> {
        let n: i64 = p.parse().map_err(|_| bad())?;
        if (lo..=hi).contains(&n) && p.chars().all(|c| c.is_ascii_digit()) {
            Ok(n)
        } else {
            Err(bad())
        }
    };
    let d: Vec<&str> = date.split('-').collect();
    let [y, m, dd] = d[..] else { return Err(bad()) };
    let (y, m, dd) = (num(y, 1970, 9999)?, num(m, 1, 12)?, num(dd, 1, 31)?);
    let mut secs = days_from_civil(y, m, dd) * 86_400;
    if civil_from_days(secs / 86_400) != (y, m, dd) {
        return Err(bad());
    }
    if let Some(t) = time {
        let p: Vec<&str> = t.split(':').collect();
        let [h, mi, sec] = p[..] else {
            return Err(bad());
        };
        secs += num(h, 0, 23)? * 3600 + num(mi, 0, 59)? * 60 + num(sec, 0, 59)?;
    }
    Ok(secs)
}

/// `YYYY-MM-DDTHH:MM:SSZ`, or "-" for 0 (none).
pub fn time_text(t: i64) -> String {
    if t == 0 {
        return "-".into();
    }
    let (y, m, d) = civil_from_days(t.div_euclid(86_400));
    let s = t.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

fn bytes_arg(what: &str, s: &str) -> Result<Vec<u8>, Failure> {
    unhex(s).ok_or_else(|| Failure::invalid(format!("{what} must be hex, not {s:?}")))
}

fn store_at(store: Option<PathBuf>) -> Result<Store, Failure> {
    let dir = match store {
        Some(d) => d,
        None => wmlicense_core::paths::default_store_dir()?,
    };
    Ok(Store::open(&dir)?)
}

fn existing_store(store: Option<PathBuf>) -> Result<Store, Failure> {
    let dir = match store {
        Some(d) => d,
        None => wmlicense_core::paths::default_store_dir()?,
    };
    if !Store::exists(&dir) {
        return Err(Failure {
            hr: code::E_FILE_NOT_FOUND,
            message: format!("there is no license store at {}", dir.display()),
        });
    }
    Ok(Store::open_existing(&dir)?)
}

fn license_json(l: &License) -> Value {
    json!({
        "key_id": hex(&l.key_id),
        "title": l.title,
        "rights": rights_text(l.rights),
        "plays": l.play_count,
        "begin": l.begin_date,
        "expires": l.expiration_date,
        "issued_at": l.issued_at,
    })
}

pub fn list(store: Option<PathBuf>, json: bool) -> Result<(), Failure> {
    let store = existing_store(store)?;
    store.for_each(|l| {
        if json {
            println!("{}", license_json(l));
        } else {
            println!(
                "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                hex(&l.key_id),
                l.title.as_deref().unwrap_or("-"),
                rights_text(l.rights),
                if l.play_count < 0 {
                    "unlimited".to_string()
                } else {
                    l.play_count.to_string()
                },
                time_text(l.begin_date),
                time_text(l.expiration_date),
                time_text(l.issued_at)
            );
        }
        Ok(true)
    })?;
    Ok(())
}

pub fn put(a: PutArgs) -> Result<(), Failure> {
    let l = License {
        key_id: bytes_arg("--key-id", &a.key_id)?,
        content_key: bytes_arg("--content-key", &a.content_key)?,
        title: a.title,
        rights: parse_rights(&a.rights)?,
        play_count: a.plays,
        begin_date: a.begin.map_or(Ok(0), |t| parse_time("--begin", &t))?,
        expiration_date: a.expires.map_or(Ok(0), |t| parse_time("--expires", &t))?,
        issued_at: a
            .issued_at
            .map_or(Ok(unix_now()), |t| parse_time("--issued-at", &t))?,
    };
    l.validate()?;
    store_at(a.store)?.put(&l)?;
    Ok(())
}

/// One line of an import: the fields of `put`.
fn license_of_line(v: Value) -> Result<License, Failure> {
    let Value::Object(mut m) = v else {
        return Err(Failure::invalid("a line must be a JSON object"));
    };
    let mut take = |k: &str| m.remove(k);
    let text = |k: &str, v: Option<Value>| -> Result<Option<String>, Failure> {
        match v {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(Failure::invalid(format!("{k} must be a string"))),
        }
    };
    let time = |k: &str, v: Option<Value>, default: i64| -> Result<i64, Failure> {
        match v {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Number(n)) => n
                .as_i64()
                .filter(|n| *n >= 0)
                .ok_or_else(|| Failure::invalid(format!("{k} must be a time"))),
            Some(Value::String(s)) => parse_time(k, &s),
            Some(_) => Err(Failure::invalid(format!("{k} must be a time"))),
        }
    };
    let key_id =
        text("key_id", take("key_id"))?.ok_or_else(|| Failure::invalid("key_id is missing"))?;
    let content_key = text("content_key", take("content_key"))?
        .ok_or_else(|| Failure::invalid("content_key is missing"))?;
    let l = License {
        key_id: bytes_arg("key_id", &key_id)?,
        content_key: bytes_arg("content_key", &content_key)?,
        title: text("title", take("title"))?,
        rights: parse_rights(
            &text("rights", take("rights"))?.unwrap_or_else(|| "playback,backup".into()),
        )?,
        play_count: match take("plays") {
            None | Some(Value::Null) => -1,
            Some(v) => v
                .as_i64()
                .and_then(|n| i32::try_from(n).ok())
                .ok_or_else(|| Failure::invalid("plays must be an integer"))?,
        },
        begin_date: time("begin", take("begin"), 0)?,
        expiration_date: time("expires", take("expires"), 0)?,
        issued_at: time("issued_at", take("issued_at"), unix_now())?,
    };
    if let Some(k) = m.keys().next() {
        return Err(Failure::invalid(format!(
            "unknown field {k:?} (fields: key_id, content_key, title, rights, plays, begin, expires, issued_at)"
        )));
    }
    l.validate()?;
    Ok(l)
}

pub fn import(store: Option<PathBuf>, file: &str) -> Result<(), Failure> {
    let input: Box<dyn Read> = if file == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(file).map_err(|e| Failure {
            hr: if e.kind() == std::io::ErrorKind::NotFound {
                code::E_FILE_NOT_FOUND
            } else {
                code::E_ACCESS_DENIED
            },
            message: format!("cannot open {file}: {e}"),
        })?)
    };
    let mut licenses = Vec::new();
    for (i, line) in BufReader::new(input).lines().enumerate() {
        let line = line.map_err(|e| Failure::invalid(format!("line {}: {e}", i + 1)))?;
        if line.trim().is_empty() {
            continue;
        }
        let at = |f: Failure| Failure {
            hr: f.hr,
            message: format!("line {}: {}; nothing was imported", i + 1, f.message),
        };
        let v: Value = serde_json::from_str(&line)
            .map_err(|e| at(Failure::invalid(format!("not JSON: {e}"))))?;
        licenses.push(license_of_line(v).map_err(at)?);
    }
    store_at(store)?.put_many(&licenses)?;
    eprintln!("imported {} licenses", licenses.len());
    Ok(())
}

pub fn remove(store: Option<PathBuf>, key_id: &str) -> Result<(), Failure> {
    let kid = bytes_arg("--key-id", key_id)?;
    existing_store(store)?.remove(&kid)?;
    Ok(())
}

pub fn inspect(path: &Path, json: bool) -> Result<(), Failure> {
    let file = if path.is_dir() {
        path.join(BACKUP_FILE)
    } else {
        path.to_path_buf()
    };
    let f = std::fs::File::open(&file).map_err(|e| Failure {
        hr: if e.kind() == std::io::ErrorKind::NotFound {
            code::E_FILE_NOT_FOUND
        } else {
            code::E_ACCESS_DENIED
        },
        message: format!("cannot open {}: {e}", file.display()),
    })?;
    let h = format::read_header(&mut BufReader::new(f))?;
    let mut m = Map::new();
    m.insert("version".into(), h.version.into());
    m.insert("backup_id".into(), hex(&h.backup_id).into());
    m.insert("lineage_id".into(), hex(&h.lineage_id).into());
    m.insert("source_device_id".into(), hex(&h.source_device_id).into());
    m.insert("created_at".into(), h.created_at.into());
    m.insert("license_count".into(), h.license_count.into());
    m.insert("service_key_id".into(), hex(&h.service_key_id).into());
    m.insert("chunk_size".into(), h.chunk_size.into());
    m.insert(
        "lineages".into(),
        h.policy_lineages()
            .iter()
            .map(|l| Value::from(hex(l)))
            .collect(),
    );
    if json {
        println!("{}", Value::Object(m));
    } else {
        for (k, v) in &m {
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Array(a) => a
                    .iter()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join(" "),
                other => other.to_string(),
            };
            let text = if k == "created_at" {
                format!("{text} ({})", time_text(h.created_at))
            } else {
                text
            };
            println!("{k}: {text}");
        }
    }
    Ok(())
}
