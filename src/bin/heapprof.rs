//! `heapprof`: read pprof heap profiles — top stacks, diffs, leak suspects,
//! flame graphs. Argument parsing only; the work is in `heapprof::report`.

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use heapprof::report::labels::{self as by_label, Focus};
use heapprof::report::{self, ReportError, SampleKind};

const USAGE: &str = "\
heapprof: read pprof heap profiles (heapprof's or Go's, gzipped or not)

usage:
  heapprof top FILE [-n N] [--sample TYPE] [--depth D] [--all-frames] [--by LABEL] [--focus K=V]
      the heaviest stacks, leaf function first, with file:line and share
  heapprof diff BASE NEW [-n N] [--sample TYPE] [--depth D] [--all-frames] [--by LABEL] [--focus K=V]
      per stack NEW minus BASE, largest growth first
  heapprof leaks FILE... [-n N] [--sample TYPE] [--depth D] [--all-frames] [--by LABEL] [--focus K=V]
      one profile or several of one process: per stack, steady growth (leak
      suspects, with a confidence and the leak rate), plateaus (caches),
      churn, or not enough samples yet (with how long to wait), from the live
      samples' ages and how their count moves
  heapprof leaks FILE --older-than SECS [-n N] [--depth D]
      stacks holding in-use bytes at least SECS old (`age` sample labels)
  heapprof flamegraph FILE -o OUT.svg [--sample TYPE] [--all-frames] [--focus K=V]
      an SVG flame graph (-o - writes it to standard output)
  heapprof report FILE... -o OUT.html [--all-frames] [--focus K=V]
      one self-contained HTML page: memory over time, leak verdicts, flame
      graphs of in-use memory and of growth over a window picked on the chart
  heapprof run [--rate BYTES] [--out DIR] [--children] [--interval SECS] -- COMMAND [ARGS...]
      run COMMAND under the preload library (found next to heapprof, or at
      $HEAPPROF_PRELOAD), following it through exec; --children profiles the
      programs it starts too; then list its profiles and top stacks, and
      exit with its status
  heapprof recover BLACKBOX -o OUT.pb.gz
      the heap profile of what was live when a process with
      HEAPPROF_BLACKBOX=DIR died (DIR/heapprof.PID.blackbox), even by
      SIGKILL or the OOM killer; every command above also reads a black
      box directly
  heapprof symbolize FILE -o OUT.pb.gz
      a copy of a raw profile (HEAPPROF_SYMBOLIZE=0) with function names,
      files, lines and inlined frames from the binaries on this machine,
      for any pprof reader (every command above does this by itself)

options:
  -n N            rows to show (default 10; 0 shows all)
  --depth D       frames to show per stack (default 24; 0 shows all)
  --sample TYPE   inuse_space (default), inuse_objects, alloc_space,
                  alloc_objects, or another sample type the profile has
  --older-than S  `leaks` on one profile: rank by memory at least S s old
  -o, --output P  output file for `flamegraph`, `symbolize` and `recover`
  --all-frames    show every frame, also the runtime's root frames (_start,
                  libc start-up, thread start, Rust's lang_start and
                  catch_unwind wrappers), which reports leave out by default
  --by LABEL      one report per value of the sample label LABEL (route,
                  tenant...), heaviest first; samples without it: (none);
                  `leaks` judges each value as it judges a stack
  --focus K=V     only samples whose label K is V (repeat: all must hold)
  -h, --help      this text

`heapprof COMMAND --help` shows one command's usage.

