//! The C boundary. Each module converts between C and the core for one C object; none holds
//! business logic.
//!
//! Safety of every export: each pointer argument is NULL or valid as its doc comment says; this
//! is the C API contract, stated once in the header, so the exports carry no `# Safety` section.
#![allow(clippy::missing_safety_doc)]

pub mod boundary;
pub mod event;
pub(crate) mod handle;
pub mod restorer;
pub mod result;
pub mod store;
pub mod version;
