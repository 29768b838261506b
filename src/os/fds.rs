//! Descriptors and files heapprof makes: the one rule, and how it is kept.
//!
//! # The rule
//! The program must not be able to tell, from its descriptor table or from
//! the files around it, that heapprof is there:
//! - **Never inherited.** Every descriptor heapprof or a library it calls
//!   opens is close-on-exec from its creation (`O_CLOEXEC`, `SOCK_CLOEXEC`,
//!   `F_DUPFD_CLOEXEC`), so no program the process runs (a setuid or static
//!   one, one started without the library) receives one. The only one that
//!   outlives an `exec` is the preload library's children-note socket, and
//!   only the profiled process's own `exec` (its next image adopts it; the
//!   library's `lineage` module).
//! - **Never in the program's range.** Programs take the lowest free
//!   numbers and some depend on which they get (a daemon that closes 0-2
//!   and expects `open("/dev/null")` to return 0; a test that a new pipe is
//!   3 and 4; `fstat(0)` failing when stdin is closed). A descriptor that
//!   lives beyond one call is moved at once to a high number, at least
//!   [`floor`] (just under the soft `RLIMIT_NOFILE`, capped so the kernel's
//!   descriptor table stays small), with `F_DUPFD_CLOEXEC`, and the low one
//!   closed ([`move_high`], [`pipe`], [`high`]). One that lives for a single
//!   call on heapprof's own thread (a `/proc` read: [`read_to_string`], a
//!   profile being written: [`create_new`]) is moved the same way. The
//!   kernel has no call that creates a descriptor at a chosen number, so
//!   each still holds a low number for the two system calls between its
//!   creation and the move; a program thread that freed that number and
//!   fills it again (`close(1)` then `dup2(f, 1)`) would have the move
//!   close its file. So heapprof's threads (the watcher; the dumper and its
//!   HTTP threads, unless glibc counts the dumper) work in a descriptor
//!   table of their own ([`crate::os::own_table`]): nothing they open is
//!   ever in the program's. What is still made in the program's table
//!   after start-up (on a program thread that asked: an exit dump, a dump
//!   from code; everything, where the kernel refuses a private table or
//!   glibc counts the dumper) holds a low number for those two system
//!   calls: a program thread that frees and refills that very number just
//!   then loses its file. That gap is known and not closed.
//! - **Never used after the program may have reused the number.** A program
//!   may close every descriptor (`close_range(3, ~0)`, a daemon's loop) and
//!   get the same numbers for files of its own. A long-lived descriptor is
//!   kept as a [`Held`]: its number with the device and inode it had, checked
//!   (one `fstat`, off the hot path) before heapprof reads or writes it, and
//!   made again when it is gone (the HTTP server, whose sockets std owns,
//!   compares [`id`]s the same way and stops serving). A program that closes
//!   heapprof's descriptor and reuses that high number between the check
//!   and the use is the only gap.
//!
//! libunwind's memory-validation pipe, which the library opens on its own,
//! is closed and its use removed at load (`engine::stack`).
//!
//! Files heapprof creates (profiles, their temporary names) are made with
//! [`create_new`]: `O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC`, so a name that
//! exists, or is a symbolic link, is never opened (the caller takes the
//! next name), owner-only (`0600`, or `HEAPPROF_FILE_MODE`) before the
//! umask. They are moved into place with [`rename_noreplace`], which never
//! replaces anything. Directories heapprof creates are made with
//! [`create_private_dir`]: `0700`, and a name that exists as a symbolic
//! link is refused.
//!
//! The descriptor helpers are raw system calls, errno untouched (the
//! watcher thread remakes descriptors too, see [`crate::os::raw`]).

use core::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::fs::File;
use std::io;
use std::os::fd::FromRawFd;
use std::path::Path;

use super::raw;

/// Highest descriptor table heapprof makes the kernel keep: high
/// descriptors sit under this (or the soft limit, if lower).
const TABLE_CAP: u64 = 4096;
/// Numbers left for heapprof's own descriptors between [`floor`] and the
/// top of the table.
const ROOM: u64 = 64;

