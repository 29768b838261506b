//! Reports show the program: the runtime's root frames left out.
//!
//! Every stack of a Rust program starts with the same dozen frames before
//! the program's own code: `_start`, glibc's `__libc_start_main` and
//! `__libc_start_call_main`, the `main` symbol rustc generates, then std's
//! `lang_start`, `catch_unwind`/`panicking::try` and
//! `__rust_begin_short_backtrace` wrappers around the user's `main`. Threads
//! start the same way: `clone`/`clone3`, `start_thread`, std's
//! `thread_start`, boxed `FnOnce` trampolines, `spawn_unchecked` closures and
//! `catch_unwind` again. In a report they are noise: 14 of 19 lines of a
//! typical suspect.
//!
//! [`program_frames`] drops them from the **root end** of a stack only, and
//! only while every frame from the root is one of them: so a call into std
//! from the program's own code (a `Vec` growing, a callback run by std) is
//! never touched, and a stack that is nothing but runtime keeps its leaf.
//! A frame counts as runtime root when
//!
//! - its name is one of libc's start-up or thread-start functions (`_start`,
//!   `__libc_start_main*`, `__libc_start_call_main`, `start_thread`, `clone`,
//!   `clone3`, `__clone*`), or heapprof's own thread start under them
//!   (`heapprof_thread_run` and its trampoline);
//! - it is `main` calling Rust's `lang_start` (the symbol rustc generates;
//!   a C program's `main` is the program's own and stays);
//! - it is Rust's standard library — by source file (`library/std/…`,
//!   `library/core/…`, `library/alloc/…`, which also catches the short names
//!   of `debug = "line-tables-only"` builds) or by name (`std::rt::`,
//!   `std::panicking::`, `std::panic::`, `std::sys::`, `std::thread::`,
//!   `core::ops::function::`, boxed and `AssertUnwindSafe` `call_once`
//!   shims).
//!
//! Unsymbolized frames are dropped only between runtime frames (a frame
//! that calls into the runtime is start-up code; libc without debug
//! information leaves `__libc_start_call_main` unnamed), never on their own:
//! nothing else says what they are.
//!
//! [`program_only`] applies this to a whole [`Resolved`] profile (stacks that
//! become identical merge), which is what the `heapprof` command does for
//! every report unless `--all-frames` is given. Profiles written to disk are
//! never trimmed. Very long generic instantiations are also shortened for
//! display there ([`short_name`]).

use std::borrow::Cow;
use std::collections::HashMap;

use super::format::short_path;
use super::model::{Frame, FrameKey, Resolved, Stack};

/// libc's process and thread start-up functions.
const LIBC_ROOTS: &[&str] = &[
    "_start",
    "__libc_start_call_main",
    "start_thread",
    "clone",
    "clone3",
    "__clone",
    "__clone3",
    "__clone_internal",
    "__clone_internal_fallback",
    // heapprof's own thread start (threads tracking): between
    // `start_thread` and the program's start routine.
    "heapprof_thread_run",
    "heapprof::engine::threads::trampoline",
];

/// Name prefixes of Rust's start-up and thread-start wrappers, after a
/// leading `<` of a qualified path is removed.
const RUST_PREFIXES: &[&str] = &[
    "std::rt::",
    "std::panicking::",
    "std::panic::",
    "std::sys::",
    "std::sys_common::",
    "std::thread::",
    "core::ops::function::",
    "core::panic::",
    "alloc::boxed::Box<",
    "&dyn core::ops::function::",
    "__rust_begin_short_backtrace",
    "__rust_try",
];

/// Source directories of Rust's standard library (after [`short_path`]).
const RUST_LIBRARY_FILES: &[&str] = &[
    "library/std/",
    "library/core/",
    "library/alloc/",
    "library/panic_unwind/",
];

/// Whether `frame` is part of Rust's runtime wrappers.
fn is_rust_runtime(frame: &Frame) -> bool {
    if !frame.is_symbolized() {
        return false;
    }
    let file = short_path(&frame.file);
    if RUST_LIBRARY_FILES.iter().any(|p| file.starts_with(p)) {
        return true;
    }
    let name = frame.function.strip_prefix('<').unwrap_or(&frame.function);
    RUST_PREFIXES.iter().any(|p| name.starts_with(p)) || name.contains("lang_start")
}

/// Whether `frame` has a name (not an address alone, nor the `??` a
/// symbolizer writes for an address it could not name).
fn is_named(frame: &Frame) -> bool {
    frame.is_symbolized() && frame.function != "??"
}

