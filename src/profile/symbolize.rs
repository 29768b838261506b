//! Dump-time symbolization: return addresses to functions, files and lines,
//! with inlined frames.
//!
//! Runs only while writing a profile or a leak report, never on an allocation
//! path, and also in the CLI for raw profiles (`heapprof symbolize`, reports).
//!
//! # Cost model
//! An address is looked up in the file it was mapped from: its file offset
//! (from the mapping) goes to `blazesym`, which reads that file's ELF symbol
//! tables and, where asked, its DWARF (also from a debug file found by build
//! ID or debug link under `/usr/lib/debug`). DWARF is what costs time and
//! memory — libc's full debug info (`libc6-dbg`) and an interpreter's
//! library each decompress to megabytes — so in-process the
//! [`Policy::InProcess`] reads DWARF only for the program's own objects
//! (anything outside the system library directories: the executable, a Rust
//! program's statically linked `std`, the program's own shared libraries),
//! and symbol tables only (names of functions with symbols, no lines) for
//! system libraries and for an interpreter's library (`libpython`,
//! `libruby`, …, wherever installed): under the preload library a Python
//! program's own code is its Python, the `python3` executable is the
//! program's binary (DWARF), and `libpython` is the interpreter — the
//! runtime of every script, like libc — whose interpreter loop alone takes
//! tens of milliseconds and megabytes of pages to parse. The CLI ([`Policy::Everything`]) reads
//! DWARF everywhere, so a raw profile (`HEAPPROF_SYMBOLIZE=0`) symbolized
//! by `heapprof` gets the interpreter's lines too. One exception inside a
//! Rust program: the runtime's root frames (`std::rt::lang_start_internal`,
//! each thread's `thread_start`), which sit in `std`'s huge precompiled
//! compilation units — tens of milliseconds of DWARF parsing each — get
//! their symbol-table name only.
//!
//! A profile's addresses are resolved object by object
//! ([`Symbolizer::prepare`]): one object's file is opened, all its addresses
//! resolved, and what was parsed of it dropped before the next. Within an
//! object blazesym finds the compilation units holding an address from
//! `.debug_aranges`; units missing there (most of a Rust binary's: `std`'s
//! precompiled units) it indexes by reading their headers, names and line
//! program headers. The file is memory-mapped, and the pages touched count
//! in RSS while mapped (the kernel maps 64 KiB around each page touched):
//! for a Rust binary, most of the file. So in-process, the addresses that
//! need DWARF are resolved in a short-lived copy of the process
//! ([`crate::profile::forked_copy`]), which sends their frames back
//! through a pipe: the program's RSS and peak hold the frames only. Symbol
//! tables (system and interpreter libraries) are read in the process
//! itself: they cost little. If no copy can be made, or it fails, or the
//! process is so big that a copy costs more than it saves
//! ([`crate::profile::forked_copy::worth_it`]), the process resolves the
//! rest itself as before.
//!
//! Nothing parsed outlives a dump: a [`Symbolizer`] is built for one profile
//! and dropped after it, and [`with`] then hands glibc's freed pages back to
//! the kernel (`malloc_trim`, looked up with `dlsym`, so harmless on other
//! allocators). What is kept is a small cache of resolved frames per return
//! address (a few hundred bytes each), so a later dump of the same stacks
//! opens no file at all; it is cleared when the mappings change.
//!
//! A mapped file is checked against the GNU build ID recorded for its
//! mapping before use: a file that is gone, or was replaced, leaves its
//! addresses unnamed (`??`) rather than misnamed, and is listed in
//! [`Symbolizer::problems`].
//!
//! Allocator frames are trimmed: a stack starts where the program called into
//! the allocator, as Go drops its `runtime.malloc` frames. A leading frame is
//! trimmed while it belongs to heapprof, to the Rust allocation plumbing
//! (`__rust_alloc`, `alloc::raw_vec`, `<alloc::vec::Vec<T>>::push`, …) or to the
//! C allocation entry points (`malloc`, `operator new`, …), so the leaf a user
//! sees is their own code or the library that asked for memory.

