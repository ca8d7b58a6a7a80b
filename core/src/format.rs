//! The backup file format, `licenses.wmlb` (version 1). See docs/backup-format.md.
//!
//! A fixed 176-byte header, then the licenses in chunks encrypted with ChaCha20-Poly1305 under a
//! random data key. The data key is sealed with HPKE to the License Management Service, bound to
//! the header's first 96 bytes; every chunk is bound to the whole header, its index (the nonce)
//! and whether it is the last one.

use crate::crypto::{ChunkCipher, SealedKey, ENCAPPED_LEN, KEY_LEN, SEALED_KEY_LEN, TAG_LEN};
use crate::error::{Error, Result};
use crate::license::{License, CONTENT_KEY_MAX, KEY_ID_MAX, TITLE_MAX};
use std::io::{self, Read, Write};

pub const BACKUP_FILE: &str = "licenses.wmlb";
pub const MAGIC: [u8; 8] = *b"WMLB\x89\r\n\x1a";
pub const VERSION: u16 = 1;
pub const HEADER_LEN: usize = 176;
/// Bytes of the header the sealed data key is bound to (everything before the sealed key).
pub const HEADER_CORE_LEN: usize = 96;
pub const DEFAULT_CHUNK_SIZE: u32 = 64 * 1024;
/// Chunk sizes a reader accepts: large enough for the largest record, small enough to bound
/// the memory a hostile file can make us allocate.
pub const MIN_CHUNK_SIZE: u32 = 2048;
pub const MAX_CHUNK_SIZE: u32 = 1 << 20;
/// HPKE `info` of the data key sealed to the service.
pub const INFO_DATA_KEY: &[u8] = b"wmlicense v1 backup data key";
/// Bit 31 of a chunk's length word marks the last chunk (also bound in the chunk's AAD).
const LAST_CHUNK_BIT: u32 = 1 << 31;
const NO_TITLE: u16 = 0xFFFF;

/// The parsed header of a backup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub backup_id: [u8; 16],
    pub lineage_id: [u8; 16],
    pub source_device_id: [u8; 16],
    pub created_at: i64,
    pub license_count: u64,
    pub service_key_id: [u8; 16],
    pub chunk_size: u32,
    pub sealed_data_key: SealedKey,
}

impl Header {
    /// The first 96 bytes: everything the sealed data key is bound to.
    pub fn core_bytes(&self) -> [u8; HEADER_CORE_LEN] {
        let mut b = [0u8; HEADER_CORE_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..10].copy_from_slice(&VERSION.to_le_bytes());
        b[10..12].copy_from_slice(&(HEADER_LEN as u16).to_le_bytes());
        b[12..28].copy_from_slice(&self.backup_id);
        b[28..44].copy_from_slice(&self.lineage_id);
        b[44..60].copy_from_slice(&self.source_device_id);
        b[60..68].copy_from_slice(&self.created_at.to_le_bytes());
        b[68..76].copy_from_slice(&self.license_count.to_le_bytes());
        b[76..92].copy_from_slice(&self.service_key_id);
        b[92..96].copy_from_slice(&self.chunk_size.to_le_bytes());
        b
    }

    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..HEADER_CORE_LEN].copy_from_slice(&self.core_bytes());
        b[96..128].copy_from_slice(&self.sealed_data_key.encapped);
        b[128..176].copy_from_slice(&self.sealed_data_key.ciphertext);
        b
    }

    /// Parses and checks a header; anything unexpected is `BackupCorrupt`.
    pub fn parse(b: &[u8; HEADER_LEN]) -> Result<Header> {
        if b[0..8] != MAGIC {
            return Err(Error::corrupt("not a wmlicense backup (wrong magic bytes)"));
        }
        let version = u16::from_le_bytes([b[8], b[9]]);
        if version != VERSION {
            return Err(Error::corrupt(format!(
                "unsupported backup format version {version} (this wmlicense reads version {VERSION})"
            )));
        }
        let header_len = u16::from_le_bytes([b[10], b[11]]);
        if header_len as usize != HEADER_LEN {
            return Err(Error::corrupt(format!(
                "header length {header_len} is not {HEADER_LEN}"
            )));
        }
        let chunk_size = u32::from_le_bytes(b[92..96].try_into().unwrap());
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
            return Err(Error::corrupt(format!(
                "chunk size {chunk_size} is out of range"
            )));
        }
        let created_at = i64::from_le_bytes(b[60..68].try_into().unwrap());
        let mut sealed = SealedKey {
            encapped: [0; ENCAPPED_LEN],
            ciphertext: [0; SEALED_KEY_LEN],
        };
        sealed.encapped.copy_from_slice(&b[96..128]);
        sealed.ciphertext.copy_from_slice(&b[128..176]);
        Ok(Header {
            backup_id: b[12..28].try_into().unwrap(),
            lineage_id: b[28..44].try_into().unwrap(),
            source_device_id: b[44..60].try_into().unwrap(),
            created_at,
            license_count: u64::from_le_bytes(b[68..76].try_into().unwrap()),
            service_key_id: b[76..92].try_into().unwrap(),
            chunk_size,
            sealed_data_key: sealed,
        })
    }
}

