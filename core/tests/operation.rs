//! The restorer's operation through the core API: its phase at every point of its life, the
//! record of the last result, cancel at each phase, starting from END, destroy from a callback.
//! Every test holds the operation at a known point (a callback that blocks) instead of racing it.

use std::path::PathBuf;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wmlicense_core::code;
use wmlicense_core::engine::Counters;
use wmlicense_core::props::PropName;
use wmlicense_core::restorer::{
    BackupOptions, LastResult, Notice, Operation, Phase, RestoreOptions, Restorer, Status,
};
use wmlicense_core::{License, Store};

fn temp_dir(tag: &str) -> PathBuf {
    let id: [u8; 8] = wmlicense_core::crypto::random_array().unwrap();
    let d = std::env::temp_dir().join(format!(
        "wmlicense-op-{tag}-{:016x}",
        u64::from_le_bytes(id)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn license(i: u8, rights: u32) -> License {
    License {
        key_id: vec![b'k', i],
        content_key: vec![i; 16],
        title: None,
        rights,
        play_count: -1,
        begin_date: 0,
        expiration_date: 0,
        issued_at: 1000 + i as i64,
    }
}

/// A store of three licenses (one restricted) and a backup directory, in a data directory of
/// their own.
struct Place {
    root: PathBuf,
    store: PathBuf,
    backup: PathBuf,
}

impl Place {
    fn new(tag: &str) -> Place {
        let root = temp_dir(tag);
        let store = root.join("store");
        let backup = root.join("backup");
        Store::open(&store)
            .unwrap()
            .put_many(&[license(1, 0x201), license(2, 0x1), license(3, 0x200)])
            .unwrap();
        Place {
            root,
            store,
            backup,
        }
    }

    fn props(&self, r: &Restorer) {
        r.with_props(|p| {
            p.set(PropName::DataPath, self.root.to_str().unwrap())
                .unwrap();
            p.set(PropName::StorePath, self.store.to_str().unwrap())
                .unwrap();
            p.set(PropName::BackupPath, self.backup.to_str().unwrap())
                .unwrap();
        });
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// What a callback saw: the status, the code, the restorer's phase and last result then.
#[derive(Clone, Debug)]
struct Seen {
    op: Operation,
    status: Status,
    code: i32,
    phase: Phase,
    last: Option<LastResult>,
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// A restorer whose callback logs every event, then runs `hook` (which may block or call the
/// restorer, reached through the slot the test fills in after creation).
fn restorer_with(hook: impl Fn(&Restorer, &Notice<'_>) + Send + Sync + 'static) -> (Restorer, Log) {
    let log: Log = Arc::default();
    let me: Arc<Mutex<Option<Restorer>>> = Arc::default();
    let (l, m) = (log.clone(), me.clone());
    let r = Restorer::new(Box::new(
        move |op: Operation, n: &Notice<'_>, _c: &Counters| {
            let r = m
                .lock()
                .unwrap()
                .clone()
                .expect("the test set the restorer");
            l.lock().unwrap().push(Seen {
                op,
                status: n.status(),
                code: n.code(),
                phase: r.phase(),
                last: r.last_result(),
            });
            hook(&r, n);
        },
    ));
    *me.lock().unwrap() = Some(r.clone());
    (r, log)
}

fn statuses(log: &Log) -> Vec<(Operation, Status)> {
    log.lock()
        .unwrap()
        .iter()
        .map(|s| (s.op, s.status))
        .collect()
}

/// Blocks the callback at BEGIN until the test lets it go.
struct Gate {
    reached: Sender<()>,
    go: Mutex<Receiver<()>>,
}

fn gate() -> (Arc<Gate>, Receiver<()>, Sender<()>) {
    let (reached_tx, reached_rx) = channel();
    let (go_tx, go_rx) = channel();
    (
        Arc::new(Gate {
            reached: reached_tx,
            go: Mutex::new(go_rx),
        }),
        reached_rx,
        go_tx,
    )
}

impl Gate {
    fn hold(&self) {
        self.reached.send(()).unwrap();
        self.go.lock().unwrap().recv().unwrap();
    }
}

const LONG: Duration = Duration::from_secs(60);

#[test]
fn phases_and_the_last_result_through_a_backups_life() {
    let place = Place::new("life");
    let (r, log) = restorer_with(|_, _| {});
    place.props(&r);
    assert_eq!(r.phase(), Phase::Idle);
    assert_eq!(r.last_result(), None);
    r.backup(BackupOptions::default()).unwrap();
    assert!(r.wait(None).unwrap());
    assert_eq!(r.phase(), Phase::Idle);

    let seen = log.lock().unwrap().clone();
    let kinds: Vec<Status> = seen.iter().map(|s| s.status).collect();
    assert_eq!(
        kinds,
        [
            Status::Begin,
            Status::RestrictedLicense,
            Status::Progress,
            Status::End
        ]
    );
    // Every event but END belongs to a running operation, and before END nothing finished.
    for s in &seen[..3] {
        assert_eq!(s.phase, Phase::Running, "{s:?}");
        assert_eq!(s.last, None, "{s:?}");
        assert_eq!(s.code, code::S_OK);
    }
    // While END is delivered: Ending, and the record is this END's already.
    let end = &seen[3];
    assert_eq!(end.phase, Phase::Ending);
    let expected = LastResult {
        operation: Operation::Backup,
        code: code::S_OK,
        processed: 2,
        total: 3,
        skipped: 1,
        devices_used: 0,
        device_limit: 0,
        message: None,
    };
    assert_eq!(end.last.as_ref(), Some(&expected));
    assert_eq!(r.last_result(), Some(expected.clone()));

    // A start refused by the call changes neither the phase nor the record.
    let refused = r.backup(BackupOptions::default()).unwrap_err();
    assert_eq!(code::of(&refused), code::E_BACKUP_EXISTS);
    assert_eq!(r.phase(), Phase::Idle);
    assert_eq!(r.last_result(), Some(expected.clone()));

    // A failing restore: END's code in the record; at its BEGIN the record was the backup's.
    log.lock().unwrap().clear();
    r.with_props(|p| {
        p.set(
            PropName::RestorePath,
            place.root.join("nothing-here").to_str().unwrap(),
        )
        .unwrap()
    });
    r.restore(RestoreOptions::default()).unwrap();
    assert!(r.wait(None).unwrap());
    let seen = log.lock().unwrap().clone();
    assert_eq!(seen[0].last, Some(expected));
    let last = r.last_result().unwrap();
    assert_eq!(last.operation, Operation::Restore);
    assert_eq!(last.code, code::E_FILE_NOT_FOUND);
    assert_eq!(seen.last().unwrap().code, code::E_FILE_NOT_FOUND);
    assert!(last.message.unwrap().contains("nothing-here"));
    r.destroy();
    assert_eq!(r.phase(), Phase::Closed);
}

#[test]
fn a_second_start_while_running_is_busy_and_a_cancel_at_begin_ends_it_cancelled() {
    let place = Place::new("busy");
    let (g, reached, go) = gate();
    let g2 = g.clone();
    let (r, log) = restorer_with(move |_, n| {
        if matches!(n, Notice::Begin) {
            g2.hold();
        }
    });
    place.props(&r);
    r.backup(BackupOptions::default()).unwrap();
    reached.recv_timeout(LONG).unwrap();
    // Held inside BEGIN: the operation runs, nothing else may start, waiting times out.
    assert_eq!(r.phase(), Phase::Running);
    let busy = r.backup(BackupOptions { overwrite: true }).unwrap_err();
    assert_eq!(code::of(&busy), code::E_BACKUPRESTORE_BUSY);
    assert!(!r.wait(Some(Duration::from_millis(1))).unwrap());
    // A cancel of another kind finds nothing; of this kind, it is taken.
    assert!(!r.cancel(Operation::Restore));
    assert!(r.cancel(Operation::Backup));
    go.send(()).unwrap();
    assert!(r.wait(None).unwrap());
    assert_eq!(
        statuses(&log),
        [
            (Operation::Backup, Status::Begin),
            (Operation::Backup, Status::End)
        ]
    );
    assert_eq!(r.last_result().unwrap().code, code::E_OPERATION_CANCELED);
    // Nothing was written, and nothing runs: cancel is S_FALSE's false.
    assert!(!place.backup.join("licenses.wmlb").exists());
    assert!(!r.cancel(Operation::Backup));
    r.destroy();
}

#[test]
fn an_operation_started_from_end_runs_after_end_returned_and_can_be_cancelled_while_held() {
    let place = Place::new("held");
    let started = Arc::new(Mutex::new(0));
    let s = started.clone();
    let (r, log) = restorer_with(move |r, n| {
        if let Notice::End(_) = n {
            let mut count = s.lock().unwrap();
            if *count == 0 {
                *count += 1;
                // Started during END: held, so still Ending; cancelled before it ever ran.
                r.backup(BackupOptions { overwrite: true }).unwrap();
                assert_eq!(r.phase(), Phase::Ending);
                assert!(r.cancel(Operation::Backup));
                // From END's own callback a wait is answered, not deadlocked: an operation is
                // in flight (the held one).
                assert!(r.wait(None).is_err());
            }
        }
    });
    place.props(&r);
    r.backup(BackupOptions::default()).unwrap();
    // The held operation ends too before the restorer is idle.
    assert!(r.wait(None).unwrap());
    let seen = log.lock().unwrap().clone();
    let kinds: Vec<Status> = seen.iter().map(|s| s.status).collect();
    assert_eq!(
        kinds,
        [
            Status::Begin,
            Status::RestrictedLicense,
            Status::Progress,
            Status::End,
            Status::Begin,
            Status::End
        ]
    );
    // The held operation's BEGIN: it runs now, and the record is the first backup's.
    assert_eq!(seen[4].phase, Phase::Running);
    assert_eq!(seen[4].last.as_ref().unwrap().code, code::S_OK);
    assert_eq!(seen[5].code, code::E_OPERATION_CANCELED);
    assert_eq!(r.last_result().unwrap().code, code::E_OPERATION_CANCELED);
    // The first backup is still there: the cancelled one touched nothing.
    assert!(place.backup.join("licenses.wmlb").is_file());
    r.destroy();
}

#[test]
fn destroy_from_its_own_callback_closes_at_once_and_no_event_follows() {
    let place = Place::new("destroy");
    let (done_tx, done_rx) = channel::<(bool, Phase)>();
    let done_tx = Mutex::new(done_tx);
    let (r, log) = restorer_with(move |r, n| {
        if matches!(n, Notice::Begin) {
            // It cannot wait for its own operation: it closes without waiting.
            let waited = r.destroy();
            done_tx.lock().unwrap().send((waited, r.phase())).unwrap();
        }
    });
    place.props(&r);
    r.backup(BackupOptions::default()).unwrap();
    assert_eq!(done_rx.recv_timeout(LONG).unwrap(), (false, Phase::Closed));
    assert!(r.is_destroyed());
    // Closed: a wait has nothing to wait for, and nothing starts any more.
    assert!(r.wait(None).unwrap());
    assert!(r.backup(BackupOptions { overwrite: true }).is_err());
    assert_eq!(statuses(&log), [(Operation::Backup, Status::Begin)]);
}

#[test]
fn destroy_from_another_thread_cancels_waits_for_end_and_closes() {
    let place = Place::new("destroy-wait");
    let (g, reached, go) = gate();
    let g2 = g.clone();
    let (r, log) = restorer_with(move |_, n| {
        if matches!(n, Notice::Begin) {
            g2.hold();
        }
    });
    place.props(&r);
    r.backup(BackupOptions::default()).unwrap();
    reached.recv_timeout(LONG).unwrap();
    let r2 = r.clone();
    let destroyer = std::thread::spawn(move || r2.destroy());
    // destroy has cancelled and now waits for END, which the held callback keeps back.
    let mut tries = 0;
    while !r.is_destroyed() {
        tries += 1;
        assert!(tries < 6000);
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(r.phase(), Phase::Running);
    go.send(()).unwrap();
    assert!(destroyer.join().unwrap(), "destroy waited for END");
    assert_eq!(r.phase(), Phase::Closed);
    assert_eq!(
        statuses(&log),
        [
            (Operation::Backup, Status::Begin),
            (Operation::Backup, Status::End)
        ]
    );
    assert_eq!(r.last_result().unwrap().code, code::E_OPERATION_CANCELED);
}
