//! `http_service` (see there) under `System` alone: the bare side of
//! `scripts/bench-http.sh`.

#[global_allocator]
static GLOBAL: std::alloc::System = std::alloc::System;

include!("common/http_service_body.rs");