/// Reads and parses the header at the start of `input`.
pub fn read_header(input: &mut impl Read) -> Result<Header> {
    let mut b = [0u8; HEADER_LEN];
    read_exact_or_corrupt(input, &mut b, "the header is truncated")?;
    Header::parse(&b)
}

fn read_exact_or_corrupt(input: &mut impl Read, buf: &mut [u8], what: &str) -> Result<()> {
    input.read_exact(buf).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            Error::corrupt(what.to_string())
        } else {
            Error::BackupRestore(format!("cannot read the backup: {e}"))
        }
    })
}

fn chunk_aad(header: &[u8; HEADER_LEN], last: bool) -> [u8; HEADER_LEN + 1] {
    let mut aad = [0u8; HEADER_LEN + 1];
    aad[..HEADER_LEN].copy_from_slice(header);
    aad[HEADER_LEN] = last as u8;
    aad
}

/// Appends the encoding of one license to `out`.
pub fn encode_license(l: &License, out: &mut Vec<u8>) {
    out.push(l.key_id.len() as u8);
    out.extend_from_slice(&l.key_id);
    out.push(l.content_key.len() as u8);
    out.extend_from_slice(&l.content_key);
    match &l.title {
        Some(t) => {
            out.extend_from_slice(&(t.len() as u16).to_le_bytes());
            out.extend_from_slice(t.as_bytes());
        }
        None => out.extend_from_slice(&NO_TITLE.to_le_bytes()),
    }
    out.extend_from_slice(&l.rights.to_le_bytes());
    out.extend_from_slice(&l.play_count.to_le_bytes());
    out.extend_from_slice(&l.begin_date.to_le_bytes());
    out.extend_from_slice(&l.expiration_date.to_le_bytes());
    out.extend_from_slice(&l.issued_at.to_le_bytes());
}

/// The largest encoded license.
pub const MAX_RECORD_LEN: usize =
    1 + KEY_ID_MAX + 1 + CONTENT_KEY_MAX + 2 + TITLE_MAX + 4 + 4 + 8 * 3;

