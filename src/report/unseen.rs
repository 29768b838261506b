//! Memory the heap profile does not see: the heap a profile saw against the
//! process's resident anonymous memory (`RssAnon`, which heapprof records in
//! each profile), and the likely reason when the heap explains little of it.
//!
//! heapprof sees what reaches `malloc` (under the preload library) or the
//! `Profiler` global allocator. A program with an allocator of its own —
//! Rust with mimalloc or jemalloc as `#[global_allocator]`, C or C++ linking
//! tcmalloc or jemalloc statically — allocates past both, and so does
//! memory taken with `mmap` directly (pools, arenas, Python's small-object
//! allocator) and thread stacks. Such a profile is not a clean bill of
//! health: every report that reads one says so ([`unseen_memory`]).
//!
//! The likely cause is named from the executable's symbols: an allocator
//! linked into it defines its entry points there (`mi_malloc`,
//! `_rjem_malloc`, `je_malloc`, `tc_malloc`, or `malloc` itself; by
//! prefix, as the linker keeps only the entry points a program calls).

use std::path::Path;

use super::format;
use super::model::{Resolved, SampleKind};

/// Unexplained memory below this is not worth a word: heapprof's own
/// tables, the loader's and libc's are a few MiB in any process.
pub const UNSEEN_MIN_BYTES: u64 = 32 << 20;

/// An allocator linked into an executable, known by a symbol it defines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnAllocator {
    /// The symbol found.
    pub symbol: String,
    /// The allocator, in words.
    pub name: &'static str,
    /// For a Rust program: the `GlobalAlloc` type to wrap in
    /// `heapprof::Profiler`.
    pub rust_type: Option<&'static str>,
    /// Whether the executable is a Rust program.
    pub rust: bool,
}

/// Entry points of allocators a program may link in, by name prefix (a
/// linker keeps only the ones the program calls: a Rust program with
/// mimalloc may define `mi_malloc_aligned` and not `mi_malloc`); the first
/// in this list found wins.
const ALLOCATORS: &[(&str, &str, Option<&str>)] = &[
    ("mi_malloc", "mimalloc", Some("mimalloc::MiMalloc")),
    ("_mi_malloc", "mimalloc", Some("mimalloc::MiMalloc")),
    (
        "_rjem_malloc",
        "jemalloc (tikv-jemallocator)",
        Some("tikv_jemallocator::Jemalloc"),
    ),
    (
        "_rjem_",
        "jemalloc (tikv-jemallocator)",
        Some("tikv_jemallocator::Jemalloc"),
    ),
    ("je_malloc", "jemalloc", Some("jemallocator::Jemalloc")),
    ("mallocx", "jemalloc", Some("jemallocator::Jemalloc")),
    ("tc_malloc", "tcmalloc", None),
    ("tc_new", "tcmalloc", None),
];

/// `malloc` itself defined in the executable: a malloc of its own.
const OWN_MALLOC: (&str, &str, Option<&str>) =
    ("malloc", "a malloc of its own (statically linked)", None);

/// The allocator linked into the ELF file `exe`, when it defines one.
pub fn own_allocator(exe: &Path) -> Option<OwnAllocator> {
    use blazesym::inspect::source::{Elf, Source};
    use blazesym::inspect::Inspector;
    use std::ops::ControlFlow;
    let mut elf = Elf::new(exe);
    elf.debug_syms = false;
    let src = Source::Elf(elf);
    let mut found: Option<(usize, String)> = None;
    let mut own_malloc = false;
    let mut rust = false;
    Inspector::new()
        .for_each(&src, |sym| {
            let name: &str = &sym.name;
            if let Some(i) = ALLOCATORS.iter().position(|a| name.starts_with(a.0)) {
                if found.as_ref().map_or(true, |f| i < f.0) {
                    found = Some((i, name.to_string()));
                }
            }
            own_malloc |= name == OWN_MALLOC.0;
            if name.contains("rust_begin_unwind") || name.contains("__rust_alloc") {
                rust = true;
            }
            ControlFlow::Continue(())
        })
        .ok()?;
    let (symbol, (_, name, rust_type)) = match found {
        Some((i, symbol)) => (symbol, ALLOCATORS[i]),
        None if own_malloc => (OWN_MALLOC.0.to_string(), OWN_MALLOC),
        None => return None,
    };
    Some(OwnAllocator {
        symbol,
        name,
        rust_type: if rust { rust_type } else { None },
        rust,
    })
}

