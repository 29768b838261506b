//! `assert_no_leaks` / `leaks_during`: leaks fail with the stack named;
//! balanced code passes, also when another thread frees; parallel tests never
//! see each other's allocations.

use std::alloc::System;
use std::cell::RefCell;
use std::hint::black_box;
use std::rc::Rc;
use std::sync::Mutex;

#[global_allocator]
static GLOBAL: heapprof::Profiler<System> = heapprof::Profiler::new(System);

static KEPT: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

#[inline(never)]
fn leak_a_box() {
    Box::leak(Box::new([5u8; 777]));
}

#[inline(never)]
fn keep_in_static() {
    KEPT.lock().unwrap().push(vec![1u8; 4321]);
}

struct Node {
    _payload: [u8; 100],
    next: RefCell<Option<Rc<Node>>>,
}

#[inline(never)]
fn make_rc_cycle() {
    let a = Rc::new(Node {
        _payload: [0; 100],
        next: RefCell::new(None),
    });
    let b = Rc::new(Node {
        _payload: [0; 100],
        next: RefCell::new(Some(a.clone())),
    });
    *a.next.borrow_mut() = Some(b);
}

#[inline(never)]
fn balanced_work() {
    let mut v: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
    v.sort();
    black_box(&v);
}

fn leaf_is(report: &heapprof::LeakReport, function: &str) -> bool {
    report.leaks.iter().any(|l| {
        l.frames
            .first()
            .is_some_and(|f| f.function.contains(function))
    })
}

#[test]
fn a_leaked_box_fails_with_its_stack() {
    let r = heapprof::leaks_during(leak_a_box);
    assert_eq!((r.objects(), r.bytes()), (1, 777), "{r}");
    assert!(leaf_is(&r, "leak_a_box"), "{r}");
    let text = r.to_string();
    assert!(text.contains("tests/leak_check.rs:"), "{text}");

    let panic =
        std::panic::catch_unwind(|| heapprof::assert_no_leaks(leak_a_box)).expect_err("must panic");
    let msg = panic.downcast_ref::<String>().unwrap();
    assert!(
        msg.contains("leak_a_box") && msg.contains("777 byte"),
        "{msg}"
    );
}

#[test]
fn a_vec_kept_in_a_static_is_a_leak() {
    // Warm the static's own buffer up so only the kept vector counts.
    KEPT.lock().unwrap().reserve(16);
    let r = heapprof::leaks_during(keep_in_static);
    assert_eq!((r.objects(), r.bytes()), (1, 4321), "{r}");
    assert!(leaf_is(&r, "keep_in_static"), "{r}");
}

#[test]
fn an_rc_cycle_is_a_leak() {
    let r = heapprof::leaks_during(make_rc_cycle);
    assert_eq!(r.objects(), 2, "{r}");
    assert!(leaf_is(&r, "make_rc_cycle"), "{r}");
}

#[test]
fn balanced_code_passes() {
    heapprof::assert_no_leaks(balanced_work);
}

#[test]
fn memory_freed_on_another_thread_counts_as_freed() {
    heapprof::assert_no_leaks(|| {
        let data = vec![9u8; 50_000];
        std::thread::spawn(move || drop(black_box(data)))
            .join()
            .unwrap();
    });
}

#[test]
fn parallel_checks_never_see_each_other() {
    let threads: Vec<_> = (0..4)
        .map(|i| {
            std::thread::spawn(move || {
                for _ in 0..20 {
                    if i % 2 == 0 {
                        let r = heapprof::leaks_during(leak_a_box);
                        assert_eq!(r.objects(), 1, "{r}");
                    } else {
                        heapprof::assert_no_leaks(balanced_work);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[inline(never)]
fn handle_request(n: usize) -> Vec<u8> {
    vec![7u8; n]
}

#[test]
fn the_closure_s_value_is_returned() {
    let body = heapprof::assert_no_leaks(|| handle_request(300).len());
    assert_eq!(body, 300);
    let (kept, r) = heapprof::leaks_during_with(|| handle_request(500));
    assert_eq!(kept.len(), 500);
    // Returned, so still live: the check sees it.
    assert_eq!((r.objects(), r.bytes()), (1, 500), "{r}");
}

#[test]
fn a_leak_s_stack_ends_at_the_closure() {
    let r = heapprof::leaks_during(|| {
        leak_a_box();
        black_box(());
    });
    let frames = &r.leaks[0].frames;
    let text = r.to_string();
    assert!(frames[0].function.contains("leak_a_box"), "{text}");
    // Nothing from the check itself or the test harness below the closure
    // (which an optimised build may have folded into the call).
    assert!(
        frames
            .iter()
            .all(|f| !f.function.contains("heapprof::report::")
                && !f.function.contains("test::")
                && !f.function.contains("std::rt::")),
        "{text}"
    );
}
