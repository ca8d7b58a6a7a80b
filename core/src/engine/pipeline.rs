//! Two threads per backup or restore: one runs SQLite (the store's connection stays on the
//! operation's thread), the other the crypto and the backup file. They hand licenses over in
//! batches of [`BATCH_ROWS`] through a bounded channel, and the empty batches come back for
//! reuse: memory stays flat (a few batches) whatever the store's size.

use crate::error::{Error, Result};
use crate::license::LicenseRef;
use crossbeam_channel::{bounded, Receiver, Sender};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Licenses per batch: large enough that the handover costs nothing per license, small enough
/// that a cancel reaches the other thread within a batch's work (about a millisecond).
pub const BATCH_ROWS: usize = 2048;
/// Batches in flight; the producer blocks when the consumer is this far behind.
const IN_FLIGHT: usize = 4;

/// Licenses copied into one buffer, each with its lineage (an index into the batch's own
/// table). Which content key a batch holds (sealed or plain) is up to its producer.
#[derive(Default)]
pub struct LicenseBatch {
    bytes: Vec<u8>,
    entries: Vec<Entry>,
    lineages: Vec<[u8; 16]>,
    /// Licenses the producer read and left out (a restore's expired ones).
    pub dropped: u64,
}

struct Entry {
    key_id: Range<u32>,
    content_key: Range<u32>,
    title: Option<Range<u32>>,
    rights: u32,
    play_count: i32,
    begin_date: i64,
    expiration_date: i64,
    issued_at: i64,
    lineage: u16,
}

impl LicenseBatch {
    fn append(&mut self, b: &[u8]) -> Range<u32> {
        let start = self.bytes.len() as u32;
        self.bytes.extend_from_slice(b);
        start..self.bytes.len() as u32
    }

    /// Copies `l` in, its content key written by `content_key` (which appends to the buffer it
    /// is given: a copy, or a sealing or opening of `l.content_key`).
    pub fn push_with(
        &mut self,
        l: &LicenseRef<'_>,
        lineage: u16,
        content_key: impl FnOnce(&mut Vec<u8>) -> Result<()>,
    ) -> Result<()> {
        let key_id = self.append(l.key_id);
        let start = self.bytes.len();
        if let Err(e) = content_key(&mut self.bytes) {
            self.bytes.truncate(start);
            return Err(e);
        }
        let content_key = start as u32..self.bytes.len() as u32;
        let title = l.title.map(|t| self.append(t.as_bytes()));
        self.entries.push(Entry {
            key_id,
            content_key,
            title,
            rights: l.rights,
            play_count: l.play_count,
            begin_date: l.begin_date,
            expiration_date: l.expiration_date,
            issued_at: l.issued_at,
            lineage,
        });
        Ok(())
    }

    /// The index of `lineage` in this batch's table (added if new), for [`LicenseBatch::push_with`].
    pub fn lineage_index(&mut self, lineage: &[u8; 16]) -> u16 {
        // Licenses in a row mostly share a lineage: the last one added is checked first.
        if let Some(i) = self.lineages.iter().rposition(|l| l == lineage) {
            return i as u16;
        }
        self.lineages.push(*lineage);
        (self.lineages.len() - 1) as u16
    }

    /// The lineage a license's index names.
    pub fn lineage(&self, index: u16) -> &[u8; 16] {
        &self.lineages[index as usize]
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.entries.len() as u64 + self.dropped >= BATCH_ROWS as u64
    }

    pub fn clear(&mut self) {
        self.bytes.clear();
        self.entries.clear();
        self.lineages.clear();
        self.dropped = 0;
    }

    /// The licenses, in the order they were pushed, with their lineage indexes (see
    /// [`LicenseBatch::lineage`]).
    pub fn iter(&self) -> impl Iterator<Item = (LicenseRef<'_>, u16)> {
        let b = &self.bytes[..];
        let at = move |r: &Range<u32>| &b[r.start as usize..r.end as usize];
        self.entries.iter().map(move |e| {
            (
                LicenseRef {
                    key_id: at(&e.key_id),
                    content_key: at(&e.content_key),
                    // SAFETY: the bytes were pushed as a `str` (push_with), so they are UTF-8.
                    title: e
                        .title
                        .as_ref()
                        .map(|r| unsafe { std::str::from_utf8_unchecked(at(r)) }),
                    rights: e.rights,
                    play_count: e.play_count,
                    begin_date: e.begin_date,
                    expiration_date: e.expiration_date,
                    issued_at: e.issued_at,
                },
                e.lineage,
            )
        })
    }
}

