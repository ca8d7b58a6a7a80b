//! Fuzzes the backup reader (core/src/format.rs) two ways on every input:
//!
//! 1. Raw: the input is a whole `licenses.wmlb`; the header is parsed and every license read
//!    with the fixed data key of the committed test vector (so the seed vector authenticates).
//!    Every failure must be `BackupCorrupt`, the reader must make progress, and its memory must
//!    stay within a few chunk sizes.
//! 2. Structured: the input is a program of mutations (flip, cut, insert, delete, overwrite,
//!    move or drop chunks) applied to a valid multi-chunk backup made with a fixed key. The
//!    unaltered file must read back exactly; any altered file must end in `BackupCorrupt`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use wmlicense_core::crypto::{SealedKey, TAG_LEN};
use wmlicense_core::format::{
    self, BackupReader, BackupWriter, Header, HEADER_LEN, MIN_CHUNK_SIZE,
};
use wmlicense_core::{Error, License};

/// The data key of core/tests/vectors/backup-v1.wmlb.
const DATA_KEY: [u8; 32] = [0x42; 32];

/// Counts the bytes the Rust code holds, to check the reader's memory bound.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to the system allocator unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Starts measuring the peak of live bytes; returns the baseline.
fn measure_from_here() -> usize {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    base
}

/// The most a reader of `chunk_size` may hold: the ciphertext buffer, the previous and the new
/// plaintext (a little over a chunk each), one license and small change.
fn memory_bound(chunk_size: u32, header_len: usize) -> usize {
    // The reader keeps a copy of the header and its lineage table (version 2: up to 64 KiB).
    4 * (chunk_size as usize + TAG_LEN) + 2 * header_len + 16 * 1024
}

fn assert_corrupt(e: &Error, what: &str) {
    assert!(
        matches!(e, Error::BackupCorrupt(_)),
        "{what}: expected BackupCorrupt, got {e:?}"
    );
}

/// How a read ended.
enum Outcome {
    /// `Ok(None)` after this many licenses.
    Complete(usize),
    /// `BackupCorrupt` after this many licenses.
    Corrupt(usize),
}

/// Reads `bytes` as a backup; `check` sees each license with its index. Asserts the reader's
/// invariants whatever the bytes are.
fn read(bytes: &[u8], mut check: impl FnMut(usize, &License)) -> Outcome {
    let mut input = bytes;
    let header = match format::read_header(&mut input) {
        Ok(h) => h,
        Err(e) => {
            assert_corrupt(&e, "read_header");
            return Outcome::Corrupt(0);
        }
    };
    let base = measure_from_here();
    let mut reader = BackupReader::new(input, &header, &DATA_KEY);
    let mut n = 0usize;
    let outcome = loop {
        match reader.next_license() {
            Ok(Some(l)) => {
                assert!(
                    l.validate().is_ok(),
                    "the reader yielded an invalid license"
                );
                check(n, &l);
                n += 1;
                // A record takes at least 38 bytes of an authenticated chunk: no endless loop.
                assert!(
                    n <= bytes.len() / 38,
                    "more licenses than the file can hold"
                );
            }
            Ok(None) => {
                assert_eq!(
                    n as u64, header.license_count,
                    "end before the promised count"
                );
                // The end is stable.
                assert!(matches!(reader.next_license(), Ok(None)));
                break Outcome::Complete(n);
            }
            Err(e) => {
                assert_corrupt(&e, "next_license");
                break Outcome::Corrupt(n);
            }
        }
    };
    drop(reader);
    let peak = PEAK.load(Ordering::Relaxed) - base;
    assert!(
        peak <= memory_bound(header.chunk_size, header.header_len()),
        "the reader held {peak} bytes for chunk size {}",
        header.chunk_size
    );
    outcome
}

/// A valid backup of several smallest chunks, and its licenses.
fn valid() -> &'static (Vec<u8>, Vec<License>) {
    static VALID: OnceLock<(Vec<u8>, Vec<License>)> = OnceLock::new();
    VALID.get_or_init(|| {
        let licenses: Vec<License> = (0u32..14)
            .map(|i| License {
                key_id: format!("kid-{i:04}").into_bytes(),
                content_key: vec![i as u8 ^ 0x5A; 1 + (i as usize * 7) % 64],
                title: (i % 4 != 3).then(|| "é".repeat((i as usize * 131) % 500)),
                rights: 0x201 | (i & 0x8),
                play_count: i as i32 - 1,
                begin_date: i as i64 * 1000,
                expiration_date: if i % 2 == 0 { 0 } else { 2_000_000_000 },
                issued_at: 1_700_000_000 + i as i64,
            })
            .collect();
        // The structured part mutates a version 1 backup (its chunk framing is what `chunks`
        // parses); the raw part reads inputs of either version.
        let header = Header {
            version: format::VERSION_1,
            backup_id: [0x11; 16],
            lineage_id: [0x22; 16],
            source_device_id: [0x33; 16],
            created_at: 1_750_000_000,
            license_count: licenses.len() as u64,
            service_key_id: [0x44; 16],
            chunk_size: MIN_CHUNK_SIZE,
            lineages: Vec::new(),
            sealed_data_key: SealedKey {
                encapped: [0x55; 32],
                ciphertext: [0x66; 48],
            },
        };
        let mut w = BackupWriter::new(Vec::new(), &header, &DATA_KEY).unwrap();
        for l in &licenses {
            w.push(l, 0).unwrap();
        }
        let bytes = w.finish().unwrap();
        assert!(
            chunks(&bytes).len() >= 3,
            "the valid backup has too few chunks"
        );
        (bytes, licenses)
    })
}

