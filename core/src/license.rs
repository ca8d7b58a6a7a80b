//! The license record and its validation rules.

use crate::error::{Error, Result};

/// Rights bits (the Windows Media Format SDK's WMT_RIGHTS values, plus `RIGHT_BACKUP`).
pub const RIGHT_PLAYBACK: u32 = 0x1;
pub const RIGHT_COPY_TO_NON_SDMI_DEVICE: u32 = 0x2;
pub const RIGHT_COPY_TO_CD: u32 = 0x8;
pub const RIGHT_COPY_TO_SDMI_DEVICE: u32 = 0x10;
pub const RIGHT_ONE_TIME: u32 = 0x20;
pub const RIGHT_SAVE_STREAM_PROTECTED: u32 = 0x40;
pub const RIGHT_COPY: u32 = 0x80;
pub const RIGHT_COLLABORATIVE_PLAY: u32 = 0x100;
pub const RIGHT_BACKUP: u32 = 0x200;
pub const ALL_RIGHTS: u32 = RIGHT_PLAYBACK
    | RIGHT_COPY_TO_NON_SDMI_DEVICE
    | RIGHT_COPY_TO_CD
    | RIGHT_COPY_TO_SDMI_DEVICE
    | RIGHT_ONE_TIME
    | RIGHT_SAVE_STREAM_PROTECTED
    | RIGHT_COPY
    | RIGHT_COLLABORATIVE_PLAY
    | RIGHT_BACKUP;

pub const KEY_ID_MAX: usize = 64;
pub const CONTENT_KEY_MAX: usize = 64;
pub const TITLE_MAX: usize = 1024;

/// One content license as the store and the backup format hold it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct License {
    pub key_id: Vec<u8>,
    pub content_key: Vec<u8>,
    pub title: Option<String>,
    pub rights: u32,
    pub play_count: i32,
    pub begin_date: i64,
    pub expiration_date: i64,
    pub issued_at: i64,
}

pub fn validate_key_id(key_id: &[u8]) -> Result<()> {
    if key_id.is_empty() || key_id.len() > KEY_ID_MAX {
        return Err(Error::InvalidKid(format!(
            "key ID is {} bytes; it must be 1 to {KEY_ID_MAX} bytes",
            key_id.len()
        )));
    }
    Ok(())
}

/// A license whose bytes live elsewhere (a database row, a decrypted chunk, a batch): what the
/// backup and restore streams handle, without allocating per license. In the store's rows and
/// in batches bound for the store, `content_key` is the *sealed* content key.
#[derive(Clone, Copy, Debug)]
pub struct LicenseRef<'a> {
    pub key_id: &'a [u8],
    pub content_key: &'a [u8],
    pub title: Option<&'a str>,
    pub rights: u32,
    pub play_count: i32,
    pub begin_date: i64,
    pub expiration_date: i64,
    pub issued_at: i64,
}

impl LicenseRef<'_> {
    /// Checks every field against the contract; the first violation is reported.
    pub fn validate(&self) -> Result<()> {
        validate_key_id(self.key_id)?;
        if self.content_key.is_empty() || self.content_key.len() > CONTENT_KEY_MAX {
            return Err(Error::InvalidArg(format!(
                "content key is {} bytes; it must be 1 to {CONTENT_KEY_MAX} bytes",
                self.content_key.len()
            )));
        }
        if let Some(title) = self.title {
            if title.len() > TITLE_MAX {
                return Err(Error::InvalidArg(format!(
                    "title is {} bytes; at most {TITLE_MAX} are allowed",
                    title.len()
                )));
            }
            if title.contains('\0') {
                return Err(Error::InvalidArg("title contains a NUL byte".into()));
            }
        }
        if self.rights & !ALL_RIGHTS != 0 {
            return Err(Error::InvalidArg(format!(
                "rights 0x{:x} has unknown bits 0x{:x}",
                self.rights,
                self.rights & !ALL_RIGHTS
            )));
        }
        if self.play_count < -1 {
            return Err(Error::InvalidArg(format!(
                "play_count is {}; it must be -1 (unlimited) or at least 0",
                self.play_count
            )));
        }
        if self.begin_date < 0 || self.expiration_date < 0 || self.issued_at < 0 {
            return Err(Error::InvalidArg("dates must not be negative".into()));
        }
        if self.expiration_date != 0 && self.expiration_date < self.begin_date {
            return Err(Error::InvalidArg(format!(
                "expiration_date {} is before begin_date {}",
                self.expiration_date, self.begin_date
            )));
        }
        Ok(())
    }

    /// A license whose expiration date has passed at `now` (unix seconds).
    pub fn is_expired(&self, now: i64) -> bool {
        self.expiration_date != 0 && self.expiration_date <= now
    }

    pub fn may_back_up(&self) -> bool {
        self.rights & RIGHT_BACKUP != 0
    }

    pub fn to_license(&self) -> License {
        License {
            key_id: self.key_id.to_vec(),
            content_key: self.content_key.to_vec(),
            title: self.title.map(str::to_owned),
            rights: self.rights,
            play_count: self.play_count,
            begin_date: self.begin_date,
            expiration_date: self.expiration_date,
            issued_at: self.issued_at,
        }
    }
}

impl License {
    pub fn as_ref(&self) -> LicenseRef<'_> {
        LicenseRef {
            key_id: &self.key_id,
            content_key: &self.content_key,
            title: self.title.as_deref(),
            rights: self.rights,
            play_count: self.play_count,
            begin_date: self.begin_date,
            expiration_date: self.expiration_date,
            issued_at: self.issued_at,
        }
    }

    /// Checks every field against the contract; the first violation is reported.
    pub fn validate(&self) -> Result<()> {
        self.as_ref().validate()
    }

    /// A license whose expiration date has passed at `now` (unix seconds).
    pub fn is_expired(&self, now: i64) -> bool {
        self.as_ref().is_expired(now)
    }

    pub fn may_back_up(&self) -> bool {
        self.as_ref().may_back_up()
    }
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn sample() -> License {
        License {
            key_id: vec![1, 2, 3],
            content_key: vec![9; 16],
            title: Some("Song".into()),
            rights: RIGHT_PLAYBACK | RIGHT_BACKUP,
            play_count: -1,
            begin_date: 0,
            expiration_date: 0,
            issued_at: 100,
        }
    }

    #[test]
    fn bounds_are_enforced() {
        assert!(sample().validate().is_ok());
        let mut l = sample();
        l.key_id = vec![0; 65];
        assert!(matches!(l.validate(), Err(Error::InvalidKid(_))));
        l.key_id = vec![];
        assert!(matches!(l.validate(), Err(Error::InvalidKid(_))));
        let mut l = sample();
        l.content_key = vec![0; 65];
        assert!(matches!(l.validate(), Err(Error::InvalidArg(_))));
        let mut l = sample();
        l.title = Some("x".repeat(1025));
        assert!(matches!(l.validate(), Err(Error::InvalidArg(_))));
        l.title = Some("x".repeat(1024));
        assert!(l.validate().is_ok());
        let mut l = sample();
        l.begin_date = 10;
        l.expiration_date = 9;
        assert!(matches!(l.validate(), Err(Error::InvalidArg(_))));
        let mut l = sample();
        l.rights = 0x400;
        assert!(matches!(l.validate(), Err(Error::InvalidArg(_))));
    }

    #[test]
    fn expiry() {
        let mut l = sample();
        assert!(!l.is_expired(i64::MAX));
        l.expiration_date = 50;
        assert!(l.is_expired(50));
        assert!(!l.is_expired(49));
    }
}
