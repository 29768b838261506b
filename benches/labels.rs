//! What a label scope costs: entering and leaving `heapprof::with_labels`
//! or a pre-interned `heapprof::LabelSet`, and polling a `heapprof::labeled` future, on a thread that has seen the
//! labels before (the per-thread cache hit, the steady state of a server),
//! and the first sight of new labels (a global intern).
//!
//! ```text
//! cargo bench --bench labels
//! ```
//! The unsampled allocation and free paths do not read labels at all (see
//! `src/engine/labels.rs`); `benches/alloc.rs` measures them.

use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use criterion::{criterion_group, Criterion};

struct Noop;
impl Wake for Noop {
    fn wake(self: Arc<Self>) {}
}

/// A future that never finishes, so it can be polled any number of times.
struct Forever;
impl Future for Forever {
    type Output = ();
    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        Poll::Pending
    }
}

fn scope(c: &mut Criterion) {
    let mut g = c.benchmark_group("labels");
    let one = [("route", "/api/v1/users/:id")];
    let two = [("route", "/api/v1/users/:id"), ("tenant", "acme-corp")];
    g.bench_function("with_labels/1_pair", |b| {
        b.iter(|| heapprof::with_labels(black_box(&one), || black_box(1)))
    });
    g.bench_function("with_labels/2_pairs", |b| {
        b.iter(|| heapprof::with_labels(black_box(&two), || black_box(1)))
    });
    g.bench_function("with_labels/nested_2_levels", |b| {
        b.iter(|| {
            heapprof::with_labels(black_box(&[("tenant", "acme-corp")]), || {
                heapprof::with_labels(black_box(&one), || black_box(1))
            })
        })
    });
    let set = heapprof::LabelSet::new(&two);
    g.bench_function("label_set/run", |b| b.iter(|| set.run(|| black_box(1))));
    let waker = Waker::from(Arc::new(Noop));
    let mut task = Box::pin(heapprof::labeled(&two, Forever));
    g.bench_function("labeled/poll", |b| {
        b.iter(|| {
            let mut cx = Context::from_waker(&waker);
            black_box(task.as_mut().poll(&mut cx))
        })
    });
    g.bench_function("labeled/create_2_pairs", |b| {
        b.iter(|| black_box(heapprof::labeled(black_box(&two), Forever)))
    });
    // New labels every time: the global interner (mutex, copy, hash tables).
    let mut n = 0u64;
    let mut name = String::with_capacity(32);
    g.bench_function("with_labels/new_value_each_time", |b| {
        b.iter(|| {
            use std::fmt::Write;
            name.clear();
            let _ = write!(name, "tenant-{n}");
            n += 1;
            heapprof::with_labels(&[("tenant", name.as_str())], || black_box(1))
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = scope
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
