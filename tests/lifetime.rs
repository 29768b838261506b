//! heapprof's threads never keep a finished process alive, and a dump the
//! watcher's copies cannot make is not lost (`heapprof::control::lifetime`,
//! `control::dump_in_copy`): C programs from `tests/c/` under the preload
//! library, compared with their bare runs, and a Rust program whose main
//! thread calls `pthread_exit`.
//!
//! A hang is a failure: every process runs under a deadline, then is killed.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

mod common;

/// Longest a program here may run: they all end within a few seconds.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The preload library, built in this test's profile (as `tests/preload.rs`).
fn library() -> &'static Path {
    common::preload_library()
}

fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        common::ensure_deps();
        common::fresh_dir(Path::new(env!("CARGO_TARGET_TMPDIR")).join("lifetime"))
    })
}

/// `tests/c/NAME.c`, compiled once.
fn program(name: &str) -> PathBuf {
    common::c_program(scratch(), name, &["-pthread"])
}

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    /// Exit code, or 128 + signal number.
    code: i32,
    stdout: String,
}

/// Waits for `child` until [`TIMEOUT`]; a hang kills it and fails.
fn wait(child: &mut Child, what: &str) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} hung: still alive after {TIMEOUT:?}, killed");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs `cmd` to its end (stdout to a file: a forked child keeps a pipe
/// open longer than its parent lives).
fn run(cmd: &mut Command, what: &str) -> Outcome {
    let out = scratch().join(format!("{what}.stdout"));
    cmd.stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn().unwrap();
    let code = wait(&mut child, what);
    Outcome {
        code,
        stdout: std::fs::read_to_string(&out).unwrap(),
    }
}

fn bare(prog: &Path) -> Command {
    common::clean_command(prog)
}

fn preloaded(prog: &Path, dir: &Path) -> Command {
    let mut c = common::clean_command(prog);
    c.env("LD_PRELOAD", library())
        .env("HEAPPROF_OUT", dir.join("p"))
        .env("HEAPPROF_AT_EXIT", "1");
    c
}

/// The pids that left a heap profile in `dir`, each checked to decode.
fn profiled_pids(dir: &Path) -> Vec<u32> {
    let mut pids: Vec<u32> = common::dumps(dir)
        .into_iter()
        .map(|(pid, _, path)| {
            common::read_profile(&path);
            pid
        })
        .collect();
    pids.dedup();
    pids
}

/// A program's last thread ends with `pthread_exit` — main after joining a
/// thread, a thread after main, main alone, and the one thread of a child
/// forked from a non-main thread: the profiled process ends when the bare
/// one does, with its status (0) and output (its atexit handler ran), and
/// writes its exit profile; the forked child writes its own.
#[test]
fn a_process_whose_last_thread_calls_pthread_exit_ends_as_bare() {
    let prog = program("lastexit");
    for mode in ["main", "worker", "single", "fork"] {
        let dir = common::fresh_dir(scratch().join(format!("out-{mode}")));
        let expected = run(bare(&prog).arg(mode), &format!("bare-{mode}"));
        assert_eq!(expected.code, 0, "{mode} bare: {expected:?}");
        assert!(expected.stdout.contains("atexit ran"), "{expected:?}");
        let t = Instant::now();
        let got = run(preloaded(&prog, &dir).arg(mode), &format!("lib-{mode}"));
        assert_eq!(got, expected, "{mode}: changed under the library");
        // Promptly, not at a timeout of heapprof's: a look follows the hint.
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{mode}: took {:?}",
            t.elapsed()
        );
        let pids = profiled_pids(&dir);
        let want = if mode == "fork" { 2 } else { 1 };
        assert_eq!(pids.len(), want, "{mode}: exit profiles of {pids:?}");
    }
    // With the HTTP server's threads too (they end with the dumper).
    let dir = common::fresh_dir(scratch().join("out-http"));
    let expected = run(bare(&prog).arg("main"), "bare-http");
    let mut cmd = preloaded(&prog, &dir);
    cmd.arg("main").env("HEAPPROF_HTTP", "0");
    assert_eq!(run(&mut cmd, "lib-http"), expected);
    assert_eq!(profiled_pids(&dir).len(), 1);
}

