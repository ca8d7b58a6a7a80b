//! Cryptographic building blocks: randomness, sealing secrets at rest, HPKE, chunk AEAD.
//!
//! Algorithms: X25519-HKDF-SHA256 / HKDF-SHA256 / ChaCha20-Poly1305 for HPKE (RFC 9180, base
//! mode), ChaCha20-Poly1305 for content keys at rest (XChaCha20-Poly1305 before store schema 3, read
//! once by the migration), ChaCha20-Poly1305 for backup chunks.

use crate::error::{Error, Result};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use hpke::{Deserializable, Kem as _, Serializable};
use rand_core::{CryptoRng, RngCore};
use std::sync::atomic::{AtomicU64, Ordering};

type HpkeKem = hpke::kem::X25519HkdfSha256;
type HpkeKdf = hpke::kdf::HkdfSha256;
type HpkeAead = hpke::aead::ChaCha20Poly1305;

pub const KEY_LEN: usize = 32;
pub const TAG_LEN: usize = 16;
/// Length of an X25519 encapsulated key.
pub const ENCAPPED_LEN: usize = 32;
/// Length of an HPKE-sealed 32-byte key: the key plus the AEAD tag.
pub const SEALED_KEY_LEN: usize = KEY_LEN + TAG_LEN;

/// Fills `buf` from the operating system's CSPRNG.
pub fn random_bytes(buf: &mut [u8]) -> Result<()> {
    rand_core::OsRng
        .try_fill_bytes(buf)
        .map_err(|e| Error::Internal(format!("the system random number generator failed: {e}")))
}

pub fn random_array<const N: usize>() -> Result<[u8; N]> {
    let mut a = [0u8; N];
    random_bytes(&mut a)?;
    Ok(a)
}

/// An X25519 key pair as raw bytes.
#[derive(Clone)]
pub struct KeyPair {
    pub secret: [u8; 32],
    pub public: [u8; 32],
}

impl KeyPair {
    pub fn generate() -> Result<KeyPair> {
        let seed: [u8; 32] = random_array()?;
        Ok(KeyPair::derive(&seed))
    }

    /// Deterministic key pair from input keying material (RFC 9180 DeriveKeyPair).
    pub fn derive(ikm: &[u8]) -> KeyPair {
        let (sk, pk) = HpkeKem::derive_keypair(ikm);
        KeyPair {
            secret: to_array(&sk.to_bytes()),
            public: to_array(&pk.to_bytes()),
        }
    }

    pub fn from_secret(secret: [u8; 32]) -> Result<KeyPair> {
        let sk = <HpkeKem as hpke::Kem>::PrivateKey::from_bytes(&secret)
            .map_err(|e| Error::Internal(format!("invalid X25519 secret key: {e}")))?;
        let pk = HpkeKem::sk_to_pk(&sk);
        Ok(KeyPair {
            secret,
            public: to_array(&pk.to_bytes()),
        })
    }
}

fn to_array(bytes: &[u8]) -> [u8; 32] {
    let mut a = [0u8; 32];
    a.copy_from_slice(bytes);
    a
}

/// A 32-byte key sealed to an X25519 public key with HPKE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedKey {
    pub encapped: [u8; ENCAPPED_LEN],
    pub ciphertext: [u8; SEALED_KEY_LEN],
}

type PublicKey = <HpkeKem as hpke::Kem>::PublicKey;
type PrivateKey = <HpkeKem as hpke::Kem>::PrivateKey;

fn public_key(bytes: &[u8; 32]) -> Result<PublicKey> {
    PublicKey::from_bytes(bytes)
        .map_err(|e| Error::Internal(format!("invalid X25519 public key: {e}")))
}

/// Seals `key` to `recipient` in `mode` (the one seal of base and auth mode).
fn seal_key<R: RngCore + CryptoRng>(
    mode: &hpke::OpModeS<HpkeKem>,
    recipient: &[u8; 32],
    info: &[u8],
    aad: &[u8],
    key: &[u8; KEY_LEN],
    rng: &mut R,
) -> Result<SealedKey> {
    let (enc, ct) = hpke::single_shot_seal::<HpkeAead, HpkeKdf, HpkeKem, R>(
        mode,
        &public_key(recipient)?,
        info,
        key,
        aad,
        rng,
    )
    .map_err(|e| Error::Internal(format!("HPKE seal failed: {e}")))?;
    let mut sealed = SealedKey {
        encapped: [0; ENCAPPED_LEN],
        ciphertext: [0; SEALED_KEY_LEN],
    };
    sealed.encapped.copy_from_slice(&enc.to_bytes());
    sealed.ciphertext.copy_from_slice(&ct);
    Ok(sealed)
}

