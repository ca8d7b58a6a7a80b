//! The committed test vector tests/vectors/backup-v1.wmlb: a small backup made from fixed keys
//! and a fixed seed. The writer must reproduce it byte for byte, and the reader must parse it.
//! Regenerate (only when the format version changes) with:
//!   WMLICENSE_BLESS=1 cargo test --test backup_vector

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::ChaCha20Poly1305;
use rand_core::{CryptoRng, RngCore};
use std::path::Path;
use wmlicense_core::crypto::{hpke_open_key, hpke_seal_key, KeyPair, SealedKey};
use wmlicense_core::format::{self, BackupReader, BackupWriter, Header, INFO_DATA_KEY};
use wmlicense_core::License;

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

fn header(service: &KeyPair, rng: &mut SeededRng) -> Header {
    let mut h = Header {
        backup_id: [0x11; 16],
        lineage_id: [0x22; 16],
        source_device_id: [0x33; 16],
        created_at: 1_750_000_000,
        license_count: 2,
        service_key_id: [0x44; 16],
        chunk_size: format::DEFAULT_CHUNK_SIZE,
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

fn generate() -> Vec<u8> {
    let service = KeyPair::derive(SERVICE_IKM);
    let mut rng = SeededRng::new(SEED);
    let h = header(&service, &mut rng);
    let mut w = BackupWriter::new(Vec::new(), &h, &DATA_KEY).unwrap();
    for l in licenses() {
        w.push(&l).unwrap();
    }
    w.finish().unwrap()
}

#[test]
fn writer_reproduces_the_committed_vector() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/backup-v1.wmlb");
    let generated = generate();
    if std::env::var_os("WMLICENSE_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read(&path).expect("the committed vector exists");
    assert_eq!(
        committed, generated,
        "the backup writer no longer produces the v1 vector"
    );
}

#[test]
fn reader_parses_the_committed_vector() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/backup-v1.wmlb");
    let bytes = std::fs::read(&path).expect("the committed vector exists");
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
