//! Configuration: the `HEAPPROF_*` environment variables and the same
//! settings from code.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `HEAPPROF_RATE` | mean bytes between samples; `1` samples every allocation (exact), `0` turns sampling off; `k`/`m`/`g` suffixes are KiB/MiB/GiB | `524288` |
//! | `HEAPPROF_SEED` | fixes the sampler's random stream (reproducible tests) | per process |
//! | `HEAPPROF_OUT` | path prefix of dump files: `PREFIX.PID.SEQ.pb.gz` | `./heapprof` |
//! | `HEAPPROF_SIGNAL` | signal that triggers a dump: a name (`USR2`, `SIGUSR1`) or number; `none` disables | `USR2` |
//! | `HEAPPROF_INTERVAL` | seconds between periodic dumps (decimals allowed); `0` disables | off |
//! | `HEAPPROF_AT_EXIT` | dump at normal process exit (`1`/`0`, `true`/`false`, `on`/`off`) | off (Rust), on (preload) |
//! | `HEAPPROF_SAMPLE_HEAP_LIMIT` | a limit (and a testing knob) on the bytes of heapprof's sample heap, which serves sampled objects; past it, samples are served unsampled by the allocator and counted (one line on stderr); `k`/`m`/`g` suffixes | none |
//! | `HEAPPROF_DECAY_MS` | milliseconds the memory of freed large samples stays resident for reuse, unused, before it goes back to the system (`0`: at once); see [`crate::engine::sample_heap`] | `10000` |
//! | `HEAPPROF_LABELS` | labels on every sample of the process, `key=value,key2=value2` (service, version, zone); scope labels ([`crate::with_labels`]) override the same key | none |
//! | `HEAPPROF_SYMBOLIZE` | `0` writes raw profiles: addresses, mappings and build IDs only, symbolized later by `go tool pprof` or `heapprof` (no parsing at dump time: for very large binaries, and for sandboxes whose seccomp filter kills on the `clone` a symbolized dump makes to parse DWARF outside the program) | `1` |
//! | `HEAPPROF_FILE_MODE` | permission bits (octal) of the profiles heapprof writes, before the umask | `0600` |
//! | `HEAPPROF_HTTP` | serve Go-style `/debug/pprof/` on `HOST:PORT`, or on `127.0.0.1:PORT` for a bare `PORT` (port `0` picks a free one); `off` disables (see [`crate::control::http`]) | off |
//! | `HEAPPROF_BLACKBOX` | directory for the black box `heapprof.PID.blackbox`: the live samples in a shared file mapping that survives `SIGKILL`, recovered by `heapprof recover` (see [`crate::control::blackbox`]) | off |
//! | `HEAPPROF_BLACKBOX_SLOTS` | live samples the black box holds, 512 bytes of file each | `65536` |
//! | `HEAPPROF_BLACKBOX_KEEP` | keep the black box file after a normal exit | `0` |
//! | `HEAPPROF_NEAR_LIMIT` | dump when memory first crosses each percentage of its limit, `80,95` (see [`crate::control::heap_triggers`]) | off |
//! | `HEAPPROF_GROWTH` | dump each time the estimated in-use heap grows by this many bytes over the last such dump; `k`/`m`/`g` suffixes | off |
//! | `HEAPPROF_UNWIND` | how stacks are captured: `own` walks them with heapprof's cached DWARF rules (`engine::unwind`), libunwind where it cannot; `libunwind` uses libunwind (else libgcc's unwinder) for every capture; `check` does both and counts the captures that differ (`walk_mismatches=` in each profile's comment; a testing mode, as slow as `libunwind`) | `own` |
//! | `HEAPPROF_KEEP` | keep only the newest N heap dumps of the process | all |
//!
//! A value that does not parse never stops the program: heapprof prints one
//! line naming the variable, the value and what is accepted, and uses the
//! default. The parsing functions here are pure so the hook-path start-up can
//! use them without printing; the dumper thread reports the problems.
//!
//! From code, [`Config`] carries the same settings; which source wins is
//! simply which you start from: [`Config::from_env`] begins with the
//! environment (code then overrides what it sets), [`Config::default`] ignores
//! the environment. Until [`Config::install`] is called, the environment
//! applies.

