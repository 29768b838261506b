//! The LD_PRELOAD library (`ffi/`) from the outside: C and C++ programs from
//! `tests/c/`, compiled at test time with the system `cc`/`c++`, and real
//! programs (python3, sqlite3, perl, bash, cc), run bare and under the
//! library. Profiles are the files the processes leave at exit, decoded here.
//!
//! Oracles: at `HEAPPROF_RATE=1` every allocation is sampled and the profile
//! is exact, byte for byte, per leaf function; stacks that free everything
//! end with nothing in use at any rate; a program's output and exit code
//! never change under the library.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use heapprof::profile::proto::Profile;

mod common;

const JEMALLOC: &str = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2";
/// Longest any program may run: a hang (a deadlock in a hook) fails the test.
const TIMEOUT: Duration = Duration::from_secs(120);

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The preload library, built (once per test run) in the profile these tests
/// were built in, so it always matches the sources.
fn library() -> &'static Path {
    common::preload_library()
}

/// Where this test run keeps compiled programs and profiles: under cargo's
/// scratch directory for integration tests, one per build profile, emptied
/// when a run starts (so nothing piles up in /tmp).
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // jemalloc, sqlite3, perl, go: installed when missing, never skipped.
        common::ensure_deps();
        let exe = std::env::current_exe().expect("current_exe");
        let profile = exe
            .parent()
            .and_then(Path::parent)
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        common::fresh_dir(Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("preload-{profile}")))
    })
}

/// A fresh directory for one test's profiles.
fn out_dir(name: &str) -> PathBuf {
    common::fresh_dir(scratch().join(format!("out-{name}")))
}

fn compile(compiler: &str, args: &[&OsStr]) {
    let out = Command::new(compiler)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {compiler}: {e}"));
    assert!(
        out.status.success(),
        "{compiler} {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `tests/c/NAME.c` (or `.cpp`) compiled (once) with optimisation, debug
/// info and no frame pointers (the default at -O2): the unwinder must cope.
fn program(name: &str) -> PathBuf {
    static BUILT: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let built = built.get_or_insert_with(HashMap::new);
    if let Some(p) = built.get(name) {
        return p.clone();
    }
    let dir = workspace().join("tests/c");
    let exe = scratch().join(name);
    let common = ["-O2", "-g", "-pthread", "-o"].map(OsStr::new);
    match name {
        "newleak" => {
            let src = dir.join("newleak.cpp");
            let mut args: Vec<&OsStr> = common.to_vec();
            args.extend([exe.as_os_str(), src.as_os_str()]);
            compile("c++", &args);
        }
        "lifecycle" => {
            // Linked against libearly.so, found next to it.
            let early = scratch().join("libearly.so");
            let src = dir.join("early.c");
            let mut args: Vec<&OsStr> = common.to_vec();
            args.extend([
                early.as_os_str(),
                OsStr::new("-fPIC"),
                OsStr::new("-shared"),
            ]);
            args.push(src.as_os_str());
            compile("cc", &args);
            let src = dir.join("lifecycle.c");
            let mut args: Vec<&OsStr> = common.to_vec();
            args.extend([exe.as_os_str(), src.as_os_str()]);
            args.extend(
                [
                    "-L",
                    scratch().to_str().unwrap(),
                    "-learly",
                    "-Wl,-rpath,$ORIGIN",
                ]
                .map(OsStr::new),
            );
            compile("cc", &args);
        }
        // Shared libraries, loaded by the tests themselves.
        "minimalloc" | "tlsmod" => {
            let so = scratch().join(format!("lib{name}.so"));
            let src = dir.join(format!("{name}.c"));
            let mut args: Vec<&OsStr> = common.to_vec();
            args.extend([so.as_os_str(), OsStr::new("-fPIC"), OsStr::new("-shared")]);
            args.push(src.as_os_str());
            compile("cc", &args);
            built.insert(name.into(), so.clone());
            return so;
        }
        _ => {
            let src = dir.join(format!("{name}.c"));
            let mut args: Vec<&OsStr> = common.to_vec();
            args.extend([exe.as_os_str(), src.as_os_str(), OsStr::new("-ldl")]);
            compile("cc", &args);
        }
    }
    built.insert(name.into(), exe.clone());
    exe
}

/// What a finished process left.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    /// Exit code, or 128 + signal number.
    code: i32,
    stdout: String,
    stderr: String,
}

/// A command with none of the test runner's HEAPPROF_* or LD_PRELOAD.
fn clean(prog: impl AsRef<OsStr>) -> Command {
    common::clean_command(prog)
}

/// `prog` under the library (alone in LD_PRELOAD), writing profiles to
/// `out/p.PID.SEQ.pb.gz`.
fn preloaded(prog: impl AsRef<OsStr>, out: &Path) -> Command {
    let mut c = clean(prog);
    c.env("LD_PRELOAD", library())
        .env("HEAPPROF_OUT", out.join("p"));
    c
}

/// Runs to completion (failing the test if it takes longer than TIMEOUT),
/// feeding `stdin`.
fn run(cmd: &mut Command, stdin: &[u8]) -> Outcome {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let out = reader(child.stdout.take().unwrap());
    let err = reader(child.stderr.take().unwrap());
    let code = wait(&mut child, cmd);
    let _ = feeder.join();
    Outcome {
        code,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

fn reader(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = r.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    })
}

fn wait(child: &mut std::process::Child, what: &Command) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what:?} hung (killed after {TIMEOUT:?})");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs `prog ARGS` bare and under the library (with `env`), asserts the
/// output and exit code are identical, and returns them with the profile
/// directory.
fn same_as_bare(
    name: &str,
    prog: impl AsRef<OsStr>,
    args: &[&str],
    env: &[(&str, &str)],
    stdin: &[u8],
) -> (Outcome, PathBuf) {
    let dir = out_dir(name);
    let bare = run(clean(&prog).args(args).envs(env.iter().copied()), stdin);
    let under = run(
        preloaded(&prog, &dir).args(args).envs(env.iter().copied()),
        stdin,
    );
    assert_eq!(
        under, bare,
        "{name}: output or exit code changed under the library"
    );
    (under, dir)
}

/// Every `p.PID.SEQ.pb.gz` in `dir`, as (pid, seq, path), sorted.
fn profiles(dir: &Path) -> Vec<(u32, u64, PathBuf)> {
    common::dumps(dir)
}

