//! Where stores and the embedded service live by default.

use crate::error::{Error, Result};
use std::path::PathBuf;

/// `$WMLICENSE_HOME` if set, else the platform's per-user data directory + `wmlicense`.
pub fn default_data_dir() -> Result<PathBuf> {
    if let Some(home) = std::env::var_os("WMLICENSE_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(home));
    }
    platform_data_dir()
        .map(|d| d.join("wmlicense"))
        .ok_or_else(|| {
            Error::Store(
                "no default data directory: set WMLICENSE_HOME or pass a store path".into(),
            )
        })
}

/// The default license store: the data directory itself.
pub fn default_store_dir() -> Result<PathBuf> {
    default_data_dir()
}

fn env_dir(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

#[cfg(target_os = "windows")]
fn platform_data_dir() -> Option<PathBuf> {
    env_dir("LOCALAPPDATA").or_else(|| env_dir("APPDATA"))
}

#[cfg(target_os = "macos")]
fn platform_data_dir() -> Option<PathBuf> {
    env_dir("HOME").map(|h| h.join("Library").join("Application Support"))
}

#[cfg(not(any(target_os = "windows", target_os = "macos")))]
fn platform_data_dir() -> Option<PathBuf> {
    env_dir("XDG_DATA_HOME").or_else(|| env_dir("HOME").map(|h| h.join(".local").join("share")))
}
