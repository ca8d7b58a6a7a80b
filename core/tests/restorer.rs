//! The restorer through its Rust core API (the C tests cover the C API): restore into the
//! default store of a fresh data directory, and the event sequence of each operation.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use wmlicense_core::engine::{Counters, Event};
use wmlicense_core::props::PropName;
use wmlicense_core::restorer::{BackupOptions, Notice, Operation, RestoreOptions, Restorer};
use wmlicense_core::{License, Store};

fn temp_dir(tag: &str) -> PathBuf {
    let id: [u8; 8] = wmlicense_core::crypto::random_array().unwrap();
    let d = std::env::temp_dir().join(format!("wmlicense-{tag}-{:016x}", u64::from_le_bytes(id)));
    std::fs::create_dir_all(&d).unwrap();
    d
}

type Log = Arc<Mutex<Vec<(String, Option<String>, Counters)>>>;

fn recorder() -> (Restorer, Log) {
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    let r = Restorer::new(Box::new(
        move |_op: Operation, n: &Notice<'_>, c: &Counters| {
            let (name, err) = match n {
                Notice::Begin => ("BEGIN".to_string(), None),
                Notice::Op(Event::Connecting) => ("CONNECTING".into(), None),
                Notice::Op(Event::Disconnecting) => ("DISCONNECTING".into(), None),
                Notice::Op(Event::ErrorWithUrl(u)) => ("ERROR_WITHURL".into(), Some(u.to_string())),
                Notice::Op(Event::Progress) => ("PROGRESS".into(), None),
                Notice::Op(Event::Restricted { .. }) => ("RESTRICTED".into(), None),
                Notice::End(o) => ("END".into(), o.error().map(|e| e.to_string())),
            };
            l.lock().unwrap().push((name, err, *c));
        },
    ));
    (r, log)
}

fn names(log: &Log) -> Vec<String> {
    log.lock().unwrap().iter().map(|e| e.0.clone()).collect()
}

fn license(i: u8, rights: u32) -> License {
    License {
        key_id: vec![b'k', i],
        content_key: vec![i; 16],
        title: Some(format!("title {i}")),
        rights,
        play_count: -1,
        begin_date: 0,
        expiration_date: 0,
        issued_at: 1000 + i as i64,
    }
}

#[test]
fn restore_into_the_default_store_of_a_fresh_data_dir() {
    let home = temp_dir("home");
    std::env::set_var("WMLICENSE_HOME", &home);
    let source = temp_dir("source");
    let backup_dir = temp_dir("backup");
    {
        let mut s = Store::open(&source).unwrap();
        s.put_many(&[license(1, 0x201), license(2, 0x1), license(3, 0x200)])
            .unwrap();
    }
    let (r, log) = recorder();
    r.with_props(|p| {
        p.set(PropName::StorePath, source.to_str().unwrap())
            .unwrap();
        p.set(PropName::BackupPath, backup_dir.to_str().unwrap())
            .unwrap();
    });
    // What a writer that died mid-backup leaves behind; the next backup there removes it.
    let stale = backup_dir.join(".licenses.wmlb.4242.00ff00ff00ff00ff.tmp");
    std::fs::write(&stale, b"half a backup").unwrap();
    r.backup(BackupOptions { overwrite: true }).unwrap();
    assert!(r.wait(None).unwrap());
    assert_eq!(names(&log), ["BEGIN", "RESTRICTED", "PROGRESS", "END"]);
    #[cfg(unix)]
    assert!(
        !stale.exists(),
        "a stale temporary file survived the backup"
    );
    let end = log.lock().unwrap().last().unwrap().clone();
    assert_eq!(end.1, None);
    assert_eq!((end.2.processed, end.2.total, end.2.skipped), (2, 3, 1));

    // The default store ($WMLICENSE_HOME) does not exist yet, but the directory does and will
    // hold the embedded service: the restore must still create the store there.
    log.lock().unwrap().clear();
    r.with_props(|p| {
        p.remove(PropName::StorePath).unwrap();
        p.set(PropName::RestorePath, backup_dir.to_str().unwrap())
            .unwrap();
    });
    r.restore(RestoreOptions {
        individualize: true,
        verify_only: false,
    })
    .unwrap();
    assert!(r.wait(None).unwrap());
    let events = log.lock().unwrap().clone();
    assert_eq!(
        names(&log),
        ["BEGIN", "CONNECTING", "DISCONNECTING", "PROGRESS", "END"],
        "{events:?}"
    );
    assert_eq!(events.last().unwrap().1, None, "{events:?}");
    let restored = Store::open_existing(&home).unwrap();
    assert_eq!(restored.count().unwrap(), 2);
    assert_eq!(restored.get(&[b'k', 1]).unwrap(), license(1, 0x201));
    assert!(restored.get(&[b'k', 2]).is_err());
    // The new store has a lineage of its own; the restored licenses keep the source's.
    let source_lineage = Store::open_existing(&source).unwrap().lineage_id();
    assert_ne!(restored.lineage_id(), source_lineage);
    let mut restored = restored;
    let lineages = restored.read_snapshot(|s| s.backup_summary()).unwrap().2;
    assert_eq!(lineages, vec![source_lineage]);
    assert_ne!(
        restored.identity().device_id,
        Store::open_existing(&source).unwrap().identity().device_id
    );
    r.destroy();
    for d in [home, source, backup_dir] {
        std::fs::remove_dir_all(d).ok();
    }
}