/// Whether `frame` is a runtime root frame, given the frame it calls
/// (`callee`, one step toward the leaf).
fn is_runtime_root(frame: &Frame, callee: &Frame) -> bool {
    if !frame.is_symbolized() {
        return false;
    }
    let name = frame.function.as_str();
    if LIBC_ROOTS.contains(&name) || name.starts_with("__libc_start_main") {
        return true;
    }
    if name == "main" {
        // rustc's generated `main` (no source file) calls `lang_start`; a C
        // `main` is the program's own.
        return frame.file.is_empty()
            && is_rust_runtime(callee)
            && (callee.function.contains("lang_start")
                || short_path(&callee.file).ends_with("std/src/rt.rs"));
    }
    is_rust_runtime(frame)
}

/// `frames` (leaf first) without the runtime's root frames; never empty
/// when `frames` is not (the leaf always stays).
pub fn program_frames(frames: &[Frame]) -> &[Frame] {
    // `cut`: after the leafmost frame known to be runtime. An unsymbolized
    // frame on the way is dropped only when a known runtime frame lies
    // leafward of it (it calls into the runtime, so it is start-up code, such
    // as libc's unexported `__libc_start_call_main` when libc has no debug
    // information), or when `__libc_start_main` calls it (that same function
    // calling a C program's `main`).
    let mut end = frames.len();
    let mut cut = end;
    while end > 1 {
        let (frame, callee) = (&frames[end - 1], &frames[end - 2]);
        let called_by_libc_start = frames
            .get(end)
            .is_some_and(|caller| caller.function.starts_with("__libc_start_main"));
        if is_runtime_root(frame, callee) || (!is_named(frame) && called_by_libc_start) {
            end -= 1;
            cut = end;
        } else if !is_named(frame) {
            end -= 1;
        } else {
            break;
        }
    }
    &frames[..cut]
}

/// Names longer than this have their generic arguments elided for display.
pub const LONG_NAME: usize = 100;