use hashbrown::HashMap;
use std::path::Path;
use std::sync::Arc;

use blazesym::symbolize::{source, Input, Symbolized};

use crate::profile::mappings::Mapping;

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

/// Which objects get DWARF (names, lines, inlined frames) rather than symbol
/// tables only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// The program's own objects only: what a dump in the profiled process
    /// can afford.
    InProcess,
    /// Every object, with debug files from `/usr/lib/debug` (the CLI).
    Everything,
}

/// Why a mapped file could not be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// The file is not there (or not readable).
    Missing { path: String },
    /// The file's build ID is not the one recorded for the mapping.
    Mismatch {
        path: String,
        want: String,
        have: String,
    },
}

impl Problem {
    /// The file the problem is with.
    pub fn path(&self) -> &str {
        match self {
            Problem::Missing { path } | Problem::Mismatch { path, .. } => path,
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Missing { path } => write!(f, "{path} is not on this machine"),
            Problem::Mismatch { path, want, have } => write!(
                f,
                "{path} has build ID {have}, not {want} as in the profile (a different build)"
            ),
        }
    }
}

/// What is known about a mapping's file.
enum FileState {
    Unchecked,
    Usable,
    Unusable,
}

/// Resolves return addresses of one address space (this process's, or one
/// described by a profile's mappings) to frames, for one profile.
pub struct Symbolizer {
    maps: Vec<Mapping>,
    state: Vec<FileState>,
    policy: Policy,
    inner: Option<blazesym::symbolize::Symbolizer>,
    /// Whether any file was opened (so freed memory is worth trimming).
    opened: bool,
    cache: HashMap<u64, Frames>,
    problems: Vec<Problem>,
}

impl Default for Symbolizer {
    /// A symbolizer for this process as it is mapped now.
    fn default() -> Symbolizer {
        Symbolizer::new(crate::profile::mappings::current(), Policy::InProcess)
    }
}

impl Symbolizer {
    /// A symbolizer for addresses in `maps` (executable mappings).
    pub fn new(maps: Vec<Mapping>, policy: Policy) -> Symbolizer {
        let state = maps.iter().map(|_| FileState::Unchecked).collect();
        Symbolizer {
            maps,
            state,
            policy,
            inner: None,
            opened: false,
            cache: HashMap::new(),
            problems: Vec::new(),
        }
    }

    /// Files that could not be used, one entry each.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// The frames at return address `ret` (looked up at `ret - 1`, inside
    /// the call instruction).
    pub fn frames(&mut self, ret: u64) -> Frames {
        if let Some(f) = self.cache.get(&ret) {
            return f.clone();
        }
        let f: Frames = self.resolve(ret.saturating_sub(1)).into();
        self.cache.insert(ret, f.clone());
        f
    }

    /// Resolves every return address of `rets` not yet known, one object at
    /// a time: an object's file is opened, all its addresses resolved, and
    /// what was parsed of it dropped before the next object is opened, so a
    /// dump's peak is that of its largest object, not the sum of all.
    /// [`Symbolizer::frames`] then finds them ready.
    pub fn prepare(&mut self, rets: impl IntoIterator<Item = u64>) {
        let mut todo: Vec<(usize, u64)> = rets
            .into_iter()
            .filter(|r| !self.cache.contains_key(r))
            .filter_map(|r| Some((self.mapping_of(r.saturating_sub(1))?, r)))
            .collect();
        // Grouped by file (an object may have several executable mappings).
        todo.sort_unstable_by(|a, b| {
            (self.maps[a.0].path.as_str(), a.1).cmp(&(self.maps[b.0].path.as_str(), b.1))
        });
        todo.dedup_by_key(|t| t.1);
        if self.policy == Policy::InProcess {
            self.resolve_dwarf_in_copy(&todo);
            todo.retain(|t| !self.cache.contains_key(&t.1));
        }
        self.resolve_grouped(&todo, |s, ret, frames| {
            s.cache.insert(ret, frames.into());
        });
    }

