//! `go tool pprof`, the reference reader, must read what heapprof writes:
//! `-top`, `-traces`, `-sample_index`, `-diff_base`, with our function names
//! and no attempt to re-symbolize.

mod common;

use std::alloc::System;

#[global_allocator]
static GLOBAL: heapprof::Profiler<System> = heapprof::Profiler::new(System);

#[inline(never)]
fn leaky_parser_buffers(n: usize) {
    for _ in 0..n {
        Box::leak(vec![0u8; 40_000].into_boxed_slice());
    }
}

#[inline(never)]
fn transient_scratch() {
    for _ in 0..50 {
        std::hint::black_box(vec![0u8; 100_000]);
    }
}

#[test]
fn go_tool_pprof_reads_our_profiles() {
    heapprof::set_rate(1);
    let dir = common::temp_dir("go-pprof");
    leaky_parser_buffers(10);
    transient_scratch();
    let base = dir.join("base.pb.gz");
    heapprof::dump_to(&base).unwrap();
    leaky_parser_buffers(25);
    let new = dir.join("new.pb.gz");
    heapprof::dump_to(&new).unwrap();
    let (base, new) = (base.to_str().unwrap(), new.to_str().unwrap());

    let (top, err) = common::go_pprof(&["-top", "-unit=B", new]);
    assert!(top.contains("Type: inuse_space"), "{top}");
    assert!(top.contains("leaky_parser_buffers"), "{top}");
    assert!(
        !top.contains("transient_scratch"),
        "freed memory is not in use:\n{top}"
    );
    for bad in ["symboliz", "unrecognized", "failed", "Local symbolization"] {
        assert!(!err.contains(bad), "pprof complained: {err}");
    }
    // 35 buffers of 40000 bytes are in use, at the leaf function.
    let line = top
        .lines()
        .find(|l| l.contains("leaky_parser_buffers"))
        .unwrap();
    assert!(line.trim_start().starts_with("1400000B"), "{top}");

    let (alloc, _) = common::go_pprof(&["-top", "-sample_index=alloc_space", new]);
    assert!(alloc.contains("Type: alloc_space"), "{alloc}");
    assert!(alloc.contains("transient_scratch"), "{alloc}");

    let (diff, _) = common::go_pprof(&["-top", "-unit=B", "-diff_base", base, new]);
    // The growth between the two dumps is 25 buffers.
    let line = diff
        .lines()
        .find(|l| l.contains("leaky_parser_buffers"))
        .unwrap();
    assert!(line.trim_start().starts_with("1000000B"), "{diff}");

    let (traces, _) = common::go_pprof(&["-traces", new]);
    assert!(
        traces.contains("go_tool_pprof_reads_our_profiles"),
        "{traces}"
    );
    assert!(traces.contains("bytes:"), "{traces}");

    let (tags, _) = common::go_pprof(&["-tags", new]);
    assert!(tags.contains("age") && tags.contains("bytes"), "{tags}");
}
