//! What dumps cost the profiled process's memory: symbolized dumps parse
//! debug info, and none of it may stay behind. An idle program with ~21 MiB
//! live (examples/idle.rs) takes three SIGUSR2 dumps; its RssAnon afterwards
//! and its peak (VmHWM) stay within a loose bound of where they started (the figures to meet are
//! measured by scripts/bench-dump-memory.sh, not here).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn status_kb(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/PID/status"))
}

fn rss_anon_kb(pid: u32) -> u64 {
    status_kb(pid, "RssAnon")
}

#[test]
fn three_symbolized_dumps_keep_rss_anon_and_the_peak_within_8_mb() {
    let dir = common::temp_dir("dump-memory");
    let mut child = Command::new(common::example("idle"))
        .args(["--mb", "21", "--seconds", "60"])
        .env("HEAPPROF_OUT", dir.join("p"))
        .env("HEAPPROF_AT_EXIT", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.starts_with("ready"), "{line}");
    let before = rss_anon_kb(pid);
    let peak_before = status_kb(pid, "VmHWM");
    let mut after_each = Vec::new();
    for n in 1..=3 {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid as i32, libc::SIGUSR2) };
        let t = Instant::now();
        while common::dumps(&dir).len() < n {
            assert!(t.elapsed() < Duration::from_secs(30), "dump {n} never came");
            std::thread::sleep(Duration::from_millis(10));
        }
        // The file is renamed into place after the dump's memory is freed.
        std::thread::sleep(Duration::from_millis(100));
        after_each.push(rss_anon_kb(pid));
    }
    let after = rss_anon_kb(pid);
    let peak = status_kb(pid, "VmHWM");
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());

    // The dumps are symbolized: the program's own functions with lines.
    let (_, _, last) = common::dumps(&dir).pop().unwrap();
    let p = common::read_profile(&last);
    common::assert_dwarf_parsed_in_a_copy(&p);
    let s = |i: i64| p.string_table[i as usize].as_str();
    assert!(
        p.function
            .iter()
            .any(|f| s(f.name).ends_with("idle::grow") && s(f.filename).ends_with("idle.rs")),
        "the program's functions are named"
    );
    assert!(p.location.iter().any(|l| l.line.iter().any(|x| x.line > 0)));
    // Later dumps of the same stacks reuse the kept frames: no growth.
    let later_mb = (after_each[2] as f64 - after_each[0] as f64) / 1024.0;
    assert!(
        later_mb <= 2.0,
        "RssAnon grew {later_mb:.1} MB from dump 1 to dump 3: {after_each:?} kB"
    );
    // The DWARF is parsed in a copy of the process: the program's peak
    // does not hold its pages (in-process it was +18 MB).
    let peak_mb = (peak as f64 - peak_before as f64) / 1024.0;
    assert!(
        peak_mb <= 8.0,
        "VmHWM rose {peak_mb:.1} MB over three dumps ({peak_before} kB -> {peak} kB)"
    );
    let growth_mb = (after as f64 - before as f64) / 1024.0;
    assert!(
        growth_mb <= 8.0,
        "RssAnon grew {growth_mb:.1} MB over three dumps ({before} kB -> {after} kB)"
    );
}
