//! Getting a profile out: gzip encoding and atomic, never-overwriting files.
//!
//! A file is written to a temporary name in its target directory and renamed
//! into place, so a reader (a collector polling the directory) never sees a
//! partial profile. Trigger-driven dumps are named `PREFIX.PID.SEQ.pb.gz`
//! with `SEQ` counting from 0 in each process; the rename refuses to replace
//! an existing file (`RENAME_NOREPLACE`), moving on to the next number, so no
//! earlier profile (say, of a previous process with the same pid) is lost.
//!
//! Temporary names are `.NAME.tmp.PID.N`, created only if nothing (file or
//! symbolic link) has the name, taking the next `N` otherwise, owner-only
//! unless `HEAPPROF_FILE_MODE` says otherwise: see [`crate::os::fds`] for
//! the rule every file heapprof creates follows.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use prost::Message;

use crate::os::fds;
use crate::profile::proto;

/// Gzipped protobuf bytes of a profile.
pub fn encode_gz(p: &proto::Profile) -> Vec<u8> {
    let raw = p.encode_to_vec();
    let mut gz = flate2::write::GzEncoder::new(
        Vec::with_capacity(raw.len() / 4 + 64),
        flate2::Compression::default(),
    );
    // Writing into a Vec cannot fail.
    let _ = gz.write_all(&raw);
    gz.finish().unwrap_or_default()
}

fn named_error(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(
        e.kind(),
        format!("heapprof: cannot write profile {}: {e}", path.display()),
    )
}

/// The mode files are created with (before the umask).
static MODE: AtomicU32 = AtomicU32::new(fds::FILE_MODE);

/// Sets the mode of the files written from now on (`HEAPPROF_FILE_MODE`).
pub fn set_file_mode(mode: u32) {
    MODE.store(mode & 0o777, Ordering::Relaxed);
}

/// The `N` of the next temporary name.
static TEMP_N: AtomicU64 = AtomicU64::new(0);

/// Names tried for one temporary file before giving up (every one taken
/// means someone is planting them).
const TEMP_TRIES: u32 = 64;

fn temp_path(path: &Path, n: u64) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp.{}.{n}", std::process::id()))
}

/// Writes `bytes` to a new temporary file beside `path`: never one whose
/// name exists (a file, or a link planted there), taking the next name.
fn write_temp(path: &Path, bytes: &[u8]) -> io::Result<PathBuf> {
    let mode = MODE.load(Ordering::Relaxed);
    for _ in 0..TEMP_TRIES {
        let tmp = temp_path(path, TEMP_N.fetch_add(1, Ordering::Relaxed));
        let mut f = match fds::create_new(&tmp, mode) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(named_error(path, e)),
        };
        if let Err(e) = f.write_all(bytes) {
            let _ = std::fs::remove_file(&tmp);
            return Err(named_error(path, e));
        }
        return Ok(tmp);
    }
    Err(named_error(
        path,
        io::Error::new(
            io::ErrorKind::AlreadyExists,
            "every temporary name tried exists",
        ),
    ))
}

/// Writes `bytes` to `path` atomically, replacing any file of that name (a
/// path the caller chose; a symbolic link there is replaced, not followed).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = write_temp(path, bytes)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        named_error(path, e)
    })
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// Restarts sequence numbers (in a forked child, which has its own pid).
pub fn reset_sequence() {
    SEQ.store(0, Ordering::Relaxed);
}

/// The next sequence number to try.
pub fn sequence() -> u64 {
    SEQ.load(Ordering::Relaxed)
}

/// Moves the next sequence number up to `seq` (the numbers a copy of the
/// process used: its own counter is gone with it). Never moves it back.
pub fn advance_sequence(seq: u64) {
    SEQ.fetch_max(seq, Ordering::Relaxed);
}