/// The lowest number heapprof's descriptors move to: `ROOM` under the soft
/// `RLIMIT_NOFILE` (at most 4096), or half the limit if that is
/// tiny, never under 3.
pub fn floor() -> i32 {
    let mut lim = [0u64; 2];
    // SAFETY: prlimit64 on this process (pid 0), reading into a local pair
    // of u64s (struct rlimit64).
    let r = unsafe {
        raw::syscall6(
            libc::SYS_prlimit64,
            0,
            libc::RLIMIT_NOFILE as usize,
            0,
            lim.as_mut_ptr() as usize,
            0,
            0,
        )
    };
    let soft = if r == 0 { lim[0] } else { 1024 };
    let top = soft.min(TABLE_CAP);
    let f = if top >= 2 * ROOM { top - ROOM } else { top / 2 };
    f.max(3) as i32
}

/// The highest number of heapprof's range: a fixed place for the one
/// descriptor of heapprof's private tables that is found by number
/// ([`crate::os::own_table`]).
pub fn top() -> i32 {
    floor() + ROOM as i32 - 1
}

/// Moves `fd` to a number at least [`floor`], close-on-exec, and closes
/// `fd`; returns the new number, or `fd` itself if no high number is free
/// (it stays usable, and is still close-on-exec if it was).
pub fn move_high(fd: i32) -> i32 {
    if fd < 0 {
        return fd;
    }
    let min = floor();
    if fd >= min {
        return fd;
    }
    let high = raw::dup_cloexec_at_least(fd, min);
    if high < 0 {
        return fd;
    }
    raw::close(fd);
    high
}

/// An owned descriptor (a socket, a file) moved high, as [`move_high`].
pub fn high<T: std::os::fd::IntoRawFd + FromRawFd>(owned: T) -> T {
    // SAFETY: ownership passes from `owned` to the number returned, which
    // is the same descriptor or a duplicate of it made after it closed.
    unsafe { T::from_raw_fd(move_high(owned.into_raw_fd())) }
}

/// `pipe2(O_CLOEXEC | flags)`, both ends moved high: `[read, write]`, or
/// `-errno`.
pub fn pipe(flags: i32) -> Result<[i32; 2], isize> {
    let [r, w] = raw::pipe2(libc::O_CLOEXEC | flags)?;
    Ok([move_high(r), move_high(w)])
}

/// `open(path, flags | O_CLOEXEC)`, moved high: the descriptor or `-errno`.
pub fn open(path: &core::ffi::CStr, flags: i32) -> i32 {
    let fd = raw::open(path, flags | libc::O_CLOEXEC);
    if fd < 0 {
        return fd as i32;
    }
    move_high(fd as i32)
}

/// Which file a descriptor refers to: device and inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Id {
    dev: u64,
    ino: u64,
}

/// The file `fd` refers to, if it is open.
pub fn id(fd: i32) -> Option<Id> {
    if fd < 0 {
        return None;
    }
    raw::fstat(fd).map(|st| Id {
        dev: st.st_dev,
        ino: st.st_ino,
    })
}

/// A long-lived descriptor of heapprof's: its number and the file it had
/// when made, so that a number the program closed and reused is never taken
/// for it. Lock-free; `-1` when there is none.
pub struct Held {
    fd: AtomicI32,
    dev: AtomicU64,
    ino: AtomicU64,
    /// Which process made it: a forked child inherits the number, not the
    /// role (the caller decides what that means).
    owner: AtomicU32,
    /// Listed in [`HELD`] (on its first [`Held::set`]).
    listed: AtomicBool,
}

/// Every [`Held`] that has held a descriptor: heapprof's long-lived
/// descriptors, which its threads keep when they take a descriptor table of
/// their own ([`crate::os::own_table`]).
static HELD: [AtomicPtr<Held>; 16] = [const { AtomicPtr::new(core::ptr::null_mut()) }; 16];

/// The numbers of heapprof's long-lived descriptors that still refer to
/// the files they were made for, into `out`: how many.
pub fn held_now(out: &mut [i32]) -> usize {
    let mut n = 0;
    for slot in &HELD {
        let p = slot.load(Ordering::Acquire);
        if p.is_null() || n == out.len() {
            continue;
        }
        // SAFETY: only `&'static Held`s are listed (`Held::set`).
        if let Some(fd) = unsafe { &*p }.get() {
            out[n] = fd;
            n += 1;
        }
    }
    n
}

