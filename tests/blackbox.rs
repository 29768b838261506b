//! The black box (`HEAPPROF_BLACKBOX`): real programs killed by the kernel's
//! OOM killer in a memory cgroup, or by SIGKILL, and the heap profile
//! recovered from what they left. Needs root (cgroups, mounts), as these
//! machines give; a C program under the preload library and a Rust program
//! with `Profiler` (examples/oom_leak.rs).

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

mod common;

const LIMIT_MIB: u64 = 128;
const CHUNK: u64 = 256 << 10;

fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        common::ensure_deps();
        common::fresh_dir(Path::new(env!("CARGO_TARGET_TMPDIR")).join("blackbox"))
    })
}

/// The preload library of this test build's profile.
fn preload() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let target = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
        let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cargo.args(["build", "--quiet", "-p", "heapprof-preload"]);
        if target.file_name() == Some(OsStr::new("release")) {
            cargo.arg("--release");
        }
        assert!(cargo.status().unwrap().success());
        target.join("libheapprof_preload.so")
    })
}

/// tests/c/oomleak.c, compiled once.
fn oomleak() -> &'static Path {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| common::c_program(scratch(), "oomleak", &[]))
}

/// A memory cgroup with a limit, removed when dropped.
struct Cgroup {
    dir: PathBuf,
    v2: bool,
}

