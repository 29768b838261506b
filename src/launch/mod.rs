//! `heapprof run [OPTIONS] -- COMMAND [ARGS...]`: profile any dynamically
//! linked command in one line.
//!
//! # Model
//! `heapprof run` is a parent that stays out of the way. It finds the
//! preload library installed next to itself ([`find_library`]), prepends it
//! to `LD_PRELOAD`, turns its options into `HEAPPROF_*` variables (any
//! already set are kept unless an option overrides them), and runs the
//! command with its own stdin, stdout and stderr. The command is the root
//! of profiling: a `HEAPPROF_PID` inherited from an outer profiled process
//! is dropped, so the command records its own (see the preload library's
//! `lineage` module: exec'd images are followed, children only with
//! `--children`).
//!
//! **Signals.** SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 are
//! blocked in `heapprof run` (and unblocked in the command before it execs) and
//! taken with `sigwaitinfo`, together with SIGCHLD. One sent by a process
//! (`kill`, `si_code` ≤ 0) is forwarded to the command. One the kernel sent
//! (`si_code` = `SI_KERNEL`: Ctrl-C, Ctrl-\, a terminal hang-up) is not:
//! the terminal signals the whole foreground process group, which the
//! command is in, so it has its copy already. (A `kill` to the whole group
//! reaches the command twice; terminating signals are idempotent.)
//!
//! **Exit.** When the command ends, `heapprof run` lists on stderr each
//! profile written meanwhile under the output prefix (files that were not
//! there before), and the top in-use stacks of the main process's last
//! one (the command's pid: an exec chain keeps it), then exits with the
//! command's status: its exit code, or 128 + N for death by signal N, as
//! the shell reports it.
//!
//! **Blind spots** are said before the command runs, in one line: a
//! statically linked program has no dynamic loader to read `LD_PRELOAD`,
//! and a setuid, setgid or file-capability program runs in secure-execution
//! mode, where the loader ignores it ([`inspect`]). It still runs.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;

pub mod inspect;

pub use inspect::{find_library, LIBRARY};

/// Signals forwarded to the command.
pub const FORWARDED: [i32; 6] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// What `heapprof run` was asked to do.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RunOptions {
    pub rate: Option<String>,
    /// Profiles go to `DIR/heapprof.PID.SEQ.pb.gz`.
    pub out: Option<PathBuf>,
    pub children: bool,
    pub interval: Option<String>,
    pub command: Vec<OsString>,
}

/// A problem that keeps the command from running: one line for the user.
#[derive(Debug)]
pub struct LaunchError {
    pub message: String,
    /// The status `heapprof run` exits with (127: command not found, 126:
    /// not executable, as the shell does; 2 otherwise).
    pub status: i32,
}

impl std::fmt::Display for LaunchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

fn usage_error(message: String) -> LaunchError {
    LaunchError { message, status: 2 }
}

/// Parses the arguments after `run`. The command starts after `--`, or at
/// the first argument that is not an option.
pub fn parse(args: &[OsString]) -> Result<RunOptions, LaunchError> {
    let mut o = RunOptions::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let s = arg.to_string_lossy();
        if s == "--" {
            break;
        }
        if !s.starts_with('-') {
            o.command.push(arg.clone());
            break;
        }
        let (name, inline) = match s.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (s.to_string(), None),
        };
        let mut value = |what: &str| -> Result<String, LaunchError> {
            inline
                .clone()
                .or_else(|| it.next().map(|v| v.to_string_lossy().into_owned()))
                .ok_or_else(|| usage_error(format!("run: {name} needs {what}")))
        };
        match name.as_str() {
            "--rate" => {
                let v = value("a number of bytes (1: every allocation)")?;
                if crate::config::parse_bytes(&v).is_none() {
                    return Err(usage_error(format!(
                        "run: --rate needs a number of bytes such as 524288 or 512k (1: every allocation, 0: off), got {v:?}"
                    )));
                }
                o.rate = Some(v);
            }
            "--out" | "-o" => o.out = Some(PathBuf::from(value("a directory")?)),
            "--children" => o.children = true,
            "--interval" => {
                let v = value("a number of seconds")?;
                if crate::config::parse_interval(&v).is_none() {
                    return Err(usage_error(format!(
                        "run: --interval needs a number of seconds such as 30 or 0.5, got {v:?}"
                    )));
                }
                o.interval = Some(v);
            }
            _ => return Err(usage_error(format!("run: unknown option {s:?}"))),
        }
    }
    o.command.extend(it.cloned());
    if o.command.is_empty() {
        return Err(usage_error(
            "run needs a command: heapprof run [OPTIONS] -- COMMAND [ARGS...]".to_string(),
        ));
    }
    Ok(o)
}