use std::ffi::CStr;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

pub use crate::engine::sampler::DEFAULT_RATE;

/// The rate [`crate::set_rate`] set, `u64::MAX` until it is called.
static RATE_FROM_CODE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(u64::MAX);

/// Records a rate set in code, which [`Config::from_env`] then keeps.
pub fn remember_rate_from_code(rate: u64) {
    RATE_FROM_CODE.store(rate, std::sync::atomic::Ordering::Relaxed);
}

fn rate_from_code() -> Option<u64> {
    match RATE_FROM_CODE.load(std::sync::atomic::Ordering::Relaxed) {
        u64::MAX => None,
        r => Some(r),
    }
}

/// Every setting heapprof has.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Mean bytes between samples (1: every allocation; 0: off).
    pub rate: u64,
    /// Fixed seed for the sampler, for reproducible runs.
    pub seed: Option<u64>,
    /// Dump file prefix; files are `PREFIX.PID.SEQ.pb.gz`.
    pub out: PathBuf,
    /// Signal number that triggers a dump, or none.
    pub signal: Option<i32>,
    /// Period of automatic dumps, or none.
    pub interval: Option<Duration>,
    /// Whether to dump at normal process exit.
    pub at_exit: bool,
    /// Whether dumps name functions, files and lines (false: raw addresses).
    pub symbolize: bool,
    /// Address of the `/debug/pprof/` HTTP server, or none.
    pub http: Option<SocketAddr>,
    /// Labels written on every sample (`HEAPPROF_LABELS`), in order.
    pub labels: Vec<(String, String)>,
    /// Permission bits of the files heapprof writes (`HEAPPROF_FILE_MODE`).
    pub file_mode: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            rate: DEFAULT_RATE,
            seed: None,
            out: PathBuf::from("./heapprof"),
            signal: Some(libc::SIGUSR2),
            interval: None,
            at_exit: false,
            symbolize: true,
            http: None,
            labels: Vec::new(),
            file_mode: crate::os::fds::FILE_MODE,
        }
    }
}

impl Config {
    /// The defaults overridden by any valid `HEAPPROF_*` variables (invalid
    /// ones are ignored here; see [`Config::from_env_checked`]).
    pub fn from_env() -> Config {
        Config::from_env_checked().0
    }

    /// Like [`Config::from_env`], also returning one message per bad variable.
    ///
    /// Settings made in code before ([`crate::set_rate`]) stand in for the
    /// defaults: `set_rate(1)` then `Config::from_env()….install()` keeps
    /// rate 1 unless `HEAPPROF_RATE` is set or the caller sets a rate.
    pub fn from_env_checked() -> (Config, Vec<String>) {
        let mut base = Config::default();
        if let Some(rate) = rate_from_code() {
            base.rate = rate;
        }
        Config::from_lookup_with(base, |name| getenv(name).map(str::to_owned))
    }

