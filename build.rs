//! Builds the C body of tracked threads (`src/engine/thread_start.c`): a
//! pthread cancellation cleanup handler, which stable Rust cannot express
//! (see `src/engine/threads.rs`).

fn main() {
    println!("cargo:rerun-if-changed=src/engine/thread_start.c");
    cc::Build::new()
        .file("src/engine/thread_start.c")
        // It ends up in the preload library (a shared object) too.
        .pic(true)
        .opt_level(2)
        .warnings(true)
        .extra_warnings(true)
        .compile("heapprof_thread_start");
}