/// The (start, end) byte ranges of the chunks, as far as the length words make sense.
fn chunks(b: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = HEADER_LEN;
    while at + 4 <= b.len() {
        let word = u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
        let end = at + 4 + (word & 0x7FFF_FFFF) as usize;
        if end > b.len() {
            break;
        }
        out.push((at, end));
        at = end;
    }
    out
}

/// Reads little-endian numbers off the mutation program; zero once it runs out.
struct Program<'a>(&'a [u8]);

impl Program<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> usize {
        u16::from_le_bytes([self.byte(), self.byte()]) as usize
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }
    /// A position in 0..len (len > 0).
    fn pos(&mut self, len: usize) -> usize {
        self.u16() % len
    }
}

/// Applies up to 8 mutations that `program` describes.
fn mutate(bytes: &mut Vec<u8>, program: &[u8]) {
    let mut p = Program(program);
    for _ in 0..8 {
        if p.0.is_empty() || bytes.is_empty() {
            return;
        }
        let len = bytes.len();
        match p.byte() % 10 {
            0 => {
                let at = p.pos(len);
                bytes[at] ^= p.byte().max(1);
            }
            1 => bytes.truncate(p.pos(len)),
            2 => {
                let at = p.pos(len + 1);
                let n = (p.byte() % 8) as usize + 1;
                let ins: Vec<u8> = (0..n).map(|_| p.byte()).collect();
                bytes.splice(at..at, ins);
            }
            3 => {
                let at = p.pos(len);
                let n = (p.u16() % 64 + 1).min(len - at);
                bytes.drain(at..at + n);
            }
            4 => {
                // Overwrite 4 bytes (a chunk's length word, say) with a chosen value.
                let at = p.pos(len);
                let v = p.u32().to_le_bytes();
                for (i, b) in v.iter().enumerate() {
                    if let Some(x) = bytes.get_mut(at + i) {
                        *x = *b;
                    }
                }
            }
            op @ 5..=7 => {
                let c = chunks(bytes);
                if c.is_empty() {
                    continue;
                }
                let (i, j) = (p.byte() as usize % c.len(), p.byte() as usize % c.len());
                let (a, b) = (c[i], c[j]);
                let chunk_i = bytes[a.0..a.1].to_vec();
                match op {
                    // Swap two chunks.
                    5 if i != j => {
                        let (first, second) = if i < j { (a, b) } else { (b, a) };
                        let mut out = bytes[..first.0].to_vec();
                        out.extend_from_slice(&bytes[second.0..second.1]);
                        out.extend_from_slice(&bytes[first.1..second.0]);
                        out.extend_from_slice(&bytes[first.0..first.1]);
                        out.extend_from_slice(&bytes[second.1..]);
                        *bytes = out;
                    }
                    // Drop a chunk.
                    6 => {
                        bytes.drain(a.0..a.1);
                    }
                    // Duplicate a chunk in front of another.
                    _ => {
                        bytes.splice(b.0..b.0, chunk_i);
                    }
                }
            }
            8 => {
                // Flip the last-chunk bit of a chunk.
                let c = chunks(bytes);
                if let Some(&(at, _)) = c.get(p.byte() as usize % c.len().max(1)) {
                    bytes[at + 3] ^= 0x80;
                }
            }
            _ => {
                let n = (p.byte() % 16) as usize + 1;
                for _ in 0..n {
                    let b = p.byte();
                    bytes.push(b);
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // 1. Raw bytes.
    read(data, |_, _| {});

    // 2. Mutations of a valid backup.
    let (original, licenses) = valid();
    let mut bytes = original.clone();
    mutate(&mut bytes, data);
    let unaltered = bytes == *original;
    let outcome = read(&bytes, |i, l| {
        if unaltered {
            assert_eq!(
                l, &licenses[i],
                "license {i} of the unaltered backup differs"
            );
        }
    });
    match outcome {
        Outcome::Complete(n) => {
            assert!(
                unaltered,
                "an altered backup was read to the end ({n} licenses)"
            );
            assert_eq!(n, licenses.len());
        }
        Outcome::Corrupt(n) => {
            assert!(!unaltered, "the unaltered backup failed after {n} licenses");
        }
    }
});
