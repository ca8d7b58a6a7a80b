//! `wmlicense-service` as a library: [`app`] builds the HTTP API's router over a service,
//! [`net::serve`] serves it with the connection limits of SPEC §5.8; `main.rs` is the command
//! line around them.

pub mod ledger;
pub mod metrics;
pub mod net;
pub mod pg;
pub mod ratelimit;
pub mod server;

pub use server::{app, ApiError, AppState, Config, Peer, Service};
