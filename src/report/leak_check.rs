//! Leak checks for tests: [`assert_no_leaks`] and [`leaks_during`].
//!
//! # How it works
//! For the duration of the closure the calling thread records *every*
//! allocation (as if the rate were 1, whatever the process rate), tagged with
//! a session number unique to this call. Afterwards the aggregator is drained
//! and any sample with that tag that is still live is a leak: allocated inside
//! the closure, not freed by the time it returned. Frees are matched to
//! samples wherever they happen, so memory handed to another thread and freed
//! there counts as freed (as long as the free happened before the closure
//! returned).
//!
//! Sessions are per thread, so tests running in parallel under `cargo test`
//! never see each other's allocations. The recorded allocations are genuine
//! samples at weight 1, so they also appear, unbiased, in heap profiles.
//!
//! # What it does not see
//! - Allocations made by threads the closure spawns (they have their own
//!   per-thread state); join them and check inside them if needed.
//! - Memory the closure's allocations keep alive on purpose past the
//!   closure (a `static` cache, a lazily initialised global): that *is*
//!   reported, because it is live. Warm such caches up before the check.
//! - Allocations not made through the profiled allocator. When heapprof is
//!   not the program's global allocator at all (an integration test in
//!   `tests/` is a crate of its own and does not get `main.rs`'s
//!   `#[global_allocator]`), nothing would be seen and every check would
//!   pass: a probe allocation made at the start of each check, which the
//!   session records, tells, and the check panics naming the line to add.
//! - In a nested check, the outer check does not see the inner closure's
//!   allocations.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use hashbrown::HashMap;

use crate::engine::stack_table::StackId;
use crate::profile::tallies::StackFrame;
use crate::{engine::aggregate, engine::thread_state, profile::symbolize};

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// Memory allocated inside a checked closure and still live after it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeakReport {
    /// One entry per leaking call stack, most bytes first.
    pub leaks: Vec<Leak>,
}

/// The leaked objects of one call stack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leak {
    /// Where they were allocated, leaf first (allocator frames trimmed).
    pub frames: Vec<StackFrame>,
    /// How many objects are still live.
    pub objects: u64,
    /// Their requested bytes.
    pub bytes: u64,
}

impl LeakReport {
    /// Whether nothing leaked.
    pub fn is_empty(&self) -> bool {
        self.leaks.is_empty()
    }
    /// Total leaked objects.
    pub fn objects(&self) -> u64 {
        self.leaks.iter().map(|l| l.objects).sum()
    }
    /// Total leaked bytes.
    pub fn bytes(&self) -> u64 {
        self.leaks.iter().map(|l| l.bytes).sum()
    }
}

/// How many frames of each stack a report prints.
const SHOWN_FRAMES: usize = 12;

impl fmt::Display for LeakReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return writeln!(f, "no leaks");
        }
        writeln!(
            f,
            "{} object(s), {} byte(s) allocated in the checked closure are still live, from {} stack(s):",
            self.objects(),
            self.bytes(),
            self.leaks.len()
        )?;
        for leak in &self.leaks {
            writeln!(
                f,
                "  {} object(s), {} byte(s) at:",
                leak.objects, leak.bytes
            )?;
            for fr in leak.frames.iter().take(SHOWN_FRAMES) {
                if fr.file.is_empty() {
                    writeln!(f, "      {}", fr.function)?;
                } else {
                    writeln!(f, "      {} ({}:{})", fr.function, fr.file, fr.line)?;
                }
            }
            if leak.frames.len() > SHOWN_FRAMES {
                writeln!(f, "      ... {} more", leak.frames.len() - SHOWN_FRAMES)?;
            }
        }
        Ok(())
    }
}

/// Restores the thread's sampling state, also when the closure panics.
struct Session {
    state: &'static thread_state::ThreadState,
    previous: u64,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.state.tag.set(self.previous);
        // Draw a fresh countdown at the process rate on the next allocation.
        self.state.countdown.set(0);
    }
}

/// The line a test crate needs for its allocations to be seen.
pub const GLOBAL_ALLOCATOR_LINE: &str = "#[global_allocator] static A: heapprof::Profiler<std::alloc::System> = heapprof::Profiler::new(std::alloc::System);";

