//! The threads profile from the outside: `tests/c/threadleak.c` under the
//! preload library, and `examples/thread_leak.rs` built with the `threads`
//! feature. Oracles: every thread is counted (no sampling), so live counts
//! per creation stack are exact at the moment of a dump; `go tool pprof` and
//! the `heapprof` command read the files; a program's output never changes.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use heapprof::profile::proto::Profile;

mod common;

const TIMEOUT: Duration = Duration::from_secs(60);

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// target/<profile>, and whether it is the release profile.
fn profile_dir() -> (PathBuf, bool) {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let release = dir.file_name() == Some(OsStr::new("release"));
    (dir, release)
}

fn cargo_build(args: &[&str]) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--quiet")
        .args(args)
        .current_dir(workspace());
    if profile_dir().1 {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("run cargo build");
    assert!(status.success(), "cargo build {args:?} failed");
}

/// The preload library, built in this test's profile.
fn library() -> &'static Path {
    common::preload_library()
}

fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        common::ensure_deps();
        common::fresh_dir(Path::new(env!("CARGO_TARGET_TMPDIR")).join("threads"))
    })
}

fn out_dir(name: &str) -> PathBuf {
    common::fresh_dir(scratch().join(format!("out-{name}")))
}

/// `tests/c/threadleak.c`, optimised, with debug info.
fn threadleak() -> &'static Path {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| {
        let exe = scratch().join("threadleak");
        let out = Command::new("cc")
            .args(["-O2", "-g", "-pthread", "-o"])
            .arg(&exe)
            .arg(workspace().join("tests/c/threadleak.c"))
            .output()
            .expect("run cc");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        exe
    })
}

/// A command with none of the test runner's HEAPPROF_* or LD_PRELOAD.
fn clean(prog: impl AsRef<OsStr>) -> Command {
    common::clean_command(prog)
}

fn preloaded(prog: impl AsRef<OsStr>, out: &Path) -> Command {
    let mut c = clean(prog);
    c.env("LD_PRELOAD", library())
        .env("HEAPPROF_OUT", out.join("p"));
    c
}

