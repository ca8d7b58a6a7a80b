//! The backup file format, `licenses.wmlb` (versions 1 and 2). See docs/backup-format.md.
//!
//! A header, then the licenses in chunks encrypted with ChaCha20-Poly1305. The data key is
//! sealed with HPKE to the License Management Service, bound to everything in the header before
//! the sealed key; every chunk is bound to the whole header, its index (the nonce) and whether it
//! is the last one.
//!
//! Version 1 (read only; the writer keeps it for the test vectors): a fixed 176-byte header
//! naming one lineage, chunks sealed under the data key itself.
//!
//! Version 2 (written): the header carries a table of the lineages of its licenses (each record
//! names its lineage by index into it); chunks are sealed under a chunk key derived from the data
//! key, carry their license count, and end with an HMAC tag under a second derived key, the
//! verify key, so that a dry run can check a whole backup without being able to decrypt it.

use crate::crypto::{
    self, ChunkCipher, SealedKey, ENCAPPED_LEN, KEY_LEN, SEALED_KEY_LEN, TAG_LEN, VERIFY_TAG_LEN,
};
use crate::error::{Error, Result};
use crate::license::{License, LicenseRef, CONTENT_KEY_MAX, KEY_ID_MAX, TITLE_MAX};
use std::io::{self, Read, Write};

pub const BACKUP_FILE: &str = "licenses.wmlb";
pub const MAGIC: [u8; 8] = *b"WMLB\x89\r\n\x1a";
/// The version the writer produces.
pub const VERSION: u16 = 2;
/// The version of the single-lineage format, still read.
pub const VERSION_1: u16 = 1;
/// Length of a version 1 header.
pub const HEADER_LEN: usize = 176;
/// Bytes of a version 1 header the sealed data key is bound to (everything before the sealed
/// key); also the fixed part every version starts with.
pub const HEADER_CORE_LEN: usize = 96;
/// Length of a version 2 header without its lineage table: the fixed part, the lineage count
/// and reserved word, the sealed data key.
pub const HEADER_V2_FIXED_LEN: usize = HEADER_CORE_LEN + 4 + ENCAPPED_LEN + SEALED_KEY_LEN;
/// The largest header: its length is a u16.
pub const MAX_HEADER_LEN: usize = u16::MAX as usize;
/// The most lineages a version 2 header holds (so that it stays within [`MAX_HEADER_LEN`]).
pub const MAX_LINEAGES: usize = (MAX_HEADER_LEN - HEADER_V2_FIXED_LEN) / 16;
/// The most lineages a backup is written with, and a License Management Service decides on
/// (SPEC §5.8: it bounds the ledger work of one anonymous request). Readers still parse up to
/// [`MAX_LINEAGES`]; a service refuses more than this with `too_many_lineages`.
pub const MAX_BACKUP_LINEAGES: usize = 1024;
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
/// The smallest version 2 record: lineage index, 1-byte key ID and content key, no title.
const MIN_RECORD_V2_LEN: usize = 2 + 2 + 2 + 2 + 4 + 4 + 8 * 3;

/// The parsed header of a backup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// 1 or 2.
    pub version: u16,
    pub backup_id: [u8; 16],
    /// Version 1: the lineage of every license. Version 2: the lineage of the store the backup
    /// was made from (information only; the policy counts against `lineages`).
    pub lineage_id: [u8; 16],
    pub source_device_id: [u8; 16],
    pub created_at: i64,
    pub license_count: u64,
    pub service_key_id: [u8; 16],
    pub chunk_size: u32,
    /// Version 2: the lineages of the licenses, distinct and ascending (at least one).
    /// Version 1: empty.
    pub lineages: Vec<[u8; 16]>,
    pub sealed_data_key: SealedKey,
}

impl Header {
    /// The lineages a restore of this backup counts against: the table (version 2), or the one
    /// lineage of a version 1 backup.
    pub fn policy_lineages(&self) -> Vec<[u8; 16]> {
        if self.version == VERSION_1 {
            vec![self.lineage_id]
        } else {
            self.lineages.clone()
        }
    }

    /// The encoded length of this header.
    pub fn header_len(&self) -> usize {
        if self.version == VERSION_1 {
            HEADER_LEN
        } else {
            HEADER_V2_FIXED_LEN + 16 * self.lineages.len()
        }
    }

