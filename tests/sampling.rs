//! At the default rate the scaled estimates must be unbiased: in the manner
//! of Go's heap-sampling test, several call sites allocate interleaved sizes
//! many times and each site's estimate must fall within ±10% of the truth.
//! The sampler is seeded, so the result is reproducible, and each site gets
//! thousands of samples, so ±10% is many standard errors wide.

mod common;

use std::alloc::System;
use std::hint::black_box;

#[global_allocator]
static GLOBAL: heapprof::Profiler<System> = heapprof::Profiler::new(System);

const ROUNDS: usize = 40_000;

#[inline(never)]
fn site_small(keep: &mut Vec<Vec<u8>>, i: usize) {
    let v = black_box(vec![0u8; 1024]);
    if i % 4 == 0 {
        keep.push(v);
    }
}

#[inline(never)]
fn site_medium(keep: &mut Vec<Vec<u8>>, i: usize) {
    let v = black_box(vec![0u8; 24 * 1024]);
    if i % 4 == 0 {
        keep.push(v);
    }
}

#[inline(never)]
fn site_large(keep: &mut Vec<Vec<u8>>, i: usize) {
    if i % 8 == 0 {
        let v = black_box(vec![0u8; 400 * 1024]);
        if i % 32 == 0 {
            keep.push(v);
        }
    }
}

/// One site, many sizes: unbiased only because buckets are keyed by size.
#[inline(never)]
fn site_mixed(keep: &mut Vec<Vec<u8>>, i: usize) {
    let size = [64, 3000, 17_000, 90_000][i % 4];
    let v = black_box(vec![0u8; size]);
    if i % 3 == 0 {
        keep.push(v);
    }
}

fn within(name: &str, what: &str, estimate: u64, truth: u64) {
    let ratio = estimate as f64 / truth as f64;
    assert!(
        (0.9..=1.1).contains(&ratio),
        "{name} {what}: estimate {estimate}, truth {truth}, ratio {ratio:.3}"
    );
}

#[test]
fn estimates_are_within_ten_percent_per_site() {
    heapprof::Config::default()
        .rate(512 * 1024)
        .seed(20261121)
        .install();
    let mut keep = Vec::with_capacity(4 * ROUNDS);
    let mut truth = std::collections::HashMap::<&str, [u64; 2]>::new();
    let mut add = |k: &'static str, alloc: u64, live: u64| {
        let t = truth.entry(k).or_default();
        t[0] += alloc;
        t[1] += live;
    };
    for i in 0..ROUNDS {
        site_small(&mut keep, i);
        add("site_small", 1024, if i % 4 == 0 { 1024 } else { 0 });
        site_medium(&mut keep, i);
        add(
            "site_medium",
            24 * 1024,
            if i % 4 == 0 { 24 * 1024 } else { 0 },
        );
        site_large(&mut keep, i);
        if i % 8 == 0 {
            add(
                "site_large",
                400 * 1024,
                if i % 32 == 0 { 400 * 1024 } else { 0 },
            );
        }
        site_mixed(&mut keep, i);
        let size = [64, 3000, 17_000, 90_000][i % 4];
        add("site_mixed", size, if i % 3 == 0 { size } else { 0 });
    }
    let tallies = heapprof::tallies();
    for (name, [alloc, live]) in &truth {
        let mut est = [0u64; 2];
        for t in tallies
            .iter()
            .filter(|t| t.frames.first().is_some_and(|f| f.function.contains(name)))
        {
            est[0] += t.alloc_space;
            est[1] += t.inuse_space;
        }
        within(name, "alloc_space", est[0], *alloc);
        within(name, "inuse_space", est[1], *live);
    }
    black_box(keep);
}
