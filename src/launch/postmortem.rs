//! What `heapprof run` says when the command dies by a signal: the heap at
//! the moment of death, recovered from the command's black box
//! ([`crate::report::blackbox`]), and whether the kernel's OOM killer did it.
//!
//! The OOM verdict comes from the memory cgroup's own counters, read for
//! the command's cgroup (from `/proc/PID/cgroup` right after it starts) and
//! its ancestors, before and after: cgroup v2 `memory.events` `oom_kill`,
//! v1 `memory.oom_control` `oom_kill`. A count that grew while the command
//! ran, with the command dead of `SIGKILL`, is an OOM kill; the limit shown
//! is that cgroup's (`memory.max`, v1 `memory.limit_in_bytes`).

use std::path::{Path, PathBuf};

/// The memory cgroup a process is in, and its ancestors up to the mount.
#[derive(Debug, Clone)]
pub struct MemCgroup {
    /// Innermost first.
    dirs: Vec<PathBuf>,
    v2: bool,
}

impl MemCgroup {
    /// The memory cgroup of process `pid` (None without a memory
    /// controller, or when its files cannot be read).
    pub fn of(pid: u32) -> Option<MemCgroup> {
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        Self::from_text(&cgroup, &mountinfo)
    }

    /// [`of`](Self::of) from the texts of `/proc/PID/cgroup` and
    /// `/proc/self/mountinfo`: a v1 memory hierarchy if there is one, else
    /// the v2 unified one.
    pub fn from_text(cgroup: &str, mountinfo: &str) -> Option<MemCgroup> {
        let v1 = cgroup.lines().find_map(|l| {
            let mut it = l.splitn(3, ':');
            let (_, ctl, path) = (it.next()?, it.next()?, it.next()?);
            ctl.split(',').any(|c| c == "memory").then_some(path)
        });
        let v2 = cgroup
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .filter(|_| v1.is_none());
        let path = v1.or(v2)?;
        let mount = mountinfo.lines().find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let f: Vec<&str> = left.split_whitespace().collect();
            let r: Vec<&str> = right.split_whitespace().collect();
            let wanted = if v1.is_some() {
                r.first() == Some(&"cgroup") && r.get(2)?.split(',').any(|o| o == "memory")
            } else {
                r.first() == Some(&"cgroup2")
            };
            wanted.then(|| (f.get(3).copied(), f.get(4).copied()))
        })?;
        let (root, point) = (mount.0?, mount.1?);
        let rel = path.strip_prefix(root).unwrap_or(path);
        let top = PathBuf::from(point);
        let mut dir = top.join(rel.trim_start_matches('/'));
        let mut dirs = Vec::new();
        loop {
            dirs.push(dir.clone());
            if dir == top || !dir.pop() || !dir.starts_with(&top) {
                break;
            }
        }
        Some(MemCgroup {
            dirs,
            v2: v1.is_none(),
        })
    }

    /// The OOM kill counts, innermost first (None where unreadable).
    pub fn oom_kills(&self) -> Vec<Option<u64>> {
        let file = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        self.dirs
            .iter()
            .map(|d| counter(&d.join(file), "oom_kill"))
            .collect()
    }

    /// The limit of the cgroup at `dirs[i]`, in bytes (None: unlimited).
    fn limit(&self, i: usize) -> Option<u64> {
        let d = &self.dirs[i];
        let file = if self.v2 {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        };
        let v: u64 = std::fs::read_to_string(d.join(file))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        // v1 says "unlimited" with a value near 2^63.
        (v < 1 << 60).then_some(v)
    }

    /// After the command's death: the limit (bytes, if any) of the
    /// innermost cgroup whose OOM kill count grew since `before`, or None
    /// when none grew.
    pub fn oom_killed(&self, before: &[Option<u64>]) -> Option<Option<u64>> {
        let after = self.oom_kills();
        (0..self.dirs.len())
            .find(|&i| match (before.get(i).copied().flatten(), after[i]) {
                (Some(b), Some(a)) => a > b,
                (None, Some(a)) => a > 0,
                _ => false,
            })
            .map(|i| self.limit(i))
    }
}

/// `NAME N` in a flat-keyed cgroup file.
fn counter(file: &Path, name: &str) -> Option<u64> {
    std::fs::read_to_string(file).ok()?.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == name).then(|| v.trim().parse().ok()).flatten()
    })
}

/// A signal's name, as `kill -l` says it.
pub fn signal_name(sig: i32) -> String {
    let name = match sig {
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGHUP => "SIGHUP",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGXCPU => "SIGXCPU",
        _ => return format!("signal {sig}"),
    };
    format!("signal {sig} ({name})")
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

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
25 30 0:22 / /sys/fs/cgroup rw,nosuid - tmpfs tmpfs ro,mode=755
32 25 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
35 25 0:30 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
";

    #[test]
    fn finds_the_v1_memory_cgroup_and_its_ancestors() {
        let cg = MemCgroup::from_text("4:memory:/a/b\n1:cpu:/\n0::/\n", MOUNTINFO).unwrap();
        assert!(!cg.v2);
        assert_eq!(
            cg.dirs,
            [
                "/sys/fs/cgroup/memory/a/b",
                "/sys/fs/cgroup/memory/a",
                "/sys/fs/cgroup/memory"
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn finds_the_v2_cgroup_when_there_is_no_v1_memory() {
        let cg = MemCgroup::from_text("0::/svc/x\n", MOUNTINFO).unwrap();
        assert!(cg.v2);
        assert_eq!(cg.dirs[0], PathBuf::from("/sys/fs/cgroup/unified/svc/x"));
        assert!(MemCgroup::from_text("1:cpu:/\n", MOUNTINFO).is_none());
    }

    #[test]
    fn reads_flat_counters() {
        let d = std::env::temp_dir().join(format!("heapprof-pm-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("memory.events"),
            "low 0\nhigh 3\nmax 9\noom 2\noom_kill 1\n",
        )
        .unwrap();
        assert_eq!(counter(&d.join("memory.events"), "oom_kill"), Some(1));
        assert_eq!(counter(&d.join("memory.events"), "oom"), Some(2));
        std::fs::write(d.join("memory.max"), "134217728\n").unwrap();
        let cg = MemCgroup {
            dirs: vec![d.clone()],
            v2: true,
        };
        assert_eq!(cg.oom_killed(&[Some(0)]), Some(Some(128 << 20)));
        assert_eq!(cg.oom_killed(&[Some(1)]), None);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