    /// Everything before the sealed data key: what the sealed data key is bound to (version 2:
    /// the lineage table included).
    pub fn core_bytes(&self) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_CORE_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..10].copy_from_slice(&self.version.to_le_bytes());
        b[10..12].copy_from_slice(&(self.header_len().min(MAX_HEADER_LEN) as u16).to_le_bytes());
        b[12..28].copy_from_slice(&self.backup_id);
        b[28..44].copy_from_slice(&self.lineage_id);
        b[44..60].copy_from_slice(&self.source_device_id);
        b[60..68].copy_from_slice(&self.created_at.to_le_bytes());
        b[68..76].copy_from_slice(&self.license_count.to_le_bytes());
        b[76..92].copy_from_slice(&self.service_key_id);
        b[92..96].copy_from_slice(&self.chunk_size.to_le_bytes());
        if self.version != VERSION_1 {
            b.extend_from_slice(&(self.lineages.len() as u16).to_le_bytes());
            b.extend_from_slice(&[0, 0]);
            for l in &self.lineages {
                b.extend_from_slice(l);
            }
        }
        b
    }

    /// Seals `data_key` to the service public key `service_public_key` (HPKE base mode, the
    /// header's core bytes as associated data): call it once every other field is set.
    pub fn seal_data_key(
        &mut self,
        service_public_key: &[u8; 32],
        data_key: &[u8; KEY_LEN],
    ) -> Result<()> {
        self.sealed_data_key = crate::crypto::hpke_seal_key(
            service_public_key,
            INFO_DATA_KEY,
            &self.core_bytes(),
            data_key,
            &mut crate::crypto::os_rng(),
        )?;
        Ok(())
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = self.core_bytes();
        b.extend_from_slice(&self.sealed_data_key.encapped);
        b.extend_from_slice(&self.sealed_data_key.ciphertext);
        b
    }

    /// Checks what a writer must never put in a header (a caller's bug, not a corrupt file).
    fn check_writable(&self) -> Result<()> {
        if self.version == VERSION_1 {
            return Ok(());
        }
        if self.version != VERSION {
            return Err(Error::Internal(format!(
                "cannot write backup format version {}",
                self.version
            )));
        }
        if self.lineages.is_empty() || self.lineages.len() > MAX_BACKUP_LINEAGES {
            return Err(Error::InvalidArg(format!(
                "a backup holds 1 to {MAX_BACKUP_LINEAGES} lineages, not {}",
                self.lineages.len()
            )));
        }
        if self.lineages.windows(2).any(|w| w[0] >= w[1]) {
            return Err(Error::Internal(
                "the lineages of a backup header must be distinct and ascending".into(),
            ));
        }
        Ok(())
    }

    /// Parses and checks a whole header (`b` is exactly its bytes); anything unexpected is
    /// `BackupCorrupt`.
    pub fn parse(b: &[u8]) -> Result<Header> {
        if b.len() < 12 || b[0..8] != MAGIC {
            return Err(Error::corrupt("not a wmlicense backup (wrong magic bytes)"));
        }
        let version = u16::from_le_bytes([b[8], b[9]]);
        let header_len = u16::from_le_bytes([b[10], b[11]]) as usize;
        check_version_and_len(version, header_len)?;
        if b.len() != header_len {
            return Err(Error::corrupt("the header is truncated"));
        }
        let chunk_size = u32::from_le_bytes(b[92..96].try_into().unwrap());
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
            return Err(Error::corrupt(format!(
                "chunk size {chunk_size} is out of range"
            )));
        }
        let mut lineages = Vec::new();
        if version != VERSION_1 {
            let count = u16::from_le_bytes([b[96], b[97]]) as usize;
            if count == 0 || HEADER_V2_FIXED_LEN + 16 * count != header_len {
                return Err(Error::corrupt(format!(
                    "the header's lineage count {count} does not match its length {header_len}"
                )));
            }
            if b[98..100] != [0, 0] {
                return Err(Error::corrupt("the header's reserved field is not zero"));
            }
            lineages = b[100..100 + 16 * count]
                .chunks_exact(16)
                .map(|c| c.try_into().unwrap())
                .collect::<Vec<[u8; 16]>>();
            if lineages.windows(2).any(|w| w[0] >= w[1]) {
                return Err(Error::corrupt(
                    "the header's lineages are not distinct and ascending",
                ));
            }
        }
        let created_at = i64::from_le_bytes(b[60..68].try_into().unwrap());
        let key_at = header_len - ENCAPPED_LEN - SEALED_KEY_LEN;
        let mut sealed = SealedKey {
            encapped: [0; ENCAPPED_LEN],
            ciphertext: [0; SEALED_KEY_LEN],
        };
        sealed
            .encapped
            .copy_from_slice(&b[key_at..key_at + ENCAPPED_LEN]);
        sealed
            .ciphertext
            .copy_from_slice(&b[key_at + ENCAPPED_LEN..header_len]);
        Ok(Header {
            version,
            backup_id: b[12..28].try_into().unwrap(),
            lineage_id: b[28..44].try_into().unwrap(),
            source_device_id: b[44..60].try_into().unwrap(),
            created_at,
            license_count: u64::from_le_bytes(b[68..76].try_into().unwrap()),
            service_key_id: b[76..92].try_into().unwrap(),
            chunk_size,
            lineages,
            sealed_data_key: sealed,
        })
    }
}

fn check_version_and_len(version: u16, header_len: usize) -> Result<()> {
    match version {
        VERSION_1 => {
            if header_len != HEADER_LEN {
                return Err(Error::corrupt(format!(
                    "header length {header_len} is not {HEADER_LEN}"
                )));
            }
        }
        VERSION => {
            if header_len < HEADER_V2_FIXED_LEN + 16 || (header_len - HEADER_V2_FIXED_LEN) % 16 != 0
            {
                return Err(Error::corrupt(format!(
                    "header length {header_len} is impossible for format version {VERSION}"
                )));
            }
        }
        _ => {
            return Err(Error::corrupt(format!(
                "unsupported backup format version {version} (this wmlicense reads versions 1 and {VERSION})"
            )))
        }
    }
    Ok(())
}