/// The producing end: fill [`Feed::batch`], then [`Feed::ship`] it.
pub struct Feed {
    full: Sender<LicenseBatch>,
    empty: Receiver<LicenseBatch>,
    current: LicenseBatch,
    /// Set once everything is shipped: the feed closing without it means the producer failed.
    complete: Arc<AtomicBool>,
}

impl Feed {
    pub fn batch(&mut self) -> &mut LicenseBatch {
        &mut self.current
    }

    /// Hands the current batch over (if it holds anything) and takes an empty one. Fails when
    /// the consumer has stopped (its own error is the one reported).
    pub fn ship(&mut self) -> Result<()> {
        if self.current.is_empty() && self.current.dropped == 0 {
            return Ok(());
        }
        let next = match self.empty.try_recv() {
            Ok(b) => b,
            Err(_) if self.spare() => LicenseBatch::default(),
            Err(_) => self.empty.recv().map_err(|_| stopped())?,
        };
        let full = std::mem::replace(&mut self.current, next);
        self.full.send(full).map_err(|_| stopped())
    }

    /// Whether another batch may be made rather than waiting for one to come back.
    fn spare(&self) -> bool {
        self.full.len() + self.empty.len() + 2 < IN_FLIGHT
    }
}

/// The consuming end: [`Drain::next`] until `None`, [`Drain::recycle`] each batch when done.
pub struct Drain {
    full: Receiver<LicenseBatch>,
    empty: Sender<LicenseBatch>,
    complete: Arc<AtomicBool>,
}

impl Drain {
    /// The next batch; `None` once the producer has shipped everything and succeeded. A
    /// producer that failed or stopped ends the stream with an error instead, so that nothing
    /// downstream takes a partial stream for a whole one.
    pub fn next(&mut self) -> Result<Option<LicenseBatch>> {
        match self.full.recv() {
            Ok(b) => Ok(Some(b)),
            Err(_) if self.complete.load(Ordering::Acquire) => Ok(None),
            Err(_) => Err(stopped()),
        }
    }

    pub fn recycle(&mut self, mut batch: LicenseBatch) {
        batch.clear();
        let _ = self.empty.try_send(batch);
    }
}

const STOPPED: &str = "the other half of the operation stopped";

fn stopped() -> Error {
    Error::Internal(STOPPED.into())
}

fn is_stopped(e: &Error) -> bool {
    matches!(e, Error::Internal(m) if m == STOPPED)
}

fn channels() -> (Feed, Drain) {
    let (full_tx, full_rx) = bounded(IN_FLIGHT);
    let (empty_tx, empty_rx) = bounded(IN_FLIGHT);
    let complete = Arc::new(AtomicBool::new(false));
    let feed = Feed {
        full: full_tx,
        empty: empty_rx,
        current: LicenseBatch::default(),
        complete: complete.clone(),
    };
    let drain = Drain {
        full: full_rx,
        empty: empty_tx,
        complete,
    };
    (feed, drain)
}

/// Runs the producing end, then ships what is left in its batch; the feed closes when this
/// returns (or unwinds), which ends the consumer's stream.
fn producing<P>(mut feed: Feed, produce: impl FnOnce(&mut Feed) -> Result<P>) -> Result<P> {
    let p = produce(&mut feed)?;
    feed.ship()?;
    feed.complete.store(true, Ordering::Release);
    Ok(p)
}

fn consuming<C>(mut drain: Drain, consume: impl FnOnce(&mut Drain) -> Result<C>) -> Result<C> {
    consume(&mut drain)
}

fn helper_failed<T>(joined: std::thread::Result<Result<T>>) -> Result<T> {
    joined.unwrap_or_else(|_| Err(Error::Internal("a helper thread panicked".into())))
}

