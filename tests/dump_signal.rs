//! The dump signal never disturbs the program (issue #11): no wait comes back
//! early, masks and dispositions read as bare, children start with the mask
//! they would have had, and a program that wants the signal gets it. C
//! programs under the preload library (`tests/c/dumpsig.c`) and a Rust
//! program under `Profiler` (`examples/cwaits.rs`), each sent real signals.
//!
//! Oracles: every wait reports its full duration (the programs measure each
//! one with CLOCK_MONOTONIC and check the return value); one profile per
//! signal, because each signal is sent only once the previous profile exists
//! (signals arriving during a dump coalesce, by design); the children's
//! `SigBlk` line from `/proc/self/status` equals the bare run's.

mod common;

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(60);

/// The preload library, built once in this test's profile.
fn library() -> &'static Path {
    common::preload_library()
}

fn scratch() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dump-signal");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// tests/c/countmalloc.c as a shared library, compiled once.
fn countmalloc() -> PathBuf {
    common::c_program(&scratch(), "countmalloc", &["-shared", "-fPIC", "-Wall"])
}

/// tests/c/dumpsig.c, compiled once.
fn dumpsig() -> PathBuf {
    common::c_program(&scratch(), "dumpsig", &["-pthread", "-Wall", "-ldl"])
}

fn out_dir(name: &str) -> PathBuf {
    common::fresh_dir(scratch().join(format!("out-{}-{name}", std::process::id())))
}

/// A command without the runner's HEAPPROF_* or LD_PRELOAD.
fn clean(prog: impl AsRef<OsStr>) -> Command {
    common::clean_command(prog)
}

fn preloaded(prog: impl AsRef<OsStr>, out: &Path) -> Command {
    let mut c = clean(prog);
    c.env("LD_PRELOAD", library())
        .env("HEAPPROF_OUT", out.join("p"));
    c
}

/// A running program whose stdout lines arrive on a channel.
struct Running {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: std::thread::JoinHandle<String>,
}

fn start(cmd: &mut Command) -> Running {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let mut err = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut s);
        s
    });
    Running {
        stdin: child.stdin.take(),
        child,
        lines,
        stderr,
    }
}

impl Running {
    fn line(&self) -> String {
        self.lines
            .recv_timeout(TIMEOUT)
            .expect("a line from the program")
    }

    fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, sig) }, 0);
    }

    /// Closes stdin, waits for the exit; returns (code, rest of stdout, stderr).
    fn finish(mut self) -> (i32, Vec<String>, String) {
        if let Some(mut i) = self.stdin.take() {
            let _ = i.flush();
        }
        let deadline = Instant::now() + TIMEOUT;
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the program hung");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let rest: Vec<String> = self.lines.iter().collect();
        (
            status.code().unwrap_or(-1),
            rest,
            self.stderr.join().unwrap(),
        )
    }
}

