//! Heap labels in a small request-serving program: which route holds the
//! memory. Each request runs under `heapprof::with_labels(&[("route", …)])`
//! on a pool thread; a background task runs as a `heapprof::labeled` future
//! polled by a hand-written executor (as an async runtime would, from any
//! thread). `/users` keeps a per-request entry in a cache that never shrinks
//! (the leak to find); `/orders` only churns; `/health` allocates nothing
//! that stays.
//!
//! ```text
//! HEAPPROF_RATE=1 HEAPPROF_LABELS=service=demo cargo run --example labels -- --dump heap.pb.gz
//! heapprof top heap.pb.gz --by route
//! go tool pprof -top -tagfocus=route=/users heap.pb.gz
//! ```
//! Prints one line per route: `route=/users requests=N`.

use std::alloc::System;
use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::sync::{mpsc, Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

#[global_allocator]
static GLOBAL: heapprof::Profiler<System> = heapprof::Profiler::new(System);

/// Kept for the life of the process: what `/users` never gives back.
static USER_CACHE: Mutex<Vec<Box<[u8]>>> = Mutex::new(Vec::new());

#[inline(never)]
fn users(id: usize) {
    let entry = vec![id as u8; 1000].into_boxed_slice();
    USER_CACHE.lock().unwrap().push(entry);
}

#[inline(never)]
fn orders(id: usize) {
    let scratch = vec![id as u8; 4000];
    black_box(&scratch);
}

#[inline(never)]
fn health() {
    black_box(String::from("ok"));
}

/// Request `id` of `route`, under its label.
fn serve(route: &'static str, id: usize) {
    heapprof::with_labels(&[("route", route)], || match route {
        "/users" => users(id),
        "/orders" => orders(id),
        _ => health(),
    });
}

/// A background task: a few polls, one buffer kept per poll.
struct Refresh {
    polls: usize,
    kept: Vec<Vec<u8>>,
}

#[inline(never)]
fn refresh_step(kept: &mut Vec<Vec<u8>>) {
    kept.push(vec![0u8; 500]);
}

impl Future for Refresh {
    type Output = Vec<Vec<u8>>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        refresh_step(&mut this.kept);
        this.polls -= 1;
        if this.polls == 0 {
            Poll::Ready(std::mem::take(&mut this.kept))
        } else {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

struct Noop;
impl Wake for Noop {
    fn wake(self: Arc<Self>) {}
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dump = args
        .iter()
        .position(|a| a == "--dump")
        .and_then(|i| args.get(i + 1).cloned());
    let plan: [(&'static str, usize); 3] = [("/users", 30), ("/orders", 20), ("/health", 10)];
    // Room up front, so the cache's own growth does not blur the numbers.
    USER_CACHE.lock().unwrap().reserve(64);

    // Requests on two pool threads, each request under its route's label.
    let (tx, rx) = mpsc::channel::<(&'static str, usize)>();
    let rx = Arc::new(Mutex::new(rx));
    let pool: Vec<_> = (0..2)
        .map(|_| {
            let rx = rx.clone();
            std::thread::spawn(move || loop {
                let next = rx.lock().unwrap().recv();
                match next {
                    Ok((route, id)) => serve(route, id),
                    Err(_) => break,
                }
            })
        })
        .collect();
    for &(route, n) in &plan {
        for id in 0..n {
            tx.send((route, id)).unwrap();
        }
    }
    drop(tx);
    for t in pool {
        t.join().unwrap();
    }

    // A labeled background task, polled from alternating threads.
    let mut task = Box::pin(heapprof::labeled(
        &[("route", "/refresh")],
        Refresh {
            polls: 4,
            kept: Vec::with_capacity(8),
        },
    ));
    let kept = loop {
        let polled = std::thread::spawn(move || {
            let waker = Waker::from(Arc::new(Noop));
            let r = task.as_mut().poll(&mut Context::from_waker(&waker));
            (task, r)
        });
        let (t, r) = polled.join().unwrap();
        task = t;
        if let Poll::Ready(kept) = r {
            break kept;
        }
    };

    for &(route, n) in &plan {
        println!("route={route} requests={n}");
    }
    if let Some(path) = dump {
        heapprof::dump_to(&path).expect("write the profile");
    }
    black_box(kept);
}
