//! Heap labels: which request, route or tenant an allocation was made for.
//!
//! # Model
//! A *label set* is an immutable list of `(key, value)` strings, sorted by
//! key with distinct keys, interned into a `u32` id for the life of the
//! process (0 is the empty set). Each thread's current set id lives in its
//! [`ThreadState`]; the sampled path ([`crate::engine::record_alloc_from`])
//! copies it into the allocation's record and the aggregator buckets samples
//! by it, so a sample keeps the labels of its allocation for life, whichever
//! thread frees it and whatever labels are active then. The unsampled hot
//! paths never read it.
//!
//! Entering a scope maps (current set, the scope's pairs) to a child set: the
//! current set with the pairs added, each pair overriding the current value
//! of its key (a later pair of the same call overriding an earlier one, an
//! empty value removing the key). That
//! mapping is an *edge*, interned globally the first time it is seen and then
//! cached per thread in a small direct-mapped cache keyed by a cheap hash of
//! (parent id, pairs) and checked by content. A hit is a hash, a compare and
//! a thread-local store: no lock, no allocation. A miss takes the interner's
//! mutex with the thread marked busy, so the interner's own allocations go
//! straight to the inner allocator, unsampled; allocation hooks never take
//! that lock.
//!
//! Memory: every distinct set and edge is kept (copied, never freed) for the
//! process's life, like Go's interned pprof labels. Label values should come
//! from a bounded domain (routes, tenants, job kinds), not request ids.
//!
//! [`ThreadState`]: crate::engine::thread_state::ThreadState

use core::cell::Cell;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::{Mutex, MutexGuard};

use hashbrown::HashTable;

use crate::engine::thread_state::{self, ThreadState};

/// The pairs of one interned label set: sorted by key, keys distinct.
pub type Pairs = [(Box<str>, Box<str>)];

/// The id of the empty label set.
pub const NONE: u32 = 0;

/// (parent set, pairs of a scope) -> child set, interned once.
struct Edge {
    parent: u32,
    /// [`quick_hash`] of (parent, inner), for the per-thread cache.
    quick: u64,
    /// The scope's pairs as given, in order.
    inner: Box<Pairs>,
    child: u32,
}

pub(crate) struct Interner {
    hasher: RandomState,
    /// Set id − 1 -> its pairs.
    sets: Vec<&'static Pairs>,
    /// (content hash, set id).
    by_content: HashTable<(u64, u32)>,
    /// (hash of parent and inner pairs, edge).
    edges: HashTable<(u64, &'static Edge)>,
    /// Sets written to the black box, which has copies of the first this
    /// many (a forked child's file, copied from its parent's, too).
    in_blackbox: usize,
}

static INTERNER: Mutex<Option<Interner>> = Mutex::new(None);

/// The interner's lock (poisoning ignored: nothing panics midway through an
/// update). Taken only at label API calls and when a profile is written,
/// always with the calling thread busy; never by a hook.
pub(crate) fn lock() -> MutexGuard<'static, Option<Interner>> {
    crate::engine::arena_in_copy::lock(&INTERNER)
}

const CACHE_SLOTS: usize = 16;

std::thread_local! {
    // Plain `Cell`s of `Copy` values: no destructor, usable at any time.
    static CACHE: [Cell<Option<&'static Edge>>; CACHE_SLOTS] =
        const { [const { Cell::new(None) }; CACHE_SLOTS] };
}

fn same(a: &Pairs, b: &[(&str, &str)]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((ak, av), (bk, bv))| same_str(ak, bk) && same_str(av, bv))
}

/// String equality without a `memcmp` call for the short strings labels
/// usually are: up to 16 bytes, [`head_tail`] covers every byte.
#[inline(always)]
fn same_str(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len()
        && if a.len() <= 16 {
            head_tail(a) == head_tail(b)
        } else {
            a == b
        }
}

