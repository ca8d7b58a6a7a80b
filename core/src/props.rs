//! The restorer's properties: names matched ASCII-case-insensitively, reported in their canonical
//! spelling, kept in the order they were first set.

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PropName {
    BackupPath,
    RestorePath,
    StorePath,
    ServiceUrl,
    ServiceKey,
    DataPath,
}

/// Longest value accepted, in bytes.
pub const VALUE_MAX: usize = 4096;

impl PropName {
    pub const ALL: [PropName; 6] = [
        PropName::BackupPath,
        PropName::RestorePath,
        PropName::StorePath,
        PropName::ServiceUrl,
        PropName::ServiceKey,
        PropName::DataPath,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PropName::BackupPath => "BackupPath",
            PropName::RestorePath => "RestorePath",
            PropName::StorePath => "StorePath",
            PropName::ServiceUrl => "ServiceUrl",
            PropName::ServiceKey => "ServiceKey",
            PropName::DataPath => "DataPath",
        }
    }

    pub fn parse(name: &str) -> Result<PropName> {
        PropName::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                Error::InvalidProperty(format!(
                    "unknown property '{name}' (known: BackupPath, RestorePath, StorePath, ServiceUrl, ServiceKey, DataPath)"
                ))
            })
    }
}

#[derive(Clone, Debug, Default)]
pub struct Props {
    entries: Vec<(PropName, String)>,
}

impl Props {
    /// Sets a property; a value replaces the old one in place.
    pub fn set(&mut self, name: PropName, value: &str) -> Result<()> {
        if value.is_empty() {
            return Err(Error::InvalidArg(format!(
                "{} must not be empty",
                name.as_str()
            )));
        }
        if value.contains('\0') {
            return Err(Error::InvalidArg(format!(
                "the {} value contains a NUL character",
                name.as_str()
            )));
        }
        if value.len() > VALUE_MAX {
            return Err(Error::InvalidArg(format!(
                "{} is {} bytes; at most {VALUE_MAX} are allowed",
                name.as_str(),
                value.len()
            )));
        }
        if name == PropName::ServiceUrl
            && !(value.starts_with("http://") || value.starts_with("https://"))
        {
            return Err(Error::InvalidArg(format!(
                "ServiceUrl must be an http:// or https:// URL, not '{value}'"
            )));
        }
        match self.entries.iter_mut().find(|(n, _)| *n == name) {
            Some(entry) => entry.1 = value.to_owned(),
            None => self.entries.push((name, value.to_owned())),
        }
        Ok(())
    }

    pub fn get(&self, name: PropName) -> Option<&str> {
        self.entries
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn remove(&mut self, name: PropName) -> Result<()> {
        let before = self.entries.len();
        self.entries.retain(|(n, _)| *n != name);
        if self.entries.len() == before {
            return Err(Error::NotFound(format!("{} is not set", name.as_str())));
        }
        Ok(())
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn at(&self, index: usize) -> Option<(PropName, &str)> {
        self.entries.get(index).map(|(n, v)| (*n, v.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_case_insensitive_and_canonical() {
        assert_eq!(PropName::parse("backuppath").unwrap(), PropName::BackupPath);
        assert_eq!(
            PropName::parse("SERVICEURL").unwrap().as_str(),
            "ServiceUrl"
        );
        assert!(matches!(
            PropName::parse("BackupPathX"),
            Err(Error::InvalidProperty(_))
        ));
    }

    #[test]
    fn set_replaces_in_place_and_remove_reports_missing() {
        let mut p = Props::default();
        p.set(PropName::StorePath, "/a").unwrap();
        p.set(PropName::BackupPath, "/b").unwrap();
        p.set(PropName::StorePath, "/c").unwrap();
        assert_eq!(p.at(0), Some((PropName::StorePath, "/c")));
        assert_eq!(p.len(), 2);
        p.remove(PropName::StorePath).unwrap();
        assert!(matches!(
            p.remove(PropName::StorePath),
            Err(Error::NotFound(_))
        ));
        assert!(p.set(PropName::ServiceUrl, "ftp://x").is_err());
        assert!(p.set(PropName::BackupPath, "").is_err());
    }
}
