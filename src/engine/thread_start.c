/* The body of a tracked thread, in C for one thing Rust cannot write:
 * glibc's cancellation cleanup handler (pthread_cleanup_push), whose
 * sigsetjmp returns twice. See src/engine/threads.rs for the model.
 *
 * Compiled without -fexceptions, pthread_cleanup_push registers a jump
 * buffer with the thread (__pthread_register_cancel): when cancellation or
 * pthread_exit unwinds the thread's stack, glibc's unwinder jumps back here
 * as it passes this frame; the handler runs, and unwinding goes on
 * (__pthread_unwind_next). Compiled with it, the handler runs as a cleanup
 * of this frame instead. Either way it runs once, on every way the thread
 * ends, for a few dozen instructions when it just returns. */
#include <pthread.h>

typedef void *(*heapprof_start_fn)(void *);
typedef void (*heapprof_end_fn)(void *);

/* Runs start(arg) and returns its result; end(record) runs when start
 * returns, calls pthread_exit, or is cancelled. */
__attribute__((visibility("hidden"))) void *
heapprof_thread_run(heapprof_start_fn start, void *arg, heapprof_end_fn end, void *record) {
  void *ret;
  pthread_cleanup_push(end, record);
  ret = start(arg);
  pthread_cleanup_pop(1);
  return ret;
}