fn wait(child: &mut Child) -> i32 {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("hung (killed after {TIMEOUT:?})");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn wait_for(path: &Path) {
    let deadline = Instant::now() + TIMEOUT;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn s(p: &Profile, i: i64) -> &str {
    &p.string_table[i as usize]
}

/// The innermost function of a sample's stack.
fn leaf(p: &Profile, sample: &heapprof::profile::proto::Sample) -> String {
    let loc = &p.location[sample.location_id[0] as usize - 1];
    let f = &p.function[loc.line[0].function_id as usize - 1];
    s(p, f.name).to_string()
}

/// Per leaf function: [threads, stack bytes].
fn by_leaf(p: &Profile) -> BTreeMap<String, [i64; 2]> {
    let mut out = BTreeMap::new();
    for x in &p.sample {
        let e: &mut [i64; 2] = out.entry(leaf(p, x)).or_default();
        e[0] += x.value[0];
        e[1] += x.value[1];
    }
    out
}

/// Per leaf function: the thread names its samples carry.
fn names(p: &Profile) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for x in &p.sample {
        let name = x
            .label
            .iter()
            .find(|l| s(p, l.key) == "thread_name")
            .map(|l| s(p, l.str).to_string())
            .unwrap_or_default();
        let v = out.entry(leaf(p, x)).or_default();
        if !v.contains(&name) {
            v.push(name);
        }
    }
    out
}

/// Decodes a threads profile and checks its shape.
fn threads_profile(path: &Path) -> Profile {
    let p = common::read_profile(path);
    let types: Vec<(&str, &str)> = p
        .sample_type
        .iter()
        .map(|t| (s(&p, t.r#type), s(&p, t.unit)))
        .collect();
    assert_eq!(
        types,
        [("threads", "count"), ("stack_reservation", "bytes")],
        "{}",
        path.display()
    );
    assert_eq!(s(&p, p.default_sample_type), "threads");
    let pt = p.period_type.as_ref().unwrap();
    assert_eq!(
        (s(&p, pt.r#type), s(&p, pt.unit), p.period),
        ("threads", "count", 1)
    );
    assert!(p.time_nanos > 0);
    p
}

fn heapprof_cli(args: &[&OsStr]) -> String {
    let exe = env!("CARGO_BIN_EXE_heapprof");
    let out = Command::new(exe).args(args).output().unwrap();
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "heapprof {args:?} failed:\n{se}\n{so}"
    );
    so
}

#[test]
fn live_threads_by_creation_stack_are_exact_at_each_dump() {
    let dir = out_dir("exact");
    let mut cmd = preloaded(threadleak(), &dir);
    cmd.arg("exact")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let pid = child.id();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut dump_at_ready = |seq: u32| {
        let line = lines.next().unwrap().unwrap();
        let default_stack: i64 = line
            .strip_prefix("ready default_stack=")
            .unwrap_or_else(|| panic!("{line}"))
            .parse()
            .unwrap();
        // SAFETY: signalling our own child.
        assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGUSR2) }, 0);
        let heap = dir.join(format!("p.{pid}.{seq}.pb.gz"));
        let threads = dir.join(format!("p.threads.{pid}.{seq}.pb.gz"));
        wait_for(&threads);
        assert!(heap.exists(), "the heap profile shares the number");
        (threads_profile(&threads), threads, default_stack)
    };

    // 7 joinable threads blocked forever (named), 3 detached ones with 1 MiB
    // stacks; 380 more created and ended count nowhere: joined after
    // returning, after pthread_exit (also two calls deep, under the
    // program's own cleanup handler), after deferred and asynchronous
    // cancellation; detached and returned, exited or cancelled.
    let (p, first, default_stack) = dump_at_ready(0);
    let want = BTreeMap::from([
        ("leak_blocked".to_string(), [7, 7 * default_stack]),
        ("leak_detached".to_string(), [3, 3 << 20]),
    ]);
    assert_eq!(by_leaf(&p), want);
    let n = names(&p);
    assert_eq!(n["leak_blocked"], ["leaker"]);
    assert_eq!(n["leak_detached"], ["threadleak"], "inherited from main");
    assert!(s(&p, p.comment[0]).contains("live=10 created=390 untracked=0"));

    // The joinable ones cancelled and joined.
    writeln!(stdin).unwrap();
    let (p, _, _) = dump_at_ready(1);
    assert_eq!(
        by_leaf(&p),
        BTreeMap::from([("leak_detached".to_string(), [3, 3 << 20])])
    );
    drop(stdin);
    assert_eq!(wait(&mut child), 0);

    // Readers: go tool pprof (both values, the labels), and heapprof top.
    let f = first.to_str().unwrap();
    let (top, _) = common::go_pprof(&["-top", f]);
    assert!(top.contains("Type: threads"), "{top}");
    let row = |f: &str| top.lines().find(|l| l.ends_with(f)).map(str::to_owned);
    let leak_row = row(" leak_blocked").unwrap_or_else(|| panic!("{top}"));
    assert_eq!(
        leak_row.split_whitespace().take(2).collect::<Vec<_>>(),
        ["7", "70.00%"],
        "{top}"
    );
    let (tags, _) = common::go_pprof(&["-tags", f]);
    assert!(
        tags.contains("thread_name") && tags.contains("leaker"),
        "{tags}"
    );
    let (space, _) = common::go_pprof(&["-top", "-sample_index=stack_reservation", f]);
    assert!(space.contains("Type: stack_reservation"), "{space}");
    let out = heapprof_cli(&["top".as_ref(), first.as_os_str()]);
    let first_row = out
        .lines()
        .find(|l| l.trim_start().starts_with("1 "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        first_row.contains(" 7 ") && first_row.contains("leak_blocked"),
        "{out}"
    );
}

/// `(time order) threads profiles` of a finished run in `dir`.
fn threads_series(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let stem = name.strip_prefix("p.threads.")?.strip_suffix(".pb.gz")?;
            let seq = stem.rsplit('.').next()?.parse().ok()?;
            Some((seq, e.path()))
        })
        .collect();
    v.sort();
    v.into_iter().map(|(_, p)| p).collect()
}

#[test]
fn a_growing_site_grows_over_interval_dumps_and_heapprof_leaks_names_it() {
    let dir = out_dir("grow");
    let out = preloaded(threadleak(), &dir)
        .args(["grow", "14", "150"])
        .env("HEAPPROF_INTERVAL", "0.3")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "done\n");
    let series = threads_series(&dir);
    assert!(series.len() >= 4, "{series:?}");
    let counts: Vec<[i64; 2]> = series
        .iter()
        .map(|f| {
            let by = by_leaf(&threads_profile(f));
            let get = |k: &str| by.get(k).map_or(0, |v| v[0]);
            [get("leak_blocked"), get("churn_joined")]
        })
        .collect();
    // Two leaked per round: even, never shrinking, 28 at the exit dump; a
    // churned thread is alive only between its create and join.
    assert!(counts.windows(2).all(|w| w[0][0] <= w[1][0]), "{counts:?}");
    assert!(
        counts.iter().all(|c| c[0] % 2 == 0 && c[1] <= 1),
        "{counts:?}"
    );
    assert_eq!(counts.last().unwrap()[0], 28, "{counts:?}");
    assert!(counts[0][0] < 28, "{counts:?}");

    let mut args: Vec<&OsStr> = vec!["leaks".as_ref()];
    args.extend(series.iter().map(|p| p.as_os_str()));
    let report = heapprof_cli(&args);
    let steady = report
        .split("plateau")
        .next()
        .unwrap_or_else(|| panic!("{report}"));
    assert!(steady.contains("leak_blocked"), "{report}");
    assert!(!report.contains("churn_joined ("), "{report}");
}