/// Opens a key sealed by [`seal_key`] in `mode`; `None` when it does not authenticate.
fn open_key(
    mode: &hpke::OpModeR<HpkeKem>,
    secret: &[u8; 32],
    info: &[u8],
    aad: &[u8],
    sealed: &SealedKey,
) -> Option<[u8; KEY_LEN]> {
    let sk = PrivateKey::from_bytes(secret).ok()?;
    let enc = <HpkeKem as hpke::Kem>::EncappedKey::from_bytes(&sealed.encapped).ok()?;
    let pt = hpke::single_shot_open::<HpkeAead, HpkeKdf, HpkeKem>(
        mode,
        &sk,
        &enc,
        info,
        &sealed.ciphertext,
        aad,
    )
    .ok()?;
    (pt.len() == KEY_LEN).then(|| to_array(&pt))
}

/// Seals `key` to `recipient` with HPKE base mode, binding `info` and `aad`.
pub fn hpke_seal_key<R: RngCore + CryptoRng>(
    recipient: &[u8; 32],
    info: &[u8],
    aad: &[u8],
    key: &[u8; KEY_LEN],
    rng: &mut R,
) -> Result<SealedKey> {
    seal_key(&hpke::OpModeS::Base, recipient, info, aad, key, rng)
}

/// Opens a key sealed by [`hpke_seal_key`]; `None` when it does not authenticate.
pub fn hpke_open_key(
    secret: &[u8; 32],
    info: &[u8],
    aad: &[u8],
    sealed: &SealedKey,
) -> Option<[u8; KEY_LEN]> {
    open_key(&hpke::OpModeR::Base, secret, info, aad, sealed)
}

/// Seals `key` to `recipient` with HPKE auth mode: only the holder of `sender`'s secret key
/// can have produced it, so opening it proves possession of that key.
pub fn hpke_seal_key_auth<R: RngCore + CryptoRng>(
    recipient: &[u8; 32],
    sender: &KeyPair,
    info: &[u8],
    aad: &[u8],
    key: &[u8; KEY_LEN],
    rng: &mut R,
) -> Result<SealedKey> {
    let sk = PrivateKey::from_bytes(&sender.secret)
        .map_err(|e| Error::Internal(format!("invalid X25519 secret key: {e}")))?;
    let mode = hpke::OpModeS::Auth((sk, public_key(&sender.public)?));
    seal_key(&mode, recipient, info, aad, key, rng)
}

/// Opens a key sealed by [`hpke_seal_key_auth`] by `sender`; `None` when it does not
/// authenticate (wrong sender, recipient, info or aad).
pub fn hpke_open_key_auth(
    secret: &[u8; 32],
    sender: &[u8; 32],
    info: &[u8],
    aad: &[u8],
    sealed: &SealedKey,
) -> Option<[u8; KEY_LEN]> {
    let spk = PublicKey::from_bytes(sender).ok()?;
    open_key(&hpke::OpModeR::Auth(spk), secret, info, aad, sealed)
}

/// True when a key can be sealed to `public` (not a low-order point, say).
pub fn is_usable_public_key(public: &[u8; 32]) -> bool {
    hpke_seal_key(
        public,
        b"wmlicense key check",
        b"",
        &[0; KEY_LEN],
        &mut os_rng(),
    )
    .is_ok()
}

/// The key ID of a service public key: the first 16 bytes of SHA-256 over a label and the key,
/// so a backup sealed to a pinned key (`ServiceKey`) names it without asking the service.
pub fn service_key_id(public_key: &[u8; 32]) -> [u8; 16] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(b"wmlicense service key id v1");
    h.update(public_key);
    let d = h.finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&d[..16]);
    id
}

