//! Heap labels at rate 1, where the profile is exact: every sample carries
//! the label set its allocating thread (or polled future) had, for life, and
//! `go tool pprof` filters and lists them.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::sync::{mpsc, Arc};
use std::task::{Context, Poll, Wake, Waker};

use heapprof::report::{LabelValue, Resolved};

/// `System`, counting the allocations each thread makes through it: the
/// Profiler's inner allocator, so it sees heapprof's own allocations too.
struct Counting;

std::thread_local! {
    static INNER_ALLOCS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    let _ = INNER_ALLOCS.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: forwards every call to System unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        count();
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: heapprof::Profiler<Counting> = heapprof::Profiler::new(Counting);

/// The string labels of a sample, sorted by key (numeric ones, `bytes` and
/// `age`, left out).
type Labels = Vec<(String, String)>;

/// Per (leaf function containing `leaf`, string label set): the four values.
fn by_labels(leaf: &str) -> BTreeMap<Labels, [i64; 4]> {
    let r = Resolved::from_profile("live", &heapprof::profile()).unwrap();
    let mut out: BTreeMap<Labels, [i64; 4]> = BTreeMap::new();
    for s in &r.samples {
        let at_leaf = r.stacks[s.stack]
            .frames
            .first()
            .is_some_and(|f| f.function.contains(leaf));
        if !at_leaf {
            continue;
        }
        let mut labels: Labels = s
            .labels
            .iter()
            .filter_map(|l| match &l.value {
                LabelValue::Str(v) => Some((l.key.clone(), v.clone())),
                LabelValue::Num { .. } => None,
            })
            .collect();
        labels.sort();
        let v = out.entry(labels).or_default();
        for (acc, x) in v.iter_mut().zip(&s.values) {
            *acc += x;
        }
    }
    out
}

fn set(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[inline(never)]
fn leak_for_route(n: usize, size: usize) {
    for _ in 0..n {
        Box::leak(vec![0u8; size].into_boxed_slice());
    }
}

#[test]
fn threads_leaking_under_different_routes_are_exact_per_route() {
    heapprof::set_rate(1);
    let routes = [("/a", 10, 100), ("/b", 20, 200), ("/c", 5, 300)];
    let threads: Vec<_> = routes
        .iter()
        .map(|&(route, n, size)| {
            std::thread::spawn(move || {
                heapprof::set_rate(1);
                // Interleave labeled and unlabeled work on one thread.
                for _ in 0..n {
                    heapprof::with_labels(&[("route", route)], || leak_for_route(1, size));
                    leak_for_route(1, 7);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let got = by_labels("leak_for_route");
    let mut want = BTreeMap::new();
    for &(route, n, size) in &routes {
        let (n, b) = (n as i64, (n * size) as i64);
        want.insert(set(&[("route", route)]), [n, b, n, b]);
    }
    want.insert(set(&[]), [35, 35 * 7, 35, 35 * 7]);
    assert_eq!(got, want);
}

#[inline(never)]
fn churn_under_label(n: usize, tx: mpsc::Sender<Box<[u8; 256]>>) {
    for _ in 0..n {
        tx.send(Box::new([3u8; 256])).unwrap();
    }
}

#[test]
fn churn_under_a_label_freed_elsewhere_leaves_nothing_in_use() {
    heapprof::set_rate(1);
    let (tx, rx) = mpsc::channel();
    // The freeing thread has labels of its own: frees never look at them.
    let freer = std::thread::spawn(move || {
        heapprof::with_labels(&[("route", "/freer")], || {
            for b in rx {
                drop(black_box(b));
            }
        })
    });
    let producer = std::thread::spawn(move || {
        heapprof::set_rate(1);
        heapprof::with_labels(&[("route", "/churn")], || churn_under_label(3000, tx))
    });
    producer.join().unwrap();
    freer.join().unwrap();
    let got = by_labels("churn_under_label");
    let want = BTreeMap::from([(set(&[("route", "/churn")]), [3000, 3000 * 256, 0, 0])]);
    assert_eq!(got, want);
}

#[inline(never)]
fn leak_outer() {
    black_box(Box::leak(Box::new([1u8; 111])));
}
#[inline(never)]
fn leak_nested() {
    black_box(Box::leak(Box::new([1u8; 222])));
}
#[inline(never)]
fn leak_overridden() {
    black_box(Box::leak(Box::new([1u8; 333])));
}
#[inline(never)]
fn leak_after_scope() {
    black_box(Box::leak(Box::new([1u8; 444])));
}

#[inline(never)]
fn leak_in_label_set() {
    black_box(Box::leak(Box::new([1u8; 555])));
}

#[test]
fn nested_scopes_carry_both_keys_and_nothing_after() {
    heapprof::set_rate(1);
    heapprof::with_labels(&[("tenant", "t1")], || {
        leak_outer();
        heapprof::with_labels(&[("route", "/x")], leak_nested);
        heapprof::with_labels(&[("tenant", "t2")], leak_overridden);
        leak_outer();
    });
    leak_after_scope();
    // A set made inside a scope keeps that scope's labels wherever it runs.
    let made = heapprof::with_labels(&[("tenant", "t3")], || {
        heapprof::LabelSet::new(&[("route", "/y")])
    });
    std::thread::spawn(move || {
        heapprof::set_rate(1);
        heapprof::with_labels(&[("other", "z")], || made.run(leak_in_label_set));
    })
    .join()
    .unwrap();
    let one = |labels: &[(&str, &str)], n: i64, size: i64| {
        BTreeMap::from([(set(labels), [n, n * size, n, n * size])])
    };
    assert_eq!(by_labels("leak_outer"), one(&[("tenant", "t1")], 2, 111));
    assert_eq!(
        by_labels("leak_nested"),
        one(&[("route", "/x"), ("tenant", "t1")], 1, 222)
    );
    assert_eq!(
        by_labels("leak_overridden"),
        one(&[("tenant", "t2")], 1, 333)
    );
    assert_eq!(by_labels("leak_after_scope"), one(&[], 1, 444));
    assert_eq!(
        by_labels("leak_in_label_set"),
        one(&[("route", "/y"), ("tenant", "t3")], 1, 555)
    );
}

/// A future that leaks one block per poll and finishes after `polls` polls.
struct LeakPerPoll {
    left: usize,
}

#[inline(never)]
fn leak_in_future() {
    black_box(Box::leak(Box::new([2u8; 64])));
}

#[inline(never)]
fn leak_in_poller() {
    black_box(Box::leak(Box::new([2u8; 32])));
}

impl Future for LeakPerPoll {
    type Output = usize;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<usize> {
        leak_in_future();
        self.left -= 1;
        if self.left == 0 {
            Poll::Ready(7)
        } else {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

struct NoopWake;
impl Wake for NoopWake {
    fn wake(self: Arc<Self>) {}
}

type Task = Pin<Box<heapprof::Labeled<LeakPerPoll>>>;

fn assert_send<T: Send>(_: &T) {}

#[test]
fn a_labeled_future_keeps_its_labels_on_every_polling_thread() {
    heapprof::set_rate(1);
    let task: Task = Box::pin(heapprof::labeled(
        &[("route", "/task")],
        LeakPerPoll { left: 6 },
    ));
    assert_send(&task);
    // Two pollers, each under labels of its own, hand the task back and
    // forth: A polls, then B, then A... until it is ready.
    let (to_a, a_rx) = mpsc::channel::<Task>();
    let (to_b, b_rx) = mpsc::channel::<Task>();
    let (done_tx, done_rx) = mpsc::channel::<usize>();
    let poller = |name: &'static str, rx: mpsc::Receiver<Task>, next: mpsc::Sender<Task>| {
        let done = done_tx.clone();
        std::thread::spawn(move || {
            heapprof::set_rate(1);
            heapprof::with_labels(&[("poller", name)], || {
                let waker = Waker::from(Arc::new(NoopWake));
                let mut cx = Context::from_waker(&waker);
                for mut task in rx {
                    leak_in_poller();
                    match task.as_mut().poll(&mut cx) {
                        Poll::Ready(v) => {
                            // Dropping `next` ends the other poller's loop.
                            done.send(v).unwrap();
                            break;
                        }
                        Poll::Pending => {
                            leak_in_poller();
                            next.send(task).unwrap();
                        }
                    }
                }
            })
        })
    };
    let a = poller("A", a_rx, to_b.clone());
    let b = poller("B", b_rx, to_a.clone());
    to_a.send(task).unwrap();
    assert_eq!(done_rx.recv().unwrap(), 7);
    drop((to_a, to_b));
    a.join().unwrap();
    b.join().unwrap();
    assert_eq!(
        by_labels("leak_in_future"),
        BTreeMap::from([(set(&[("route", "/task")]), [6, 6 * 64, 6, 6 * 64])])
    );
    // Each poller polled three times: one block before each poll, one after
    // each of its pending polls (A's three all pending, B's last ready).
    assert_eq!(
        by_labels("leak_in_poller"),
        BTreeMap::from([
            (set(&[("poller", "A")]), [6, 6 * 32, 6, 6 * 32]),
            (set(&[("poller", "B")]), [5, 5 * 32, 5, 5 * 32]),
        ])
    );
}

#[test]
fn entering_the_same_scope_again_allocates_nothing() {
    heapprof::set_rate(1);
    let labels = [("route", "/hot"), ("tenant", "acme")];
    // The first entry interns (with the thread busy: unsampled, but counted
    // by the inner allocator).
    heapprof::with_labels(&labels, || ());
    let waker = Waker::from(Arc::new(NoopWake));
    let mut task = Box::pin(heapprof::labeled(&labels, std::future::pending::<()>()));
    let set = heapprof::LabelSet::new(&labels);
    let before = INNER_ALLOCS.with(Cell::get);
    for _ in 0..10_000 {
        black_box(heapprof::with_labels(&labels, || black_box(1)));
        black_box(set.run(|| black_box(2)));
        let _ = task.as_mut().poll(&mut Context::from_waker(&waker));
    }
    let _again = heapprof::labeled(&labels, std::future::ready(()));
    let after = INNER_ALLOCS.with(Cell::get);
    assert_eq!(after - before, 0, "allocations while entering scopes");
}

#[inline(never)]
fn users_handler() {
    for _ in 0..4 {
        Box::leak(vec![0u8; 10_000].into_boxed_slice());
    }
}

#[inline(never)]
fn orders_handler() {
    for _ in 0..3 {
        Box::leak(vec![0u8; 20_000].into_boxed_slice());
    }
}

#[test]
fn go_tool_pprof_filters_and_lists_labels() {
    heapprof::set_rate(1);
    let dir = common::temp_dir("labels-pprof");
    heapprof::with_labels(&[("route", "/users")], users_handler);
    heapprof::with_labels(&[("route", "/orders"), ("tenant", "acme")], orders_handler);
    let path = dir.join("labels.pb.gz");
    heapprof::dump_to(&path).unwrap();
    let path = path.to_str().unwrap();

    let (top, _) = common::go_pprof(&["-top", "-unit=B", "-tagfocus=route=/users", path]);
    let line = top.lines().find(|l| l.contains("users_handler"));
    assert!(
        line.is_some_and(|l| l.trim_start().starts_with("40000B")),
        "{top}"
    );
    assert!(!top.contains("orders_handler"), "{top}");

    let (top, _) = common::go_pprof(&["-top", "-unit=B", "-tagignore=route=/users", path]);
    assert!(!top.contains("users_handler"), "{top}");
    let line = top.lines().find(|l| l.contains("orders_handler"));
    assert!(
        line.is_some_and(|l| l.trim_start().starts_with("60000B")),
        "{top}"
    );

    let (tags, _) = common::go_pprof(&["-tags", "-tagfocus=tenant=acme", path]);
    assert!(
        tags.contains("route") && tags.contains("/orders") && tags.contains("tenant"),
        "{tags}"
    );
    assert!(!tags.contains("/users"), "{tags}");
}