/// Decodes a profile file (gzip, then protobuf) and checks it is a heap
/// profile as Go writes them.
fn decode(path: &Path) -> Profile {
    let p = common::read_profile(path);
    let s = |i: i64| p.string_table[i as usize].as_str();
    assert_eq!(p.string_table.first().map(String::as_str), Some(""));
    let types: Vec<&str> = p.sample_type.iter().map(|t| s(t.r#type)).collect();
    assert_eq!(
        types,
        [
            "alloc_objects",
            "alloc_space",
            "inuse_objects",
            "inuse_space"
        ],
        "{}",
        path.display()
    );
    assert!(!p.mapping.is_empty(), "{}: no mappings", path.display());
    p
}

/// The only profile in `dir`, which must come from `pid` (its at-exit dump).
fn only_profile(dir: &Path, pid: Option<u32>) -> Profile {
    let all = profiles(dir);
    assert_eq!(all.len(), 1, "expected one profile, found {all:?}");
    if let Some(pid) = pid {
        assert_eq!(all[0].0, pid);
    }
    decode(&all[0].2)
}

/// Whether a demangled name is the function `f` (C, or C++ with arguments).
fn is_fn(name: &str, f: &str) -> bool {
    name == f
        || name
            .strip_prefix(f)
            .is_some_and(|rest| rest.starts_with('('))
}

/// The four values summed over the stacks whose leaf function is `f`:
/// [alloc_objects, alloc_space, inuse_objects, inuse_space].
fn leaf(p: &Profile, f: &str) -> [u64; 4] {
    let mut t = [0; 4];
    for s in heapprof::tallies_of(p)
        .iter()
        .filter(|s| s.frames.first().is_some_and(|fr| is_fn(&fr.function, f)))
    {
        t[0] += s.alloc_objects;
        t[1] += s.alloc_space;
        t[2] += s.inuse_objects;
        t[3] += s.inuse_space;
    }
    t
}

/// The four values summed over every stack that passes through `f`.
fn through(p: &Profile, f: &str) -> [u64; 4] {
    let mut t = [0; 4];
    for s in heapprof::tallies_of(p)
        .iter()
        .filter(|s| s.frames.iter().any(|fr| is_fn(&fr.function, f)))
    {
        t[0] += s.alloc_objects;
        t[1] += s.alloc_space;
        t[2] += s.inuse_objects;
        t[3] += s.inuse_space;
    }
    t
}

/// What `family.c` leaves at rate 1, per leaf function.
fn assert_family_exact(p: &Profile) {
    let expect: &[(&str, [u64; 4])] = &[
        ("leak_malloc", [3, 3000, 2, 2000]),
        ("leak_calloc", [2, 377, 2, 377]),
        ("leak_realloc", [2, 5100, 1, 5000]),
        ("leak_reallocarray", [2, 1200, 1, 800]),
        ("leak_posix_memalign", [2, 500, 2, 500]),
        ("leak_aligned_alloc", [1, 256, 1, 256]),
        ("leak_memalign", [1, 100, 1, 100]),
        ("leak_valloc", [1, 1234, 1, 1234]),
        // pvalloc allocates whole pages: 5000 rounds up to 8192.
        ("leak_pvalloc", [1, 8192, 1, 8192]),
    ];
    for (f, want) in expect {
        assert_eq!(leaf(p, f), *want, "{f}");
    }
    // strdup is libc's: its stack leads through leak_strdup (25 chars + NUL).
    assert_eq!(through(p, "leak_strdup"), [1, 26, 1, 26]);
    let churn = through(p, "churn_all");
    assert!(
        churn[0] >= 300 * 10,
        "churn_all allocations missing: {churn:?}"
    );
    assert_eq!(churn[2..], [0, 0], "churn_all freed everything: {churn:?}");
}

#[test]
fn leaks_through_every_family_member_are_exact_at_rate_1() {
    let (out, dir) = same_as_bare(
        "family",
        program("family"),
        &[],
        &[("HEAPPROF_RATE", "1")],
        b"",
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, "family: 13 objects kept, 0 failures\n");
    let p = only_profile(&dir, None);
    assert_family_exact(&p);
    // The constructor loaded libunwind before the program's first malloc.
    common::assert_libunwind_from_the_first_sample(&p);
}

#[test]
fn heapprof_labels_are_on_every_sample() {
    let (out, dir) = same_as_bare(
        "labels",
        program("family"),
        &[],
        &[
            ("HEAPPROF_RATE", "1"),
            ("HEAPPROF_LABELS", "service=family,zone=eu-1"),
        ],
        b"",
    );
    assert_eq!(out.code, 0, "{out:?}");
    let p = only_profile(&dir, None);
    assert_family_exact(&p);
    let r = heapprof::report::Resolved::from_profile("family", &p).unwrap();
    assert!(!r.samples.is_empty());
    for s in &r.samples {
        let mut strs: Vec<(&str, &str)> = s
            .labels
            .iter()
            .filter_map(|l| match &l.value {
                heapprof::report::LabelValue::Str(v) => Some((l.key.as_str(), v.as_str())),
                _ => None,
            })
            .collect();
        strs.sort();
        assert_eq!(strs, [("service", "family"), ("zone", "eu-1")], "{s:?}");
    }
}

#[test]
fn churn_through_every_family_member_leaves_nothing_at_low_rates() {
    // At these rates some calls are sampled and most not, so realloc meets
    // every mix of sampled and unsampled old and new blocks.
    for rate in ["700", "4096", "65536", "524288"] {
        let dir = out_dir(&format!("churn-{rate}"));
        let out = run(
            preloaded(program("family"), &dir)
                .env("HEAPPROF_RATE", rate)
                .env("HEAPPROF_SEED", "7"),
            b"",
        );
        assert_eq!(out.code, 0, "rate {rate}: {out:?}");
        let p = only_profile(&dir, None);
        let churn = through(&p, "churn_all");
        assert!(churn[0] > 0, "rate {rate}: no samples in churn_all");
        assert_eq!(churn[2..], [0, 0], "rate {rate}: false leak {churn:?}");
    }
}

#[test]
fn cpp_new_reaches_malloc_and_leaks_show() {
    let (out, dir) = same_as_bare(
        "c++",
        program("newleak"),
        &[],
        &[("HEAPPROF_RATE", "1")],
        b"",
    );
    assert_eq!(out.code, 0, "{out:?}");
    let p = only_profile(&dir, None);
    // new int[250] and new Widget (48 bytes).
    assert_eq!(leaf(&p, "leak_new"), [2, 1048, 2, 1048]);
    // Aligned new goes through aligned_alloc.
    assert_eq!(leaf(&p, "leak_aligned_new"), [1, 128, 1, 128]);
    let churn = through(&p, "churn_containers");
    assert!(churn[0] > 9 * 200 * 50, "{churn:?}");
    assert_eq!(churn[2..], [0, 0], "{churn:?}");
    // The thread_local's destructor ran and freed what it allocated.
    let tls = through(&p, "TlsThing::~TlsThing");
    assert!(tls[0] >= 8 && tls[2..] == [0, 0], "{tls:?}");
}

#[test]
fn threads_cross_thread_frees_thread_churn_destructors_and_atexit() {
    let (out, dir) = same_as_bare(
        "threads",
        program("threads"),
        &[],
        &[("HEAPPROF_RATE", "1")],
        b"",
    );
    assert_eq!(out.code, 0, "{out:?}");
    let p = only_profile(&dir, None);
    // 4 producers x 2000 objects of 16 + (i % 200) * 8 bytes, all freed by
    // consumer threads.
    let bytes: u64 = (0..2000u64).map(|i| 16 + (i % 200) * 8).sum::<u64>() * 4;
    assert_eq!(leaf(&p, "produce"), [8000, bytes, 0, 0]);
    // 5 rounds of 100 threads, each leaking 64 bytes and 48 more from its
    // pthread key destructor.
    assert_eq!(leaf(&p, "thread_leak"), [500, 32000, 500, 32000]);
    assert_eq!(leaf(&p, "dtor_leak"), [500, 24000, 500, 24000]);
    // 40 atexit handlers ran before the at-exit dump.
    assert_eq!(leaf(&p, "atexit_leak"), [40, 960, 40, 960]);

    // Sampled (so most frees are of unsampled blocks), freed across threads.
    let dir = out_dir("threads-sampled");
    let out = run(
        preloaded(program("threads"), &dir)
            .env("HEAPPROF_RATE", "65536")
            .env("HEAPPROF_SEED", "3"),
        b"",
    );
    assert_eq!(out.code, 0, "{out:?}");
    let p = only_profile(&dir, None);
    let produced = leaf(&p, "produce");
    assert!(produced[0] > 0 && produced[2..] == [0, 0], "{produced:?}");
}

#[test]
fn forked_children_profile_under_their_own_pid_while_threads_allocate() {
    let dir = out_dir("fork");
    let mut cmd = preloaded(program("forker"), &dir);
    cmd.args(["fork", "5"]).env("HEAPPROF_RATE", "1");
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let parent = child.id();
    let out = reader(child.stdout.take().unwrap());
    let err = reader(child.stderr.take().unwrap());
    let code = wait(&mut child, &cmd);
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out, "forked 5 children, 0 failed\n");
    let all = profiles(&dir);
    let pids: std::collections::BTreeSet<u32> = all.iter().map(|(pid, _, _)| *pid).collect();
    assert_eq!(pids.len(), 6, "parent and 5 children: {all:?}");
    for (pid, seq, path) in &all {
        assert_eq!(*seq, 0, "{all:?}");
        let p = decode(path);
        if *pid == parent {
            assert_eq!(leaf(&p, "child_leak"), [0; 4]);
            assert!(through(&p, "churn")[0] > 0);
        } else {
            assert_eq!(leaf(&p, "child_leak"), [1, 777, 1, 777], "child {pid}");
        }
    }
}

#[test]
fn a_forked_and_execd_child_is_inert_unless_children_are_asked_for() {
    let hello = program("hello");
    let hello = hello.to_str().unwrap();
    // Default: the child keeps its environment (LD_PRELOAD included) but the
    // library is inert there: no profile of it, and the parent says so once.
    let dir = out_dir("exec");
    let bare = run(clean(program("forker")).args(["exec", hello]), b"");
    let out = run(
        preloaded(program("forker"), &dir).args(["exec", hello]),
        b"",
    );
    assert_eq!((out.code, bare.code), (0, 0), "{out:?}");
    assert_eq!(
        out.stdout,
        "hello from exec, LD_PRELOAD set, libunwind not loaded\nexec child exited 0\n"
    );
    assert_eq!(
        out.stderr.matches("HEAPPROF_CHILDREN=1").count(),
        1,
        "{}",
        out.stderr
    );
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    let all = profiles(&dir);
    assert_eq!(all.len(), 1, "only the parent profiles: {all:?}");
    assert_eq!(leaf(&decode(&all[0].2), "exec_leak"), [0; 4]);

    // Other LD_PRELOAD entries stay, and the child is just as inert.
    let dir = out_dir("exec-kept");
    let out = run(
        preloaded(program("forker"), &dir)
            .env("LD_PRELOAD", format!("{}:{JEMALLOC}", library().display()))
            .args(["exec", hello]),
        b"",
    );
    assert_eq!(
        out.stdout,
        "hello from exec, LD_PRELOAD set, libunwind not loaded\nexec child exited 0\n"
    );
    assert_eq!(profiles(&dir).len(), 1, "{:?}", profiles(&dir));

    // HEAPPROF_CHILDREN=1: the exec'd program profiles under its own pid.
    let dir = out_dir("exec-children");
    let out = run(
        preloaded(program("forker"), &dir)
            .env("HEAPPROF_CHILDREN", "1")
            .env("HEAPPROF_RATE", "1")
            .args(["exec", hello]),
        b"",
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stderr, "");
    assert_eq!(
        out.stdout,
        "hello from exec, LD_PRELOAD set, libunwind loaded\nexec child exited 0\n"
    );
    let all = profiles(&dir);
    assert_eq!(all.len(), 2, "{all:?}");
    let leaks: Vec<[u64; 4]> = all
        .iter()
        .map(|(_, _, path)| leaf(&decode(path), "exec_leak"))
        .collect();
    assert!(leaks.contains(&[1, 4321, 1, 4321]), "{leaks:?}");
}

#[test]
fn programs_run_unchanged_as_inert_children() {
    // HEAPPROF_PID naming another process: what a child not asked for sees.
    // The library is inert and its hooks taken out of the GOT; every program
    // behaves as bare, and nothing writes a profile (forked children of an
    // inert process included).
    let cases: &[(&str, &[&str])] = &[
        ("family", &[]),
        ("newleak", &[]),
        ("threads", &[]),
        ("lifecycle", &[]),
        ("forker", &["fork", "3"]),
    ];
    for (name, args) in cases {
        let bare = run(clean(program(name)).args(*args), b"");
        let dir = out_dir(&format!("inert-{name}"));
        let inert = run(
            preloaded(program(name), &dir)
                .env("HEAPPROF_PID", "1:0")
                .env("HEAPPROF_RATE", "1")
                .args(*args),
            b"",
        );
        assert_eq!(inert, bare, "{name}");
        assert_eq!(profiles(&dir), [], "{name}");
    }
    // In front of jemalloc: the GOT then calls jemalloc directly.
    let dir = out_dir("inert-jemalloc");
    let out = run(jemalloc_chain(&dir, true).env("HEAPPROF_PID", "1:0"), b"");
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (
            0,
            "jemalloc serves malloc\nfamily: 13 objects kept, 0 failures\n"
        )
    );
    assert_eq!(profiles(&dir), []);
}

