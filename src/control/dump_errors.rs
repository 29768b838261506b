//! Saying why a dump was not written: once per problem, until a dump is
//! written again, however many dumps (heap, peak, triggered, from a copy of
//! the process) run into it.
//!
//! A problem is keyed by what the user can fix: the output prefix and the
//! error (an unwritable directory fails the heap profile and the peak
//! profile alike, and each numbered dump after them: one line). Atomics
//! only, so the watcher, which may not lock, says its lines here too.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::os::own_table;

/// The key of the problem said last (0: none since a dump was written).
static SAID: AtomicU64 = AtomicU64::new(0);

/// A dump that could not be written: the line that says so, and the
/// problem it is an instance of.
#[derive(Debug, Clone)]
pub(crate) struct DumpError {
    pub line: String,
    pub key: u64,
}

impl DumpError {
    /// A file under `prefix` that could not be written; `line` names it
    /// and the fix.
    pub fn writing(prefix: &std::path::Path, e: &std::io::Error, line: String) -> Self {
        let errno = e.raw_os_error().unwrap_or(-1) as u64;
        let key = fnv(prefix.as_os_str().as_encoded_bytes()) ^ errno.wrapping_mul(0x9e37_79b9);
        Self { line, key }
    }

    /// Anything else: each distinct line is its own problem.
    pub fn other(line: String) -> Self {
        let key = fnv(line.as_bytes());
        Self { line, key }
    }

    /// Says the line on stderr unless this problem was the last one said.
    pub fn say_once(&self) {
        say_once(self.key, self.line.as_bytes());
    }
}

/// [`DumpError::say_once`] from its parts (the watcher reads them from a
/// copy's report).
pub(crate) fn say_once(key: u64, line: &[u8]) {
    if SAID.swap(key | 1, Ordering::Relaxed) != key | 1 {
        own_table::write_stderr(&[line, b"\n"]);
    }
}

/// A dump was written: the next problem, even the same again, is said.
pub(crate) fn cleared() {
    SAID.store(0, Ordering::Relaxed);
}

/// FNV-1a: enough to tell one problem from another (const: the watcher
/// keys its own fixed lines at compile time).
pub(crate) const fn fnv(mut bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    while let [b, rest @ ..] = bytes {
        h = (h ^ *b as u64).wrapping_mul(0x100_0000_01b3);
        bytes = rest;
    }
    h
}