    /// Builds a config from any variable lookup (the environment, a test map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> (Config, Vec<String>) {
        Config::from_lookup_with(Config::default(), get)
    }

    /// Like [`Config::from_lookup`], starting from `base` instead of the defaults.
    pub fn from_lookup_with(
        base: Config,
        get: impl Fn(&str) -> Option<String>,
    ) -> (Config, Vec<String>) {
        let mut c = base;
        let mut problems = Vec::new();
        let mut take = |name: &str, accepted: &str, apply: &mut dyn FnMut(&str) -> bool| {
            if let Some(v) = get(name) {
                if !apply(v.trim()) {
                    // The default of HEAPPROF_HTTP is not serving at all.
                    let instead = if name == "HEAPPROF_HTTP" {
                        "not serving profiles over HTTP"
                    } else {
                        "using the default"
                    };
                    problems.push(format!(
                        "heapprof: {name}={v:?} is not valid: {accepted}; {instead}"
                    ));
                }
            }
        };
        take(
            "HEAPPROF_RATE",
            "use mean bytes between samples such as 524288 or 512k (1 = every allocation, 0 = off)",
            &mut |v| parse_bytes(v).map(|r| c.rate = r).is_some(),
        );
        take("HEAPPROF_SEED", "use a whole number", &mut |v| {
            v.parse::<u64>().map(|s| c.seed = Some(s)).is_ok()
        });
        take(
            "HEAPPROF_OUT",
            "use a path prefix such as /tmp/heapprof",
            &mut |v| (!v.is_empty()).then(|| c.out = PathBuf::from(v)).is_some(),
        );
        take(
            "HEAPPROF_SIGNAL",
            "use a signal name such as USR2 or USR1, a number, or none",
            &mut |v| parse_signal(v).map(|s| c.signal = s).is_some(),
        );
        take(
            "HEAPPROF_INTERVAL",
            "use seconds between dumps such as 60 or 0.5 (0 = off)",
            &mut |v| parse_interval(v).map(|i| c.interval = i).is_some(),
        );
        take("HEAPPROF_AT_EXIT", "use 1 or 0", &mut |v| {
            parse_bool(v).map(|b| c.at_exit = b).is_some()
        });
        take("HEAPPROF_SYMBOLIZE", "use 1 or 0", &mut |v| {
            parse_bool(v).map(|b| c.symbolize = b).is_some()
        });
        take(
            "HEAPPROF_HTTP",
            "use PORT (on 127.0.0.1) or HOST:PORT such as 6060 or 0.0.0.0:6060 (port 0 picks a free one), or off",
            &mut |v| parse_http(v).map(|a| c.http = a).is_some(),
        );
        take(
            "HEAPPROF_LABELS",
            "use key=value pairs separated by commas, such as service=api,zone=eu-1",
            &mut |v| parse_labels(v).map(|l| c.labels = l).is_some(),
        );
        take(
            "HEAPPROF_FILE_MODE",
            "use octal permission bits such as 600 or 0640",
            &mut |v| parse_mode(v).map(|m| c.file_mode = m).is_some(),
        );
        // Applied at start-up (the engine reads it before any sample); checked here.
        take("HEAPPROF_UNWIND", "use own, libunwind or check", &mut |v| {
            parse_unwinder(v).is_some()
        });
        problems.extend(unknown_variables(|name| get(name).is_some()));
        (c, problems)
    }

    /// Sets the permission bits of the files heapprof writes (before the
    /// umask; default `0o600`).
    pub fn file_mode(mut self, mode: u32) -> Self {
        self.file_mode = mode & 0o777;
        self
    }

    /// Sets the sampling rate.
    pub fn rate(mut self, rate: u64) -> Self {
        self.rate = rate;
        self
    }
    /// Fixes the sampler seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }
    /// Sets the dump file prefix.
    pub fn out(mut self, prefix: impl Into<PathBuf>) -> Self {
        self.out = prefix.into();
        self
    }
    /// Sets (or with `None` disables) the dump signal.
    pub fn signal(mut self, signal: Option<i32>) -> Self {
        self.signal = signal;
        self
    }
    /// Sets (or with `None` disables) periodic dumps.
    pub fn interval(mut self, every: Option<Duration>) -> Self {
        self.interval = every;
        self
    }
    /// Symbolized (true) or raw (false) profiles.
    pub fn symbolize(mut self, on: bool) -> Self {
        self.symbolize = on;
        self
    }
    /// Serves `/debug/pprof/` on `addr` (or with `None` stops serving).
    /// Stack traces and file paths are exposed to whoever can connect:
    /// prefer a loopback address.
    pub fn http(mut self, addr: Option<SocketAddr>) -> Self {
        self.http = addr;
        self
    }
    /// Sets the labels written on every sample.
    pub fn labels(mut self, labels: &[(&str, &str)]) -> Self {
        self.labels = labels
            .iter()
            .map(|&(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self
    }
    /// Turns the dump at exit on or off.
    pub fn at_exit(mut self, on: bool) -> Self {
        self.at_exit = on;
        self
    }

    /// Makes this the running configuration (see [`crate::control::startup::install`]).
    pub fn install(self) {
        // The running rate, which a later `Config::from_env()` keeps.
        remember_rate_from_code(self.rate);
        crate::control::startup::install(self);
    }
}

/// Every `HEAPPROF_*` variable heapprof reads (the preload library and
/// `heapprof run` read the last three; `HEAPPROF_PID` is heapprof's own,
/// never listed to users). `tests/variables.rs` checks that every name the
/// sources read is here.
pub const VARIABLES: &[&str] = &[
    "HEAPPROF_RATE",
    "HEAPPROF_SEED",
    "HEAPPROF_OUT",
    "HEAPPROF_SIGNAL",
    "HEAPPROF_INTERVAL",
    "HEAPPROF_AT_EXIT",
    "HEAPPROF_SYMBOLIZE",
    "HEAPPROF_HTTP",
    "HEAPPROF_LABELS",
    "HEAPPROF_SAMPLE_HEAP_LIMIT",
    "HEAPPROF_DECAY_MS",
    "HEAPPROF_FILE_MODE",
    "HEAPPROF_BLACKBOX",
    "HEAPPROF_BLACKBOX_KEEP",
    "HEAPPROF_BLACKBOX_SLOTS",
    "HEAPPROF_NEAR_LIMIT",
    "HEAPPROF_GROWTH",
    "HEAPPROF_KEEP",
    "HEAPPROF_UNWIND",
    "HEAPPROF_CHILDREN",
    "HEAPPROF_PRELOAD",
    "HEAPPROF_PID",
];

/// One line per `HEAPPROF_*` variable in the environment that is no
/// setting (a misspelling: `HEAPPROF_RAT=1`), naming the closest one and
/// the known ones. Only variables `seen` confirms count: a configuration
/// built from a lookup other than the environment reports none of the
/// environment's.
fn unknown_variables(seen: impl Fn(&str) -> bool) -> Vec<String> {
    let mut out = Vec::new();
    for name in environment_names("HEAPPROF_") {
        if VARIABLES.contains(&name.as_str()) || !seen(&name) {
            continue;
        }
        let closest = VARIABLES
            .iter()
            .min_by_key(|known| edit_distance(known, &name))
            .filter(|known| edit_distance(known, &name) <= 3);
        let hint = closest.map_or(String::new(), |c| format!(" (did you mean {c}?)"));
        out.push(format!(
            "heapprof: {name} is not a heapprof setting{hint}; ignored. The settings: {}",
            VARIABLES[..VARIABLES.len() - 1].join(", ")
        ));
    }
    out
}

/// Names of the environment's variables starting with `prefix`, read from
/// `environ` directly (Rust's `std::env` takes a lock a hook must never
/// wait on).
fn environment_names(prefix: &str) -> Vec<String> {
    extern "C" {
        static environ: *const *const std::ffi::c_char;
    }
    let mut names = Vec::new();
    // SAFETY: `environ` is a NULL-terminated array of NUL-terminated
    // strings that lives as long as the process; it is only read here, and
    // only a concurrent setenv by the program could change it (the same
    // contract as getenv's).
    unsafe {
        let mut p = environ;
        while !p.is_null() && !(*p).is_null() {
            let entry = CStr::from_ptr(*p).to_bytes();
            if let Some(name) = entry.split(|&b| b == b'=').next() {
                if name.starts_with(prefix.as_bytes()) {
                    names.push(String::from_utf8_lossy(name).into_owned());
                }
            }
            p = p.add(1);
        }
    }
    names
}

/// Levenshtein distance, for suggesting the setting meant.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// Reads an environment variable without Rust's environment lock (which a
/// hook must never take) and without allocating.
pub fn getenv(name: &str) -> Option<&'static str> {
    let mut buf = [0u8; 64];
    let bytes = name.as_bytes();
    if bytes.len() >= buf.len() {
        return None;
    }
    buf[..bytes.len()].copy_from_slice(bytes);
    // SAFETY: `buf` is NUL-terminated. The returned pointer points into the
    // environment block, which lives as long as the process unless the
    // program itself calls setenv on this very variable.
    let p = unsafe { libc::getenv(buf.as_ptr().cast()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: getenv returns a NUL-terminated string.
    unsafe { CStr::from_ptr(p) }.to_str().ok()
}

// The parsers below never allocate: the hook-path start-up uses them.

/// `own`, `libunwind` or `check` (`HEAPPROF_UNWIND`).
pub fn parse_unwinder(v: &str) -> Option<crate::engine::stack::Unwinder> {
    use crate::engine::stack::Unwinder;
    match v.trim() {
        "own" => Some(Unwinder::Own),
        "libunwind" => Some(Unwinder::Full),
        "check" => Some(Unwinder::Checked),
        _ => None,
    }
}

/// `524288`, `512k`, `512KiB`, `1m`, `2g` (binary multiples).
pub fn parse_bytes(v: &str) -> Option<u64> {
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, suffix) = v.split_at(split);
    let n: u64 = num.parse().ok()?;
    let suffix = suffix.trim();
    let is = |names: &[&str]| names.iter().any(|n| suffix.eq_ignore_ascii_case(n));
    let mult: u64 = if is(&["", "b"]) {
        1
    } else if is(&["k", "kb", "kib"]) {
        1 << 10
    } else if is(&["m", "mb", "mib"]) {
        1 << 20
    } else if is(&["g", "gb", "gib"]) {
        1 << 30
    } else {
        return None;
    };
    n.checked_mul(mult)
}

/// A signal name (`USR2`, `SIGUSR2`, case-insensitive) or number; `none`/`off`
/// gives `Some(None)`.
pub fn parse_signal(v: &str) -> Option<Option<i32>> {
    let v = v.trim();
    if ["none", "off", "0", ""]
        .iter()
        .any(|n| v.eq_ignore_ascii_case(n))
    {
        return Some(None);
    }
    let catchable =
        |n: i32| n > 0 && n <= libc::SIGRTMAX() && n != libc::SIGKILL && n != libc::SIGSTOP;
    if let Ok(n) = v.parse::<i32>() {
        return catchable(n).then_some(Some(n));
    }
    let name = match v.get(..3) {
        Some(p) if p.eq_ignore_ascii_case("sig") => &v[3..],
        _ => v,
    };
    const NAMES: &[(&str, i32)] = &[
        ("USR1", libc::SIGUSR1),
        ("USR2", libc::SIGUSR2),
        ("HUP", libc::SIGHUP),
        ("URG", libc::SIGURG),
        ("PWR", libc::SIGPWR),
        ("WINCH", libc::SIGWINCH),
        ("PROF", libc::SIGPROF),
        ("VTALRM", libc::SIGVTALRM),
        ("QUIT", libc::SIGQUIT),
    ];
    if let Some(&(_, n)) = NAMES.iter().find(|(k, _)| name.eq_ignore_ascii_case(k)) {
        return Some(Some(n));
    }
    let off = match name.get(..6) {
        Some(p) if p.eq_ignore_ascii_case("rtmin+") => name[6..].parse::<i32>().ok()?,
        _ => return None,
    };
    let n = libc::SIGRTMIN().checked_add(off)?;
    (off >= 0 && catchable(n)).then_some(Some(n))
}

/// Seconds as a decimal; `0` gives `Some(None)`.
pub fn parse_interval(v: &str) -> Option<Option<Duration>> {
    let secs: f64 = v.trim().parse().ok()?;
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return None;
    }
    Some((secs > 0.0).then(|| Duration::from_secs_f64(secs.max(0.001))))
}