#[test]
fn dlopen_of_tls_libraries_from_threads_while_others_allocate() {
    // Distinct files, so every dlopen loads a new module with TLS.
    let module = program("tlsmod");
    let dir = scratch().join("tls-modules");
    std::fs::create_dir_all(&dir).unwrap();
    let mut libs = Vec::new();
    for i in 0..6 {
        let copy = dir.join(format!("libtls{i}.so"));
        std::fs::copy(&module, &copy).unwrap();
        libs.push(copy.to_str().unwrap().to_owned());
    }
    let args: Vec<&str> = libs.iter().map(String::as_str).collect();
    for rate in ["64", "524288"] {
        let (out, dir) = same_as_bare(
            &format!("dlopen-{rate}"),
            program("dlopener"),
            &args,
            &[("HEAPPROF_RATE", rate)],
            b"",
        );
        assert_eq!(out.code, 0, "{out:?}");
        only_profile(&dir, None);
    }
}

#[test]
fn allocations_before_start_and_after_the_exit_dump_are_served() {
    let (out, dir) = same_as_bare(
        "lifecycle",
        program("lifecycle"),
        &[],
        &[("HEAPPROF_RATE", "1")],
        b"",
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stdout,
        "allocated before heapprof started\nearly fini ok\n"
    );
    // The realloc in main was sampled; nothing of it is left.
    let p = only_profile(&dir, None);
    assert_eq!(leaf(&p, "main")[2..], [0, 0]);
    assert!(leaf(&p, "main")[0] >= 1);
}

#[test]
fn a_program_with_its_own_sigusr2_handler_keeps_it() {
    let dir = out_dir("sigusr2");
    let bare = run(&mut clean(program("sigusr2")), b"");
    let out = run(&mut preloaded(program("sigusr2"), &dir), b"");
    assert_eq!((out.code, &out.stdout), (bare.code, &bare.stdout));
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, "handler ran 3 times\n");
    // The program wins, and heapprof says so once.
    let said: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(said.len(), 1, "{}", out.stderr);
    assert!(
        said[0].contains("own handler for SIGUSR2"),
        "{}",
        out.stderr
    );
    only_profile(&dir, None);
}

