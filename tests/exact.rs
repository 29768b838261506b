//! At rate 1 every allocation is recorded and nothing is scaled: the profile
//! must match what the test allocated, byte for byte, stack by stack.

use std::alloc::System;
use std::hint::black_box;
use std::sync::mpsc;

use heapprof::{Profiler, StackTally};

#[global_allocator]
static GLOBAL: Profiler<System> = Profiler::new(System);

/// Sums the tallies of every stack whose leaf (after heapprof trims the
/// allocator's own frames) is `function`.
fn totals(tallies: &[StackTally], function: &str) -> [u64; 4] {
    let mut t = [0; 4];
    let at_leaf = |s: &&StackTally| {
        s.frames
            .first()
            .is_some_and(|f| f.function.contains(function))
    };
    for s in tallies.iter().filter(at_leaf) {
        t[0] += s.alloc_objects;
        t[1] += s.alloc_space;
        t[2] += s.inuse_objects;
        t[3] += s.inuse_space;
    }
    t
}

#[inline(never)]
fn leak_boxes() {
    for _ in 0..10 {
        Box::leak(Box::new([7u8; 1000]));
    }
}

#[inline(never)]
fn keep_vectors(keep: &mut Vec<Vec<u8>>) {
    for i in 0..5 {
        keep.push(Vec::with_capacity(3000 + i));
    }
}

#[inline(never)]
fn forget_large_buffers() {
    for _ in 0..3 {
        std::mem::forget(black_box(vec![0u8; 1 << 20]));
    }
}

#[inline(never)]
fn leak_from_exiting_thread() {
    for _ in 0..7 {
        Box::leak(vec![1u8; 500].into_boxed_slice());
    }
}

#[inline(never)]
fn churn_allocate(n: usize, tx: mpsc::Sender<Box<[u8; 256]>>) {
    for _ in 0..n {
        tx.send(Box::new([3u8; 256])).unwrap();
    }
}

#[test]
fn leaks_are_exact_per_function() {
    heapprof::set_rate(1);
    leak_boxes();
    let mut keep = Vec::with_capacity(16);
    keep_vectors(&mut keep);
    forget_large_buffers();
    std::thread::spawn(leak_from_exiting_thread).join().unwrap();

    let t = heapprof::tallies();
    assert_eq!(totals(&t, "leak_boxes"), [10, 10_000, 10, 10_000]);
    let kept = 3000 + 3001 + 3002 + 3003 + 3004;
    assert_eq!(totals(&t, "keep_vectors"), [5, kept, 5, kept]);
    assert_eq!(totals(&t, "forget_large_buffers"), [3, 3 << 20, 3, 3 << 20]);
    assert_eq!(totals(&t, "leak_from_exiting_thread"), [7, 3500, 7, 3500]);
    drop(keep);
    let t = heapprof::tallies();
    assert_eq!(totals(&t, "keep_vectors"), [5, kept, 0, 0]);
}

#[test]
fn cross_thread_churn_leaves_nothing_in_use() {
    heapprof::set_rate(1);
    let (tx, rx) = mpsc::channel();
    let freer = std::thread::spawn(move || {
        for b in rx {
            drop(black_box(b));
        }
    });
    let producer = std::thread::spawn(move || churn_allocate(5000, tx));
    producer.join().unwrap();
    freer.join().unwrap();
    let t = heapprof::tallies();
    assert_eq!(totals(&t, "churn_allocate"), [5000, 5000 * 256, 0, 0]);
}

#[inline(never)]
fn grow_by_realloc() -> Vec<u8> {
    let mut v = Vec::with_capacity(1);
    for i in 0..10_000u32 {
        v.push(i as u8);
    }
    v.shrink_to_fit();
    v
}

#[test]
fn realloc_is_a_free_and_an_alloc() {
    heapprof::set_rate(1);
    let v = grow_by_realloc();
    let t = heapprof::tallies();
    let [allocs, _, live, live_bytes] = totals(&t, "grow_by_realloc");
    // Doubling from 1 to 16384 then shrinking: 16 allocations, one live.
    assert!(allocs > 10, "{allocs}");
    assert_eq!((live, live_bytes), (1, 10_000));
    drop(v);
}