/// Why a leak check cannot see anything, when heapprof is not the global
/// allocator of this program.
fn not_installed() -> String {
    format!(
        "heapprof: this program's allocations do not go through heapprof::Profiler, so a leak \
         check would see nothing and always pass; make it the global allocator of this crate \
         (each file in tests/ is a crate of its own), e.g. add: {GLOBAL_ALLOCATOR_LINE}"
    )
}

/// Whether the global allocator is heapprof's [`crate::Profiler`]: during a
/// session every allocation of the thread is sampled, so a probe allocation
/// comes from the sample heap (or, when the sample heap could not serve it,
/// counts as a fallback); from any other allocator it does neither.
fn probe_sees_the_global_allocator() -> bool {
    let fallbacks = crate::engine::sample_heap::fallbacks();
    let probe = std::hint::black_box(Box::new([0u8; 64]));
    let seen = crate::engine::owns(probe.as_ptr());
    drop(probe);
    seen || crate::engine::sample_heap::fallbacks() != fallbacks
}

/// Runs `f` recording every allocation of the calling thread and returns
/// `f`'s value and what was allocated inside it and is still live
/// afterwards.
///
/// Panics, naming the line to add, when heapprof is not this program's
/// global allocator (the report would be empty whatever `f` does).
#[track_caller]
pub fn leaks_during_with<R>(f: impl FnOnce() -> R) -> (R, LeakReport) {
    crate::control::startup::ensure();
    let state = thread_state::current();
    let tag = NEXT_SESSION.fetch_add(1, Ordering::Relaxed);
    let session = Session {
        state,
        previous: state.tag.get(),
    };
    state.tag.set(tag);
    state.countdown.set(0);
    if !probe_sees_the_global_allocator() {
        drop(session);
        panic!("{}", not_installed());
    }
    let value = f();
    drop(session);
    (value, report(tag))
}

/// Runs `f` recording every allocation of the calling thread and returns
/// what was allocated inside it and is still live afterwards.
///
/// Panics, naming the line to add, when heapprof is not this program's
/// global allocator (the report would be empty whatever `f` does).
#[track_caller]
pub fn leaks_during(f: impl FnOnce()) -> LeakReport {
    leaks_during_with(f).1
}

/// Runs `f` and returns its value; panics, listing each leaking stack with
/// file:line, count and bytes, if anything allocated inside it is still
/// live afterwards. Panics too, naming the line to add, when heapprof is
/// not this program's global allocator.
#[track_caller]
pub fn assert_no_leaks<R>(f: impl FnOnce() -> R) -> R {
    let (value, report) = leaks_during_with(f);
    if !report.is_empty() {
        panic!("heapprof: leak check failed: {report}");
    }
    value
}

/// Whether `function` is this module's own frame (the check's entry
/// points) or what runs the closure for it: where a leak's stack, read
/// from the leak upward, leaves the checked closure.
fn outside_the_closure(function: &str) -> bool {
    ["leaks_during", "assert_no_leaks"]
        .iter()
        .any(|f| function.contains(&format!("heapprof::report::leak_check::{f}")))
}

fn report(tag: u64) -> LeakReport {
    let _busy = thread_state::current().enter();
    let grouped: Vec<(Box<[u64]>, u64, u64)> = aggregate::with(|agg| {
        let mut by_stack: HashMap<StackId, (u64, u64)> = HashMap::new();
        for (_, s) in agg.live().filter(|(_, s)| s.tag == tag) {
            let e = by_stack.entry(s.key.stack).or_default();
            e.0 += 1;
            e.1 += s.key.size;
        }
        by_stack
            .into_iter()
            .map(|(id, (n, b))| (agg.stacks.get(id).into(), n, b))
            .collect()
    });
    let mut leaks: Vec<Leak> = symbolize::with(|sym| {
        sym.prepare(grouped.iter().flat_map(|(stack, ..)| stack.iter().copied()));
        grouped
            .iter()
            .map(|(stack, objects, bytes)| Leak {
                frames: symbolize::trimmed_frames(sym, stack)
                    .into_iter()
                    // The stack ends at the closure: the check and the
                    // test harness below it say nothing about the leak.
                    .take_while(|f| !outside_the_closure(&f.name))
                    .map(|f| StackFrame {
                        function: f.name,
                        file: f.file,
                        line: f.line,
                    })
                    .collect(),
                objects: *objects,
                bytes: *bytes,
            })
            .collect()
    });
    leaks.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(b.objects.cmp(&a.objects)));
    LeakReport { leaks }
}
