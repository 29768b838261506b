//! Memory pressure never kills the host: under an address-space limit
//! (`ulimit -v`) at which the program runs fine unprofiled, the profiled
//! program — a C program under the preload library, and a Rust program with
//! `Profiler` — prints the same output and exits with the same status, at the
//! default rate and at rate 1; heapprof says "low on memory" once on stderr,
//! and any profile it writes is whole (no temporary file left behind).

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The limit, in KiB: both programs need well under it unprofiled, and
/// heapprof's own needs (a dump's symbolizer maps the program's binaries
/// and its DWARF) do not fit beside them.
const LIMIT_KB: u32 = 30_000;

fn library() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(["build", "--quiet", "-p", "heapprof-preload"])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if profile_dir.file_name() == Some(OsStr::new("release")) {
        cmd.arg("--release");
    }
    assert!(cmd.status().unwrap().success());
    profile_dir.join("libheapprof_preload.so")
}

/// Runs `prog` with `env` under the address-space limit.
fn limited(prog: &Path, env: &[(&str, &OsStr)]) -> Output {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        // The preload library is set for the program only, not for `sh`.
        .arg(format!(
            "ulimit -v {LIMIT_KB}; [ -z \"$PRESSURE_PRELOAD\" ] || export LD_PRELOAD=\"$PRESSURE_PRELOAD\"; exec \"$0\""
        ))
        .arg(prog)
        .env_remove("LD_PRELOAD");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn check(name: &str, prog: &Path, bare_env: &[(&str, &OsStr)], env: &[(&str, &OsStr)]) {
    let bare = limited(prog, bare_env);
    assert_eq!(bare.status.code(), Some(3), "{name} bare: {bare:?}");
    let bare_out = String::from_utf8_lossy(&bare.stdout).into_owned();
    assert!(bare_out.starts_with("checksum "), "{bare_out}");
    for rate in ["524288", "1"] {
        let dir = common::temp_dir(&format!("pressure-{name}-{rate}"));
        let prefix = dir.join("p");
        let mut all: Vec<(&str, &OsStr)> = env.to_vec();
        all.push(("HEAPPROF_RATE", rate.as_ref()));
        all.push(("HEAPPROF_OUT", prefix.as_os_str()));
        all.push(("HEAPPROF_AT_EXIT", "1".as_ref()));
        let run = limited(prog, &all);
        let err = String::from_utf8_lossy(&run.stderr);
        assert_eq!(
            run.status.code(),
            Some(3),
            "{name} at rate {rate} under ulimit -v {LIMIT_KB}: {err}"
        );
        assert_eq!(
            String::from_utf8_lossy(&run.stdout),
            bare_out,
            "{name} rate {rate}"
        );
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "{name} rate {rate}: one line on stderr: {err}"
        );
        assert!(lines[0].starts_with("heapprof: low on memory;"), "{err}");
        assert!(
            common::temp_files(&dir).is_empty(),
            "a partial file was left"
        );
        for (_, _, path) in common::dumps(&dir) {
            // A profile that was written is whole.
            let p = common::read_profile(&path);
            assert!(!p.sample_type.is_empty());
        }
    }
}

#[test]
fn a_c_program_under_the_preload_library_runs_on() {
    let dir = common::temp_dir("pressure-c");
    let prog = dir.join("pressure");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/pressure.c");
    let status = Command::new("gcc")
        .args(["-O2", "-g", "-o"])
        .arg(&prog)
        .arg(src)
        .status()
        .unwrap();
    assert!(status.success());
    let lib = library();
    check("c", &prog, &[], &[("PRESSURE_PRELOAD", lib.as_os_str())]);
}

#[test]
fn a_rust_program_with_profiler_runs_on() {
    let prog = common::example("pressure");
    let off: [(&str, &OsStr); 3] = [
        ("HEAPPROF_RATE", "0".as_ref()),
        ("HEAPPROF_AT_EXIT", "0".as_ref()),
        ("HEAPPROF_SIGNAL", "none".as_ref()),
    ];
    check("rust", &prog, &off, &[]);
}