/// Seals short secrets (content keys) at rest with ChaCha20-Poly1305 (ring's assembly). Chosen on
/// measurements (`cargo run --release -p wmlicense-core --example at_rest_ciphers`): sealing and
/// opening a 16-byte key costs ~0.4 µs, against ~4.5 µs for the pure-Rust XChaCha20-Poly1305 of
/// stores before schema 3, whose per-message key setup and Poly1305 set-up dominate such short
/// messages. ring's AES-256-GCM is faster still (~0.3 µs) on CPUs with AES instructions, but
/// falls back to a slower software path elsewhere, and memcheck cannot follow its short-input
/// path (every sealed key looked undefined to it, and so did every page holding one).
///
/// Sealed form: 12-byte nonce || ciphertext || 16-byte tag, with the key ID as associated data.
/// Nonces are random 96-bit values from [`NonceStream`]: a store would have to seal about 2^48
/// keys before two nonces collided with any real probability.
pub struct SecretSealer {
    key: ring::aead::LessSafeKey,
    nonces: std::sync::Mutex<NonceStream>,
}

pub const SEALED_SECRET_OVERHEAD: usize = NONCE_LEN + TAG_LEN;
const NONCE_LEN: usize = 12;

impl SecretSealer {
    pub fn new(key: &[u8; KEY_LEN]) -> Result<SecretSealer> {
        let key = ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, key)
            .map_err(|_| Error::Internal("cannot set up the at-rest cipher".into()))?;
        Ok(SecretSealer {
            key: ring::aead::LessSafeKey::new(key),
            nonces: std::sync::Mutex::new(NonceStream::new()?),
        })
    }

    /// Returns nonce || ciphertext || tag.
    pub fn seal(&self, aad: &[u8], secret: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(SEALED_SECRET_OVERHEAD + secret.len());
        self.seal_into(aad, secret, &mut out)?;
        Ok(out)
    }

    /// Appends nonce || ciphertext || tag to `out`.
    pub fn seal_into(&self, aad: &[u8], secret: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let nonce = crate::sync::lock(&self.nonces).next()?;
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.extend_from_slice(secret);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                ring::aead::Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::from(aad),
                &mut out[start..],
            )
            .map_err(|_| Error::Internal("sealing a content key failed".into()))?;
        out.extend_from_slice(tag.as_ref());
        Ok(())
    }

    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(sealed.len());
        self.open_into(aad, sealed, &mut out)?;
        Ok(out)
    }

    /// Appends the secret sealed in `sealed` to `out` (left as it was on failure).
    pub fn open_into(&self, aad: &[u8], sealed: &[u8], out: &mut Vec<u8>) -> Result<()> {
        if sealed.len() < SEALED_SECRET_OVERHEAD {
            return Err(Error::Store("a sealed content key is truncated".into()));
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let nonce = ring::aead::Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| Error::Internal("a nonce of the wrong length".into()))?;
        let start = out.len();
        out.extend_from_slice(ct);
        let opened = self
            .key
            .open_in_place(nonce, ring::aead::Aad::from(aad), &mut out[start..])
            .map(|plain| plain.len());
        match opened {
            Ok(len) => {
                out.truncate(start + len);
                Ok(())
            }
            Err(_) => {
                out.truncate(start);
                Err(Error::Store(
                    "a sealed content key does not authenticate (altered, or sealed by another device)"
                        .into(),
                ))
            }
        }
    }
}

/// Opens content keys sealed by stores before schema 3 (XChaCha20-Poly1305, 24-byte nonce):
/// used once, by the migration that re-seals them.
pub struct LegacySealer {
    cipher: chacha20poly1305::XChaCha20Poly1305,
}

impl LegacySealer {
    pub fn new(key: &[u8; KEY_LEN]) -> LegacySealer {
        LegacySealer {
            cipher: chacha20poly1305::XChaCha20Poly1305::new(key.into()),
        }
    }

    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>> {
        if sealed.len() < 24 + TAG_LEN {
            return Err(Error::Store("a sealed content key is truncated".into()));
        }
        let (nonce, ct) = sealed.split_at(24);
        self.cipher
            .decrypt(nonce.into(), Payload { msg: ct, aad })
            .map_err(|_| {
                Error::Store(
                    "a sealed content key does not authenticate (altered, or sealed by another device)"
                        .into(),
                )
            })
    }

