//! Under `Profiler<System>` every allocation of `heapprof::engine::LARGE`
//! bytes or more lives in heapprof's sample heap, sampled or not: such
//! blocks keep their contents through `realloc` growing and shrinking them
//! (down to a small size, which goes back to `System`), a zeroed one reads
//! as zero in reused memory, and a small block grown large moves there. At
//! rate 1 the profile still counts exactly what was allocated. (The
//! preload library's side: tests/large_samples.rs.)

use std::alloc::System;
use std::hint::black_box;

use heapprof::engine::{owns, LARGE};
use heapprof::Profiler;

mod common;
use common::totals;

#[global_allocator]
static GLOBAL: Profiler<System> = Profiler::new(System);

fn fill(v: &mut Vec<u8>, to: usize, seed: usize) {
    for i in v.len()..to {
        v.push((i * 31 + seed) as u8);
    }
}

fn expect(v: &[u8], seed: usize, what: &str) {
    for (i, &b) in v.iter().enumerate() {
        assert_eq!(b, (i * 31 + seed) as u8, "{what}: byte {i} of {}", v.len());
    }
}

/// Allocates, resizes and frees large blocks every way a Rust program does;
/// returns (large blocks seen, how many of them lay in the sample heap).
fn churn(rate: u64, seed: usize) -> (usize, usize) {
    let (mut seen, mut ours) = (0, 0);
    let mut note = |p: *const u8| {
        seen += 1;
        ours += usize::from(owns(p));
    };
    for &n in &[LARGE, 200 << 10, 1 << 20, 3 << 20] {
        let mut v: Vec<u8> = Vec::with_capacity(n);
        note(v.as_ptr());
        fill(&mut v, n, seed);
        v.reserve_exact(2 * n);
        note(v.as_ptr());
        expect(&v, seed, "grown");
        fill(&mut v, 3 * n, seed);
        v.truncate(n / 2);
        v.shrink_to_fit();
        note(v.as_ptr());
        expect(&v, seed, "shrunk");
        v.truncate(1000);
        v.shrink_to_fit();
        if rate == 0 {
            // (Sampled, as at rate 1, it would be a small sample.)
            assert!(!owns(v.as_ptr()), "a small block goes back to System");
        }
        expect(&v, seed, "small");
        drop(v);

        // Zeroed, in memory just freed dirty.
        drop(black_box(vec![0xa5u8; n]));
        let z = vec![0u8; n];
        note(z.as_ptr());
        assert!(z.iter().all(|&b| b == 0), "zeroed block of {n}");
        drop(z);

        // A small block grown large.
        let mut s: Vec<u8> = Vec::with_capacity(1000);
        fill(&mut s, 1000, seed + 1);
        s.reserve_exact(n);
        note(s.as_ptr());
        expect(&s, seed + 1, "grown from small");
    }
    (seen, ours)
}

#[inline(never)]
fn leak_grown_large() {
    let mut v: Vec<u8> = Vec::with_capacity(300 << 10);
    v.reserve_exact(600 << 10);
    std::mem::forget(black_box(v));
}

#[inline(never)]
fn leak_grown_from_small() {
    let mut v: Vec<u8> = Vec::with_capacity(1000);
    v.reserve_exact(400 << 10);
    std::mem::forget(black_box(v));
}

#[test]
fn large_blocks_live_in_the_sample_heap_at_every_rate_and_count_exactly_at_rate_1() {
    for (rate, seed) in [(0, 1), (heapprof::control::config::DEFAULT_RATE, 2), (1, 3)] {
        heapprof::set_rate(rate);
        let (seen, ours) = churn(rate, seed);
        assert_eq!(
            ours, seen,
            "rate {rate}: large blocks outside the sample heap"
        );
    }
    heapprof::set_rate(1);
    leak_grown_large();
    leak_grown_from_small();
    let t = heapprof::tallies();
    assert_eq!(totals(&t, "leak_grown_large"), [2, 900 << 10, 1, 600 << 10]);
    assert_eq!(
        totals(&t, "leak_grown_from_small"),
        [2, 1000 + (400 << 10), 1, 400 << 10]
    );
}
