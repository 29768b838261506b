//! Raw profiles (`HEAPPROF_SYMBOLIZE=0`) named by `heapprof` itself: the
//! reports and `heapprof symbolize` find each mapping's file by path, check
//! its build ID, and name the addresses with the same functions and lines as
//! a symbolized dump; a file that is gone or rebuilt is reported, and its
//! addresses stay addresses.

mod common;

use std::alloc::System;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use heapprof::profile::proto::Profile;

#[global_allocator]
static GLOBAL: heapprof::Profiler<System> = heapprof::Profiler::new(System);

fn heapprof_cli(args: &[&OsStr]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_heapprof"))
        .args(args)
        .output()
        .expect("run heapprof");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every sample's frames that lie in `exe`, as "name file:line", leaf first
/// (the frames both symbolizers read from the program's own DWARF), without
/// the Rust runtime's root frames.
fn exe_stacks(p: &Profile, exe: &str) -> Vec<Vec<String>> {
    let s = |i: i64| p.string_table[i as usize].as_str();
    let mut out: Vec<Vec<String>> = p
        .sample
        .iter()
        .map(|sample| {
            sample
                .location_id
                .iter()
                .flat_map(|id| {
                    let l = p.location.iter().find(|l| l.id == *id).unwrap();
                    let m = p.mapping.iter().find(|m| m.id == l.mapping_id);
                    let fname = |line: &heapprof::profile::proto::Line| {
                        let f = p
                            .function
                            .iter()
                            .find(|f| f.id == line.function_id)
                            .unwrap();
                        s(f.name).to_string()
                    };
                    // The Rust runtime's root frames are named from the
                    // symbol table in-process (cheaper), from DWARF here.
                    let root = l.line.last().is_some_and(|x| {
                        let n = fname(x);
                        n.ends_with("::thread_start") || n == "std::rt::lang_start_internal"
                    });
                    let in_exe = !root && m.is_some_and(|m| s(m.filename) == exe);
                    l.line
                        .iter()
                        .filter(move |_| in_exe)
                        .map(|line| {
                            let f = p
                                .function
                                .iter()
                                .find(|f| f.id == line.function_id)
                                .unwrap();
                            format!("{} {}:{}", s(f.name), s(f.filename), line.line)
                        })
                        .collect::<Vec<_>>()
                })
                .collect()
        })
        .filter(|v: &Vec<String>| !v.is_empty())
        .collect();
    out.sort();
    out.dedup();
    out
}

#[inline(never)]
fn raw_symbolize_leaker() {
    for _ in 0..7 {
        Box::leak(vec![0u8; 30_000].into_boxed_slice());
    }
}

#[test]
fn a_rust_programs_raw_profile_gets_the_in_process_names_and_lines() {
    heapprof::Config::from_env()
        .rate(1)
        .symbolize(true)
        .install();
    raw_symbolize_leaker();
    let dir = common::temp_dir("raw-symbolize-rust");
    let (sym, raw, named) = (
        dir.join("sym.pb.gz"),
        dir.join("raw.pb.gz"),
        dir.join("named.pb.gz"),
    );
    // Two dumps of the same tallies: symbolized in-process, then raw.
    heapprof::dump_to(&sym).unwrap();
    heapprof::Config::from_env()
        .rate(1)
        .symbolize(false)
        .install();
    heapprof::dump_to(&raw).unwrap();
    heapprof::Config::from_env()
        .rate(1)
        .symbolize(true)
        .install();

    let (ok, _, err) = heapprof_cli(&[
        "symbolize".as_ref(),
        raw.as_os_str(),
        "-o".as_ref(),
        named.as_os_str(),
    ]);
    assert!(ok, "{err}");
    let exe = std::fs::read_link("/proc/self/exe").unwrap();
    let exe = exe.to_str().unwrap();
    let named_p = common::read_profile(&named);
    let sym_p = common::read_profile(&sym);
    assert!(common::read_profile(&raw).function.is_empty());
    let mine = |stacks: Vec<Vec<String>>| -> Vec<Vec<String>> {
        stacks
            .into_iter()
            .filter(|st| st.iter().any(|f| f.contains("raw_symbolize_leaker")))
            .collect()
    };
    let (a, b) = (
        mine(exe_stacks(&sym_p, exe)),
        mine(exe_stacks(&named_p, exe)),
    );
    assert!(!a.is_empty(), "the leaker is in the symbolized dump");
    assert!(
        a[0][0].starts_with("raw_symbolize::raw_symbolize_leaker ")
            && a[0][0].contains("raw_symbolize.rs:"),
        "{a:?}"
    );
    assert_eq!(a, b, "in-process and CLI symbolization differ");
    assert!(named_p
        .mapping
        .iter()
        .any(|m| m.has_functions && m.has_line_numbers));
    assert_eq!(named_p.drop_frames, 0);

    // `heapprof top` names the raw profile by itself.
    let (ok, top, err) = heapprof_cli(&["top".as_ref(), raw.as_os_str()]);
    assert!(ok, "{err}");
    assert!(
        top.contains("raw_symbolize_leaker (") && top.contains("raw_symbolize.rs:"),
        "{top}"
    );
    assert!(err.is_empty(), "{err}");
}

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

fn compile_hello(out: &Path, extra: &[&str]) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/hello.c");
    let status = Command::new("gcc")
        .args(["-O2", "-g"])
        .args(extra)
        .arg("-o")
        .arg(out)
        .arg(src)
        .status()
        .unwrap();
    assert!(status.success());
}

