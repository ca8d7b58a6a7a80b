//! The committed test vectors: tests/vectors/backup-v1.wmlb, a small backup in one chunk, and
//! tests/vectors/backup-v1-chunks.wmlb, licenses spread over several chunks of the smallest
//! size. Both are made from fixed keys and a fixed seed; the writer must reproduce them byte for
//! byte, and the reader must parse them into exactly their inputs. Regenerate (only when the
//! format version changes) with:
//!   WMLICENSE_BLESS=1 cargo test -p wmlicense-core --test backup_vector

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::ChaCha20Poly1305;
use rand_core::{CryptoRng, RngCore};
use std::path::Path;
use wmlicense_core::crypto::{hpke_open_key, hpke_seal_key, KeyPair, SealedKey, TAG_LEN};
use wmlicense_core::format::{
    self, BackupReader, BackupVerifier, BackupWriter, Header, HEADER_LEN, INFO_DATA_KEY,
    MIN_CHUNK_SIZE,
};
use wmlicense_core::{Error, License};

/// A deterministic CSPRNG (the ChaCha20 keystream of a seed, taken from the end of each 64-byte
/// block): the HPKE encapsulation of the vector comes from it. Test-only.
struct SeededRng {
    cipher: ChaCha20Poly1305,
    block: u64,
    buf: Vec<u8>,
}

impl SeededRng {
    fn new(seed: [u8; 32]) -> SeededRng {
        SeededRng {
            cipher: ChaCha20Poly1305::new((&seed).into()),
            block: 0,
            buf: Vec::new(),
        }
    }
}