#[test]
fn a_storm_of_creates_and_joins_runs_unchanged_and_leaves_nothing() {
    let args = ["storm", "4", "1500"];
    let bare = clean(threadleak()).args(args).output().unwrap();
    let dir = out_dir("storm");
    let under = preloaded(threadleak(), &dir).args(args).output().unwrap();
    assert!(bare.status.success());
    assert_eq!(
        (under.status.code(), &under.stdout, &under.stderr),
        (bare.status.code(), &bare.stdout, &bare.stderr)
    );
    let series = threads_series(&dir);
    assert_eq!(series.len(), 1, "the exit dump");
    let p = threads_profile(&series[0]);
    assert!(p.sample.is_empty(), "{:?}", by_leaf(&p));
    assert!(s(&p, p.comment[0]).contains("live=0 created=6004 untracked=0"));
}

/// `examples/thread_leak.rs`, built with the `threads` feature.
fn thread_leak_example() -> PathBuf {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| {
        cargo_build(&["--example", "thread_leak", "--features", "threads"]);
        profile_dir().0.join("examples/thread_leak")
    })
    .clone()
}

#[test]
fn rust_threads_with_the_feature_are_counted_by_the_line_that_spawned_them() {
    let dir = out_dir("rust");
    let mut cmd = clean(thread_leak_example());
    cmd.env("HEAPPROF_OUT", dir.join("p"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let pid = child.id();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready live=5");
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGUSR2) }, 0);
    let threads = dir.join(format!("p.threads.{pid}.0.pb.gz"));
    wait_for(&threads);
    assert!(dir.join(format!("p.{pid}.0.pb.gz")).exists());
    drop(child.stdin.take());
    assert_eq!(wait(&mut child), 0);

    // 5 parked workers of 256 KiB stacks; the 50 joined, 4 scoped and one
    // spawned while heapprof's locks were held are gone. The leaf is the program's call to spawn (std's
    // plumbing left out); names are those given to the Builder.
    let p = threads_profile(&threads);
    assert_eq!(
        by_leaf(&p),
        BTreeMap::from([("thread_leak::leak_worker".to_string(), [5, 5 * (256 << 10)])])
    );
    let mut n = names(&p)["thread_leak::leak_worker"].clone();
    n.sort();
    assert_eq!(n, ["conn-0", "conn-1", "conn-2", "conn-3", "conn-4"]);
    let (top, _) = common::go_pprof(&["-top", threads.to_str().unwrap()]);
    assert!(top.contains("thread_leak::leak_worker"), "{top}");
    let comment = s(&p, p.comment[0]);
    assert!(
        comment.contains("live=5 created=60 untracked=0"),
        "{comment}"
    );
}

