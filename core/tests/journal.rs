//! The request journal through real operations: a release or a reset whose answer did not come
//! (cancelled while it asked an unreachable service) leaves its entry, a restore into a store
//! with a pending release is refused, and the next release or reset through a service that
//! answers finishes and forgets it. Each operation is held at CONNECTING, never raced.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wmlicense_core::code;
use wmlicense_core::engine::{Counters, Event};
use wmlicense_core::props::PropName;
use wmlicense_core::restorer::{
    BackupOptions, Notice, Operation, ReleaseOptions, RestoreOptions, Restorer,
};
use wmlicense_core::{License, Store};

const LONG: Duration = Duration::from_secs(60);
/// Nothing listens there: every request is retried until cancelled.
const UNREACHABLE: &str = "http://127.0.0.1:9";

fn temp_dir(tag: &str) -> PathBuf {
    let id: [u8; 8] = wmlicense_core::crypto::random_array().unwrap();
    let d = std::env::temp_dir().join(format!(
        "wmlicense-journal-{tag}-{:016x}",
        u64::from_le_bytes(id)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A restorer that holds its callback at CONNECTING (when `hold` is set) until told to go on,
/// and hands every END's code to the test.
struct Held {
    r: Restorer,
    hold: Arc<Mutex<bool>>,
    reached: Receiver<()>,
    go: Sender<()>,
    ends: Receiver<i32>,
}

fn held() -> Held {
    let (reached_tx, reached) = channel();
    let (go, go_rx) = channel::<()>();
    let (end_tx, ends) = channel();
    let hold = Arc::new(Mutex::new(false));
    let h = hold.clone();
    let state = Mutex::new((reached_tx, go_rx, end_tx));
    let r = Restorer::new(Box::new(
        move |_op: Operation, n: &Notice<'_>, _c: &Counters| {
            let s = state.lock().unwrap();
            match n {
                Notice::Op(Event::Connecting) if *h.lock().unwrap() => {
                    s.0.send(()).unwrap();
                    s.1.recv().unwrap();
                }
                Notice::End(o) => s.2.send(o.code()).unwrap(),
                _ => {}
            }
        },
    ));
    Held {
        r,
        hold,
        reached,
        go,
        ends,
    }
}

impl Held {
    fn end(&self) -> i32 {
        let code = self.ends.recv_timeout(LONG).unwrap();
        assert!(self.r.wait(None).unwrap());
        code
    }

    /// Starts with `start`, holds it at CONNECTING, runs `at_connecting`, cancels; END's code.
    fn cancelled_at_connecting(
        &self,
        op: Operation,
        start: impl FnOnce(&Restorer),
        at_connecting: impl FnOnce(),
    ) -> i32 {
        *self.hold.lock().unwrap() = true;
        start(&self.r);
        self.reached.recv_timeout(LONG).unwrap();
        at_connecting();
        assert!(self.r.cancel(op));
        *self.hold.lock().unwrap() = false;
        self.go.send(()).unwrap();
        self.end()
    }
}

fn set(r: &Restorer, name: PropName, value: &Path) {
    r.with_props(|p| p.set(name, value.to_str().unwrap()).unwrap());
}

#[test]
fn a_release_and_a_reset_left_pending_are_finished_by_the_next_one() {
    let root = temp_dir("pending");
    let data = root.join("data");
    let store = root.join("store");
    let backup = root.join("backup");
    Store::open(&store)
        .unwrap()
        .put(&License {
            key_id: b"k1".to_vec(),
            content_key: vec![7; 16],
            title: None,
            rights: 0x201,
            play_count: -1,
            begin_date: 0,
            expiration_date: 0,
            issued_at: 1000,
        })
        .unwrap();
    let h = held();
    set(&h.r, PropName::DataPath, &data);
    set(&h.r, PropName::StorePath, &store);
    set(&h.r, PropName::BackupPath, &backup);
    h.r.backup(BackupOptions::default()).unwrap();
    assert_eq!(h.end(), code::S_OK);

    // A release that gets no answer: its request is in the journal before it is sent, and a
    // cancel leaves it there (the service may have decided it).
    let entry = store.join("release.pending");
    h.r.with_props(|p| p.set(PropName::ServiceUrl, UNREACHABLE).unwrap());
    let code = h.cancelled_at_connecting(
        Operation::Release,
        |r| r.release(ReleaseOptions::default()).unwrap(),
        || assert_eq!(std::fs::read(&entry).unwrap().len(), 16),
    );
    assert_eq!(code, code::E_OPERATION_CANCELED);
    let request = std::fs::read(&entry).unwrap();
    assert_eq!(request.len(), 16);

    // A restore into that store is refused until the release has finished.
    set(&h.r, PropName::RestorePath, &backup);
    h.r.restore(RestoreOptions::default()).unwrap();
    assert_eq!(h.end(), code::E_BACKUPRESTORE_BUSY);
    assert_eq!(h.r.last_result().unwrap().operation, Operation::Restore);

    // The embedded service answers: this device was never counted, nothing changes, and the
    // request is forgotten.
    h.r.with_props(|p| p.remove(PropName::ServiceUrl).unwrap());
    h.r.release(ReleaseOptions::default()).unwrap();
    assert_eq!(h.end(), code::S_FALSE);
    assert!(!entry.exists());
    assert_eq!(Store::open_existing(&store).unwrap().count().unwrap(), 1);

    // A reset that gets no answer: its entry is in the data directory, named by the backup.
    h.r.with_props(|p| p.set(PropName::ServiceUrl, UNREACHABLE).unwrap());
    let resets = |dir: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                let n = p.file_name().unwrap().to_string_lossy().into_owned();
                n.starts_with(".reset-") && n.ends_with(".pending")
            })
            .collect()
    };
    let code = h.cancelled_at_connecting(
        Operation::Release,
        |r| r.release(ReleaseOptions { all_devices: true }).unwrap(),
        || assert_eq!(resets(&data).len(), 1),
    );
    assert_eq!(code, code::E_OPERATION_CANCELED);
    let pending = resets(&data);
    assert_eq!(pending.len(), 1);
    assert_eq!(std::fs::read(&pending[0]).unwrap().len(), 16);

    // Answered by the embedded service: the reset is done and its entry forgotten.
    h.r.with_props(|p| p.remove(PropName::ServiceUrl).unwrap());
    h.r.release(ReleaseOptions { all_devices: true }).unwrap();
    assert_eq!(h.end(), code::S_OK);
    assert!(resets(&data).is_empty());

    h.r.destroy();
    std::fs::remove_dir_all(root).ok();
}
