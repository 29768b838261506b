//! What `heapprof run` says when the command dies by a signal: the heap at
//! the moment of death, recovered from the command's black box
//! ([`crate::report::blackbox`]), and whether the kernel's OOM killer did it.
//!
//! The OOM verdict comes from the memory cgroup's own counters
//! ([`MemCgroup`]), read for the command's cgroup (from `/proc/PID/cgroup`
//! right after it starts) and its ancestors, before and after. A count that
//! grew while the command ran, with the command dead of `SIGKILL`, is an
//! OOM kill; the limit shown is that cgroup's.

use std::path::Path;

pub use crate::control::cgroup::MemCgroup;

/// A signal's number and name: `signal 9 (SIGKILL)`.
pub fn signal_name(sig: i32) -> String {
    let name = crate::os::signals::SignalName(sig).to_string();
    if name.starts_with("SIG") {
        format!("signal {sig} ({name})")
    } else {
        name
    }
}

/// The lines `heapprof run` prints after the command (pid `pid`) died of
/// signal `sig`: the cause, and the top in-use stacks recovered from its
/// black box in `dir` (written beside it as `heapprof.PID.blackbox.pb.gz`;
/// the black box is kept).
pub fn report(
    pid: u32,
    sig: i32,
    oom: Option<Option<u64>>,
    dir: &Path,
    rows: usize,
    depth: usize,
) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = write!(
        s,
        "heapprof: the command was killed by {}",
        signal_name(sig)
    );
    match oom {
        Some(Some(limit)) => {
            let _ = write!(
                s,
                ": killed by the OOM killer (cgroup limit {} MiB)",
                limit >> 20
            );
        }
        Some(None) => {
            let _ = write!(s, ": killed by the OOM killer (cgroup memory limit)");
        }
        None => {}
    }
    s.push('\n');
    let bbox = dir.join(format!("heapprof.{pid}.blackbox"));
    if !bbox.exists() {
        let _ = write!(
            s,
            "heapprof: no black box at {} to recover the heap at its death from",
            bbox.display()
        );
        return s;
    }
    let out = dir.join(format!("heapprof.{pid}.blackbox.pb.gz"));
    let shown = bbox.display().to_string();
    let recovered = crate::report::blackbox::recover_file(&shown, &out);
    match recovered {
        Ok(r) => {
            crate::report::symbolize_raw::say_once(&r.notes);
            let top = crate::report::Resolved::from_profile(&shown, &r.profile).and_then(|res| {
                crate::report::top(
                    &crate::report::program_only(res),
                    &crate::report::SampleKind::Default,
                    rows,
                )
            });
            match top {
                Ok(t) => {
                    let _ = write!(
                        s,
                        "heapprof: in use at the moment of death (recovered from {shown} into {}):\n{t:.depth$}",
                        out.display()
                    );
                }
                Err(e) => {
                    let _ = write!(s, "heapprof: cannot read the recovered profile: {e}");
                }
            }
            if r.overflow > 0 {
                let _ = write!(
                    s,
                    "\nheapprof: {} samples were not recorded: the black box was full (raise HEAPPROF_BLACKBOX_SLOTS)",
                    r.overflow
                );
            }
        }
        Err(e) => {
            let _ = write!(s, "heapprof: cannot recover {shown}: {e}");
        }
    }
    s.trim_end().to_string()
}
