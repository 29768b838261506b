/* A C program that churns small blocks, for scripts/bench-inert.sh: N rounds
 * of free + malloc(8..519) + memset over 256 slots, then a checksum. */
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
static void sink(void *p) { __asm__ volatile("" : : "r"(p) : "memory"); }
int main(int argc, char **argv) {
  long n = argc > 1 ? atol(argv[1]) : 2000000;
  unsigned x = 12345;
  void *slots[256] = {0};
  unsigned long sum = 0;
  for (long k = 0; k < n; k++) {
    x = x * 1103515245u + 12345u;
    int i = (x >> 8) % 256;
    free(slots[i]);
    size_t sz = 8 + (x >> 16) % 512;
    slots[i] = malloc(sz);
    memset(slots[i], (int)k, sz);
    sum += ((unsigned char *)slots[i])[sz / 2];
    sink(slots[i]);
  }
  for (int i = 0; i < 256; i++) free(slots[i]);
  printf("%lu\n", sum);
  return 0;
}
