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
//! - Allocations not made through the profiled allocator.
//! - In a nested check, the outer check does not see the inner closure's
//!   allocations.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use hashbrown::HashMap;

use crate::stack_table::StackId;
use crate::tallies::StackFrame;
use crate::{aggregate, symbolize, thread_state};

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

/// Runs `f` recording every allocation of the calling thread and returns
/// what was allocated inside it and is still live afterwards.
pub fn leaks_during(f: impl FnOnce()) -> LeakReport {
    crate::startup::ensure();
    let state = thread_state::current();
    let tag = NEXT_SESSION.fetch_add(1, Ordering::Relaxed);
    let session = Session {
        state,
        previous: state.tag.get(),
    };
    state.tag.set(tag);
    state.countdown.set(0);
    f();
    drop(session);
    report(tag)
}

/// Runs `f` and panics, listing each leaking stack with file:line, count and
/// bytes, if anything allocated inside it is still live afterwards.
#[track_caller]
pub fn assert_no_leaks(f: impl FnOnce()) {
    let report = leaks_during(f);
    if !report.is_empty() {
        panic!("heapprof: leak check failed: {report}");
    }
}

fn report(tag: u64) -> LeakReport {
    let _busy = thread_state::current().enter();
    let grouped: Vec<(Box<[u64]>, u64, u64)> = aggregate::with(|agg| {
        let mut by_stack: HashMap<StackId, (u64, u64)> = HashMap::new();
        for s in agg.live.values().filter(|s| s.tag == tag) {
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
