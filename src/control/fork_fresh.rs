//! Control state a forked child starts afresh, lock included.
//!
//! The dumper and HTTP threads take locks around state of their own (the
//! trigger and peak state, the kept history) that a child of `fork` has no
//! use for: it counts, numbers and triggers its own dumps. A thread the
//! child lacks may hold such a lock at the moment of the fork, and in the
//! child it stays held for ever: the child's new dumper would wait on it
//! and never end, keeping the process alive (CPython's
//! `test_main_thread_after_fork_from_nonmain_thread` hung this way).
//! Holding these locks across the fork instead (as the `pthread_atfork`
//! prepare handler does for the engine's) would make the program's `fork`
//! wait for a whole dump. So each such lock is a [`ForkFresh`], and the
//! child handler puts a new one, with a new value, in place of each
//! ([`ForkFresh::renew_in_child`]); the old value is leaked, never dropped,
//! as another thread may have been midway through changing it.
//!
//! The invariant that makes this sound: no thread holds a `ForkFresh` guard
//! while it calls `fork`. heapprof's code never calls `fork` (its copies use
//! a bare `clone` that runs no handler), and a program thread only holds one
//! inside heapprof's calls.

use core::cell::UnsafeCell;
use std::sync::{Mutex, MutexGuard};

/// A mutex over state a forked child replaces with `fresh()`.
pub struct ForkFresh<T> {
    cell: UnsafeCell<Mutex<T>>,
    fresh: fn() -> T,
}

// SAFETY: the cell is only replaced in a fork's child handler, when the
// process has one thread and that thread holds no guard (module doc); at
// every other time it is read through `&Mutex<T>`, which is Sync for Send T.
unsafe impl<T: Send> Sync for ForkFresh<T> {}

impl<T> ForkFresh<T> {
    /// `value` now; `fresh()` in each forked child.
    pub const fn new(value: T, fresh: fn() -> T) -> ForkFresh<T> {
        ForkFresh {
            cell: UnsafeCell::new(Mutex::new(value)),
            fresh,
        }
    }

    /// Takes the lock. Poisoning is ignored: nothing here panics midway
    /// through an update.
    pub fn lock(&self) -> MutexGuard<'_, T> {
        // SAFETY: the mutex is only replaced in a fork's child, where no
        // guard or reference to it exists (module doc).
        let m = unsafe { &*self.cell.get() };
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// In a fork's child handler: a new, unlocked mutex over `fresh()`.
    ///
    /// # Safety
    /// Only from a `pthread_atfork` child handler: the process has one
    /// thread, which holds no guard of this lock (module doc).
    pub unsafe fn renew_in_child(&self) {
        let new = Mutex::new((self.fresh)());
        // SAFETY: by this function's contract nothing else refers to the
        // old mutex; it is forgotten, not dropped, since its value may be
        // half-changed by a thread that is not in the child.
        let old = unsafe { core::ptr::replace(self.cell.get(), new) };
        core::mem::forget(old);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_held_by_a_lost_thread_is_renewed_with_a_fresh_value() {
        static S: ForkFresh<Vec<u32>> = ForkFresh::new(Vec::new(), Vec::new);
        S.lock().push(7);
        let held = S.lock();
        // As in a child whose other thread held it: the guard never drops.
        core::mem::forget(held);
        assert!(S.lock_would_block());
        // SAFETY: the one guard taken was forgotten, and this test's
        // thread is the only one touching S.
        unsafe { S.renew_in_child() };
        assert!(S.lock().is_empty());
    }

    impl<T> ForkFresh<T> {
        fn lock_would_block(&self) -> bool {
            // SAFETY: as in `lock`.
            let m = unsafe { &*self.cell.get() };
            matches!(m.try_lock(), Err(std::sync::TryLockError::WouldBlock))
        }
    }
}