/// Runs `prog` under the preload library at rate 1; returns its at-exit dump.
fn preloaded_dump(prog: &Path, dir: &Path, name: &str, symbolize: bool) -> PathBuf {
    let prefix = dir.join(name);
    let status = Command::new(prog)
        .env("LD_PRELOAD", library())
        .env("HEAPPROF_RATE", "1")
        .env("HEAPPROF_SYMBOLIZE", if symbolize { "1" } else { "0" })
        .env("HEAPPROF_OUT", &prefix)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    common::dumps(dir)
        .into_iter()
        .map(|(_, _, p)| p)
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("{name}."))
        })
        .expect("an at-exit dump")
}

/// The 1-based number of the first line of `path` (from the crate root)
/// containing `needle`.
fn line_of(path: &str, needle: &str) -> usize {
    let src = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap();
    1 + src
        .lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} in {path}"))
}

#[test]
fn a_c_programs_raw_profile_gets_the_in_process_names_and_lines() {
    let dir = common::temp_dir("raw-symbolize-c");
    let prog = dir.join("hello");
    compile_hello(&prog, &[]);
    let sym = preloaded_dump(&prog, &dir, "sym", true);
    let raw = preloaded_dump(&prog, &dir, "raw", false);
    let named = dir.join("named.pb.gz");
    let (ok, _, err) = heapprof_cli(&[
        "symbolize".as_ref(),
        raw.as_os_str(),
        "-o".as_ref(),
        named.as_os_str(),
    ]);
    assert!(ok, "{err}");
    let exe = prog.to_str().unwrap();
    // The line of exec_leak's malloc, as the compiler numbers it.
    let leak_line = format!("hello.c:{}", line_of("tests/c/hello.c", "= malloc("));
    let a = exe_stacks(&common::read_profile(&sym), exe);
    let b = exe_stacks(&common::read_profile(&named), exe);
    assert!(
        a.iter()
            .any(|st| st[0].starts_with("exec_leak ") && st[0].contains(&leak_line)),
        "{a:?}"
    );
    assert_eq!(a, b, "in-process and CLI symbolization differ");
    // And libc, named from its symbol table in-process, gets its DWARF here.
    let (ok, top, _) = heapprof_cli(&["top".as_ref(), raw.as_os_str()]);
    assert!(ok);
    assert!(
        top.contains("exec_leak (") && top.contains(&format!("{leak_line})")),
        "{top}"
    );
}

#[test]
fn a_missing_or_rebuilt_binary_is_reported_not_misnamed() {
    let dir = common::temp_dir("raw-symbolize-gone");
    let prog = dir.join("hello");
    compile_hello(&prog, &[]);
    let raw = preloaded_dump(&prog, &dir, "raw", false);

    // Rebuilt differently at the same path: another build ID.
    std::fs::remove_file(&prog).unwrap();
    compile_hello(&prog, &["-O0", "-DREBUILT"]);
    let (ok, top, err) = heapprof_cli(&["top".as_ref(), raw.as_os_str()]);
    assert!(ok, "{err}");
    assert!(
        !top.contains("exec_leak"),
        "a different build must not name it:\n{top}"
    );
    assert!(top.contains("0x"), "{top}");
    let notes: Vec<&str> = err
        .lines()
        .filter(|l| l.contains(prog.to_str().unwrap()))
        .collect();
    assert_eq!(notes.len(), 1, "said once: {err}");
    assert!(notes[0].contains("build ID"), "{err}");

    // Gone.
    std::fs::remove_file(&prog).unwrap();
    let (ok, top, err) = heapprof_cli(&["top".as_ref(), raw.as_os_str()]);
    assert!(ok, "{err}");
    assert!(!top.contains("exec_leak"), "{top}");
    let notes: Vec<&str> = err
        .lines()
        .filter(|l| l.contains(prog.to_str().unwrap()))
        .collect();
    assert_eq!(notes.len(), 1, "said once: {err}");
    assert!(notes[0].contains("not on this machine"), "{err}");
}
