//! Helpers shared by integration tests: temp dirs, the dependency installer,
//! running `go tool pprof`, decoding dumps.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Once;

/// `d`, emptied (removed and made again); returned for chaining.
pub fn fresh_dir(d: PathBuf) -> PathBuf {
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A command for `prog` with none of the test runner's `HEAPPROF_*`,
/// `LD_PRELOAD` or `PYTHONMALLOC`, so each test sets exactly what it tests.
pub fn clean_command(prog: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new(prog);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("HEAPPROF_") || k == "LD_PRELOAD" || k == "PYTHONMALLOC" {
            c.env_remove(&*k);
        }
    }
    c
}

/// A fresh empty directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    fresh_dir(std::env::temp_dir().join(format!("heapprof-test-{}-{name}", std::process::id())))
}

/// Installs the tools tests run against, if missing (never skips).
pub fn ensure_deps() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install-deps.sh");
        let status = Command::new("bash")
            .arg(script)
            .status()
            .expect("run install-deps.sh");
        assert!(
            status.success(),
            "scripts/install-deps.sh could not install the tools these tests run against (its line above says which and how)"
        );
    });
}

/// Runs `go tool pprof ARGS`; returns (stdout, stderr) and asserts success.
pub fn go_pprof(args: &[&str]) -> (String, String) {
    ensure_deps();
    let tmp = std::env::temp_dir().join("heapprof-pprof-tmp");
    let _ = std::fs::create_dir_all(&tmp);
    let out = Command::new("go")
        .args(["tool", "pprof"])
        .args(args)
        .env("PPROF_TMPDIR", &tmp)
        .env("HOME", &tmp)
        .output()
        .expect("run go tool pprof");
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "go tool pprof {args:?} failed:\n{se}\n{so}"
    );
    (so, se)
}

/// Asserts that `p`'s process resolved its DWARF in copies of itself every
/// time (src/profile/forked_copy.rs), never in its own memory.
pub fn assert_dwarf_parsed_in_a_copy(p: &heapprof::profile::proto::Profile) {
    let comment = comment(p);
    assert!(comment.contains(" symbolize_copy_failures=0"), "{comment}");
}

/// The first comment of a heapprof profile (its counters).
fn comment(p: &heapprof::profile::proto::Profile) -> &str {
    &p.string_table[p.comment[0] as usize]
}

/// Decodes a dump file.
pub fn read_profile(path: &Path) -> heapprof::profile::proto::Profile {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    heapprof::decode_profile(&bytes).unwrap_or_else(|e| panic!("decode {}: {e}", path.display()))
}

/// Asserts that every sample of `p`'s process was captured by libunwind:
/// loaded by a constructor before the first sample, not later by the
/// dumper thread (libgcc's unwinder costs ~18 times as much per sample).
pub fn assert_libunwind_from_the_first_sample(p: &heapprof::profile::proto::Profile) {
    let comment = comment(p);
    assert!(
        comment.contains("unwinder=libunwind libgcc_captures=0"),
        "{comment}"
    );
}

/// Sums the four values of every stack whose leaf function contains `f`.
pub fn leaf_totals(p: &heapprof::profile::proto::Profile, f: &str) -> [u64; 4] {
    totals(&heapprof::tallies_of(p), f)
}

/// [`leaf_totals`] of tallies.
pub fn totals(tallies: &[heapprof::StackTally], f: &str) -> [u64; 4] {
    let mut t = [0; 4];
    for s in tallies
        .iter()
        .filter(|s| s.frames.first().is_some_and(|fr| fr.function.contains(f)))
    {
        t[0] += s.alloc_objects;
        t[1] += s.alloc_space;
        t[2] += s.inuse_objects;
        t[3] += s.inuse_space;
    }
    t
}

/// Builds (if needed) and returns the path of an example binary.
pub fn example(name: &str) -> PathBuf {
    static BUILD: Once = Once::new();
    BUILD.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "--examples"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cargo build --examples");
        assert!(status.success());
    });
    let exe = std::env::current_exe().unwrap();
    // target/debug/deps/test-hash -> target/debug/examples/NAME
    exe.parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name)
}

/// Every `PREFIX.PID.SEQ.pb.gz` in `dir`, as (pid, seq, path), sorted;
/// not the threads profiles beside them (`PREFIX.threads.PID.SEQ.pb.gz`).
pub fn dumps(dir: &Path) -> Vec<(u32, u64, PathBuf)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".pb.gz") else {
            continue;
        };
        let parts: Vec<&str> = stem.rsplitn(3, '.').collect();
        if let [seq, pid, prefix] = parts[..] {
            if prefix == "threads" || prefix.ends_with(".threads") {
                continue;
            }
            if let (Ok(pid), Ok(seq)) = (pid.parse(), seq.parse()) {
                out.push((pid, seq, e.path()));
            }
        }
    }
    out.sort();
    out
}

/// Files in `dir` that look like leftovers of an interrupted write.
pub fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp."))
        .collect()
}

/// The preload library, built once per test binary in the profile the
/// tests were built in (`target/<profile>/deps/TEST-HASH` → `--release` or
/// not), so it always matches the sources.
pub fn preload_library() -> &'static Path {
    use std::sync::OnceLock;
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let exe = std::env::current_exe().expect("current_exe");
        let profile_dir = exe.parent().and_then(Path::parent).expect("target dir");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", "heapprof-preload"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir.file_name() == Some(std::ffi::OsStr::new("release")) {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build -p heapprof-preload");
        assert!(status.success(), "cargo build -p heapprof-preload failed");
        let lib = profile_dir.join("libheapprof_preload.so");
        assert!(lib.exists(), "{} was not built", lib.display());
        lib
    })
}

/// Installs Chromium and Prometheus for the report and metrics tests, if
/// missing (never skips).
pub fn ensure_report_deps() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install-report-deps.sh");
        let status = Command::new("bash")
            .arg(script)
            .status()
            .expect("run install-report-deps.sh");
        assert!(status.success(), "scripts/install-report-deps.sh failed");
    });
}

/// `tests/c/NAME.c` compiled into `dir` with `cc -O2 -g FLAGS`, once per
/// test binary (later calls reuse it).
pub fn c_program(dir: &Path, name: &str, flags: &[&str]) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let exe = dir.join(name);
    if !built.contains(&exe) {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/c/{name}.c"));
        output_ok(
            Command::new("cc")
                .args(["-O2", "-g", "-o"])
                .arg(&exe)
                .arg(&src)
                .args(flags),
        );
        built.push(exe.clone());
    }
    exe
}

/// Runs `cmd` to its end and checks that it succeeded (showing its stderr
/// if not); its output.
pub fn output_ok(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Everything a child wrote on one of its piped streams (`child.stdout` or
/// `child.stderr`, taken), to its end; empty if it was not piped.
pub fn read_piped(stream: Option<impl std::io::Read>) -> String {
    let mut text = String::new();
    if let Some(mut s) = stream {
        s.read_to_string(&mut text).unwrap();
    }
    text
}
