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
}

impl StackTable {
    /// The id of `frames`, adding it if new.
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

    /// The frames of a stack.
    pub fn get(&self, id: StackId) -> &[u64] {
        &self.stacks[id as usize]
    }
}
