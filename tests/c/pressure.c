/* A program for tests/memory_pressure.rs: allocation churn over a small live
 * set, a checksum on stdout and exit status 3, so any change heapprof makes
 * to its behaviour shows. Run under an address-space limit (ulimit -v) at
 * which it runs fine alone. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LIVE 512
#define ROUNDS 200000

__attribute__((noinline)) static char *make(size_t n, int seed) {
  char *p = malloc(n);
  if (p) memset(p, seed, n);
  return p;
}

int main(void) {
  static char *live[LIVE];
  unsigned long sum = 0, failed = 0;
  for (int i = 0; i < ROUNDS; i++) {
    int k = i % LIVE;
    free(live[k]);
    live[k] = make(16 + (i * 37) % 2000, i & 0x7f);
    if (live[k]) sum += (unsigned char)live[k][0]; else failed++;
  }
  for (int k = 0; k < LIVE; k++) free(live[k]);
  printf("checksum %lu failed %lu\n", sum, failed);
  return 3;
}
