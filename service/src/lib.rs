//! adoptd: a supervisor that follows every daemon to its real main process.

#[path = "config_stub.rs"]
pub mod config;
pub mod tracker;
