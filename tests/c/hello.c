/* An exec target for tests/preload.rs: says whether it was started with
 * LD_PRELOAD set and whether libunwind is loaded (heapprof loads it in a
 * process it profiles, never in an inert one), and leaks a little in
 * exec_leak. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void *exec_kept; /* not static: keeps the allocation (see threads.c) */

__attribute__((noinline)) void exec_leak(void) {
  exec_kept = malloc(4321);
  memset(exec_kept, 'e', 4321);
}

int main(void) {
  exec_leak();
  int unwind = dlopen("libunwind.so.8", RTLD_NOW | RTLD_NOLOAD) != NULL;
  printf("hello from exec, LD_PRELOAD %s, libunwind %s\n", getenv("LD_PRELOAD") ? "set" : "unset",
         unwind ? "loaded" : "not loaded");
  return 0;
}
