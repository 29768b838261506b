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
//! there before), each named by its process's command (children that
//! allocated nothing, a shell forked only to exec, are counted, not
//! listed), the threads profiles beside them, and the top in-use stacks of
//! the main process's last one (the command's pid: an exec chain keeps it),
//! or of the child that held more at its end; a note when those figures
//! rest on few samples, or when the heap explains little of the process's
//! memory ([`crate::report::unseen_memory`]); then exits with the
//! command's status: its exit code, or 128 + N for death by signal N, as
//! the shell reports it.
//!
//! **Death by a signal.** The command runs with the black box on
//! (`HEAPPROF_BLACKBOX`, in the output directory unless set already; see
//! `heapprof::control::blackbox`). If it dies by a signal, `heapprof run`
//! recovers the black box at once (keeping it) into
//! `heapprof.PID.blackbox.pb.gz` beside it and prints the signal, the OOM
//! killer's verdict from the command's memory cgroup, and the top in-use
//! stacks at the moment of death ([`postmortem`]).
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
pub mod postmortem;

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
                if crate::control::config::parse_bytes(&v).is_none() {
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
                if crate::control::config::parse_interval(&v).is_none() {
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
    // The black box beside the profiles, unless the user chose a directory.
    if std::env::var_os("HEAPPROF_BLACKBOX").is_none() {
        env.push((
            "HEAPPROF_BLACKBOX".into(),
            Some(out_dir(o).into_os_string()),
        ));
    }
    if let Some(i) = &o.interval {
        env.push(("HEAPPROF_INTERVAL".into(), Some(i.into())));
    }
    env
}

/// The directory the profiles go to.
fn out_dir(o: &RunOptions) -> PathBuf {
    match prefix(o).parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
    }
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

/// Runs the command to its end, forwarding signals; returns its status.
fn supervise(child: &mut std::process::Child, set: &libc::sigset_t) -> std::process::ExitStatus {
    let pid = child.id() as libc::pid_t;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status;
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
    // Threads profiles: `PREFIX.threads.PID.SEQ.pb.gz`.
    let threads_prefix = {
        let mut p = prefix.clone().into_os_string();
        p.push(".threads");
        PathBuf::from(p)
    };
    let before = profiles_under(&prefix);
    let started = std::time::SystemTime::now();
    let threads_before = profiles_under(&threads_prefix);
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
    // Its cgroup now, before it can die: the OOM counters are compared
    // after.
    let cgroup = postmortem::MemCgroup::of(main_pid);
    let kills_before = cgroup.as_ref().map(|c| c.oom_kills()).unwrap_or_default();
    let exit = supervise(&mut child, &set);
    // As the shell reports it.
    let status = exit
        .code()
        .unwrap_or_else(|| 128 + exit.signal().unwrap_or(0));
    let written: Vec<(u32, u64, PathBuf)> = profiles_under(&prefix)
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    let threads: Vec<PathBuf> = profiles_under(&threads_prefix)
        .into_iter()
        .filter(|p| !threads_before.contains(p))
        .map(|(_, _, path)| path)
        .collect();
    let mut text = summary(&written, main_pid, Some(&program));
    if !threads.is_empty() && !written.is_empty() {
        let _ = write!(
            text,
            "\nheapprof: threads profiles (live threads by creating stack): {}",
            threads
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    // A command killed before any dump: the post-mortem below says what
    // happened and what its black box holds, not "no profile".
    if !(written.is_empty() && exit.signal().is_some()) {
        say(&text);
    }
    // A killed command's heap at its death, recovered from its black box
    // (written beside it as a profile), is the report's last point.
    let mut death = None;
    let postmortem = exit.signal().map(|sig| {
        let oom = cgroup
            .as_ref()
            .filter(|_| sig == libc::SIGKILL)
            .and_then(|c| c.oom_killed(&kills_before));
        let dir = std::env::var_os("HEAPPROF_BLACKBOX").map_or_else(|| out_dir(o), PathBuf::from);
        death = Some(dir.join(format!("heapprof.{main_pid}.blackbox.pb.gz")));
        postmortem::report(main_pid, sig, oom, &dir, TOP_ROWS, TOP_DEPTH)
    });
    // Recovered now, not left by an earlier process of the same pid.
    let death = death.filter(|p| {
        std::fs::metadata(p)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t >= started)
    });
    if let Some(text) = postmortem {
        say(&text);
    }
    if let Some(line) = run_report(&written, death.as_deref(), main_pid, &prefix) {
        say(&line);
    }
    if std::env::var_os("HEAPPROF_BLACKBOX").is_none() {
        remove_black_boxes(&out_dir(o), started, exit.signal().map(|_| main_pid));
    }
    Ok(status)
}

/// Removes the black boxes `heapprof run` turned on in `dir` that this run
/// left (33 MiB each): those of processes that exited, a shell's or a
/// wrapper script's before it exec'd, say. Only `kept`'s stays, the command
/// killed by a signal, whose heap at death it holds.
fn remove_black_boxes(dir: &Path, started: std::time::SystemTime, kept: Option<u32>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let keep = kept.map(|pid| format!("heapprof.{pid}.blackbox"));
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let ours = name.starts_with("heapprof.") && name.ends_with(".blackbox");
        let new = e
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t >= started);
        if ours && new && keep.as_deref() != Some(name.as_str()) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Writes `PREFIX.PID.report.html` ([`crate::report::html`]) from the main
/// process's dumps and, when it was killed, its heap at death (`death`,
/// recovered from its black box), when that makes more than one point or
/// holds the death, and says where. One dump (the usual dump at exit) has
/// no time axis: the summary's top stacks say what its page would, so no
/// file is added to every run.
fn run_report(
    written: &[(u32, u64, PathBuf)],
    death: Option<&Path>,
    main_pid: u32,
    prefix: &Path,
) -> Option<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let paths: Vec<&Path> = written
        .iter()
        .filter(|(pid, _, _)| *pid == main_pid)
        .map(|(_, _, p)| p.as_path())
        .chain(death)
        .collect();
    if paths.len() < 2 && death.is_none() {
        return None;
    }
    let mut name = prefix.as_os_str().to_owned();
    name.push(format!(".{main_pid}.report.html"));
    let out = PathBuf::from(name);
    // The run's peak profile, when one was kept, is drawn too.
    let mut peak = prefix.as_os_str().to_owned();
    peak.push(format!(".{main_pid}.peak.pb.gz"));
    let peak = PathBuf::from(peak);
    let page = paths
        .iter()
        .copied()
        .chain(Some(peak.as_path()).filter(|p| p.is_file()))
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
/// process's last profile, and when that heap explains little of the
/// process's memory, so (looking for an allocator of its own in `program`).
pub fn summary(written: &[(u32, u64, PathBuf)], main_pid: u32, program: Option<&Path>) -> String {
    let mut s = String::new();
    if written.is_empty() {
        let _ = write!(
            s,
            "heapprof: no profile was written (the command may have been killed with SIGKILL, ended with _exit, or be statically linked)"
        );
        return s;
    }
    // Each profile's command (its main executable) and in-use and
    // allocated totals; children's profiles with nothing at all (a shell
    // forked to exec something) are left out of the list.
    let facts: Vec<(Option<String>, i64, i64)> = written
        .iter()
        .map(|(_, _, path)| match crate::report::load(path) {
            Ok(r) => {
                let total = |kind| r.sample_index(&kind).map_or(0, |i| r.total(i));
                (
                    r.main_file.clone(),
                    total(crate::report::SampleKind::InuseSpace),
                    total(crate::report::SampleKind::AllocSpace),
                )
            }
            Err(_) => (None, 0, 1),
        })
        .collect();
    let _ = writeln!(s, "heapprof: profiles written:");
    let mut empty = 0;
    for ((pid, _, path), (command, _, allocated)) in written.iter().zip(&facts) {
        if *pid != main_pid && *allocated == 0 {
            empty += 1;
            continue;
        }
        let whose = if *pid == main_pid {
            "main process".to_string()
        } else {
            format!("pid {pid}")
        };
        let command = command
            .as_deref()
            .and_then(|c| c.rsplit('/').next())
            .map_or(String::new(), |c| format!(": {c}"));
        let _ = writeln!(s, "  {}  ({whose}{command})", path.display());
    }
    if empty > 0 {
        let _ = writeln!(
            s,
            "  and {empty} empty profile{} of children that allocated nothing (shells that only \
             ran a program, say)",
            if empty == 1 { "" } else { "s" }
        );
    }
    // The top table: the main process's last profile, or, when a child
    // held more at its end (a wrapper script's server), that child's.
    let last_of = |want: u32| {
        written
            .iter()
            .zip(&facts)
            .rfind(|((pid, _, _), _)| *pid == want)
    };
    let mut pids: Vec<u32> = written.iter().map(|w| w.0).collect();
    pids.dedup();
    let busiest = pids
        .iter()
        .filter_map(|&pid| last_of(pid))
        .max_by_key(|(_, facts)| facts.1);
    let chosen = match (last_of(main_pid), busiest) {
        (Some(main), Some(b)) if b.1 .1 > main.1 .1 => Some(b),
        (Some(main), _) => Some(main),
        (None, b) => b,
    };
    // Whose stacks the table shows: the main process, or the child that
    // held the most.
    let whose = match chosen {
        Some(((pid, _, _), (command, _, _))) if *pid != main_pid => format!(
            "pid {pid}{}, which held the most memory at its end",
            command
                .as_deref()
                .and_then(|c| c.rsplit('/').next())
                .map_or(String::new(), |c| format!(" ({c})"))
        ),
        _ => "the main process".to_string(),
    };
    let mut last = chosen.map(|(w, _)| w);
    // Nothing in use at its end but something before (an interpreter frees
    // its objects at exit): the last dump that held something says what the
    // program held while it ran.
    if let Some(((pid, _, exit_path), (_, 0, _))) = chosen {
        let before = written
            .iter()
            .zip(&facts)
            .rfind(|((p, _, _), (_, inuse, _))| p == pid && *inuse > 0);
        if let Some((w, _)) = before {
            let _ = writeln!(
                s,
                "heapprof: nothing was in use at exit ({}): the program freed its heap as it shut down; what it held at its last dump before, {}:",
                exit_path.display(),
                w.2.display()
            );
            last = Some(w);
        }
    }
    let program = if last.is_some_and(|w| w.0 != main_pid) {
        None
    } else {
        program
    };
    if let Some((_, _, path)) = last {
        let mut few_samples = None;
        let mut period = 0;
        let (top, unseen) = match crate::report::load(path) {
            Ok(r) => {
                period = r.period;
                let unseen = crate::report::unseen_memory(&r, program);
                few_samples = few_samples_note(&r);
                let r = crate::report::program_only(r);
                let top = move |kind| crate::report::top(&r, &kind, TOP_ROWS);
                (Ok(top), unseen)
            }
            Err(e) => (Err(e), None),
        };
        match top {
            Err(e) => {
                let _ = writeln!(s, "heapprof: cannot read {}: {e}", path.display());
            }
            Ok(top) => match top(crate::report::SampleKind::Default) {
                Ok(t) if t.total == 0 => {
                    // Everything was freed by exit (Python's finalization
                    // does that): what allocated most is the better answer.
                    let seen = if unseen.is_some() {
                        "heapprof saw nothing in use at exit (see the note below)"
                    } else {
                        "nothing was in use at exit (interpreters free everything at \
                         shutdown: `heapprof run --interval SECS` keeps profiles of the \
                         program while it ran)"
                    };
                    match top(crate::report::SampleKind::AllocSpace) {
                        Ok(t) if t.total == 0 && period > 1 => {
                            let _ = writeln!(
                                s,
                                "heapprof: no allocation was sampled (one sample per {period} \
                                 bytes allocated on average: a small program may get none); \
                                 `heapprof run --rate 1` counts every allocation"
                            );
                        }
                        Ok(t) if t.total == 0 => {
                            let _ = writeln!(s, "heapprof: {seen}, and nothing allocated");
                        }
                        Ok(t) => {
                            let _ = write!(
                            s,
                            "heapprof: {seen}; the stacks that allocated most in {whose}:\n{t:.TOP_DEPTH$}"
                        );
                        }
                        Err(_) => {}
                    }
                }
                Ok(t) => {
                    let _ = write!(
                        s,
                        "heapprof: top in-use stacks of {whose}:\n{t:.TOP_DEPTH$}"
                    );
                    if let Some(note) = &few_samples {
                        let _ = writeln!(s, "heapprof: {note}");
                    }
                }
                Err(e) => {
                    let _ = writeln!(s, "heapprof: cannot read {}: {e}", path.display());
                }
            },
        }
        if let Some(note) = unseen {
            let _ = writeln!(s, "heapprof: {note}");
        }
        let _ = write!(
            s,
            "heapprof: more with `heapprof top {}` or `go tool pprof`",
            path.display()
        );
    }
    s.trim_end().to_string()
}

/// Fewer live samples than this behind a sampled profile's in-use total
/// make every row a rough estimate, worth a word.
const FEW_SAMPLES: u64 = 20;

/// When a sampled profile's in-use figures rest on few live samples: how
/// many, and how to count exactly.
fn few_samples_note(r: &crate::report::Resolved) -> Option<String> {
    use crate::report::leaks::evidence::{gather, Grouping};
    if r.period <= 1 {
        return None;
    }
    let index = r
        .sample_index(&crate::report::SampleKind::InuseSpace)
        .ok()?;
    let g = gather(&[r], &[index], &Grouping::Stack).ok()?;
    let n: u64 = g
        .groups
        .iter()
        .filter_map(|g| g.evidence.counts.last())
        .sum();
    (n > 0 && n < FEW_SAMPLES).then(|| {
        format!(
            "these figures rest on {n} live sample{} at one sample per {} bytes allocated on \
             average, each standing for about that much memory: rough for a program this \
             small; `heapprof run --rate 1` counts every allocation",
            if n == 1 { "" } else { "s" },
            r.period
        )
    })
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