impl Held {
    /// None held.
    pub const fn new() -> Held {
        Held {
            fd: AtomicI32::new(-1),
            dev: AtomicU64::new(0),
            ino: AtomicU64::new(0),
            owner: AtomicU32::new(0),
            listed: AtomicBool::new(false),
        }
    }

    /// Holds `fd` (made by this process); returns the one held before
    /// (`-1`: none), which the caller closes if it is still ours.
    pub fn set(&'static self, fd: i32) -> i32 {
        if !self.listed.swap(true, Ordering::AcqRel) {
            let me = self as *const Held as *mut Held;
            // A full list (more Helds than slots: a bug) only costs the
            // descriptor its place in heapprof's own tables.
            let _ = HELD.iter().any(|s| {
                s.compare_exchange(
                    core::ptr::null_mut(),
                    me,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
            });
        }
        let id = id(fd);
        self.dev.store(id.map_or(0, |i| i.dev), Ordering::Relaxed);
        self.ino.store(id.map_or(0, |i| i.ino), Ordering::Relaxed);
        self.owner.store(raw::getpid() as u32, Ordering::Relaxed);
        self.fd.swap(fd, Ordering::AcqRel)
    }

    /// The number held, unchecked (`-1`: none): for `poll`, which reports a
    /// closed number itself.
    pub fn raw(&self) -> i32 {
        self.fd.load(Ordering::Acquire)
    }

    /// The number held if it still refers to the file it was made for.
    pub fn get(&self) -> Option<i32> {
        let fd = self.raw();
        let want = Id {
            dev: self.dev.load(Ordering::Relaxed),
            ino: self.ino.load(Ordering::Relaxed),
        };
        (want.ino != 0 && id(fd) == Some(want)).then_some(fd)
    }

    /// Whether this process made the descriptor held (not a parent it was
    /// forked from).
    pub fn made_here(&self) -> bool {
        self.owner.load(Ordering::Relaxed) == raw::getpid() as u32
    }

    /// Lets go of the descriptor: closes it if it is still ours, and holds
    /// none.
    pub fn close(&self) {
        let ours = self.get();
        let fd = self.fd.swap(-1, Ordering::AcqRel);
        if ours == Some(fd) {
            raw::close(fd);
        }
    }

    /// Stops holding the descriptor without closing it; returns it (`-1`:
    /// none, or not ours any more).
    pub fn take(&self) -> i32 {
        let ours = self.get();
        let fd = self.fd.swap(-1, Ordering::AcqRel);
        if ours == Some(fd) {
            fd
        } else {
            -1
        }
    }
}

impl Default for Held {
    fn default() -> Self {
        Self::new()
    }
}

/// The whole of a (`/proc`) file, read through a descriptor moved high at
/// once (see the module doc): for reads in the program's own process.
pub fn read_to_string(path: impl AsRef<Path>) -> io::Result<String> {
    use std::io::Read;
    let c = c_path(path.as_ref())?;
    let fd = open(&c, libc::O_RDONLY);
    if fd < 0 {
        return Err(io::Error::from_raw_os_error(-fd));
    }
    // SAFETY: a descriptor just opened, owned by nothing else.
    let mut f = unsafe { File::from_raw_fd(fd) };
    let mut s = String::new();
    f.read_to_string(&mut s)?;
    Ok(s)
}

/// The default mode of files heapprof creates: owner read and write.
pub const FILE_MODE: u32 = 0o600;
/// The mode of directories heapprof creates.
pub const DIR_MODE: u32 = 0o700;

fn c_path(path: &Path) -> io::Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

fn result(r: isize) -> io::Result<isize> {
    if r < 0 {
        Err(io::Error::from_raw_os_error(-r as i32))
    } else {
        Ok(r)
    }
}

/// Creates `path` for writing, never opening anything that exists: fails
/// with `AlreadyExists` if the name is taken (by a file or a symbolic
/// link, dangling or not). Close-on-exec, moved high, `mode` before the
/// umask.
pub fn create_new(path: &Path, mode: u32) -> io::Result<File> {
    let c = c_path(path)?;
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: a NUL-terminated path; openat with a mode for O_CREAT.
    let fd = result(unsafe {
        raw::syscall6(
            libc::SYS_openat,
            libc::AT_FDCWD as usize,
            c.as_ptr() as usize,
            flags as usize,
            mode as usize,
            0,
            0,
        )
    })?;
    // SAFETY: a descriptor just opened, owned by nothing else.
    Ok(unsafe { File::from_raw_fd(move_high(fd as i32)) })
}

/// Renames `from` to `to` unless `to` exists (a file, a directory or a
/// symbolic link): `renameat2(RENAME_NOREPLACE)`, or, where the kernel or
/// file system lacks it, `link` then `unlink`, which also refuses to
/// replace.
pub fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let (f, t) = (c_path(from)?, c_path(to)?);
    let at = |nr, flags: i32| {
        // SAFETY: `nr` is renameat2 or linkat, both (olddirfd, oldpath,
        // newdirfd, newpath, flags); NUL-terminated paths relative to the
        // working directory.
        result(unsafe {
            raw::syscall6(
                nr,
                libc::AT_FDCWD as usize,
                f.as_ptr() as usize,
                libc::AT_FDCWD as usize,
                t.as_ptr() as usize,
                flags as usize,
                0,
            )
        })
    };
    match at(libc::SYS_renameat2, libc::RENAME_NOREPLACE as i32) {
        Ok(_) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS)) => {
            // link(2) never follows `from` (a regular file of ours: no
            // AT_SYMLINK_FOLLOW) and fails with EEXIST if `to` exists in any
            // form.
            at(libc::SYS_linkat, 0)?;
            std::fs::remove_file(from)
        }
        Err(e) => Err(e),
    }
}

