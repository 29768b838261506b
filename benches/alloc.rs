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
//!   (stack capture, record, the sample heap): the price of one sample, from
//!   which the amortised cost at any rate and size follows (about
//!   `size / rate` of it per allocation);
//! - `sampled_path/sample_heap/<size>`: the sampled path without the stack
//!   capture and record: the sample heap's allocate, remember the id and
//!   free, for a small class, a page and a 64 KiB run (the run's free
//!   gives its pages back with `madvise`); next to it
//!   `sampled_path/system_page_aligned/<size>`, what a sample cost before
//!   the sample heap (a page-aligned block of `System`).
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
//! Reading the numbers:
//! - `profiler_off - system` is the hot path (a thread-local compare and
//!   subtract, an address-range compare on free); `profiler_default_rate - profiler_off` is
//!   sampling, which grows with size (one sample costs `sampled_path`).
//! - Each variant runs at a different time on a heap other benches have
//!   shaped; glibc's non-cached sizes (4096, 65536) swing by 10-15 ns between
//!   runs with heap layout, and two-thread wall times swing with scheduling
//!   on small or virtual machines. Compare within one run and prefer
//!   `scripts/bench-rust.sh`, which interleaves whole-process runs.
//!
//! Speed targets (within 2 ns of the bare pair, within 5% on churn) are
//! checked by reading these numbers, never asserted in timed unit tests.

use heapprof::engine::sampler::Rng;
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use criterion::{criterion_group, BenchmarkId, Criterion};
use heapprof::control::config::DEFAULT_RATE;
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

/// Every variant, in the order each group measures them.
const VARIANTS: [Variant; 3] = [
    Variant::System,
    Variant::ProfilerOff,
    Variant::ProfilerDefaultRate,
];

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::System => "system",
            Variant::ProfilerDefaultRate => "profiler_default_rate",
            Variant::ProfilerOff => "profiler_off",
        }
    }

    /// Sets the global rate. It applies at once only to the calling thread
    /// (others pick it up at their next sample), so every thread a bench
    /// allocates on calls this itself: the main thread, and each pool thread
    /// through `Pool::on_each`.
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

/// A job for one pool thread: runs untimed set-up, waits at the barrier with
/// the others, then returns the start and end of its timed part.
type Job = Box<dyn FnOnce(&Barrier) -> (Instant, Instant) + Send>;

/// `THREADS` threads kept for the whole group. Spawning fresh threads for
/// every criterion sample would also give each sample a fresh glibc tcache and
/// a reshuffled arena, which moved the `system` baseline by more than the
/// difference being measured.
struct Pool {
    jobs: Vec<Sender<Job>>,
    done: Receiver<(Instant, Instant)>,
    ready: Arc<Barrier>,
    threads: Vec<JoinHandle<()>>,
}

impl Pool {
    fn new() -> Pool {
        let ready = Arc::new(Barrier::new(THREADS + 1));
        let (done_tx, done) = channel();
        let mut jobs = Vec::new();
        let mut threads = Vec::new();
        for _ in 0..THREADS {
            let (tx, rx) = channel::<Job>();
            let (ready, done_tx) = (ready.clone(), done_tx.clone());
            threads.push(std::thread::spawn(move || {
                for job in rx {
                    if done_tx.send(job(&ready)).is_err() {
                        break;
                    }
                }
            }));
            jobs.push(tx);
        }
        Pool {
            jobs,
            done,
            ready,
            threads,
        }
    }

    /// Wall time for every pool thread doing `work(iters)` at once, from the
    /// moment all are released together to the moment the last one finishes.
    fn run(&self, iters: u64, work: impl Fn(u64) + Clone + Send + 'static) -> Duration {
        for tx in &self.jobs {
            let work = work.clone();
            tx.send(Box::new(move |ready: &Barrier| {
                ready.wait();
                let t0 = Instant::now();
                work(iters);
                (t0, Instant::now())
            }))
            .unwrap();
        }
        self.ready.wait();
        let spans: Vec<(Instant, Instant)> =
            (0..THREADS).map(|_| self.done.recv().unwrap()).collect();
        let start = spans.iter().map(|s| s.0).min().unwrap();
        let end = spans.iter().map(|s| s.1).max().unwrap();
        end - start
    }

    /// Runs `f` once on every pool thread (untimed).
    fn on_each(&self, f: impl Fn() + Clone + Send + 'static) {
        for tx in &self.jobs {
            let f = f.clone();
            tx.send(Box::new(move |ready: &Barrier| {
                f();
                ready.wait();
                let now = Instant::now();
                (now, now)
            }))
            .unwrap();
        }
        self.ready.wait();
        for _ in 0..THREADS {
            self.done.recv().unwrap();
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Closing the job channels ends the threads' loops.
        self.jobs.clear();
        for t in self.threads.drain(..) {
            t.join().unwrap();
        }
    }
}

fn pair_2t(c: &mut Criterion) {
    let pool = Pool::new();
    let mut g = c.benchmark_group("pair_2t");
    for size in SIZES_2T {
        let layout = Layout::from_size_align(size, 8).unwrap();
        for v in VARIANTS {
            g.bench_with_input(BenchmarkId::new(v.name(), size), &layout, |b, &l| {
                // A new rate reaches another thread only at its next sample
                // (or, when off, after 64 MiB): set it on each pool thread
                // itself, which applies it there at once.
                pool.on_each(move || v.set_rate());
                with_allocator!(v, |a| b
                    .iter_custom(|iters| pool.run(iters, move |n| pairs(a, l, n))))
            });
        }
    }
    g.finish();
}

/// Log-uniform over 16 B..8 KiB: an octave 16<<k (k in 0..9) chosen
/// uniformly, then a uniform size within it. Mean about 1.4 KiB, so one
/// allocation in ~380 is sampled at the default rate.
fn churn_layout(rng: &mut Rng) -> Layout {
    let r = rng.next_u64();
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
    let mut rng = Rng::new(seed);
    let alloc = |rng: &mut Rng| {
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
        let i = rng.next_u64() as usize % CHURN_SLOTS;
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
    use heapprof::engine::sample_heap;
    for size in [64usize, 4096, 65536] {
        g.bench_with_input(BenchmarkId::new("sample_heap", size), &size, |b, &size| {
            b.iter(|| {
                let p = sample_heap::alloc(black_box(size), 16, false);
                sample_heap::set_id(p, 1);
                sample_heap::free(black_box(p));
            })
        });
        let page = Layout::from_size_align(size, 4096).unwrap();
        g.bench_with_input(
            BenchmarkId::new("system_page_aligned", size),
            &size,
            |b, _| b.iter(|| pairs(&System, page, 1)),
        );
    }
    g.finish();
}

/// Takes one sample before any bench, so one-time set-up (reading the
/// environment, starting the dumper thread, loading unwind tables, mapping
/// the thread's buffer and the sample heap) is not charged to the first
/// profiled bench. The sample is kept, never freed.
fn warm_up_profiler() {
    let l = Layout::from_size_align(64, 8).unwrap();
    heapprof::set_rate(1);
    // SAFETY: nonzero size; the block is deliberately never freed.
    let p = unsafe { PROFILER.alloc(l) };
    black_box(p);
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
