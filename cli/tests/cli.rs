//! The `wmlicense` binary as a script or a support desk runs it: every command, `--json`
//! parsed, exit codes, an import that adds nothing when one line is bad, Ctrl-C during a
//! backup, and no content key ever printed.

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Instant;

struct Home(PathBuf);

impl Home {
    fn new(tag: &str) -> Home {
        let mut id = [0u8; 8];
        wmlicense_core::crypto::random_bytes(&mut id).unwrap();
        let d = std::env::temp_dir().join(format!(
            "wmlicense-cli-{tag}-{}",
            wmlicense_core::service::hex(&id)
        ));
        std::fs::create_dir_all(&d).unwrap();
        Home(d)
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_wmlicense"));
        c.arg("--home").arg(&self.0);
        c.env_remove("WMLICENSE_HOME");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    fn path(&self, p: &str) -> String {
        self.0.join(p).to_string_lossy().into_owned()
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// Exit 1 whose stderr names `code` in hex and by name.
fn assert_fails_with(o: &Output, hex: &str, name: &str) {
    assert_eq!(o.status.code(), Some(1), "{}", stderr(o));
    let e = stderr(o);
    assert!(e.contains(hex) && e.contains(name), "{e}");
    assert!(e.contains("what to do:"), "{e}");
}

fn json_lines(o: &Output) -> Vec<Value> {
    stdout(o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

const CONTENT_KEY: &str = "c0ffee0123456789c0ffee0123456789";

#[test]
fn every_command_with_json_and_exit_codes() {
    let h = Home::new("all");
    let put = h.run(&[
        "put",
        "--key-id",
        "0a0b",
        "--content-key",
        CONTENT_KEY,
        "--title",
        "Song",
        "--rights",
        "playback,backup",
        "--plays",
        "3",
        "--begin",
        "2020-01-02",
        "--expires",
        "2099-12-31T23:59:59Z",
        "--issued-at",
        "100",
    ]);
    assert!(put.status.success(), "{}", stderr(&put));
    assert!(h
        .run(&[
            "put",
            "--key-id",
            "0c",
            "--content-key",
            CONTENT_KEY,
            "--rights",
            "playback"
        ])
        .status
        .success());

    let list = h.run(&["list"]);
    assert!(list.status.success());
    let text = stdout(&list);
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.starts_with("0a0b\tSong\tplayback,backup\t3\t2020-01-02T00:00:00Z\t2099-12-31T23:59:59Z\t1970-01-01T00:01:40Z\n"), "{text}");
    let list = json_lines(&h.run(&["--json", "list"]));
    assert_eq!(list[0]["key_id"], "0a0b");
    assert_eq!(list[0]["plays"], 3);
    assert_eq!(list[0]["issued_at"], 100);
    assert_eq!(list[1]["rights"], "playback");

    // Backup with --json: the exact event sequence.
    let backup = h.run(&["--json", "backup", "--to", &h.path("bk")]);
    assert!(backup.status.success(), "{}", stderr(&backup));
    let ev = json_lines(&backup);
    let statuses: Vec<&str> = ev.iter().map(|e| e["status"].as_str().unwrap()).collect();
    assert_eq!(
        statuses,
        [
            "BACKUPRESTORE_BEGIN",
            "RESTRICTED_LICENSE",
            "BACKUPRESTORE_PROGRESS",
            "BACKUPRESTORE_END"
        ]
    );
    assert_eq!(ev[1]["key_id"], "0c");
    let end = ev.last().unwrap();
    assert_eq!(
        (
            end["hr"].as_str(),
            end["processed"].as_u64(),
            end["total"].as_u64(),
            end["skipped"].as_u64()
        ),
        (Some("0x00000000"), Some(1), Some(2), Some(1))
    );
    assert!(ev.iter().all(|e| e["operation"] == "backup"));

    // A second backup without --overwrite: refused, exit 1 with the code.
    assert_fails_with(
        &h.run(&["backup", "--to", &h.path("bk")]),
        "0xC00D2742",
        "WM_E_BACKUP_EXISTS",
    );

    let inspect = json_lines(&h.run(&["--json", "inspect", &h.path("bk")]));
    assert_eq!(inspect[0]["version"], 2);
    assert_eq!(inspect[0]["license_count"], 1);
    assert_eq!(inspect[0]["lineages"].as_array().unwrap().len(), 1);
    assert!(
        stdout(&h.run(&["inspect", &h.path("bk/licenses.wmlb")])).contains("license_count: 1\n")
    );

    // Restore into a new store: refused without --individualize, then done, with devices.
    let new_store = h.path("new");
    assert_fails_with(
        &h.run(&["restore", "--from", &h.path("bk"), "--store", &new_store]),
        "0xC00D2728",
        "WM_E_NEEDS_INDIVIDUALIZATION",
    );
    let restore = h.run(&[
        "--json",
        "restore",
        "--from",
        &h.path("bk"),
        "--store",
        &new_store,
        "--individualize",
    ]);
    assert!(restore.status.success(), "{}", stderr(&restore));
    let ev = json_lines(&restore);
    let statuses: Vec<&str> = ev.iter().map(|e| e["status"].as_str().unwrap()).collect();
    assert_eq!(
        statuses,
        [
            "BACKUPRESTORE_BEGIN",
            "BACKUPRESTORE_CONNECTING",
            "BACKUPRESTORE_DISCONNECTING",
            "BACKUPRESTORE_PROGRESS",
            "BACKUPRESTORE_END"
        ]
    );
    let end = ev.last().unwrap();
    assert_eq!(
        (
            end["processed"].as_u64(),
            end["devices_used"].as_u64(),
            end["device_limit"].as_u64()
        ),
        (Some(1), Some(1), Some(4))
    );
    let summary = stdout(&h.run(&[
        "restore",
        "--from",
        &h.path("bk"),
        "--store",
        &new_store,
        "--verify-only",
    ]));
    assert!(summary.contains("1 of 4 devices used"), "{summary}");
    assert_eq!(
        stdout(&h.run(&["list", "--store", &new_store]))
            .lines()
            .count(),
        1
    );

    // Remove: done, then not found.
    assert!(h.run(&["remove", "--key-id", "0c"]).status.success());
    assert_fails_with(
        &h.run(&["remove", "--key-id", "0c"]),
        "0x80070490",
        "WM_E_NOT_FOUND",
    );

    // Release the new store's device: its licenses go; again: nothing to release (exit 0).
    let rel = h.run(&["--json", "release", "--store", &new_store]);
    assert!(rel.status.success(), "{}", stderr(&rel));
    let ev = json_lines(&rel);
    assert_eq!(ev.last().unwrap()["hr"], "0x00000000");
    assert_eq!(ev.last().unwrap()["devices_used"], 0);
    assert_eq!(
        stdout(&h.run(&["list", "--store", &new_store]))
            .lines()
            .count(),
        0
    );
    let rel = h.run(&["--json", "release", "--store", &new_store]);
    assert!(rel.status.success());
    assert_eq!(json_lines(&rel).last().unwrap()["hr"], "0x00000001");
    // Reset the lineage once; the second is refused.
    assert!(h
        .run(&["release", "--all", "--from", &h.path("bk")])
        .status
        .success());
    assert_fails_with(
        &h.run(&["release", "--all", "--from", &h.path("bk")]),
        "0xC00D2766",
        "WM_E_TOO_MANY_RESETS",
    );

    // Bad input: exit 1 with the code; bad usage: exit 2.
    assert_fails_with(
        &h.run(&["put", "--key-id", "zz", "--content-key", "00"]),
        "0x80070057",
        "WM_E_INVALIDARG",
    );
    assert_fails_with(
        &h.run(&["put", "--key-id", &"00".repeat(65), "--content-key", "00"]),
        "0xC00D2849",
        "WM_E_INVALID_KID",
    );
    assert_fails_with(
        &h.run(&[
            "put",
            "--key-id",
            "01",
            "--content-key",
            "00",
            "--rights",
            "fly",
        ]),
        "0x80070057",
        "WM_E_INVALIDARG",
    );
    assert_fails_with(
        &h.run(&[
            "put",
            "--key-id",
            "01",
            "--content-key",
            "00",
            "--expires",
            "2020-02-30",
        ]),
        "0x80070057",
        "WM_E_INVALIDARG",
    );
    assert_fails_with(
        &h.run(&["inspect", &h.path("nothing")]),
        "0x80070002",
        "WM_E_FILE_NOT_FOUND",
    );
    std::fs::write(h.path("junk"), b"not a backup at all, not at all").unwrap();
    assert_fails_with(
        &h.run(&["inspect", &h.path("junk")]),
        "0xC00D2743",
        "WM_E_BACKUP_CORRUPT",
    );
    assert_fails_with(
        &h.run(&["restore", "--from", &h.path("junk")]),
        "0xC00D2743",
        "WM_E_BACKUP_CORRUPT",
    );
    assert_fails_with(
        &h.run(&["list", "--store", &h.path("nostore")]),
        "0x80070002",
        "WM_E_FILE_NOT_FOUND",
    );
    assert_fails_with(
        &h.run(&["backup", "--to", &h.path("bk2"), "--service-key", "xyz"]),
        "0x80070057",
        "WM_E_INVALIDARG",
    );
    for usage in [
        &["bogus"][..],
        &["put", "--key-id", "01"],
        &["release", "--all"],
        &["backup"],
        &["list", "--nope"],
    ] {
        let o = h.run(usage);
        assert_eq!(o.status.code(), Some(2), "{usage:?}: {}", stderr(&o));
    }

    // No content key in anything printed.
    for args in [
        &["list"][..],
        &["--json", "list"],
        &["inspect", &h.path("bk")],
        &["--json", "inspect", &h.path("bk")],
    ] {
        let o = h.run(args);
        assert!(
            !stdout(&o).to_lowercase().contains(CONTENT_KEY) && !stderr(&o).contains(CONTENT_KEY),
            "{args:?}"
        );
    }
}

#[test]
fn import_is_all_or_nothing() {
    let h = Home::new("import");
    let good = "{\"key_id\":\"01\",\"content_key\":\"aa\",\"title\":\"A\",\"rights\":\"playback,backup\",\"plays\":2,\"begin\":0,\"expires\":\"2099-01-01\",\"issued_at\":5}\n\
                {\"key_id\":\"02\",\"content_key\":\"bb\"}\n";
    let bad_lines = [
        "{\"key_id\":\"03\",\"content_key\":\"zz\"}",
        "{\"key_id\":\"03\"}",
        "{\"key_id\":\"03\",\"content_key\":\"cc\",\"colour\":\"red\"}",
        "{\"key_id\":\"03\",\"content_key\":\"cc\",\"plays\":-7}",
        "not json",
        "[1]",
    ];
    for bad in bad_lines {
        let file = h.path("in.jsonl");
        std::fs::write(&file, format!("{good}{bad}\n")).unwrap();
        let o = h.run(&["import", &file]);
        assert_eq!(o.status.code(), Some(1), "{bad}");
        assert!(stderr(&o).contains("line 3"), "{}", stderr(&o));
        let list = h.run(&["list", "--store", &h.path("")]);
        assert!(stdout(&list).is_empty(), "{bad}: {}", stdout(&list));
    }
    let mut child = h
        .cmd()
        .args(["import", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(good.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let list = json_lines(&h.run(&["--json", "list"]));
    assert_eq!(list.len(), 2);
    assert_eq!(
        (
            list[0]["title"].as_str(),
            list[0]["plays"].as_i64(),
            list[0]["issued_at"].as_i64()
        ),
        (Some("A"), Some(2), Some(5))
    );
}

/// Ctrl-C during a backup that replaces an older one: the Ctrl-C is acknowledged on stderr,
/// END says WM_E_OPERATION_CANCELED, exit 1, and the older backup is byte for byte as it was,
/// with no temporary file left.
///
/// The backup is held at a known point whatever the engine's speed (a backup of a few thousand
/// licenses takes a millisecond): its standard output is a one-page pipe this test fills but
/// for the exact length of the BEGIN line, so the next event (the RESTRICTED_LICENSE of the
/// license without the backup right, or a PROGRESS) blocks the operation in its callback, in
/// the middle of the license stream, after the temporary file exists. The test reads nothing
/// until the CLI has said that it took the Ctrl-C.
#[cfg(target_os = "linux")]
#[test]
fn ctrl_c_mid_backup_leaves_the_previous_backup() {
    use std::io::{BufRead, Read, Write};
    use std::os::fd::{FromRawFd, OwnedFd};

    let h = Home::new("sigint");
    let mut lines = String::new();
    for i in 0..5_000u32 {
        lines.push_str(&format!(
            "{{\"key_id\":\"{i:08x}\",\"content_key\":\"{CONTENT_KEY}\"}}\n"
        ));
    }
    std::fs::write(h.path("in.jsonl"), lines).unwrap();
    assert!(h.run(&["import", &h.path("in.jsonl")]).status.success());
    // The first backup also measures the BEGIN line, which is the same for every backup.
    let first = h.run(&["--json", "backup", "--to", &h.path("bk")]);
    assert!(first.status.success(), "{}", stderr(&first));
    let begin_line = format!("{}\n", stdout(&first).lines().next().unwrap());
    let before = std::fs::read(h.path("bk/licenses.wmlb")).unwrap();
    // One license in the middle of the stream loses the backup right.
    let put = h.run(&[
        "put",
        "--key-id",
        "00000800",
        "--content-key",
        "01",
        "--rights",
        "playback",
    ]);
    assert!(put.status.success(), "{}", stderr(&put));

    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array, which this test then owns.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    let capacity = unsafe { libc::fcntl(fds[1], libc::F_SETPIPE_SZ, page as libc::c_int) };
    assert_eq!(capacity as usize, page, "a pipe of one page");
    let mut filler = " ".repeat(page - begin_line.len() - 1);
    filler.push('\n');
    let mut writer = std::fs::File::from(write_end);
    writer.write_all(filler.as_bytes()).unwrap();
    let mut child = h
        .cmd()
        .args(["--json", "backup", "--overwrite", "--to", &h.path("bk")])
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // (The Command and its copy of the write end are gone: the child holds the only one.)

    // The backup is under way once its temporary file exists; it then blocks at its next event.
    let deadline = Instant::now() + std::time::Duration::from_secs(120);
    let is_temp = |n: &str| n.starts_with(".licenses.wmlb.") && n.ends_with(".tmp");
    loop {
        let temp = std::fs::read_dir(h.path("bk"))
            .unwrap()
            .any(|e| is_temp(&e.unwrap().file_name().to_string_lossy()));
        if temp {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the backup ended ({status}) before it could be held");
        }
        assert!(
            Instant::now() < deadline,
            "the backup never started its file"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    // SAFETY: kill with a live child's PID.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut said = String::new();
    loop {
        let mut line = String::new();
        assert!(
            err.read_line(&mut line).unwrap() > 0,
            "stderr ended without acknowledging the Ctrl-C: {said}"
        );
        said.push_str(&line);
        if line.contains("wmlicense: interrupted: cancelling the backup") {
            break;
        }
    }
    // Let the operation go on: it must now see the cancel before it moves the file into place.
    let mut out = String::new();
    std::fs::File::from(read_end)
        .read_to_string(&mut out)
        .unwrap();
    err.read_to_string(&mut said).unwrap();
    let status = child.wait().unwrap();

    let events: Vec<Value> = out
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let statuses: Vec<&str> = events
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses.first(),
        Some(&"BACKUPRESTORE_BEGIN"),
        "{statuses:?}"
    );
    assert_eq!(statuses.last(), Some(&"BACKUPRESTORE_END"), "{statuses:?}");
    assert!(
        statuses[1..statuses.len() - 1]
            .iter()
            .all(|s| *s == "RESTRICTED_LICENSE" || *s == "BACKUPRESTORE_PROGRESS"),
        "{statuses:?}"
    );
    let end = events.last().unwrap();
    assert_eq!(end["hr"], "0xC00D2768", "{end}");
    assert_eq!(status.code(), Some(1), "{said}");
    assert!(
        said.contains("0xC00D2768 WM_E_OPERATION_CANCELED"),
        "{said}"
    );
    assert_eq!(std::fs::read(h.path("bk/licenses.wmlb")).unwrap(), before);
    // Nothing but the backup and the directory's lock file: no half-written temporary.
    let leftovers: Vec<_> = std::fs::read_dir(h.path("bk"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "licenses.wmlb" && n != ".licenses.wmlb.lock")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
