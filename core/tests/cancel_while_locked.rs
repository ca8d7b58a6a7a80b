//! A restore that waits for another connection's write lock on the store still ends at once
//! when cancelled (instead of after the 60 s busy timeout), and leaves the store as it was.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wmlicense_core::engine::Counters;
use wmlicense_core::props::PropName;
use wmlicense_core::restorer::{BackupOptions, Notice, Operation, RestoreOptions, Restorer};
use wmlicense_core::{Error, License, Store};

fn temp_dir(tag: &str) -> PathBuf {
    let id: [u8; 8] = wmlicense_core::crypto::random_array().unwrap();
    let d = std::env::temp_dir().join(format!("wmlicense-{tag}-{:016x}", u64::from_le_bytes(id)));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn license(i: u8) -> License {
    License {
        key_id: vec![b'k', i],
        content_key: vec![i; 16],
        title: None,
        rights: 0x201,
        play_count: -1,
        begin_date: 0,
        expiration_date: 0,
        issued_at: 10,
    }
}

#[test]
fn cancel_ends_a_restore_waiting_for_the_store_lock() {
    let home = temp_dir("home-lock");
    std::env::set_var("WMLICENSE_HOME", &home);
    let source = home.join("source");
    let target = home.join("target");
    let backup = home.join("backup");
    Store::open(&source)
        .unwrap()
        .put_many(&(0..20).map(license).collect::<Vec<_>>())
        .unwrap();
    Store::open(&target).unwrap().put(&license(200)).unwrap();

    let ends: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let e = ends.clone();
    let r = Restorer::new(Box::new(move |_op, n: &Notice<'_>, _c: &Counters| {
        if let Notice::End(result) = n {
            e.lock().unwrap().push(result.error().map(|e| match e {
                Error::Canceled => "canceled".to_string(),
                other => other.to_string(),
            }));
        }
    }));
    r.with_props(|p| {
        p.set(PropName::StorePath, source.to_str().unwrap())
            .unwrap();
        p.set(PropName::BackupPath, backup.to_str().unwrap())
            .unwrap();
    });
    r.backup(BackupOptions::default()).unwrap();
    assert!(r.wait(None).unwrap());
    assert_eq!(ends.lock().unwrap().pop(), Some(None));

    // Another connection holds the target's write lock and keeps it.
    let holder = rusqlite::Connection::open(target.join("licenses.db")).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();

    r.with_props(|p| {
        p.set(PropName::StorePath, target.to_str().unwrap())
            .unwrap();
        p.set(PropName::RestorePath, backup.to_str().unwrap())
            .unwrap();
    });
    r.restore(RestoreOptions::default()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        r.cancel(Operation::Restore),
        "the restore should still be waiting"
    );
    assert!(
        r.wait(Some(Duration::from_secs(10))).unwrap(),
        "the cancelled restore kept waiting for the lock"
    );
    assert_eq!(ends.lock().unwrap().pop(), Some(Some("canceled".into())));

    holder.execute_batch("ROLLBACK").unwrap();
    drop(holder);
    let t = Store::open_existing(&target).unwrap();
    assert_eq!(t.count().unwrap(), 1);
    r.destroy();
    drop(t);
    std::fs::remove_dir_all(home).ok();
}