fn spawn_failed(e: std::io::Error) -> Error {
    Error::Internal(format!("cannot start a helper thread: {e}"))
}

/// Runs `produce` on a helper thread and `consume` on this one, batches flowing from the first
/// to the second (the calling thread keeps what cannot move: a restore's write transaction, a
/// backup's events). The first error wins: when one end fails, the other stops at its next
/// handover, and its "stopped" error is not the one reported.
pub fn produce_on_helper<P: Send, C>(
    produce: impl FnOnce(&mut Feed) -> Result<P> + Send,
    consume: impl FnOnce(&mut Drain) -> Result<C>,
) -> Result<(P, C)> {
    let (feed, drain) = channels();
    std::thread::scope(|scope| {
        let helper = std::thread::Builder::new()
            .name("wmlicense-pipe".into())
            .spawn_scoped(scope, move || producing(feed, produce))
            .map_err(spawn_failed)?;
        let c = consuming(drain, consume);
        finish(helper_failed(helper.join()), c)
    })
}

fn finish<P, C>(p: Result<P>, c: Result<C>) -> Result<(P, C)> {
    match (p, c) {
        (Ok(p), Ok(c)) => Ok((p, c)),
        (Err(e), Err(other)) if is_stopped(&e) => Err(other),
        (Err(e), _) | (_, Err(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lic(i: u32, key: &[u8]) -> LicenseRef<'_> {
        LicenseRef {
            key_id: key,
            content_key: key,
            title: (i % 2 == 0).then_some("title"),
            rights: i,
            play_count: -1,
            begin_date: 0,
            expiration_date: 0,
            issued_at: i as i64,
        }
    }

    fn produce(n: u32, fail_at: Option<u32>) -> impl FnOnce(&mut Feed) -> Result<u32> + Send {
        move |feed| {
            for i in 0..n {
                if Some(i) == fail_at {
                    return Err(Error::Store("the producer failed".into()));
                }
                let key = i.to_le_bytes();
                let batch = feed.batch();
                let lineage = batch.lineage_index(&[(i % 7) as u8; 16]);
                batch.push_with(&lic(i, &key), lineage, |out| {
                    out.extend_from_slice(&key);
                    Ok(())
                })?;
                if batch.is_full() {
                    feed.ship()?;
                }
            }
            Ok(n)
        }
    }

    fn consume(fail_after: Option<u32>) -> impl FnOnce(&mut Drain) -> Result<u32> + Send {
        move |drain| {
            let mut seen = 0u32;
            while let Some(batch) = drain.next()? {
                for (l, lineage) in batch.iter() {
                    assert_eq!(l.key_id, seen.to_le_bytes());
                    assert_eq!(l.issued_at, seen as i64);
                    assert_eq!(l.title.is_some(), seen % 2 == 0);
                    assert_eq!(batch.lineage(lineage), &[(seen % 7) as u8; 16]);
                    seen += 1;
                    if Some(seen) == fail_after {
                        return Err(Error::BackupRestore("the consumer failed".into()));
                    }
                }
                drain.recycle(batch);
            }
            Ok(seen)
        }
    }

    #[test]
    fn every_license_arrives_in_order() {
        for n in [0, 1, BATCH_ROWS as u32, BATCH_ROWS as u32 * 5 + 17] {
            let (produced, consumed) = produce_on_helper(produce(n, None), consume(None)).unwrap();
            assert_eq!((produced, consumed), (n, n));
        }
    }

    #[test]
    fn a_failing_producer_never_looks_like_a_finished_stream() {
        for at in [0, 5, BATCH_ROWS as u32 * 3 + 1] {
            match produce_on_helper(produce(1 << 20, Some(at)), consume(None)) {
                Err(Error::Store(m)) => assert_eq!(m, "the producer failed"),
                other => panic!("{at}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_failing_consumer_stops_the_producer_and_its_error_is_reported() {
        for after in [1, BATCH_ROWS as u32 * 2 + 3] {
            match produce_on_helper(produce(1 << 22, None), consume(Some(after))) {
                Err(Error::BackupRestore(m)) => assert_eq!(m, "the consumer failed"),
                other => panic!("{after}: {other:?}"),
            }
        }
    }
}
