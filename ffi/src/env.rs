//! The process around the library, looked at once from the constructor:
//! its environment (recording the profiled pid, see [`crate::lineage`]),
//! and saying (once, on stderr) when profiling cannot
//! see what the user expects.

use core::ffi::{c_char, c_void, CStr};
use core::sync::atomic::Ordering;
use std::ffi::CString;

use heapprof::ffi_surface::control::config;
use heapprof::ffi_surface::control::triggers::say;

use crate::real;

extern "C" {
    /// The process environment (glibc's `__environ`, or the executable's
    /// copy of it: the same variable either way).
    static mut environ: *mut *mut c_char;
}

/// Sets `NAME=value` in the process environment, in the `environ` array
/// itself (not through `setenv`: a program may define its own — bash does, over its variable table, which is not built yet when this runs — and a program that reads the array `main` received, bash again, must see the change too): an existing entry is
/// replaced in place; a new one goes into a copy of the array one entry
/// longer, which becomes `environ` (glibc's `main` caller reads `environ`
/// after the constructors, so `main`'s `envp` is the new array too). The
/// new strings and array are never freed, as glibc never frees what it did
/// not allocate.
pub fn set_var(name: &str, value: &str) {
    let Ok(line) = CString::new(format!("{name}={value}")) else {
        return;
    };
    let prefix = format!("{name}=");
    // SAFETY: the constructor runs before main and (normally) before any
    // other thread, so nothing else reads or writes the environment; entries are replaced by, and the array by,
    // leaked allocations that live forever.
    unsafe {
        let env = environ;
        let mut n = 0;
        if !env.is_null() {
            while !(*env.add(n)).is_null() {
                if CStr::from_ptr(*env.add(n))
                    .to_bytes()
                    .starts_with(prefix.as_bytes())
                {
                    *env.add(n) = line.into_raw();
                    return;
                }
                n += 1;
            }
        }
        let mut grown: Vec<*mut c_char> = Vec::with_capacity(n + 2);
        for i in 0..n {
            grown.push(*env.add(i));
        }
        grown.push(line.into_raw());
        grown.push(core::ptr::null_mut());
        environ = grown.leak().as_mut_ptr();
    }
}

/// One line on stderr for each situation in which the profile will miss
/// what the user is after.
pub fn warn_if_blind() {
    foreign_malloc();
    pymalloc();
}

/// Whether the program's calls reach the hooks. The test is behavioural: a
/// libc function that allocates (`strdup`) must come through our `malloc`
/// (which counts calls until the library is ready). Comparing symbol
/// addresses is not enough: a non-PIE executable that takes `malloc`'s
/// address (CPython does) has a canonical PLT entry that `dlsym` returns,
/// yet its calls still land here.
fn foreign_malloc() {
    let before = crate::hooks::EARLY_MALLOCS.load(Ordering::Relaxed);
    // black_box: the compiler knows strdup and would drop an unused copy.
    // SAFETY: strdup of a literal.
    let copy = core::hint::black_box(unsafe { libc::strdup(c"heapprof".as_ptr()) });
    let reached_us = crate::hooks::EARLY_MALLOCS.load(Ordering::Relaxed) != before;
    // Give the copy back to whichever allocator made it: `free` as the global
    // scope binds it (calls from this library bind to our own hook, which
    // must not see another allocator's memory).
    // SAFETY: a NUL-terminated name; a non-null result is a C `free`, and
    // `copy` came from the matching malloc (or is null).
    unsafe {
        let f = libc::dlsym(libc::RTLD_DEFAULT, c"free".as_ptr());
        if !f.is_null() {
            core::mem::transmute::<*mut c_void, unsafe extern "C" fn(*mut c_void)>(f)(copy.cast());
        }
    }
    if reached_us {
        return;
    }
    // Whoever took the call: the first malloc in the global scope.
    // SAFETY: a NUL-terminated name; RTLD_DEFAULT searches the global scope
    // the way the program's own calls are bound.
    let m = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"malloc".as_ptr()) };
    let theirs = real::object_of(m as usize);
    // SAFETY: getauxval only reads the auxiliary vector.
    let phdr = unsafe { libc::getauxval(libc::AT_PHDR) } as usize;
    if theirs == real::object_of(phdr) {
        say("heapprof: this program has its own malloc, which LD_PRELOAD cannot replace: its allocations are not profiled");
        return;
    }
    // SAFETY: all-zero Dl_info is valid; dladdr fills it, and dli_fname
    // points at the loader's name for the object, which stays loaded.
    let name = unsafe {
        let mut info: libc::Dl_info = core::mem::zeroed();
        if libc::dladdr(m, &mut info) != 0 && !info.dli_fname.is_null() {
            CStr::from_ptr(info.dli_fname)
                .to_string_lossy()
                .into_owned()
        } else {
            String::from("another library")
        }
    };
    say(&format!(
        "heapprof: malloc comes from {name}, loaded before heapprof, so allocations are not profiled: list libheapprof_preload.so first in LD_PRELOAD"
    ));
}

/// CPython serves most objects from its own pools (pymalloc), which take
/// memory from malloc in 256 KiB arenas: the profile would show arenas, not
/// objects, unless Python is told to use malloc.
fn pymalloc() {
    let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
        return;
    };
    let is_python = exe
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("python"));
    if !is_python {
        return;
    }
    match config::getenv("PYTHONMALLOC").map(str::trim) {
        Some("malloc") | Some("malloc_debug") => {}
        _ => say("heapprof: Python allocates most objects from its own pools (pymalloc), which heapprof cannot see: run with PYTHONMALLOC=malloc to profile them"),
    }
}
