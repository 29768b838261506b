//! The aggregator's live samples by id: a direct-mapped ring for recent
//! ids, a hash map for the rest.
//!
//! Sample ids come from one counter, so the samples a program frees soon
//! (most of them, at `HEAPPROF_RATE=1`) have ids close to the newest. Each
//! id has one slot in the ring, `id mod RING`; the slot names its id, so a
//! lookup there is an index and a compare, where a hash map costs a hash,
//! a probe and a write.
//!
//! ```text
//! ring:  [ id 8193 | v ]  [ empty ]  [ id 2 | v ]  ...   slot = id mod RING
//! old:   ids whose slot a newer id took while they were still live
//! ```
//! An insert whose slot holds another live id moves that one to `old`
//! first, so every id is in exactly one place: its slot if the slot names
//! it, else `old`. The ring (1 MiB) is allocated at the first dense insert
//! (a sample taken at [`DENSE_RATE`] bytes or less: exact mode, leak
//! checks); at sparser rates samples are few and mostly long-lived, and
//! everything stays in `old`.
//!
//! Growth is tried first ([`LiveTable::insert`] says when memory ran out),
//! never an abort (see [`crate::engine::pressure`]).

use hashbrown::HashMap;

use crate::engine::word_hash::Words;

/// Slots in the ring: ids this far apart share one.
const RING: usize = 1 << 15;

/// Samples taken at this rate or denser allocate the ring.
pub const DENSE_RATE: u64 = 4096;

/// A ring slot: id 0 (never a sample's) is an empty one.
#[derive(Clone, Copy, Default)]
struct Slot<V> {
    id: u64,
    v: V,
}

/// Live values by id (see the module doc).
pub struct LiveTable<V> {
    ring: Vec<Slot<V>>,
    old: HashMap<u64, V, Words>,
}

impl<V> Default for LiveTable<V> {
    fn default() -> Self {
        LiveTable {
            ring: Vec::new(),
            old: HashMap::default(),
        }
    }
}

impl<V: Copy + Default> LiveTable<V> {
    /// Adds `v` under `id` (nonzero, not already present), a sample taken
    /// at `rate`; false, and nothing added, when memory runs out.
    pub fn insert(&mut self, id: u64, v: V, rate: u64) -> bool {
        if self.ring.is_empty() {
            if rate > DENSE_RATE || self.ring.try_reserve_exact(RING).is_err() {
                return self.insert_old(id, v);
            }
            self.ring.resize(RING, Slot::default());
        }
        let Some(slot) = self.ring.get_mut(id as usize % RING) else {
            return false;
        };
        if slot.id != 0 {
            // Still live: it moves to `old`, whole or not at all.
            if self.old.try_reserve(1).is_err() {
                return false;
            }
            self.old.insert(slot.id, slot.v);
        }
        *slot = Slot { id, v };
        true
    }

    fn insert_old(&mut self, id: u64, v: V) -> bool {
        if self.old.try_reserve(1).is_err() {
            return false;
        }
        self.old.insert(id, v);
        true
    }

    /// Takes the value under `id` out, if there is one.
    pub fn remove(&mut self, id: u64) -> Option<V> {
        if let Some(slot) = self.ring.get_mut(id as usize % RING) {
            if slot.id == id && id != 0 {
                slot.id = 0;
                return Some(slot.v);
            }
        }
        self.old.remove(&id)
    }

    /// Every id with its value.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &V)> + '_ {
        self.ring
            .iter()
            .filter(|s| s.id != 0)
            .map(|s| (s.id, &s.v))
            .chain(self.old.iter().map(|(&id, v)| (id, v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_id_is_found_once_wherever_it_lives() {
        let mut t = LiveTable::default();
        let mut model = std::collections::BTreeSet::new();
        // Ids in order are even; late ones (their record drained after
        // newer ones) odd, never used before.
        let mut next = 2u64;
        for round in 0..40_000u64 {
            let id = next;
            next += 2 * (1 + round % 3);
            assert!(t.insert(id, id * 10, 1));
            model.insert(id);
            if let Some(late) = id.checked_sub(5001).filter(|_| round % 1000 == 999) {
                assert!(t.insert(late, late * 10, 1));
                model.insert(late);
            }
            // Most are freed soon; one in 50 lives on.
            if round >= 20 && round % 50 != 0 {
                let victim = *model.iter().rev().nth(10).unwrap();
                assert_eq!(t.remove(victim), Some(victim * 10));
                model.remove(&victim);
            }
        }
        assert!(
            t.old.keys().any(|id| id % 2 == 0),
            "long-lived ones moved out of the ring"
        );
        let mut ids: Vec<u64> = t
            .iter()
            .map(|(id, &v)| {
                assert_eq!(v, id * 10, "each id keeps its value");
                id
            })
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, model.iter().copied().collect::<Vec<_>>());
        for &id in &model {
            assert_eq!(t.remove(id), Some(id * 10));
            assert_eq!(t.remove(id), None, "only once");
        }
        assert_eq!(t.iter().count(), 0);
        assert_eq!(t.remove(12345), None);
    }

    #[test]
    fn sparse_samples_leave_the_ring_unallocated() {
        let mut t = LiveTable::default();
        for id in 1..100u64 {
            assert!(t.insert(id, id, DENSE_RATE + 1));
        }
        assert!(t.ring.is_empty());
        assert!(t.insert(100, 100, 1));
        assert_eq!(t.ring.len(), RING);
        assert_eq!((t.remove(5), t.remove(100)), (Some(5), Some(100)));
    }
}
