//! wmlicense: a local store of DRM content licenses with encrypted, asynchronous backup and
//! restore, exposed to C through `include/wmlicense.h`.
//!
//! The core modules know nothing of C; `ffi` converts pointers, integers and errors at the
//! boundary.

pub mod crypto;
pub mod db;
pub mod engine;
pub mod error;
pub mod format;
pub mod fsutil;
pub mod identity;
pub mod license;
pub mod paths;
pub mod pool;
pub mod props;
pub mod restorer;
pub mod service;
pub mod store;
mod sync;

pub use error::{Error, Result};
pub use license::License;
pub use store::Store;
pub mod ffi;
