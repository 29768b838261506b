//! Signals by name, one way everywhere heapprof names one (`SIGUSR2`,
//! `SIGRTMIN+2`, as `HEAPPROF_SIGNAL` accepts them with or without `SIG`),
//! and what a signal's disposition is, from raw system calls (the watcher
//! may ask: no errno, no allocation).

use core::fmt;

/// The classic signals' names, by number.
const NAMES: &[(i32, &str)] = &[
    (libc::SIGHUP, "SIGHUP"),
    (libc::SIGINT, "SIGINT"),
    (libc::SIGQUIT, "SIGQUIT"),
    (libc::SIGILL, "SIGILL"),
    (libc::SIGTRAP, "SIGTRAP"),
    (libc::SIGABRT, "SIGABRT"),
    (libc::SIGBUS, "SIGBUS"),
    (libc::SIGFPE, "SIGFPE"),
    (libc::SIGKILL, "SIGKILL"),
    (libc::SIGUSR1, "SIGUSR1"),
    (libc::SIGSEGV, "SIGSEGV"),
    (libc::SIGUSR2, "SIGUSR2"),
    (libc::SIGPIPE, "SIGPIPE"),
    (libc::SIGALRM, "SIGALRM"),
    (libc::SIGTERM, "SIGTERM"),
    (libc::SIGSTKFLT, "SIGSTKFLT"),
    (libc::SIGCHLD, "SIGCHLD"),
    (libc::SIGCONT, "SIGCONT"),
    (libc::SIGSTOP, "SIGSTOP"),
    (libc::SIGTSTP, "SIGTSTP"),
    (libc::SIGTTIN, "SIGTTIN"),
    (libc::SIGTTOU, "SIGTTOU"),
    (libc::SIGURG, "SIGURG"),
    (libc::SIGXCPU, "SIGXCPU"),
    (libc::SIGXFSZ, "SIGXFSZ"),
    (libc::SIGVTALRM, "SIGVTALRM"),
    (libc::SIGPROF, "SIGPROF"),
    (libc::SIGWINCH, "SIGWINCH"),
    (libc::SIGIO, "SIGIO"),
    (libc::SIGPWR, "SIGPWR"),
    (libc::SIGSYS, "SIGSYS"),
];

/// Displays a signal number by name: `SIGUSR2`, `SIGRTMIN+2`, or
/// `signal N` for a number no name fits; `{:#}` leaves out the `SIG`
/// (`USR2`, `RTMIN+2`), as a value for `HEAPPROF_SIGNAL`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignalName(pub i32);

impl fmt::Display for SignalName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        let sig = if f.alternate() { "" } else { "SIG" };
        if let Some(&(_, name)) = NAMES.iter().find(|&&(s, _)| s == n) {
            return write!(f, "{sig}{}", &name[3..]);
        }
        let min = libc::SIGRTMIN();
        if (min..=libc::SIGRTMAX()).contains(&n) {
            return write!(f, "{sig}RTMIN+{}", n - min);
        }
        write!(f, "signal {n}")
    }
}

/// Whether `sig`'s disposition is the default one (no handler, not
/// ignored). Raw system call: no errno.
pub fn is_default(sig: i32) -> bool {
    // The kernel's struct sigaction: handler, flags, restorer, mask.
    let mut old = [0u64; 4];
    // SAFETY: rt_sigaction with no new action writes the old one, 32 bytes
    // for an 8-byte mask, into `old`.
    let r = unsafe {
        crate::os::raw::syscall6(
            libc::SYS_rt_sigaction,
            sig as usize,
            0,
            old.as_mut_ptr() as usize,
            8,
            0,
            0,
        )
    };
    r == 0 && old[0] == libc::SIG_DFL as u64
}

/// A signal to suggest for dumps when the program uses the one heapprof
/// had: the first of `SIGRTMIN+2` … `SIGRTMIN+8` (real-time signals, which
/// few programs use; glibc keeps the two below `SIGRTMIN` for itself)
/// whose disposition is the default one.
pub fn free_realtime() -> Option<i32> {
    let min = libc::SIGRTMIN();
    (2..=8)
        .map(|k| min + k)
        .find(|&s| s <= libc::SIGRTMAX() && is_default(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_kill_l_s() {
        assert_eq!(SignalName(libc::SIGUSR2).to_string(), "SIGUSR2");
        assert_eq!(SignalName(libc::SIGURG).to_string(), "SIGURG");
        let rt2 = libc::SIGRTMIN() + 2;
        assert_eq!(SignalName(rt2).to_string(), "SIGRTMIN+2");
        assert_eq!(SignalName(70).to_string(), "signal 70");
        assert_eq!(format!("{:#}", SignalName(rt2)), "RTMIN+2");
    }

    #[test]
    fn a_handled_signal_is_not_default() {
        assert!(is_default(libc::SIGRTMIN() + 5));
        extern "C" fn h(_: i32) {}
        // SAFETY: a handler for a real-time signal nothing else here uses.
        unsafe { libc::signal(libc::SIGRTMIN() + 6, h as *const () as usize) };
        assert!(!is_default(libc::SIGRTMIN() + 6));
    }
}
