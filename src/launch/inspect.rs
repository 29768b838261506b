//! What `heapprof run` looks at before running anything: where the preload
//! library is, which file the command names, and whether the loader will
//! honour `LD_PRELOAD` for it.

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{is_path, LaunchError};

/// The preload library's file name.
pub const LIBRARY: &str = "libheapprof_preload.so";

/// The preload library: `$HEAPPROF_PRELOAD` if set, else next to this
/// executable (`bin/`), in `../lib` or `../lib/heapprof` (an install
/// prefix), or one directory up (a cargo test binary in `target/*/deps`).
pub fn find_library() -> Result<PathBuf, LaunchError> {
    if let Some(p) = std::env::var_os("HEAPPROF_PRELOAD").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(absolute(&p))
        } else {
            Err(LaunchError {
                message: format!(
                    "HEAPPROF_PRELOAD={} is not a file: point it at {LIBRARY}",
                    p.display()
                ),
                status: 2,
            })
        };
    }
    let exe = std::fs::read_link("/proc/self/exe").or_else(|_| std::env::current_exe());
    let dir = exe
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    let candidates = [
        dir.join(LIBRARY),
        dir.join("../lib").join(LIBRARY),
        dir.join("../lib/heapprof").join(LIBRARY),
        dir.join("..").join(LIBRARY),
    ];
    candidates
        .iter()
        .find(|c| c.is_file())
        .map(|c| absolute(c))
        .ok_or_else(|| LaunchError {
            message: format!(
                "cannot find {LIBRARY} next to heapprof (looked in {}, ../lib, ../lib/heapprof and ..): build it with `cargo build --release -p heapprof-preload`, or set HEAPPROF_PRELOAD to its path",
                dir.display()
            ),
            status: 2,
        })
}

/// `p` without `..` and relative parts, as the loader must see it from any
/// working directory.
fn absolute(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// The file the command runs: a name with a `/` as it is, else the first
/// executable file of that name in `PATH` (as `execvp` looks).
pub fn resolve(command: &OsStr) -> Result<PathBuf, LaunchError> {
    let name = command.to_string_lossy();
    let not_found = || LaunchError {
        message: format!("{name}: command not found"),
        status: 127,
    };
    if is_path(command) {
        let p = PathBuf::from(command);
        return if p.exists() { Ok(p) } else { Err(not_found()) };
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    for dir in std::env::split_paths(&path) {
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        let p = dir.join(command);
        let executable =
            std::fs::metadata(&p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
        if executable {
            return Ok(p);
        }
    }
    Err(not_found())
}

/// Why the loader will not load the library into `program`, if it will
/// not: statically linked (no `PT_INTERP`), or secure execution (setuid or
/// setgid to someone else, or file capabilities). A script is judged by
/// its interpreter.
pub fn blind_spot(program: &Path) -> Option<String> {
    let meta = std::fs::metadata(program).ok()?;
    // SAFETY: geteuid/getegid have no preconditions.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if meta.mode() & 0o4000 != 0 && meta.uid() != euid {
        return Some("is setuid".into());
    }
    if meta.mode() & 0o2000 != 0 && meta.gid() != egid {
        return Some("is setgid".into());
    }
    if has_capabilities(program) {
        return Some("has file capabilities (secure execution)".into());
    }
    let mut head = [0u8; 4096];
    let n = std::fs::File::open(program)
        .and_then(|mut f| f.read(&mut head))
        .ok()?;
    let head = &head[..n];
    if let Some(line) = head.strip_prefix(b"#!") {
        let line = line.split(|&b| b == b'\n').next().unwrap_or(line);
        let interp = line
            .split(|b| b.is_ascii_whitespace())
            .find(|w| !w.is_empty())?;
        let interp = Path::new(OsStr::from_bytes(interp));
        return blind_spot(interp).map(|why| format!("runs {} which {why}", interp.display()));
    }
    match elf_has_interp(head, program) {
        Some(false) => Some("is statically linked".into()),
        _ => None,
    }
}

fn has_capabilities(program: &Path) -> bool {
    let Ok(path) = std::ffi::CString::new(program.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a NUL-terminated path and name; a null buffer of size 0 asks
    // only for the attribute's size.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            c"security.capability".as_ptr(),
            core::ptr::null_mut(),
            0,
        )
    };
    n > 0
}

/// Whether a 64-bit ELF file has a `PT_INTERP` program header (None: not
/// an ELF file we can read).
fn elf_has_interp(head: &[u8], program: &Path) -> Option<bool> {
    if head.len() < 64 || &head[..4] != b"\x7fELF" || head[4] != 2 || head[5] != 1 {
        return None;
    }
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let phoff = u64::from_le_bytes(head[32..40].try_into().ok()?) as usize;
    let phentsize = usize::from(u16_at(head, 54));
    let phnum = usize::from(u16_at(head, 56));
    if phentsize < 56 {
        return None;
    }
    let bytes;
    let table = if phoff + phentsize * phnum <= head.len() {
        &head[phoff..phoff + phentsize * phnum]
    } else {
        bytes = std::fs::read(program).ok()?;
        bytes.get(phoff..phoff + phentsize * phnum)?
    };
    const PT_INTERP: u32 = 3;
    Some(
        table
            .chunks_exact(phentsize)
            .any(|ph| u32::from_le_bytes([ph[0], ph[1], ph[2], ph[3]]) == PT_INTERP),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_program_is_seen_a_script_by_its_interpreter() {
        assert_eq!(blind_spot(Path::new("/bin/sh")), None);
        let d = std::env::temp_dir().join(format!("heapprof-inspect-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let script = d.join("s");
        std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
        assert_eq!(blind_spot(&script), None);
        // An ELF header with no program headers at all: static.
        let mut elf = vec![0u8; 64];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        elf[54] = 56;
        let stat = d.join("static");
        std::fs::write(&stat, &elf).unwrap();
        assert_eq!(blind_spot(&stat).as_deref(), Some("is statically linked"));
        std::fs::write(&script, format!("#!{}\n", stat.display())).unwrap();
        assert!(blind_spot(&script).unwrap().contains("statically linked"));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn commands_resolve_through_path() {
        assert!(resolve(OsStr::new("sh")).unwrap().ends_with("sh"));
        let e = resolve(OsStr::new("no-such-command-heapprof")).unwrap_err();
        assert_eq!(e.status, 127);
        assert!(e.message.contains("command not found"));
    }
}
