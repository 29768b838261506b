//! A Rust program whose main thread ends with `pthread_exit`, for heapprof's
//! `control::lifetime` in the Rust way in: the process must end then, with
//! status 0, as it does without heapprof (`tests/lifetime.rs`).
//!
//! A thread allocates and ends; main joins it, prints `main ends` and calls
//! `pthread_exit`. `main` is the C entry point (`#![no_main]`, "C-unwind"):
//! `pthread_exit` unwinds the main thread's stack, which std's own `main`
//! would catch as a foreign exception and abort.
#![no_main]

use std::hint::black_box;

#[global_allocator]
static GLOBAL: heapprof::Profiler<std::alloc::System> = heapprof::Profiler::new(std::alloc::System);

extern "C-unwind" {
    fn pthread_exit(retval: *mut core::ffi::c_void) -> !;
}

#[inline(never)]
fn kept() -> Vec<u8> {
    black_box(vec![7u8; 4 << 20])
}

/// # Safety
/// The C entry point, called once by the C runtime.
#[no_mangle]
pub extern "C-unwind" fn main(_argc: i32, _argv: *const *const u8) -> i32 {
    let t = std::thread::spawn(|| {
        std::mem::forget(kept());
        println!("thread allocated");
    });
    t.join().unwrap();
    println!("main ends");
    // SAFETY: ends the main thread; nothing on this stack needs dropping.
    unsafe { pthread_exit(core::ptr::null_mut()) }
}
