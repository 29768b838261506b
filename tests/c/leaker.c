/* A program to profile through wrappers, for tests/exec_follow.rs: leaks
 * three blocks of 1000 bytes in leak_three, says whether LD_PRELOAD was set,
 * then exits with the status its argument names.
 *
 *   leaker [CODE]       exit with CODE (default 0)
 *   leaker sig N        die of signal N
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void *leaker_kept[3]; /* not static: keeps the allocations (see threads.c) */

__attribute__((noinline)) void leak_three(void) {
  for (int i = 0; i < 3; i++) {
    leaker_kept[i] = malloc(1000);
    memset(leaker_kept[i], 'l', 1000);
  }
}

int main(int argc, char **argv) {
  leak_three();
  printf("leaker: LD_PRELOAD %s\n", getenv("LD_PRELOAD") ? "set" : "unset");
  fflush(stdout);
  if (argc == 3 && strcmp(argv[1], "sig") == 0) {
    signal(atoi(argv[2]), SIG_DFL);
    raise(atoi(argv[2]));
  }
  return argc > 1 ? atoi(argv[1]) : 0;
}