/// Creates `dir` and any missing parents, each new one owner-only
/// ([`DIR_MODE`] before the umask). An existing directory is accepted as
/// it is; a name that is a symbolic link (to a directory or not) is
/// refused, so heapprof never writes through a link planted where it
/// creates directories.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if let Ok(m) = std::fs::symlink_metadata(dir) {
        return if m.file_type().is_symlink() {
            Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "is a symbolic link, not a directory",
            ))
        } else if m.is_dir() {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "exists and is not a directory",
            ))
        };
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        if std::fs::symlink_metadata(parent).is_err() {
            create_private_dir(parent)?;
        }
    }
    match std::fs::DirBuilder::new().mode(DIR_MODE).create(dir) {
        // Made by someone else in between: check it as an existing one.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => create_private_dir(dir),
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("heapprof-fds-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn pipes_are_high_and_close_on_exec() {
        let [r, w] = pipe(0).unwrap();
        assert!(r >= floor() && w >= floor(), "{r} {w} {}", floor());
        for fd in [r, w] {
            // SAFETY: F_GETFD on a descriptor this test owns.
            let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
            assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
        }
        static HELD_HERE: Held = Held::new();
        let held = &HELD_HERE;
        assert_eq!(held.set(r), -1);
        assert_eq!(held.get(), Some(r));
        raw::close(r);
        // The number reused for another file is not taken for ours.
        let other = File::open("/dev/null").unwrap();
        // SAFETY: dup2 onto the number just closed.
        unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&other), r) };
        assert_eq!(held.get(), None);
        held.close();
        assert!(id(r).is_some(), "a reused number is left alone");
        raw::close(r);
        raw::close(w);
    }

    #[test]
    fn files_are_never_opened_through_names_that_exist() {
        let d = scratch("files");
        create_private_dir(&d.join("a/b")).unwrap();
        let mode = std::fs::metadata(d.join("a/b"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{mode:o}");
        let target = d.join("target");
        std::fs::write(&target, b"keep").unwrap();
        let link = d.join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = create_new(&link, FILE_MODE).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(
            create_new(&target, FILE_MODE).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        let new = d.join("new");
        drop(create_new(&new, FILE_MODE).unwrap());
        let mode = std::fs::metadata(&new).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            rename_noreplace(&new, &link).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        rename_noreplace(&new, &d.join("moved")).unwrap();
        let e = create_private_dir(&link).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
