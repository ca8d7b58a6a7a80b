//! Load generator for `wmlicense-service`: fires `POST /v1/grant` from many concurrent clients
//! and prints grants per second and latency percentiles.
//!
//! ```text
//! cargo run --release -p wmlicense-service --example grant_bench -- \
//!     --urls http://127.0.0.1:8080,http://127.0.0.1:8081 --concurrency 16 --duration 10
//! ```
//!
//! - `--urls`: comma-separated service URLs (`http://` only); requests go round-robin over them.
//! - `--concurrency N`: N client threads, each with one keep-alive connection per URL, each
//!   sending its next request as soon as the previous one is answered (closed loop).
//! - `--duration S` (default 10) or `--count N`: how long / how many requests in all.
//! - `--mode new` (default): every request is a new device (a fresh device ID), so every grant
//!   counts a device: the write path (device row, request record, audit line). Run the service
//!   with a `--device-limit` above requests / `--lineages`, or grants turn into refusals.
//!   `--mode counted`: each lineage is granted to `--devices K` devices once (warm-up, not
//!   timed), then every request re-asks for one of them with a new request ID: the "already
//!   counted, granted for free" path.
//! - `--lineages L` (default 4096): requests spread over L backups of distinct lineages, as
//!   many users restoring at once would (one lineage would serialize every decision on its
//!   lock, and meet the service's per-lineage rate limit).
//!
//! Output, one line: `concurrency=… requests=… granted=… refused=… transient=… failed=…
//! seconds=… grants_per_s=… p50_ms=… p99_ms=…` (latency of every answered request).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use wmlicense_core::crypto::{self, KeyPair, SealedKey};
use wmlicense_core::format::{Header, VERSION};
use wmlicense_core::service::wire::{GrantBody, PATH_GRANT};
use wmlicense_core::service::{GrantRequest, LicenseService, NetworkService, ServiceKey};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    New,
    Counted,
}

struct Args {
    urls: Vec<String>,
    concurrency: usize,
    duration: Duration,
    count: Option<u64>,
    mode: Mode,
    devices: usize,
    lineages: usize,
}

fn usage() -> ! {
    eprintln!(
        "usage: grant_bench --urls URL[,URL...] [--concurrency N] [--duration SECONDS | --count N]\n\
         \x20                  [--mode new|counted] [--devices K] [--lineages L]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut a = Args {
        urls: Vec::new(),
        concurrency: 1,
        duration: Duration::from_secs(10),
        count: None,
        mode: Mode::New,
        devices: 2,
        lineages: 4096,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| usage());
        match flag.as_str() {
            "--urls" => {
                a.urls = value()
                    .split(',')
                    .filter(|u| !u.is_empty())
                    .map(|u| u.trim_end_matches('/').to_string())
                    .collect()
            }
            "--concurrency" => a.concurrency = value().parse().unwrap_or_else(|_| usage()),
            "--duration" => {
                a.duration = Duration::from_secs_f64(value().parse().unwrap_or_else(|_| usage()))
            }
            "--count" => a.count = Some(value().parse().unwrap_or_else(|_| usage())),
            "--mode" => {
                a.mode = match value().as_str() {
                    "new" => Mode::New,
                    "counted" => Mode::Counted,
                    _ => usage(),
                }
            }
            "--devices" => a.devices = value().parse().unwrap_or_else(|_| usage()),
            "--lineages" => a.lineages = value().parse().unwrap_or_else(|_| usage()),
            "-h" | "--help" => usage(),
            _ => usage(),
        }
    }
    if a.urls.is_empty() || a.concurrency == 0 || a.lineages == 0 || a.devices == 0 {
        usage()
    }
    a
}

fn random<const N: usize>() -> [u8; N] {
    crypto::random_array().expect("the OS random generator")
}

