/* Leaks, says "ready", then waits for stdin to close: the test sends
 * SIGUSR2 meanwhile and expects a profile showing leak_before_signal. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void *waiter_kept[3]; /* not static: keeps the allocations (see threads.c) */

__attribute__((noinline)) void leak_before_signal(void) {
  for (int i = 0; i < 3; i++) {
    waiter_kept[i] = malloc(4096);
    memset(waiter_kept[i], 'w', 4096);
  }
}

int main(void) {
  leak_before_signal();
  printf("ready\n");
  fflush(stdout);
  char buf[64];
  while (read(0, buf, sizeof buf) > 0) {
  }
  printf("bye\n");
  return 0;
}
