//! The `heapprof` command on profiles of a real process: the `workload`
//! example leaks steadily in `leak_steadily`, fills a cache once in
//! `fill_cache` and churns in `churn`, dumped on an interval.

mod common;

use std::path::PathBuf;
use std::process::Command;

use heapprof::report::{self, SampleKind};

fn run_workload(name: &str, env: &[(&str, &str)], seconds: &str) -> Vec<PathBuf> {
    let dir = common::temp_dir(name);
    let mut cmd = Command::new(common::example("workload"));
    cmd.args(["--seconds", seconds])
        .env("HEAPPROF_OUT", dir.join("w"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success());
    common::dumps(&dir).into_iter().map(|d| d.2).collect()
}

fn leaf(frames: &[report::Frame]) -> &str {
    frames.first().map_or("", |f| f.function.as_str())
}

/// The value of every stack whose leaf function ends with `f`, summed.
fn at_leaf(top: &report::TopReport, f: &str) -> i64 {
    top.rows
        .iter()
        .filter(|r| leaf(&r.frames).ends_with(f))
        .map(|r| r.value)
        .sum()
}

#[test]
fn leaks_ranks_the_steady_leak_first_and_ignores_churn() {
    let files = run_workload(
        "cli-series",
        &[("HEAPPROF_INTERVAL", "0.5"), ("HEAPPROF_SEED", "7")],
        "6",
    );
    assert!(files.len() >= 8, "{files:?}");
    let profiles: Vec<_> = files.iter().map(|f| report::load(f).unwrap()).collect();

    let trend = report::leak_trend(&profiles, 0).unwrap();
    assert!(
        leaf(&trend.steady[0].frames).ends_with("leak_steadily"),
        "{trend}"
    );
    let named =
        |rows: &[report::TrendRow], f: &str| rows.iter().any(|r| leaf(&r.frames).ends_with(f));
    assert!(
        !named(&trend.steady, "churn") && !named(&trend.plateau, "churn"),
        "{trend}"
    );
    assert!(
        !named(&trend.steady, "fill_cache"),
        "a cache that filled once is no leak:\n{trend}"
    );
    assert!(named(&trend.plateau, "fill_cache"), "{trend}");

    let diff = report::diff(
        &profiles[0],
        profiles.last().unwrap(),
        &SampleKind::InuseSpace,
        5,
    )
    .unwrap();
    assert!(
        leaf(&diff.rows[0].frames).ends_with("leak_steadily"),
        "{diff}"
    );

    // The binary says the same.
    let out = Command::new(env!("CARGO_BIN_EXE_heapprof"))
        .arg("leaks")
        .args(&files)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let first_stack_line = text
        .lines()
        .skip_while(|l| !l.starts_with("steady growth"))
        .find(|l| l.contains("::"))
        .unwrap_or("");
    assert!(first_stack_line.contains("leak_steadily"), "{text}");
}

#[test]
fn top_is_exact_at_rate_one_and_the_flame_graph_names_the_leak() {
    let files = run_workload(
        "cli-exact",
        &[("HEAPPROF_RATE", "1"), ("HEAPPROF_AT_EXIT", "1")],
        "3",
    );
    let last = report::load(files.last().unwrap()).unwrap();
    let top = report::top(&last, &SampleKind::InuseSpace, 0).unwrap();
    let cache = at_leaf(&top, "fill_cache");
    // 256 entries of 64 KiB, plus the cache vector itself (capacity 256 of
    // 16-byte boxed slices) — allocated by its growth inside fill_cache.
    assert_eq!(cache, 256 * 64 * 1024 + 256 * 16, "{top}");
    let objects = report::top(&last, &SampleKind::InuseObjects, 0).unwrap();
    let leaked = at_leaf(&objects, "leak_steadily");
    assert!(leaked > 0);
    assert_eq!(at_leaf(&top, "leak_steadily"), leaked * 64 * 1024);

    let svg = common::temp_dir("cli-flame").join("w.svg");
    let status = Command::new(env!("CARGO_BIN_EXE_heapprof"))
        .args(["flamegraph", files.last().unwrap().to_str().unwrap(), "-o"])
        .arg(&svg)
        .status()
        .unwrap();
    assert!(status.success());
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.trim_end().ends_with("</svg>") && text.contains("<svg"));
    assert!(text.contains("leak_steadily"));
}