/// Decodes one license at `*pos`, advancing it. Authenticated data that does not decode means
/// a writer bug or a forged key; either way the backup is not usable.
fn decode_license(b: &[u8], pos: &mut usize) -> Result<License> {
    let bad = || Error::corrupt("a license record is malformed");
    let mut take = |n: usize| -> Result<&[u8]> {
        let s = b.get(*pos..*pos + n).ok_or_else(bad)?;
        *pos += n;
        Ok(s)
    };
    let n = take(1)?[0] as usize;
    let key_id = take(n)?.to_vec();
    let n = take(1)?[0] as usize;
    let content_key = take(n)?.to_vec();
    let tl = u16::from_le_bytes(take(2)?.try_into().unwrap());
    let title = if tl == NO_TITLE {
        None
    } else {
        Some(String::from_utf8(take(tl as usize)?.to_vec()).map_err(|_| bad())?)
    };
    let rights = u32::from_le_bytes(take(4)?.try_into().unwrap());
    let play_count = i32::from_le_bytes(take(4)?.try_into().unwrap());
    let begin_date = i64::from_le_bytes(take(8)?.try_into().unwrap());
    let expiration_date = i64::from_le_bytes(take(8)?.try_into().unwrap());
    let issued_at = i64::from_le_bytes(take(8)?.try_into().unwrap());
    let l = License {
        key_id,
        content_key,
        title,
        rights,
        play_count,
        begin_date,
        expiration_date,
        issued_at,
    };
    l.validate().map_err(|_| bad())?;
    Ok(l)
}

/// Streams licenses into a backup: the header first, then full chunks as they fill up.
pub struct BackupWriter<W: Write> {
    out: W,
    header: [u8; HEADER_LEN],
    cipher: ChunkCipher,
    chunk_size: usize,
    plain: Vec<u8>,
    index: u64,
    written: u64,
    expected: u64,
}

impl<W: Write> BackupWriter<W> {
    pub fn new(mut out: W, header: &Header, data_key: &[u8; KEY_LEN]) -> Result<BackupWriter<W>> {
        let bytes = header.to_bytes();
        out.write_all(&bytes).map_err(write_error)?;
        Ok(BackupWriter {
            out,
            header: bytes,
            cipher: ChunkCipher::new(data_key),
            chunk_size: header.chunk_size as usize,
            plain: Vec::with_capacity(header.chunk_size as usize),
            index: 0,
            written: 0,
            expected: header.license_count,
        })
    }

    pub fn push(&mut self, license: &License) -> Result<()> {
        let start = self.plain.len();
        encode_license(license, &mut self.plain);
        if self.plain.len() > self.chunk_size {
            // The record does not fit: seal what came before it and start the next chunk with it.
            let record = self.plain.split_off(start);
            self.flush(false)?;
            self.plain = record;
        }
        self.written += 1;
        Ok(())
    }

    /// Seals the last chunk and returns the output. Fails when the number of licenses pushed is
    /// not the header's count.
    pub fn finish(mut self) -> Result<W> {
        if self.written != self.expected {
            return Err(Error::Internal(format!(
                "backup header promised {} licenses, {} were written",
                self.expected, self.written
            )));
        }
        self.flush(true)?;
        self.out.flush().map_err(write_error)?;
        Ok(self.out)
    }

    fn flush(&mut self, last: bool) -> Result<()> {
        let ct = self
            .cipher
            .seal(self.index, &chunk_aad(&self.header, last), &self.plain)?;
        let mut word = ct.len() as u32;
        if last {
            word |= LAST_CHUNK_BIT;
        }
        self.out
            .write_all(&word.to_le_bytes())
            .map_err(write_error)?;
        self.out.write_all(&ct).map_err(write_error)?;
        self.index += 1;
        self.plain.clear();
        Ok(())
    }
}

fn write_error(e: io::Error) -> Error {
    Error::io("cannot write the backup", &e, Error::BackupRestore)
}

/// Streams licenses out of a backup, authenticating each chunk before yielding its licenses.
/// The stream is complete only when `next` returns `Ok(None)`: that checks the last-chunk flag,
/// the license count and that nothing follows.
pub struct BackupReader<R: Read> {
    input: R,
    header: [u8; HEADER_LEN],
    cipher: ChunkCipher,
    chunk_size: usize,
    plain: Vec<u8>,
    pos: usize,
    index: u64,
    seen_last: bool,
    count: u64,
    expected: u64,
    ciphertext: Vec<u8>,
    /// Asked before each chunk: `true` stops the reader with `Error::Canceled`, so that a
    /// backup of many empty chunks cannot hold a cancel up.
    interrupt: Option<Box<dyn Fn() -> bool + Send>>,
}

