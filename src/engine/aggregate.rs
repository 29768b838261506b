//! The aggregator: drains every thread's buffer and keeps the tallies.
//!
//! # Accounting
//! Samples are counted in buckets keyed by (stack, requested size, rate the
//! sample was taken at, label set of the allocating thread). Each bucket holds how many samples were allocated and
//! how many are still live; the four pprof values `alloc_objects`,
//! `alloc_space`, `inuse_objects` and `inuse_space` are these counts scaled at
//! write time ([`crate::profile::scale`]). Every live sample is also kept by id with its
//! bucket, allocation time (for the age of live memory) and leak-check tag.
//!
//! A free is matched to its sample by id, never by address, so an address
//! reused after a free cannot be confused with the old object. Buffers are
//! drained one after another, so a free recorded by one thread can be drained
//! before the allocation recorded by another: such an early free is kept aside
//! and cancels the allocation when it arrives. Hence the invariant: once every
//! thread has stopped allocating and the buffers are drained, the live samples
//! are exactly the sampled objects still allocated — at rate 1, exactly what
//! is live.
//!
//! The aggregator lives behind a mutex that only dumps, snapshots and drains
//! take — never an allocation hook — always with the calling thread marked
//! busy so the aggregator's own allocations are not profiled.

use std::sync::{Mutex, MutexGuard};

use hashbrown::{HashMap, HashSet};

use crate::engine::buffer;
use crate::engine::record::{self, Record};
use crate::engine::stack_table::{StackId, StackTable};

/// What samples are counted under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BucketKey {
    pub stack: StackId,
    pub size: u64,
    pub rate: u64,
    /// The label set ([`crate::engine::labels`]) active when it was allocated.
    pub labels: u32,
}

/// Raw (unscaled) sample counts of a bucket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub allocs: u64,
    pub live: u64,
}

/// One live sample.
#[derive(Clone, Copy, Debug)]
pub struct LiveSample {
    pub key: BucketKey,
    pub time_ns: u64,
    pub tag: u64,
}

/// All accounting state.
#[derive(Default)]
pub struct Aggregate {
    pub stacks: StackTable,
    pub buckets: HashMap<BucketKey, Counts>,
    pub live: HashMap<u64, LiveSample>,
    freed_early: HashSet<u64>,
}

impl Aggregate {
    /// Applies one record.
    pub fn apply(&mut self, r: Record<'_>) {
        match r {
            Record::Alloc {
                id,
                size,
                rate,
                time_ns,
                tag,
                labels,
                frames,
            } => {
                // Room first, so that running out of memory drops this
                // record instead of aborting the program (see `pressure`).
                let room = self.buckets.try_reserve(1).is_ok() && self.live.try_reserve(1).is_ok();
                let Some(stack) = self.stacks.try_intern(frames).filter(|_| room) else {
                    crate::engine::pressure::dropped_record();
                    return;
                };
                let key = BucketKey {
                    stack,
                    size,
                    rate,
                    labels,
                };
                let counts = self.buckets.entry(key).or_default();
                counts.allocs += 1;
                // Early frees are rare: skip hashing the id when there are none.
                if self.freed_early.is_empty() || !self.freed_early.remove(&id) {
                    counts.live += 1;
                    self.live.insert(id, LiveSample { key, time_ns, tag });
                }
            }
            Record::Free { id } => match self.live.remove(&id) {
                Some(s) => {
                    if let Some(c) = self.buckets.get_mut(&s.key) {
                        c.live -= 1;
                    }
                }
                None => {
                    if self.freed_early.try_reserve(1).is_ok() {
                        self.freed_early.insert(id);
                    } else {
                        crate::engine::pressure::dropped_record();
                    }
                }
            },
        }
    }

    /// Pulls every record out of every thread's buffer.
    pub fn drain(&mut self) {
        // SAFETY: the caller holds the aggregator lock (we have `&mut self`
        // of the one global aggregate), so this is the only consumer.
        unsafe { buffer::drain_all(|words| record::parse(words, |r| self.apply(r))) };
    }
}

static AGGREGATE: Mutex<Option<Aggregate>> = Mutex::new(None);

/// Runs `f` on the drained aggregate, with the calling thread marked busy.
pub fn with<R>(f: impl FnOnce(&mut Aggregate) -> R) -> R {
    let st = crate::engine::thread_state::current();
    let _busy = st.enter();
    let mut guard = lock();
    let agg = guard.get_or_insert_with(Aggregate::default);
    agg.drain();
    f(agg)
}

/// Drains every buffer into the aggregate if its lock is free now (never
/// waits: the sampled path calls it).
pub fn try_drain() {
    let st = crate::engine::thread_state::current();
    let _busy = st.enter();
    let mut guard = match AGGREGATE.try_lock() {
        Ok(g) => g,
        Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) => return,
    };
    guard.get_or_insert_with(Aggregate::default).drain();
}

/// The aggregator lock (poisoning ignored: the state stays consistent because
/// nothing in it panics midway through an update).
pub fn lock() -> MutexGuard<'static, Option<Aggregate>> {
    crate::engine::copy_arena::lock(&AGGREGATE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alloc(id: u64, size: u64, frames: &[u64]) -> Record<'_> {
        Record::Alloc {
            id,
            size,
            rate: 1,
            time_ns: 0,
            tag: 0,
            labels: 0,
            frames,
        }
    }

    #[test]
    fn frees_match_by_id_even_when_drained_first() {
        let mut a = Aggregate::default();
        a.apply(Record::Free { id: 2 });
        a.apply(alloc(1, 10, &[1, 2]));
        a.apply(alloc(2, 10, &[1, 2]));
        a.apply(alloc(3, 20, &[3]));
        a.apply(Record::Free { id: 3 });
        let s12 = a.stacks.intern(&[1, 2]);
        let s3 = a.stacks.intern(&[3]);
        let c = a.buckets[&BucketKey {
            stack: s12,
            size: 10,
            rate: 1,
            labels: 0,
        }];
        assert_eq!(c, Counts { allocs: 2, live: 1 });
        let c = a.buckets[&BucketKey {
            stack: s3,
            size: 20,
            rate: 1,
            labels: 0,
        }];
        assert_eq!(c, Counts { allocs: 1, live: 0 });
        assert_eq!(a.live.len(), 1);
        assert!(a.freed_early.is_empty());
    }
}