The profiled program reads HEAPPROF_RATE, HEAPPROF_OUT, HEAPPROF_SIGNAL,
HEAPPROF_INTERVAL, HEAPPROF_AT_EXIT, HEAPPROF_SYMBOLIZE, HEAPPROF_HTTP,
HEAPPROF_LABELS, HEAPPROF_SEED, HEAPPROF_CHILDREN and
HEAPPROF_SAMPLE_HEAP_LIMIT, among others (the README's table under 'Getting
a profile out of a running process' lists them all);
`heapprof run` finds the preload library at HEAPPROF_PRELOAD.

Errors print one line on stderr and exit with status 2 (`run`: the
command's own status, 128+N if signal N ended it).
";

/// Exit status for every error: bad arguments and unreadable input alike.
const FAILURE: u8 = 2;

const DEFAULT_ROWS: usize = 10;

fn main() -> ExitCode {
    // Defence in depth: the library is meant never to panic, but if it does
    // the user still gets one line and status 2, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown".to_string());
        // Not eprintln!: it panics when stderr is closed.
        let _ = writeln!(
            io::stderr(),
            "heapprof: internal error ({}); please report it with the input file",
            what.replace(['\n', '\r'], " ")
        );
        std::process::exit(i32::from(FAILURE));
    }));

    let raw: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if raw.first().is_some_and(|a| a == "run") {
        return launch(&raw[1..]);
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(Outcome::Done) => ExitCode::SUCCESS,
        Ok(Outcome::CommandUsage(text)) => {
            let _ = io::stdout().write_all(text.as_bytes());
            ExitCode::SUCCESS
        }
        Ok(Outcome::Usage(status)) => {
            // Usage goes to stdout even when it is a failure status: stderr
            // is reserved for one-line errors.
            let _ = io::stdout().write_all(USAGE.as_bytes());
            ExitCode::from(status)
        }
        Err(e) => {
            let line = e.to_string().replace(['\n', '\r'], " ");
            let _ = writeln!(io::stderr(), "heapprof: {line}");
            ExitCode::from(FAILURE)
        }
    }
}

/// `heapprof run`: the command's status, or an error line.
fn launch(args: &[std::ffi::OsString]) -> ExitCode {
    if args.first().is_some_and(|a| a == "-h" || a == "--help") {
        let _ = io::stdout().write_all(command_usage("run").as_bytes());
        return ExitCode::SUCCESS;
    }
    match heapprof::launch::parse(args).and_then(|o| heapprof::launch::run(&o)) {
        Ok(status) => ExitCode::from(status.clamp(0, 255) as u8),
        Err(e) => {
            let _ = writeln!(io::stderr(), "heapprof: {e}");
            ExitCode::from(e.status.clamp(0, 255) as u8)
        }
    }
}

enum Outcome {
    Done,
    /// Print usage and exit with this status.
    Usage(u8),
    /// Print one command's usage (`heapprof CMD --help`) and exit 0.
    CommandUsage(String),
}