/// Waits until profile number `seq` of `pid` is in `dir`.
fn wait_for_profile(dir: &Path, pid: u32, seq: u64) {
    let deadline = Instant::now() + TIMEOUT;
    while !common::dumps(dir).iter().any(|d| d.0 == pid && d.1 == seq) {
        assert!(
            Instant::now() < deadline,
            "no profile {seq} after its signal"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Sends `n` signals, each once the previous one's profile exists.
fn signal_and_collect(r: &Running, dir: &Path, sig: i32, n: u64) {
    let pid = r.child.id();
    for seq in 0..n {
        r.signal(sig);
        wait_for_profile(dir, pid, seq);
        std::thread::sleep(Duration::from_millis(40));
    }
}

fn waits_under_signals(sig: i32, name: &str, n: u64) {
    let dir = out_dir(&format!("waits-{name}"));
    let mut cmd = preloaded(dumpsig(), &dir);
    cmd.arg("waits").env("HEAPPROF_SIGNAL", name);
    let began = Instant::now();
    let r = start(&mut cmd);
    assert_eq!(r.line(), "ready");
    signal_and_collect(&r, &dir, sig, n);
    // Long enough for every kind of wait to run many times.
    std::thread::sleep(Duration::from_millis(2500).saturating_sub(began.elapsed()));
    let pid = r.child.id();
    let (code, out, stderr) = r.finish();
    assert_eq!(code, 0, "{out:#?}\n{stderr}");
    assert_eq!(stderr, "");
    // Everything but the counts, which depend on timing.
    let summary = out.last().unwrap().clone();
    assert_eq!(
        out[..out.len() - 1],
        [
            "mask thread: none",
            "mask main: none",
            "dispositions: default default"
        ],
        "{out:#?}"
    );
    let counts: Vec<u32> = summary
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    assert_eq!(counts.len(), 3, "{summary}");
    assert_eq!(counts[2], 0, "{summary}");
    assert!(counts[0] >= 8 && counts[1] >= 12, "{summary}");
    // One profile per signal, then the exit's.
    let seqs: Vec<(u32, u64)> = common::dumps(&dir).iter().map(|d| (d.0, d.1)).collect();
    assert_eq!(seqs, (0..=n).map(|s| (pid, s)).collect::<Vec<_>>());
}

#[test]
fn preload_waits_last_their_full_time_under_dozens_of_signals() {
    waits_under_signals(libc::SIGUSR2, "USR2", 30);
}

#[test]
fn preload_same_rules_for_another_signal() {
    waits_under_signals(libc::SIGUSR1, "USR1", 10);
}

#[test]
fn preload_children_start_with_the_mask_they_would_have_had() {
    let bare = clean(dumpsig()).arg("spawn").output().unwrap();
    assert!(bare.status.success());
    let bare_out = String::from_utf8_lossy(&bare.stdout).into_owned();
    let zero = bare_out
        .lines()
        .filter(|l| l.ends_with("SigBlk:\t0000000000000000"))
        .count();
    assert_eq!(zero, 9, "{bare_out}");
    assert!(bare_out.contains("posix_spawn+SIGWINCH: SigBlk:\t0000000008000000"));
    for sig in ["USR2", "USR1"] {
        let dir = out_dir(&format!("spawn-{sig}"));
        let under = preloaded(dumpsig(), &dir)
            .arg("spawn")
            .env("HEAPPROF_SIGNAL", sig)
            .output()
            .unwrap();
        assert!(under.status.success());
        assert_eq!(String::from_utf8_lossy(&under.stdout), bare_out, "{sig}");
        // Nothing on stderr but the note that the children were not profiled.
        let stderr = String::from_utf8_lossy(&under.stderr);
        let other: Vec<&str> = stderr
            .lines()
            .filter(|l| !l.contains("set HEAPPROF_CHILDREN=1"))
            .collect();
        assert!(other.is_empty(), "{sig}: {stderr}");
        assert_eq!(common::dumps(&dir).len(), 1, "{sig}: the exit profile");
    }
}

fn program_wants_it(mode: &str, sig: i32, name: &str, expect: &[&str], said: &str) {
    let dir = out_dir(&format!("{mode}-{name}"));
    let mut cmd = preloaded(dumpsig(), &dir);
    cmd.args([mode, &sig.to_string()])
        .env("HEAPPROF_SIGNAL", name);
    let r = start(&mut cmd);
    assert_eq!(r.line(), "ready");
    let mut got = Vec::new();
    for _ in 0..3 {
        r.signal(sig);
        if mode == "handler" {
            std::thread::sleep(Duration::from_millis(100));
        } else {
            got.push(r.line());
        }
    }
    let (code, out, stderr) = r.finish();
    got.extend(out);
    assert_eq!(code, 0, "{got:?}\n{stderr}");
    assert_eq!(got, expect);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains(said), "{stderr}");
    // A signal the program leaves alone is suggested, named as the
    // variable takes it.
    assert!(
        lines[0].contains("HEAPPROF_SIGNAL=RTMIN+2 and send SIGRTMIN+2"),
        "{stderr}"
    );
    // No dump on the signal: the exit profile only.
    let seqs: Vec<u64> = common::dumps(&dir).iter().map(|d| d.1).collect();
    assert_eq!(seqs, [0], "{mode}");
}

#[test]
fn preload_a_program_that_blocks_and_waits_for_the_signal_gets_it() {
    let got = ["got 12 from parent"; 3];
    program_wants_it(
        "sigwait",
        libc::SIGUSR2,
        "USR2",
        &got,
        "blocks SIGUSR2 itself",
    );
    program_wants_it(
        "signalfd",
        libc::SIGUSR2,
        "USR2",
        &got,
        "blocks SIGUSR2 itself",
    );
    let got = ["got 10 from parent"; 3];
    program_wants_it(
        "sigwait",
        libc::SIGUSR1,
        "USR1",
        &got,
        "blocks SIGUSR1 itself",
    );
}

/// A server's workers each block most signals for a moment while they
/// start (as PostgreSQL's backends do: not a wish for the dump signal),
/// then set their own handler for it: heapprof says so once for the whole
/// process tree, not once per worker.
#[test]
fn preload_workers_taking_the_signal_are_said_once_per_tree() {
    let dir = out_dir("workers");
    let out = preloaded(dumpsig(), &dir)
        .args(["workers", &libc::SIGUSR2.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "workers done\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains("the program set its own handler for SIGUSR2"),
        "{stderr}"
    );
}

#[test]
fn preload_a_program_handler_wins_and_runs_where_it_would_bare() {
    program_wants_it(
        "handler",
        libc::SIGUSR2,
        "USR2",
        &["handler ran 3 times, 0 on threads the program did not create"],
        "set its own handler for SIGUSR2",
    );
}

#[test]
fn rust_program_c_library_waits_last_their_full_time() {
    let dir = out_dir("rust-waits");
    let mut cmd = clean(common::example("cwaits"));
    cmd.env("HEAPPROF_OUT", dir.join("p"));
    let r = start(&mut cmd);
    let pid: u32 = r.line().strip_prefix("pid ").unwrap().parse().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    signal_and_collect(&r, &dir, libc::SIGUSR2, 20);
    let (code, out, stderr) = r.finish();
    assert_eq!(code, 0, "{out:#?}\n{stderr}");
    assert_eq!(stderr, "");
    assert_eq!(out.len(), 1, "{out:#?}");
    assert!(out[0].ends_with("problems 0"), "{out:#?}");
    let seqs: Vec<(u32, u64)> = common::dumps(&dir).iter().map(|d| (d.0, d.1)).collect();
    assert_eq!(seqs, (0..20).map(|s| (pid, s)).collect::<Vec<_>>());
}

#[test]
fn preload_signal_wrappers_never_allocate() {
    // countmalloc.so after the library: the allocator it forwards to, which
    // counts what each thread allocates — the library's own allocations
    // included. With sampling off every allocation reaches it (a sample
    // would be served by heapprof's sample heap, which it cannot see).
    for sig in [libc::SIGUSR2, libc::SIGUSR1] {
        let dir = out_dir(&format!("noalloc-{sig}"));
        let name = if sig == libc::SIGUSR2 { "USR2" } else { "USR1" };
        let out = preloaded(dumpsig(), &dir)
            .args(["noalloc", &sig.to_string()])
            .env(
                "LD_PRELOAD",
                format!("{} {}", library().display(), countmalloc().display()),
            )
            .env("HEAPPROF_RATE", "0")
            .env("HEAPPROF_SIGNAL", name)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}");
        let lines: Vec<&str> = stdout.lines().collect();
        // The counter sees a malloc (and perhaps the engine's own first
        // allocations on this thread).
        let one: u32 = lines[0]
            .strip_prefix("one malloc counts ")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(one >= 1, "{stdout}");
        assert_eq!(lines[1..], ["allocations in the wrappers: 0"], "{name}");
        // The yield at the end was still said, once, by the dumper.
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains(&format!("blocks SIG{name} itself")),
            "{stderr}"
        );
    }
}

#[test]
fn preload_raise_of_the_signal_still_dumps() {
    // raise() is thread-directed: the raising thread blocks the signal, so
    // the library asks the dumper itself, as the handler would have.
    let dir = out_dir("raise");
    let out = preloaded(dumpsig(), &dir)
        .args(["raise", &libc::SIGUSR2.to_string()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert_eq!(
        stdout,
        "profile 0 written\nprofile 1 written\nprofile 2 written\n"
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    assert_eq!(common::dumps(&dir).len(), 4, "three raised, one at exit");
}