/// Starts `cmd` at rate 1 with piped stdin and stdout and waits for its
/// "ready" line; returns the child and the rest of its output lines.
fn start_ready_at_rate_1(
    cmd: &mut Command,
) -> (
    std::process::Child,
    std::io::Lines<BufReader<std::process::ChildStdout>>,
) {
    cmd.env("HEAPPROF_RATE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    (child, lines)
}

/// Sends SIGUSR2 to `pid` and waits for its dump number `n` in `dir`.
fn signal_for_dump(pid: u32, dir: &Path, n: u32) -> PathBuf {
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGUSR2) }, 0);
    let file = dir.join(format!("p.{pid}.{n}.pb.gz"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !file.exists() {
        assert!(Instant::now() < deadline, "no profile {n} after SIGUSR2");
        std::thread::sleep(Duration::from_millis(10));
    }
    file
}

/// glibc stays single-threaded in a single-threaded program under the
/// library: heapprof's watcher (src/control/watcher.rs), a thread glibc
/// knows nothing of, takes the signal, and copies of the process write the
/// profiles, exact at rate 1 even when made while the program is inside
/// malloc and free all the time. Once the program creates a thread, the
/// dumper thread takes over and the numbering goes on.
#[test]
fn a_single_threaded_program_stays_single_threaded_for_glibc() {
    let dir = out_dir("single");
    let mut cmd = preloaded(program("single"), &dir);
    cmd.stderr(Stdio::piped());
    let (mut child, mut lines) = start_ready_at_rate_1(&mut cmd);
    let pid = child.id();
    let mut stdin = child.stdin.take().unwrap();
    let mut ask = |line: &str, reply: bool| {
        writeln!(stdin, "{line}").unwrap();
        reply.then(|| lines.next().unwrap().unwrap())
    };
    assert_eq!(ask("flag", true).unwrap(), "single 1");
    assert_eq!(
        ask("tasks", true).unwrap(),
        "tasks 2",
        "the program's and the watcher"
    );
    assert_eq!(ask("churn 64000", true).unwrap(), "ok");
    let p = decode(&signal_for_dump(pid, &dir, 0));
    assert_eq!(leaf(&p, "churn_keep"), [1000, 100_000, 1000, 100_000]);
    // Dumps while the program allocates and frees without pause: each copy
    // is made wherever the program is, inside glibc's malloc included.
    ask("churn 200000", false);
    for n in 1..=6 {
        let p = decode(&signal_for_dump(pid, &dir, n));
        let kept = leaf(&p, "churn_keep")[2];
        assert!((1000..=1000 + 3125).contains(&kept), "{kept}");
    }
    assert_eq!(ask("", true).unwrap(), "ok");
    assert_eq!(ask("flag", true).unwrap(), "single 1");
    assert_eq!(ask("thread", true).unwrap(), "joined");
    // The watcher ends once the dumper thread runs: two tasks again.
    let deadline = Instant::now() + Duration::from_secs(10);
    while ask("tasks", true).unwrap() != "tasks 2" {
        assert!(Instant::now() < deadline, "the watcher did not end");
        std::thread::sleep(Duration::from_millis(10));
    }
    let p = decode(&signal_for_dump(pid, &dir, 7));
    assert_eq!(leaf(&p, "churn_keep")[2..], [4125, 412_500]);
    drop(stdin);
    assert_eq!(wait(&mut child, &cmd), 0);
    assert_eq!(lines.next().unwrap().unwrap(), "bye");
    assert_eq!(common::read_piped(child.stderr.take()), "");
    let seqs: Vec<u64> = profiles(&dir).iter().map(|d| d.1).collect();
    assert_eq!(
        seqs,
        (0..=8).collect::<Vec<u64>>(),
        "numbered on, the exit's last"
    );
}

/// Where no copy of the process can be made (here a seccomp filter refuses
/// every `clone` that makes no thread, `tests/c/noclone.c`), the watcher
/// cannot dump, so a single-threaded program keeps the dumper thread, and
/// its profiles are as exact as ever (symbolized in-process).
#[test]
fn a_process_that_cannot_be_copied_keeps_the_dumper_thread() {
    let dir = out_dir("noclone");
    let mut cmd = preloaded(program("noclone"), &dir);
    cmd.arg(program("single")).stderr(Stdio::piped());
    let (mut child, mut lines) = start_ready_at_rate_1(&mut cmd);
    let mut stdin = child.stdin.take().unwrap();
    let mut ask = |line: &str| {
        writeln!(stdin, "{line}").unwrap();
        lines.next().unwrap().unwrap()
    };
    assert_eq!(ask("flag"), "single 0", "the dumper thread is glibc's");
    assert_eq!(ask("churn 64000"), "ok");
    let p = decode(&signal_for_dump(child.id(), &dir, 0));
    assert_eq!(leaf(&p, "churn_keep"), [1000, 100_000, 1000, 100_000]);
    drop(stdin);
    assert_eq!(wait(&mut child, &cmd), 0);
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(err, "");
}

/// A single-threaded daemon that gives up root: its profiles are written
/// as the program's user, not as the watcher's (Linux keeps credentials per
/// thread, and glibc changes only the threads it knows). Run as root, as
/// CI does; as another user the program keeps its user and so do the files.
#[test]
fn profiles_of_a_program_that_gave_up_root_are_its_users() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = out_dir("single-drop");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut cmd = preloaded(program("single"), &dir);
    let (mut child, mut lines) = start_ready_at_rate_1(&mut cmd);
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "drop").unwrap();
    let uid: u32 = lines.next().unwrap().unwrap()["uid ".len()..]
        .parse()
        .unwrap();
    // SAFETY: geteuid has no preconditions.
    let expect = if unsafe { libc::geteuid() } == 0 {
        65534
    } else {
        uid
    };
    assert_eq!(uid, expect);
    let file = signal_for_dump(child.id(), &dir, 0);
    assert_eq!(std::fs::metadata(&file).unwrap().uid(), expect);
    decode(&file);
    drop(stdin);
    assert_eq!(wait(&mut child, &cmd), 0);
}

#[test]
fn sigusr2_dumps_a_running_program() {
    let dir = out_dir("signal");
    let mut cmd = preloaded(program("waiter"), &dir);
    let (mut child, mut lines) = start_ready_at_rate_1(&mut cmd);
    let p = decode(&signal_for_dump(child.id(), &dir, 0));
    assert_eq!(leaf(&p, "leak_before_signal"), [3, 12288, 3, 12288]);
    drop(child.stdin.take()); // EOF: the program exits
    assert_eq!(wait(&mut child, &cmd), 0);
    assert_eq!(lines.next().unwrap().unwrap(), "bye");
    let all = profiles(&dir);
    assert_eq!(all.len(), 2, "the signal's and the exit's: {all:?}");
    assert_eq!(
        leaf(&decode(&all[1].2), "leak_before_signal")[2..],
        [3, 12288]
    );
}

/// `family` chained in front of jemalloc; `prove`: the program also checks
/// that jemalloc serves its unsampled allocations.
fn jemalloc_chain(dir: &Path, prove: bool) -> Command {
    assert!(
        Path::new(JEMALLOC).exists(),
        "{JEMALLOC} is missing: install Debian's libjemalloc2 (scripts/install-deps.sh)"
    );
    let mut c = preloaded(program("family"), dir);
    c.env("LD_PRELOAD", format!("{} {JEMALLOC}", library().display()));
    if prove {
        c.arg("--jemalloc");
    }
    c
}

