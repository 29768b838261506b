//! The aggregator: drains every thread's buffer and keeps the tallies.
//!
//! # Accounting
//! Samples are counted in buckets keyed by (stack, requested size, rate the
//! sample was taken at, label set of the allocating thread). Sampled sizes
//! of [`ROUNDED_FROM`] bytes or more count to the nearest 4 KiB (at a rate
//! above 1): a program allocating buffers of many sizes from one stack
//! would otherwise add a bucket per size, for ever, where this bounds them
//! (a few hundred per stack for sizes up to a few MiB) at an error of
//! at most 2 KiB an object (3% at the smallest, and none on average).
//! Each bucket holds how many samples were allocated and how many are
//! still live; the four pprof values `alloc_objects`,
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

use core::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use hashbrown::{HashMap, HashSet};

use crate::engine::buffer;
use crate::engine::live_table::LiveTable;
use crate::engine::record::{self, Record};
use crate::engine::stack_table::{StackId, StackTable};
use crate::engine::word_hash::Words;

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

/// One live sample, as [`Aggregate::live`] gives it.
#[derive(Clone, Copy, Debug)]
pub struct LiveSample {
    pub key: BucketKey,
    pub time_ns: u64,
    pub tag: u64,
}

/// One live sample as kept: its bucket by index, so that its free reaches
/// the bucket's counts without hashing the key.
#[derive(Clone, Copy, Debug, Default)]
struct Held {
    bucket: u32,
    time_ns: u64,
    tag: u64,
}

/// Running estimates of one label set's memory, kept as records are
/// applied so that `/metrics` reads them without a snapshot: each sample of
/// `size` bytes taken at `rate` stands for `1/p` objects and `size/p` bytes,
/// `p = 1 - exp(-size/rate)` (the weights [`crate::profile::scale`] applies per
/// bucket at write time; exact at rate 1).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Totals {
    pub inuse_bytes: f64,
    pub inuse_objects: f64,
    pub alloc_bytes: f64,
    pub alloc_objects: f64,
    /// Samples allocated under this label set.
    pub samples: u64,
}

/// (objects, bytes) one sample of `size` bytes at `rate` stands for.
/// Sampled sizes from here up are counted to the nearest 4 KiB.
pub const ROUNDED_FROM: u64 = 64 << 10;

/// The size a sample of `size` bytes taken at `rate` counts as (see the
/// module doc).
fn bucket_size(size: u64, rate: u64) -> u64 {
    if rate <= 1 || size < ROUNDED_FROM {
        return size;
    }
    (size + 2048) & !4095
}

fn weight(size: u64, rate: u64) -> (f64, f64) {
    if rate <= 1 || size == 0 {
        return (1.0, size as f64);
    }
    let objects = 1.0 / (1.0 - (-(size as f64) / rate as f64).exp());
    (objects, objects * size as f64)
}

/// All accounting state.
///
/// ```text
/// live:    sample id -> Held { bucket, time, tag }      one per live sample
///          (engine::live_table: recent ids in a ring, the rest hashed)
///                              |
/// buckets: [(BucketKey, Counts)] <- index: BucketKey -> position
///                 |
/// stacks:  StackId -> frames          totals: [Totals] by label set id
/// ```
/// An allocation hashes its stack (unless it is the last one again) and
/// its key, once each; its free finds the sample by id (in the ring, else
/// hashed) and the bucket by position.
#[derive(Default)]
pub struct Aggregate {
    pub stacks: StackTable,
    buckets: Vec<(BucketKey, Counts)>,
    bucket_index: HashMap<BucketKey, u32, Words>,
    live: LiveTable<Held>,
    freed_early: HashSet<u64, Words>,
    /// By label set id: ids are dense from 0 ([`crate::engine::labels`]).
    totals: Vec<Totals>,
    /// The estimated in-use bytes over every label set, published in
    /// [`IN_USE`] by each drain.
    in_use: f64,
}

/// [`Aggregate::in_use`] as whole bytes, readable without the lock (the
/// watcher, which may not take one, follows the peak with it).
static IN_USE: AtomicU64 = AtomicU64::new(0);

