//! The C boundary. Each module converts between C and the core for one C object; none holds
//! business logic.

pub mod boundary;
pub mod event;
pub(crate) mod handle;
pub mod restorer;
pub mod result;
pub mod store;
pub mod version;
