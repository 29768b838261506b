/* Allocation-heavy multi-threaded workload for scripts/bench-preload.sh.
 *
 *   alloc_bench [THREADS [MILLION_OPS_PER_THREAD]]    (default 4 x 5)
 *
 * Each thread keeps a window of 4096 live blocks and replaces a random one
 * per operation: free it, then malloc (90%), calloc (5%) or realloc an
 * existing block (5%) with a size drawn like a typical C/C++ program's
 * (mostly small, a long tail up to 64 KiB), and writes into the new block
 * (up to 256 bytes, as a program initialises what it allocates). Prints a
 * checksum so nothing can be optimised away. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WINDOW 4096

static long ops_per_thread;

static size_t draw_size(uint64_t r) {
  unsigned bucket = (unsigned)(r % 1000);
  r >>= 10;
  if (bucket < 700) return 16 + r % 113;     /* 70%: 16..128 */
  if (bucket < 950) return 128 + r % 897;    /* 25%: 128..1024 */
  if (bucket < 999) return 1024 + r % 7169;  /* 4.9%: 1 KiB..8 KiB */
  return 8192 + r % 57345;                   /* 0.1%: 8 KiB..64 KiB */
}

static void *worker(void *arg) {
  uint64_t x = 0x9E3779B97F4A7C15ull * ((uint64_t)(uintptr_t)arg + 1);
  void **slots = calloc(WINDOW, sizeof *slots);
  uint64_t sum = 0;
  for (long i = 0; i < ops_per_thread; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    unsigned k = (unsigned)(x >> 40) % WINDOW;
    size_t n = draw_size(x);
    unsigned kind = (unsigned)(x >> 20) % 100;
    char *p;
    if (kind < 5 && slots[k]) {
      p = realloc(slots[k], n);
    } else {
      free(slots[k]);
      p = kind < 10 ? calloc(1, n) : malloc(n);
    }
    if (!p) abort();
    memset(p, (int)i, n < 256 ? n : 256);
    sum += (uintptr_t)p[0] + n;
    slots[k] = p;
  }
  for (int k = 0; k < WINDOW; k++) free(slots[k]);
  free(slots);
  return (void *)(uintptr_t)sum;
}

int main(int argc, char **argv) {
  int threads = argc > 1 ? atoi(argv[1]) : 4;
  ops_per_thread = (argc > 2 ? atol(argv[2]) : 5) * 1000000L;
  pthread_t t[64];
  if (threads < 1 || threads > 64) return 2;
  for (int i = 0; i < threads; i++) pthread_create(&t[i], NULL, worker, (void *)(uintptr_t)i);
  uint64_t total = 0;
  for (int i = 0; i < threads; i++) {
    void *r;
    pthread_join(t[i], &r);
    total += (uint64_t)(uintptr_t)r;
  }
  printf("checksum %llu\n", (unsigned long long)total);
  return 0;
}