impl RngCore for SeededRng {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for d in dest.iter_mut() {
            if self.buf.is_empty() {
                let mut nonce = [0u8; 12];
                nonce[..8].copy_from_slice(&self.block.to_le_bytes());
                let mut ks = self
                    .cipher
                    .encrypt((&nonce).into(), &[0u8; 64][..])
                    .expect("encrypting zeros cannot fail");
                ks.truncate(64);
                ks.reverse();
                self.buf = ks;
                self.block += 1;
            }
            *d = self.buf.pop().unwrap_or(0);
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for SeededRng {}

/// Inputs of the vector, also listed in docs/backup-format.md.
const SERVICE_IKM: &[u8] = b"wmlicense test vector service key";
const DATA_KEY: [u8; 32] = [0x42; 32];
const SEED: [u8; 32] = [0x07; 32];

fn licenses() -> Vec<License> {
    vec![
        License {
            key_id: b"kid-0001".to_vec(),
            content_key: (0u8..16).collect(),
            title: Some("Blue in Green".into()),
            rights: 0x201,
            play_count: -1,
            begin_date: 0,
            expiration_date: 0,
            issued_at: 1_700_000_000,
        },
        License {
            key_id: vec![0x00, 0xFF, 0x10],
            content_key: vec![0xAA; 32],
            title: None,
            rights: 0x209,
            play_count: 5,
            begin_date: 1_600_000_000,
            expiration_date: 1_900_000_000,
            issued_at: 1_700_000_001,
        },
    ]
}

/// Inputs of the chunked vector, also listed in docs/backup-format.md: 12 licenses, in key-ID
/// order, with titles from none, empty and 1 byte to the 1024-byte maximum.
fn chunked_licenses() -> Vec<License> {
    let titles: [Option<String>; 12] = [
        Some("So What".into()),
        None,
        Some("Freddie Freeloader ".repeat(30)),
        Some("\u{e9}".repeat(512)),
        Some(String::new()),
        Some("Blue in Green ".repeat(18)),
        Some("All Blues ".repeat(90)),
        Some("Flamenco Sketches".into()),
        Some("\u{266a}".repeat(100)),
        None,
        Some("Kind of Blue ".repeat(50)),
        Some("x".into()),
    ];
    titles
        .into_iter()
        .enumerate()
        .map(|(i, title)| {
            let (begin_date, expiration_date) =
                [(0, 0), (1_600_000_000, 1_900_000_000), (1_650_000_000, 0)][i % 3];
            License {
                key_id: format!("chunk-{i:02}").into_bytes(),
                content_key: (0..1 + (i * 23) % 64).map(|j| (i * 16 + j) as u8).collect(),
                title,
                rights: [0x201, 0x209, 0x3FB, 0x200][i % 4],
                play_count: [-1, 0, 5, 1000][i % 4],
                begin_date,
                expiration_date,
                issued_at: 1_700_000_000 + i as i64,
            }
        })
        .collect()
}

/// The header of every vector: fixed IDs and time; `lineages` empty for version 1.
fn header(
    service: &KeyPair,
    rng: &mut SeededRng,
    license_count: u64,
    chunk_size: u32,
    lineages: Vec<[u8; 16]>,
) -> Header {
    let mut h = Header {
        version: if lineages.is_empty() {
            format::VERSION_1
        } else {
            format::VERSION
        },
        backup_id: [0x11; 16],
        lineage_id: [0x22; 16],
        source_device_id: [0x33; 16],
        created_at: 1_750_000_000,
        license_count,
        service_key_id: [0x44; 16],
        chunk_size,
        lineages,
        sealed_data_key: SealedKey {
            encapped: [0; 32],
            ciphertext: [0; 48],
        },
    };
    h.sealed_data_key = hpke_seal_key(
        &service.public,
        INFO_DATA_KEY,
        &h.core_bytes(),
        &DATA_KEY,
        rng,
    )
    .unwrap();
    h
}

fn generate(licenses: &[License], chunk_size: u32) -> Vec<u8> {
    let service = KeyPair::derive(SERVICE_IKM);
    let mut rng = SeededRng::new(SEED);
    let h = header(
        &service,
        &mut rng,
        licenses.len() as u64,
        chunk_size,
        Vec::new(),
    );
    let mut w = BackupWriter::new(Vec::new(), &h, &DATA_KEY).unwrap();
    for l in licenses {
        w.push(l, 0).unwrap();
    }
    w.finish().unwrap()
}

fn vector_path(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors")
        .join(name)
}

/// Compares `generated` with the committed vector `name` (rewriting it first when blessing).
fn check_committed(name: &str, generated: &[u8]) {
    let path = vector_path(name);
    if std::env::var_os("WMLICENSE_BLESS").is_some() {
        std::fs::write(&path, generated).unwrap();
    }
    let committed = std::fs::read(&path).expect("the committed vector exists");
    assert!(
        committed == generated,
        "the backup writer no longer produces {name}"
    );
}

/// Reads a whole backup with the vectors' data key.
fn read_all(bytes: &[u8]) -> Result<Vec<License>, Error> {
    let mut input = bytes;
    let h = format::read_header(&mut input)?;
    let mut r = BackupReader::new(input, &h, &DATA_KEY);
    let mut got = Vec::new();
    while let Some(l) = r.next_license()? {
        got.push(l);
    }
    Ok(got)
}

/// The byte ranges of the chunks (length word included), from the length words.
fn chunk_ranges(bytes: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut at = HEADER_LEN;
    while at < bytes.len() {
        let word = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        let end = at + 4 + (word & 0x7FFF_FFFF) as usize;
        out.push(at..end);
        at = end;
    }
    assert_eq!(at, bytes.len(), "the chunks end where the file does");
    out
}

#[test]
fn writer_reproduces_the_committed_vector() {
    check_committed(
        "backup-v1.wmlb",
        &generate(&licenses(), format::DEFAULT_CHUNK_SIZE),
    );
}

#[test]
fn writer_reproduces_the_chunked_vector() {
    check_committed(
        "backup-v1-chunks.wmlb",
        &generate(&chunked_licenses(), MIN_CHUNK_SIZE),
    );
}

#[test]
fn reader_parses_the_committed_vector() {
    let bytes = std::fs::read(vector_path("backup-v1.wmlb")).expect("the committed vector exists");
    assert_eq!(&bytes[..8], b"WMLB\x89\r\n\x1a");
    let mut input = &bytes[..];
    let h = format::read_header(&mut input).unwrap();
    assert_eq!(h.backup_id, [0x11; 16]);
    assert_eq!(h.lineage_id, [0x22; 16]);
    assert_eq!(h.source_device_id, [0x33; 16]);
    assert_eq!(h.created_at, 1_750_000_000);
    assert_eq!(h.license_count, 2);
    assert_eq!(h.service_key_id, [0x44; 16]);
    let service = KeyPair::derive(SERVICE_IKM);
    let data_key = hpke_open_key(
        &service.secret,
        INFO_DATA_KEY,
        &h.core_bytes(),
        &h.sealed_data_key,
    )
    .expect("the service key opens the data key");
    assert_eq!(data_key, DATA_KEY);
    let mut r = BackupReader::new(input, &h, &data_key);
    let mut got = Vec::new();
    while let Some(l) = r.next_license().unwrap() {
        got.push(l);
    }
    assert_eq!(got, licenses());
    // No content key appears in the clear.
    for l in licenses() {
        assert!(!bytes
            .windows(l.content_key.len())
            .any(|w| w == &l.content_key[..]));
    }
}

/// Size and chunk count of backup-v1-chunks.wmlb, as docs/backup-format.md gives them.
const CHUNKED_SIZE: usize = 4863;
const CHUNKED_CHUNKS: usize = 3;

#[test]
fn reader_parses_the_chunked_vector() {
    let bytes =
        std::fs::read(vector_path("backup-v1-chunks.wmlb")).expect("the committed vector exists");
    assert_eq!(bytes.len(), CHUNKED_SIZE);
    let mut input = &bytes[..];
    let h = format::read_header(&mut input).unwrap();
    assert_eq!(h.chunk_size, MIN_CHUNK_SIZE);
    assert_eq!(h.license_count, 12);
    let service = KeyPair::derive(SERVICE_IKM);
    let data_key = hpke_open_key(
        &service.secret,
        INFO_DATA_KEY,
        &h.core_bytes(),
        &h.sealed_data_key,
    )
    .expect("the service key opens the data key");
    assert_eq!(data_key, DATA_KEY);
    assert_eq!(read_all(&bytes).unwrap(), chunked_licenses());

    let chunks = chunk_ranges(&bytes);
    assert_eq!(chunks.len(), CHUNKED_CHUNKS);
    assert!(chunks.len() >= 3);
    for (i, c) in chunks.iter().enumerate() {
        let word = u32::from_le_bytes(bytes[c.start..c.start + 4].try_into().unwrap());
        // Only the last chunk carries the flag, and no chunk holds more than the chunk size.
        assert_eq!(word & 0x8000_0000 != 0, i == chunks.len() - 1, "chunk {i}");
        assert!(
            c.len() - 4 <= MIN_CHUNK_SIZE as usize + TAG_LEN,
            "chunk {i}"
        );
        assert!(c.len() - 4 > TAG_LEN, "chunk {i} is empty");
    }
    // No content key appears in the clear (those under 8 bytes could match by chance).
    for l in chunked_licenses()
        .iter()
        .filter(|l| l.content_key.len() >= 8)
    {
        assert!(!bytes
            .windows(l.content_key.len())
            .any(|w| w == &l.content_key[..]));
    }
}

fn assert_corrupt(bytes: &[u8], what: &str) {
    match read_all(bytes) {
        Err(Error::BackupCorrupt(_)) => {}
        other => panic!("{what}: expected the corrupt error, got {other:?}"),
    }
}

#[test]
fn chunked_vector_rejects_moved_dropped_and_cut_chunks() {
    let bytes =
        std::fs::read(vector_path("backup-v1-chunks.wmlb")).expect("the committed vector exists");
    let chunks = chunk_ranges(&bytes);
    let n = chunks.len();
    assert!(n >= 3);

    // Swap two neighbouring chunks, each pair in turn, and the first with the last.
    let mut pairs: Vec<(usize, usize)> = (0..n - 1).map(|i| (i, i + 1)).collect();
    pairs.push((0, n - 1));
    for (a, b) in pairs {
        let mut order: Vec<usize> = (0..n).collect();
        order.swap(a, b);
        let mut swapped = bytes[..HEADER_LEN].to_vec();
        for i in order {
            swapped.extend_from_slice(&bytes[chunks[i].clone()]);
        }
        assert_eq!(swapped.len(), bytes.len());
        assert_corrupt(&swapped, &format!("chunks {a} and {b} swapped"));
    }

    // Drop the last chunk: what remains is a well-formed run of chunks without the last one.
    assert_corrupt(&bytes[..chunks[n - 1].start], "last chunk dropped");
    // Drop a middle chunk.
    let mut dropped = bytes[..chunks[1].start].to_vec();
    dropped.extend_from_slice(&bytes[chunks[1].end..]);
    assert_corrupt(&dropped, "chunk 1 dropped");

    // Cut inside each chunk: in its length word, just after it, in the middle, one byte short.
    for (i, c) in chunks.iter().enumerate() {
        for cut in [c.start + 2, c.start + 4, c.start + c.len() / 2, c.end - 1] {
            assert_corrupt(&bytes[..cut], &format!("cut at {cut} inside chunk {i}"));
        }
    }
}

// ---- Version 2 -------------------------------------------------------------------------------

/// The lineages of backup-v2.wmlb (ascending), also listed in docs/backup-format.md.
const V2_LINEAGES: [[u8; 16]; 3] = [[0x22; 16], [0x5A; 16], [0xC3; 16]];
/// The lineage of each license of backup-v2.wmlb (index into `V2_LINEAGES`).
fn v2_lineage_of(i: usize) -> usize {
    [0, 1, 2, 1, 0, 2, 2, 1, 0, 0, 1, 2][i]
}

/// backup-v2.wmlb: the chunked vector's 12 licenses, in chunks of the smallest size, over three
/// lineages; the header's own lineage field is 0x22 (the source store's).
fn generate_v2() -> Vec<u8> {
    let service = KeyPair::derive(SERVICE_IKM);
    let mut rng = SeededRng::new(SEED);
    let licenses = chunked_licenses();
    let h = header(
        &service,
        &mut rng,
        licenses.len() as u64,
        MIN_CHUNK_SIZE,
        V2_LINEAGES.to_vec(),
    );
    let mut w = BackupWriter::new(Vec::new(), &h, &DATA_KEY).unwrap();
    for (i, l) in licenses.iter().enumerate() {
        w.push(l, v2_lineage_of(i) as u16).unwrap();
    }
    w.finish().unwrap()
}

/// Size, header length and chunk count of backup-v2.wmlb, as docs/backup-format.md gives them.
const V2_SIZE: usize = 4999;
const V2_HEADER_LEN: usize = 180 + 3 * 16;
const V2_CHUNKS: usize = 3;

fn v2_chunk_ranges(bytes: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut at = V2_HEADER_LEN;
    while at < bytes.len() {
        let word = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        let end = at + 4 + 4 + (word & 0x7FFF_FFFF) as usize + 16;
        out.push(at..end);
        at = end;
    }
    assert_eq!(at, bytes.len(), "the chunks end where the file does");
    out
}

#[test]
fn writer_reproduces_the_v2_vector() {
    check_committed("backup-v2.wmlb", &generate_v2());
}

#[test]
fn reader_parses_the_v2_vector() {
    let bytes = std::fs::read(vector_path("backup-v2.wmlb")).expect("the committed vector exists");
    assert_eq!(bytes.len(), V2_SIZE);
    assert_eq!(&bytes[8..10], &2u16.to_le_bytes());
    assert_eq!(&bytes[10..12], &(V2_HEADER_LEN as u16).to_le_bytes());
    let mut input = &bytes[..];
    let h = format::read_header(&mut input).unwrap();
    assert_eq!(h.version, 2);
    assert_eq!(h.lineages, V2_LINEAGES.to_vec());
    assert_eq!(h.policy_lineages(), V2_LINEAGES.to_vec());
    assert_eq!(h.license_count, 12);
    assert_eq!(h.header_len(), V2_HEADER_LEN);
    let service = KeyPair::derive(SERVICE_IKM);
    let data_key = hpke_open_key(
        &service.secret,
        INFO_DATA_KEY,
        &h.core_bytes(),
        &h.sealed_data_key,
    )
    .expect("the service key opens the data key");
    assert_eq!(data_key, DATA_KEY);
    // The sealed key is bound to the lineage table: another table does not open it.
    let mut other = h.clone();
    other.lineages[2][15] ^= 1;
    assert!(hpke_open_key(
        &service.secret,
        INFO_DATA_KEY,
        &other.core_bytes(),
        &h.sealed_data_key
    )
    .is_none());

    let mut r = BackupReader::new(input, &h, &data_key);
    let mut got = Vec::new();
    while let Some(e) = r.next_entry().unwrap() {
        got.push(e);
    }
    let want: Vec<(License, [u8; 16])> = chunked_licenses()
        .into_iter()
        .enumerate()
        .map(|(i, l)| (l, V2_LINEAGES[v2_lineage_of(i)]))
        .collect();
    assert_eq!(got, want);

    // The verify reader checks it all from the verify key alone.
    let (_, verify_key) = wmlicense_core::crypto::derive_backup_keys(&DATA_KEY);
    let mut v = BackupVerifier::new(&bytes[V2_HEADER_LEN..], &h, Some(&verify_key)).unwrap();
    assert_eq!(v.verify_all().unwrap(), 12);

    let chunks = v2_chunk_ranges(&bytes);
    assert_eq!(chunks.len(), V2_CHUNKS);
    let mut counted = 0;
    for (i, c) in chunks.iter().enumerate() {
        let word = u32::from_le_bytes(bytes[c.start..c.start + 4].try_into().unwrap());
        assert_eq!(word & 0x8000_0000 != 0, i == chunks.len() - 1, "chunk {i}");
        assert!((word & 0x7FFF_FFFF) as usize <= MIN_CHUNK_SIZE as usize + TAG_LEN);
        let n = u32::from_le_bytes(bytes[c.start + 4..c.start + 8].try_into().unwrap());
        assert!(n > 0, "chunk {i} is empty");
        counted += n;
    }
    assert_eq!(counted, 12);
    for l in chunked_licenses()
        .iter()
        .filter(|l| l.content_key.len() >= 8)
    {
        assert!(!bytes
            .windows(l.content_key.len())
            .any(|w| w == &l.content_key[..]));
    }
    // Swapped, dropped and cut chunks fail both readers.
    let n = chunks.len();
    let read_both = |b: &[u8]| -> (bool, bool) {
        let mut input = b;
        let h = match format::read_header(&mut input) {
            Ok(h) => h,
            Err(_) => return (true, true),
        };
        let mut r = BackupReader::new(input, &h, &DATA_KEY);
        let full = loop {
            match r.next_entry() {
                Ok(Some(_)) => {}
                Ok(None) => break false,
                Err(Error::BackupCorrupt(_)) => break true,
                Err(e) => panic!("{e:?}"),
            }
        };
        let verify = matches!(
            BackupVerifier::new(input, &h, Some(&verify_key))
                .unwrap()
                .verify_all(),
            Err(Error::BackupCorrupt(_))
        );
        (full, verify)
    };
    let mut swapped = bytes[..V2_HEADER_LEN].to_vec();
    for i in [1, 0, 2] {
        swapped.extend_from_slice(&bytes[chunks[i].clone()]);
    }
    assert_eq!(read_both(&swapped), (true, true));
    assert_eq!(read_both(&bytes[..chunks[n - 1].start]), (true, true));
    for c in &chunks {
        for cut in [c.start + 2, c.start + 6, c.start + c.len() / 2, c.end - 1] {
            assert_eq!(read_both(&bytes[..cut]), (true, true), "cut at {cut}");
        }
    }
}
