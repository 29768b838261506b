/* errno belongs to the program, for tests/preload.rs. A single-threaded
 * program sets errno to a sentinel, allocates (sampled and not) and spins,
 * then checks the sentinel is still there, for 2 s, while heapprof's
 * watcher makes dumps. The watcher shares the main thread's thread pointer,
 * so errno too: it must make raw system calls only. Bare and under the
 * library it prints "errno changed 0 times in N checks".
 *
 * An alarm ends a run that hangs (a test fails rather than blocks). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SENTINEL 12345

int main(void) {
  alarm(30);
  long changed = 0, checks = 0;
  unsigned x = 1;
  void *kept[64] = {0};
  struct timespec t0, t;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  do {
    for (int i = 0; i < 1000; i++) {
      errno = SENTINEL;
      x = x * 1103515245u + 12345u;
      /* Mostly small, now and then up to 256 KiB: both paths, often. */
      size_t n = (x >> 4) % 8 == 0 ? (x >> 8) % (256 << 10) + 1 : (x >> 8) % 512 + 1;
      int k = (x >> 16) % 64;
      free(kept[k]);
      kept[k] = malloc(n);
      if (kept[k])
        memset(kept[k], 1, n < 64 ? n : 64);
      /* A stretch where only another thread could change it. */
      for (volatile int j = 0; j < 300; j++) {
      }
      checks++;
      if (errno != SENTINEL)
        changed++;
    }
    clock_gettime(CLOCK_MONOTONIC, &t);
  } while (t.tv_sec - t0.tv_sec < 2);
  for (int k = 0; k < 64; k++)
    free(kept[k]);
  printf("errno changed %ld times in %s checks\n", changed, checks > 100000 ? "many" : "few");
  return 0;
}