/// `key=value,key2=value2` (spaces around items trimmed; empty items
/// ignored; a value may contain `=`; a repeated key keeps its last value).
/// `None` when an item has no `=`, an empty key or an empty value. Allocates: only for the dumper thread's full configuration.
pub fn parse_labels(v: &str) -> Option<Vec<(String, String)>> {
    let mut out: Vec<(String, String)> = Vec::new();
    for item in v.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (k, val) = item.split_once('=')?;
        let (k, val) = (k.trim(), val.trim());
        if k.is_empty() || val.is_empty() {
            return None;
        }
        out.retain(|(ok, _)| ok != k);
        out.push((k.to_string(), val.to_string()));
    }
    Some(out)
}

/// Octal permission bits (`600`, `0640`), at most `0777`.
pub fn parse_mode(v: &str) -> Option<u32> {
    let v = v.trim();
    let digits = v.strip_prefix("0o").unwrap_or(v);
    if digits.is_empty() || digits.len() > 4 {
        return None;
    }
    u32::from_str_radix(digits, 8).ok().filter(|&m| m <= 0o777)
}

/// `1`/`0`, `true`/`false`, `yes`/`no`, `on`/`off`.
pub fn parse_bool(v: &str) -> Option<bool> {
    let v = v.trim();
    let is = |names: &[&str]| names.iter().any(|n| v.eq_ignore_ascii_case(n));
    if is(&["1", "true", "yes", "on"]) {
        Some(true)
    } else if is(&["0", "false", "no", "off", ""]) {
        Some(false)
    } else {
        None
    }
}