#[test]
fn chained_in_front_of_jemalloc() {
    // At rate 1 every object is a sample, served by heapprof's sample heap:
    // exact through the chain (the program checks each contract itself).
    let dir = out_dir("jemalloc");
    let out = run(jemalloc_chain(&dir, false).env("HEAPPROF_RATE", "1"), b"");
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, "family: 13 objects kept, 0 failures\n");
    assert_eq!(out.stderr, "");
    assert_family_exact(&only_profile(&dir, None));

    // With sampling off, everything the program allocates is jemalloc's.
    let dir = out_dir("jemalloc-off");
    let out = run(jemalloc_chain(&dir, true).env("HEAPPROF_RATE", "0"), b"");
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stdout,
        "jemalloc serves malloc\nfamily: 13 objects kept, 0 failures\n"
    );

    // jemalloc has no pvalloc or reallocarray: built from its own functions,
    // never taken from glibc (which would crash on free).
    for rate in ["4096", "65536"] {
        let dir = out_dir(&format!("jemalloc-churn-{rate}"));
        let out = run(jemalloc_chain(&dir, true).env("HEAPPROF_RATE", rate), b"");
        assert_eq!(out.code, 0, "rate {rate}: {out:?}");
        let churn = through(&only_profile(&dir, None), "churn_all");
        assert!(
            churn[0] > 0 && churn[2..] == [0, 0],
            "rate {rate}: {churn:?}"
        );
    }
}

#[test]
fn chained_in_front_of_an_allocator_without_aligned_functions() {
    // The aligned calls (the program's, and heapprof's own for its dump's
    // compressor) are served by heapprof's sample heap; before, heapprof's
    // failed, and the at-exit dump aborted the program.
    for rate in ["1", "524288"] {
        let dir = out_dir(&format!("minimalloc-{rate}"));
        let mut cmd = preloaded(program("family"), &dir);
        cmd.env(
            "LD_PRELOAD",
            format!(
                "{} {}",
                library().display(),
                program("minimalloc").display()
            ),
        )
        .env("HEAPPROF_RATE", rate);
        let out = run(&mut cmd, b"");
        assert_eq!(out.code, 0, "rate {rate}: {out:?}");
        assert_eq!(out.stdout, "family: 13 objects kept, 0 failures\n");
        assert_eq!(out.stderr, "", "rate {rate}");
        let p = only_profile(&dir, None);
        if rate == "1" {
            assert_family_exact(&p);
        }
    }
}

// ---- The sample heap (sampled objects live in heapprof's own memory) ----

/// `sampleheap MODE` under the library at `rate`; asserts a clean exit.
fn sample_heap_run(mode: &str, rate: &str, env: &[(&str, &str)]) -> (Outcome, PathBuf) {
    let dir = out_dir(&format!("sampleheap-{mode}-{rate}"));
    let out = run(
        preloaded(program("sampleheap"), &dir)
            .arg(mode)
            .env("HEAPPROF_RATE", rate)
            .env("HEAPPROF_SEED", "7")
            .envs(env.iter().copied()),
        b"",
    );
    assert_eq!(out.code, 0, "{mode} at rate {rate}: {out:?}");
    (out, dir)
}

/// RssAnon and VmHWM (KiB) that `sampleheap hold N` reports for itself.
fn held_memory(cmd: &mut Command) -> (u64, u64) {
    let out = run(cmd, b"");
    assert_eq!(out.code, 0, "{out:?}");
    let w: Vec<&str> = out.stdout.split_whitespace().collect();
    assert_eq!((w[0], w[2]), ("rss_anon_kb", "hwm_kb"), "{out:?}");
    (w[1].parse().unwrap(), w[3].parse().unwrap())
}

#[test]
fn small_samples_do_not_cost_a_page_each() {
    // 200k objects of 16-256 bytes, every one a sample: a page each would be
    // 800 MB against ~32 MB bare.
    let dir = out_dir("sampleheap-hold");
    let n = "200000";
    let (bare_rss, bare_hwm) = held_memory(clean(program("sampleheap")).args(["hold", n]));
    let (rss, hwm) = held_memory(
        preloaded(program("sampleheap"), &dir)
            .args(["hold", n])
            .env("HEAPPROF_RATE", "1"),
    );
    assert!(
        rss <= 3 * bare_rss + 4096 && hwm <= 3 * bare_hwm + 4096,
        "rate 1: RssAnon {rss} KiB, VmHWM {hwm} KiB; bare {bare_rss}, {bare_hwm}"
    );
    // And every one is in the profile written at exit.
    let t = leaf(&only_profile(&dir, None), "hold_small");
    assert_eq!((t[0], t[2]), (200000, 200000), "{t:?}");
}

#[test]
fn every_alignment_and_calloc_of_reused_samples() {
    let (out, dir) = sample_heap_run("align", "1", &[]);
    assert_eq!(out.stdout, "align: 106 objects kept, 0 failures\n");
    assert_eq!(out.stderr, "");
    let p = only_profile(&dir, None);
    let aligns = || (4..=20).map(|k| 1u64 << k);
    let posix: u64 = aligns().map(|a| 100 + 3 * a + 5).sum();
    let aligned: u64 = aligns().map(|a| 5 * a).sum();
    let memalign: u64 = aligns().map(|a| 100 + 2 * a + 1).sum();
    assert_eq!(leaf(&p, "al_posix"), [34, posix, 34, posix]);
    assert_eq!(leaf(&p, "al_aligned"), [34, aligned, 34, aligned]);
    assert_eq!(leaf(&p, "al_memalign"), [34, memalign, 34, memalign]);
    assert_eq!(leaf(&p, "al_valloc"), [2, 50100, 2, 50100]);
    assert_eq!(leaf(&p, "al_pvalloc"), [2, 4096 + 53248, 2, 4096 + 53248]);
    let c = leaf(&p, "calloc_reused");
    let sizes: Vec<u64> = std::iter::successors(Some(1u64), |s| Some(s * 3 / 2 + 1))
        .take_while(|&s| s < 70000)
        .collect();
    let bytes: u64 = sizes.iter().sum::<u64>() * 6;
    assert_eq!(
        c,
        [6 * sizes.len() as u64, bytes, 0, 0],
        "a malloc and a calloc per round"
    );
}

#[test]
fn realloc_moves_samples_in_and_out_keeping_contents() {
    // Rate 1: every block a sample (moves within the sample heap); 8192: a
    // mix, so blocks move into and out of it.
    for rate in ["1", "8192"] {
        let (out, dir) = sample_heap_run("realloc", rate, &[]);
        assert_eq!(out.stdout, "realloc: 0 failures\n", "rate {rate}");
        let t = through(&only_profile(&dir, None), "do_realloc");
        assert_eq!(t[2..], [0, 0], "rate {rate}: all freed");
        if rate == "1" {
            assert_eq!(t[0], 20000, "one sample per realloc");
        } else {
            // Scaled estimate of the same 20000.
            assert!(t[0].abs_diff(20000) < 3000, "rate {rate}: {t:?}");
        }
    }
}

/// `sampleheap grow`'s own account: (calls, bytes asked for, moves of the
/// lone buffer once 64 KiB or more).
fn grow_report(stdout: &str) -> (u64, u64, u64) {
    let w: Vec<&str> = stdout.split_whitespace().collect();
    assert_eq!(
        (w[0], w[2], w[4], w[6], w[7]),
        ("grow:", "calls,", "bytes,", "moves,", "0"),
        "{stdout}"
    );
    let n = |i: usize| w[i].parse::<u64>().unwrap();
    (n(1), n(3), n(5))
}