/// The output prefix the command will use: `--out DIR` as `DIR/heapprof`,
/// else `HEAPPROF_OUT`, else `./heapprof`.
fn prefix(o: &RunOptions) -> PathBuf {
    match (&o.out, std::env::var_os("HEAPPROF_OUT")) {
        (Some(dir), _) => dir.join("heapprof"),
        (None, Some(p)) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from("heapprof"),
    }
}

/// The command's environment changes: (name, Some(value)) to set, None to
/// remove.
fn environment(o: &RunOptions, library: &Path) -> Vec<(OsString, Option<OsString>)> {
    let mut env: Vec<(OsString, Option<OsString>)> = Vec::new();
    let mut preload = library.as_os_str().to_owned();
    if let Some(old) = std::env::var_os("LD_PRELOAD") {
        let already = old
            .as_bytes()
            .split(|b| b" :\t\n".contains(b))
            .any(|e| e == library.as_os_str().as_bytes());
        if already {
            preload = old;
        } else if !old.is_empty() {
            preload.push(" ");
            preload.push(old);
        }
    }
    env.push(("LD_PRELOAD".into(), Some(preload)));
    // A new root of profiling (see the module docs).
    env.push(("HEAPPROF_PID".into(), None));
    if let Some(r) = &o.rate {
        env.push(("HEAPPROF_RATE".into(), Some(r.into())));
    }
    if o.out.is_some() {
        env.push(("HEAPPROF_OUT".into(), Some(prefix(o).into_os_string())));
    }
    if o.children {
        env.push(("HEAPPROF_CHILDREN".into(), Some("1".into())));
    }
    if let Some(i) = &o.interval {
        env.push(("HEAPPROF_INTERVAL".into(), Some(i.into())));
    }
    env
}

/// Profile files under `prefix` (`PREFIX.PID.SEQ.pb.gz`), as (pid, seq, path).
fn profiles_under(prefix: &Path) -> BTreeSet<(u32, u64, PathBuf)> {
    let dir = match prefix.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let stem = prefix
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut found = BTreeSet::new();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return found;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name
            .strip_prefix(stem.as_str())
            .and_then(|r| r.strip_prefix('.'))
            .and_then(|r| r.strip_suffix(".pb.gz"))
        else {
            continue;
        };
        if let Some((pid, seq)) = rest.split_once('.') {
            if let (Ok(pid), Ok(seq)) = (pid.parse(), seq.parse()) {
                found.insert((pid, seq, dir.join(&name)));
            }
        }
    }
    found
}

/// Blocks the forwarded signals and SIGCHLD in this thread; returns the set.
fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset operations on a local set; pthread_sigmask changes only
    // this thread's mask.
    unsafe {
        let mut set: libc::sigset_t = core::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in FORWARDED.iter().chain([&libc::SIGCHLD]) {
            libc::sigaddset(&mut set, *s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, core::ptr::null_mut());
        set
    }
}

/// Runs the command to its end, forwarding signals; returns its status as
/// the shell reports it.
fn supervise(child: &mut std::process::Child, set: &libc::sigset_t) -> i32 {
    let pid = child.id() as libc::pid_t;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status
                .code()
                .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
        }
        // SAFETY: waiting for a signal of the blocked set into a local.
        let (sig, code) = unsafe {
            let mut info: libc::siginfo_t = core::mem::zeroed();
            let s = libc::sigwaitinfo(set, &mut info);
            (s, info.si_code)
        };
        if sig < 0 || sig == libc::SIGCHLD {
            continue;
        }
        if code != libc::SI_KERNEL {
            // SAFETY: signalling our own child, which we have not reaped.
            unsafe { libc::kill(pid, sig) };
        }
    }
}

