//! What `heapprof::Profiler<System>` adds to an allocation, next to `System`
//! alone, at the default rate and with sampling off.
//!
//! ```text
//! cargo bench --bench alloc                     # everything, ~2 minutes
//! cargo bench --bench alloc -- pair_1t/         # one group
//! cargo bench --bench alloc -- 'pair_1t/.*/64$' # one size, all variants
//! ```
//!
//! Groups:
//! - `pair_1t/<variant>/<size>`: one `alloc` + `dealloc` pair on one thread;
//! - `pair_2t/<variant>/<size>`: the same pair on two threads at once, each
//!   doing the whole batch; the time is wall time per pair per thread;
//! - `churn_1t/<variant>`: replace a random live block of a random size
//!   (log-uniform over 16 B..8 KiB) in a working set of 4096 blocks;
//! - `sampled_path/rate_1/64`: rate 1, so every pair takes the sampled path
//!   (stack capture, record, live table): the price of one sample, from
//!   which the amortised cost at any rate and size follows (about
//!   `size / rate` of it per allocation).
//!
//! Variants: `system` (`System` alone), `profiler_default_rate` (one sample
//! per 512 KiB on average: small sizes are rarely sampled, large ones often,
//! and that mix is the real cost) and `profiler_off` (rate 0: the hot path
//! only, no samples).
//!
//! The allocators are called directly through `GlobalAlloc` on statics rather
//! than installed with `#[global_allocator]`, so criterion's own allocations
//! neither go through the profiler nor move its countdown: the countdown sees
//! exactly the bytes the measured loop allocates.
//!
//! Speed targets (within 2 ns of the bare pair, within 5% on churn) are
//! checked by reading these numbers, never asserted in timed unit tests.
//! For an interleaved A/B of a multi-threaded program run, see
//! `scripts/bench-rust.sh`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{criterion_group, BenchmarkId, Criterion};
use heapprof::config::DEFAULT_RATE;
use heapprof::Profiler;

static PROFILER: Profiler<System> = Profiler::new(System);

const SIZES: [usize; 6] = [16, 64, 256, 1024, 4096, 65536];
const SIZES_2T: [usize; 3] = [16, 256, 4096];
const THREADS: usize = 2;

#[derive(Clone, Copy)]
enum Variant {
    System,
    ProfilerDefaultRate,
    ProfilerOff,
}

const VARIANTS: [Variant; 3] = [
    Variant::System,
    Variant::ProfilerDefaultRate,
    Variant::ProfilerOff,
];

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::System => "system",
            Variant::ProfilerDefaultRate => "profiler_default_rate",
            Variant::ProfilerOff => "profiler_off",
        }
    }

    /// Sets the global rate. It applies to the calling thread at once and to
    /// threads spawned afterwards from their first allocation, which is every
    /// thread the benches allocate on.
    fn set_rate(self) {
        match self {
            Variant::System | Variant::ProfilerDefaultRate => heapprof::set_rate(DEFAULT_RATE),
            Variant::ProfilerOff => heapprof::set_rate(0),
        }
    }
}

/// Runs `f` with the variant's allocator as a concrete type, so each loop is
/// monomorphised and `Profiler`'s inline hot path is inlined into it, as it
/// would be under `#[global_allocator]`.
macro_rules! with_allocator {
    ($variant:expr, |$a:ident| $body:expr) => {
        match $variant {
            Variant::System => {
                let $a = &System;
                $body
            }
            Variant::ProfilerDefaultRate | Variant::ProfilerOff => {
                let $a = &PROFILER;
                $body
            }
        }
    };
}

/// `n` alloc + free pairs of `layout` through `a`.
#[inline(always)]
fn pairs<A: GlobalAlloc>(a: &A, layout: Layout, n: u64) {
    for _ in 0..n {
        // black_box on the layout keeps the size a run-time value for both
        // arms; black_box on the pointer stops LLVM from deleting the
        // malloc/free pair as unused.
        let l = black_box(layout);
        // SAFETY: `l` has a nonzero size; the block is freed with the same
        // layout through the same allocator, and not used otherwise.
        unsafe {
            let p = a.alloc(l);
            black_box(p);
            a.dealloc(p, l);
        }
    }
}

fn pair_1t(c: &mut Criterion) {
    let mut g = c.benchmark_group("pair_1t");
    for size in SIZES {
        let layout = Layout::from_size_align(size, 8).unwrap();
        for v in VARIANTS {
            g.bench_with_input(BenchmarkId::new(v.name(), size), &layout, |b, &l| {
                v.set_rate();
                with_allocator!(v, |a| b.iter(|| pairs(a, l, 1)))
            });
        }
    }
    g.finish();
}

