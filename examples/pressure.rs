//! Allocation churn over a small live set, for tests/memory_pressure.rs: run
//! under an address-space limit (`ulimit -v`) at which it runs fine without
//! profiling, it must behave the same with heapprof: same output, same exit
//! status (3).

use std::alloc::System;
use std::hint::black_box;

#[global_allocator]
static GLOBAL: heapprof::Profiler<System> = heapprof::Profiler::new(System);

#[inline(never)]
fn make(n: usize, seed: u8) -> Vec<u8> {
    black_box(vec![seed; n])
}

fn main() {
    const LIVE: usize = 512;
    let mut live: Vec<Vec<u8>> = (0..LIVE).map(|_| Vec::new()).collect();
    let mut sum: u64 = 0;
    for i in 0..200_000usize {
        let v = make(16 + (i * 37) % 2000, (i & 0x7f) as u8);
        sum += u64::from(v[0]);
        live[i % LIVE] = v;
    }
    drop(live);
    println!("checksum {sum}");
    std::process::exit(3);
}
