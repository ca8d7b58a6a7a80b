//! The measurement behind the choice of the at-rest cipher (store schema 3) and of the chunk
//! cipher's implementation: sealing and opening one 16-byte content key (with a key ID as
//! associated data) with each candidate, and sealing 64 KiB chunks.
//!
//!     cargo run --release -p wmlicense-core --example at_rest_ciphers

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, CHACHA20_POLY1305};
use std::time::Instant;

const KEYS: u64 = 500_000;
const CHUNKS: u64 = 1_000;

fn per_key(name: &str, mut seal_open: impl FnMut(u64) -> u8) {
    let t = Instant::now();
    let mut sink = 0u8;
    for i in 0..KEYS {
        sink ^= seal_open(i);
    }
    let ns = t.elapsed().as_nanos() as f64 / KEYS as f64;
    println!("{name:<44} {ns:>8.0} ns per key sealed and opened ({sink})");
}

fn ring_key(alg: &'static ring::aead::Algorithm, key: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(alg, key).unwrap())
}

fn ring_seal_open(k: &LessSafeKey, i: u64, aad: &[u8], msg: &[u8]) -> u8 {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&i.to_le_bytes());
    let mut buf = msg.to_vec();
    k.seal_in_place_append_tag(Nonce::assume_unique_for_key(n), Aad::from(aad), &mut buf)
        .unwrap();
    k.open_in_place(Nonce::assume_unique_for_key(n), Aad::from(aad), &mut buf)
        .unwrap()[0]
}

fn main() {
    let key = [7u8; 32];
    let aad = [3u8; 24];
    let msg = [9u8; 16];
    let x = chacha20poly1305::XChaCha20Poly1305::new((&key).into());
    per_key("XChaCha20-Poly1305 (RustCrypto, schema 2)", |i| {
        let mut n = [0u8; 24];
        n[16..].copy_from_slice(&i.to_le_bytes());
        let ct = x
            .encrypt(
                (&n).into(),
                Payload {
                    msg: &msg,
                    aad: &aad,
                },
            )
            .unwrap();
        x.decrypt(
            (&n).into(),
            Payload {
                msg: &ct,
                aad: &aad,
            },
        )
        .unwrap()[0]
    });
    let c = ring_key(&CHACHA20_POLY1305, &key);
    per_key("ChaCha20-Poly1305 (ring, schema 3)", |i| {
        ring_seal_open(&c, i, &aad, &msg)
    });
    let g = ring_key(&AES_256_GCM, &key);
    per_key("AES-256-GCM (ring)", |i| ring_seal_open(&g, i, &aad, &msg));

    let chunk = vec![1u8; 64 * 1024];
    let gbps = |t: Instant| (CHUNKS * chunk.len() as u64) as f64 / t.elapsed().as_secs_f64() / 1e9;
    let rc = chacha20poly1305::ChaCha20Poly1305::new((&key).into());
    let t = Instant::now();
    for i in 0..CHUNKS {
        let mut n = [0u8; 12];
        n[..8].copy_from_slice(&i.to_le_bytes());
        std::hint::black_box(
            rc.encrypt(
                (&n).into(),
                Payload {
                    msg: &chunk,
                    aad: &aad,
                },
            )
            .unwrap(),
        );
    }
    println!(
        "{:<44} {:>8.2} GB/s",
        "64 KiB chunks, ChaCha20-Poly1305 (RustCrypto)",
        gbps(t)
    );
    let t = Instant::now();
    for i in 0..CHUNKS {
        let mut buf = chunk.clone();
        let mut n = [0u8; 12];
        n[..8].copy_from_slice(&i.to_le_bytes());
        c.seal_in_place_append_tag(Nonce::assume_unique_for_key(n), Aad::from(&aad), &mut buf)
            .unwrap();
        std::hint::black_box(buf);
    }
    println!(
        "{:<44} {:>8.2} GB/s",
        "64 KiB chunks, ChaCha20-Poly1305 (ring)",
        gbps(t)
    );
}
