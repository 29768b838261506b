//! Start-up: the one place a process starts profiling, for both ways in.
//!
//! The engine knows nothing of the environment or of triggers; this layer
//! reads the two settings the engine needs from its first sample (rate and
//! seed), initialises the engine, then starts the triggers. The Rust way in
//! calls [`ensure`] from its allocation slow path, so the first allocation
//! that reaches it starts everything; the preload library calls [`start`]
//! from its constructor. Either may run inside an allocation: nothing here
//! allocates through the profiled allocator (the parsers in
//! [`crate::control::config`] do not allocate, and the triggers' start-up makes only
//! system calls; the dumper thread reads the full configuration later).
//!
//! The fast unwinder (libunwind, see [`crate::engine::stack`]) is loaded by a
//! constructor, before `main` and before any sample, so the first samples
//! do not pay libgcc's unwinder (see [`crate::engine::stack`]):
//! the preload library's constructor calls [`load_unwinder`]; for the Rust
//! way in this crate registers its own (`.init_array`), which does the same
//! when the crate is linked into the program's executable (in the preload
//! library it leaves the work to that library's constructor). Loading means
//! `dlopen`, which takes the loader lock and allocates: a constructor is a
//! safe place, an allocation hook is not. Should neither run (a library
//! loaded with `dlopen`), the dumper thread loads it.

use core::sync::atomic::{AtomicBool, Ordering};

use crate::control::config::{self, Config};
use crate::{control::triggers, engine, engine::thread_state};

static STARTED: AtomicBool = AtomicBool::new(false);

/// Whether a way in feeds this copy of the engine: the `Profiler` global
/// allocator has served an allocation, or the preload library started.
static WAY_IN: AtomicBool = AtomicBool::new(false);

/// Called by each way in: allocations reach this engine.
#[inline]
pub fn mark_way_in() {
    if !WAY_IN.load(Ordering::Relaxed) {
        WAY_IN.store(true, Ordering::Relaxed);
    }
}

/// Whether allocations reach this engine at all. Without a way in (a
/// program, or a test crate, that does not make `heapprof::Profiler` its
/// global allocator) every profile and leak check would be empty. A probe
/// allocation settles it: a thread's first allocation through `Profiler`
/// takes the slow path, which marks the way in, so either some thread did
/// already or this one does now.
pub fn way_in() -> bool {
    if !WAY_IN.load(Ordering::Relaxed) {
        drop(core::hint::black_box(Box::new(0u64)));
    }
    WAY_IN.load(Ordering::Relaxed)
}

/// Starts profiling unless it has started (one relaxed load when it has).
#[inline]
pub fn ensure() {
    ensure_with(|| {});
}

/// As [`ensure`], with what the way in needs done once, after the engine
/// starts and before the triggers' threads exist (the Rust way in's
/// `pthread_create` definition, so that their creation is heapprof's own).
#[inline]
pub fn ensure_with(before_triggers: fn()) {
    if !STARTED.load(Ordering::Acquire) {
        start_with(before_triggers);
    }
}

/// Initialises the engine from `HEAPPROF_RATE`/`HEAPPROF_SEED` and starts
/// the triggers. Idempotent; allocation-free on the profiled allocator.
#[cold]
pub fn start() {
    start_with(|| {});
}

/// [`start`], calling `before_triggers` once, as [`ensure_with`] says.
#[cold]
pub fn start_with(before_triggers: fn()) {
    let _busy = thread_state::current().enter();
    let rate = config::getenv("HEAPPROF_RATE").and_then(config::parse_bytes);
    let seed = config::getenv("HEAPPROF_SEED").and_then(|s| s.trim().parse::<u64>().ok());
    if let Some(limit) = config::getenv("HEAPPROF_SAMPLE_HEAP_LIMIT").and_then(config::parse_bytes)
    {
        engine::sample_heap::set_limit(limit as usize);
    }
    if let Some(ms) = config::getenv("HEAPPROF_DECAY_MS").and_then(|s| s.trim().parse::<u64>().ok())
    {
        engine::sample_heap::set_decay_ms(ms);
    }
    if let Some(u) = config::getenv("HEAPPROF_UNWIND").and_then(config::parse_unwinder) {
        engine::stack::set_walk(u);
    }
    if engine::init(rate, seed) {
        // Before the triggers: its fork handler then runs first in a child.
        crate::control::blackbox::start();
        before_triggers();
        crate::profile::settings::set_loader(triggers::load_settings);
        crate::profile::settings::set_memory_limit_source(crate::control::cgroup::own_limit);
        triggers::start();
        crate::control::blackbox::after_triggers();
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

/// Loads the fast unwinder (idempotent), with the calling thread busy so
/// nothing `dlopen` allocates is sampled. Call from a constructor or
/// heapprof's own thread, never from an allocation hook.
pub fn load_unwinder() {
    let _busy = thread_state::current().enter();
    crate::engine::stack::load_fast_unwinder();
}

/// The Rust way in's constructor (see the module doc).
#[cfg(not(test))]
extern "C" fn at_load() {
    if in_main_executable() {
        load_unwinder();
        let _busy = thread_state::current().enter();
        crate::control::blackbox::prepare_mappings();
    }
}

// Not in this crate's unit tests, which exercise libgcc before libunwind.
#[cfg(not(test))]
#[used]
#[link_section = ".init_array"]
static AT_LOAD: extern "C" fn() = at_load;

/// Whether this crate's code lies in the program's executable (the object
/// holding its entry point), not in a shared library such as the preload
/// library.
fn in_main_executable() -> bool {
    // SAFETY: dladdr only fills the Dl_info it is given; getauxval reads
    // the auxiliary vector.
    unsafe {
        let entry = libc::getauxval(libc::AT_ENTRY) as *const libc::c_void;
        let mut main: libc::Dl_info = core::mem::zeroed();
        let mut ours: libc::Dl_info = core::mem::zeroed();
        entry as usize != 0
            && libc::dladdr(entry, &mut main) != 0
            && libc::dladdr(in_main_executable as *const libc::c_void, &mut ours) != 0
            && main.dli_fbase == ours.dli_fbase
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_crate_is_in_the_test_executable() {
        // False in the preload library, tested from outside: an inert
        // child of tests/preload.rs never has libunwind loaded.
        assert!(super::in_main_executable());
    }
}
