//! Interning of captured stacks: each distinct sequence of return addresses
//! gets a small id, so buckets and live samples refer to a stack cheaply.
//!
//! At `HEAPPROF_RATE=1` every allocation comes here, so the table is built
//! for that: a hash of the stack's words (a multiply and a rotate a word),
//! open addressing over `(hash, id)` pairs kept at most half full, and the
//! frames compared only when the whole hash matches. Growth goes through
//! `try_reserve`: when memory runs out a new stack is refused, never an
//! abort (see [`crate::engine::pressure`]).

/// Index of a stack in a [`StackTable`].
pub type StackId = u32;

/// An empty slot's id field.
const EMPTY: StackId = StackId::MAX;

/// Distinct stacks, innermost frame first.
#[derive(Default)]
pub struct StackTable {
    /// `(hash, id)`, [`EMPTY`] ids free; a power of two long (or empty).
    slots: Vec<(u64, StackId)>,
    stacks: Vec<Box<[u64]>>,
    /// The stack interned last: a loop sampled many times in a row repeats
    /// it, and comparing a few words is cheaper than hashing them.
    last: Option<StackId>,
}

/// The stack's hash ([`crate::engine::word_hash`]).
fn hash(frames: &[u64]) -> u64 {
    let h = frames.iter().fold(frames.len() as u64, |h, &w| {
        crate::engine::word_hash::step(h, w)
    });
    crate::engine::word_hash::finish(h)
}

impl StackTable {
    /// The id of `frames`, adding it if new (panics when memory runs out:
    /// for tables of heapprof's own threads, not the aggregator's).
    pub fn intern(&mut self, frames: &[u64]) -> StackId {
        self.try_intern(frames).expect("memory for a new stack")
    }

    /// [`intern`](Self::intern) without aborting when memory runs out:
    /// `None` if a new stack cannot be stored.
    pub fn try_intern(&mut self, frames: &[u64]) -> Option<StackId> {
        if let Some(id) = self.last.filter(|&id| self.get(id) == frames) {
            return Some(id);
        }
        let h = hash(frames);
        let id = match self.find(h, frames) {
            Ok(id) => id,
            Err(slot) => self.insert(slot, h, frames)?,
        };
        self.last = Some(id);
        Some(id)
    }

    /// The id of `frames` (hash `h`), or the free slot where it would go.
    fn find(&self, h: u64, frames: &[u64]) -> Result<StackId, Option<usize>> {
        let mask = self.slots.len().wrapping_sub(1);
        let mut i = h as usize & mask;
        for _ in 0..self.slots.len() {
            let (sh, id) = self.slots[i];
            if id == EMPTY {
                return Err(Some(i));
            }
            if sh == h && self.get(id) == frames {
                return Ok(id);
            }
            i = (i + 1) & mask;
        }
        Err(None)
    }

    /// Adds `frames` (hash `h`) at free slot `slot` (growing first if the
    /// table would pass half full); `None` when memory runs out.
    fn insert(&mut self, slot: Option<usize>, h: u64, frames: &[u64]) -> Option<StackId> {
        let id = StackId::try_from(self.stacks.len())
            .ok()
            .filter(|&id| id != EMPTY)?;
        self.stacks.try_reserve(1).ok()?;
        let owned = try_boxed(frames)?;
        let slot = match slot {
            Some(s) if (self.stacks.len() + 1) * 2 <= self.slots.len() => s,
            _ => {
                self.grow()?;
                match self.find(h, frames) {
                    Err(Some(s)) => s,
                    _ => return None,
                }
            }
        };
        self.slots[slot] = (h, id);
        self.stacks.push(owned);
        Some(id)
    }

    /// Doubles the slots (at least 64), placing every stack again.
    fn grow(&mut self) -> Option<()> {
        let len = (self.slots.len() * 2).max(64);
        let mut slots = Vec::new();
        slots.try_reserve_exact(len).ok()?;
        slots.resize(len, (0, EMPTY));
        let mask = len - 1;
        for &(h, id) in self.slots.iter().filter(|s| s.1 != EMPTY) {
            let mut i = h as usize & mask;
            while slots[i].1 != EMPTY {
                i = (i + 1) & mask;
            }
            slots[i] = (h, id);
        }
        self.slots = slots;
        Some(())
    }

    /// How many distinct stacks there are.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.stacks.len()
    }

    /// The frames of a stack.
    pub fn get(&self, id: StackId) -> &[u64] {
        &self.stacks[id as usize]
    }
}

/// A boxed copy of `frames`, or `None` when memory runs out.
fn try_boxed(frames: &[u64]) -> Option<Box<[u64]>> {
    let mut v = Vec::new();
    v.try_reserve_exact(frames.len()).ok()?;
    v.extend_from_slice(frames);
    // Exact capacity: boxing does not reallocate.
    (v.capacity() == v.len()).then(|| v.into_boxed_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_and_alternating_stacks_keep_their_ids() {
        let mut t = StackTable::default();
        let a = t.try_intern(&[1, 2, 3]).unwrap();
        assert_eq!(t.try_intern(&[1, 2, 3]), Some(a));
        let b = t.try_intern(&[1, 2]).unwrap();
        let c = t.try_intern(&[1, 2, 3, 4]).unwrap();
        assert_eq!((a, b, c), (0, 1, 2));
        assert_eq!(t.try_intern(&[1, 2, 3]), Some(a));
        assert_eq!(t.try_intern(&[1, 2]), Some(b));
        assert_eq!(t.intern(&[1, 2, 3, 4]), c);
        assert_eq!(t.try_intern(&[]), Some(3));
        assert_eq!(t.len(), 4);
        assert_eq!(t.get(b), [1, 2]);
    }

    #[test]
    fn many_stacks_through_growth_and_equal_hashes_keep_their_ids() {
        let mut t = StackTable::default();
        let stack = |i: u64| -> Vec<u64> { (0..(i % 7 + 1)).map(|k| i * 31 + k).collect() };
        for i in 0..5_000 {
            assert_eq!(t.try_intern(&stack(i)), Some(i as StackId));
        }
        for i in (0..5_000).rev() {
            assert_eq!(t.try_intern(&stack(i)), Some(i as StackId));
            assert_eq!(t.get(i as StackId), stack(i));
        }
        // Two stacks under one hash: told apart by their frames.
        let (h, other) = (hash(&[9, 9]), [8u64, 8]);
        let id = t.insert(t.find(h, &other).unwrap_err(), h, &other).unwrap();
        assert_eq!(t.find(h, &other), Ok(id));
        assert_eq!(t.find(h, &[9, 9]).map_err(|_| ()), Err(()));
        assert_eq!(t.try_intern(&[9, 9]), Some(id + 1));
    }
}