/// The estimated in-use heap in bytes, as of the last drain. Lock-free.
pub fn in_use_estimate() -> u64 {
    IN_USE.load(Ordering::Relaxed)
}

impl Aggregate {
    /// Every bucket with its counts.
    pub fn buckets(&self) -> impl Iterator<Item = (BucketKey, Counts)> + '_ {
        self.buckets.iter().copied()
    }

    /// How many buckets there are.
    pub fn bucket_count(&self) -> usize {
        self.buckets.len()
    }

    /// Every live sample with its id.
    pub fn live(&self) -> impl Iterator<Item = (u64, LiveSample)> + '_ {
        self.live.iter().filter_map(|(id, h)| {
            let &(key, _) = self.buckets.get(h.bucket as usize)?;
            Some((
                id,
                LiveSample {
                    key,
                    time_ns: h.time_ns,
                    tag: h.tag,
                },
            ))
        })
    }

    /// The running totals of every label set that allocated.
    pub fn totals(&self) -> impl Iterator<Item = (u32, Totals)> + '_ {
        (0u32..)
            .zip(self.totals.iter().copied())
            .filter(|(_, t)| t.samples > 0)
    }

    /// The position of `key`'s bucket, added if new; `None` when memory
    /// runs out.
    fn bucket(&mut self, key: BucketKey) -> Option<u32> {
        if let Some(&i) = self.bucket_index.get(&key) {
            return Some(i);
        }
        let i = u32::try_from(self.buckets.len()).ok()?;
        self.buckets.try_reserve(1).ok()?;
        self.bucket_index.try_reserve(1).ok()?;
        self.buckets.push((key, Counts::default()));
        self.bucket_index.insert(key, i);
        Some(i)
    }

    /// `labels`' running totals, added if new; `None` when memory runs out.
    fn totals_of(&mut self, labels: u32) -> Option<&mut Totals> {
        let i = labels as usize;
        if i >= self.totals.len() {
            let more = i + 1 - self.totals.len();
            self.totals.try_reserve(more).ok()?;
            self.totals.resize(i + 1, Totals::default());
        }
        self.totals.get_mut(i)
    }

    /// Applies one record.
    #[inline]
    pub fn apply(&mut self, r: Record<'_>) {
        match r {
            Record::Alloc(a) => self.apply_alloc(a),
            // Apart from allocations: half the records are frees, whose
            // short work then saves and restores fewer registers (inlined
            // into the drain's loop, either one costs more: the README's
            // figures).
            Record::Free { id } => self.apply_free(id),
        }
    }

    /// An allocation's record.
    #[inline(never)]
    fn apply_alloc(&mut self, a: record::Alloc<'_>) {
        let record::Alloc {
            id,
            size,
            rate,
            time_ns,
            tag,
            labels,
            frames,
        } = a;
        // Room first, so that running out of memory drops this
        // record instead of aborting the program (see `pressure`).
        let room = self.totals_of(labels).is_some();
        let size = bucket_size(size, rate);
        let bucket = self
            .stacks
            .try_intern(frames)
            .filter(|_| room)
            .and_then(|stack| {
                self.bucket(BucketKey {
                    stack,
                    size,
                    rate,
                    labels,
                })
            });
        let Some(bucket) = bucket else {
            crate::engine::pressure::dropped_record();
            return;
        };
        let (objects, bytes) = weight(size, rate);
        // Early frees are rare: skip hashing the id when there are none.
        let live = self.freed_early.is_empty() || !self.freed_early.remove(&id);
        let held = Held {
            bucket,
            time_ns,
            tag,
        };
        if live && !self.live.insert(id, held, rate) {
            crate::engine::pressure::dropped_record();
            return;
        }
        if let Some((_, counts)) = self.buckets.get_mut(bucket as usize) {
            counts.allocs += 1;
            counts.live += u64::from(live);
        }
        if let Some(totals) = self.totals.get_mut(labels as usize) {
            totals.samples += 1;
            totals.alloc_objects += objects;
            totals.alloc_bytes += bytes;
            if live {
                totals.inuse_objects += objects;
                totals.inuse_bytes += bytes;
            }
        }
        if live {
            self.in_use += bytes;
        }
    }

    /// A free's record.
    #[inline(never)]
    fn apply_free(&mut self, id: u64) {
        match self.live.remove(id) {
            Some(h) => {
                let Some((key, counts)) = self.buckets.get_mut(h.bucket as usize) else {
                    return;
                };
                counts.live -= 1;
                let (objects, bytes) = weight(key.size, key.rate);
                if let Some(t) = self.totals.get_mut(key.labels as usize) {
                    t.inuse_objects -= objects;
                    t.inuse_bytes -= bytes;
                }
                self.in_use -= bytes;
            }
            None => {
                if self.freed_early.try_reserve(1).is_ok() {
                    self.freed_early.insert(id);
                } else {
                    crate::engine::pressure::dropped_record();
                }
            }
        }
    }

    /// Pulls every record out of every thread's buffer.
    pub fn drain(&mut self) {
        // SAFETY: the caller holds the aggregator lock (we have `&mut self`
        // of the one global aggregate), so this is the only consumer.
        unsafe { buffer::drain_all(|words| record::parse(words, |r| self.apply(r))) };
        IN_USE.store(self.in_use.max(0.0) as u64, Ordering::Relaxed);
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
    crate::engine::arena_in_copy::lock(&AGGREGATE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alloc(id: u64, size: u64, frames: &[u64]) -> Record<'_> {
        Record::Alloc(record::Alloc {
            id,
            size,
            rate: 1,
            time_ns: 0,
            tag: 0,
            labels: 0,
            frames,
        })
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
        let counts = |stack, size| {
            let key = BucketKey {
                stack,
                size,
                rate: 1,
                labels: 0,
            };
            a.buckets().find(|b| b.0 == key).map(|b| b.1)
        };
        assert_eq!(counts(s12, 10), Some(Counts { allocs: 2, live: 1 }));
        assert_eq!(counts(s3, 20), Some(Counts { allocs: 1, live: 0 }));
        assert_eq!(a.bucket_count(), 2);
        assert_eq!(bucket_size(100, 512 << 10), 100);
        assert_eq!(bucket_size((64 << 10) + 2047, 512 << 10), 64 << 10);
        assert_eq!(bucket_size((64 << 10) + 2048, 512 << 10), (64 << 10) + 4096);
        assert_eq!(
            bucket_size((64 << 10) + 5, 1),
            (64 << 10) + 5,
            "exact at rate 1"
        );
        let live: Vec<_> = a
            .live()
            .map(|(id, s)| (id, s.key.stack, s.key.size))
            .collect();
        assert_eq!(live, [(1, s12, 10)]);
        assert!(a.freed_early.is_empty());
        // Rate 1: the running totals are exact.
        let t = a.totals[0];
        assert_eq!((t.inuse_objects, t.inuse_bytes), (1.0, 10.0));
        assert_eq!((t.alloc_objects, t.alloc_bytes, t.samples), (3.0, 40.0, 3));
    }

    #[test]
    fn running_totals_follow_the_scaled_buckets_per_label_set() {
        let mut a = Aggregate::default();
        let rec = |id, size, labels| {
            Record::Alloc(record::Alloc {
                id,
                size,
                rate: 4096,
                time_ns: 0,
                tag: 0,
                labels,
                frames: &[1],
            })
        };
        a.apply(rec(1, 1000, 7));
        a.apply(rec(2, 1000, 7));
        a.apply(rec(3, 50_000, 9));
        a.apply(Record::Free { id: 2 });
        let (objects, bytes) = crate::profile::scale::scale_heap_sample(1, 1000, 4096);
        let t = a.totals[7];
        assert_eq!(t.inuse_objects as u64, objects);
        assert!((t.inuse_bytes - bytes as f64).abs() < 1.0, "{t:?}");
        assert_eq!(t.samples, 2);
        assert!((t.alloc_bytes - 2.0 * bytes as f64).abs() < 2.0, "{t:?}");
        assert!(a.totals[9].inuse_bytes > 50_000.0);
        let sets: Vec<u32> = a.totals().map(|(id, _)| id).collect();
        assert_eq!(sets, [7, 9], "only the label sets that allocated");
    }
}