/// Two words that, for up to 16 bytes, hold every byte of `b` (overlapping
/// loads; for 1–3 bytes the first, middle and last): the cache's hash input
/// and, with the length, an exact comparison of short strings.
#[inline(always)]
fn head_tail(b: &[u8]) -> (u64, u64) {
    let n = b.len();
    let w8 = |at: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[at..at + 8]);
        u64::from_le_bytes(w)
    };
    let w4 = |at: usize| {
        let mut w = [0u8; 4];
        w.copy_from_slice(&b[at..at + 4]);
        u64::from(u32::from_le_bytes(w))
    };
    match n {
        8.. => (w8(0), w8(n - 8)),
        4.. => (w4(0), w4(n - 4)),
        1.. => (
            u64::from(b[0]) | u64::from(b[n / 2]) << 8 | u64::from(b[n - 1]) << 16,
            0,
        ),
        0 => (0, 0),
    }
}

/// A cheap hash of (parent, pairs), only for choosing a cache slot: each
/// string contributes its length and [`head_tail`] (collisions just share a
/// slot; a hit is confirmed by comparing contents).
#[inline(always)]
fn quick_hash(parent: u32, pairs: &[(&str, &str)]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h = u64::from(parent) ^ (pairs.len() as u64) << 32;
    let mut mix = |s: &str| {
        let (first, last) = head_tail(s.as_bytes());
        h = (h ^ s.len() as u64 ^ first).wrapping_mul(K).rotate_left(23) ^ last;
    };
    for (k, v) in pairs {
        mix(k);
        mix(v);
    }
    h.wrapping_mul(K) >> 32
}

/// The set `parent` with `pairs` added (each overriding its key's value).
pub fn child(parent: u32, pairs: &[(&str, &str)]) -> u32 {
    if pairs.is_empty() {
        return parent;
    }
    let q = quick_hash(parent, pairs);
    let slot = q as usize % CACHE_SLOTS;
    let cached = CACHE.with(|c| c[slot].get());
    if let Some(e) = cached {
        if e.quick == q && e.parent == parent && same(&e.inner, pairs) {
            return e.child;
        }
    }
    let e = child_slow(parent, pairs, q);
    CACHE.with(|c| c[slot].set(Some(e)));
    e.child
}

#[cold]
#[inline(never)]
fn child_slow(parent: u32, pairs: &[(&str, &str)], quick: u64) -> &'static Edge {
    let _busy = thread_state::current().enter();
    let mut guard = lock();
    let int = guard.get_or_insert_with(|| Interner {
        hasher: RandomState::new(),
        sets: Vec::new(),
        by_content: HashTable::new(),
        edges: HashTable::new(),
        in_blackbox: 0,
    });
    let h = int.hasher.hash_one((parent, pairs));
    let found = int
        .edges
        .find(h, |(_, e)| e.parent == parent && same(&e.inner, pairs));
    if let Some(&(_, e)) = found {
        return e;
    }
    let outer: &'static Pairs = match parent {
        NONE => &[],
        id => int.sets.get(id as usize - 1).copied().unwrap_or(&[]),
    };
    let mut merged: Vec<(&str, &str)> = outer.iter().map(|(k, v)| (&**k, &**v)).collect();
    for &(k, v) in pairs {
        merged.retain(|(mk, _)| *mk != k);
        // An empty value removes the key (pprof cannot carry an empty
        // string label: it would read as a numeric one).
        if !v.is_empty() {
            merged.push((k, v));
        }
    }
    merged.sort_by(|a, b| a.0.cmp(b.0));
    let child = int.intern_set(&merged);
    let edge: &'static Edge = Box::leak(Box::new(Edge {
        parent,
        quick,
        inner: copy(pairs),
        child,
    }));
    int.edges.insert_unique(h, (h, edge), |(h, _)| *h);
    edge
}

fn copy(pairs: &[(&str, &str)]) -> Box<Pairs> {
    pairs
        .iter()
        .map(|&(k, v)| (Box::from(k), Box::from(v)))
        .collect()
}

impl Interner {
    /// The id of the set with exactly these (sorted, distinct-key) pairs.
    fn intern_set(&mut self, pairs: &[(&str, &str)]) -> u32 {
        if pairs.is_empty() {
            return NONE;
        }
        let h = self.hasher.hash_one(pairs);
        let sets = &self.sets;
        if let Some(&(_, id)) = self
            .by_content
            .find(h, |&(_, id)| same(sets[id as usize - 1], pairs))
        {
            return id;
        }
        let Ok(id) = u32::try_from(self.sets.len() + 1) else {
            return NONE;
        };
        self.sets.push(Box::leak(copy(pairs)));
        self.by_content.insert_unique(h, (h, id), |(h, _)| *h);
        self.catch_up_blackbox();
        id
    }

