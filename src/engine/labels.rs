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
//! [`ThreadState`]: crate::thread_state::ThreadState

use core::cell::Cell;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::{Mutex, MutexGuard};

use hashbrown::HashTable;

use crate::thread_state::{self, ThreadState};

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
}

static INTERNER: Mutex<Option<Interner>> = Mutex::new(None);

/// The interner's lock (poisoning ignored: nothing panics midway through an
/// update). Taken only at label API calls and when a profile is written,
/// always with the calling thread busy; never by a hook.
pub(crate) fn lock() -> MutexGuard<'static, Option<Interner>> {
    INTERNER.lock().unwrap_or_else(|e| e.into_inner())
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
            .all(|((ak, av), (bk, bv))| **ak == **bk && **av == **bv)
}

/// A fast non-cryptographic hash of (parent, pairs), 8 bytes a round; only
/// for choosing a cache slot (collisions just evict, content is compared).
fn quick_hash(parent: u32, pairs: &[(&str, &str)]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h = u64::from(parent).wrapping_mul(K);
    let mut mix = |s: &str| {
        let b = s.as_bytes();
        h = (h.rotate_left(5) ^ b.len() as u64).wrapping_mul(K);
        let mut chunks = b.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
        }
    };
    for (k, v) in pairs {
        mix(k);
        mix(v);
    }
    h ^ (h >> 29)
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
        id
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
