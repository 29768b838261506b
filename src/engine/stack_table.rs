//! Interning of captured stacks: each distinct sequence of return addresses
//! gets a small id, so buckets and live samples refer to a stack cheaply.

use hashbrown::HashMap;

/// Index of a stack in a [`StackTable`].
pub type StackId = u32;

/// Distinct stacks, innermost frame first.
#[derive(Default)]
pub struct StackTable {
    ids: HashMap<Box<[u64]>, StackId>,
    stacks: Vec<Box<[u64]>>,
    /// The stack interned last: a loop sampled many times in a row repeats
    /// it, and comparing a few words is cheaper than hashing them.
    last: Option<StackId>,
}

impl StackTable {
    /// The id of `frames`, adding it if new.
    #[allow(dead_code)] // the aggregator uses `try_intern`; tests use this
    pub fn intern(&mut self, frames: &[u64]) -> StackId {
        if let Some(&id) = self.ids.get(frames) {
            return id;
        }
        let id = self.stacks.len() as StackId;
        let owned: Box<[u64]> = frames.into();
        self.stacks.push(owned.clone());
        self.ids.insert(owned, id);
        id
    }

    /// [`intern`](Self::intern) without aborting when memory runs out:
    /// `None` if a new stack cannot be stored.
    pub fn try_intern(&mut self, frames: &[u64]) -> Option<StackId> {
        if let Some(id) = self.last.filter(|&id| self.get(id) == frames) {
            return Some(id);
        }
        if let Some(&id) = self.ids.get(frames) {
            self.last = Some(id);
            return Some(id);
        }
        self.ids.try_reserve(1).ok()?;
        self.stacks.try_reserve(1).ok()?;
        let (a, b) = (try_boxed(frames)?, try_boxed(frames)?);
        let id = self.stacks.len() as StackId;
        self.stacks.push(a);
        self.ids.insert(b, id);
        self.last = Some(id);
        Some(id)
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
}
