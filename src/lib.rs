//! wmlicense: the C API of a local store of DRM content licenses with encrypted, asynchronous
//! backup and restore (`include/wmlicense.h`).
//!
//! This crate only converts: pointers to references, C integers to validated values, core
//! errors to result codes. Everything else lives in `wmlicense-core`. Each module is one C
//! object or one boundary concern.
//!
//! Safety of every export: each pointer argument is NULL or valid as its doc comment says; this
//! is the C API contract, stated once in the header, so the exports carry no `# Safety` section.
#![allow(clippy::missing_safety_doc)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod boundary;
pub mod event;
mod handle;
pub mod restorer;
pub mod result;
pub mod store;
pub mod version;