/// Reads and parses the header at the start of `input`.
pub fn read_header(input: &mut impl Read) -> Result<Header> {
    let mut b = vec![0u8; 12];
    read_exact_or_corrupt(input, &mut b, "the header is truncated")?;
    if b[0..8] != MAGIC {
        return Err(Error::corrupt("not a wmlicense backup (wrong magic bytes)"));
    }
    let version = u16::from_le_bytes([b[8], b[9]]);
    let header_len = u16::from_le_bytes([b[10], b[11]]) as usize;
    check_version_and_len(version, header_len)?;
    b.resize(header_len, 0);
    read_exact_or_corrupt(input, &mut b[12..], "the header is truncated")?;
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

/// A chunk's AEAD associated data: the header, the last flag and (version 2) the count.
fn chunk_aad(header: &[u8], version: u16, last: bool, count: u32) -> Vec<u8> {
    let mut aad = Vec::with_capacity(header.len() + 5);
    aad.extend_from_slice(header);
    aad.push(last as u8);
    if version != VERSION_1 {
        aad.extend_from_slice(&count.to_le_bytes());
    }
    aad
}

/// A version 2 chunk's verify tag: HMAC-SHA256 under the verify key, truncated.
fn chunk_tag(
    verify_key: &[u8; KEY_LEN],
    header: &[u8],
    index: u64,
    last: bool,
    count: u32,
    ciphertext: &[u8],
) -> [u8; VERIFY_TAG_LEN] {
    crypto::verify_tag(
        verify_key,
        &[
            header,
            &index.to_le_bytes(),
            &[last as u8],
            &count.to_le_bytes(),
            ciphertext,
        ],
    )
}

fn check_chunk_tag(
    verify_key: &[u8; KEY_LEN],
    header: &[u8],
    index: u64,
    last: bool,
    count: u32,
    ciphertext: &[u8],
    tag: &[u8],
) -> bool {
    crypto::check_verify_tag(
        verify_key,
        &[
            header,
            &index.to_le_bytes(),
            &[last as u8],
            &count.to_le_bytes(),
            ciphertext,
        ],
        tag,
    )
}

/// Appends the encoding of one license to `out`.
pub fn encode_license(l: &License, out: &mut Vec<u8>) {
    encode_record(&l.as_ref(), out)
}

/// Appends the encoding of one license to `out`.
pub fn encode_record(l: &LicenseRef<'_>, out: &mut Vec<u8>) {
    out.push(l.key_id.len() as u8);
    out.extend_from_slice(l.key_id);
    out.push(l.content_key.len() as u8);
    out.extend_from_slice(l.content_key);
    match l.title {
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
fn decode_record<'a>(b: &'a [u8], pos: &mut usize) -> Result<LicenseRef<'a>> {
    let bad = || Error::corrupt("a license record is malformed");
    let mut take = |n: usize| -> Result<&'a [u8]> {
        let s = b.get(*pos..*pos + n).ok_or_else(bad)?;
        *pos += n;
        Ok(s)
    };
    let n = take(1)?[0] as usize;
    let key_id = take(n)?;
    let n = take(1)?[0] as usize;
    let content_key = take(n)?;
    let tl = u16::from_le_bytes(take(2)?.try_into().unwrap());
    let title = if tl == NO_TITLE {
        None
    } else {
        Some(std::str::from_utf8(take(tl as usize)?).map_err(|_| bad())?)
    };
    let rights = u32::from_le_bytes(take(4)?.try_into().unwrap());
    let play_count = i32::from_le_bytes(take(4)?.try_into().unwrap());
    let begin_date = i64::from_le_bytes(take(8)?.try_into().unwrap());
    let expiration_date = i64::from_le_bytes(take(8)?.try_into().unwrap());
    let issued_at = i64::from_le_bytes(take(8)?.try_into().unwrap());
    let l = LicenseRef {
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

/// Streams licenses into a backup: the header first, then full chunks as they fill up. Writes
/// the version of its header (the library writes version 2; version 1 is kept for the test
/// vectors).
pub struct BackupWriter<W: Write> {
    out: W,
    header: Vec<u8>,
    version: u16,
    lineages: usize,
    cipher: ChunkCipher,
    verify_key: [u8; KEY_LEN],
    chunk_size: usize,
    plain: Vec<u8>,
    chunk_count: u32,
    index: u64,
    written: u64,
    expected: u64,
}

impl<W: Write> BackupWriter<W> {
    pub fn new(mut out: W, header: &Header, data_key: &[u8; KEY_LEN]) -> Result<BackupWriter<W>> {
        header.check_writable()?;
        let bytes = header.to_bytes();
        out.write_all(&bytes).map_err(write_error)?;
        let (chunk_key, verify_key) = if header.version == VERSION_1 {
            (*data_key, [0; KEY_LEN])
        } else {
            crypto::derive_backup_keys(data_key)
        };
        Ok(BackupWriter {
            out,
            header: bytes,
            version: header.version,
            lineages: header.policy_lineages().len(),
            cipher: ChunkCipher::new(&chunk_key),
            verify_key,
            chunk_size: header.chunk_size as usize,
            plain: Vec::with_capacity(header.chunk_size as usize),
            chunk_count: 0,
            index: 0,
            written: 0,
            expected: header.license_count,
        })
    }

    /// Appends `license`, whose lineage is `lineage` — an index into the header's lineages
    /// (always 0 for version 1).
    pub fn push(&mut self, license: &License, lineage: u16) -> Result<()> {
        self.push_ref(&license.as_ref(), lineage)
    }

    /// [`BackupWriter::push`] of a borrowed license.
    pub fn push_ref(&mut self, license: &LicenseRef<'_>, lineage: u16) -> Result<()> {
        if lineage as usize >= self.lineages {
            return Err(Error::Internal(format!(
                "lineage index {lineage} is not in the backup header's {} lineages",
                self.lineages
            )));
        }
        let start = self.plain.len();
        if self.version != VERSION_1 {
            self.plain.extend_from_slice(&lineage.to_le_bytes());
        }
        encode_record(license, &mut self.plain);
        if self.plain.len() > self.chunk_size {
            // The record does not fit: seal what came before it and start the next chunk with it.
            let record = self.plain.split_off(start);
            self.flush(false)?;
            self.plain = record;
        }
        self.chunk_count += 1;
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
        let count = self.chunk_count;
        let mut ct = std::mem::take(&mut self.plain);
        self.cipher.seal_in_place(
            self.index,
            &chunk_aad(&self.header, self.version, last, count),
            &mut ct,
        )?;
        let mut word = ct.len() as u32;
        if last {
            word |= LAST_CHUNK_BIT;
        }
        self.out
            .write_all(&word.to_le_bytes())
            .map_err(write_error)?;
        if self.version != VERSION_1 {
            self.out
                .write_all(&count.to_le_bytes())
                .map_err(write_error)?;
        }
        self.out.write_all(&ct).map_err(write_error)?;
        if self.version != VERSION_1 {
            let tag = chunk_tag(&self.verify_key, &self.header, self.index, last, count, &ct);
            self.out.write_all(&tag).map_err(write_error)?;
        }
        self.index += 1;
        ct.clear();
        self.plain = ct;
        self.chunk_count = 0;
        Ok(())
    }
}

fn write_error(e: io::Error) -> Error {
    Error::io("cannot write the backup", &e, Error::BackupRestore)
}

/// One chunk as read from the file, before any authentication.
struct RawChunk {
    last: bool,
    /// Version 2: the license count the chunk declares.
    count: u32,
}

/// The framing shared by both readers: reads the next chunk into `ciphertext` (and `tag`).
struct ChunkFraming<R: Read> {
    input: R,
    version: u16,
    chunk_size: usize,
    index: u64,
    ciphertext: Vec<u8>,
    tag: [u8; VERIFY_TAG_LEN],
    seen_last: bool,
    /// Asked before each chunk: `true` stops the reader with `Error::Canceled`, so that a
    /// backup of many empty chunks cannot hold a cancel up.
    interrupt: Option<Box<dyn Fn() -> bool + Send>>,
}

impl<R: Read> ChunkFraming<R> {
    fn new(input: R, header: &Header) -> ChunkFraming<R> {
        ChunkFraming {
            input,
            version: header.version,
            chunk_size: header.chunk_size as usize,
            index: 0,
            ciphertext: Vec::new(),
            tag: [0; VERIFY_TAG_LEN],
            seen_last: false,
            interrupt: None,
        }
    }

    fn read_chunk(&mut self) -> Result<RawChunk> {
        if self.interrupt.as_ref().is_some_and(|stop| stop()) {
            return Err(Error::Canceled);
        }
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
        let mut count = 0;
        if self.version != VERSION_1 {
            let mut c = [0u8; 4];
            read_exact_or_corrupt(&mut self.input, &mut c, "the backup is truncated")?;
            count = u32::from_le_bytes(c);
            if count as usize > (len - TAG_LEN) / MIN_RECORD_V2_LEN {
                return Err(Error::corrupt(format!(
                    "chunk {} claims {count} licenses, more than its length holds",
                    self.index
                )));
            }
        }
        self.ciphertext.resize(len, 0);
        read_exact_or_corrupt(
            &mut self.input,
            &mut self.ciphertext,
            "the backup is truncated",
        )?;
        if self.version != VERSION_1 {
            read_exact_or_corrupt(&mut self.input, &mut self.tag, "the backup is truncated")?;
        }
        Ok(RawChunk { last, count })
    }

    /// After the last chunk: nothing may follow.
    fn check_end(&mut self) -> Result<()> {
        let mut extra = [0u8; 1];
        match self.input.read(&mut extra) {
            Ok(0) => Ok(()),
            Ok(_) => Err(Error::corrupt("data follows the last chunk")),
            Err(e) => Err(Error::BackupRestore(format!("cannot read the backup: {e}"))),
        }
    }

    fn not_authentic(&self) -> Error {
        Error::corrupt(format!(
            "chunk {} does not authenticate (altered, reordered or from another backup)",
            self.index
        ))
    }
}

/// Streams licenses out of a backup, authenticating each chunk before yielding its licenses.
/// The stream is complete only when `next_entry` returns `Ok(None)`: that checks the last-chunk
/// flag, the license counts and that nothing follows.
pub struct BackupReader<R: Read> {
    framing: ChunkFraming<R>,
    header: Vec<u8>,
    lineages: Vec<[u8; 16]>,
    cipher: ChunkCipher,
    verify_key: [u8; KEY_LEN],
    plain: Vec<u8>,
    pos: usize,
    /// Version 2: records of the current chunk not decoded yet.
    chunk_left: u32,
    count: u64,
    expected: u64,
}

impl<R: Read> BackupReader<R> {
    /// `input` is positioned just after the header.
    pub fn new(input: R, header: &Header, data_key: &[u8; KEY_LEN]) -> BackupReader<R> {
        let (chunk_key, verify_key) = if header.version == VERSION_1 {
            (*data_key, [0; KEY_LEN])
        } else {
            crypto::derive_backup_keys(data_key)
        };
        BackupReader {
            framing: ChunkFraming::new(input, header),
            header: header.to_bytes(),
            lineages: header.policy_lineages(),
            cipher: ChunkCipher::new(&chunk_key),
            verify_key,
            plain: Vec::new(),
            pos: 0,
            chunk_left: 0,
            count: 0,
            expected: header.license_count,
        }
    }

    /// Makes the reader ask `interrupt` before each chunk and stop with `Error::Canceled` when
    /// it says so.
    pub fn with_interrupt(mut self, interrupt: Box<dyn Fn() -> bool + Send>) -> Self {
        self.framing.interrupt = Some(interrupt);
        self
    }

    /// The next license, without its lineage.
    pub fn next_license(&mut self) -> Result<Option<License>> {
        Ok(self.next_entry()?.map(|(l, _)| l))
    }

    /// The next license and its lineage (version 1: the header's lineage).
    pub fn next_entry(&mut self) -> Result<Option<(License, [u8; 16])>> {
        Ok(self
            .next_ref()?
            .map(|(l, lineage)| (l.to_license(), lineage)))
    }

    /// [`BackupReader::next_entry`], borrowing the license from the reader's current chunk.
    pub fn next_ref(&mut self) -> Result<Option<(LicenseRef<'_>, [u8; 16])>> {
        let v2 = self.framing.version != VERSION_1;
        loop {
            if self.pos < self.plain.len() {
                let lineage = if v2 {
                    if self.chunk_left == 0 {
                        return Err(Error::corrupt(format!(
                            "chunk {} holds more licenses than it says",
                            self.framing.index - 1
                        )));
                    }
                    let idx = self
                        .plain
                        .get(self.pos..self.pos + 2)
                        .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
                        .ok_or_else(|| Error::corrupt("a license record is malformed"))?;
                    self.pos += 2;
                    self.chunk_left -= 1;
                    *self.lineages.get(idx).ok_or_else(|| {
                        Error::corrupt("a license names a lineage the header does not hold")
                    })?
                } else {
                    self.lineages[0]
                };
                let l = decode_record(&self.plain, &mut self.pos)?;
                self.count += 1;
                if self.count > self.expected {
                    return Err(Error::corrupt(
                        "the backup holds more licenses than its header says",
                    ));
                }
                return Ok(Some((l, lineage)));
            }
            if self.chunk_left != 0 {
                return Err(Error::corrupt(format!(
                    "chunk {} holds fewer licenses than it says",
                    self.framing.index - 1
                )));
            }
            if self.framing.seen_last {
                if self.count != self.expected {
                    return Err(Error::corrupt(format!(
                        "the header promises {} licenses but the backup holds {}",
                        self.expected, self.count
                    )));
                }
                self.framing.check_end()?;
                return Ok(None);
            }
            self.read_chunk()?;
        }
    }

    fn read_chunk(&mut self) -> Result<()> {
        let RawChunk { last, count } = self.framing.read_chunk()?;
        let f = &self.framing;
        if f.version != VERSION_1
            && !check_chunk_tag(
                &self.verify_key,
                &self.header,
                f.index,
                last,
                count,
                &f.ciphertext,
                &f.tag,
            )
        {
            return Err(f.not_authentic());
        }
        let aad = chunk_aad(&self.header, f.version, last, count);
        // The ciphertext buffer becomes the plaintext; the previous plaintext's buffer is
        // reused for the next chunk's ciphertext.
        std::mem::swap(&mut self.plain, &mut self.framing.ciphertext);
        if !self
            .cipher
            .open_in_place(self.framing.index, &aad, &mut self.plain)
        {
            return Err(self.framing.not_authentic());
        }
        self.pos = 0;
        self.chunk_left = count;
        self.framing.index += 1;
        self.framing.seen_last = last;
        Ok(())
    }
}

/// Checks a whole backup without decrypting anything (a dry run).
///
/// Version 2, with the verify key: every chunk's verify tag (which binds the header, the
/// chunk's index, last flag, count and ciphertext), the order, the last flag, the sum of the
/// counts against the header, and that nothing follows. Version 1 has no verify tags: only the
/// framing is checked (chunk lengths, the last flag, nothing following) — nothing is
/// authenticated.
pub struct BackupVerifier<R: Read> {
    framing: ChunkFraming<R>,
    header: Vec<u8>,
    verify_key: Option<[u8; KEY_LEN]>,
    count: u64,
    expected: u64,
}

impl<R: Read> BackupVerifier<R> {
    /// `input` is positioned just after the header. A version 2 backup needs its verify key; a
    /// version 1 backup has none (`None`).
    pub fn new(
        input: R,
        header: &Header,
        verify_key: Option<&[u8; KEY_LEN]>,
    ) -> Result<BackupVerifier<R>> {
        if (header.version == VERSION_1) != verify_key.is_none() {
            return Err(Error::Internal(
                "a version 2 backup is verified with its verify key, a version 1 backup without"
                    .into(),
            ));
        }
        Ok(BackupVerifier {
            framing: ChunkFraming::new(input, header),
            header: header.to_bytes(),
            verify_key: verify_key.copied(),
            count: 0,
            expected: header.license_count,
        })
    }

    /// Makes the verifier ask `interrupt` before each chunk and stop with `Error::Canceled`
    /// when it says so.
    pub fn with_interrupt(mut self, interrupt: Box<dyn Fn() -> bool + Send>) -> Self {
        self.framing.interrupt = Some(interrupt);
        self
    }

    /// Checks the next chunk: `Some(n)` with the number of licenses it authenticated (always 0
    /// for version 1), `None` once the whole backup has checked out.
    pub fn next_chunk(&mut self) -> Result<Option<u64>> {
        if self.framing.seen_last {
            if self.verify_key.is_some() && self.count != self.expected {
                return Err(Error::corrupt(format!(
                    "the header promises {} licenses but the backup holds {}",
                    self.expected, self.count
                )));
            }
            self.framing.check_end()?;
            return Ok(None);
        }
        let RawChunk { last, count } = self.framing.read_chunk()?;
        let f = &self.framing;
        let mut verified = 0;
        if let Some(key) = &self.verify_key {
            if !check_chunk_tag(
                key,
                &self.header,
                f.index,
                last,
                count,
                &f.ciphertext,
                &f.tag,
            ) {
                return Err(f.not_authentic());
            }
            verified = u64::from(count);
            self.count += verified;
            if self.count > self.expected {
                return Err(Error::corrupt(
                    "the backup holds more licenses than its header says",
                ));
            }
        }
        self.framing.index += 1;
        self.framing.seen_last = last;
        Ok(Some(verified))
    }

    /// Checks every chunk; returns the number of licenses authenticated.
    pub fn verify_all(&mut self) -> Result<u64> {
        let mut n = 0;
        while let Some(k) = self.next_chunk()? {
            n += k;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATA_KEY: [u8; 32] = [9; 32];
    const LINEAGES: [[u8; 16]; 3] = [[0x10; 16], [0x20; 16], [0x30; 16]];

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

    fn header(version: u16, count: u64) -> Header {
        Header {
            version,
            backup_id: [1; 16],
            lineage_id: [2; 16],
            source_device_id: [3; 16],
            created_at: 1234,
            license_count: count,
            service_key_id: [4; 16],
            chunk_size: MIN_CHUNK_SIZE,
            lineages: if version == VERSION_1 {
                Vec::new()
            } else {
                LINEAGES.to_vec()
            },
            sealed_data_key: SealedKey {
                encapped: [5; 32],
                ciphertext: [6; 48],
            },
        }
    }

    fn header_len(version: u16) -> usize {
        header(version, 0).header_len()
    }

    fn write(version: u16, n: u32) -> (Vec<u8>, Vec<(License, [u8; 16])>) {
        let lineages = header(version, 0).policy_lineages();
        let entries: Vec<(License, usize)> = (0..n)
            .map(|i| {
                (
                    lic(i, (i % 3 != 0).then(|| "t".repeat(i as usize % 700))),
                    (i as usize * 7 / 3) % lineages.len(),
                )
            })
            .collect();
        let mut w = BackupWriter::new(Vec::new(), &header(version, n as u64), &DATA_KEY).unwrap();
        for (l, idx) in &entries {
            w.push(l, *idx as u16).unwrap();
        }
        let expected = entries
            .into_iter()
            .map(|(l, idx)| (l, lineages[idx]))
            .collect();
        (w.finish().unwrap(), expected)
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<(License, [u8; 16])>> {
        let mut input = bytes;
        let h = read_header(&mut input)?;
        let mut r = BackupReader::new(input, &h, &DATA_KEY);
        let mut out = Vec::new();
        while let Some(e) = r.next_entry()? {
            out.push(e);
        }
        Ok(out)
    }

    /// The verify reader, given only the verify key: never the data key.
    fn verify_all(bytes: &[u8], verify_key: &[u8; 32]) -> Result<u64> {
        let mut input = bytes;
        let h = read_header(&mut input)?;
        let key = (h.version != VERSION_1).then_some(verify_key);
        BackupVerifier::new(input, &h, key)?.verify_all()
    }

    fn verify_key() -> [u8; 32] {
        crypto::derive_backup_keys(&DATA_KEY).1
    }

    /// Both readers find `bytes` corrupt. (A version 1 file has no verify tags: its verify
    /// reader sees damage to the framing only; see `check_corrupt`.)
    fn both_corrupt(bytes: &[u8], what: &str) {
        check_corrupt(bytes, what, true)
    }

    fn check_corrupt(bytes: &[u8], what: &str, verifier_sees_it: bool) {
        assert!(
            matches!(read_all(bytes), Err(Error::BackupCorrupt(_))),
            "{what}: not detected by the reader"
        );
        assert!(
            !verifier_sees_it
                || matches!(
                    verify_all(bytes, &verify_key()),
                    Err(Error::BackupCorrupt(_))
                ),
            "{what}: not detected by the verify reader"
        );
    }

    /// The chunks' byte ranges (framing included).
    fn chunk_ranges(version: u16, bytes: &[u8]) -> Vec<std::ops::Range<usize>> {
        let extra = if version == VERSION_1 { 0 } else { 4 + 16 };
        let mut out = Vec::new();
        let mut at = header_len(version);
        while at < bytes.len() {
            let word = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
            let end = at + 4 + extra + (word & !LAST_CHUNK_BIT) as usize;
            out.push(at..end);
            at = end;
        }
        out
    }

    #[test]
    fn round_trip_across_many_chunks() {
        for version in [VERSION_1, VERSION] {
            let (bytes, expected) = write(version, 300);
            assert!(chunk_ranges(version, &bytes).len() > 10);
            let got = read_all(&bytes).unwrap();
            if version == VERSION_1 {
                // Version 1: every license has the header's one lineage.
                assert!(got.iter().all(|(_, l)| *l == [2; 16]));
                let ls: Vec<_> = got.into_iter().map(|(l, _)| l).collect();
                let want: Vec<_> = expected.into_iter().map(|(l, _)| l).collect();
                assert_eq!(ls, want);
            } else {
                assert_eq!(got, expected);
                for l in LINEAGES {
                    assert!(got.iter().any(|(_, x)| *x == l));
                }
                assert_eq!(verify_all(&bytes, &verify_key()).unwrap(), 300);
            }
            let (bytes, _) = write(version, 0);
            let chunk_overhead = if version == VERSION_1 { 4 } else { 4 + 4 + 16 };
            assert_eq!(bytes.len(), header_len(version) + chunk_overhead + TAG_LEN);
            assert!(read_all(&bytes).unwrap().is_empty());
            assert_eq!(verify_all(&bytes, &verify_key()).unwrap(), 0);
        }
    }

    #[test]
    fn header_round_trip_and_lineage_table_checks() {
        let h = header(VERSION, 7);
        let b = h.to_bytes();
        assert_eq!(b.len(), HEADER_V2_FIXED_LEN + 48);
        assert_eq!(u16::from_le_bytes([b[10], b[11]]) as usize, b.len());
        assert_eq!(&b[..h.core_bytes().len()], &h.core_bytes()[..]);
        assert_eq!(Header::parse(&b).unwrap(), h);
        assert_eq!(read_header(&mut &b[..]).unwrap(), h);
        // The lineage table is part of what the sealed key is bound to.
        assert!(h.core_bytes().ends_with(&LINEAGES.concat()));
        // Unordered, repeated or zero lineages, a bad count or reserved field: corrupt.
        let mut swapped = b.clone();
        swapped[100..116].copy_from_slice(&LINEAGES[1]);
        swapped[116..132].copy_from_slice(&LINEAGES[0]);
        let mut repeated = b.clone();
        repeated[116..132].copy_from_slice(&LINEAGES[0]);
        let mut count = b.clone();
        count[96] = 2;
        let mut zero = b.clone();
        zero[96] = 0;
        let mut reserved = b.clone();
        reserved[99] = 1;
        for bad in [swapped, repeated, count, zero, reserved] {
            assert!(matches!(Header::parse(&bad), Err(Error::BackupCorrupt(_))));
            assert!(matches!(
                read_header(&mut &bad[..]),
                Err(Error::BackupCorrupt(_))
            ));
        }
        // A writer refuses an unsorted or empty table.
        let mut unsorted = h.clone();
        unsorted.lineages.reverse();
        assert!(BackupWriter::new(Vec::new(), &unsorted, &DATA_KEY).is_err());
        let mut empty = h.clone();
        empty.lineages.clear();
        assert!(BackupWriter::new(Vec::new(), &empty, &DATA_KEY).is_err());
        // A lineage index outside the table is refused.
        let mut w = BackupWriter::new(Vec::new(), &header(VERSION, 1), &DATA_KEY).unwrap();
        assert!(w.push(&lic(1, None), 3).is_err());
    }

    #[test]
    fn every_flipped_bit_after_the_header_is_detected() {
        for version in [VERSION_1, VERSION] {
            let (bytes, _) = write(version, 40);
            for pos in header_len(version)..bytes.len() {
                // One bit per byte, a different one from byte to byte (all 8 in the framing).
                let bits = if pos < header_len(version) + 24 {
                    0..8
                } else {
                    pos % 8..pos % 8 + 1
                };
                for bit in bits {
                    let mut b = bytes.clone();
                    b[pos] ^= 1 << bit;
                    assert!(
                        matches!(read_all(&b), Err(Error::BackupCorrupt(_))),
                        "v{version}: flip of bit {bit} at {pos} not detected"
                    );
                    if version != VERSION_1 {
                        assert!(
                            matches!(verify_all(&b, &verify_key()), Err(Error::BackupCorrupt(_))),
                            "v{version}: flip of bit {bit} at {pos} not detected by the verify reader"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn truncation_extension_and_reordering_are_detected() {
        for version in [VERSION_1, VERSION] {
            let hl = header_len(version);
            let (bytes, _) = write(version, 200);
            for cut in [0, 10, hl - 1, hl, hl + 3, hl + 6, bytes.len() - 1] {
                both_corrupt(&bytes[..cut], &format!("v{version} cut at {cut}"));
            }
            let chunks = chunk_ranges(version, &bytes);
            let n = chunks.len();
            assert!(n >= 3);
            for c in &chunks {
                for cut in [c.start + 2, c.start + 4, c.start + c.len() / 2, c.end - 1] {
                    both_corrupt(&bytes[..cut], &format!("v{version} cut at {cut}"));
                }
            }
            let mut longer = bytes.clone();
            longer.push(0);
            both_corrupt(&longer, &format!("v{version} one byte added"));
            let mut again = bytes.clone();
            again.extend_from_slice(&bytes[chunks[n - 1].clone()]);
            both_corrupt(&again, &format!("v{version} last chunk repeated"));
            // Swap neighbouring chunks and the first with the last; drop a middle chunk.
            let mut pairs: Vec<(usize, usize)> = (0..n - 1).map(|i| (i, i + 1)).collect();
            pairs.push((0, n - 1));
            for (a, b) in pairs {
                let mut order: Vec<usize> = (0..n).collect();
                order.swap(a, b);
                let mut swapped = bytes[..hl].to_vec();
                for i in order {
                    swapped.extend_from_slice(&bytes[chunks[i].clone()]);
                }
                assert_eq!(swapped.len(), bytes.len());
                // Version 1: a well-framed reordering is invisible without the data key.
                check_corrupt(
                    &swapped,
                    &format!("v{version} chunks {a} and {b} swapped"),
                    version != VERSION_1 || b == n - 1,
                );
            }
            let mut dropped = bytes[..chunks[1].start].to_vec();
            dropped.extend_from_slice(&bytes[chunks[1].end..]);
            check_corrupt(
                &dropped,
                &format!("v{version} chunk 1 dropped"),
                version != VERSION_1,
            );
            both_corrupt(
                &bytes[..chunks[n - 1].start],
                &format!("v{version} last chunk dropped"),
            );
        }
    }

    /// A chunk of another backup (same keys, another header) does not verify either.
    #[test]
    fn chunks_are_bound_to_their_header() {
        let (a, _) = write(VERSION, 50);
        let mut h = header(VERSION, 50);
        h.backup_id = [0xEE; 16];
        let mut w = BackupWriter::new(Vec::new(), &h, &DATA_KEY).unwrap();
        for i in 0..50 {
            w.push(&lic(i, None), 0).unwrap();
        }
        let b = w.finish().unwrap();
        let hl = header_len(VERSION);
        let mut mixed = a[..hl].to_vec();
        mixed.extend_from_slice(&b[hl..]);
        both_corrupt(&mixed, "another backup's chunks");
    }

    /// The verify reader works from the verify key alone (which does not decrypt a chunk), and
    /// a wrong verify key fails.
    #[test]
    fn the_verify_reader_never_needs_the_data_key() {
        let (bytes, _) = write(VERSION, 120);
        let (chunk_key, vk) = crypto::derive_backup_keys(&DATA_KEY);
        assert_ne!(vk, DATA_KEY);
        assert_ne!(vk, chunk_key);
        assert_eq!(verify_all(&bytes, &vk).unwrap(), 120);
        assert!(matches!(
            verify_all(&bytes, &[0x55; 32]),
            Err(Error::BackupCorrupt(_))
        ));
        // The verify key as a data key opens nothing.
        let mut input = &bytes[..];
        let h = read_header(&mut input).unwrap();
        let mut r = BackupReader::new(input, &h, &vk);
        assert!(matches!(r.next_entry(), Err(Error::BackupCorrupt(_))));
        // Version 2 needs a verify key; version 1 takes none and checks the framing only.
        assert!(BackupVerifier::new(&bytes[h.header_len()..], &h, None).is_err());
        let (v1, _) = write(VERSION_1, 120);
        let mut input = &v1[..];
        let h1 = read_header(&mut input).unwrap();
        assert!(BackupVerifier::new(input, &h1, Some(&vk)).is_err());
        assert_eq!(
            BackupVerifier::new(input, &h1, None)
                .unwrap()
                .verify_all()
                .unwrap(),
            0
        );
    }

    /// A backup of many empty chunks (valid: zero licenses) stops at the next chunk once
    /// interrupted, instead of reading every chunk first — in both readers.
    #[test]
    fn an_interrupt_stops_the_reader_between_empty_chunks() {
        for version in [VERSION_1, VERSION] {
            let h = header(version, 0);
            let mut w = BackupWriter::new(Vec::new(), &h, &DATA_KEY).unwrap();
            for _ in 0..5_000 {
                w.flush(false).unwrap();
            }
            let bytes = w.finish().unwrap();
            let hl = header_len(version);
            let mut input = &bytes[..];
            let parsed = read_header(&mut input).unwrap();
            let mut whole = BackupReader::new(input, &parsed, &DATA_KEY);
            assert!(whole.next_license().unwrap().is_none());
            let vk = verify_key();
            let key = (version != VERSION_1).then_some(&vk);

            for verifier in [false, true] {
                let asked = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
                let counter = asked.clone();
                let stop = Box::new(move || {
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= 10
                });
                let mut input = &bytes[hl..];
                let result = if verifier {
                    BackupVerifier::new(&mut input, &parsed, key)
                        .unwrap()
                        .with_interrupt(stop)
                        .verify_all()
                        .map(|_| ())
                } else {
                    BackupReader::new(&mut input, &parsed, &DATA_KEY)
                        .with_interrupt(stop)
                        .next_license()
                        .map(|_| ())
                };
                assert!(matches!(result, Err(Error::Canceled)));
                assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 11);
                assert!(
                    input.len() > bytes.len() / 2,
                    "the reader went on reading after the interrupt"
                );
            }
        }
    }
}