impl<R: Read> BackupReader<R> {
    /// `input` is positioned just after the header.
    pub fn new(input: R, header: &Header, data_key: &[u8; KEY_LEN]) -> BackupReader<R> {
        BackupReader {
            input,
            header: header.to_bytes(),
            cipher: ChunkCipher::new(data_key),
            chunk_size: header.chunk_size as usize,
            plain: Vec::new(),
            pos: 0,
            index: 0,
            seen_last: false,
            count: 0,
            expected: header.license_count,
            ciphertext: Vec::new(),
            interrupt: None,
        }
    }

    /// Makes the reader ask `interrupt` before each chunk and stop with `Error::Canceled` when
    /// it says so.
    pub fn with_interrupt(mut self, interrupt: Box<dyn Fn() -> bool + Send>) -> Self {
        self.interrupt = Some(interrupt);
        self
    }

    pub fn next_license(&mut self) -> Result<Option<License>> {
        loop {
            if self.pos < self.plain.len() {
                let l = decode_license(&self.plain, &mut self.pos)?;
                self.count += 1;
                if self.count > self.expected {
                    return Err(Error::corrupt(
                        "the backup holds more licenses than its header says",
                    ));
                }
                return Ok(Some(l));
            }
            if self.seen_last {
                if self.count != self.expected {
                    return Err(Error::corrupt(format!(
                        "the header promises {} licenses but the backup holds {}",
                        self.expected, self.count
                    )));
                }
                let mut extra = [0u8; 1];
                return match self.input.read(&mut extra) {
                    Ok(0) => Ok(None),
                    Ok(_) => Err(Error::corrupt("data follows the last chunk")),
                    Err(e) => Err(Error::BackupRestore(format!("cannot read the backup: {e}"))),
                };
            }
            if self.interrupt.as_ref().is_some_and(|stop| stop()) {
                return Err(Error::Canceled);
            }
            self.read_chunk()?;
        }
    }

