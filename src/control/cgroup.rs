//! The memory cgroup of a process (v1 memory controller or v2 unified
//! hierarchy, found from `/proc/PID/cgroup` and `/proc/self/mountinfo`):
//! its usage, its limit and its OOM kill count, with its ancestors', whose
//! limits bind it too. cgroup v2: `memory.current`, `memory.max`,
//! `memory.high`, `memory.events` (`oom_kill`); v1: `memory.usage_in_bytes`,
//! `memory.limit_in_bytes`, `memory.oom_control` (`oom_kill`).

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
        let cgroup = crate::os::fds::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        let mountinfo = crate::os::fds::read_to_string("/proc/self/mountinfo").ok()?;
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
        let v: u64 = crate::os::fds::read_to_string(d.join(file))
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

/// The tightest memory limit of this process's cgroup (what each profile
/// records, for reports to draw beside the heap and RSS).
pub fn own_limit() -> Option<u64> {
    MemCgroup::of(crate::os::pid())?.tightest_limit()
}

impl MemCgroup {
    /// cgroup v1 only: an eventfd (non-blocking, close-on-exec, high) that
    /// the kernel makes readable each time the cgroup's usage crosses one
    /// of `thresholds`, either way (`cgroup.event_control` on
    /// `memory.usage_in_bytes`). None on v2, which has no such event, or
    /// when the files refuse.
    pub fn usage_events(&self, thresholds: &[u64]) -> Option<i32> {
        if self.v2 || thresholds.is_empty() {
            return None;
        }
        let c = |name: &str| {
            std::ffi::CString::new(
                self.dirs[0]
                    .join(name)
                    .into_os_string()
                    .into_encoded_bytes(),
            )
            .ok()
        };
        let (usage_path, control_path) = (c("memory.usage_in_bytes")?, c("cgroup.event_control")?);
        // SAFETY: eventfd makes a new descriptor from two integer flags.
        let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if efd < 0 {
            return None;
        }
        let efd = crate::os::fds::move_high(efd);
        let usage = crate::os::fds::open(&usage_path, libc::O_RDONLY);
        let control = crate::os::fds::open(&control_path, libc::O_WRONLY);
        let mut ok = usage >= 0 && control >= 0;
        for t in thresholds {
            if !ok {
                break;
            }
            let line = format!("{efd} {usage} {t}");
            // SAFETY: writing a local buffer of that length.
            ok = unsafe { libc::write(control, line.as_ptr().cast(), line.len()) }
                == line.len() as isize;
        }
        // The kernel holds what it needs of both files from the write on.
        for fd in [usage, control] {
            if fd >= 0 {
                crate::os::raw::close(fd);
            }
        }
        if !ok {
            crate::os::raw::close(efd);
            return None;
        }
        Some(efd)
    }

    /// The memory in use, as the innermost cgroup counts it.
    pub fn usage(&self) -> Option<u64> {
        let file = if self.v2 {
            "memory.current"
        } else {
            "memory.usage_in_bytes"
        };
        crate::os::fds::read_to_string(self.dirs[0].join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// The lowest limit over the cgroup and its ancestors (v2: also
    /// `memory.high`), None if none is set.
    pub fn tightest_limit(&self) -> Option<u64> {
        let high = |d: &PathBuf| -> Option<u64> {
            let v: u64 = crate::os::fds::read_to_string(d.join("memory.high"))
                .ok()?
                .trim()
                .parse()
                .ok()?;
            Some(v)
        };
        (0..self.dirs.len())
            .flat_map(|i| {
                [
                    self.limit(i),
                    if self.v2 { high(&self.dirs[i]) } else { None },
                ]
            })
            .flatten()
            .min()
    }
}

/// `NAME N` in a flat-keyed cgroup file.
fn counter(file: &Path, name: &str) -> Option<u64> {
    crate::os::fds::read_to_string(file)
        .ok()?
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == name).then(|| v.trim().parse().ok()).flatten()
        })
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
