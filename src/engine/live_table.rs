//! The live-sample table: which addresses are sampled objects still alive.
//!
//! # How a free recognises a sampled pointer
//! Sampled objects are allocated page-aligned (4096) through the inner
//! allocator. A free first tests `ptr & 4095`: for almost every unsampled
//! pointer that is nonzero and the free goes straight to the inner allocator,
//! a single AND and branch (about a nanosecond, no memory touched). Only a
//! page-aligned pointer (a sample, an over-aligned layout, or chance) looks
//! here. The cost is memory: up to a page per live sample through alignment
//! padding (glibc returns the leading slack to its free lists), which at the
//! default rate is one page per 512 KiB of heap, under 1%.
//!
//! # The table
//! Open addressing with linear probing over slots of (address, sample id).
//! Insert claims an empty or tombstoned slot with a CAS, writes the id, then
//! publishes the address with `Release`; lookup reads the address with
//! `Acquire` and then the id. Removal CASes the address to a tombstone. All
//! operations are lock-free and allocate nothing: tables come from `mmap`.
//!
//! Growth without locks or rehashing: the table is a series of tiers, each
//! twice the size of the last. Inserts go to the newest tier; when it is half
//! full (counting tombstones) the next tier is mapped and installed with a
//! CAS. Lookups and removals search every tier, newest first; tiers are never
//! freed, so a reader can never touch unmapped memory.

use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use crate::os;

const EMPTY: usize = 0;
const TOMBSTONE: usize = 1;
const CLAIMED: usize = 2;

const FIRST_TIER_SLOTS: usize = 1 << 12;
const MAX_TIERS: usize = 28;

#[repr(C)]
struct Slot {
    addr: AtomicUsize,
    id: AtomicU64,
}

#[repr(C)]
struct Tier {
    /// Slots whose address ever left EMPTY (live entries plus tombstones).
    used: AtomicUsize,
    mask: usize,
    slots: *mut Slot,
}

/// A lock-free set of live sampled addresses, each with its sample id.
pub struct LiveTable {
    tiers: [AtomicPtr<Tier>; MAX_TIERS],
}

impl LiveTable {
    /// An empty table; maps nothing until the first insert.
    pub const fn new() -> LiveTable {
        LiveTable {
            tiers: [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_TIERS],
        }
    }

    /// Records that `addr` (never 0, 1 or 2) is the live sample `id`.
    /// Returns false only when memory for the table could not be mapped.
    pub fn insert(&self, addr: usize, id: u64) -> bool {
        debug_assert!(addr > CLAIMED);
        let mut level = self.newest();
        loop {
            let tier = match self.tier_at(level) {
                Some(t) => t,
                None => match self.grow(level) {
                    Some(t) => t,
                    None => return false,
                },
            };
            if tier.used.load(Ordering::Relaxed) <= tier.mask / 2 {
                let mut i = hash(addr) & tier.mask;
                for _ in 0..=tier.mask {
                    // SAFETY: i <= mask and the tier has mask+1 slots.
                    let slot = unsafe { &*tier.slots.add(i) };
                    let a = slot.addr.load(Ordering::Relaxed);
                    if (a == EMPTY || a == TOMBSTONE)
                        && slot
                            .addr
                            .compare_exchange(a, CLAIMED, Ordering::Acquire, Ordering::Relaxed)
                            .is_ok()
                    {
                        slot.id.store(id, Ordering::Relaxed);
                        slot.addr.store(addr, Ordering::Release);
                        if a == EMPTY {
                            tier.used.fetch_add(1, Ordering::Relaxed);
                        }
                        return true;
                    }
                    i = (i + 1) & tier.mask;
                }
            }
            level += 1;
            if level >= MAX_TIERS {
                return false;
            }
        }
    }

    /// Whether `addr` is a live sample.
    pub fn contains(&self, addr: usize) -> bool {
        self.find(addr).is_some()
    }

    /// Removes `addr` and returns its sample id, if it is a live sample.
    pub fn remove(&self, addr: usize) -> Option<u64> {
        let slot = self.find(addr)?;
        let id = slot.id.load(Ordering::Relaxed);
        // Only the owner of the object frees it, so nobody else removes it.
        slot.addr
            .compare_exchange(addr, TOMBSTONE, Ordering::AcqRel, Ordering::Relaxed)
            .ok()
            .map(|_| id)
    }

    fn find(&self, addr: usize) -> Option<&Slot> {
        for level in (0..=self.newest()).rev() {
            let Some(tier) = self.tier_at(level) else {
                continue;
            };
            let mut i = hash(addr) & tier.mask;
            for _ in 0..=tier.mask {
                // SAFETY: i <= mask and the tier has mask+1 slots.
                let slot = unsafe { &*tier.slots.add(i) };
                match slot.addr.load(Ordering::Acquire) {
                    EMPTY => break,
                    a if a == addr => return Some(slot),
                    _ => i = (i + 1) & tier.mask,
                }
            }
        }
        None
    }