    fn read_chunk(&mut self) -> Result<()> {
        let mut word = [0u8; 4];
        read_exact_or_corrupt(
            &mut self.input,
            &mut word,
            "the backup is truncated (its last chunk is missing)",
        )?;
        let word = u32::from_le_bytes(word);
        let last = word & LAST_CHUNK_BIT != 0;
        let len = (word & !LAST_CHUNK_BIT) as usize;
        if len < TAG_LEN || len > self.chunk_size + TAG_LEN {
            return Err(Error::corrupt(format!(
                "chunk {} has an impossible length {len}",
                self.index
            )));
        }
        self.ciphertext.resize(len, 0);
        read_exact_or_corrupt(
            &mut self.input,
            &mut self.ciphertext,
            "the backup is truncated",
        )?;
        let plain = self
            .cipher
            .open(self.index, &chunk_aad(&self.header, last), &self.ciphertext)
            .ok_or_else(|| {
                Error::corrupt(format!(
                    "chunk {} does not authenticate (altered, reordered or from another backup)",
                    self.index
                ))
            })?;
        self.plain = plain;
        self.pos = 0;
        self.index += 1;
        self.seen_last = last;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lic(i: u32, title: Option<String>) -> License {
        License {
            key_id: format!("kid-{i}").into_bytes(),
            content_key: vec![i as u8; 16],
            title,
            rights: 0x201,
            play_count: -1,
            begin_date: 0,
            expiration_date: 0,
            issued_at: i as i64,
        }
    }

    fn header(count: u64) -> Header {
        Header {
            backup_id: [1; 16],
            lineage_id: [2; 16],
            source_device_id: [3; 16],
            created_at: 1234,
            license_count: count,
            service_key_id: [4; 16],
            chunk_size: MIN_CHUNK_SIZE,
            sealed_data_key: SealedKey {
                encapped: [5; 32],
                ciphertext: [6; 48],
            },
        }
    }

    fn write(n: u32) -> (Vec<u8>, Vec<License>) {
        let licenses: Vec<License> = (0..n)
            .map(|i| lic(i, (i % 3 != 0).then(|| "t".repeat(i as usize % 700))))
            .collect();
        let mut w = BackupWriter::new(Vec::new(), &header(n as u64), &[9; 32]).unwrap();
        for l in &licenses {
            w.push(l).unwrap();
        }
        (w.finish().unwrap(), licenses)
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<License>> {
        let mut input = bytes;
        let h = read_header(&mut input)?;
        let mut r = BackupReader::new(input, &h, &[9; 32]);
        let mut out = Vec::new();
        while let Some(l) = r.next_license()? {
            out.push(l);
        }
        Ok(out)
    }

    #[test]
    fn round_trip_across_many_chunks() {
        let (bytes, licenses) = write(300);
        assert_eq!(read_all(&bytes).unwrap(), licenses);
        let (bytes, _) = write(0);
        assert_eq!(bytes.len(), HEADER_LEN + 4 + TAG_LEN);
        assert!(read_all(&bytes).unwrap().is_empty());
    }

    #[test]
    fn every_flipped_bit_after_the_header_is_detected() {
        let (bytes, _) = write(40);
        for pos in HEADER_LEN..bytes.len() {
            let mut b = bytes.clone();
            b[pos] ^= 0x01;
            assert!(
                matches!(read_all(&b), Err(Error::BackupCorrupt(_))),
                "flip at {pos} not detected"
            );
        }
    }

    #[test]
    fn truncation_extension_and_reordering_are_detected() {
        let (bytes, _) = write(200);
        for cut in [0, 10, HEADER_LEN, HEADER_LEN + 3, bytes.len() - 1] {
            assert!(matches!(
                read_all(&bytes[..cut]),
                Err(Error::BackupCorrupt(_))
            ));
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(read_all(&longer), Err(Error::BackupCorrupt(_))));
        // Swap the first two chunks.
        let first_len = (u32::from_le_bytes(bytes[HEADER_LEN..HEADER_LEN + 4].try_into().unwrap())
            & !LAST_CHUNK_BIT) as usize
            + 4;
        let second_at = HEADER_LEN + first_len;
        let second_len = (u32::from_le_bytes(bytes[second_at..second_at + 4].try_into().unwrap())
            & !LAST_CHUNK_BIT) as usize
            + 4;
        let mut swapped = bytes[..HEADER_LEN].to_vec();
        swapped.extend_from_slice(&bytes[second_at..second_at + second_len]);
        swapped.extend_from_slice(&bytes[HEADER_LEN..second_at]);
        swapped.extend_from_slice(&bytes[second_at + second_len..]);
        assert_eq!(swapped.len(), bytes.len());
        assert!(matches!(read_all(&swapped), Err(Error::BackupCorrupt(_))));
    }

    /// A backup of many empty chunks (valid: zero licenses) stops at the next chunk once
    /// interrupted, instead of reading every chunk first.
    #[test]
    fn an_interrupt_stops_the_reader_between_empty_chunks() {
        let h = header(0);
        let mut w = BackupWriter::new(Vec::new(), &h, &[9; 32]).unwrap();
        for _ in 0..5_000 {
            w.flush(false).unwrap();
        }
        let bytes = w.finish().unwrap();
        let mut input = &bytes[..];
        let parsed = read_header(&mut input).unwrap();
        let mut whole = BackupReader::new(input, &parsed, &[9; 32]);
        assert!(whole.next_license().unwrap().is_none());

        let asked = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counter = asked.clone();
        let mut input = &bytes[HEADER_LEN..];
        let mut r =
            BackupReader::new(&mut input, &parsed, &[9; 32]).with_interrupt(Box::new(move || {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= 10
            }));
        assert!(matches!(r.next_license(), Err(Error::Canceled)));
        assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 11);
        assert!(
            input.len() > bytes.len() / 2,
            "the reader went on reading after the interrupt"
        );
    }
}
