//! Control: the settings ([`config`]), the one place the process starts
//! profiling ([`startup`]), and what asks for profiles ([`triggers`]). It sits
//! above the engine and profile writing and calls down into both.

pub mod config;
pub mod dump_signal;
pub mod startup;
pub mod triggers;