    fn newest(&self) -> usize {
        let mut level = 0;
        while level + 1 < MAX_TIERS && !self.tiers[level + 1].load(Ordering::Acquire).is_null() {
            level += 1;
        }
        level
    }

    fn tier_at(&self, level: usize) -> Option<&Tier> {
        let p = self.tiers[level].load(Ordering::Acquire);
        // SAFETY: installed tiers are never unmapped.
        (!p.is_null()).then(|| unsafe { &*p })
    }

    /// Maps tier `level`; if another thread won the race, uses theirs.
    fn grow(&self, level: usize) -> Option<&Tier> {
        let slots = FIRST_TIER_SLOTS << level;
        let bytes = tier_bytes(slots);
        let mem = os::map(bytes);
        if mem.is_null() {
            return None;
        }
        let tier = mem.cast::<Tier>();
        // SAFETY: `mem` is fresh, zeroed, page-aligned and large enough for
        // the header followed by `slots` slots.
        unsafe {
            tier.write(Tier {
                used: AtomicUsize::new(0),
                mask: slots - 1,
                slots: mem.add(2 * core::mem::size_of::<Slot>()).cast(),
            });
        }
        match self.tiers[level].compare_exchange(
            core::ptr::null_mut(),
            tier,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => self.tier_at(level),
            Err(_) => {
                // SAFETY: our mapping was never published.
                unsafe { os::unmap(mem, bytes) };
                self.tier_at(level)
            }
        }
    }

    /// Live entries across all tiers (for tests; not atomic with respect to
    /// concurrent updates).
    #[cfg(test)]
    pub fn count_live(&self) -> usize {
        let mut n = 0;
        for level in 0..MAX_TIERS {
            let Some(tier) = self.tier_at(level) else {
                continue;
            };
            for i in 0..=tier.mask {
                // SAFETY: i <= mask.
                let a = unsafe { &*tier.slots.add(i) }.addr.load(Ordering::Relaxed);
                n += usize::from(a > CLAIMED);
            }
        }
        n
    }
}

impl Default for LiveTable {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: all shared state is atomics; tiers are immutable once published.
unsafe impl Sync for LiveTable {}

/// Header slot plus the slots themselves (the header fits in one slot).
fn tier_bytes(slots: usize) -> usize {
    const _: () = assert!(core::mem::size_of::<Tier>() <= 2 * core::mem::size_of::<Slot>());
    (slots + 2) * core::mem::size_of::<Slot>()
}

#[inline]
fn hash(addr: usize) -> usize {
    // Sampled addresses are page-aligned: drop the zero bits, then mix.
    ((addr >> 12) as u64)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .rotate_left(32) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_find_remove() {
        let t = LiveTable::new();
        assert!(t.insert(0x1000, 7));
        assert!(t.insert(0x2000, 8));
        assert!(t.contains(0x1000));
        assert_eq!(t.remove(0x1000), Some(7));
        assert_eq!(t.remove(0x1000), None);
        assert_eq!(t.remove(0x2000), Some(8));
        assert_eq!(t.count_live(), 0);
    }

    #[test]
    fn grows_through_tiers_and_finds_everything() {
        let t = LiveTable::new();
        let n = FIRST_TIER_SLOTS * 5;
        for i in 1..=n {
            assert!(t.insert(i << 12, i as u64));
        }
        assert_eq!(t.count_live(), n);
        for i in 1..=n {
            assert_eq!(t.remove(i << 12), Some(i as u64), "addr {i}");
        }
        assert_eq!(t.count_live(), 0);
    }

    #[test]
    fn churn_reuses_tombstones() {
        let t = LiveTable::new();
        for round in 0..50u64 {
            for i in 1..=1000usize {
                assert!(t.insert(i << 12, round));
            }
            for i in 1..=1000usize {
                assert_eq!(t.remove(i << 12), Some(round));
            }
        }
        assert!(t.newest() <= 1, "churn should not keep adding tiers");
    }

    #[test]
    fn concurrent_threads_never_lose_entries() {
        let t = std::sync::Arc::new(LiveTable::new());
        let hs: Vec<_> = (0..4usize)
            .map(|k| {
                let t = t.clone();
                std::thread::spawn(move || {
                    for r in 0..20 {
                        for i in 0..3000usize {
                            let a = ((k * 1_000_000 + i) + 1) << 12;
                            assert!(t.insert(a, (r * 10_000 + i) as u64));
                        }
                        for i in 0..3000usize {
                            let a = ((k * 1_000_000 + i) + 1) << 12;
                            assert_eq!(t.remove(a), Some((r * 10_000 + i) as u64));
                        }
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(t.count_live(), 0);
    }
}