/// A backup header of one fresh lineage, sealed to `key`.
fn sealed_header(key: &ServiceKey) -> Header {
    let lineage: [u8; 16] = random();
    let mut h = Header {
        version: VERSION,
        backup_id: random(),
        lineage_id: lineage,
        source_device_id: random(),
        created_at: 1_700_000_000,
        license_count: 1,
        service_key_id: key.key_id,
        chunk_size: 4096,
        lineages: vec![lineage],
        sealed_data_key: SealedKey {
            encapped: [0; 32],
            ciphertext: [0; 48],
        },
    };
    h.seal_data_key(&key.public_key, &random::<32>())
        .expect("HPKE seal");
    h
}

/// One keep-alive HTTP/1.1 connection.
struct Conn {
    host: String,
    stream: Option<BufReader<TcpStream>>,
}

impl Conn {
    fn new(url: &str) -> Conn {
        let host = url
            .strip_prefix("http://")
            .unwrap_or_else(|| {
                eprintln!("grant_bench: only http:// URLs: {url}");
                std::process::exit(2)
            })
            .to_string();
        Conn { host, stream: None }
    }

    /// POSTs `body`; the answer's status (a failed exchange drops the connection).
    fn post(&mut self, path: &str, body: &[u8]) -> std::io::Result<u16> {
        let r = self.try_post(path, body);
        if r.is_err() {
            self.stream = None;
        }
        r
    }

    fn try_post(&mut self, path: &str, body: &[u8]) -> std::io::Result<u16> {
        if self.stream.is_none() {
            let s = TcpStream::connect(&self.host)?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(Duration::from_secs(60)))?;
            self.stream = Some(BufReader::new(s));
        }
        let r = self.stream.as_mut().unwrap();
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            self.host,
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        r.get_mut().write_all(&req)?;
        let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(bad("connection closed"));
        }
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("no status line"))?;
        let (mut length, mut chunked, mut close) = (None, false, false);
        loop {
            line.clear();
            if r.read_line(&mut line)? == 0 {
                return Err(bad("connection closed in the headers"));
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                let v = v.trim().to_ascii_lowercase();
                match k.to_ascii_lowercase().as_str() {
                    "content-length" => length = v.parse::<u64>().ok(),
                    "transfer-encoding" => chunked = v.contains("chunked"),
                    "connection" => close = v.contains("close"),
                    _ => {}
                }
            }
        }
        if chunked {
            loop {
                line.clear();
                r.read_line(&mut line)?;
                let n = u64::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                    .map_err(|_| bad("bad chunk size"))?;
                std::io::copy(&mut r.by_ref().take(n + 2), &mut std::io::sink())?;
                if n == 0 {
                    break;
                }
            }
        } else if let Some(n) = length {
            let got = std::io::copy(&mut r.by_ref().take(n), &mut std::io::sink())?;
            if got < n {
                return Err(bad("answer cut short"));
            }
        } else {
            std::io::copy(r, &mut std::io::sink())?;
            close = true;
        }
        if close {
            self.stream = None;
        }
        Ok(status)
    }
}

#[derive(Default)]
struct Tally {
    granted: u64,
    refused: u64,
    transient: u64,
    failed: u64,
    latencies: Vec<Duration>,
}