/// When the heap `r` saw explains little of the process's resident
/// anonymous memory: one line saying how much is unseen and the likely
/// cause, looking for an allocator in `program` (else in the profile's main
/// executable, when that file is on this machine). `None` when the profile
/// records no `RssAnon`, or the heap explains most of it.
pub fn unseen_memory(r: &Resolved, program: Option<&Path>) -> Option<String> {
    let rss = r.rss_anon?;
    let index = r.sample_index(&SampleKind::InuseSpace).ok()?;
    let heap = u64::try_from(r.total(index)).unwrap_or(0);
    let unseen = rss.saturating_sub(heap);
    if unseen < UNSEEN_MIN_BYTES || heap.saturating_mul(2) >= rss {
        return None;
    }
    let exe = program
        .map(Path::to_path_buf)
        .or_else(|| r.main_file.as_ref().map(Into::into))
        .filter(|p| p.is_file());
    let shown = exe
        .as_ref()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "the program".to_string());
    let cause = match exe.as_deref().and_then(own_allocator) {
        Some(a) => {
            let fix = match a.rust_type {
                Some(t) => format!(
                    "; in Rust, make heapprof the global allocator around it: \
                     #[global_allocator] static A: heapprof::Profiler<{t}> = \
                     heapprof::Profiler::new({t});"
                ),
                None if a.rust => "; in Rust, wrap your global allocator: \
                                   #[global_allocator] static A: heapprof::Profiler<YourAlloc>"
                    .to_string(),
                None => "; build it against the system malloc to profile it".to_string(),
            };
            format!(
                "{shown} defines {}: {} is linked into the executable, so its allocations \
                 never reach malloc and heapprof does not see them{fix}",
                a.symbol, a.name
            )
        }
        None => "likely memory taken with mmap directly (a pool or arena of its own; Python's \
                 small-object allocator: run it with PYTHONMALLOC=malloc), an allocator \
                 linked into the program, thread stacks (the threads profile counts them), \
                 or freed memory malloc has not returned to the system"
            .to_string(),
    };
    Some(format!(
        "note: the heap heapprof saw ({} in use) explains {}% of the process's resident \
         anonymous memory (RssAnon {}): {} unseen; {cause}",
        format::value(heap as i64, "bytes"),
        heap.saturating_mul(100) / rss.max(1),
        format::value(rss as i64, "bytes"),
        format::value(unseen as i64, "bytes"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::model::{ResolvedSample, SampleType, Stack};

    fn profile(heap: i64, rss: Option<u64>) -> Resolved {
        Resolved {
            input: "p".into(),
            sample_types: vec![SampleType {
                name: "inuse_space".into(),
                unit: "bytes".into(),
            }],
            default_sample_type: None,
            period_type: None,
            period: 1,
            time_nanos: 1,
            duration_nanos: 1,
            stacks: vec![Stack::new(Vec::new())],
            samples: vec![ResolvedSample {
                stack: 0,
                values: vec![heap],
                labels: Vec::new(),
            }],
            skipped_samples: 0,
            rss_anon: rss,
            main_file: Some("/nonexistent/svc".into()),
            peak: false,
            at_exit: false,
        }
    }

    #[test]
    fn only_memory_the_heap_does_not_explain_is_noted() {
        const MIB: u64 = 1 << 20;
        // No RssAnon recorded, or the heap explains most of it: nothing.
        assert_eq!(unseen_memory(&profile(0, None), None), None);
        assert_eq!(
            unseen_memory(&profile(60 << 20, Some(100 * MIB)), None),
            None
        );
        // A small process's overheads are not worth a word.
        assert_eq!(unseen_memory(&profile(0, Some(20 * MIB)), None), None);
        let note = unseen_memory(&profile(10 << 20, Some(100 * MIB)), None).unwrap();
        assert!(
            note.contains("explains 10%") && note.contains("90.0 MiB unseen"),
            "{note}"
        );
        assert!(
            note.contains("mmap") && note.contains("thread stacks"),
            "{note}"
        );
    }
}
