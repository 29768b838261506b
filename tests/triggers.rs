//! Getting profiles out of a running process without touching its code:
//! signals, intervals, exit, fork — and bad configuration that must not hurt
//! the host program. Each test runs the `workload` example as a child.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn spawn(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> (Child, u32) {
    let mut cmd = Command::new(common::example("workload"));
    cmd.args(args)
        .env("HEAPPROF_OUT", dir.join("heap"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn workload");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let pid = line.trim().strip_prefix("pid ").unwrap().parse().unwrap();
    (child, pid)
}

fn kill(pid: u32, sig: i32) {
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(pid as i32, sig) };
}

/// Waits until `n` dumps exist (the dumper thread writes asynchronously).
fn wait_for_dumps(dir: &Path, n: usize) {
    let end = Instant::now() + Duration::from_secs(20);
    while common::dumps(dir).len() < n && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn finish(child: Child) -> (i32, String) {
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn five_signals_give_five_growing_profiles() {
    let dir = common::temp_dir("signals");
    let (child, pid) = spawn(&dir, &[], &["--seconds", "6"]);
    std::thread::sleep(Duration::from_millis(300));
    for i in 1..=5 {
        kill(pid, libc::SIGUSR2);
        wait_for_dumps(&dir, i);
        std::thread::sleep(Duration::from_millis(300));
    }
    kill(pid, libc::SIGTERM);
    finish(child);
    let dumps = common::dumps(&dir);
    let seqs: Vec<_> = dumps.iter().map(|d| (d.0, d.1)).collect();
    assert_eq!(seqs, (0..5).map(|s| (pid, s)).collect::<Vec<_>>());
    let leaked: Vec<u64> = dumps
        .iter()
        .map(|(_, _, p)| common::leaf_totals(&common::read_profile(p), "leak_steadily")[3])
        .collect();
    // Sampled: a leak's live samples are never freed, so its estimate never
    // falls, but a 300 ms gap may bring no new sample.
    assert!(
        leaked.windows(2).all(|w| w[1] >= w[0]) && leaked[4] > leaked[0],
        "in-use bytes of the steady leak should grow: {leaked:?}"
    );
    assert!(common::temp_files(&dir).is_empty());
}

#[test]
fn a_signal_storm_coalesces_and_never_hurts() {
    let dir = common::temp_dir("storm");
    let (child, pid) = spawn(
        &dir,
        &[],
        &["--seconds", "2.5", "--threads", "4", "--tick-ms", "1"],
    );
    std::thread::sleep(Duration::from_millis(200));
    for _ in 0..200 {
        kill(pid, libc::SIGUSR2);
        std::thread::sleep(Duration::from_millis(5));
    }
    let (code, stderr) = finish(child);
    assert_eq!(code, 0, "{stderr}");
    let dumps = common::dumps(&dir);
    assert!(
        !dumps.is_empty() && dumps.len() <= 200,
        "{} dumps",
        dumps.len()
    );
    for (_, _, p) in &dumps {
        let prof = common::read_profile(p);
        assert_eq!(prof.sample_type.len(), 4);
    }
    assert!(common::temp_files(&dir).is_empty());
}

#[test]
fn interval_dumps_and_exit_dump() {
    let dir = common::temp_dir("interval");
    let (child, pid) = spawn(
        &dir,
        &[("HEAPPROF_INTERVAL", "1"), ("HEAPPROF_AT_EXIT", "1")],
        &["--seconds", "5"],
    );
    let (code, stderr) = finish(child);
    assert_eq!(code, 0, "{stderr}");
    let dumps = common::dumps(&dir);
    assert!(dumps.iter().all(|d| d.0 == pid));
    // At least 3 interval dumps in 5 s, plus the one at exit.
    assert!(dumps.len() >= 4, "{dumps:?}");
    // The exit dump is the last and holds the whole steady leak.
    let last = common::read_profile(&dumps.last().unwrap().2);
    assert!(common::leaf_totals(&last, "leak_steadily")[3] > 0);
}

#[test]
fn exit_dump_alone_with_every_sample_by_libunwind() {
    let dir = common::temp_dir("exit");
    // At rate 1 the program's first allocations in `main` are samples,
    // long before the dumper thread could have loaded libunwind.
    let (child, pid) = spawn(
        &dir,
        &[("HEAPPROF_AT_EXIT", "1"), ("HEAPPROF_RATE", "1")],
        &["--seconds", "0.5"],
    );
    let (code, stderr) = finish(child);
    assert_eq!(code, 0, "{stderr}");
    let dumps = common::dumps(&dir);
    assert_eq!(
        dumps.iter().map(|d| (d.0, d.1)).collect::<Vec<_>>(),
        [(pid, 0)]
    );
    let p = common::read_profile(&dumps[0].2);
    assert!(common::leaf_totals(&p, "leak_steadily")[0] > 0);
    common::assert_libunwind_from_the_first_sample(&p);
}

#[test]
fn bad_configuration_is_one_line_each_and_the_program_runs_on() {
    let dir = common::temp_dir("bad-config");
    let mut cmd = Command::new(common::example("workload"));
    // Long enough for interval dumps and a kept peak: each fails on the
    // same directory, which is one problem, said once.
    let out = cmd
        .args(["--seconds", "1.2"])
        .env("HEAPPROF_INTERVAL", "0.2")
        .env("HEAPPROF_OUT", "/nonexistent-dir/sub/heap")
        .env("HEAPPROF_RATE", "lots")
        .env("HEAPPROF_SIGNAL", "NOPE")
        .env("HEAPPROF_AT_EXIT", "1")
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    let one = |needle: &str| {
        let n = lines.iter().filter(|l| l.contains(needle)).count();
        assert_eq!(n, 1, "expected one line naming {needle}:\n{stderr}");
    };
    one("HEAPPROF_RATE=\"lots\"");
    one("HEAPPROF_SIGNAL=\"NOPE\"");
    one("/nonexistent-dir/sub/heap");
    assert_eq!(lines.len(), 3, "{stderr}");
}

#[test]
fn another_signal_can_be_chosen() {
    let dir = common::temp_dir("other-signal");
    let (child, pid) = spawn(&dir, &[("HEAPPROF_SIGNAL", "USR1")], &["--seconds", "2"]);
    std::thread::sleep(Duration::from_millis(300));
    kill(pid, libc::SIGUSR1);
    wait_for_dumps(&dir, 1);
    let (code, _) = finish(child);
    assert_eq!(code, 0);
    assert_eq!(common::dumps(&dir).len(), 1);
}

#[test]
fn a_forked_child_writes_under_its_own_pid() {
    let dir = common::temp_dir("fork");
    let (child, pid) = spawn(
        &dir,
        &[("HEAPPROF_AT_EXIT", "1")],
        &["--seconds", "2", "--threads", "2", "--fork"],
    );
    let (code, stderr) = finish(child);
    assert_eq!(code, 0, "{stderr}");
    // The forked child exits on its own; give it a moment to write.
    let end = Instant::now() + Duration::from_secs(10);
    while common::dumps(&dir).len() < 2 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    let dumps = common::dumps(&dir);
    let pids: std::collections::BTreeSet<u32> = dumps.iter().map(|d| d.0).collect();
    assert_eq!(pids.len(), 2, "{dumps:?}");
    assert!(pids.contains(&pid));
    for (_, seq, p) in &dumps {
        assert_eq!(*seq, 0);
        let prof = common::read_profile(p);
        assert!(common::leaf_totals(&prof, "leak_steadily")[3] > 0);
    }
}

#[test]
fn a_disposition_already_set_is_left_alone_and_said_once() {
    use std::os::unix::process::CommandExt;
    let dir = common::temp_dir("inherited-ignore");
    let mut cmd = Command::new(common::example("workload"));
    cmd.args(["--seconds", "1"])
        .env("HEAPPROF_OUT", dir.join("heap"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: between fork and exec we only call the async-signal-safe
    // signal(2); an ignored disposition survives exec, like `nohup` does.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGUSR2, libc::SIG_IGN);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let pid: u32 = line.trim().strip_prefix("pid ").unwrap().parse().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    kill(pid, libc::SIGUSR2);
    let (code, stderr) = finish(child);
    assert_eq!(code, 0);
    assert!(
        common::dumps(&dir).is_empty(),
        "the ignored signal must stay ignored"
    );
    let said: Vec<_> = stderr.lines().filter(|l| l.contains("SIGUSR2")).collect();
    assert_eq!(said.len(), 1, "{stderr}");
    assert!(said[0].contains("HEAPPROF_SIGNAL"), "{stderr}");
}

#[test]
fn an_application_handler_installed_later_wins() {
    let dir = common::temp_dir("app-handler");
    let (child, pid) = spawn(&dir, &[], &["--seconds", "1.5", "--own-usr2"]);
    std::thread::sleep(Duration::from_millis(300));
    kill(pid, libc::SIGUSR2);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("application got SIGUSR2 1 time"),
        "{stdout}"
    );
    assert!(common::dumps(&dir).is_empty());
}

#[test]
fn signals_still_work_after_the_program_closes_every_descriptor() {
    let dir = common::temp_dir("close-fds");
    let (child, pid) = spawn(&dir, &[], &["--seconds", "4", "--close-fds"]);
    // The dumper notices within a drain period and makes a new pipe.
    std::thread::sleep(Duration::from_millis(2500));
    kill(pid, libc::SIGUSR2);
    wait_for_dumps(&dir, 1);
    let (code, stderr) = finish(child);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(common::dumps(&dir).len(), 1);
}
