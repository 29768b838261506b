//! Large-buffer requests under `Profiler<System>`, the Rust form of
//! `scripts/bench-programs/large_requests.c` (see `scripts/bench-large.sh`
//! and `tests/large_samples.rs`).
//!
//! ```text
//! large_requests N
//! ```
//! N requests: a `Vec<u8>` is grown as pushes grow it (its capacity
//! doubling from 64 KiB) to a size of 256 KiB-2 MiB (a fixed pseudo-random
//! stream), then once more to twice that, one byte in 512 written (every
//! page touched, as a filler would), and dropped. Prints a checksum. The
//! rate and dumps come from the `HEAPPROF_*` variables.

use heapprof::Profiler;
use std::alloc::System;
use std::mem::MaybeUninit;

#[global_allocator]
static GLOBAL: Profiler<System> = Profiler::new(System);

/// Grows `v` to `len` bytes the way pushes would (doubling), writing one
/// byte in 512 of what is added.
fn grow(v: &mut Vec<MaybeUninit<u8>>, len: usize) -> u64 {
    let mut sum = 0;
    while v.len() < len {
        let to = (v.capacity().max(64 << 10) * 2).min(len);
        v.reserve(to - v.len());
        let from = v.len();
        for i in (from..to).step_by(512) {
            v.spare_capacity_mut()[i - from].write(MaybeUninit::new(i as u8));
            sum += (i as u8) as u64;
        }
        // SAFETY: capacity for `to` elements was reserved, and a
        // `MaybeUninit` needs no initialisation.
        unsafe { v.set_len(to) };
    }
    sum
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    let mut x: u64 = 88172645463325252;
    let mut sum = 0u64;
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let size = (256 << 10) + (x as usize) % ((2 << 20) - (256 << 10));
        let mut v: Vec<MaybeUninit<u8>> = Vec::new();
        sum += grow(&mut v, size);
        sum += grow(&mut v, 2 * size);
        std::hint::black_box(&v);
    }
    println!("requests {n} checksum {sum}");
}
