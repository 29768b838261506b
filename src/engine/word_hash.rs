//! The aggregator's hash: a multiply and a rotate per machine word.
//!
//! The aggregator hashes only integers heapprof made itself (sample ids,
//! stack ids, sizes, return addresses), never input an adversary chooses,
//! so it needs speed, not resistance to flooding: FxHash's word step (as
//! rustc's tables use), then a final fold so that the low bits, which pick
//! a slot, depend on every word.

use core::hash::{BuildHasher, Hasher};

const K: u64 = 0x517c_c1b7_2722_0a95;

/// One word into the running hash.
#[inline(always)]
pub fn step(h: u64, w: u64) -> u64 {
    (h.rotate_left(5) ^ w).wrapping_mul(K)
}

/// The final fold of a running hash.
#[inline(always)]
pub fn finish(h: u64) -> u64 {
    h ^ (h >> 29)
}

/// A [`Hasher`] over [`step`].
#[derive(Clone, Copy, Default)]
pub struct WordHasher(u64);

impl Hasher for WordHasher {
    #[inline(always)]
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = step(self.0, u64::from(*b));
        }
    }
    #[inline(always)]
    fn write_u8(&mut self, i: u8) {
        self.0 = step(self.0, u64::from(i));
    }
    #[inline(always)]
    fn write_u32(&mut self, i: u32) {
        self.0 = step(self.0, u64::from(i));
    }
    #[inline(always)]
    fn write_u64(&mut self, i: u64) {
        self.0 = step(self.0, i);
    }
    #[inline(always)]
    fn write_usize(&mut self, i: usize) {
        self.0 = step(self.0, i as u64);
    }
    #[inline(always)]
    fn finish(&self) -> u64 {
        finish(self.0)
    }
}

/// Builds [`WordHasher`]s (for `hashbrown` maps).
#[derive(Clone, Copy, Default)]
pub struct Words;

impl BuildHasher for Words {
    type Hasher = WordHasher;
    #[inline(always)]
    fn build_hasher(&self) -> WordHasher {
        WordHasher(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_ids_spread_over_the_slots() {
        // As the live map sees sample ids: 4096 in a row, 4096 slots.
        let mut load = vec![0u32; 1 << 12];
        for id in 1_000_000..1_000_000 + (1u64 << 12) {
            load[(Words.hash_one(id) & 0xfff) as usize] += 1;
        }
        let empty = load.iter().filter(|&&n| n == 0).count();
        // Uniform hashing leaves about 1/e empty; far fewer is fine too.
        assert!(empty < 1 << 11, "{empty} slots empty");
        assert!(load.iter().all(|&n| n <= 8), "a slot takes more than 8");
    }
}
