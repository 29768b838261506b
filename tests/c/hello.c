/* An exec target for tests/preload.rs: says whether it was started with
 * LD_PRELOAD set, and leaks a little in exec_leak. */
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
  printf("hello from exec, LD_PRELOAD %s\n", getenv("LD_PRELOAD") ? "set" : "unset");
  return 0;
}
