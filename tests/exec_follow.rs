//! The preload library follows a process through `exec` and profiles its
//! children only when asked (`HEAPPROF_CHILDREN=1`), and `heapprof run`
//! profiles a command in one line. Real wrappers (`sh` scripts, `env`,
//! `nice`), a C program that leaks a known amount (`tests/c/leaker.c`:
//! three blocks of 1000 bytes in `leak_three`), and python3's
//! `subprocess`; profiles are the files the processes leave, exact at
//! `HEAPPROF_RATE=1`.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

mod common;

/// What `leak_three` leaves at rate 1: [alloc_objects, alloc_space,
/// inuse_objects, inuse_space].
const LEAKED: [u64; 4] = [3, 3000, 3, 3000];
const CHILDREN_LINE: &str = "HEAPPROF_CHILDREN";

/// The preload library, built in this test run's profile (so `heapprof run`
/// finds it next to the `heapprof` binary).
fn library() -> &'static Path {
    common::preload_library()
}

fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        common::ensure_deps();
        common::fresh_dir(Path::new(env!("CARGO_TARGET_TMPDIR")).join("exec-follow"))
    })
}

fn out_dir(name: &str) -> PathBuf {
    common::fresh_dir(scratch().join(format!("out-{name}")))
}

/// `tests/c/NAME.c`, compiled once.
fn c_program(name: &str) -> PathBuf {
    common::c_program(scratch(), name, &["-ldl"])
}

/// `tests/c/leaker.c`.
fn leaker() -> &'static Path {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| c_program("leaker"))
}

/// A `#!/bin/sh` script in the scratch directory.
fn script(name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = scratch().join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// A command with none of the test runner's HEAPPROF_* or LD_PRELOAD.
fn clean(prog: impl AsRef<OsStr>) -> Command {
    common::clean_command(prog)
}

/// `prog` under the library at rate 1, profiles to `out/p.PID.SEQ.pb.gz`.
fn preloaded(prog: impl AsRef<OsStr>, out: &Path) -> Command {
    let mut c = clean(prog);
    c.env("LD_PRELOAD", library())
        .env("HEAPPROF_OUT", out.join("p"))
        .env("HEAPPROF_RATE", "1");
    c
}

/// Runs to completion; returns (output, pid).
fn run(cmd: &mut Command) -> (Output, u32) {
    let child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let pid = child.id();
    (child.wait_with_output().unwrap(), pid)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// (pid, leak_three's totals) of every profile in `dir`.
fn leaks(dir: &Path) -> Vec<(u32, [u64; 4])> {
    common::dumps(dir)
        .iter()
        .map(|(pid, _, p)| {
            (
                *pid,
                common::leaf_totals(&common::read_profile(p), "leak_three"),
            )
        })
        .collect()
}

/// The profile of `pid`, which must be the only one holding leak_three.
fn leak_of(dir: &Path, pid: u32) -> [u64; 4] {
    let all = leaks(dir);
    let with: Vec<_> = all.iter().filter(|(_, l)| l[0] > 0).collect();
    assert_eq!(with.len(), 1, "one profile of the leaker: {all:?}");
    assert_eq!(
        with[0].0, pid,
        "written under the pid of the process started: {all:?}"
    );
    with[0].1
}

#[test]
fn a_shim_that_execs_the_program_profiles_the_program() {
    let shim = script("shim", &format!("exec {} \"$@\"", leaker().display()));
    let dir = out_dir("shim");
    let (out, pid) = run(preloaded(&shim, &dir).arg("5"));
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    assert_eq!(text(&out.stdout), "leaker: LD_PRELOAD set\n");
    assert_eq!(text(&out.stderr), "");
    assert_eq!(leak_of(&dir, pid), LEAKED);
}

#[test]
fn a_pyenv_style_python_shim_profiles_python() {
    let shim = script("python3", &format!("exec {} \"$@\"", python()));
    let dir = out_dir("pyshim");
    let code = "import sys\nkept = [bytearray(100000) for _ in range(20)]\nsys.exit(3)\n";
    let (out, pid) = run(preloaded(&shim, &dir)
        .env("PYTHONMALLOC", "malloc")
        .env("HEAPPROF_RATE", "4096")
        .args(["-c", code]));
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(text(&out.stderr), "");
    let all = common::dumps(&dir);
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].0, pid);
    // Two megabytes of bytearrays were allocated (and freed by Python's own
    // finalization, before the exit dump).
    let p = common::read_profile(&all[0].2);
    let allocated: u64 = heapprof::tallies_of(&p).iter().map(|t| t.alloc_space).sum();
    assert!(allocated >= 2_000_000, "python's bytearrays: {allocated}");
}

