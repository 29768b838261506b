//! Dump-time symbolization: return addresses to functions, files and lines,
//! with inlined frames, cached across dumps.
//!
//! Runs only while writing a profile or a leak report, never on an allocation
//! path. Uses the `backtrace` crate's resolver (gimli over the objects' DWARF,
//! falling back to their symbol tables), which demangles Rust and C++ names.
//!
//! Allocator frames are trimmed: a stack starts where the program called into
//! the allocator, as Go drops its `runtime.malloc` frames. A leading frame is
//! trimmed while it belongs to heapprof, to the Rust allocation plumbing
//! (`__rust_alloc`, `alloc::raw_vec`, `<alloc::vec::Vec<T>>::push`, …) or to the
//! C allocation entry points (`malloc`, `operator new`, …), so the leaf a user
//! sees is their own code or the library that asked for memory.

use hashbrown::HashMap;
use std::sync::Arc;

/// One (possibly inlined) source frame.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Frame {
    /// Demangled name without Rust's hash suffix; `??` if unknown.
    pub name: String,
    /// The mangled symbol name (same as `name` for C).
    pub system_name: String,
    /// Source file, or empty.
    pub file: String,
    /// Source line, or 0.
    pub line: u32,
}

/// Frames for one return address, innermost (inlined callee) first.
pub type Frames = Arc<[Frame]>;

/// A cache of resolved addresses.
#[derive(Default)]
pub struct Symbolizer {
    cache: HashMap<u64, Frames>,
}

impl Symbolizer {
    /// The frames at return address `ret` (looked up at `ret - 1`, inside
    /// the call instruction).
    pub fn frames(&mut self, ret: u64) -> Frames {
        self.cache
            .entry(ret)
            .or_insert_with(|| resolve(ret))
            .clone()
    }
}

fn resolve(ret: u64) -> Frames {
    let mut out = Vec::new();
    let pc = ret.saturating_sub(1);
    backtrace::resolve(pc as usize as *mut core::ffi::c_void, |sym| {
        let (name, system_name) = match sym.name() {
            Some(n) => (
                format!("{n:#}"),
                String::from_utf8_lossy(n.as_bytes()).into_owned(),
            ),
            None => (String::from("??"), String::new()),
        };
        let file = sym
            .filename()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        out.push(Frame {
            name,
            system_name,
            file,
            line: sym.lineno().unwrap_or(0),
        });
    });
    out.into()
}

/// Where a stack starts once allocator frames are trimmed: the index of the
/// first address kept, and how many of that address's (inlined) frames to
/// drop from the inner end. `resolved` holds each address's frames, leaf
/// address first. A stack of nothing but plumbing is kept whole.
pub fn trim_point(resolved: &[Frames]) -> (usize, usize) {
    let first = resolved
        .iter()
        .position(|f| f.is_empty() || !f.iter().all(is_allocator_frame))
        .unwrap_or(0);
    let skip = resolved.get(first).map_or(0, |lines| {
        lines
            .iter()
            .take_while(|f| is_allocator_frame(f))
            .count()
            .min(lines.len().saturating_sub(1))
    });
    (first, skip)
}

/// The source frames of a captured stack, leaf first, allocator frames
/// trimmed.
pub fn trimmed_frames(sym: &mut Symbolizer, stack: &[u64]) -> Vec<Frame> {
    let resolved: Vec<Frames> = stack.iter().map(|&ip| sym.frames(ip)).collect();
    let (first, skip) = trim_point(&resolved);
    let mut out = Vec::new();
    for (i, lines) in resolved[first..].iter().enumerate() {
        let from = if i == 0 { skip } else { 0 };
        out.extend(lines[from..].iter().cloned());
    }
    out
}

/// Whether a leading frame is allocator plumbing to trim from the leaf end:
/// by its name, or — because binaries built with `line-tables-only` debug
/// info name inlined frames without their module path — by its source file.
pub fn is_allocator_frame(f: &Frame) -> bool {
    is_allocator_name(&f.name) || is_allocator_file(&f.file)
}

/// Source files of allocation plumbing: Rust's `alloc` and `core` libraries,
/// `std`'s allocator module, heapprof's own sources and its unwinder.
fn is_allocator_file(file: &str) -> bool {
    const OWN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/");
    const OWN_PRELOAD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/ffi/src/");
    const STD: &[&str] = &[
        "library/alloc/src/",
        "library/core/src/",
        "library/std/src/alloc.rs",
    ];
    // Standard library paths are `/rustc/HASH/library/...`, or relative
    // `library/...` when the toolchain's debug info was remapped.
    let in_std = |p: &str| {
        file.starts_with(p) || file.match_indices(p).any(|(i, _)| file[..i].ends_with('/'))
    };
    !file.is_empty()
        && (file.starts_with(OWN)
            || file.starts_with(OWN_PRELOAD)
            || STD.iter().any(|p| in_std(p))
            || file.contains("/backtrace-0."))
}

