//! Large-buffer requests under `Profiler<System>`, the Rust form of
//! `scripts/bench-programs/large_requests.c` (see `scripts/bench-large.sh`
//! and `tests/large_samples.rs`); `large_requests_bare` is the same program
//! under `System` alone.
//!
//! ```text
//! large_requests N
//! ```
//! N requests: a `Vec<u8>` is grown as pushes grow it (its capacity
//! doubling from 64 KiB) to a size of 256 KiB-2 MiB (a fixed pseudo-random
//! stream), then once more to twice that, one byte in 512 written (every
//! page touched, as a filler would), and dropped. Prints a checksum. The
//! rate and dumps come from the `HEAPPROF_*` variables.

#[global_allocator]
static GLOBAL: heapprof::Profiler<std::alloc::System> = heapprof::Profiler::new(std::alloc::System);

include!("common/large_requests_body.rs");
