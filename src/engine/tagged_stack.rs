//! A lock-free stack of numbered entries (a Treiber stack), as the sample
//! heap's free slots and runs and the thread registry's free slots use.
//!
//! The head is one word: a tag in the high half, bumped by every push and
//! pop, and the top entry's number plus one in the low half (0: empty).
//! Each entry's link (the next entry's number plus one) lives wherever its
//! owner keeps it, read and written through the closures passed in. The
//! tag is what makes a pop safe against ABA: a pop that read a link which
//! another thread's pop-then-push made stale finds the tag moved on, and its
//! compare-and-swap fails. Entries are never unmapped, so reading a stale
//! link is harmless. No allocation, no lock: the hook paths use it.

use core::sync::atomic::{AtomicU64, Ordering};

/// The head of one stack.
pub struct TaggedStack {
    head: AtomicU64,
}

impl TaggedStack {
    /// An empty stack.
    pub const fn new() -> TaggedStack {
        TaggedStack {
            head: AtomicU64::new(0),
        }
    }

    /// Pops the top entry's number. `next_of(n)` reads entry `n`'s link
    /// (`None`: no such entry, and the pop gives up).
    #[inline]
    pub fn pop(&self, next_of: impl Fn(usize) -> Option<u32>) -> Option<usize> {
        let mut h = self.head.load(Ordering::Acquire);
        loop {
            let top = (h & 0xffff_ffff) as usize;
            if top == 0 {
                return None;
            }
            // May be stale if another thread pops `top` meanwhile: then the
            // tag has moved on and the CAS fails.
            let next = next_of(top - 1)?;
            let new = ((h >> 32).wrapping_add(1) << 32) | u64::from(next);
            match self
                .head
                .compare_exchange_weak(h, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some(top - 1),
                Err(now) => h = now,
            }
        }
    }

    /// Pushes the chain of entries from `first` to its last (already linked
    /// from `first` on): `set_last_link(v)` stores `v` as the last entry's
    /// link, before the chain is published.
    #[inline]
    pub fn push(&self, first: usize, set_last_link: impl Fn(u32)) {
        let mut h = self.head.load(Ordering::Relaxed);
        loop {
            set_last_link(h as u32);
            let new = ((h >> 32).wrapping_add(1) << 32) | (first as u64 + 1);
            match self
                .head
                .compare_exchange_weak(h, new, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(now) => h = now,
            }
        }
    }
}

impl TaggedStack {
    /// Whether the stack is empty now.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.head.load(Ordering::Acquire) & 0xffff_ffff == 0
    }

    /// Takes the whole stack at once: the top entry's number (its chain
    /// follows through the links), or `None` if it was empty.
    pub fn take_all(&self) -> Option<usize> {
        let top = self.head.swap(0, Ordering::Acquire) & 0xffff_ffff;
        (top != 0).then(|| top as usize - 1)
    }

    /// Empties the stack, forgetting its entries (a fork's child rebuilds
    /// it; nothing else runs).
    pub fn clear(&self) {
        self.head.store(0, Ordering::Relaxed);
    }
}

impl Default for TaggedStack {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::sync::atomic::AtomicU32;

    #[test]
    fn entries_come_back_last_in_first_out_and_survive_threads() {
        static LINKS: [AtomicU32; 64] = [const { AtomicU32::new(0) }; 64];
        static STACK: TaggedStack = TaggedStack::new();
        for (n, link) in LINKS.iter().enumerate() {
            STACK.push(n, |v| link.store(v, Ordering::Relaxed));
        }
        let next = |n: usize| Some(LINKS[n].load(Ordering::Relaxed));
        assert_eq!(STACK.pop(next), Some(63));
        STACK.push(63, |v| LINKS[63].store(v, Ordering::Relaxed));
        // Four threads pop and push back for a while: every entry is still
        // there once, at the end.
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..20_000 {
                        if let Some(n) = STACK.pop(next) {
                            STACK.push(n, |v| LINKS[n].store(v, Ordering::Relaxed));
                        }
                    }
                });
            }
        });
        let mut seen = [false; 64];
        while let Some(n) = STACK.pop(next) {
            assert!(!seen[n], "entry {n} twice");
            seen[n] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }
}