    /// Seals the way stores before schema 3 did, for the migration's tests.
    #[cfg(test)]
    pub fn seal(&self, aad: &[u8], secret: &[u8]) -> Vec<u8> {
        let nonce: [u8; 24] = random_array().unwrap();
        let mut out = nonce.to_vec();
        out.extend(
            self.cipher
                .encrypt((&nonce).into(), Payload { msg: secret, aad })
                .unwrap(),
        );
        out
    }
}

/// Random 96-bit nonces, cheaply: the ChaCha20 keystream (ring's ChaCha20-Poly1305 sealing zeros)
/// under a key drawn from the operating system, in blocks of 85 nonces. A process forked from
/// the one that drew the key draws a new one before its next nonce (the child and the parent
/// would otherwise hand out the same nonces).
struct NonceStream {
    key: ring::aead::LessSafeKey,
    block: u64,
    buf: [u8; NONCE_LEN * 85],
    pos: usize,
    generation: u64,
}

impl NonceStream {
    fn new() -> Result<NonceStream> {
        let key: [u8; KEY_LEN] = random_array()?;
        let key = ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, &key)
            .map_err(|_| Error::Internal("cannot set up the nonce generator".into()))?;
        Ok(NonceStream {
            key: ring::aead::LessSafeKey::new(key),
            block: 0,
            buf: [0; NONCE_LEN * 85],
            pos: NONCE_LEN * 85,
            generation: fork_generation(),
        })
    }

    fn next(&mut self) -> Result<[u8; NONCE_LEN]> {
        if self.generation != fork_generation() {
            *self = NonceStream::new()?;
        }
        if self.pos == self.buf.len() {
            let mut n = [0u8; NONCE_LEN];
            n[..8].copy_from_slice(&self.block.to_le_bytes());
            self.block += 1;
            self.buf.fill(0);
            self.key
                .seal_in_place_separate_tag(
                    ring::aead::Nonce::assume_unique_for_key(n),
                    ring::aead::Aad::empty(),
                    &mut self.buf,
                )
                .map(drop)
                .map_err(|_| Error::Internal("the nonce generator failed".into()))?;
            self.pos = 0;
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&self.buf[self.pos..self.pos + NONCE_LEN]);
        self.pos += NONCE_LEN;
        Ok(nonce)
    }
}

/// Counts fork()s of this process (its children see a higher count than the parent had).
fn fork_generation() -> u64 {
    static GENERATION: AtomicU64 = AtomicU64::new(0);
    #[cfg(unix)]
    {
        static REGISTER: std::sync::Once = std::sync::Once::new();
        extern "C" fn forked_child() {
            GENERATION.fetch_add(1, Ordering::Relaxed);
        }
        REGISTER.call_once(|| unsafe {
            // SAFETY: the handler only increments an atomic, which is async-signal-safe.
            libc::pthread_atfork(None, None, Some(forked_child));
        });
    }
    GENERATION.load(Ordering::Relaxed)
}

/// The AEAD of backup chunks: ChaCha20-Poly1305 (ring's) with the nonce taken from the chunk
/// index. Seals and opens in place, without copying a chunk.
pub struct ChunkCipher {
    key: ring::aead::LessSafeKey,
}

impl ChunkCipher {
    pub fn new(key: &[u8; KEY_LEN]) -> ChunkCipher {
        let key = ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, key)
            .expect("a 32-byte key is a valid ChaCha20-Poly1305 key");
        ChunkCipher {
            key: ring::aead::LessSafeKey::new(key),
        }
    }

    fn nonce(index: u64) -> ring::aead::Nonce {
        let mut n = [0u8; 12];
        n[..8].copy_from_slice(&index.to_le_bytes());
        ring::aead::Nonce::assume_unique_for_key(n)
    }

    /// Encrypts `buf` in place and appends the tag.
    pub fn seal_in_place(&self, index: u64, aad: &[u8], buf: &mut Vec<u8>) -> Result<()> {
        self.key
            .seal_in_place_append_tag(Self::nonce(index), ring::aead::Aad::from(aad), buf)
            .map_err(|_| Error::Internal("chunk encryption failed".into()))
    }

    /// Authenticates and decrypts `buf` (ciphertext || tag) in place; on success `buf` holds
    /// the plaintext.
    pub fn open_in_place(&self, index: u64, aad: &[u8], buf: &mut Vec<u8>) -> bool {
        match self
            .key
            .open_in_place(Self::nonce(index), ring::aead::Aad::from(aad), buf)
        {
            Ok(plain) => {
                let len = plain.len();
                buf.truncate(len);
                true
            }
            Err(_) => false,
        }
    }
}

