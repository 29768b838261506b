/* Large-buffer requests, as a service builds a reply, a body or a
 * compression buffer: for scripts/bench-large.sh and tests/large_samples.rs.
 *
 *   large_requests loop N     N requests: a buffer of 256 KiB-2 MiB
 *                             (a fixed pseudo-random stream) is filled,
 *                             grown once by realloc to twice that, filled,
 *                             and freed; prints a checksum.
 *   large_requests burst MS   the same buffers, 64 live at once, twice
 *                             (the second round's minor faults show whether
 *                             the memory of the first was reused), then
 *                             waits up to MS ms for RssAnon to come back
 *                             near where it started.
 *   large_requests limits     a mixed small and large live set (about
 *                             20 MB); prints a checksum and how many
 *                             allocations failed (for ulimit -v runs).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static unsigned long long rng = 88172645463325252ULL;
static unsigned long next(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (unsigned long)rng;
}

static size_t buffer_size(void) { return (256u << 10) + next() % ((2u << 20) - (256u << 10)); }

/* Writes one byte per 512 (every page is touched), as a filler would. */
__attribute__((noinline)) static unsigned long fill(char *p, size_t from, size_t to, int seed) {
  unsigned long sum = 0;
  for (size_t i = from; i < to; i += 512) {
    p[i] = (char)(seed + i);
    sum += (unsigned char)p[i];
  }
  return sum;
}

__attribute__((noinline)) static char *request(size_t n, unsigned long *sum) {
  char *p = malloc(n);
  if (!p) return NULL;
  *sum += fill(p, 0, n, (int)n);
  char *q = realloc(p, 2 * n);
  if (!q) return p;
  *sum += fill(q, n, 2 * n, (int)n + 1);
  return q;
}

static long rss_anon_kb(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long kb = -1;
  while (f && fgets(line, sizeof line, f))
    if (sscanf(line, "RssAnon: %ld", &kb) == 1) break;
  if (f) fclose(f);
  return kb;
}

static long minflt(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_minflt;
}

static int loop(long n) {
  unsigned long sum = 0, failed = 0;
  for (long i = 0; i < n; i++) {
    char *b = request(buffer_size(), &sum);
    if (!b) failed++;
    free(b);
  }
  printf("loop %ld checksum %lu failed %lu\n", n, sum, failed);
  return 0;
}

#define BURST 32

static int burst(long wait_ms) {
  static char *live[BURST];
  unsigned long sum = 0;
  long base = rss_anon_kb(), faults[2] = {0, 0}, pages = 0;
  for (int round = 0; round < 2; round++) {
    rng = 1;
    long before = minflt();
    for (int i = 0; i < BURST; i++) {
      size_t n = buffer_size();
      live[i] = request(n, &sum);
      pages += round ? (long)(2 * n / 4096) : 0;
    }
    for (int i = 0; i < BURST; i++) free(live[i]);
    faults[round] = minflt() - before;
  }
  long after = rss_anon_kb(), idle = after, waited = 0;
  struct timespec tick = {0, 50 * 1000 * 1000};
  while (waited < wait_ms && idle > base + 4096) {
    nanosleep(&tick, NULL);
    waited += 50;
    idle = rss_anon_kb();
  }
  /* A give-back under way when RssAnon fell finishes before the exit. */
  nanosleep(&tick, NULL);
  idle = rss_anon_kb();
  printf("base_kb %ld after_kb %ld idle_kb %ld waited_ms %ld faults1 %ld faults2 %ld pages %ld checksum %lu\n",
         base, after, idle, waited, faults[0], faults[1], pages, sum);
  return 0;
}

#define SMALL 20000
#define LARGE 12

static int limits(void) {
  static char *small[SMALL], *large[LARGE];
  unsigned long sum = 0, failed = 0;
  for (int round = 0; round < 4; round++) {
    for (int i = 0; i < SMALL; i++) {
      free(small[i]);
      small[i] = malloc(16 + next() % 600);
      if (small[i]) sum += fill(small[i], 0, 1, i); else failed++;
    }
    for (int i = 0; i < LARGE; i++) {
      free(large[i]);
      large[i] = request(buffer_size() / 2, &sum);
      if (!large[i]) failed++;
    }
  }
  for (int i = 0; i < SMALL; i++) free(small[i]);
  for (int i = 0; i < LARGE; i++) free(large[i]);
  printf("limits checksum %lu failed %lu\n", sum, failed);
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 3 && !strcmp(argv[1], "loop")) return loop(atol(argv[2]));
  if (argc == 3 && !strcmp(argv[1], "burst")) return burst(atol(argv[2]));
  if (argc == 2 && !strcmp(argv[1], "limits")) return limits();
  fprintf(stderr, "usage: large_requests loop N | burst MS | limits\n");
  return 2;
}
