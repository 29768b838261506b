//! `large_requests` (see there) under `System` alone: the bare side of
//! `scripts/bench-large.sh`.

#[global_allocator]
static GLOBAL: std::alloc::System = std::alloc::System;

include!("common/large_requests_body.rs");