#[test]
fn env_and_a_two_level_wrapper_chain_profile_the_real_program() {
    let dir = out_dir("env");
    let (out, pid) = run(preloaded("env", &dir).arg("FOO=1").arg(leaker()));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(leak_of(&dir, pid), LEAKED);

    // start.sh execs wrap.sh, which execs nice, then env, then the program.
    let inner = script(
        "wrap.sh",
        &format!("exec nice -n 1 env BAR=2 {} \"$@\"", leaker().display()),
    );
    let outer = script(
        "start.sh",
        &format!("cd /\nexec {} \"$@\"", inner.display()),
    );
    let dir = out_dir("chain");
    let (out, pid) = run(preloaded(&outer, &dir).arg("9"));
    assert_eq!(out.status.code(), Some(9), "{out:?}");
    assert_eq!(text(&out.stdout), "leaker: LD_PRELOAD set\n");
    assert_eq!(text(&out.stderr), "");
    assert_eq!(leak_of(&dir, pid), LEAKED);
}

#[test]
fn an_image_after_exec_numbers_on_without_overwriting() {
    // The script dumps (SIGUSR2 to itself), waits with builtins only until
    // that profile is in place, then becomes the leaker, whose exit dump
    // restarts at sequence 0 and must skip the name already taken.
    let dir = out_dir("renumber");
    let prefix = dir.join("p");
    let s = script(
        "dump-then-exec.sh",
        &format!(
            "kill -USR2 $$\nwhile [ ! -e \"{}.$$.0.pb.gz\" ]; do :; done\nexec {}",
            prefix.display(),
            leaker().display()
        ),
    );
    let (out, pid) = run(&mut preloaded(&s, &dir));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(text(&out.stderr), "");
    let all = common::dumps(&dir);
    let seen: Vec<(u32, u64)> = all.iter().map(|(p, s, _)| (*p, *s)).collect();
    assert_eq!(seen, [(pid, 0), (pid, 1)]);
    let leak = |i: usize| common::leaf_totals(&common::read_profile(&all[i].2), "leak_three");
    assert_eq!(leak(0), [0; 4], "the shell's profile");
    assert_eq!(leak(1), LEAKED, "the program's");
}

#[test]
fn valgrinds_launcher_is_followed_to_the_program() {
    // `valgrind` is a shell script that execs valgrind.bin, which execs the
    // tool, which loads the program: one process throughout.
    let dir = out_dir("valgrind");
    let (out, pid) = run(preloaded("valgrind", &dir)
        .args(["-q", "--tool=none"])
        .arg(leaker())
        .arg("6"));
    assert_eq!(out.status.code(), Some(6), "{out:?}");
    assert_eq!(text(&out.stdout), "leaker: LD_PRELOAD set\n");
    assert_eq!(leak_of(&dir, pid), LEAKED);
}