#[test]
fn raw_threads_profiles_are_symbolized_by_go_pprof() {
    let dir = out_dir("raw");
    let out = preloaded(threadleak(), &dir)
        .args(["grow", "3", "10"])
        .env("HEAPPROF_SYMBOLIZE", "0")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let series = threads_series(&dir);
    let p = threads_profile(&series[0]);
    assert!(p.function.is_empty() && !p.mapping.iter().any(|m| m.has_functions));
    let (top, _) = common::go_pprof(&[
        "-top",
        threadleak().to_str().unwrap(),
        series[0].to_str().unwrap(),
    ]);
    let row = top
        .lines()
        .find(|l| l.ends_with(" leak_blocked"))
        .unwrap_or_else(|| panic!("{top}"));
    assert_eq!(
        row.split_whitespace().take(2).collect::<Vec<_>>(),
        ["6", "100%"],
        "{top}"
    );
}

#[test]
fn a_forked_child_counts_only_the_thread_that_forked() {
    let dir = out_dir("fork");
    let mut cmd = preloaded(threadleak(), &dir);
    let child = cmd.arg("fork").stdout(Stdio::piped()).spawn().unwrap();
    let parent = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "forked\n");
    let mut by_pid: BTreeMap<bool, Vec<BTreeMap<String, [i64; 2]>>> = BTreeMap::new();
    for f in threads_series(&dir) {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let pid: u32 = name.split('.').nth(2).unwrap().parse().unwrap();
        let p = threads_profile(&f);
        by_pid.entry(pid == parent).or_default().push(
            by_leaf(&p)
                .into_iter()
                .map(|(k, v)| (k, [v[0], 0]))
                .collect(),
        );
    }
    let want = |leaf: &str, n: i64| BTreeMap::from([(leaf.to_string(), [n, 0])]);
    assert_eq!(by_pid[&true], [want("leak_blocked", 3)]);
    let mut children = by_pid[&false].clone();
    children.sort();
    assert_eq!(children, [BTreeMap::new(), want("fork_site", 1)]);
}

/// The README's leak hunt, `heapprof leaks heapprof.PID.*.pb.gz`, under the
/// preload library with interval dumps: the glob selects the heap profiles
/// only (the threads profiles beside them are named outside it), and the
/// heap leak is named; given both kinds, every report refuses the mix.
#[test]
fn the_readme_glob_selects_heap_profiles_and_names_the_heap_leak() {
    let dir = out_dir("readme-glob");
    let out = preloaded(threadleak(), &dir)
        .args(["heapgrow", "40", "40"])
        .env("HEAPPROF_INTERVAL", "0.2")
        .env("HEAPPROF_RATE", "16384")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let series = threads_series(&dir);
    assert!(series.len() >= 4, "{series:?}");
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let pid = series[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .split('.')
        .nth(2)
        .unwrap()
        .to_string();
    // What the shell makes of `p.PID.*.pb.gz`.
    let glob = format!("p.{pid}.");
    let mut heap: Vec<PathBuf> = names
        .iter()
        .filter(|n| n.starts_with(&glob) && n.ends_with(".pb.gz"))
        .map(|n| dir.join(n))
        .collect();
    heap.sort();
    assert!(heap.len() >= 4, "{names:?}");
    assert!(heap.iter().all(|h| !series.contains(h)), "{names:?}");

    let mut args: Vec<&OsStr> = vec!["leaks".as_ref()];
    args.extend(heap.iter().map(|p| p.as_os_str()));
    let report = heapprof_cli(&args);
    assert!(report.contains("by inuse_space"), "{report}");
    let (steady, rest) = report
        .split_once("plateau")
        .unwrap_or_else(|| panic!("{report}"));
    assert!(steady.contains("leak_heap"), "{report}");
    assert!(rest.contains("cache_fill"), "{report}");

    // Both kinds at once: refused, naming which is which.
    let mut both = args.clone();
    both.extend(series.iter().map(|p| p.as_os_str()));
    for cmd in [
        both.clone(),
        vec!["diff".as_ref(), heap[0].as_os_str(), series[0].as_os_str()],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_heapprof"))
            .args(&cmd)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("different kinds"), "{err}");
        assert!(
            err.contains("heap profiles: ") && err.contains("threads profiles: "),
            "{err}"
        );
        assert!(err.contains("PREFIX.threads.PID.SEQ.pb.gz"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}