/// HKDF-SHA256 `info` of the chunk (AEAD) key of a version 2 backup.
pub const INFO_CHUNK_KEY: &[u8] = b"wmlicense v2 backup chunk key";
/// HKDF-SHA256 `info` of the verify (HMAC) key of a version 2 backup.
pub const INFO_VERIFY_KEY: &[u8] = b"wmlicense v2 backup verify key";
/// Length of a version 2 chunk's verify tag (HMAC-SHA256 truncated).
pub const VERIFY_TAG_LEN: usize = 16;

/// The two keys of a version 2 backup, derived from its data key with HKDF-SHA256 (no salt):
/// (chunk key, verify key).
pub fn derive_backup_keys(data_key: &[u8; KEY_LEN]) -> ([u8; KEY_LEN], [u8; KEY_LEN]) {
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(None, data_key);
    let mut chunk = [0u8; KEY_LEN];
    let mut verify = [0u8; KEY_LEN];
    hk.expand(INFO_CHUNK_KEY, &mut chunk)
        .expect("32 bytes is a valid HKDF-SHA256 length");
    hk.expand(INFO_VERIFY_KEY, &mut verify)
        .expect("32 bytes is a valid HKDF-SHA256 length");
    (chunk, verify)
}

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

fn verify_mac(key: &[u8; KEY_LEN], parts: &[&[u8]]) -> HmacSha256 {
    use hmac::Mac;
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        mac.update(p);
    }
    mac
}

/// HMAC-SHA256 of the concatenation of `parts`, truncated to [`VERIFY_TAG_LEN`] bytes.
pub fn verify_tag(key: &[u8; KEY_LEN], parts: &[&[u8]]) -> [u8; VERIFY_TAG_LEN] {
    use hmac::Mac;
    let full = verify_mac(key, parts).finalize().into_bytes();
    let mut t = [0u8; VERIFY_TAG_LEN];
    t.copy_from_slice(&full[..VERIFY_TAG_LEN]);
    t
}

/// Checks a tag made by [`verify_tag`], in constant time.
pub fn check_verify_tag(key: &[u8; KEY_LEN], parts: &[&[u8]], tag: &[u8]) -> bool {
    use hmac::Mac;
    tag.len() == VERIFY_TAG_LEN && verify_mac(key, parts).verify_truncated_left(tag).is_ok()
}

/// The operating system's CSPRNG as an `RngCore`.
pub fn os_rng() -> rand_core::OsRng {
    rand_core::OsRng
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hpke_round_trip_and_aad_binding() {
        let kp = KeyPair::generate().unwrap();
        let key = [7u8; 32];
        let sealed = hpke_seal_key(&kp.public, b"info", b"aad", &key, &mut os_rng()).unwrap();
        assert_eq!(
            hpke_open_key(&kp.secret, b"info", b"aad", &sealed),
            Some(key)
        );
        assert_eq!(hpke_open_key(&kp.secret, b"info", b"aaD", &sealed), None);
        assert_eq!(hpke_open_key(&kp.secret, b"other", b"aad", &sealed), None);
        let other = KeyPair::generate().unwrap();
        assert_eq!(hpke_open_key(&other.secret, b"info", b"aad", &sealed), None);
        assert_eq!(KeyPair::from_secret(kp.secret).unwrap().public, kp.public);
    }

    #[test]
    fn sealer_round_trip_and_distinct_nonces() {
        let s = SecretSealer::new(&[1; 32]).unwrap();
        let a = s.seal(b"kid", b"secret").unwrap();
        let b = s.seal(b"kid", b"secret").unwrap();
        assert_ne!(a, b);
        assert_eq!(s.open(b"kid", &a).unwrap(), b"secret");
        assert!(s.open(b"kie", &a).is_err());
    }
}