#[test]
fn forked_children_are_profiled_only_when_asked() {
    let cmd = format!("{0}; {0}; true", leaker().display());
    let dir = out_dir("sh-child");
    let (out, _) = run(preloaded("sh", &dir).args(["-c", &cmd]));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // The children ran with the library inert (still listed in LD_PRELOAD).
    assert_eq!(
        text(&out.stdout),
        "leaker: LD_PRELOAD set\nleaker: LD_PRELOAD set\n"
    );
    assert!(
        leaks(&dir).iter().all(|(_, l)| l[0] == 0),
        "{:?}",
        leaks(&dir)
    );
    let err = text(&out.stderr);
    assert_eq!(err.matches(CHILDREN_LINE).count(), 1, "said once:\n{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    // An exec chain is one process: said once, though two images each
    // started a child (the socket outlives the exec).
    let dir = out_dir("sh-exec-chain");
    let inner = format!("{}; true", leaker().display());
    let (out, _) = run(preloaded("sh", &dir).args([
        "-c",
        &format!("{}; exec sh -c '{inner}'", leaker().display()),
    ]));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let err = text(&out.stderr);
    assert_eq!(err.matches(CHILDREN_LINE).count(), 1, "said once:\n{err}");

    let dir = out_dir("sh-children");
    let (out, sh) = run(preloaded("sh", &dir)
        .env("HEAPPROF_CHILDREN", "1")
        .args(["-c", &format!("{}; true", leaker().display())]));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(text(&out.stderr), "");
    let all = leaks(&dir);
    let child: Vec<_> = all.iter().filter(|(pid, _)| *pid != sh).collect();
    assert_eq!(child.len(), 1, "the child's own profile: {all:?}");
    assert_eq!(child[0].1, LEAKED);
}

#[test]
fn python_subprocess_children_follow_the_rule() {
    let code = format!(
        "import subprocess, sys\nr = subprocess.run([{:?}, '4'])\nsys.exit(r.returncode)\n",
        leaker().display().to_string()
    );
    let dir = out_dir("py-sub");
    let (out, py) = run(preloaded(python(), &dir)
        .env("PYTHONMALLOC", "malloc")
        .env("HEAPPROF_RATE", "524288")
        .args(["-c", &code]));
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert_eq!(text(&out.stdout), "leaker: LD_PRELOAD set\n");
    let err = text(&out.stderr);
    assert_eq!(err.matches(CHILDREN_LINE).count(), 1, "{err}");
    let all = common::dumps(&dir);
    assert!(
        all.iter().all(|(pid, _, _)| *pid == py),
        "only python: {all:?}"
    );

    let dir = out_dir("py-sub-children");
    let (out, py) = run(preloaded(python(), &dir)
        .env("PYTHONMALLOC", "malloc")
        .env("HEAPPROF_CHILDREN", "1")
        .env("HEAPPROF_RATE", "1")
        .args(["-c", &code]));
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert!(!text(&out.stderr).contains(CHILDREN_LINE), "{out:?}");
    let all = leaks(&dir);
    let child: Vec<_> = all.iter().filter(|(pid, _)| *pid != py).collect();
    assert_eq!(child.len(), 1, "{all:?}");
    assert_eq!(child[0].1, LEAKED);
}

/// The real python3 (a pyenv shim, itself a bash script forking helpers,
/// may come first in PATH).
fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

#[test]
fn posix_spawn_vfork_and_system_children_follow_the_rule() {
    let spawner = c_program("spawner");
    let leaker = leaker().to_str().unwrap();
    let probe = |threads: &str, malloc: &str| {
        format!("leaker: LD_PRELOAD set\nleaker: {threads}, malloc {malloc}\n").repeat(3)
            + "spawner: 0 0 0\n"
    };
    // Bare, for reference: one thread, malloc bound to glibc's.
    let (out, _) = run(clean(&spawner).env("LEAKER_PROBE", "1").arg(leaker));
    assert_eq!(
        text(&out.stdout),
        probe("1 thread", "global").replace("LD_PRELOAD set", "LD_PRELOAD unset")
    );

    // Default: each child inert — no dumper thread, its GOT calling glibc
    // directly (unhooked) — no profile of it, and one line from the parent.
    let dir = out_dir("spawner");
    let (out, parent) = run(preloaded(&spawner, &dir)
        .env("LEAKER_PROBE", "1")
        .arg(leaker));
    assert_eq!(text(&out.stdout), probe("1 thread", "direct"), "{out:?}");
    let err = text(&out.stderr);
    assert_eq!(err.matches(CHILDREN_LINE).count(), 1, "{err}");
    assert!(
        leaks(&dir).iter().all(|(_, l)| l[0] == 0),
        "{:?}",
        leaks(&dir)
    );
    assert!(common::dumps(&dir).iter().all(|(pid, _, _)| *pid == parent));

    // HEAPPROF_CHILDREN=1: three profiled children, each exact, each under
    // its own pid.
    let dir = out_dir("spawner-children");
    let (out, parent) = run(preloaded(&spawner, &dir)
        .env("HEAPPROF_CHILDREN", "1")
        .env("LEAKER_PROBE", "1")
        .arg(leaker));
    assert_eq!(text(&out.stdout), probe("2 threads", "global"), "{out:?}");
    assert_eq!(text(&out.stderr), "");
    let children: Vec<_> = leaks(&dir)
        .into_iter()
        .filter(|(pid, _)| *pid != parent)
        .collect();
    assert_eq!(children.len(), 3, "{children:?}");
    assert!(children.iter().all(|(_, l)| *l == LEAKED), "{children:?}");
}

fn heapprof_run(dir: &Path, args: &[&str]) -> (Output, u32) {
    library();
    let mut c = clean(env!("CARGO_BIN_EXE_heapprof"));
    c.arg("run")
        .args(["--rate", "1", "--out"])
        .arg(dir)
        .args(args);
    run(&mut c)
}

#[test]
fn heapprof_run_profiles_a_command_and_passes_its_status_through() {
    let leaker = leaker().to_str().unwrap();
    for (arg, status) in [("0", 0), ("7", 7)] {
        let dir = out_dir(&format!("run-{arg}"));
        let (out, _) = heapprof_run(&dir, &["--", leaker, arg]);
        assert_eq!(out.status.code(), Some(status), "{out:?}");
        assert_eq!(text(&out.stdout), "leaker: LD_PRELOAD set\n");
        let all = common::dumps(&dir);
        assert_eq!(all.len(), 1, "{all:?}");
        let (pid, _, path) = &all[0];
        assert_eq!(leak_of(&dir, *pid), LEAKED);
        // Where it went, and the top stack, on stderr.
        let err = text(&out.stderr);
        assert!(
            err.contains(&format!("{}  (main process: leaker)", path.display())),
            "{err}"
        );
        assert!(err.contains("leak_three"), "{err}");
    }
    // Death by SIGTERM: 128 + 15, as the shell says.
    let dir = out_dir("run-sig");
    let (out, _) = heapprof_run(&dir, &["--", leaker, "sig", "15"]);
    assert_eq!(out.status.code(), Some(143), "{out:?}");
    // Not found: 127, one line.
    let (out, _) = heapprof_run(&dir, &["--", "no-such-command-heapprof"]);
    assert_eq!(out.status.code(), Some(127));
    assert_eq!(
        text(&out.stderr),
        "heapprof: no-such-command-heapprof: command not found\n"
    );
}

#[test]
fn heapprof_run_out_is_relative_to_where_it_ran_whatever_the_command_does() {
    library();
    // The wrapper changes directory before it execs the program.
    let s = script(
        "cd-then-exec.sh",
        &format!("cd /\nexec {} \"$@\"", leaker().display()),
    );
    let work = out_dir("run-relative");
    let mut c = clean(env!("CARGO_BIN_EXE_heapprof"));
    c.current_dir(&work)
        .args(["run", "--rate", "1", "--out", "profiles", "--"])
        .arg(&s);
    let (out, _) = run(&mut c);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let dir = work.join("profiles");
    assert_eq!(leak_of(&dir, pid_of_only(&dir)), LEAKED);

    // No command: a usage error, status 2, one line.
    let (out, _) = run(clean(env!("CARGO_BIN_EXE_heapprof")).args(["run", "--rate", "1"]));
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(text(&out.stderr).lines().count(), 1, "{out:?}");
    assert!(text(&out.stderr).contains("needs a command"), "{out:?}");
}

/// The pid of the only profile in `dir`.
fn pid_of_only(dir: &Path) -> u32 {
    let all = common::dumps(dir);
    assert_eq!(all.len(), 1, "{all:?}");
    all[0].0
}

#[test]
fn heapprof_run_forwards_signals_sent_to_it() {
    let dir = out_dir("run-forward");
    library();
    let mut c = clean(env!("CARGO_BIN_EXE_heapprof"));
    c.args(["run", "--out"])
        .arg(&dir)
        .args([
            "--",
            "sh",
            "-c",
            "trap 'echo got USR1; exit 5' USR1; echo ready; while :; do sleep 0.05; done",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let mut child = c.spawn().unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert_eq!(line, "ready\n");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGUSR1) };
    line.clear();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert_eq!(line, "got USR1\n");
    assert_eq!(child.wait().unwrap().code(), Some(5));
}

#[test]
fn heapprof_run_children_profiles_what_a_script_starts() {
    let s = script("forks.sh", &format!("{} 0\necho after", leaker().display()));
    let dir = out_dir("run-children");
    let (out, main) = heapprof_run(&dir, &["--children", "--", s.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(text(&out.stdout), "leaker: LD_PRELOAD set\nafter\n");
    let all = leaks(&dir);
    let with: Vec<_> = all.iter().filter(|(_, l)| l[0] > 0).collect();
    assert_eq!(with.len(), 1, "{all:?}");
    assert_ne!(with[0].0, main, "the forked program, under its own pid");
    assert_eq!(with[0].1, LEAKED);
    assert!(!text(&out.stderr).contains(CHILDREN_LINE));
    // The black boxes `run` turned on (33 MiB each) go with processes that
    // exited: the script's, before and after its exec, and the program's.
    let boxes: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().ends_with(".blackbox"))
        .collect();
    assert!(boxes.is_empty(), "{boxes:?}");
    // Each profile is named by its process's command.
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("(pid {}: leaker)", with[0].0)),
        "{err}"
    );

    // Without --children: not profiled, and said once.
    let dir = out_dir("run-no-children");
    let (out, _) = heapprof_run(&dir, &["--", s.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(leaks(&dir).iter().all(|(_, l)| l[0] == 0));
    let err = text(&out.stderr);
    assert_eq!(err.matches(CHILDREN_LINE).count(), 1, "{err}");
}

#[test]
fn heapprof_run_says_why_a_static_program_cannot_be_seen() {
    let exe = scratch().join("static-true");
    let src = scratch().join("static-true.c");
    std::fs::write(&src, "int main(void) { return 3; }\n").unwrap();
    let out = Command::new("cc")
        .args(["-static", "-O2", "-o"])
        .arg(&exe)
        .arg(&src)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let dir = out_dir("run-static");
    let (out, _) = heapprof_run(&dir, &["--", exe.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "it still runs: {out:?}");
    let err = text(&out.stderr);
    assert!(err.contains("is statically linked"), "{err}");
    assert_eq!(err.matches("is statically linked").count(), 1, "{err}");
}

#[test]
fn heapprof_run_says_how_few_samples_an_estimate_rests_on() {
    library();
    let dir = out_dir("run-few");
    let mut c = clean(env!("CARGO_BIN_EXE_heapprof"));
    c.args(["run", "--rate", "500", "--out"])
        .arg(&dir)
        .arg("--")
        .arg(leaker())
        .env("HEAPPROF_SEED", "3");
    let (out, _) = run(&mut c);
    assert!(out.status.success(), "{out:?}");
    let err = text(&out.stderr);
    assert!(err.contains("leak_three"), "{err}");
    assert!(
        err.contains("these figures rest on ")
            && err.contains("at one sample per 500 bytes")
            && err.contains("`heapprof run --rate 1` counts every allocation"),
        "{err}"
    );
}