    /// Writes the sets the black box lacks (all of them when it was just
    /// installed), under the interner's lock: its writer is then alone.
    fn catch_up_blackbox(&mut self) {
        if crate::engine::blackbox::installed().is_none() {
            return;
        }
        for (i, set) in self.sets.iter().enumerate().skip(self.in_blackbox) {
            crate::engine::blackbox::note_label_set(i as u32 + 1, set);
        }
        self.in_blackbox = self.sets.len();
    }
}

/// Writes the label sets made so far to the black box, once installed
/// (later ones are written as they are made), unless another thread holds
/// the interner: then the next set made, or the next call, writes them.
pub fn note_all_in_blackbox() {
    if let Ok(mut guard) = INTERNER.try_lock() {
        if let Some(int) = guard.as_mut() {
            int.catch_up_blackbox();
        }
    }
}

/// The pairs of set `id` (empty for [`NONE`] or an unknown id). Takes the
/// interner's lock: call with the thread busy, off any hook.
pub fn pairs(id: u32) -> &'static Pairs {
    if id == NONE {
        return &[];
    }
    lock()
        .as_ref()
        .and_then(|int| int.sets.get(id as usize - 1).copied())
        .unwrap_or(&[])
}

/// The calling thread's current label set.
pub fn current() -> u32 {
    thread_state::current().labels.get()
}

/// Makes `id` the thread's label set until dropped (also when unwinding),
/// then restores the previous one.
struct Scope {
    st: &'static ThreadState,
    outer: u32,
}

impl Scope {
    fn enter(st: &'static ThreadState, id: u32) -> Scope {
        let outer = st.labels.get();
        st.labels.set(id);
        Scope { st, outer }
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        self.st.labels.set(self.outer);
    }
}

/// Runs `f` with `labels` added to the calling thread's label set: every
/// sample the thread takes while `f` runs carries them. Scopes nest: an
/// inner scope adds its keys and overrides the value of a key already set;
/// leaving a scope (also by panic) restores the outer set; an empty value
/// removes its key for the inner scope. The strings are
/// copied the first time a set is seen, so borrowed strings are fine, and
/// entering the same scope again costs a few nanoseconds and allocates
/// nothing.
///
/// ```
/// let user = heapprof::with_labels(&[("route", "/users")], || vec![0u8; 4096]);
/// # drop(user);
/// ```
pub fn with_labels<R>(labels: &[(&str, &str)], f: impl FnOnce() -> R) -> R {
    let st = thread_state::current();
    let id = child(st.labels.get(), labels);
    let _scope = Scope::enter(st, id);
    f()
}

/// Labels interned once, entered without hashing or comparing strings: for
/// a hot loop where even [`with_labels`]' cache lookup shows. Cheap to copy.
///
/// ```
/// let set = heapprof::LabelSet::new(&[("job", "compaction")]);
/// for _ in 0..3 {
///     set.run(|| drop(vec![0u8; 64]));
/// }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LabelSet {
    id: u32,
}

impl LabelSet {
    /// `labels` added to the calling thread's current label set.
    pub fn new(labels: &[(&str, &str)]) -> LabelSet {
        LabelSet {
            id: child(current(), labels),
        }
    }

    /// Runs `f` with exactly this set as the thread's label set (replacing
    /// the current one, as a [`labeled`] future's poll does), restoring the
    /// previous set afterwards (also when unwinding).
    pub fn run<R>(&self, f: impl FnOnce() -> R) -> R {
        let _scope = Scope::enter(thread_state::current(), self.id);
        f()
    }

    /// `fut`, with exactly this set during each of its polls (as
    /// [`labeled`], without interning the labels again).
    pub fn wrap<F: Future>(&self, fut: F) -> Labeled<F> {
        Labeled {
            labels: self.id,
            fut,
        }
    }
}

