//! A long-running service with heap labels, for `heapprof report`'s
//! per-label split and the `/metrics` endpoint: requests run under
//! `route` and `tenant` labels; `/users` keeps every request's entry for
//! good (the leak, in `remember_user`), `/orders` keeps a bounded working
//! set of recent orders that it keeps replacing (churn, flat in use, in
//! `replace_order`).
//!
//! ```text
//! HEAPPROF_INTERVAL=1 HEAPPROF_OUT=/tmp/svc cargo run --example label_service -- --seconds 30
//! heapprof report /tmp/svc.*.pb.gz -o report.html
//! HEAPPROF_HTTP=6060 cargo run --example label_service -- --seconds 60
//! curl -s 127.0.0.1:6060/metrics
//! ```
//! `--seconds S` (10) how long to serve, `--tick-ms T` (5) between
//! requests, `--bytes B` (2000) per `/users` entry. Prints `pid N` first,
//! `done` at the end.

use std::alloc::System;
use std::collections::VecDeque;
use std::hint::black_box;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: heapprof::Profiler<System> = heapprof::Profiler::new(System);

/// The leak: one entry per `/users` request, never freed.
#[inline(never)]
fn remember_user(users: &mut Vec<Box<[u8]>>, id: usize, bytes: usize) {
    users.push(vec![id as u8; bytes].into_boxed_slice());
}

/// Churn: the newest `KEPT` orders, the oldest freed as each arrives.
#[inline(never)]
fn replace_order(orders: &mut VecDeque<Box<[u8]>>, id: usize, bytes: usize) {
    const KEPT: usize = 64;
    orders.push_back(vec![id as u8; bytes].into_boxed_slice());
    if orders.len() > KEPT {
        black_box(orders.pop_front());
    }
}

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seconds: f64 = arg(&args, "--seconds", 10.0);
    let tick = Duration::from_millis(arg(&args, "--tick-ms", 5));
    let bytes: usize = arg(&args, "--bytes", 2000);
    println!("pid {}", std::process::id());
    let mut users: Vec<Box<[u8]>> = Vec::with_capacity(1 << 16);
    let mut orders: VecDeque<Box<[u8]>> = VecDeque::with_capacity(128);
    let tenants = ["acme", "globex"];
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(seconds);
    let mut next = start;
    let mut id = 0usize;
    while Instant::now() < end {
        let tenant = tenants[id % tenants.len()];
        heapprof::with_labels(&[("route", "/users"), ("tenant", tenant)], || {
            remember_user(&mut users, id, bytes)
        });
        heapprof::with_labels(&[("route", "/orders"), ("tenant", tenant)], || {
            // Four orders per user: more allocated, none of it kept.
            for k in 0..4 {
                replace_order(&mut orders, id * 4 + k, bytes * 4);
            }
        });
        id += 1;
        next += tick;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    black_box((&users, &orders));
    println!("done");
}