#[test]
fn growing_buffers_keep_contents_and_a_lone_large_sample_grows_in_place() {
    // Rate 1: every step a sample (in place, grown at the end of the sample
    // heap, or moved within it); 8192 and 1 MiB: a mix (samples, former
    // samples, blocks moved in from the allocator and back out).
    for rate in ["1", "8192", "1048576"] {
        let (out, dir) = sample_heap_run("grow", rate, &[]);
        let (calls, bytes, moves) = grow_report(&out.stdout);
        let t = through(&only_profile(&dir, None), "do_grow");
        assert_eq!(t[2..], [0, 0], "rate {rate}: all freed");
        if rate == "1" {
            assert_eq!(t[..2], [calls, bytes], "one sample per call, exact");
            assert_eq!(moves, 0, "the lone buffer grows where it is");
        }
    }
}

#[test]
fn a_forked_child_frees_its_parents_samples() {
    let (out, dir) = sample_heap_run("fork", "1", &[]);
    assert_eq!(out.stdout, "fork: 0 failures\n");
    let all = profiles(&dir);
    assert_eq!(all.len(), 2, "parent's and child's: {all:?}");
    let child = all.iter().find(|p| p.0 != all[0].0.min(all[1].0)).unwrap();
    let parent = all.iter().find(|p| p.0 != child.0).unwrap();
    let (parent, child) = (decode(&parent.2), decode(&child.2));
    assert_eq!(leaf(&parent, "parent_alloc"), [11, 101000, 11, 101000]);
    assert_eq!(leaf(&child, "parent_alloc"), [11, 101000, 0, 0]);
    assert_eq!(leaf(&child, "child_alloc"), [5, 1500, 5, 1500]);
}

#[test]
fn a_full_sample_heap_falls_back_to_the_allocator_and_says_so_once() {
    let (out, dir) = sample_heap_run("exhaust", "1", &[("HEAPPROF_SAMPLE_HEAP_LIMIT", "1m")]);
    assert_eq!(out.stdout, "exhaust: 0 failures\n");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", out.stderr);
    // The line counts the fallbacks up to when it was printed (the program
    // may still be filling up then); the at-exit profile counts them all.
    let said: u64 = lines[0]
        .strip_prefix("heapprof: the sample heap is full because its limit (HEAPPROF_SAMPLE_HEAP_LIMIT=1048576) is reached; ")
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{}", lines[0]));
    let p = only_profile(&dir, None);
    let comment = &p.string_table[p.comment[0] as usize];
    let n: u64 = comment
        .split(' ')
        .find_map(|kv| kv.strip_prefix("unsampled_fallbacks="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{comment}"));
    assert!(said >= 1 && said <= n, "said {said}, profile {n}");
    let fill = leaf(&p, "fill_up");
    // Those the heap took are exact; the rest were served unsampled, counted.
    assert!(
        fill[0] >= 500 && fill[0] < 3000 && fill[0] + n >= 3000,
        "{fill:?}, {n} fell back"
    );
    assert_eq!(fill[1], fill[0] * 1000);
    assert_eq!(fill[2..], [0, 0], "every one freed, sampled or not");
    // Freed samples made room again: exact once more.
    assert_eq!(leaf(&p, "after_free"), [100, 100000, 100, 100000]);
}

#[test]
fn says_once_when_preload_cannot_see_the_allocations() {
    // A program with its own malloc: output unchanged, one line on stderr.
    let dir = out_dir("ownmalloc");
    let bare = run(&mut clean(program("ownmalloc")), b"");
    let under = run(&mut preloaded(program("ownmalloc"), &dir), b"");
    assert_eq!((under.code, &under.stdout), (bare.code, &bare.stdout));
    assert_eq!(
        under.stderr,
        "heapprof: this program has its own malloc, which LD_PRELOAD cannot replace: its allocations are not profiled\n"
    );

    // Python with pymalloc.
    let dir = out_dir("pymalloc");
    let out = run(preloaded(python(), &dir).args(["-c", "print(42)"]), b"");
    assert_eq!((out.code, out.stdout.as_str()), (0, "42\n"));
    assert_eq!(
        out.stderr.matches("PYTHONMALLOC=malloc").count(),
        1,
        "{}",
        out.stderr
    );
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
}

/// Debian's python3 (not a version manager's shim script: followed through
/// its exec, but a bash script whose forked helpers leave profiles too).
fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

/// Profiles a real program, asserting output and exit code identical to a
/// bare run and a valid profile at exit from the program's own process.
fn real_program(
    name: &str,
    prog: &str,
    args: &[&str],
    env: &[(&str, &str)],
    stdin: &[u8],
) -> (Outcome, Vec<Profile>) {
    let (out, dir) = same_as_bare(name, prog, args, env, stdin);
    let all = profiles(&dir);
    assert!(!all.is_empty(), "{name}: no profile at exit");
    (out, all.iter().map(|(_, _, p)| decode(p)).collect())
}

#[test]
fn python3_with_pythonmalloc_malloc() {
    let script = "import json, sys\n\
                  d = {str(i): [i] * 5 for i in range(30000)}\n\
                  s = json.dumps(d)\n\
                  print(len(s), sum(len(v) for v in json.loads(s).values()))\n\
                  sys.exit(3)\n";
    let (out, profiles) = real_program(
        "python3",
        python(),
        &["-c", script],
        &[("PYTHONMALLOC", "malloc")],
        b"",
    );
    assert_eq!(out.code, 3);
    assert_eq!(out.stderr, "");
    assert_eq!(profiles.len(), 1);
    assert!(!profiles[0].sample.is_empty(), "python allocated megabytes");
}

/// A Python program that leaks while it runs, profiled with interval dumps:
/// CPython frees its objects at exit, so the dump at exit is nearly empty,
/// and `heapprof leaks` over the README's glob (which selects it) must
/// still name the leak, leaving that dump out and saying so.
#[test]
fn a_python_leak_is_found_though_the_interpreter_frees_all_at_exit() {
    let script = "import time\n\
                  keep = []\n\
                  for i in range(40):\n\
                  \x20   keep.append(bytearray(1 << 20))\n\
                  \x20   time.sleep(0.06)\n\
                  print(len(keep))\n";
    let dir = out_dir("python-leak");
    let out = run(
        preloaded(python(), &dir)
            .args(["-c", script])
            .env("PYTHONMALLOC", "malloc")
            .env("HEAPPROF_INTERVAL", "0.4"),
        b"",
    );
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "40\n"),
        "{}",
        out.stderr
    );
    let dumps: Vec<PathBuf> = profiles(&dir).into_iter().map(|(_, _, p)| p).collect();
    assert!(dumps.len() >= 4, "{dumps:?}");
    let leaks = common::output_ok(
        Command::new(env!("CARGO_BIN_EXE_heapprof"))
            .arg("leaks")
            .args(&dumps),
    );
    let (text, err) = (
        String::from_utf8_lossy(&leaks.stdout),
        String::from_utf8_lossy(&leaks.stderr),
    );
    assert!(
        err.contains("the program freed its heap as it shut down"),
        "{err}"
    );
    let steady = text
        .split("steady growth (")
        .nth(1)
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        !steady.starts_with("0 stacks"),
        "the leak is named:\n{text}"
    );
}

