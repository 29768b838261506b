//! A Rust program with an allocator of its own, mimalloc, as its global
//! allocator: its allocations never reach `malloc`, so under the preload
//! library (`heapprof run`) heapprof sees none of them. It keeps 64 MiB
//! (written, so resident) until it exits; tests/own_allocator.rs checks that
//! heapprof says the memory is unseen and names the fix, rather than calling
//! the program clean.

#[global_allocator]
static A: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let kept: Vec<Vec<u8>> = (0..64).map(|i| vec![i as u8 | 1; 1 << 20]).collect();
    let sum: u64 = kept.iter().map(|v| u64::from(v[4096])).sum();
    println!("kept {} MiB ({sum})", kept.len());
    std::mem::forget(kept);
}
