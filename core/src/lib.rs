//! wmlicense-core: the plain-Rust core of wmlicense: the license store, the backup format and
//! its crypto, the backup and restore engine, the worker pool, the backup restorer and the
//! License Management Service policy.
//!
//! It knows nothing of C: options are typed, errors are [`Error`] values. The C library
//! (`wmlicense`), the command-line tool, the network service and the bindings all build on it.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod code;
pub mod crypto;
mod db;
pub mod engine;
pub mod error;
pub mod format;
mod fsutil;
pub mod identity;
pub mod journal;
pub mod license;
pub mod operation;
pub mod paths;
mod pool;
pub mod props;
pub mod restorer;
pub mod service;
pub mod store;
mod sync;

pub use error::{Error, Result};
pub use license::License;
pub use store::Store;