/// Writes `bytes` as the next `PREFIX.PID.SEQ.pb.gz`, never replacing a file;
/// returns the path written.
pub fn write_numbered(prefix: &Path, bytes: &[u8]) -> io::Result<PathBuf> {
    let pid = crate::os::pid();
    let name_for = |seq: u64| {
        let mut s = prefix.as_os_str().to_owned();
        s.push(format!(".{pid}.{seq}.pb.gz"));
        PathBuf::from(s)
    };
    let first = name_for(SEQ.load(Ordering::Relaxed));
    let tmp = write_temp(&first, bytes)?;
    loop {
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let path = name_for(seq);
        match fds::rename_noreplace(&tmp, &path) {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(named_error(&path, e));
            }
        }
    }
}

/// Writes `bytes` as the companion of the numbered profile `heap`
/// ([`companion_path`]), never replacing a file; returns the path written.
pub fn write_companion(heap: &Path, kind: &str, bytes: &[u8]) -> io::Result<PathBuf> {
    let path = companion_path(heap, kind);
    let tmp = write_temp(&path, bytes)?;
    fds::rename_noreplace(&tmp, &path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        named_error(&path, e)
    })?;
    Ok(path)
}

/// The companion of the numbered profile `heap` (`PREFIX.PID.SEQ.pb.gz`):
/// `PREFIX.KIND.PID.SEQ.pb.gz`, same sequence number. The kind goes before
/// the numbers so that the heap profiles' glob (`PREFIX.PID.*.pb.gz`)
/// never selects a companion: reports over a glob see one kind of profile.
pub fn companion_path(heap: &Path, kind: &str) -> PathBuf {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let name = heap.as_os_str().as_bytes();
    let stem = name.strip_suffix(b".pb.gz").unwrap_or(name);
    // `PREFIX` may hold dots itself: the numbers are the last two parts.
    let numbers_at = stem
        .iter()
        .rposition(|&b| b == b'.')
        .and_then(|seq| stem[..seq].iter().rposition(|&b| b == b'.'));
    let mut out = Vec::with_capacity(name.len() + kind.len() + 8);
    match numbers_at {
        Some(i) => {
            out.extend_from_slice(&stem[..i]);
            out.extend_from_slice(format!(".{kind}").as_bytes());
            out.extend_from_slice(&stem[i..]);
        }
        None => {
            out.extend_from_slice(stem);
            out.extend_from_slice(format!(".{kind}").as_bytes());
        }
    }
    out.extend_from_slice(b".pb.gz");
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_files_never_overwrite() {
        let dir = std::env::temp_dir().join(format!("heapprof-out-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let prefix = dir.join("p");
        let pid = std::process::id();
        // A file already holding the next number is skipped, not replaced.
        let seq = SEQ.load(Ordering::Relaxed);
        std::fs::write(dir.join(format!("p.{pid}.{seq}.pb.gz")), b"old").unwrap();
        let a = write_numbered(&prefix, b"a").unwrap();
        let b = write_numbered(&prefix, b"b").unwrap();
        assert_ne!(a, b);
        assert_eq!(
            std::fs::read(dir.join(format!("p.{pid}.{seq}.pb.gz"))).unwrap(),
            b"old"
        );
        assert_eq!(std::fs::read(&a).unwrap(), b"a");
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp."))
            .collect();
        assert!(leftovers.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn links_planted_at_temporary_names_are_never_followed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("heapprof-plant-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("target");
        std::fs::write(&target, b"precious").unwrap();
        let path = dir.join("x.pb.gz");
        let next = TEMP_N.load(Ordering::Relaxed);
        for n in next..next + 8 {
            std::os::unix::fs::symlink(&target, temp_path(&path, n)).unwrap();
        }
        write_atomic(&path, b"profile").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"precious");
        assert_eq!(std::fs::read(&path).unwrap(), b"profile");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn companions_are_named_outside_the_heap_glob() {
        let c = companion_path(Path::new("/tmp/my.app/heapprof.12.3.pb.gz"), "threads");
        assert_eq!(c, Path::new("/tmp/my.app/heapprof.threads.12.3.pb.gz"));
    }

    #[test]
    fn unwritable_path_names_the_path() {
        let e = write_atomic(Path::new("/nonexistent-dir/x.pb.gz"), b"x").unwrap_err();
        assert!(e.to_string().contains("/nonexistent-dir/x.pb.gz"), "{e}");
    }
}
