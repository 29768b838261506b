//! CPython 3.11's own regression tests as a real-program check: the
//! modules that exercise what heapprof interposes (signals, fork and wait,
//! threads, subprocesses, descriptors, poll and mmap) run bare and under the
//! preload library with children profiled and a dump every 0.5 s, and no
//! test may fail, err or hang profiled where it passes bare; every profile
//! written must decode. The work is `scripts/cpython-tests.sh` (which
//! installs Debian's python3.11 and its test suite when missing; about
//! three minutes bare and three profiled here); this test runs it.

use std::path::Path;
use std::process::Command;

#[test]
fn cpython_regression_tests_pass_under_the_library_as_bare() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cmd = Command::new("bash");
    cmd.arg(root.join("scripts/cpython-tests.sh"));
    // The script builds the library in this test's profile.
    let exe = std::env::current_exe().unwrap();
    if exe.components().any(|c| c.as_os_str() == "release") {
        cmd.env("PROFILE", "release");
    }
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("HEAPPROF_") || k == "LD_PRELOAD" || k == "PYTHONMALLOC" {
            cmd.env_remove(&*k);
        }
    }
    let out = cmd.output().expect("run scripts/cpython-tests.sh");
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "CPython's tests differ under the library:\n{text}\n{err}"
    );
    println!("{text}");
}