/// Wall time for `THREADS` threads each doing `iters` pairs, from the moment
/// all are released together to the moment the last one finishes. Thread
/// start-up and join are outside the timed span.
fn timed_threads(iters: u64, work: impl Fn(u64) + Sync) -> Duration {
    let ready = Barrier::new(THREADS + 1);
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..THREADS)
            .map(|_| {
                s.spawn(|| {
                    // One untimed pair first: a fresh thread's first profiled
                    // allocation draws its countdown on the slow path.
                    work(1);
                    ready.wait();
                    let t0 = Instant::now();
                    work(iters);
                    (t0, Instant::now())
                })
            })
            .collect();
        ready.wait();
        let spans: Vec<(Instant, Instant)> = hs.into_iter().map(|h| h.join().unwrap()).collect();
        let start = spans.iter().map(|s| s.0).min().unwrap();
        let end = spans.iter().map(|s| s.1).max().unwrap();
        end - start
    })
}

fn pair_2t(c: &mut Criterion) {
    let mut g = c.benchmark_group("pair_2t");
    for size in SIZES_2T {
        let layout = Layout::from_size_align(size, 8).unwrap();
        for v in VARIANTS {
            g.bench_with_input(BenchmarkId::new(v.name(), size), &layout, |b, &l| {
                v.set_rate();
                with_allocator!(v, |a| b
                    .iter_custom(|iters| timed_threads(iters, |n| pairs(a, l, n))))
            });
        }
    }
    g.finish();
}

/// xorshift64: a fixed-seed stream, identical for every variant.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// Log-uniform over 16 B..8 KiB: an octave 16<<k (k in 0..9) chosen
/// uniformly, then a uniform size within it. Mean about 1.4 KiB, so one
/// allocation in ~380 is sampled at the default rate.
fn churn_layout(rng: &mut XorShift) -> Layout {
    let r = rng.next();
    let base = 16usize << (r % 9);
    let size = base + ((r >> 8) as usize % base);
    Layout::from_size_align(size, 8).unwrap()
}

const CHURN_SLOTS: usize = 4096;

/// A working set of `CHURN_SLOTS` blocks; `ops` times, frees a random one and
/// allocates a new block of a random size in its place (touching its first
/// byte, as a program initialising it would). Returns the time of the
/// replacements only; filling and emptying the set is untimed.
fn churn<A: GlobalAlloc>(a: &A, ops: u64, seed: u64) -> Duration {
    let mut rng = XorShift(seed);
    let alloc = |rng: &mut XorShift| {
        let l = churn_layout(rng);
        // SAFETY: nonzero size; the block is written within bounds and later
        // freed with `l` through the same allocator.
        let p = unsafe { a.alloc(l) };
        assert!(!p.is_null(), "out of memory");
        // SAFETY: `p` is a live block of at least one byte.
        unsafe { p.write_volatile(1) };
        (p, l)
    };
    let mut live: Vec<(*mut u8, Layout)> = (0..CHURN_SLOTS).map(|_| alloc(&mut rng)).collect();
    let t0 = Instant::now();
    for _ in 0..ops {
        let i = rng.next() as usize % CHURN_SLOTS;
        let (p, l) = live[i];
        // SAFETY: `p` was allocated by `a` with `l` and is freed once.
        unsafe { a.dealloc(p, l) };
        live[i] = alloc(&mut rng);
    }
    let elapsed = t0.elapsed();
    for (p, l) in live {
        // SAFETY: as above: each remaining block is freed once, with its layout.
        unsafe { a.dealloc(p, l) };
    }
    elapsed
}

fn churn_1t(c: &mut Criterion) {
    let mut g = c.benchmark_group("churn_1t");
    for v in VARIANTS {
        g.bench_function(v.name(), |b| {
            v.set_rate();
            with_allocator!(v, |a| b.iter_custom(|iters| churn(a, iters, 0x9E37_79B9)))
        });
    }
    g.finish();
}

fn sampled_path(c: &mut Criterion) {
    let mut g = c.benchmark_group("sampled_path");
    let layout = Layout::from_size_align(64, 8).unwrap();
    g.bench_function("rate_1/64", |b| {
        heapprof::set_rate(1);
        b.iter(|| pairs(&PROFILER, layout, 1));
        heapprof::set_rate(DEFAULT_RATE);
    });
    g.finish();
}

/// Takes one sample before any bench, so one-time set-up (reading the
/// environment, starting the dumper thread, loading unwind tables, mapping
/// the thread's buffer and the live table) is not charged to the first
/// profiled bench.
fn warm_up_profiler() {
    let l = Layout::from_size_align(64, 8).unwrap();
    heapprof::set_rate(1);
    // SAFETY: nonzero size; freed with the same layout and allocator.
    unsafe {
        let p = PROFILER.alloc(l);
        PROFILER.dealloc(p, l);
    }
    heapprof::set_rate(DEFAULT_RATE);
}

fn config() -> Criterion {
    // Short runs keep the whole bench to a couple of minutes on two cores;
    // the per-pair figures are stable to well under a nanosecond with this.
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = pair_1t, pair_2t, churn_1t, sampled_path
}

fn main() {
    warm_up_profiler();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
