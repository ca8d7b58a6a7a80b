//! What dead writers leave is swept by the next operation on that place, and nothing of a live
//! writer is touched: staging directories beside a store (`.<name>.<pid>.<random>.tmp`) and
//! backup temporaries in a backup directory.

use std::path::{Path, PathBuf};
use std::process::Command;
use wmlicense_core::engine::{Control, Counters, Event, Places, Reporter, RestoreJob};
use wmlicense_core::{License, Store};

fn temp_dir(tag: &str) -> PathBuf {
    let id: [u8; 8] = wmlicense_core::crypto::random_array().unwrap();
    let d = std::env::temp_dir().join(format!("wmlicense-{tag}-{:016x}", u64::from_le_bytes(id)));
    std::fs::create_dir_all(&d).unwrap();
    d
}

struct Quiet;
impl Reporter for Quiet {
    fn event(&mut self, _: Event<'_>, _: &Counters) {}
}

/// A pid that no process has now: a child that has exited and been reaped.
fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

/// Holds a directory's lock as a live restore holds its staging directory's.
fn lock_dir(dir: &Path) -> std::fs::File {
    use std::os::unix::io::AsRawFd;
    let f = std::fs::File::open(dir).unwrap();
    // SAFETY: flock on a descriptor we own.
    assert_eq!(
        unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
        0
    );
    f
}

fn staging(parent: &Path, store: &str, pid: u32, tag: &str) -> PathBuf {
    let d = parent.join(format!(".{store}.{pid}.{tag}.tmp"));
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("licenses.db"), b"half a store").unwrap();
    d
}

#[test]
fn a_restore_sweeps_dead_staging_directories_and_dead_backup_temporaries() {
    let home = temp_dir("sweep-home");
    let source = temp_dir("sweep-source");
    let backup_dir = temp_dir("sweep-backup");
    let stores = temp_dir("sweep-stores");
    Store::open(&source)
        .unwrap()
        .put(&License {
            key_id: b"k1".to_vec(),
            content_key: vec![1; 16],
            title: None,
            rights: 0x201,
            play_count: -1,
            begin_date: 0,
            expiration_date: 0,
            issued_at: 1,
        })
        .unwrap();
    let places = |store: &Path| Places {
        store_dir: Some(store.to_path_buf()),
        data_dir: Some(home.clone()),
        service_url: None,
        service_key: None,
    };
    let backup = wmlicense_core::engine::BackupJob {
        places: places(&source),
        backup_dir: backup_dir.clone(),
        overwrite: false,
    };
    wmlicense_core::engine::backup(
        &backup,
        &mut Quiet,
        &Control::new(),
        &mut Counters::default(),
    )
    .unwrap();

    let dead = dead_pid();
    let gone = staging(&stores, "target", dead, "00aa00aa00aa00aa");
    let discarded = stores.join(format!(".target.{dead}.11bb11bb11bb11bb.discarded"));
    std::fs::create_dir_all(&discarded).unwrap();
    // A live writer holds its staging directory's lock, whatever its pid says.
    let live = staging(&stores, "target", dead, "22cc22cc22cc22cc");
    let _held = lock_dir(&live);
    // Another store's staging directory is not this restore's business, also when that store's
    // name starts like this one's (`target.2024`).
    let other = staging(&stores, "other", dead, "33dd33dd33dd33dd");
    let sibling = staging(&stores, "target.2024", dead, "55ff55ff55ff55ff");
    let tmp = backup_dir.join(format!(".licenses.wmlb.{dead}.44ee.tmp"));
    std::fs::write(&tmp, b"half a backup").unwrap();

    let target = stores.join("target");
    let job = RestoreJob {
        places: places(&target),
        restore_path: backup_dir.clone(),
        individualize: true,
        verify_only: false,
    };
    let mut c = Counters::default();
    wmlicense_core::engine::restore(&job, &mut Quiet, &Control::new(), &mut c).unwrap();
    assert_eq!((c.processed, c.total), (1, 1));
    assert!(Store::exists(&target));
    assert!(
        !gone.exists(),
        "a dead restore's staging directory was left"
    );
    assert!(
        !discarded.exists(),
        "a dead restore's discarded store was left"
    );
    assert!(
        live.exists(),
        "a live process's staging directory was removed"
    );
    assert!(
        other.exists(),
        "another store's staging directory was removed"
    );
    assert!(
        sibling.exists(),
        "a sibling store's staging directory was removed"
    );
    assert!(
        !tmp.exists(),
        "a dead backup writer's temporary file was left"
    );
    for d in [home, source, backup_dir, stores] {
        let _ = std::fs::remove_dir_all(d);
    }
}