/// Children forked from a non-main thread while the parent's dumper is
/// busy (growth dumps every 50 ms) each end as bare: no lock heapprof's
/// threads take is held in the child (`control::fork_fresh`,
/// `engine::loader_fence`; a child's new dumper once waited for ever on the
/// trigger state's lock, then on the loader's, held by the parent's).
#[test]
fn children_forked_while_the_dumper_works_end_as_bare() {
    let prog = program("lastexit");
    let dir = common::fresh_dir(scratch().join("out-forks"));
    let expected = run(bare(&prog).arg("forks"), "bare-forks");
    assert!(
        expected
            .stdout
            .contains("100 of 100 children ended with status 0"),
        "{expected:?}"
    );
    // At rate 1 every allocation unwinds (libunwind inside the fence).
    for rate in ["524288", "1"] {
        let mut cmd = preloaded(&prog, &dir);
        cmd.arg("forks")
            .env("HEAPPROF_RATE", rate)
            .env("HEAPPROF_GROWTH", "64k")
            .env("HEAPPROF_INTERVAL", "0.05");
        assert_eq!(run(&mut cmd, "lib-forks"), expected, "rate {rate}");
    }
}

/// Starts `prog MODE`, waits for its "ready" line, sends SIGTERM, and
/// returns how it ended.
fn terminated(mut cmd: Command, what: &str) -> Outcome {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "{what}: no ready line"
        );
        seen.push_str(&line);
        if line == "ready\n" {
            break;
        }
    }
    // The main thread has called pthread_exit (or is about to): give it
    // the moment to, so the signal meets the state under test.
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: kill(2) on the child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let code = wait(&mut child, what);
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    Outcome {
        code,
        stdout: seen + &rest,
    }
}

/// SIGTERM after main's `pthread_exit` reaches the program's remaining
/// thread, as bare: a handler there lets the thread end, and the process
/// then ends with 0 (heapprof's threads, which block the signal, neither
/// take it nor keep the process); with no handler it ends the process.
#[test]
fn sigterm_after_main_has_exited_acts_as_bare() {
    let prog = program("lastexit");
    for mode in ["term", "pause"] {
        let dir = common::fresh_dir(scratch().join(format!("out-{mode}")));
        let mut b = bare(&prog);
        b.arg(mode);
        let expected = terminated(b, &format!("bare {mode}"));
        let mut p = preloaded(&prog, &dir);
        p.arg(mode);
        let got = terminated(p, &format!("preloaded {mode}"));
        assert_eq!(got, expected, "{mode}: changed under the library");
    }
    let term = terminated(
        {
            let mut b = bare(&prog);
            b.arg("term");
            b
        },
        "bare term",
    );
    assert_eq!(term.code, 0, "{term:?}");
    assert!(term.stdout.contains("got SIGTERM"), "{term:?}");
}

/// The Rust way in: a program whose main thread calls `pthread_exit` after
/// its other thread ended ends (the dumper looks at least once a second)
/// with status 0, and writes its exit profile.
#[test]
fn a_rust_program_whose_main_thread_calls_pthread_exit_ends() {
    let exe = common::example("pthread_exit_main");
    let dir = common::fresh_dir(scratch().join("out-rust"));
    let mut cmd = common::clean_command(&exe);
    cmd.env("HEAPPROF_OUT", dir.join("p"))
        .env("HEAPPROF_AT_EXIT", "1");
    let t = Instant::now();
    let got = run(&mut cmd, "rust");
    assert_eq!(
        got,
        Outcome {
            code: 0,
            stdout: "thread allocated\nmain ends\n".into()
        }
    );
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(profiled_pids(&dir).len(), 1);
}

