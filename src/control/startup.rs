//! Start-up: the one place a process starts profiling, for both ways in.
//!
//! The engine knows nothing of the environment or of triggers; this layer
//! reads the two settings the engine needs from its first sample (rate and
//! seed), initialises the engine, then starts the triggers. The Rust way in
//! calls [`ensure`] from its allocation slow path, so the first allocation
//! that reaches it starts everything; the preload library calls [`start`]
//! from its constructor. Either may run inside an allocation: nothing here
//! allocates through the profiled allocator (the parsers in
//! [`crate::config`] do not allocate, and the triggers' start-up makes only
//! system calls; the dumper thread reads the full configuration later).

use core::sync::atomic::{AtomicBool, Ordering};

use crate::config::{self, Config};
use crate::{engine, thread_state, triggers};

static STARTED: AtomicBool = AtomicBool::new(false);

/// Starts profiling unless it has started (one relaxed load when it has).
#[inline]
pub fn ensure() {
    if !STARTED.load(Ordering::Acquire) {
        start();
    }
}

/// Initialises the engine from `HEAPPROF_RATE`/`HEAPPROF_SEED` and starts
/// the triggers. Idempotent; allocation-free on the profiled allocator.
#[cold]
pub fn start() {
    let _busy = thread_state::current().enter();
    let rate = config::getenv("HEAPPROF_RATE").and_then(config::parse_bytes);
    let seed = config::getenv("HEAPPROF_SEED").and_then(|s| s.trim().parse::<u64>().ok());
    if let Some(limit) = config::getenv("HEAPPROF_SAMPLE_HEAP_LIMIT").and_then(config::parse_bytes)
    {
        engine::sample_heap::set_limit(limit as usize);
    }
    if engine::init(rate, seed) {
        // Before the dumper thread exists: its creation is heapprof's own.
        #[cfg(feature = "threads")]
        crate::thread_hook::enable();
        triggers::start();
        STARTED.store(true, Ordering::Release);
    }
}

/// Makes `config` the running configuration: the rate applies at once on
/// the calling thread and from each other thread's next sample; signal,
/// interval and at-exit apply from the dumper thread's next wake-up.
pub fn install(config: Config) {
    ensure();
    engine::set_rate(config.rate);
    if let Some(seed) = config.seed {
        engine::set_seed(seed);
    }
    triggers::configure(config);
}
