//! Raw profiles (`HEAPPROF_SYMBOLIZE=0`): no names in the file, mappings with
//! build IDs, and `go tool pprof` symbolizes them from the binary and prunes
//! the allocator frames itself.

mod common;

use std::alloc::System;

#[global_allocator]
static GLOBAL: heapprof::Profiler<System> = heapprof::Profiler::new(System);

#[inline(never)]
fn raw_mode_leaker() {
    for _ in 0..12 {
        Box::leak(vec![0u8; 50_000].into_boxed_slice());
    }
}

#[test]
fn go_tool_pprof_symbolizes_raw_profiles() {
    heapprof::Config::from_env()
        .rate(1)
        .symbolize(false)
        .install();
    raw_mode_leaker();
    let dir = common::temp_dir("raw");
    let path = dir.join("raw.pb.gz");
    heapprof::dump_to(&path).unwrap();

    let p = common::read_profile(&path);
    assert!(
        p.function.is_empty(),
        "raw profiles carry no function names"
    );
    assert!(p
        .location
        .iter()
        .all(|l| l.line.is_empty() && l.address != 0));
    assert!(p.mapping.iter().all(|m| !m.has_functions));
    let exe = std::fs::read_link("/proc/self/exe").unwrap();
    let s = |i: i64| p.string_table[i as usize].as_str();
    let me = p
        .mapping
        .iter()
        .find(|m| s(m.filename) == exe.to_str().unwrap())
        .expect("mapping of the executable");
    assert!(s(me.build_id).len() >= 16);
    assert!(!s(p.drop_frames).is_empty());

    let (top, _) = common::go_pprof(&["-top", "-unit=B", path.to_str().unwrap()]);
    let line = top
        .lines()
        .find(|l| l.contains("raw_mode_leaker"))
        .unwrap_or_else(|| panic!("pprof did not name the leaker:\n{top}"));
    // All 600000 bytes are under the leaker (cumulative column).
    let cum = line.split_whitespace().nth(3).unwrap_or("");
    assert_eq!(cum, "600000B", "{top}");
    // heapprof's own frames were never captured, and pprof pruned the
    // allocator entry point named in drop_frames.
    for gone in [
        "record_alloc",
        "alloc_slow",
        "capture",
        "__rust_alloc",
        "trace",
    ] {
        assert!(
            !top.lines()
                .any(|l| l.split_whitespace().last() == Some(gone)),
            "{gone} should not appear:\n{top}"
        );
    }
}
