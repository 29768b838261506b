//! Control: the settings ([`config`]), the one place the process starts
//! profiling ([`startup`]), what asks for profiles ([`triggers`]) and what
//! serves them over HTTP ([`http`]). It sits above the engine and profile
//! writing and calls down into both.

pub mod config;
pub(crate) mod copy_dump;
pub mod dump_signal;
pub mod history;
pub mod http;
pub mod metrics;
pub mod startup;
pub mod triggers;
pub mod watcher;
