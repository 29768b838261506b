//! `HEAPPROF_LABELS` in a Rust process (the preload library's side is in
//! `tests/preload.rs`): every sample carries the process-wide labels, a scope
//! overrides one of them, and the reports and `go tool pprof` read them. The
//! program is `examples/labels.rs`, run at rate 1, so per-route figures are
//! exact.

mod common;

use std::process::Command;

use heapprof::report::format::value;
use heapprof::report::labels::str_label;
use heapprof::report::Resolved;

fn heapprof_cli(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_heapprof"))
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "heapprof {args:?}: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn process_labels_on_every_sample_and_scopes_override_them() {
    let dir = common::temp_dir("labels-env");
    let path = dir.join("heap.pb.gz");
    let mut cmd = Command::new(common::example("labels"));
    for (k, _) in std::env::vars() {
        if k.starts_with("HEAPPROF_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .arg("--dump")
        .arg(&path)
        .env("HEAPPROF_RATE", "1")
        .env(
            "HEAPPROF_LABELS",
            "service=demo, zone=eu-1,route=background",
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("route=/users requests=30"));

    let r = Resolved::from_profile("heap", &common::read_profile(&path)).unwrap();
    assert!(r.samples.len() > 10);
    for s in &r.samples {
        assert_eq!(str_label(s, "service"), Some("demo"), "{s:?}");
        assert_eq!(str_label(s, "zone"), Some("eu-1"), "{s:?}");
        assert!(str_label(s, "route").is_some(), "{s:?}");
    }
    // Per (route, leaf function): [alloc_objects, alloc_space, inuse_objects, inuse_space].
    let sums = |route: &str, leaf: &str| {
        let mut t = [0i64; 4];
        for s in r
            .samples
            .iter()
            .filter(|s| str_label(s, "route") == Some(route))
        {
            let at = r.stacks[s.stack].frames.first();
            if at.is_some_and(|f| f.function.ends_with(leaf)) {
                for (a, v) in t.iter_mut().zip(&s.values) {
                    *a += v;
                }
            }
        }
        t
    };
    assert_eq!(sums("/users", "::users"), [30, 30_000, 30, 30_000]);
    assert_eq!(sums("/orders", "::orders"), [20, 80_000, 0, 0]);
    assert_eq!(sums("/health", "::health"), [10, 20, 0, 0]);
    assert_eq!(sums("/refresh", "::refresh_step"), [4, 2000, 4, 2000]);
    assert_eq!(sums("background", "::users"), [0; 4]);
    let path = path.to_str().unwrap();

    // heapprof top --by route: one group per route, /users among them with
    // exactly its cache; --focus keeps one route.
    let by = heapprof_cli(&["top", path, "--by", "route", "-n", "3"]);
    for route in ["/users", "/orders", "/health", "/refresh", "background"] {
        assert!(by.contains(&format!("== route = {route} ==")), "{by}");
    }
    assert!(!by.contains("(none)"), "every sample has a route:\n{by}");
    let users_row = format!("{}  ", value(30_000, "bytes"));
    assert!(
        by.lines()
            .any(|l| l.trim_start().starts_with(&users_row) && l.ends_with("/users")),
        "{by}"
    );
    let focused = heapprof_cli(&["top", path, "--focus", "route=/users"]);
    assert!(
        focused.contains(&format!("total {}", value(30_000, "bytes"))),
        "{focused}"
    );
    assert!(
        focused.contains("users") && !focused.contains("refresh_step"),
        "{focused}"
    );
    let alloc = heapprof_cli(&[
        "top",
        path,
        "--focus=route=/orders",
        "--sample",
        "alloc_space",
    ]);
    assert!(
        alloc.contains(&format!("total {}", value(80_000, "bytes"))),
        "{alloc}"
    );
    // A value no sample has: named, with the values there are.
    let out = Command::new(env!("CARGO_BIN_EXE_heapprof"))
        .args(["top", path, "--focus", "route=/nope"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("no sample with route=/nope; its route values: ") && err.contains("/users"),
        "{err}"
    );

    // go tool pprof: the labels are tags it lists and filters on.
    let (tags, _) = common::go_pprof(&["-tags", path]);
    for t in [
        "service",
        "demo",
        "zone",
        "eu-1",
        "route",
        "/users",
        "background",
    ] {
        assert!(tags.contains(t), "{t}:\n{tags}");
    }
    let (top, _) = common::go_pprof(&["-top", "-unit=B", "-tagfocus=route=/refresh", path]);
    let line = top.lines().find(|l| l.contains("refresh_step"));
    assert!(
        line.is_some_and(|l| l.trim_start().starts_with("2000B")),
        "{top}"
    );
}

#[test]
fn label_options_on_a_profile_without_labels_and_bad_ones() {
    // Go's heap profiles carry no string labels: one group, (none).
    let go = "tests/data/goheap.pb.gz";
    let by = heapprof_cli(&["top", go, "--by", "route"]);
    assert!(by.contains("== route = (none) =="), "{by}");
    assert_eq!(by.matches("== route =").count(), 1, "{by}");
    let fail = |args: &[&str], want: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_heapprof"))
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            err.contains(want) && err.lines().count() == 1,
            "{args:?}: {err}"
        );
    };
    // A --focus on a label the profile lacks says so, rather than "0 B".
    fail(
        &["top", go, "--focus", "route=/users"],
        "has no `route` label, so --focus route=/users selects nothing; it has no string labels",
    );
    fail(&["top", go, "--focus", "route"], "--focus needs KEY=VALUE");
    fail(&["top", go, "--by"], "--by needs");
    fail(
        &["flamegraph", go, "-o", "-", "--by", "route"],
        "flamegraph does not take --by",
    );
}