/// A future whose every `poll` runs with a label set, on whatever thread
/// polls it (see [`labeled`]).
#[must_use = "futures do nothing unless polled"]
pub struct Labeled<F> {
    labels: u32,
    fut: F,
}

/// Wraps `fut` so that `labels` apply during each of its polls, on whatever
/// thread polls it (async runtimes move tasks between threads). The labels
/// are added to the set active where `labeled` is called, and replace the
/// polling thread's own set while the future runs. `Send` when `F` is: the
/// wrapper keeps an interned id, not the strings.
///
/// ```
/// # async fn handle() {}
/// let task = heapprof::labeled(&[("route", "/users")], handle());
/// # drop(task);
/// ```
pub fn labeled<F: Future>(labels: &[(&str, &str)], fut: F) -> Labeled<F> {
    Labeled {
        labels: child(current(), labels),
        fut,
    }
}

impl<F: Future> Future for Labeled<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let labels = self.labels;
        // SAFETY: structural pinning of `fut`: it is never moved out of a
        // pinned `Labeled` (no method hands it out by value, and `Labeled`
        // has no `Drop` impl), so pinning the wrapper pins the future.
        let fut = unsafe { self.map_unchecked_mut(|s| &mut s.fut) };
        let _scope = Scope::enter(thread_state::current(), labels);
        fut.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(id: u32) -> Vec<(String, String)> {
        pairs(id)
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn owned(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn short_string_comparison_is_exact() {
        let mut rng = crate::engine::sampler::Rng::new(7);
        for _ in 0..20_000 {
            let r = rng.next_u64();
            let n = (r % 20) as usize;
            let a: String = (0..n)
                .map(|i| (b'a' + ((r >> i) & 1) as u8) as char)
                .collect();
            let mut b = a.clone().into_bytes();
            if n > 0 && r & (1 << 40) != 0 {
                let i = (r >> 44) as usize % n;
                b[i] = if b[i] == b'a' { b'b' } else { b'a' };
            }
            let b = String::from_utf8(b).unwrap();
            assert_eq!(same_str(&a, &b), a == b, "{a:?} {b:?}");
            assert!(!same_str(&a, &format!("{a}x")));
        }
    }

    #[test]
    fn nesting_merges_and_overrides_by_key() {
        let a = child(NONE, &[("route", "/a"), ("tenant", "t1")]);
        assert_eq!(shown(a), owned(&[("route", "/a"), ("tenant", "t1")]));
        let b = child(a, &[("tenant", "t2"), ("kind", "x")]);
        assert_eq!(
            shown(b),
            owned(&[("kind", "x"), ("route", "/a"), ("tenant", "t2")])
        );
        // The same content by another path is the same set.
        let c = child(NONE, &[("tenant", "t2"), ("route", "/a"), ("kind", "x")]);
        assert_eq!(b, c);
        // A later pair of one call overrides an earlier one.
        let d = child(NONE, &[("k", "1"), ("k", "2")]);
        assert_eq!(shown(d), owned(&[("k", "2")]));
        assert_eq!(child(a, &[]), a);
        assert_eq!(child(a, &[("route", "/a")]), a);
        assert_eq!(child(a, &[("route", ""), ("tenant", "")]), NONE);
    }

    #[test]
    fn repeated_scopes_hit_the_cache_and_survive_eviction() {
        let ids: Vec<u32> = (0..100)
            .map(|i| child(NONE, &[("route", &format!("/r{i}"))]))
            .collect();
        for (i, &id) in ids.iter().enumerate() {
            assert_eq!(child(NONE, &[("route", &format!("/r{i}"))]), id);
            assert_eq!(shown(id), owned(&[("route", &format!("/r{i}"))]));
        }
    }

    #[test]
    fn scopes_restore_on_exit_and_on_panic() {
        assert_eq!(current(), NONE);
        let inner = with_labels(&[("a", "1")], || {
            let outer = current();
            let r = std::panic::catch_unwind(|| with_labels(&[("b", "2")], || panic!("boom")));
            assert!(r.is_err());
            assert_eq!(current(), outer);
            with_labels(&[("b", "2")], current)
        });
        assert_eq!(shown(inner), owned(&[("a", "1"), ("b", "2")]));
        assert_eq!(current(), NONE);
    }
}