/// Runs `heapprof run`: returns the exit status to leave with, or an error
/// that kept the command from running.
pub fn run(o: &RunOptions) -> Result<i32, LaunchError> {
    let library = find_library()?;
    let program = inspect::resolve(&o.command[0])?;
    if let Some(why) = inspect::blind_spot(&program) {
        say(&format!(
            "heapprof: {} {why}, so the loader ignores LD_PRELOAD and heapprof cannot see its allocations (programs it executes are still profiled)",
            o.command[0].to_string_lossy()
        ));
    }
    let absolute;
    let mut o = o;
    if let Some(dir) = &o.out {
        // Owner-only, and never through a symbolic link (crate::os::fds).
        crate::os::fds::create_private_dir(dir).map_err(|e| LaunchError {
            message: format!(
                "cannot use the output directory {}: {e} (name a directory, or a path to create)",
                dir.display()
            ),
            status: 2,
        })?;
        // Absolute: wrappers change directory (pyenv's do) before the
        // program writes its profile.
        if let Ok(abs) = std::fs::canonicalize(dir) {
            absolute = RunOptions {
                out: Some(abs),
                rate: o.rate.clone(),
                children: o.children,
                interval: o.interval.clone(),
                command: o.command.clone(),
            };
            o = &absolute;
        }
    }
    let prefix = prefix(o);
    let before = profiles_under(&prefix);
    let mut cmd = Command::new(&program);
    cmd.args(&o.command[1..]);
    {
        use std::os::unix::process::CommandExt;
        cmd.arg0(&o.command[0]);
    }
    for (k, v) in environment(o, &library) {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let set = block_signals();
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: the closure runs in the forked child before exec and only
        // calls pthread_sigmask, which is async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, core::ptr::null_mut());
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn().map_err(|e| LaunchError {
        message: format!("cannot run {}: {e}", o.command[0].to_string_lossy()),
        status: if e.kind() == std::io::ErrorKind::NotFound {
            127
        } else {
            126
        },
    })?;
    let main_pid = child.id();
    let status = supervise(&mut child, &set);
    let written: Vec<(u32, u64, PathBuf)> = profiles_under(&prefix)
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    say(&summary(&written, main_pid));
    if let Some(line) = run_report(&written, main_pid, &prefix) {
        say(&line);
    }
    Ok(status)
}

/// Writes `PREFIX.PID.report.html` ([`crate::report::html`]) from the main
/// process's dumps when it wrote more than one, and says where. One dump
/// (the usual dump at exit) has no time axis: the summary's top stacks say
/// what its page would, so no file is added to every run.
fn run_report(written: &[(u32, u64, PathBuf)], main_pid: u32, prefix: &Path) -> Option<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let paths: Vec<&PathBuf> = written
        .iter()
        .filter(|(pid, _, _)| *pid == main_pid)
        .map(|(_, _, p)| p)
        .collect();
    if paths.len() < 2 {
        return None;
    }
    let mut name = prefix.as_os_str().to_owned();
    name.push(format!(".{main_pid}.report.html"));
    let out = PathBuf::from(name);
    let page = paths
        .iter()
        .map(|p| {
            crate::report::html::load_dump(p).map(|mut d| {
                d.profile = crate::report::program_only(d.profile);
                d
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .and_then(|dumps| {
            crate::report::html::html(
                dumps,
                &format!(
                    "heapprof report of pid {main_pid} ({} profiles)",
                    paths.len()
                ),
            )
        });
    let written = page.map_err(|e| e.to_string()).and_then(|page| {
        // As the dumps are written: owner-only, never replacing a file or
        // following a link.
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&out)
            .and_then(|mut f| f.write_all(page.as_bytes()))
            .map_err(|e| e.to_string())
    });
    Some(match written {
        Ok(()) => format!(
            "heapprof: report of the run (memory over time, leak verdicts, flame graphs): {}",
            out.display()
        ),
        Err(e) => format!(
            "heapprof: no report of the run written to {}: {e}",
            out.display()
        ),
    })
}

/// Where the profiles went, and the top in-use stacks of the main
/// process's last profile.
pub fn summary(written: &[(u32, u64, PathBuf)], main_pid: u32) -> String {
    let mut s = String::new();
    if written.is_empty() {
        let _ = write!(
            s,
            "heapprof: no profile was written (the command may have been killed with SIGKILL, ended with _exit, or be statically linked)"
        );
        return s;
    }
    let _ = writeln!(s, "heapprof: profiles written:");
    for (pid, _, path) in written {
        let whose = if *pid == main_pid {
            "main process".to_string()
        } else {
            format!("pid {pid}")
        };
        let _ = writeln!(s, "  {}  ({whose})", path.display());
    }
    let last = written.iter().rfind(|(pid, _, _)| *pid == main_pid);
    if let Some((_, _, path)) = last {
        let top =
            |kind| crate::report::load(path).and_then(|r| crate::report::top(&r, &kind, TOP_ROWS));
        match top(crate::report::SampleKind::Default) {
            Ok(t) if t.total == 0 => {
                // Everything was freed by exit (Python's finalization does
                // that): what allocated most is the better answer.
                if let Ok(t) = top(crate::report::SampleKind::AllocSpace) {
                    let _ = write!(
                        s,
                        "heapprof: nothing was in use at exit; the stacks that allocated most in the main process:\n{t:.TOP_DEPTH$}"
                    );
                }
            }
            Ok(t) => {
                let _ = write!(
                    s,
                    "heapprof: top in-use stacks of the main process:\n{t:.TOP_DEPTH$}"
                );
            }
            Err(e) => {
                let _ = write!(s, "heapprof: cannot read {}: {e}", path.display());
            }
        }
        let _ = write!(
            s,
            "heapprof: more with `heapprof top {}` or `go tool pprof`",
            path.display()
        );
    }
    s.trim_end().to_string()
}

const TOP_ROWS: usize = 5;
const TOP_DEPTH: usize = 8;

/// One or more lines on stderr (ignoring a closed stderr).
fn say(text: &str) {
    use std::io::Write;
    let mut e = std::io::stderr().lock();
    let _ = e.write_all(text.as_bytes());
    let _ = e.write_all(b"\n");
}

/// Whether `s` looks like a path rather than a name to look up in `PATH`.
fn is_path(s: &OsStr) -> bool {
    s.as_bytes().contains(&b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn options_then_command() {
        let o = parse(&os(&[
            "--rate",
            "1",
            "--out=d",
            "--children",
            "--interval",
            "2.5",
            "--",
            "prog",
            "--rate",
        ]))
        .unwrap();
        assert_eq!(o.rate.as_deref(), Some("1"));
        assert_eq!(o.out, Some(PathBuf::from("d")));
        assert!(o.children);
        assert_eq!(o.interval.as_deref(), Some("2.5"));
        assert_eq!(o.command, os(&["prog", "--rate"]));
        // Without `--`, the first non-option starts the command.
        let o = parse(&os(&["ls", "-l"])).unwrap();
        assert_eq!(o.command, os(&["ls", "-l"]));
    }

    #[test]
    fn bad_options_say_what_is_wanted() {
        let e = parse(&os(&["--rate", "lots", "--", "x"])).unwrap_err();
        assert!(
            e.message.contains("--rate") && e.message.contains("\"lots\""),
            "{e}"
        );
        assert!(parse(&os(&["--interval", "soon", "x"])).is_err());
        assert!(parse(&os(&["--bogus", "x"]))
            .unwrap_err()
            .message
            .contains("--bogus"));
        assert!(parse(&os(&["--rate", "1"]))
            .unwrap_err()
            .message
            .contains("needs a command"));
    }

    #[test]
    fn environment_prepends_the_library_and_starts_a_new_root() {
        let o = parse(&os(&["--rate", "4k", "--out", "dir", "--children", "x"])).unwrap();
        let env = environment(&o, Path::new("/lib/libheapprof_preload.so"));
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(get("HEAPPROF_PID"), Some(None));
        assert_eq!(get("HEAPPROF_RATE"), Some(Some("4k".into())));
        assert_eq!(get("HEAPPROF_OUT"), Some(Some("dir/heapprof".into())));
        assert_eq!(get("HEAPPROF_CHILDREN"), Some(Some("1".into())));
        assert_eq!(get("HEAPPROF_INTERVAL"), None);
        let preload = get("LD_PRELOAD").unwrap().unwrap();
        assert!(preload
            .as_bytes()
            .starts_with(b"/lib/libheapprof_preload.so"));
    }

    #[test]
    fn profiles_are_found_by_prefix() {
        let d = std::env::temp_dir().join(format!("heapprof-launch-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        for n in [
            "heapprof.12.0.pb.gz",
            "heapprof.12.1.pb.gz",
            "other.3.0.pb.gz",
            "heapprof.x.pb.gz",
        ] {
            std::fs::write(d.join(n), b"").unwrap();
        }
        let found: Vec<(u32, u64)> = profiles_under(&d.join("heapprof"))
            .into_iter()
            .map(|(p, s, _)| (p, s))
            .collect();
        assert_eq!(found, [(12, 0), (12, 1)]);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
