//! Control: the settings ([`config`]), the one place the process starts
//! profiling ([`startup`]), what asks for profiles ([`triggers`]), the
//! threads that write them (`dumper`, or [`watcher`] in a single-threaded
//! program) and what serves them over HTTP ([`http`]). It sits above the
//! engine and profile writing and calls down into both. The modules the
//! watcher runs are declared under `raw_thread_modules!` (see `lib.rs`).

pub mod blackbox;
pub mod cgroup;
pub mod config;
pub(crate) mod dumper;
pub(crate) mod fork_fresh;
pub(crate) mod fork_handlers;
pub mod heap_triggers;
pub mod history;
pub mod http;
pub mod lifetime;
pub mod metrics;
pub mod startup;
pub mod triggers;
raw_thread_modules! {
    pub(crate) mod dump_errors;
    pub(crate) mod dump_in_copy;
    pub mod dump_signal;
    pub mod peak;
    pub(crate) mod signal_notices;
    pub mod wake;
    pub mod watcher;
}
