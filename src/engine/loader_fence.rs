//! No thread is inside heapprof's calls into the dynamic loader's object
//! list, or into libunwind, at the moment the program forks.
//!
//! `dl_iterate_phdr` holds the loader's `dl_load_write_lock`, and glibc's
//! `fork` (2.36) does not reset that lock in the child; libunwind takes its
//! own cache lock and calls `dl_iterate_phdr` when an address is new to it.
//! A thread the child lacks that held either at the fork leaves it held
//! there for ever: the child's next `dl_iterate_phdr` (its dumper listing
//! the mappings for a dump, a sampled allocation unwinding, a C++ throw)
//! waits for ever, and the child never ends. A bare program rarely sits in
//! those calls; heapprof does on every dump and on sampled allocations.
//!
//! So every such call is made inside this fence, and the `pthread_atfork`
//! prepare handler closes it ([`close_for_fork`]): new entries stop, and
//! it waits (briefly) for those under way to leave. The sampled path never
//! waits: [`try_enter`] refuses while the fence is closed, and the capture
//! falls back to libgcc's unwinder, which finds unwind tables with glibc's
//! lock-free `_dl_find_object`. heapprof's own threads ([`enter`]) wait
//! until the fork is done.

use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Calls inside the fence now.
static INSIDE: AtomicUsize = AtomicUsize::new(0);
/// A fork is under way: no new entries.
static CLOSED: AtomicBool = AtomicBool::new(false);

/// Longest [`close_for_fork`] waits for calls under way (a thread stopped
/// inside, by a debugger or a signal handler that forks, must not hang the
/// fork).
const MAX_WAIT_NANOS: u64 = 200_000_000;

/// One call inside the fence, until dropped.
pub struct Inside(());

impl Drop for Inside {
    fn drop(&mut self) {
        INSIDE.fetch_sub(1, Ordering::Release);
    }
}

/// For the sampled path: inside the fence, or `None` while a fork is
/// under way (use an unwinder that needs no loader lock). Lock-free.
#[inline]
pub fn try_enter() -> Option<Inside> {
    // SeqCst on both sides (here and in close_for_fork): either the fork
    // sees this entry, or this entry sees the fence closed.
    INSIDE.fetch_add(1, Ordering::SeqCst);
    if CLOSED.load(Ordering::SeqCst) {
        INSIDE.fetch_sub(1, Ordering::Release);
        return None;
    }
    Some(Inside(()))
}

/// For heapprof's own threads: inside the fence, waiting out a fork under
/// way. Never call it from a hook.
pub fn enter() -> Inside {
    loop {
        if let Some(inside) = try_enter() {
            return inside;
        }
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
}

/// The prepare handler's part: closes the fence and waits for the calls
/// under way to leave (at most [`MAX_WAIT_NANOS`]).
pub fn close_for_fork() {
    CLOSED.store(true, Ordering::SeqCst);
    let start = crate::os::raw::monotonic_ns();
    while INSIDE.load(Ordering::SeqCst) != 0 {
        if crate::os::raw::monotonic_ns().saturating_sub(start) > MAX_WAIT_NANOS {
            break;
        }
        std::thread::yield_now();
    }
}

/// The parent and child handlers' part: opens the fence again. In the
/// child, calls of threads that are not there never leave: forget them.
pub fn open_after_fork(child: bool) {
    if child {
        INSIDE.store(0, Ordering::SeqCst);
    }
    CLOSED.store(false, Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_fence_refuses_the_sampled_path_and_waits_for_those_inside() {
        let inside = try_enter().expect("open");
        let (tx, rx) = std::sync::mpsc::channel();
        let closer = std::thread::spawn(move || {
            close_for_fork();
            tx.send(()).unwrap();
        });
        // The closer waits while a call is inside.
        assert!(rx
            .recv_timeout(std::time::Duration::from_millis(50))
            .is_err());
        while !CLOSED.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        assert!(try_enter().is_none());
        drop(inside);
        rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
        closer.join().unwrap();
        open_after_fork(false);
        assert!(try_enter().is_some());
    }
}
