//! heapprof's `pthread_atfork` handlers: no lock heapprof takes is held in
//! a forked child by a thread the child lacks, and the child starts its own
//! profiling state (numbering, dumper or watcher, black box).
//!
//! - **Prepare** takes every lock heapprof's off-hook work takes, in one
//!   fixed order (the order the dump path nests them), and closes
//!   [`crate::engine::loader_fence`] so no thread is inside
//!   `dl_iterate_phdr` or libunwind at the fork. Locks held for a whole
//!   dump are not taken (the program's `fork` would wait for the dump):
//!   those are [`crate::control::fork_fresh`]'s, renewed in the child.
//! - **Parent** releases them.
//! - **Child** releases them, renews the fork-fresh state, resets what was
//!   the parent's (HTTP sockets, sequence numbers, the signal's state, the
//!   wake-up word, the peak written, dumps under way) and starts a dumper
//!   thread, or the watcher: the child has one thread.

use crate::control::{dump_signal, lifetime, watcher};
use crate::engine::thread_state;

/// Registers the handlers (once, at start-up).
pub(crate) fn install() {
    // SAFETY: registering plain extern "C" functions that live for the
    // whole process.
    unsafe { libc::pthread_atfork(Some(fork_prepare), Some(fork_parent), Some(fork_child)) };
}

/// The guards prepare took, released by parent or child.
struct ForkGuards {
    held: core::cell::UnsafeCell<Vec<Box<dyn core::any::Any>>>,
}
// SAFETY: only the forking thread touches it, between prepare and
// parent/child, which the fork itself serialises.
unsafe impl Sync for ForkGuards {}
static FORK_GUARDS: ForkGuards = ForkGuards {
    held: core::cell::UnsafeCell::new(Vec::new()),
};

extern "C" fn fork_prepare() {
    let st = thread_state::current();
    let busy = st.enter();
    // Hold every lock heapprof's off-hook work takes, in one fixed order, so
    // none is held by a thread that will not exist in the child.
    let guards: Vec<Box<dyn core::any::Any>> = vec![
        Box::new(crate::engine::aggregate::lock()),
        Box::new(crate::engine::labels::lock()),
        Box::new(crate::profile::symbolize::lock()),
        Box::new(crate::control::triggers::settings_lock()),
        Box::new(crate::profile::settings::lock()),
    ];
    crate::engine::loader_fence::close_for_fork();
    // SAFETY: see ForkGuards.
    unsafe { *FORK_GUARDS.held.get() = guards };
    core::mem::forget(busy);
}

fn release_fork_guards() {
    // SAFETY: see ForkGuards; dropping the guards unlocks, in reverse order.
    let guards = unsafe { core::mem::take(&mut *FORK_GUARDS.held.get()) };
    for g in guards.into_iter().rev() {
        drop(g);
    }
    // Leave the busy state entered in prepare.
    let st = thread_state::current();
    drop(crate::engine::thread_state::BusyGuard::adopt(st));
}

extern "C" fn fork_parent() {
    crate::engine::loader_fence::open_after_fork(false);
    release_fork_guards();
}

extern "C" fn fork_child() {
    crate::engine::loader_fence::open_after_fork(true);
    release_fork_guards();
    // SAFETY: this is the child handler: one thread, this one, which holds
    // none of these (the invariant of `crate::control::fork_fresh`).
    unsafe {
        crate::control::heap_triggers::STATE.renew_in_child();
        crate::control::peak::PEAK.renew_in_child();
        crate::control::history::RING.renew_in_child();
        crate::control::blackbox::REFRESH.renew_in_child();
    }
    let _busy = thread_state::current().enter();
    crate::control::http::after_fork_child();
    crate::profile::output::reset_sequence();
    dump_signal::after_fork();
    watcher::after_fork();
    lifetime::after_fork();
    crate::control::peak::after_fork();
    crate::control::dump_in_copy::take_deferred();
    crate::control::wake::after_fork();
    // The child has this thread alone: the watcher again, if the way in
    // asked for it.
    crate::control::triggers::after_fork();
}
