/* A program to profile through wrappers, for tests/exec_follow.rs: leaks
 * three blocks of 1000 bytes in leak_three, says whether LD_PRELOAD was set,
 * then exits with the status its argument names.
 *
 *   leaker [CODE]       exit with CODE (default 0)
 *   leaker sig N        die of signal N
 *
 * With LEAKER_PROBE set it also prints how many threads it has (a profiled
 * process has heapprof's dumper thread) and whether its calls to malloc go
 * through the global definition (the hook, or glibc's when bare) or
 * straight to another function (an inert, unhooked process).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
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

static int threads(void) {
  DIR *d = opendir("/proc/self/task");
  int n = 0;
  struct dirent *e;
  while (d && (e = readdir(d)))
    if (e->d_name[0] != '.') n++;
  if (d) closedir(d);
  return n;
}

int main(int argc, char **argv) {
  leak_three();
  printf("leaker: LD_PRELOAD %s\n", getenv("LD_PRELOAD") ? "set" : "unset");
  if (getenv("LEAKER_PROBE")) {
    /* The address through this program's GOT, and the global definition. */
    void *(*volatile mine)(size_t) = malloc;
    void *global = dlsym(RTLD_DEFAULT, "malloc");
    printf("leaker: %d thread%s, malloc %s\n", threads(), threads() == 1 ? "" : "s",
           (void *)mine == global ? "global" : "direct");
  }
  fflush(stdout);
  if (argc == 3 && strcmp(argv[1], "sig") == 0) {
    signal(atoi(argv[2]), SIG_DFL);
    raise(atoi(argv[2]));
  }
  return argc > 1 ? atoi(argv[1]) : 0;
}
