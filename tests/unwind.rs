//! heapprof's own stack walk (cached DWARF rules) equals libunwind's full
//! unwind frame for frame on real programs: `HEAPPROF_UNWIND=check` takes
//! both for every sample at rate 1 and counts the captures that differ.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn scratch(name: &str) -> PathBuf {
    common::fresh_dir(common::temp_dir(&format!("unwind-{name}")))
}

/// The walk's counts in the comment of `PREFIX.PID.SEQ.pb.gz` profiles of
/// `dir`, summed over processes (each its last dump): `[fallbacks, checks,
/// mismatches, rules_forgotten]`.
fn walk_counts(dir: &Path) -> [u64; 4] {
    let mut last = std::collections::BTreeMap::new();
    for (pid, _, path) in common::dumps(dir) {
        last.insert(pid, path);
    }
    assert!(!last.is_empty(), "no profile in {}", dir.display());
    let mut sum = [0u64; 4];
    for path in last.values() {
        let p = common::read_profile(path);
        let comment = &p.string_table[p.comment[0] as usize];
        for (i, key) in [
            "walk_fallbacks=",
            "walk_checks=",
            "walk_mismatches=",
            "rules_forgotten=",
        ]
        .iter()
        .enumerate()
        {
            let v = comment
                .split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .unwrap_or_else(|| panic!("no {key} in {comment}"));
            sum[i] += v.parse::<u64>().unwrap();
        }
    }
    sum
}

/// Runs `cmd` under the preload library at rate 1 with every capture
/// checked; the walk's counts.
fn checked_run(mut cmd: Command, dir: &Path) -> [u64; 4] {
    cmd.env("LD_PRELOAD", common::preload_library())
        .env("HEAPPROF_RATE", "1")
        .env("HEAPPROF_UNWIND", "check")
        .env("HEAPPROF_AT_EXIT", "1")
        .env("HEAPPROF_OUT", dir.join("p"));
    common::output_ok(&mut cmd);
    walk_counts(dir)
}

#[test]
fn the_walk_equals_libunwind_on_c_with_and_without_frame_pointers() {
    for (name, flag) in [
        ("fp", "-fno-omit-frame-pointer"),
        ("nofp", "-fomit-frame-pointer"),
    ] {
        let dir = scratch(name);
        let exe = common::c_program(&dir, "unwind_corpus", &["-pthread", flag]);
        // Three rounds of ~630 allocations on the walk, each checked
        // against libunwind (on these machines); the signal handler's 20 a
        // round go through a signal frame, which the walk leaves to
        // libunwind.
        let [fallbacks, ..] = assert_walks_equal(common::clean_command(&exe), &dir, 1_800);
        assert!(fallbacks >= 60, "{name}: {fallbacks}");
    }
}

#[test]
fn the_walk_equals_libunwind_on_cpython() {
    let dir = scratch("python");
    let script = dir.join("w.py");
    std::fs::write(
        &script,
        "import json, re\n\
         def deep(n):\n    return deep(n - 1) if n else [json.dumps({'k': i, 'v': [i] * 5}) for i in range(2000)]\n\
         for _ in range(5):\n    deep(40)\n    re.findall(r'\\w+', 'a b c ' * 500)\n",
    )
    .unwrap();
    let mut cmd = common::clean_command("python3");
    cmd.arg(&script).env("PYTHONMALLOC", "malloc");
    assert_walks_equal(cmd, &dir, 20_000);
}

/// [`checked_run`], asserting that no capture differed and that at least
/// `checks` were compared; the counts.
fn assert_walks_equal(cmd: Command, dir: &Path, checks: u64) -> [u64; 4] {
    let counts = checked_run(cmd, dir);
    let [_, checked, mismatches, _] = counts;
    assert_eq!(mismatches, 0, "of {checked} checked");
    assert!(checked >= checks, "{checked} checked");
    counts
}

#[test]
fn the_walk_equals_libunwind_on_a_rust_program() {
    let dir = scratch("rust");
    let mut cmd = common::clean_command(common::example("workload"));
    cmd.args(["--seconds", "1", "--tick-ms", "20", "--threads", "2"]);
    assert_walks_equal(cmd, &dir, 1_000);
}

#[test]
fn rules_of_unloaded_code_are_forgotten() {
    let dir = scratch("reload");
    // One plugin built two ways (frame pointers or not), loaded in turn:
    // different code, and rules, where the other was.
    let fp = common::c_program(
        &common::fresh_dir(dir.join("fp")),
        "unwind_plugin",
        &["-shared", "-fPIC", "-fno-omit-frame-pointer"],
    );
    let nofp = common::c_program(
        &common::fresh_dir(dir.join("nofp")),
        "unwind_plugin",
        &["-shared", "-fPIC", "-fomit-frame-pointer"],
    );
    let exe = common::c_program(&dir, "unwind_reload", &["-ldl"]);
    let mut cmd = common::clean_command(&exe);
    cmd.arg(&fp).arg(&nofp);
    let [_, _, _, forgotten] = assert_walks_equal(cmd, &dir, 40 * 50);
    // Every dlclose emptied the table.
    assert!(forgotten >= 40, "{forgotten}");
}