#[test]
fn sqlite3_inserting_rows() {
    let sql = b"create table t(id integer primary key, name text, n real);\n\
                with recursive c(i) as (select 1 union all select i + 1 from c where i < 20000)\n\
                insert into t select i, printf('name-%08d', i), i * 0.5 from c;\n\
                create index t_name on t(name);\n\
                select count(*), sum(length(name)), max(n) from t;\n";
    let (out, profiles) = real_program("sqlite3", "sqlite3", &[":memory:"], &[], sql);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "20000|260000|10000.0\n")
    );
    assert_eq!(profiles.len(), 1);
}

#[test]
fn perl_building_a_hash() {
    let (out, profiles) = real_program(
        "perl",
        "perl",
        &[
            "-e",
            "my %h; $h{$_} = 'x' x ($_ % 100) for 1..50000; print scalar(keys %h), qq{\\n}; exit 2",
        ],
        &[],
        b"",
    );
    assert_eq!((out.code, out.stdout.as_str()), (2, "50000\n"));
    assert_eq!(profiles.len(), 1);
}

#[test]
fn bash_running_a_pipeline() {
    let script = "seq 1 20000 | sort -rn | head -3; echo done | tr a-z A-Z; exit 4";
    let dir = out_dir("bash");
    let bare = run(clean("bash").args(["-c", script]), b"");
    let under = run(preloaded("bash", &dir).args(["-c", script]), b"");
    assert_eq!((under.code, &under.stdout), (bare.code, &bare.stdout));
    assert_eq!(
        (under.code, under.stdout.as_str()),
        (4, "20000\n19999\n19998\nDONE\n")
    );
    // The programs bash ran did so with the library inert, which bash says
    // once (not once per program).
    assert_eq!(
        under.stderr.matches("HEAPPROF_CHILDREN=1").count(),
        1,
        "{}",
        under.stderr
    );
    // bash, and the subshells it forks for builtins in a pipeline (forked
    // children keep profiling); never the programs it executes.
    let all = profiles(&dir);
    assert!(!all.is_empty() && all.len() <= 3, "{all:?}");
    for (_, _, p) in &all {
        decode(p);
    }
}

#[test]
fn the_c_compiler_and_its_children() {
    let dir = scratch().join("cc-src");
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("small.c");
    std::fs::write(
        &src,
        "#include <stdio.h>\n#include <stdlib.h>\nstruct p { int x, y; };\n\
         static int area(struct p a, struct p b) { return abs(a.x - b.x) * abs(a.y - b.y); }\n\
         int main(void) { struct p a = {1, 2}, b = {4, 6}; printf(\"%d\\n\", area(a, b)); return 0; }\n",
    )
    .unwrap();
    let bare_obj = dir.join("bare.o");
    let under_obj = dir.join("under.o");
    let (src, bare_o, under_o) = (
        src.to_str().unwrap(),
        bare_obj.to_str().unwrap(),
        under_obj.to_str().unwrap(),
    );
    let bare = run(clean("cc").args(["-O2", "-c", src, "-o", bare_o]), b"");
    // Children too: the driver, cc1 and as each write a profile.
    let out_dir = out_dir("cc");
    let under = run(
        preloaded("cc", &out_dir)
            .env("HEAPPROF_CHILDREN", "1")
            .args(["-O2", "-c", src, "-o", under_o]),
        b"",
    );
    assert_eq!(under, bare);
    assert_eq!(under.code, 0, "{under:?}");
    assert_eq!(
        std::fs::read(&bare_obj).unwrap(),
        std::fs::read(&under_obj).unwrap(),
        "the object file changed"
    );
    let all = profiles(&out_dir);
    let pids: std::collections::BTreeSet<u32> = all.iter().map(|(pid, _, _)| *pid).collect();
    assert!(pids.len() >= 3, "driver, cc1 and as: {all:?}");
    let samples: usize = all.iter().map(|(_, _, p)| decode(p).sample.len()).sum();
    assert!(samples > 0, "cc1 allocates megabytes");
}

#[test]
fn go_pprof_names_the_leaking_c_function() {
    let go = ["/usr/bin/go", "/usr/local/go/bin/go"]
        .into_iter()
        .find(|g| Path::new(g).exists())
        .unwrap_or("go");
    let dir = out_dir("go-pprof");
    let out = run(
        preloaded(program("family"), &dir).env("HEAPPROF_RATE", "1"),
        b"",
    );
    assert_eq!(out.code, 0, "{out:?}");
    let (_, _, profile) = profiles(&dir).pop().expect("a profile");
    let home = scratch().join("go-home");
    std::fs::create_dir_all(&home).unwrap();
    let res = Command::new(go)
        .args(["tool", "pprof", "-top"])
        .arg(&profile)
        .env("HOME", &home)
        .env("PPROF_TMPDIR", &home)
        .env("GOCACHE", home.join("cache"))
        .env_remove("LD_PRELOAD")
        .output()
        .unwrap_or_else(|e| panic!("run {go} tool pprof (Debian package golang-go): {e}"));
    let (so, se) = (
        String::from_utf8_lossy(&res.stdout),
        String::from_utf8_lossy(&res.stderr),
    );
    assert!(res.status.success(), "go tool pprof failed:\n{se}");
    for f in ["leak_pvalloc", "leak_realloc", "leak_malloc"] {
        assert!(so.contains(f), "{f} missing:\n{so}");
    }
    assert!(
        !se.to_lowercase().contains("symboliz"),
        "go tool pprof tried to symbolize:\n{se}"
    );
}

#[test]
fn a_dump_is_invisible_to_a_parent_blocked_in_wait() {
    // The dump resolves the program's DWARF in a copy of the process: no
    // SIGCHLD, no child for wait(), no atfork handler run, and the
    // program's functions named with lines all the same.
    let dir = out_dir("reaper");
    let mut cmd = preloaded(program("reaper"), &dir);
    let (mut child, mut lines) = start_ready_at_rate_1(&mut cmd);
    for n in 0..2 {
        let p = decode(&signal_for_dump(child.id(), &dir, n));
        common::assert_dwarf_parsed_in_a_copy(&p);
        let s = |i: i64| p.string_table[i as usize].as_str();
        let f = p
            .function
            .iter()
            .find(|f| s(f.name) == "reaper_leak")
            .unwrap_or_else(|| panic!("reaper_leak not in profile {n}"));
        assert!(s(f.filename).ends_with("reaper.c"), "{}", s(f.filename));
        let lines = p.location.iter().flat_map(|l| &l.line);
        assert!(
            lines.filter(|l| l.function_id == f.id).any(|l| l.line > 0),
            "reaper_leak has no line in profile {n}"
        );
    }
    drop(child.stdin.take()); // EOF: the real child exits 7
    assert_eq!(wait(&mut child, &cmd), 0);
    assert_eq!(
        lines.next().unwrap().unwrap(),
        "waited kid status 7 sigchld 1 then ECHILD; atfork 1 1"
    );
}

// ---- Descriptors and files (src/os/fds.rs) --------------------------------

#[test]
fn a_daemon_that_closes_every_descriptor_reads_exactly_what_it_sent() {
    // libunwind 1.6 validates the addresses of guessed frames through a
    // pipe it opens on the lowest free descriptors: with the program's own
    // socket on those numbers, it stole and injected bytes (or hung in a
    // read, which the program's alarm turns into exit 142).
    for rate in ["524288", "1"] {
        let (out, _) = same_as_bare(
            &format!("fds-daemon-{rate}"),
            program("fds"),
            &["daemon"],
            &[("HEAPPROF_RATE", rate)],
            b"",
        );
        let sent = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ()";
        assert_eq!(
            out.stdout,
            format!(
                "socketpair 3 4 made\nsocketpair: fds 3 4 got {sent} extra -1\npipe: fds 5 6 got {sent} extra -1\n"
            ),
            "rate {rate}"
        );
    }
}

