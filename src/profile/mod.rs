//! Profile writing: a snapshot of the engine's tallies, symbolized and
//! encoded as pprof, written to files or handed to a caller. Nothing here
//! runs on an allocation hook.

pub(crate) mod delta;
pub(crate) mod dump;
raw_thread_modules! {
    pub(crate) mod forked_copy;
}
pub(crate) mod mappings;
pub(crate) mod output;
pub(crate) mod pprof;
pub mod proto;
pub mod scale;
pub mod settings;
pub(crate) mod snapshot;
pub(crate) mod symbolize;
pub(crate) mod tallies;
pub mod threads_pprof;