fn is_allocator_name(name: &str) -> bool {
    const EXACT: &[&str] = &[
        "malloc",
        "calloc",
        "realloc",
        "reallocarray",
        "free",
        "posix_memalign",
        "aligned_alloc",
        "memalign",
        "valloc",
        "pvalloc",
        "__rust_alloc",
        "__rust_alloc_zeroed",
        "__rust_realloc",
        "__rust_dealloc",
    ];
    const PREFIXES: &[&str] = &[
        "heapprof::",
        "<heapprof::",
        "heapprof_preload::",
        "backtrace::",
        "__rg_",
        "__rdl_",
        "__rustc::",
        "alloc::",
        "<alloc::",
        "std::alloc::",
        "<std::alloc::",
        "core::",
        "<core::",
        "hashbrown::raw::alloc",
        "operator new",
        "_Unwind_",
        "uw_",
    ];
    EXACT.contains(&name)
        || PREFIXES.iter().any(|p| name.starts_with(p))
        // Impls of the alloc crate's own (specialisation) traits for any type,
        // e.g. `<u8 as alloc::vec::spec_from_elem::SpecFromElem>::from_elem`.
        || (name.starts_with('<') && name.contains(" as alloc::"))
}

static SYMBOLIZER: std::sync::Mutex<Option<Symbolizer>> = std::sync::Mutex::new(None);

/// Runs `f` with the process-wide cache (never held together with the
/// aggregator lock).
pub fn with<R>(f: impl FnOnce(&mut Symbolizer) -> R) -> R {
    let mut g = lock();
    f(g.get_or_insert_with(Symbolizer::default))
}

/// The cache's lock (poisoning ignored: a cache is always consistent).
pub fn lock() -> std::sync::MutexGuard<'static, Option<Symbolizer>> {
    SYMBOLIZER.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_a_known_function_with_file_and_line() {
        let mut ips = [0u64; 16];
        let n = crate::stack::capture(&mut ips, 0);
        let mut sym = Symbolizer::default();
        let frames: Vec<Frame> = ips[..n]
            .iter()
            .flat_map(|&ip| sym.frames(ip).to_vec())
            .collect();
        assert!(
            frames
                .iter()
                .any(|f| f.name.contains("resolves_a_known_function")
                    && f.file.ends_with("symbolize.rs")
                    && f.line > 0),
            "{frames:?}"
        );
    }

    fn frame(name: &str, file: &str) -> Frame {
        Frame {
            name: name.into(),
            system_name: String::new(),
            file: file.into(),
            line: 1,
        }
    }

    #[test]
    fn allocator_frames_by_name() {
        let yes = |n| is_allocator_frame(&frame(n, ""));
        assert!(yes("alloc::raw_vec::finish_grow"));
        assert!(yes("__rust_alloc"));
        assert!(yes("malloc"));
        assert!(yes(
            "<u8 as alloc::vec::spec_from_elem::SpecFromElem>::from_elem"
        ));
        assert!(!yes("<app::Foo as core::clone::Clone>::clone"));
        assert!(!yes("myapp::cache::insert"));
        assert!(!yes("mallocx_user"));
    }

    #[test]
    fn allocator_frames_by_file_when_names_are_short() {
        let rustc = "/rustc/59807616e1fa/library/alloc/src/raw_vec/mod.rs";
        assert!(is_allocator_frame(&frame("with_capacity_in<u8>", rustc)));
        let own = concat!(env!("CARGO_MANIFEST_DIR"), "/src/engine.rs");
        assert!(is_allocator_frame(&frame("record_alloc", own)));
        assert!(!is_allocator_frame(&frame(
            "leak_steadily",
            "/app/src/main.rs"
        )));
        let relative = "library/alloc/src/vec/mod.rs";
        assert!(is_allocator_frame(&frame("push", relative)));
        assert!(!is_allocator_frame(&frame(
            "f",
            "/app/mylibrary/alloc/src/x.rs"
        )));
        let std_map = "/rustc/x/library/std/src/collections/hash/map.rs";
        assert!(!is_allocator_frame(&frame("insert<K, V>", std_map)));
    }
}