#[test]
fn with_stdin_closed_descriptor_0_stays_free() {
    // `exec PROG <&-`: the program starts with 0 closed; fstat(0) fails and
    // its next pipe is 0 and 3, as in a bare run.
    let fds = program("fds");
    let fds = fds.to_str().unwrap();
    let (out, _) = same_as_bare(
        "fds-stdin",
        "sh",
        &["-c", "exec \"$0\" stdin <&-", fds],
        &[],
        b"",
    );
    assert_eq!(out.stdout, "fstat(0) fails\npipe 0 3\n");
}

/// `fds list`'s descriptors: (number, close-on-exec).
fn listed(stdout: &str) -> Vec<(i32, bool)> {
    stdout
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("fd ")?;
            let (n, flag) = rest.split_once(' ').unwrap_or((rest, ""));
            Some((n.parse().ok()?, flag == "cloexec"))
        })
        .collect()
}

#[test]
fn a_profiled_program_sees_only_its_own_descriptors_in_its_range() {
    let dir = out_dir("fds-list");
    let bare = run(clean(program("fds")).arg("list"), b"");
    let under = run(preloaded(program("fds"), &dir).arg("list"), b"");
    assert_eq!((bare.code, under.code), (0, 0), "{bare:?} {under:?}");
    let floor = heapprof::os::fds::floor();
    let (bare, under) = (listed(&bare.stdout), listed(&under.stdout));
    let (low, high): (Vec<_>, Vec<_>) = under.iter().partition(|(fd, _)| *fd < floor);
    assert_eq!(low, bare, "descriptors below {floor} changed");
    assert!(
        high.iter().all(|&(_, cloexec)| cloexec),
        "heapprof's descriptors must be close-on-exec: {high:?}"
    );
}

/// A program that keeps closing its stdout and putting it back (CPython's
/// redirection tests do) while heapprof's watcher or dumper makes a copy
/// of the process every few milliseconds: the copies' pipes never take the
/// number it frees and then close the one it put back (heapprof's threads
/// have descriptor tables of their own). Once, a regrtest worker lost its
/// stdout this way.
#[test]
fn a_program_swapping_its_stdout_never_loses_it() {
    // Single-threaded (the watcher dumps), then with a thread (the dumper).
    for mode in ["swap", "swap-threads"] {
        let dir = out_dir(&format!("fds-{mode}"));
        let out = run(
            preloaded(program("fds"), &dir)
                .arg(mode)
                .env("HEAPPROF_INTERVAL", "0.005"),
            b"",
        );
        assert_eq!(out.code, 0, "{mode}: {out:?}");
        assert_eq!(out.stdout, "stdout lost 0 times\n", "{mode}: {out:?}");
        assert!(
            common::dumps(&dir).len() > 5,
            "{mode}: the copies made dumps meanwhile"
        );
    }
}

/// errno is the program's: the watcher, which shares the main thread's
/// thread pointer and so its errno, makes its dumps (a copy of the process
/// every few milliseconds) without touching it, and neither do the hooks,
/// sampled or not.
#[test]
fn errno_is_left_alone_while_the_watcher_dumps() {
    let (out, dir) = same_as_bare(
        "errno",
        program("errnokeep"),
        &[],
        &[("HEAPPROF_INTERVAL", "0.005"), ("HEAPPROF_RATE", "65536")],
        b"",
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stdout, "errno changed 0 times in many checks\n",
        "{out:?}"
    );
    assert!(
        common::dumps(&dir).len() > 5,
        "the watcher's copies made dumps meanwhile"
    );
}

#[test]
fn a_child_that_does_not_load_the_library_inherits_nothing() {
    // Spawned without LD_PRELOAD (as a static or setuid program would run):
    // its descriptors are the bare run's.
    let (out, _) = same_as_bare("fds-child", program("fds"), &["child"], &[], b"");
    assert!(out.stdout.ends_with("child status 0\n"), "{out:?}");
}

#[test]
fn links_and_files_planted_at_dump_names_are_left_alone() {
    use std::os::unix::fs::PermissionsExt;
    let dir = out_dir("fds-plant");
    let target = scratch().join("fds-plant-target");
    std::fs::write(&target, b"precious").unwrap();
    let out = run(
        preloaded(program("fds"), &dir)
            .arg("plant")
            .arg(&dir)
            .arg(&target),
        b"",
    );
    assert_eq!((out.code, out.stdout.as_str()), (0, "planted\n"), "{out:?}");
    assert_eq!(std::fs::read(&target).unwrap(), b"precious");
    let mut written = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        let meta = std::fs::symlink_metadata(e.path()).unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if meta.file_type().is_symlink() {
            assert_eq!(std::fs::read_link(e.path()).unwrap(), target, "{name}");
        } else if std::fs::read(e.path()).unwrap() == b"planted" {
            assert!(!name.starts_with('.'), "{name}");
        } else {
            assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{name}");
            written.push(name);
        }
    }
    // The exit dump took the first free sequence number, past the four
    // planted (and its temporary name past the planted ones).
    let heap: Vec<_> = written.iter().filter(|n| !n.contains("threads")).collect();
    assert_eq!(heap.len(), 1, "{written:?}");
    assert!(heap[0].ends_with(".4.pb.gz"), "{written:?}");
    decode(&dir.join(heap[0]));
}

#[test]
fn an_exec_chain_keeps_its_children_note_and_says_it_once() {
    // The note socket is close-on-exec; the process's own execs keep it for
    // the next image (the first starts no child: a later one says the
    // line), and no child sees it.
    let fds = program("fds");
    let script = format!(
        "exec sh -c '{0} list; exec sh -c \"{0} list\"'",
        fds.display()
    );
    let (out, _) = same_as_bare_stdout("fds-exec-chain", "sh", &["-c", &script]);
    assert_eq!(
        out.stderr.matches("were not profiled").count(),
        1,
        "{out:?}"
    );
}

/// Runs `prog ARGS` bare and under the library: the same exit code and
/// output (stderr may differ: heapprof's lines).
fn same_as_bare_stdout(name: &str, prog: &str, args: &[&str]) -> (Outcome, PathBuf) {
    let dir = out_dir(name);
    let bare = run(clean(prog).args(args), b"");
    let under = run(preloaded(prog, &dir).args(args), b"");
    assert_eq!(
        (under.code, &under.stdout),
        (bare.code, &bare.stdout),
        "{name}: output or exit code changed under the library: {under:?}"
    );
    (under, dir)
}

#[test]
fn heapprof_file_mode_sets_the_profiles_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let umask = status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .map(|m| u32::from_str_radix(m.trim(), 8).unwrap())
        .unwrap();
    let dir = out_dir("fds-mode");
    let out = run(
        preloaded(program("fds"), &dir)
            .arg("list")
            .env("HEAPPROF_FILE_MODE", "0640"),
        b"",
    );
    assert_eq!(out.code, 0, "{out:?}");
    let (_, _, path) = profiles(&dir).pop().expect("an exit profile");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o640 & !umask, "{}", path.display());
}