/// One command's part of [`USAGE`]: its usage lines and what they do, then
/// the options the commands share.
fn command_usage(cmd: &str) -> String {
    let cmd = if cmd == "flame" { "flamegraph" } else { cmd };
    let mut out = String::from("usage:\n");
    let mut in_cmd = false;
    let mut options = false;
    for line in USAGE.lines() {
        if line == "options:" {
            if cmd == "run" {
                break;
            }
            options = true;
            out.push_str("\noptions:\n");
            continue;
        }
        if options {
            if line.is_empty() {
                break;
            }
            out.push_str(line);
            out.push('\n');
            continue;
        }
        if let Some(rest) = line.strip_prefix("  heapprof ") {
            in_cmd = rest.split_whitespace().next() == Some(cmd);
        } else if !line.starts_with("      ") {
            in_cmd = false;
        }
        if in_cmd {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push_str("\nAll commands and the HEAPPROF_* variables: heapprof --help\n");
    out
}

/// The parsed command line of one subcommand.
struct Args {
    positional: Vec<String>,
    rows: usize,
    sample: SampleKind,
    older_than: Option<u64>,
    output: Option<String>,
    depth: Option<usize>,
    all_frames: bool,
    by: Option<String>,
    focus: Vec<Focus>,
    help: bool,
}

/// Which options a subcommand accepts.
struct Accepts {
    sample: bool,
    older_than: bool,
    output: bool,
    depth: bool,
    by: bool,
}

fn usage(text: String) -> ReportError {
    ReportError::Usage(text)
}

fn parse_args(cmd: &str, raw: &[String], accepts: Accepts) -> Result<Args, ReportError> {
    let mut args = Args {
        positional: Vec::new(),
        rows: DEFAULT_ROWS,
        sample: SampleKind::Default,
        older_than: None,
        output: None,
        depth: None,
        all_frames: false,
        by: None,
        focus: Vec::new(),
        help: false,
    };
    let mut it = raw.iter();
    let mut options_done = false;
    while let Some(arg) = it.next() {
        if options_done || arg == "-" || !arg.starts_with('-') {
            args.positional.push(arg.clone());
            continue;
        }
        if arg == "--" {
            options_done = true;
            continue;
        }
        // `--name=value` and `--name value` both work.
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = |what: &str| -> Result<String, ReportError> {
            match inline.clone().or_else(|| it.next().cloned()) {
                Some(v) => Ok(v),
                None => Err(usage(format!("{name} needs {what}"))),
            }
        };
        match name {
            "-h" | "--help" => args.help = true,
            "--all-frames" => args.all_frames = true,
            "-n" | "--rows" => {
                let v = value("a number of rows")?;
                args.rows = v.parse().map_err(|_| {
                    usage(format!(
                        "{name} needs a number of rows (0 for all), got {v:?}"
                    ))
                })?;
            }
            "--sample" | "--sample_index" | "-sample_index" if accepts.sample => {
                args.sample = value("a sample type")?.parse()?;
            }
            "--older-than" if accepts.older_than => {
                let v = value("a number of seconds")?;
                args.older_than = Some(v.parse().map_err(|_| {
                    usage(format!(
                        "--older-than needs a whole number of seconds, got {v:?}"
                    ))
                })?);
            }
            "-o" | "--output" if accepts.output => args.output = Some(value("a file name")?),
            "--depth" if accepts.depth => {
                let v = value("a number of frames")?;
                args.depth = Some(v.parse().map_err(|_| {
                    usage(format!(
                        "--depth needs a number of frames (0 for all), got {v:?}"
                    ))
                })?);
            }
            "--by" if accepts.by => args.by = Some(value("a label name, such as route")?),
            "--focus" => args.focus.push(value("KEY=VALUE")?.parse()?),
            "--sample" | "--older-than" | "-o" | "--output" | "--depth" | "--by" => {
                return Err(usage(format!("{cmd} does not take {name}")));
            }
            _ => return Err(usage(format!("unknown option {arg:?} for {cmd}"))),
        }
    }
    Ok(args)
}

fn run(raw: &[String]) -> Result<Outcome, ReportError> {
    let Some((cmd, rest)) = raw.split_first() else {
        return Ok(Outcome::Usage(FAILURE));
    };
    let accepts = |sample, older_than, output| Accepts {
        sample,
        older_than,
        output,
        // Flame graphs always draw whole stacks, all in one.
        depth: !output,
        by: !output,
    };
    let out = match cmd.as_str() {
        "-h" | "--help" | "help" => return Ok(Outcome::Usage(0)),
        "-V" | "--version" => format!("heapprof {}\n", env!("CARGO_PKG_VERSION")),
        "top" => {
            let a = parse_args(cmd, rest, accepts(true, false, false))?;
            if a.help {
                return Ok(Outcome::CommandUsage(command_usage(cmd)));
            }
            let [file] = positionals::<1>(cmd, "FILE", &a)?;
            let whole = load(file, &a)?;
            by_label::check_focus(&[&whole], &a.focus)?;
            let r = by_label::focus(&whole, &a.focus);
            let out = match &a.by {
                Some(key) => render(&by_label::top_by(&r, key, &a.sample, a.rows)?, a.depth),
                None => render(&report::top(&r, &a.sample, a.rows)?, a.depth),
            };
            with_unseen_note(out, &[whole])
        }
        "diff" => {
            let a = parse_args(cmd, rest, accepts(true, false, false))?;
            if a.help {
                return Ok(Outcome::CommandUsage(command_usage(cmd)));
            }
            let [base, new] = positionals::<2>(cmd, "BASE NEW", &a)?;
            let (whole_base, whole_new) = (load(base, &a)?, load(new, &a)?);
            by_label::check_focus(&[&whole_base, &whole_new], &a.focus)?;
            let (base, new) = (
                by_label::focus(&whole_base, &a.focus),
                by_label::focus(&whole_new, &a.focus),
            );
            let out = match &a.by {
                Some(key) => render(
                    &by_label::diff_by(&base, &new, key, &a.sample, a.rows)?,
                    a.depth,
                ),
                None => render(&report::diff(&base, &new, &a.sample, a.rows)?, a.depth),
            };
            with_unseen_note(out, &[whole_base, whole_new])
        }
        "leaks" => {
            let a = parse_args(cmd, rest, accepts(true, true, false))?;
            if a.help {
                return Ok(Outcome::CommandUsage(command_usage(cmd)));
            }
            if a.positional.is_empty() {
                return Err(usage(
                    "leaks needs one profile or several of one process".to_string(),
                ));
            }
            let mut whole = a
                .positional
                .iter()
                .map(|f| load(f, &a))
                .collect::<Result<Vec<_>, _>>()?;
            // A peak profile (`PREFIX.PID.peak.pb.gz`, which a glob of the
            // dumps also selects) is the heap at its highest, not a moment
            // of the series: left out of a series, and said so.
            // Said once the series is judged (a refused mix says only why).
            let mut left_out = Vec::new();
            if whole.iter().any(|r| !r.peak) {
                whole.retain(|r| {
                    if r.peak {
                        left_out.push(format!(
                            "heapprof: left out {}: a peak profile (the heap at its highest), not a moment of the series; `heapprof top` reads it alone",
                            r.input
                        ));
                    }
                    !r.peak
                });
            }
            // A dump at exit after the heap was torn down is no moment of
            // the program's life either.
            whole.sort_by_key(|r| r.time_nanos);
            if let Some((i, line)) = report::shutdown_dump(&whole) {
                whole.remove(i);
                left_out.push(line);
            }
            by_label::check_focus(&whole.iter().collect::<Vec<_>>(), &a.focus)?;
            let profiles: Vec<_> = whole
                .iter()
                .map(|r| by_label::focus(r, &a.focus))
                .collect();
            let opts = report::LeakOptions {
                sample: a.sample.clone(),
                n: a.rows,
                older_than_secs: a.older_than,
                group: match &a.by {
                    Some(key) => report::Grouping::Label(key.clone()),
                    None => report::Grouping::Stack,
                },
            };
            let out = render(&report::leaks(&profiles, &opts)?, a.depth);
            for line in left_out {
                eprintln!("{line}");
            }
            with_unseen_note(out, &whole)
        }
        "flamegraph" | "flame" => {
            let a = parse_args(cmd, rest, accepts(true, false, true))?;
            if a.help {
                return Ok(Outcome::CommandUsage(command_usage(cmd)));
            }
            let [file] = positionals::<1>(cmd, "FILE", &a)?;
            let Some(output) = &a.output else {
                return Err(usage(
                    "flamegraph needs an output file: -o OUT.svg (or -o - for standard output)"
                        .to_string(),
                ));
            };
            let whole = load(file, &a)?;
            by_label::check_focus(&[&whole], &a.focus)?;
            if let Some(note) = report::unseen_memory(&whole, None) {
                let _ = writeln!(io::stderr(), "heapprof: {note}");
            }
            let profile = by_label::focus(&whole, &a.focus);
            if output == "-" {
                let svg = report::flamegraph(&profile, &a.sample)?;
                emit(&svg)?;
            } else {
                report::write_flamegraph(&profile, &a.sample, Path::new(output))?;
            }
            return Ok(Outcome::Done);
        }
        "report" => return html_report(cmd, rest),
        "symbolize" => {
            let a = parse_args(cmd, rest, accepts(false, false, true))?;
            if a.help {
                return Ok(Outcome::CommandUsage(command_usage(cmd)));
            }
            let [file] = positionals::<1>(cmd, "FILE", &a)?;
            let Some(output) = &a.output else {
                return Err(usage(
                    "symbolize needs an output file: -o OUT.pb.gz".to_string(),
                ));
            };
            let notes = report::symbolize_raw::symbolize_file(file, Path::new(output))?;
            report::symbolize_raw::say_once(&notes);
            return Ok(Outcome::Done);
        }
        "recover" => {
            let a = parse_args(cmd, rest, accepts(false, false, true))?;
            if a.help {
                return Ok(Outcome::CommandUsage(command_usage(cmd)));
            }
            let [file] = positionals::<1>(cmd, "BLACKBOX", &a)?;
            let Some(output) = &a.output else {
                return Err(usage(
                    "recover needs an output file: -o OUT.pb.gz".to_string(),
                ));
            };
            let r = report::blackbox::recover_file(file, Path::new(output))?;
            report::symbolize_raw::say_once(&r.notes);
            eprintln!(
                "heapprof: {output}: {} live samples of pid {}{}{}",
                r.samples,
                r.pid,
                if r.in_flight > 0 { format!(", {} in flight at the end left out", r.in_flight) } else { String::new() },
                if r.overflow > 0 { format!(", {} not recorded (the black box was full: raise HEAPPROF_BLACKBOX_SLOTS)", r.overflow) } else { String::new() },
            );
            return Ok(Outcome::Done);
        }
        other if other.starts_with('-') => {
            return Err(usage(format!(
                "expected a command (top, diff, leaks, flamegraph, report, recover, symbolize, run) before {other:?}"
            )))
        }
        other => {
            return Err(usage(format!(
                "unknown command {other:?}; the commands are top, diff, leaks, flamegraph, report, recover, symbolize and run"
            )))
        }
    };
    emit(out.as_bytes())?;
    Ok(Outcome::Done)
}

/// `heapprof report FILE... -o OUT.html [--all-frames]`: one self-contained
/// HTML page of memory over time (`heapprof::report::html`).
fn html_report(cmd: &str, rest: &[String]) -> Result<Outcome, ReportError> {
    let accepts = Accepts {
        sample: false,
        older_than: false,
        output: true,
        depth: false,
        by: false,
    };
    let a = parse_args(cmd, rest, accepts)?;
    if a.help {
        return Ok(Outcome::CommandUsage(command_usage(cmd)));
    }
    let Some(output) = &a.output else {
        return Err(usage(
            "report needs an output file: -o report.html".to_string(),
        ));
    };
    if a.positional.is_empty() {
        return Err(usage(
            "report needs one profile or several of one process".to_string(),
        ));
    }
    let mut dumps = Vec::with_capacity(a.positional.len());
    for f in &a.positional {
        let mut d = report::html::load_dump(f)?;
        d.profile = by_label::focus(&d.profile, &a.focus);
        if !a.all_frames {
            d.profile = report::program_only(d.profile);
        }
        dumps.push(d);
    }
    let title = format!("heapprof report ({} profiles)", dumps.len());
    report::html::write_html(dumps, &title, Path::new(output))?;
    Ok(Outcome::Done)
}

/// Loads a profile for a report: without the runtime's root frames unless
/// `--all-frames` was given.
fn load(file: &str, a: &Args) -> Result<report::Resolved, ReportError> {
    let profile = report::load(file)?;
    Ok(if a.all_frames {
        profile
    } else {
        report::program_only(profile)
    })
}

/// `out`, then, when the latest of `profiles` saw little of the process's
/// memory, the note saying so ([`report::unseen_memory`]).
fn with_unseen_note(mut out: String, profiles: &[report::Resolved]) -> String {
    let latest = profiles.iter().max_by_key(|p| p.time_nanos);
    if let Some(note) = latest.and_then(|p| report::unseen_memory(p, None)) {
        if !out.ends_with('\n') {
            out.push('\n');
        }
        out.push('\n');
        out.push_str(&note);
        out.push('\n');
    }
    out
}

/// A report as text; the reports read the frames-per-stack limit from the
/// formatter's precision.
fn render(report: &impl std::fmt::Display, depth: Option<usize>) -> String {
    match depth {
        Some(depth) => format!("{report:.depth$}"),
        None => report.to_string(),
    }
}

/// Exactly `N` positional arguments, or a usage error saying what is wanted.
fn positionals<'a, const N: usize>(
    cmd: &str,
    wanted: &str,
    a: &'a Args,
) -> Result<[&'a String; N], ReportError> {
    let got: Vec<&String> = a.positional.iter().collect();
    got.try_into().map_err(|got: Vec<&String>| {
        if got.len() < N {
            usage(format!("{cmd} needs {wanted}"))
        } else {
            usage(format!(
                "{cmd} takes {wanted}, but got {} files: {}",
                got.len(),
                got.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ")
            ))
        }
    })
}

/// Writes a report to stdout. A closed pipe (`heapprof top … | head`) is not
/// an error worth a message: the reader has what it wanted.
fn emit(bytes: &[u8]) -> Result<(), ReportError> {
    let mut stdout = io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(error) => Err(ReportError::Write {
            path: "standard output".to_string(),
            error,
        }),
    }
}