/// `PORT` or `:PORT` (on 127.0.0.1: never all interfaces unless named),
/// `HOST:PORT` with an IP address or `localhost`, `[IPv6]:PORT`;
/// `off`, `none` or empty gives `Some(None)`.
pub fn parse_http(v: &str) -> Option<Option<SocketAddr>> {
    let v = v.trim();
    if ["", "off", "none", "false", "no"]
        .iter()
        .any(|n| v.eq_ignore_ascii_case(n))
    {
        return Some(None);
    }
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let bare = v.strip_prefix(':').unwrap_or(v);
    if bare.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Some(SocketAddr::new(loopback, bare.parse().ok()?)));
    }
    if let Ok(a) = v.parse::<SocketAddr>() {
        return Some(Some(a));
    }
    let (host, port) = v.rsplit_once(':')?;
    if host.eq_ignore_ascii_case("localhost") {
        return Some(Some(SocketAddr::new(loopback, port.parse().ok()?)));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_by_the_names_heapprof_says() {
        use crate::os::signals::SignalName;
        let rt2 = libc::SIGRTMIN() + 2;
        for n in [
            libc::SIGUSR1,
            libc::SIGUSR2,
            libc::SIGURG,
            libc::SIGPWR,
            rt2,
        ] {
            let name = SignalName(n).to_string();
            assert_eq!(parse_signal(&name), Some(Some(n)), "{name}");
            assert_eq!(parse_signal(&name[3..]), Some(Some(n)), "{name}");
        }
    }

    #[test]
    fn byte_counts() {
        assert_eq!(parse_bytes("524288"), Some(524288));
        assert_eq!(parse_bytes("512k"), Some(524288));
        assert_eq!(parse_bytes("1MiB"), Some(1 << 20));
        assert_eq!(parse_bytes("0"), Some(0));
        assert_eq!(parse_bytes("lots"), None);
        assert_eq!(parse_bytes("-1"), None);
        assert_eq!(parse_bytes("99999999999999999999"), None);
    }

    #[test]
    fn file_modes() {
        assert_eq!(parse_mode("600"), Some(0o600));
        assert_eq!(parse_mode("0640"), Some(0o640));
        assert_eq!(parse_mode("0o644"), Some(0o644));
        for bad in ["", "8", "1000", "rw", "0x600", "07777"] {
            assert_eq!(parse_mode(bad), None, "{bad}");
        }
        let (c, problems) =
            Config::from_lookup(|n| (n == "HEAPPROF_FILE_MODE").then(|| "9".into()));
        assert_eq!(c.file_mode, 0o600);
        assert_eq!(problems.len(), 1, "{problems:?}");
    }

    #[test]
    fn signals() {
        assert_eq!(parse_signal("USR2"), Some(Some(libc::SIGUSR2)));
        assert_eq!(parse_signal("sigusr1"), Some(Some(libc::SIGUSR1)));
        assert_eq!(parse_signal("12"), Some(Some(12)));
        assert_eq!(parse_signal("none"), Some(None));
        assert_eq!(parse_signal("NOPE"), None);
        assert_eq!(parse_signal("9"), None);
    }

    #[test]
    fn http_addresses() {
        let a = |s: &str| Some(Some(s.parse::<SocketAddr>().unwrap()));
        assert_eq!(parse_http("6060"), a("127.0.0.1:6060"));
        assert_eq!(parse_http(":6060"), a("127.0.0.1:6060"));
        assert_eq!(parse_http("0"), a("127.0.0.1:0"));
        assert_eq!(parse_http("0.0.0.0:6060"), a("0.0.0.0:6060"));
        assert_eq!(parse_http("[::1]:6060"), a("[::1]:6060"));
        assert_eq!(parse_http("localhost:7"), a("127.0.0.1:7"));
        assert_eq!(parse_http("off"), Some(None));
        assert_eq!(parse_http("70000"), None);
        assert_eq!(parse_http("example.com:80"), None);
        assert_eq!(parse_http("6060x"), None);
    }

    #[test]
    fn labels() {
        let l = |v| parse_labels(v).map(|l| l.into_iter().collect::<Vec<_>>());
        let own = |p: &[(&str, &str)]| {
            p.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            l("service=api, zone=eu-1,"),
            Some(own(&[("service", "api"), ("zone", "eu-1")]))
        );
        assert_eq!(l("q=a=b"), Some(own(&[("q", "a=b")])));
        assert_eq!(l("k=1,k=2"), Some(own(&[("k", "2")])));
        assert_eq!(l(""), Some(vec![]));
        assert_eq!(l("novalue"), None);
        assert_eq!(l("=v"), None);
        assert_eq!(l("k="), None);
        let (c, problems) =
            Config::from_lookup(|k| (k == "HEAPPROF_LABELS").then(|| "service".to_string()));
        assert!(c.labels.is_empty());
        assert!(
            problems[0].contains("HEAPPROF_LABELS=\"service\""),
            "{problems:?}"
        );
    }

    #[test]
    fn env_problems_name_the_variable_and_keep_defaults() {
        let (c, problems) = Config::from_lookup(|k| match k {
            "HEAPPROF_RATE" => Some("lots".into()),
            "HEAPPROF_SIGNAL" => Some("NOPE".into()),
            "HEAPPROF_INTERVAL" => Some("2.5".into()),
            _ => None,
        });
        assert_eq!(c.rate, DEFAULT_RATE);
        assert_eq!(c.signal, Some(libc::SIGUSR2));
        assert_eq!(c.interval, Some(Duration::from_millis(2500)));
        assert_eq!(problems.len(), 2);
        assert!(problems[0].contains("HEAPPROF_RATE=\"lots\""));
        assert!(problems[1].contains("HEAPPROF_SIGNAL=\"NOPE\""));
    }
}