fn main() -> ExitCode {
    let args = parse_args();
    let never = || false;
    let key = match NetworkService::new(&args.urls[0]).and_then(|s| s.service_key(&never)) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("grant_bench: the service key of {}: {e}", args.urls[0]);
            return ExitCode::FAILURE;
        }
    };
    let headers: Vec<Header> = (0..args.lineages).map(|_| sealed_header(&key)).collect();
    // Device public keys: real X25519 keys, a few of them; a device is its ID and its key, so
    // a fresh ID makes a new device.
    let pool: Vec<[u8; 32]> = (0..64)
        .map(|_| KeyPair::generate().expect("key pair").public)
        .collect();
    // The counted mode's devices: `devices` per lineage, granted once before the clock runs.
    let counted: Vec<Vec<[u8; 16]>> = if args.mode == Mode::Counted {
        (0..args.lineages)
            .map(|_| (0..args.devices).map(|_| random()).collect())
            .collect()
    } else {
        Vec::new()
    };
    let make_request = |n: u64| -> GrantRequest {
        let li = (n % args.lineages as u64) as usize;
        let (device_id, pk) = match args.mode {
            Mode::New => (random(), pool[(n % pool.len() as u64) as usize]),
            Mode::Counted => {
                let d = ((n / args.lineages as u64) % args.devices as u64) as usize;
                (counted[li][d], pool[d % pool.len()])
            }
        };
        GrantRequest {
            request_id: random(),
            header: headers[li].clone(),
            device_id,
            device_public_key: pk,
            dry_run: false,
        }
    };
    if args.mode == Mode::Counted {
        let mut conn = Conn::new(&args.urls[0]);
        for n in 0..(args.lineages * args.devices) as u64 {
            let body = serde_json::to_vec(&GrantBody::of(&make_request(n))).unwrap();
            match conn.post(PATH_GRANT, &body) {
                Ok(200) => {}
                other => {
                    eprintln!("grant_bench: warm-up grant failed: {other:?}");
                    return ExitCode::FAILURE;
                }
            }
        }
    }

    let next = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let barrier = Barrier::new(args.concurrency + 1);
    let limit = args.count.unwrap_or(u64::MAX);
    let (tallies, elapsed) = std::thread::scope(|s| {
        let workers: Vec<_> = (0..args.concurrency)
            .map(|_| {
                let (args, next, stop, barrier, make_request) =
                    (&args, &next, &stop, &barrier, &make_request);
                s.spawn(move || {
                    let mut conns: Vec<Conn> = args.urls.iter().map(|u| Conn::new(u)).collect();
                    let mut t = Tally::default();
                    barrier.wait();
                    while !stop.load(Ordering::Relaxed) {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        if n >= limit {
                            break;
                        }
                        let body = serde_json::to_vec(&GrantBody::of(&make_request(n))).unwrap();
                        let conn = &mut conns[(n % args.urls.len() as u64) as usize];
                        let t0 = Instant::now();
                        let status = conn.post(PATH_GRANT, &body);
                        let dt = t0.elapsed();
                        match status {
                            Ok(200) => t.granted += 1,
                            Ok(429) | Ok(500..=599) => t.transient += 1,
                            Ok(_) => t.refused += 1,
                            Err(_) => t.failed += 1,
                        }
                        if status.is_ok() {
                            t.latencies.push(dt);
                        }
                    }
                    t
                })
            })
            .collect();
        barrier.wait();
        let t0 = Instant::now();
        if args.count.is_none() {
            while t0.elapsed() < args.duration {
                std::thread::sleep(Duration::from_millis(10));
            }
            stop.store(true, Ordering::Relaxed);
        }
        let tallies: Vec<Tally> = workers.into_iter().map(|w| w.join().unwrap()).collect();
        (tallies, t0.elapsed())
    });

    let mut all = Tally::default();
    for t in tallies {
        all.granted += t.granted;
        all.refused += t.refused;
        all.transient += t.transient;
        all.failed += t.failed;
        all.latencies.extend(t.latencies);
    }
    all.latencies.sort();
    let pct = |p: f64| -> f64 {
        if all.latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((all.latencies.len() as f64 * p).ceil() as usize).clamp(1, all.latencies.len());
        all.latencies[i - 1].as_secs_f64() * 1000.0
    };
    let secs = elapsed.as_secs_f64();
    let requests = all.granted + all.refused + all.transient + all.failed;
    println!(
        "concurrency={} requests={} granted={} refused={} transient={} failed={} seconds={:.2} \
         grants_per_s={:.1} p50_ms={:.2} p99_ms={:.2}",
        args.concurrency,
        requests,
        all.granted,
        all.refused,
        all.transient,
        all.failed,
        secs,
        all.granted as f64 / secs,
        pct(0.50),
        pct(0.99)
    );
    if all.granted == 0 {
        eprintln!("grant_bench: no request was granted");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
