//! A small HTTP service under `Profiler<System>` for the load test of
//! `scripts/bench-http.sh` (see `examples/common/http_service_body.rs`);
//! `http_service_bare` is the same service under `System` alone.
//!
//! ```text
//! http_service [ADDR]     # prints `listening ADDR`; GET / and GET /report
//! ```

#[global_allocator]
static GLOBAL: heapprof::Profiler<std::alloc::System> = heapprof::Profiler::new(std::alloc::System);

include!("common/http_service_body.rs");
