//! A test crate that does not make `heapprof::Profiler` its global
//! allocator (each file in `tests/` is a crate of its own): every leak check
//! fails loudly with the line to add, never passes a leaking closure.

const FIX: &str = "#[global_allocator] static A: heapprof::Profiler<std::alloc::System> = heapprof::Profiler::new(std::alloc::System);";

fn message(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

#[test]
#[should_panic(
    expected = "#[global_allocator] static A: heapprof::Profiler<std::alloc::System> = heapprof::Profiler::new(std::alloc::System);"
)]
fn assert_no_leaks_fails_on_a_leak_it_cannot_see() {
    heapprof::assert_no_leaks(|| {
        std::mem::forget(vec![1u8; 1000]);
    });
}

#[test]
fn every_check_names_the_fix() {
    assert_eq!(heapprof::GLOBAL_ALLOCATOR_LINE, FIX);
    let balanced = std::panic::catch_unwind(|| heapprof::assert_no_leaks(|| vec![1u8; 10].len()));
    let during =
        std::panic::catch_unwind(|| heapprof::leaks_during(|| std::mem::forget(vec![1u8; 1000])));
    for outcome in [balanced.map(|_| ()), during.map(|_| ())] {
        let msg = message(outcome.expect_err("must panic"));
        assert!(
            msg.contains("global allocator") && msg.contains(FIX),
            "{msg}"
        );
        assert_eq!(msg.lines().count(), 1, "{msg}");
    }
}

#[test]
fn dumps_say_nothing_feeds_them_instead_of_writing_an_empty_profile() {
    let path = std::env::temp_dir().join(format!("heapprof-unfed-{}.pb.gz", std::process::id()));
    let e = heapprof::dump_to(&path).expect_err("nothing feeds the profile");
    let msg = e.to_string();
    assert!(
        msg.contains("not this program's global allocator") && msg.contains(FIX),
        "{msg}"
    );
    assert!(!path.exists());
    let mut sink = Vec::new();
    assert!(heapprof::write_profile(&mut sink).is_err());
    assert!(sink.is_empty());
}