    /// Resolves each address of `todo` (grouped by file) and hands its
    /// frames to `each`, dropping what was parsed of one object before the
    /// next is opened.
    fn resolve_grouped(
        &mut self,
        todo: &[(usize, u64)],
        mut each: impl FnMut(&mut Self, u64, Vec<Frame>),
    ) {
        let mut last: Option<usize> = None;
        for &(i, ret) in todo {
            if last.is_some_and(|l| self.maps[l].path != self.maps[i].path) {
                self.inner = None;
            }
            last = Some(i);
            let frames = self.resolve(ret.saturating_sub(1));
            each(self, ret, frames);
        }
        self.inner = None;
    }

    /// Resolves the addresses of `todo` (grouped by file) that need DWARF in
    /// a copy of the process ([`crate::profile::forked_copy`]), so the
    /// pages and tables parsed are never the program's memory; the frames
    /// come back through a pipe into the cache. Whatever the copy did not
    /// resolve is left for the caller to resolve in-process.
    fn resolve_dwarf_in_copy(&mut self, todo: &[(usize, u64)]) {
        let dwarf: Vec<(usize, u64)> = todo
            .iter()
            .copied()
            .filter(|&(i, _)| !symbol_table_only(&self.maps[i].path) && self.usable(i))
            .collect();
        // Already in a copy (a dump made from the watcher thread, see
        // `control::watcher`): its memory is thrown away anyway.
        if dwarf.is_empty()
            || crate::engine::arena_in_copy::active()
            || !crate::profile::forked_copy::worth_it()
        {
            return;
        }
        let out = crate::profile::forked_copy::run(|sink| {
            // Made before the copy: dropping it would free into the inner
            // allocator, whose locks another thread may hold here.
            core::mem::forget(self.inner.take());
            let mut buf = Vec::new();
            self.resolve_grouped(&dwarf, |_, ret, frames| {
                buf.clear();
                encode(&mut buf, ret, &frames);
                sink.write(&buf);
            });
        });
        match out {
            Some(out) => {
                let mut rest = &out[..];
                while let Some((ret, frames)) = decode(&mut rest) {
                    self.cache.insert(ret, frames.into());
                }
            }
            None => {
                COPY_FAILURES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    fn mapping_of(&self, pc: u64) -> Option<usize> {
        self.maps.iter().position(|m| pc >= m.start && pc < m.end)
    }

    fn resolve(&mut self, pc: u64) -> Vec<Frame> {
        let Some(i) = self.mapping_of(pc) else {
            return vec![unknown()];
        };
        if !self.usable(i) {
            return vec![unknown()];
        }
        let m = &self.maps[i];
        let offset = pc - m.start + m.offset;
        self.opened = true;
        let inner = self.inner.get_or_insert_with(|| {
            blazesym::symbolize::Symbolizer::builder()
                .enable_demangling(false)
                .enable_auto_reload(false)
                .build()
        });
        let mut elf = source::Elf::new(&m.path);
        elf.debug_syms = match self.policy {
            Policy::Everything => true,
            Policy::InProcess if symbol_table_only(&m.path) => false,
            // The Rust runtime's root frames: names from the symbol table.
            Policy::InProcess => {
                let mut plain = source::Elf::new(&m.path);
                plain.debug_syms = false;
                let name = inner
                    .symbolize(&source::Source::Elf(plain), Input::FileOffset(&[offset]))
                    .ok()
                    .and_then(|mut v| v.pop())
                    .and_then(|s| match s {
                        Symbolized::Sym(sym) => Some(sym.name.into_owned()),
                        Symbolized::Unknown(_) => None,
                    });
                !name.is_some_and(|n| is_runtime_symbol(&n))
            }
        };
        let src = source::Source::Elf(elf);
        let Ok(mut syms) = inner.symbolize(&src, Input::FileOffset(&[offset])) else {
            return vec![unknown()];
        };
        match syms.pop() {
            Some(Symbolized::Sym(sym)) => {
                // blazesym lists the outer function first, each inlined call
                // carrying the location inside its callee; we want callee first.
                let mut out = Vec::with_capacity(sym.inlined.len() + 1);
                for f in sym.inlined.iter().rev() {
                    out.push(frame(&f.name, f.code_info.as_ref()));
                }
                out.push(frame(&sym.name, sym.code_info.as_deref()));
                out
            }
            _ => vec![unknown()],
        }
    }

    /// Whether mapping `i`'s file is there and is the build that was mapped.
    fn usable(&mut self, i: usize) -> bool {
        match self.state[i] {
            FileState::Usable => return true,
            FileState::Unusable => return false,
            FileState::Unchecked => {}
        }
        let m = &self.maps[i];
        let problem = match file_build_id(Path::new(&m.path)) {
            None => Some(Problem::Missing {
                path: m.path.clone(),
            }),
            Some(have) if !m.build_id.is_empty() && have != m.build_id => Some(Problem::Mismatch {
                path: m.path.clone(),
                want: m.build_id.clone(),
                have,
            }),
            Some(_) => None,
        };
        let ok = problem.is_none();
        // Every mapping of the same file shares the verdict.
        let path = m.path.clone();
        for (j, other) in self.maps.iter().enumerate() {
            if other.path == path && other.build_id == self.maps[i].build_id {
                self.state[j] = if ok {
                    FileState::Usable
                } else {
                    FileState::Unusable
                };
            }
        }
        if let Some(p) = problem {
            self.problems.push(p);
        }
        ok
    }
}

/// Times a copy of the process could not resolve a profile's DWARF (it
/// could not be made, got stuck or died), so the process did it itself.
static COPY_FAILURES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// [`COPY_FAILURES`] so far: in each profile's comment.
pub fn copy_failures() -> u64 {
    COPY_FAILURES.load(std::sync::atomic::Ordering::Relaxed)
}

/// Appends one address's frames to `out`: the address, the frame count,
/// then each frame's name, symbol, file (length-prefixed) and line.
fn encode(out: &mut Vec<u8>, ret: u64, frames: &[Frame]) {
    out.extend_from_slice(&ret.to_le_bytes());
    out.extend_from_slice(&(frames.len() as u32).to_le_bytes());
    for f in frames {
        for text in [&f.name, &f.system_name, &f.file] {
            out.extend_from_slice(&(text.len() as u32).to_le_bytes());
            out.extend_from_slice(text.as_bytes());
        }
        out.extend_from_slice(&f.line.to_le_bytes());
    }
}

/// Takes one address's frames off the front of `input` ([`encode`]'s
/// format); `None` at the end or on a malformed record.
fn decode(input: &mut &[u8]) -> Option<(u64, Vec<Frame>)> {
    fn take<'a>(input: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = input.split_at_checked(n)?;
        *input = rest;
        Some(head)
    }
    fn word(input: &mut &[u8]) -> Option<u32> {
        Some(u32::from_le_bytes(take(input, 4)?.try_into().ok()?))
    }
    fn text(input: &mut &[u8]) -> Option<String> {
        let n = word(input)? as usize;
        String::from_utf8(take(input, n)?.to_vec()).ok()
    }
    let ret = u64::from_le_bytes(take(input, 8)?.try_into().ok()?);
    let n = word(input)? as usize;
    let mut frames = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        frames.push(Frame {
            name: text(input)?,
            system_name: text(input)?,
            file: text(input)?,
            line: word(input)?,
        });
    }
    Some((ret, frames))
}

/// The hex GNU build ID of an ELF file (empty if it has none); `None` if
/// the file cannot be read.
pub fn file_build_id(path: &Path) -> Option<String> {
    if !path.is_file() {
        return None;
    }
    match blazesym::helper::read_elf_build_id(&path) {
        Ok(Some(id)) => Some(id.iter().map(|b| format!("{b:02x}")).collect()),
        Ok(None) => Some(String::new()),
        Err(_) => None,
    }
}

/// Objects named from their symbol tables in-process, their DWARF being
/// large and not the program's: the system's (libc, the loader,
/// distribution libraries) and a language interpreter's own library, which
/// is the runtime of the programs it runs wherever it is installed (a
/// pyenv `libpython` as much as `/usr/lib`'s).
fn symbol_table_only(path: &str) -> bool {
    is_system_object(path) || is_interpreter_library(path)
}

fn is_system_object(path: &str) -> bool {
    [
        "/lib/",
        "/lib64/",
        "/usr/lib/",
        "/usr/lib64/",
        "/usr/libexec/",
    ]
    .iter()
    .any(|d| path.starts_with(d))
}

/// The shared library of an interpreter (`libpython3.11.so.1.0`,
/// `libruby.so.3.2`, …): by file name, wherever installed.
fn is_interpreter_library(path: &str) -> bool {
    const NAMES: &[&str] = &[
        "libpython",
        "libruby",
        "libperl",
        "liblua",
        "libluajit",
        "libjvm",
        "libnode",
    ];
    let file = path.rsplit('/').next().unwrap_or(path);
    NAMES.iter().any(|n| {
        file.strip_prefix(n).is_some_and(|rest| {
            rest.starts_with(|c: char| c == '.' || c == '-' || c.is_ascii_digit())
        })
    })
}

/// Whether a mangled symbol is one of the Rust runtime's entry points at
/// the root of every stack (`main`'s and each thread's): non-generic
/// functions of the precompiled `std`, which sit in its huge compilation
/// units (tens of milliseconds and megabytes of DWARF each) and inline
/// nothing of the program's. Their symbol-table names suffice. (Generic
/// runtime functions — `FnOnce::call_once`, `catch_unwind` — are compiled
/// into the program's own units, inline its code, and keep their DWARF.)
fn is_runtime_symbol(mangled: &str) -> bool {
    let name = format!("{:#}", backtrace::SymbolName::new(mangled.as_bytes()));
    name == "std::rt::lang_start_internal"
        || (name.trim_start_matches('<').starts_with("std::sys::")
            && name.ends_with("::thread_start"))
}

fn unknown() -> Frame {
    Frame {
        name: String::from("??"),
        system_name: String::new(),
        file: String::new(),
        line: 0,
    }
}

fn frame(raw: &str, code: Option<&blazesym::symbolize::CodeInfo<'_>>) -> Frame {
    let name = if raw.is_empty() {
        String::from("??")
    } else {
        format!("{:#}", backtrace::SymbolName::new(raw.as_bytes()))
    };
    let (file, line) = match code {
        Some(c) => (c.to_path().display().to_string(), c.line.unwrap_or(0)),
        None => (String::new(), 0),
    };
    Frame {
        name,
        system_name: raw.to_owned(),
        file,
        line,
    }
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

/// Serialises in-process symbolization and holds the frames kept between
/// dumps: (the mappings they were resolved against, return address → frames).
type Kept = Option<(Vec<Mapping>, HashMap<u64, Frames>)>;
static KEPT: std::sync::Mutex<Kept> = std::sync::Mutex::new(None);

/// Addresses whose frames are kept between dumps at most (a few hundred
/// bytes each, so about a megabyte); past this the cache starts afresh and
/// the next dump parses again: time, never unbounded memory.
const KEEP_MAX: usize = 4096;

/// Runs `f` with a symbolizer for this process, dropped afterwards (its
/// parsed files with it) and the freed memory returned to the kernel.
/// Resolved frames are kept for the next call while the mappings stay the
/// same. Never called with the aggregator lock held.
pub fn with<R>(f: impl FnOnce(&mut Symbolizer) -> R) -> R {
    let mut kept = lock();
    let maps = crate::profile::mappings::current();
    let mut sym = Symbolizer::new(maps, Policy::InProcess);
    if let Some((old_maps, cache)) = kept.take() {
        if old_maps == sym.maps && cache.len() < KEEP_MAX {
            sym.cache = cache;
        }
    }
    let r = f(&mut sym);
    // Free the parsed files before trimming (not at the end of scope).
    sym.inner = None;
    let Symbolizer {
        maps,
        cache,
        opened,
        ..
    } = sym;
    *kept = Some((maps, cache));
    drop(kept);
    if opened {
        trim_heap();
        TRIM_DUE.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    r
}

/// Set when a symbolizer parsed files, so the dump trims once more after
/// encoding (trimming walks the whole heap under its locks: not every dump).
static TRIM_DUE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// [`trim_heap`], if a symbolizer parsed files since the last call.
pub fn trim_heap_if_due() {
    // In a copy, the inner allocator is never used (and its state may be
    // caught mid-update).
    if TRIM_DUE.swap(false, std::sync::atomic::Ordering::Relaxed)
        && !crate::engine::arena_in_copy::active()
    {
        trim_heap();
    }
}

/// The symbolization lock (poisoning ignored: the cache is always consistent).
pub fn lock() -> std::sync::MutexGuard<'static, Kept> {
    crate::engine::arena_in_copy::lock(&KEPT)
}

/// Returns free heap memory to the kernel: glibc's `malloc_trim(0)` if the
/// process has it (found by name, so other C libraries are unaffected).
pub fn trim_heap() {
    type Trim = unsafe extern "C" fn(libc::size_t) -> libc::c_int;
    // SAFETY: dlsym with a NUL-terminated name; RTLD_DEFAULT searches the
    // global scope. A non-null result is glibc's malloc_trim, whose C
    // signature is `int malloc_trim(size_t)`.
    unsafe {
        let p = libc::dlsym(libc::RTLD_DEFAULT, c"malloc_trim".as_ptr());
        if !p.is_null() {
            let trim: Trim = core::mem::transmute::<*mut libc::c_void, Trim>(p);
            trim(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_a_known_function_with_file_and_line() {
        let mut ips = [0u64; 16];
        let n = crate::engine::stack::capture(&mut ips, 0);
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

    #[test]
    fn prepared_frames_are_the_lazily_resolved_ones() {
        let mut ips = [0u64; 16];
        let n = crate::engine::stack::capture(&mut ips, 0);
        let mut lazy = Symbolizer::default();
        let want: Vec<Frames> = ips[..n].iter().map(|&ip| lazy.frames(ip)).collect();
        let mut batch = Symbolizer::default();
        batch.prepare(ips[..n].iter().copied());
        assert!(ips[..n].iter().all(|ip| batch.cache.contains_key(ip)));
        assert!(batch.inner.is_none(), "parsed files outlive prepare");
        let got: Vec<Frames> = ips[..n].iter().map(|&ip| batch.frames(ip)).collect();
        assert_eq!(got, want);
        assert!(got.iter().flat_map(|f| f.iter()).any(|f| f.line > 0));
    }

    #[test]
    fn interpreter_libraries_by_file_name() {
        assert!(symbol_table_only(
            "/root/.pyenv/versions/3.11.7/lib/libpython3.11.so.1.0"
        ));
        assert!(symbol_table_only("/opt/ruby/lib/libruby.so.3.2"));
        assert!(symbol_table_only("/usr/lib/x86_64-linux-gnu/libc.so.6"));
        assert!(!symbol_table_only("/opt/app/lib/libpythonic_app.so"));
        assert!(!symbol_table_only(
            "/root/.pyenv/versions/3.11.7/bin/python3.11"
        ));
        assert!(!symbol_table_only("/home/me/app/target/release/libmine.so"));
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
