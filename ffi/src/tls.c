/*
 * Per-thread profiler state of the LD_PRELOAD library, in initial-exec TLS.
 *
 * Why C: Rust's thread_local! in a cdylib compiles to the general-dynamic TLS
 * model, i.e. a call to __tls_get_addr, which glibc may make allocate (after a
 * dlopen of a module with TLS it grows the thread's DTV with malloc) -- from
 * inside malloc. The initial-exec model instead places the block in the static
 * TLS area glibc sets up when the thread is created, at a fixed offset from
 * the thread pointer: reaching it is a register read and an add, with no call
 * and no allocation, on every thread, from the first instruction it runs until
 * its last destructor. glibc zero-fills .tbss for each new thread (including
 * threads that reuse a cached stack), and all-zero is the initial state of
 * heapprof's ThreadState, which has no destructor.
 *
 * Initial-exec TLS in a shared library needs room in the static TLS block:
 * always there for libraries loaded at start-up (LD_PRELOAD); a later dlopen of
 * this library could fail with "cannot allocate memory in static TLS block",
 * which is one reason it is meant to be preloaded only.
 */
#include <stddef.h>

/* Must be at least heapprof::engine::thread_state::THREAD_STATE_BYTES; checked when the
 * library starts (heapprof_preload_state_bytes). */
#define HEAPPROF_STATE_BYTES 64

/* Not static: the Rust hot paths reach it by name on x86-64 (its offset from
 * the thread pointer, loaded from the GOT: see tls.rs). Hidden: not exported. */
__attribute__((visibility("hidden"))) __thread unsigned char
    heapprof_state[HEAPPROF_STATE_BYTES]
    __attribute__((tls_model("initial-exec"), aligned(16)));

/* The calling thread's state block. */
void *heapprof_preload_state(void) { return heapprof_state; }

/* Size of the block, for the start-up check against the Rust side. */
size_t heapprof_preload_state_bytes(void) { return sizeof heapprof_state; }
