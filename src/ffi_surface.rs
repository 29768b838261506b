//! The whole interface the preload library (`ffi/`) uses: nothing else of
//! this crate is its to call, and `tests/ffi_surface.rs` fails if `ffi/`
//! names a path outside this module.
//!
//! The preload library is a second way in beside [`crate::Profiler`]: its
//! hooks inline the same hot path (the countdown in [`engine::thread_state`]
//! and the engine's sampled path), serve large blocks from the sample heap,
//! start the engine and the dumper, and keep the program's signal mask and
//! handlers whole. What each item is for is documented where it is defined;
//! the list below groups them by the layer they come from, lowest first.
//! Not an API for anyone else: hidden from the docs and free to change
//! with the library it serves, which is built from the same workspace.

/// Descriptors, raw system calls, pages and symbols (`crate::os`).
pub mod os {
    pub use crate::os::next_symbol::NextSymbol;
    pub use crate::os::{realtime_ns, PAGE};
    pub mod fds {
        pub use crate::os::fds::{move_high, Held};
    }
    pub mod raw {
        pub use crate::os::raw::{recv_nowait, syscall6};
    }
}

/// The hot path's state and the sampled path (`crate::engine`).
pub mod engine {
    pub use crate::engine::{
        alloc_large, alloc_sample, alloc_sample_with_room, alloc_unsampled, free_sample,
        large_unsampled, owns, realloc_room, realloc_sample, sample_usable_size, set_backlog_drain,
        should_sample, Resized, LARGE, LARGE_MAX,
    };
    pub mod thread_state {
        pub use crate::engine::thread_state::{
            current, set_state_fn, ThreadState, COUNTDOWN_OFFSET, THREAD_STATE_BYTES,
        };
    }
    pub mod sample_heap {
        pub use crate::engine::sample_heap::{prefix, RangeMirror, PREFIX_BYTES};
    }
    pub mod arena_in_copy {
        pub use crate::engine::arena_in_copy::{
            active, alloc, alloc_zeroed, free, owns, realloc, set_on_enter,
        };
    }
    pub mod threads {
        pub use crate::engine::threads::{create, enable, CreateFn, StartRoutine};
    }
    pub mod unwind {
        pub use crate::engine::unwind::forget_rules_if_unloaded;
    }
}

/// Start-up, settings, the dump signal and the dumper (`crate::control`).
pub mod control {
    pub mod config {
        pub use crate::control::config::{getenv, parse_bool};
    }
    pub mod startup {
        pub use crate::control::startup::{load_unwinder, mark_way_in, start};
    }
    pub mod triggers {
        pub use crate::control::triggers::{
            handler_signal, is_our_handler, out_prefix, program_creates_thread, say,
            set_at_exit_default, set_defer_dumper, set_real_pthread_create, PthreadCreateFn,
        };
    }
    pub mod wake {
        pub use crate::control::wake::{request_dump, set_note_source, NoteSource};
    }
    pub mod dump_signal {
        pub use crate::control::dump_signal::{
            add, blanket, del, dumper_takes, hidden, member, only, program_takes, set_real_calls,
            sigaction, sigmask, view, PpollFn, SigactionFn, SigmaskFn, Why,
        };
    }
    pub mod blackbox {
        pub use crate::control::blackbox::refresh_mappings;
    }
    pub mod lifetime {
        pub use crate::control::lifetime::thread_exits;
    }
}