impl Cgroup {
    fn new(name: &str, limit: u64) -> Cgroup {
        let v1 = Path::new("/sys/fs/cgroup/memory");
        let (base, v2) = if v1.join("memory.limit_in_bytes").exists() {
            (v1.to_path_buf(), false)
        } else {
            (PathBuf::from("/sys/fs/cgroup"), true)
        };
        let dir = base.join(format!("heapprof-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir(&dir);
        std::fs::create_dir(&dir)
            .unwrap_or_else(|e| panic!("mkdir {}: {e} (needs root)", dir.display()));
        let file = if v2 {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        };
        std::fs::write(dir.join(file), limit.to_string()).unwrap();
        Cgroup { dir, v2 }
    }

    /// `argv` run inside this cgroup (a shell joins it, then execs).
    fn command(&self, argv: &[&OsStr]) -> Command {
        let mut c = common::clean_command("sh");
        c.arg("-c")
            .arg(r#"echo $$ > "$0/cgroup.procs" && exec "$@""#)
            .arg(&self.dir)
            .args(argv);
        c
    }

    fn oom_kills(&self) -> u64 {
        let file = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        let text = std::fs::read_to_string(self.dir.join(file)).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no oom_kill in {file}: {text}"))
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for _ in 0..100 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

/// Runs `cmd` to its death; returns its exit status and the last
/// `leaked N` it printed.
fn run_to_death(mut cmd: Command) -> (std::process::ExitStatus, u64) {
    let out = cmd.stderr(Stdio::inherit()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let leaked = text
        .lines()
        .filter_map(|l| l.strip_prefix("leaked "))
        .next_back()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (out.status, leaked)
}

/// The first line the child writes on its stdout (a pipe).
fn first_line(child: &mut std::process::Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    line
}

fn heapprof() -> Command {
    common::clean_command(env!("CARGO_BIN_EXE_heapprof"))
}

/// `heapprof recover` of the one black box in `dir`, checked by `go tool
/// pprof`; returns the profile.
fn recover(dir: &Path) -> heapprof::profile::proto::Profile {
    let boxes: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension() == Some(OsStr::new("blackbox")))
        .collect();
    assert_eq!(
        boxes.len(),
        1,
        "one black box in {}: {boxes:?}",
        dir.display()
    );
    let out = dir.join("recovered.pb.gz");
    let r = heapprof()
        .arg("recover")
        .arg(&boxes[0])
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let (top, _) = common::go_pprof(&["-top", "-sample_index=inuse_space", out.to_str().unwrap()]);
    assert!(top.contains("flat%"), "{top}");
    common::read_profile(&out)
}

/// A program that leaks until the OOM killer ends it: the recovered profile
/// names the leak with its in-use within sampling tolerance of the truth.
fn killed_by_the_oom_killer(name: &str, argv: &[&OsStr], preload: bool) {
    let dir = common::fresh_dir(scratch().join(name));
    let cg = Cgroup::new(name, LIMIT_MIB << 20);
    let mut cmd = cg.command(argv);
    cmd.env("HEAPPROF_BLACKBOX", &dir)
        .env("HEAPPROF_SEED", "11");
    if preload {
        cmd.env("LD_PRELOAD", self::preload());
    }
    let (status, truth) = run_to_death(cmd);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    assert_eq!(cg.oom_kills(), 1, "the OOM killer did it");
    assert!(truth > (LIMIT_MIB << 20) / 2, "leaked only {truth} bytes");
    let p = recover(&dir);
    let [_, _, objects, inuse] = common::leaf_totals(&p, "leak_chunk");
    // One 256 KiB chunk is sampled with probability 39 % at the default
    // rate: ~200 samples of ~500 chunks, a standard error of ~6 %.
    let err = (inuse as f64 - truth as f64).abs() / truth as f64;
    eprintln!("{name}: leak_chunk in use {inuse} B recovered, {truth} B leaked at the kill");
    assert!(
        err < 0.2,
        "leak_chunk in use {inuse} B ({objects} objects) against {truth} B leaked at the kill"
    );
}

#[test]
fn c_program_killed_by_the_oom_killer() {
    let chunk = CHUNK.to_string();
    killed_by_the_oom_killer(
        "c-oom",
        &[
            oomleak().as_os_str(),
            OsStr::new("grow"),
            OsStr::new(&chunk),
        ],
        true,
    );
}

#[test]
fn rust_program_killed_by_the_oom_killer() {
    let exe = common::example("oom_leak");
    let chunk = CHUNK.to_string();
    killed_by_the_oom_killer(
        "rust-oom",
        &[exe.as_os_str(), OsStr::new("grow"), OsStr::new(&chunk)],
        false,
    );
}

/// At rate 1, a program that allocates a known set, idles and is killed
/// with SIGKILL: the recovered profile has exactly that set.
/// Returns the recovered profile.
fn exact_after_sigkill(name: &str, mut cmd: Command) -> heapprof::profile::proto::Profile {
    let dir = common::fresh_dir(scratch().join(name));
    cmd.env("HEAPPROF_BLACKBOX", &dir)
        .env("HEAPPROF_RATE", "1")
        .args(["idle", "1000", "100"])
        .stdout(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    assert_eq!(
        first_line(&mut child),
        "ready
"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let p = recover(&dir);
    assert_eq!(
        common::leaf_totals(&p, "leak_known"),
        [1000, 100_000, 1000, 100_000]
    );
    // And `heapprof top` reads the black box itself.
    let box_path = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension() == Some(OsStr::new("blackbox")))
        .unwrap();
    let top = heapprof().arg("top").arg(&box_path).output().unwrap();
    let text = String::from_utf8_lossy(&top.stdout);
    assert!(
        top.status.success() && text.contains("leak_known"),
        "{text}"
    );
    p
}

#[test]
fn c_program_exact_at_rate_1_after_sigkill() {
    let mut cmd = common::clean_command(oomleak());
    cmd.env("LD_PRELOAD", preload());
    exact_after_sigkill("c-exact", cmd);
}

#[test]
fn rust_program_exact_at_rate_1_after_sigkill() {
    let p = exact_after_sigkill(
        "rust-exact",
        common::clean_command(common::example("oom_leak")),
    );
    // Its heap labels too: half the objects were made under tenant=acme.
    let s = |i: i64| p.string_table[i as usize].as_str();
    let acme: i64 = p
        .sample
        .iter()
        .filter(|x| {
            x.label
                .iter()
                .any(|l| s(l.key) == "tenant" && s(l.str) == "acme")
        })
        .map(|x| x.value[0])
        .sum();
    assert_eq!(acme, 500, "objects recovered under tenant=acme");
}

#[test]
fn heapprof_run_names_the_leak_and_the_oom_killer() {
    let dir = common::fresh_dir(scratch().join("run"));
    let cg = Cgroup::new("run", LIMIT_MIB << 20);
    let chunk = CHUNK.to_string();
    let out = cg
        .command(&[
            OsStr::new(env!("CARGO_BIN_EXE_heapprof")),
            OsStr::new("run"),
            OsStr::new("--out"),
            dir.as_os_str(),
            OsStr::new("--"),
            oomleak().as_os_str(),
            OsStr::new("grow"),
            OsStr::new(&chunk),
        ])
        .env("HEAPPROF_PRELOAD", preload())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(137), "{err}");
    // The post-mortem says what happened, not "no profile".
    assert!(!err.contains("no profile was written"), "{err}");
    assert!(
        err.contains(&format!(
            "killed by signal 9 (SIGKILL): killed by the OOM killer (cgroup limit {LIMIT_MIB} MiB)"
        )),
        "{err}"
    );
    let top = err
        .split_once("in use at the moment of death")
        .map(|(_, t)| t)
        .unwrap_or_else(|| panic!("{err}"));
    assert!(top.contains("leak_chunk"), "{err}");
    // The black box is kept, and its recovered profile written beside it.
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().any(|n| n.ends_with(".blackbox")), "{names:?}");
    assert!(
        names.iter().any(|n| n.ends_with(".blackbox.pb.gz")),
        "{names:?}"
    );
    // The run's report ends at the death: the heap the black box held.
    let page = err
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                "heapprof: report of the run (memory over time, leak verdicts, flame graphs): ",
            )
        })
        .unwrap_or_else(|| panic!("no report line: {err}"));
    let page = std::fs::read_to_string(page).unwrap();
    assert!(page.contains("leak_chunk"), "the death's heap is drawn");
    assert!(
        page.contains("\"black_box\""),
        "the last point says what took it"
    );
    // `heapprof report` reads a black box as every report does.
    let bbox = dir.join(names.iter().find(|n| n.ends_with(".blackbox")).unwrap());
    let html = dir.join("from-box.html");
    common::output_ok(heapprof().arg("report").arg(&bbox).arg("-o").arg(&html));
    assert!(std::fs::read_to_string(&html)
        .unwrap()
        .contains("leak_chunk"));
}

/// Runs `oomleak idle 3 10` bare and with the black box in `dir`, killed
/// after `ready`: returns (stdout, stderr, status) of the profiled run,
/// after checking stdout and status match the bare run's.
fn run_with_blackbox_in(dir: &Path) -> (String, String) {
    run_with_blackbox_in_way(dir, false)
}

/// [`run_with_blackbox_in`] for the C program under the preload library,
/// or (`rust`) the Rust one with `Profiler` (its bare side: no black box).
fn run_with_blackbox_in_way(dir: &Path, rust: bool) -> (String, String) {
    let run = |with: bool| {
        let mut c = if rust {
            common::clean_command(common::example("oom_leak"))
        } else {
            common::clean_command(oomleak())
        };
        c.args(["idle", "3", "10"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if with {
            c.env("HEAPPROF_BLACKBOX", dir);
            if !rust {
                c.env("LD_PRELOAD", preload());
            }
        }
        let mut child = c.spawn().unwrap();
        let line = first_line(&mut child);
        child.kill().unwrap();
        let out = child.wait_with_output().unwrap();
        (
            line,
            String::from_utf8_lossy(&out.stderr).into_owned(),
            out.status,
        )
    };
    let bare = run(false);
    let with = run(true);
    assert_eq!((&with.0, with.2), (&bare.0, bare.2));
    (with.0, with.1)
}

fn assert_one_line_naming(err: &str, dir: &Path) {
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].starts_with("heapprof: HEAPPROF_BLACKBOX: ")
            && lines[0].contains(&dir.display().to_string())
            && lines[0].contains("the black box is off, the program runs on")
            && lines[0].contains("set HEAPPROF_BLACKBOX to an existing, writable directory"),
        "{err}"
    );
}

#[test]
fn an_unusable_directory_is_one_line_and_the_program_runs_on() {
    let base = common::fresh_dir(scratch().join("unusable"));
    // Missing, both ways in.
    let missing = base.join("missing");
    for rust in [false, true] {
        let (_, err) = run_with_blackbox_in_way(&missing, rust);
        assert_one_line_naming(&err, &missing);
        assert!(err.contains("No such file or directory"), "{err}");
    }
    // Read-only (a read-only bind mount: root writes through permissions).
    let (src, ro) = (base.join("src"), base.join("ro"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&ro).unwrap();
    let mount =
        |args: &[&OsStr]| assert!(Command::new("mount").args(args).status().unwrap().success());
    mount(&[OsStr::new("--bind"), src.as_os_str(), ro.as_os_str()]);
    mount(&[
        OsStr::new("-o"),
        OsStr::new("remount,bind,ro"),
        ro.as_os_str(),
    ]);
    let (_, err) = run_with_blackbox_in(&ro);
    let _ = Command::new("umount").arg(&ro).status();
    assert_one_line_naming(&err, &ro);
    assert!(err.contains("Read-only file system"), "{err}");
    // Full: a 1 MiB file system has no room for the reservation, which
    // fails now rather than as a SIGBUS later.
    let full = base.join("full");
    std::fs::create_dir_all(&full).unwrap();
    mount(&[
        OsStr::new("-t"),
        OsStr::new("tmpfs"),
        OsStr::new("-o"),
        OsStr::new("size=1m"),
        OsStr::new("tmpfs"),
        full.as_os_str(),
    ]);
    let (_, err) = run_with_blackbox_in(&full);
    let left = std::fs::read_dir(&full).unwrap().count();
    let _ = Command::new("umount").arg(&full).status();
    assert_one_line_naming(&err, &full);
    assert!(err.contains("No space left on device"), "{err}");
    assert_eq!(left, 0, "the failed file is removed");
}

#[test]
fn a_clean_exit_removes_the_file_unless_kept() {
    let dir = common::fresh_dir(scratch().join("exit"));
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/hello.c");
    let exe = scratch().join("hello");
    assert!(Command::new("cc")
        .args(["-O2", "-g", "-o"])
        .arg(&exe)
        .arg(&src)
        .arg("-ldl")
        .status()
        .unwrap()
        .success());
    let run = |keep: &str| {
        let out = common::clean_command(&exe)
            .env("LD_PRELOAD", preload())
            .env("HEAPPROF_BLACKBOX", &dir)
            .env("HEAPPROF_BLACKBOX_KEEP", keep)
            .env("HEAPPROF_RATE", "1")
            .env("HEAPPROF_AT_EXIT", "0")
            .output()
            .unwrap();
        assert!(out.status.success() && out.stderr.is_empty(), "{out:?}");
        std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect::<Vec<_>>()
    };
    assert_eq!(run("0"), Vec::<PathBuf>::new());
    let kept = run("1");
    assert_eq!(kept.len(), 1, "{kept:?}");
    // A kept file still reads as what was live at exit.
    let top = heapprof().arg("top").arg(&kept[0]).output().unwrap();
    let text = String::from_utf8_lossy(&top.stdout);
    assert!(text.contains("exec_leak"), "{text}");

    // The Rust way in: a program that leaks 64 KiB and exits.
    let dir = common::fresh_dir(scratch().join("exit-rust"));
    for keep in ["0", "1"] {
        let out = common::clean_command(common::example("oom_leak"))
            .args(["grow", "4096", "65536"])
            .env("HEAPPROF_BLACKBOX", &dir)
            .env("HEAPPROF_BLACKBOX_KEEP", keep)
            .output()
            .unwrap();
        assert!(out.status.success() && out.stderr.is_empty(), "{out:?}");
    }
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
    assert_eq!(left.len(), 1, "only the kept one: {left:?}");
}

/// A forked child keeps its own black box, starting from its parent's
/// live samples at the fork; neither sees the other's later samples.
fn fork_keeps_separate_files(name: &str, mut cmd: Command) {
    let dir = common::fresh_dir(scratch().join(name));
    cmd.env("HEAPPROF_BLACKBOX", &dir)
        .env("HEAPPROF_RATE", "1")
        .args(["fork", "1000", "100"])
        .stdout(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut pids = std::collections::HashMap::new();
    for _ in 0..2 {
        let l = lines.next().unwrap().unwrap();
        let (who, pid) = l.split_once(' ').unwrap();
        pids.insert(who.to_string(), pid.parse::<i32>().unwrap());
    }
    for pid in pids.values() {
        // SAFETY: signalling processes this test started.
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    child.wait().unwrap();
    for (who, theirs, not_theirs) in [
        ("parent", ("after_fork", [5, 1000]), "child_known"),
        ("child", ("child_known", [10, 3000]), "after_fork"),
    ] {
        let pid = pids[who];
        let bytes = std::fs::read(dir.join(format!("heapprof.{pid}.blackbox"))).unwrap();
        let p = heapprof::report::blackbox::recover("box", &bytes)
            .unwrap()
            .profile;
        let t = |f: &str| {
            let [_, _, objects, bytes] = common::leaf_totals(&p, f);
            [objects, bytes]
        };
        assert_eq!(t("leak_known"), [1000, 100_000], "{who}");
        assert_eq!(t(theirs.0), theirs.1, "{who}");
        assert_eq!(t(not_theirs), [0, 0], "{who}");
    }
}

#[test]
fn c_fork_child_has_its_own_black_box() {
    let mut cmd = common::clean_command(oomleak());
    cmd.env("LD_PRELOAD", preload());
    fork_keeps_separate_files("c-fork", cmd);
}

/// An `exec` keeps the pid: the new image's black box silently replaces
/// the one the old image left (same pid, same process start time).
#[test]
fn an_exec_replaces_the_file_it_left() {
    let dir = common::fresh_dir(scratch().join("exec"));
    let mut child = common::clean_command("sh")
        .arg("-c")
        .arg(r#"exec "$0" idle 7 1000"#)
        .arg(oomleak())
        .env("LD_PRELOAD", preload())
        .env("HEAPPROF_BLACKBOX", &dir)
        .env("HEAPPROF_RATE", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert_eq!(
        first_line(&mut child),
        "ready
"
    );
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p = recover(&dir);
    assert_eq!(common::leaf_totals(&p, "leak_known"), [7, 7000, 7, 7000]);
}

/// A full black box keeps what fits and says how much it left out.
#[test]
fn a_full_black_box_says_what_it_left_out() {
    let dir = common::fresh_dir(scratch().join("full-table"));
    let mut child = common::clean_command(oomleak())
        .args(["idle", "1000", "100"])
        .env("LD_PRELOAD", preload())
        .env("HEAPPROF_BLACKBOX", &dir)
        .env("HEAPPROF_BLACKBOX_SLOTS", "64")
        .env("HEAPPROF_RATE", "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    assert_eq!(first_line(&mut child), "ready\n");
    child.kill().unwrap();
    child.wait().unwrap();
    let p = recover(&dir);
    let [_, _, kept, _] = common::leaf_totals(&p, "leak_known");
    assert!((1..=64).contains(&kept), "{kept}");
    let comment = &p.string_table[p.comment[0] as usize];
    let left_out: u64 = comment
        .split("; ")
        .find_map(|part| {
            part.strip_suffix(
                " not recorded, the black box was full (raise HEAPPROF_BLACKBOX_SLOTS)",
            )
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{comment}"));
    assert!(left_out >= 1000 - kept, "{comment}");
}

/// The numbered dumps in `dir` with their comments, by sequence number.
fn dumps_with_comments(dir: &Path) -> Vec<(PathBuf, String)> {
    common::dumps(dir)
        .into_iter()
        .map(|(_, _, path)| {
            let p = common::read_profile(&path);
            let comments = p
                .comment
                .iter()
                .map(|&i| p.string_table[i as usize].clone())
                .collect::<Vec<_>>()
                .join(" | ");
            (path, comments)
        })
        .collect()
}

/// `oom_leak grow` (Rust, `Profiler`) to 64 MiB, 256 KiB every 10 ms, with
/// `env`; returns the dumps it left.
fn grow_to_64_mib(name: &str, env: &[(&str, &str)]) -> Vec<(PathBuf, String)> {
    let dir = common::fresh_dir(scratch().join(name));
    let out = common::clean_command(common::example("oom_leak"))
        .args(["grow", "262144", &(64u64 << 20).to_string(), "10"])
        .env("HEAPPROF_OUT", dir.join("heapprof"))
        .env("HEAPPROF_SEED", "5")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    dumps_with_comments(&dir)
}

#[test]
fn growth_dumps_come_every_growth_step_never_per_sample() {
    let dumps = grow_to_64_mib("growth", &[("HEAPPROF_GROWTH", "8m")]);
    // 64 MiB in steps of 8 MiB (estimated: sampling moves it a little);
    // ~100 samples were taken.
    assert!((6..=9).contains(&dumps.len()), "{dumps:#?}");
    for (path, comment) in &dumps {
        assert!(
            comment.contains("heapprof trigger: HEAPPROF_GROWTH=8388608: estimated in-use heap"),
            "{}: {comment}",
            path.display()
        );
    }
}

#[test]
fn keep_leaves_the_newest_dumps() {
    let dumps = grow_to_64_mib("keep", &[("HEAPPROF_GROWTH", "8m"), ("HEAPPROF_KEEP", "2")]);
    assert_eq!(dumps.len(), 2, "{dumps:#?}");
    // The newest: the last two growth steps.
    let mib = |c: &str| -> u64 {
        let at = c.split("estimated in-use heap ").nth(1).unwrap();
        at.split(' ').next().unwrap().parse().unwrap()
    };
    assert!(
        mib(&dumps[1].1) > mib(&dumps[0].1) && mib(&dumps[1].1) >= 40,
        "{dumps:#?}"
    );
}

/// `HEAPPROF_KEEP` holds whoever writes the dumps: a single-threaded C
/// program under the preload library (interval dumps made by the watcher's
/// copies of the process), and its dump at exit, which is the newest kept.
#[test]
fn keep_holds_for_the_watchers_dumps_and_the_exit_dump() {
    let dir = common::fresh_dir(scratch().join("keep-watcher"));
    let out = common::clean_command(oomleak())
        .arg("peak")
        .env("LD_PRELOAD", preload())
        .env("HEAPPROF_OUT", dir.join("heapprof"))
        .env("HEAPPROF_INTERVAL", "0.3")
        .env("HEAPPROF_KEEP", "2")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    // About fifteen were written; the last two stay, the exit's the newest.
    let dumps = dumps_with_comments(&dir);
    assert_eq!(dumps.len(), 2, "{dumps:#?} {err}");
    assert!(dumps[0].1.contains("trigger=interval"), "{dumps:#?}");
    assert!(dumps[1].1.contains("trigger=exit"), "{dumps:#?}");
    let seq = common::dumps(&dir).iter().map(|d| d.1).min();
    assert!(seq >= Some(5), "the newest are kept: {dumps:#?}");
}

/// Near the cgroup's limit, dumps at each threshold, before the OOM
/// killer, naming the leak: the Rust way in, and a single-threaded C
/// program under the preload library (which then gets the dumper thread).
#[test]
fn near_limit_dumps_come_before_the_oom_kill() {
    let rust = common::example("oom_leak");
    let chunk = CHUNK.to_string();
    let rust_args = [
        OsStr::new("grow"),
        OsStr::new(&chunk),
        OsStr::new("1000000000000"),
        OsStr::new("5"),
    ];
    let c_args = [OsStr::new("grow"), OsStr::new(&chunk), OsStr::new("5")];
    let ways: [(&str, &Path, &[&OsStr], bool); 2] = [
        ("rust", &rust, &rust_args, false),
        ("c", oomleak(), &c_args, true),
    ];
    for (way, exe, args, preloaded) in ways {
        let dir = common::fresh_dir(scratch().join(format!("near-limit-{way}")));
        let cg = Cgroup::new(&format!("near-limit-{way}"), LIMIT_MIB << 20);
        let argv: Vec<&OsStr> = std::iter::once(exe.as_os_str())
            .chain(args.iter().copied())
            .collect();
        let mut cmd = cg.command(&argv);
        cmd.env("HEAPPROF_OUT", dir.join("heapprof"))
            .env("HEAPPROF_NEAR_LIMIT", "50,80")
            // Raw dumps: symbolizing costs tens of MiB, which the cgroup counts.
            .env("HEAPPROF_SYMBOLIZE", "0");
        if preloaded {
            cmd.env("LD_PRELOAD", preload());
        }
        let (status, _) = run_to_death(cmd);
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{way}: {status:?}");
        assert_eq!(cg.oom_kills(), 1, "{way}");
        let dumps = dumps_with_comments(&dir);
        assert_eq!(dumps.len(), 2, "{way}: {dumps:#?}");
        for ((path, comment), pct) in dumps.iter().zip([50, 80]) {
            // What took it, and the limit reports draw beside the heap.
            assert!(
                comment.contains("trigger=near_limit")
                    && comment.contains(&format!("memory_limit={}", LIMIT_MIB << 20)),
                "{way}: {comment}"
            );
            // cgroup v1 tells the dumper at each crossing; v2 is polled.
            let how = if cg.v2 {
                "polled every 50 ms"
            } else {
                "told by a cgroup v1 threshold event"
            };
            assert!(
                comment.contains("heapprof trigger: HEAPPROF_NEAR_LIMIT: memory")
                    && comment.contains(&format!(
                        "of the cgroup limit {LIMIT_MIB} MiB (threshold {pct}%; {how})"
                    )),
                "{way}: {comment}"
            );
            let top = heapprof().arg("top").arg(path).output().unwrap();
            let text = String::from_utf8_lossy(&top.stdout);
            assert!(text.contains("leak_chunk"), "{way}: {text}");
        }
    }
}

/// A single-threaded C program under the preload library (no dumper
/// thread: the watcher stands in) that grows to 200 MiB, holds it, frees
/// it and keeps 8 MiB: its peak profile, written by a copy of the process
/// at the watcher's look, has the growth near its size; the exit profile
/// does not. The program stays single-threaded (two tasks).
#[test]
fn a_single_threaded_programs_peak_is_written_by_the_watcher() {
    let dir = common::fresh_dir(scratch().join("peak-c"));
    let mut child = common::clean_command(oomleak())
        .arg("peak")
        .env("LD_PRELOAD", preload())
        .env("HEAPPROF_OUT", dir.join("heapprof"))
        .env("HEAPPROF_AT_EXIT", "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let tasks = std::fs::read_dir(format!("/proc/{}/task", child.id()))
        .unwrap()
        .count();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(tasks, 2, "the program and the watcher");
    let pid = child.id();
    let final_dump = common::read_profile(&dir.join(format!("heapprof.{pid}.0.pb.gz")));
    let peak = common::read_profile(&dir.join(format!("heapprof.{pid}.peak.pb.gz")));
    let [_, _, _, inuse] = common::leaf_totals(&peak, "grow_peak");
    // Looked at once a second, rewritten past an eighth more: between 7/8
    // of the high point and the high point, within sampling noise.
    let high = (200u64 << 20) as f64;
    assert!(
        inuse as f64 > 0.8 * high && (inuse as f64) < 1.1 * high,
        "grow_peak in use at the peak: {inuse}"
    );
    assert_eq!(common::leaf_totals(&peak, "leak_known"), [0; 4]);
    assert_eq!(common::leaf_totals(&final_dump, "grow_peak")[3], 0);
    assert!(common::leaf_totals(&final_dump, "leak_known")[3] > 4 << 20);
}

/// A program that grows to 200 MiB, frees it and keeps 8 MiB elsewhere:
/// the peak profile has the growth at its size, the final one does not.
#[test]
fn the_peak_profile_holds_the_high_point() {
    let dir = common::fresh_dir(scratch().join("peak"));
    let from_code = dir.join("from-code.pb");
    let out = common::clean_command(common::example("oom_leak"))
        .arg("peak")
        .env("HEAPPROF_OUT", dir.join("heapprof"))
        .env("HEAPPROF_AT_EXIT", "1")
        .env("HEAPPROF_SEED", "3")
        .env("PEAK_OUT", &from_code)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let pid = common::dumps(&dir)[0].0;
    let final_dump = common::read_profile(&dir.join(format!("heapprof.{pid}.0.pb.gz")));
    let at_exit = common::read_profile(&dir.join(format!("heapprof.{pid}.peak.pb.gz")));
    let from_code = common::read_profile(&from_code);
    for peak in [&at_exit, &from_code] {
        let [_, _, _, inuse] = common::leaf_totals(peak, "grow_peak");
        let err = (inuse as f64 - (200 << 20) as f64).abs() / (200 << 20) as f64;
        assert!(err < 0.1, "grow_peak in use at the peak: {inuse}");
        assert_eq!(common::leaf_totals(peak, "leak_known"), [0; 4]);
    }
    assert_eq!(common::leaf_totals(&final_dump, "grow_peak")[3], 0);
    assert!(common::leaf_totals(&final_dump, "leak_known")[3] > 4 << 20);
}

/// `/debug/pprof/heap?peak=1` serves the high point, `/debug/pprof/heap`
/// the present.
#[test]
fn the_peak_profile_is_served_over_http() {
    use std::io::{Read, Write};
    let dir = common::fresh_dir(scratch().join("peak-http"));
    let mut child = common::clean_command(common::example("oom_leak"))
        .arg("peak")
        .env("HEAPPROF_OUT", dir.join("heapprof"))
        .env("HEAPPROF_HTTP", "0")
        .env("HEAPPROF_SEED", "3")
        .env("PEAK_OUT", dir.join("from-code.pb"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let addr = loop {
        line.clear();
        assert!(err.read_line(&mut line).unwrap() > 0, "no address");
        if let Some(rest) = line.split("http://").nth(1) {
            break rest.split('/').next().unwrap().to_string();
        }
    };
    assert_eq!(first_line(&mut child), "freed\n");
    let get = |path: &str| -> heapprof::profile::proto::Profile {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).unwrap();
        let body = resp.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert!(
            resp.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&resp[..body])
        );
        heapprof::decode_profile(&resp[body..]).unwrap()
    };
    let peak = get("/debug/pprof/heap?peak=1");
    let now = get("/debug/pprof/heap");
    // A signal's dump writes the peak profile beside it.
    let peak_file = dir.join(format!("heapprof.{}.peak.pb.gz", child.id()));
    // SAFETY: kill(2) on the child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGUSR2) };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !peak_file.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Before the exit, which writes one too.
    let written_by_the_signal = peak_file.exists();
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    assert!(common::leaf_totals(&peak, "grow_peak")[3] > 150 << 20);
    assert_eq!(common::leaf_totals(&now, "grow_peak")[3], 0);
    assert!(
        written_by_the_signal,
        "no peak profile beside the signal's dump"
    );
    let beside_signal_dump = common::read_profile(&peak_file);
    assert!(common::leaf_totals(&beside_signal_dump, "grow_peak")[3] > 150 << 20);
}
