//! Builds the C half of the preload library: the initial-exec TLS block that
//! holds each thread's profiler state, which stable Rust cannot declare (see
//! `src/tls.c` and the crate docs).

fn main() {
    println!("cargo:rerun-if-changed=src/tls.c");
    println!("cargo:rerun-if-changed=src/exec.c");
    cc::Build::new()
        .file("src/tls.c")
        // The variadic exec functions (see src/signals.rs).
        .file("src/exec.c")
        // Position-independent (a shared library) but with the TLS model the
        // source asks for; optimised so the accessor is two instructions.
        .pic(true)
        .opt_level(2)
        .warnings(true)
        .extra_warnings(true)
        .compile("heapprof_preload_tls");
}