/// `name` with the argument lists of generic instantiations (`::<…>`)
/// replaced by `::<…>` when it is longer than [`LONG_NAME`]; the path,
/// the `<T as Trait>` qualification and closures stay, so the function is
/// still recognisable. Short names are returned unchanged.
pub fn short_name(name: &str) -> Cow<'_, str> {
    if name.chars().count() <= LONG_NAME || !name.contains("::<") {
        return Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(LONG_NAME);
    let mut rest = name;
    while let Some(i) = rest.find("::<") {
        out.push_str(&rest[..i]);
        out.push_str("::<…>");
        // Skip to the matching `>`.
        let mut depth = 0usize;
        let mut end = rest.len();
        for (j, c) in rest[i + 2..].char_indices() {
            match c {
                '<' => depth += 1,
                '>' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i + 2 + j + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// `r` with every stack cut to [`program_frames`] and long names shortened
/// ([`short_name`]); stacks that become identical merge, samples follow
/// their stack.
pub fn program_only(mut r: Resolved) -> Resolved {
    let mut by_key: HashMap<Vec<FrameKey>, usize> = HashMap::new();
    let mut stacks: Vec<Stack> = Vec::new();
    let remap: Vec<usize> = r
        .stacks
        .iter()
        .map(|s| {
            let frames: Vec<Frame> = program_frames(&s.frames)
                .iter()
                .map(|f| match short_name(&f.function) {
                    Cow::Borrowed(_) => f.clone(),
                    Cow::Owned(name) => Frame {
                        function: name,
                        ..f.clone()
                    },
                })
                .collect();
            let stack = Stack::new(frames);
            *by_key.entry(stack.key().to_vec()).or_insert_with(|| {
                stacks.push(stack);
                stacks.len() - 1
            })
        })
        .collect();
    for s in &mut r.samples {
        if let Some(&i) = remap.get(s.stack) {
            s.stack = i;
        }
    }
    r.stacks = stacks;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(function: &str, file: &str) -> Frame {
        Frame {
            function: function.to_string(),
            file: file.to_string(),
            line: 1,
            address: 0x1000,
            module: String::new(),
            module_offset: None,
        }
    }

    const STD: &str = "/rustc/0123456789abcdef/library/std/src/rt.rs";

    fn names(frames: &[Frame]) -> Vec<&str> {
        frames.iter().map(|f| f.function.as_str()).collect()
    }

    #[test]
    fn rust_main_thread_keeps_the_program() {
        let stack = [
            f("app::leak", "src/main.rs"),
            f("app::main", "src/main.rs"),
            f(
                "core::ops::function::FnOnce::call_once",
                "library/core/src/ops/function.rs",
            ),
            f("std::sys::backtrace::__rust_begin_short_backtrace", STD),
            f("std::rt::lang_start::{{closure}}", STD),
            f("std::panicking::catch_unwind::<i32, &dyn Fn()>", STD),
            f("std::rt::lang_start_internal", STD),
            f("main", ""),
            f("__libc_start_call_main", "./csu/libc_start_call_main.h"),
            f("__libc_start_main_impl", "./csu/libc-start.c"),
            f("_start", ""),
        ];
        assert_eq!(names(program_frames(&stack)), ["app::leak", "app::main"]);
    }

    #[test]
    fn libc_without_debug_information() {
        // libc's unexported `__libc_start_call_main` comes out as `??` or as
        // a bare address; it is start-up code between runtime frames.
        let mut bare = f("", "");
        bare.line = 0;
        for unnamed in [f("??", ""), bare] {
            let rust = [
                f("app::main", "src/main.rs"),
                f("std::rt::lang_start::{{closure}}", STD),
                f("std::rt::lang_start_internal", ""),
                f("main", ""),
                unnamed.clone(),
                f("__libc_start_main", ""),
                f("_start", ""),
            ];
            assert_eq!(names(program_frames(&rust)), ["app::main"]);
            let c = [
                f("leak", "prog.c"),
                f("main", "prog.c"),
                unnamed.clone(),
                f("__libc_start_main", ""),
                f("_start", ""),
            ];
            assert_eq!(names(program_frames(&c)), ["leak", "main"]);
            // An unnamed frame with nothing known leafward stays.
            let lib = [f("leak", "prog.c"), unnamed.clone(), f("_start", "")];
            assert_eq!(program_frames(&lib).len(), 2);
        }
    }

    #[test]
    fn short_names_and_threads() {
        // line-tables-only builds: short names, recognised by file.
        let stack = [
            f("leak", "src/main.rs"),
            f("{closure#0}", "src/main.rs"),
            f(
                "__rust_begin_short_backtrace",
                "library/std/src/sys/backtrace.rs",
            ),
            f("call_once", "library/alloc/src/boxed.rs"),
            f("thread_start", "library/std/src/sys/thread/unix.rs"),
            f("start_thread", "./nptl/pthread_create.c"),
            f("clone3", "clone3.S"),
        ];
        assert_eq!(names(program_frames(&stack)), ["leak", "{closure#0}"]);
        // A C thread tracked by heapprof: its start-up frames go too.
        let stack = [
            f("worker_leak", "prog.c"),
            f("worker", "prog.c"),
            f("heapprof_thread_run", "/build/src/engine/thread_start.c"),
            f(
                "heapprof::engine::threads::trampoline",
                "src/engine/threads.rs",
            ),
            f("start_thread", "./nptl/pthread_create.c"),
            f("clone3", "clone3.S"),
        ];
        assert_eq!(names(program_frames(&stack)), ["worker_leak", "worker"]);
    }

    #[test]
    fn c_main_and_inner_std_calls_stay() {
        let stack = [
            f("malloc_wrapper", "lib.c"),
            f(
                "std::panicking::catch_unwind",
                "library/std/src/panicking.rs",
            ),
            f("main", "prog.c"),
            f("__libc_start_main", ""),
            f("_start", ""),
        ];
        assert_eq!(
            names(program_frames(&stack)),
            ["malloc_wrapper", "std::panicking::catch_unwind", "main"]
        );
        // All runtime: the leaf stays.
        let runtime = [f("std::rt::lang_start_internal", STD), f("_start", "")];
        assert_eq!(
            names(program_frames(&runtime)),
            ["std::rt::lang_start_internal"]
        );
        // Unsymbolized roots stay: nothing says what they are.
        let mut raw = f("", "");
        raw.function.clear();
        let stack = [f("app::leak", "src/main.rs"), raw];
        assert_eq!(program_frames(&stack).len(), 2);
        assert!(program_frames(&[]).is_empty());
    }

    #[test]
    fn long_generic_names_are_shortened() {
        let long = format!(
            "<app::Map<K>>::insert::<{}>",
            "alloc::string::String, ".repeat(6)
        );
        assert_eq!(short_name(&long), "<app::Map<K>>::insert::<…>");
        assert_eq!(short_name("app::f::<u8>"), "app::f::<u8>");
        let nested = format!("a::b::<x<y<{}>>>::c::<z>", "q".repeat(100));
        assert_eq!(short_name(&nested), "a::b::<…>::c::<…>");
    }
}