/// What an ended child wrote on its piped stdout and stderr.
fn piped_output(child: &mut Child) -> (String, String) {
    (
        common::read_piped(child.stdout.take()),
        common::read_piped(child.stderr.take()),
    )
}

/// The comment of a profile, decoded.
fn comment(path: &Path) -> String {
    let p = common::read_profile(path);
    p.comment
        .iter()
        .map(|&i| p.string_table[i as usize].clone())
        .collect::<Vec<_>>()
        .join("\n")
}

/// A dump asked for while no copy of the process can be made (a seccomp
/// filter refuses them from then on, `tests/c/copyfail.c`) is not lost:
/// the watcher tries again, then keeps it, and the exit handler — or the
/// dumper thread, when the program creates a thread — writes it
/// in-process. Its comment counts the fallback; stderr says so once.
#[test]
fn a_dump_no_copy_can_make_is_written_later_not_lost() {
    let prog = program("copyfail");
    for mode in ["exit", "thread"] {
        let dir = common::fresh_dir(scratch().join(format!("out-copyfail-{mode}")));
        let mut cmd = preloaded(&prog, &dir);
        cmd.arg(mode)
            .env("HEAPPROF_AT_EXIT", "0")
            .env("HEAPPROF_RATE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let code = wait(&mut child, mode);
        let (out, err) = piped_output(&mut child);
        assert_eq!((code, out.as_str()), (0, "asked\ndone\n"), "{mode}: {err}");
        assert_eq!(
            err.matches("could not be made in a copy").count(),
            1,
            "{mode}: {err}"
        );
        let dumps = common::dumps(&dir);
        assert_eq!(dumps.len(), 1, "{mode}: the asked-for dump only: {dumps:?}");
        let c = comment(&dumps[0].2);
        assert!(c.contains(" dump_fallbacks=1"), "{mode}: {c}");
        let p = common::read_profile(&dumps[0].2);
        let kept = common::leaf_totals(&p, "kept_block");
        assert_eq!(kept[3], 1 << 20, "{mode}: kept_block in use");
    }
}

/// A fork-heavy shell loop (300 pipelines of three programs, every process
/// profiled, interval dumps every 0.2 s) runs as bare — same output, empty
/// stderr, status 0 — and loses no triggered dump: the shell's own dumps
/// are numbered without a gap, one per interval it lived (give or take
/// the first and last), and every profile of every process decodes.
#[test]
fn a_fork_heavy_shell_loop_loses_no_dump() {
    let script = "n=0; for i in $(seq 300); do echo hello $i | tr a-z A-Z | wc -c >/dev/null; \
                  n=$((n+1)); done; echo $n pipelines";
    let bare = common::clean_command("bash")
        .args(["-c", script])
        .output()
        .unwrap();
    assert!(bare.status.success(), "{bare:?}");
    let dir = common::fresh_dir(scratch().join("out-pipelines"));
    let mut cmd = preloaded(Path::new("bash"), &dir);
    cmd.args(["-c", script])
        .env("HEAPPROF_CHILDREN", "1")
        .env("HEAPPROF_INTERVAL", "0.2")
        .env("HEAPPROF_AT_EXIT", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let t = Instant::now();
    let mut child = cmd.spawn().unwrap();
    let shell = child.id();
    let code = wait(&mut child, "pipelines");
    let lived = t.elapsed();
    let (out, err) = piped_output(&mut child);
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (0, String::from_utf8_lossy(&bare.stdout).as_ref(), "")
    );
    let dumps = common::dumps(&dir);
    for (_, _, path) in &dumps {
        common::read_profile(path);
    }
    let seqs: Vec<u64> = dumps
        .iter()
        .filter(|(pid, _, _)| *pid == shell)
        .map(|&(_, seq, _)| seq)
        .collect();
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>());
    let intervals = (lived.as_secs_f64() / 0.2) as usize;
    assert!(
        seqs.len() + 2 >= intervals && intervals >= 5,
        "{} dumps of the shell in {lived:?}",
        seqs.len()
    );
}
