//! A program with an allocator of its own looks leak-free to the preload
//! library: `examples/own_allocator.rs` (mimalloc as its Rust global
//! allocator, 64 MiB kept) under `heapprof run` must be reported as unseen,
//! with the cause and the fix named, never as a clean run; so must every
//! report read from its profile.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

/// The preload library, built in this test run's profile (so `heapprof run`
/// finds it next to the `heapprof` binary).
fn build_library() {
    let profile_dir = Path::new(env!("CARGO_BIN_EXE_heapprof")).parent().unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", "heapprof-preload"])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if profile_dir.file_name() == Some(OsStr::new("release")) {
        cmd.arg("--release");
    }
    assert!(cmd.status().unwrap().success());
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn a_rust_program_with_mimalloc_is_reported_unseen_not_clean() {
    build_library();
    let program = common::example("own_allocator");
    let dir: PathBuf =
        common::fresh_dir(Path::new(env!("CARGO_TARGET_TMPDIR")).join("own-allocator"));
    let out = common::clean_command(env!("CARGO_BIN_EXE_heapprof"))
        .args(["run", "--out"])
        .arg(&dir)
        .arg("--")
        .arg(&program)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), "kept 64 MiB (2048)\n");
    let err = text(&out.stderr);
    let fix = "#[global_allocator] static A: heapprof::Profiler<mimalloc::MiMalloc> = \
               heapprof::Profiler::new(mimalloc::MiMalloc);";
    for want in [
        "RssAnon",
        "unseen",
        "own_allocator defines mi_malloc",
        "mimalloc",
        fix,
    ] {
        assert!(err.contains(want), "{want:?} missing: {err}");
    }
    assert!(!err.contains("nothing was in use at exit"), "{err}");
    // The threads profile written beside it is listed under its own name.
    assert!(
        err.contains("threads profiles (live threads by creating stack): ")
            && err.contains("heapprof.threads."),
        "{err}"
    );

    // Every report read from the profile says so too.
    let dumps = common::dumps(&dir);
    assert_eq!(dumps.len(), 1, "{dumps:?}");
    let profile = dumps[0].2.to_str().unwrap();
    for args in [vec!["top", profile], vec!["leaks", profile]] {
        let out = Command::new(env!("CARGO_BIN_EXE_heapprof"))
            .args(&args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        let so = text(&out.stdout);
        assert!(
            so.contains("RssAnon") && so.contains("defines mi_malloc"),
            "{args:?}: {so}"
        );
    }
}
