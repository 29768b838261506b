/* Large blocks, sampled or not, through every way C programs make and
 * resize them (see tests/large_unsampled.rs).
 *
 *   largeblocks check   malloc, calloc (of memory just freed dirty),
 *                       posix_memalign and aligned_alloc of large sizes,
 *                       each filled, grown and shrunk by realloc (down to
 *                       a small size), the contents checked at every step;
 *                       a small block grown large by realloc; prints
 *                       "page_blocks N of M" (how many of the M large
 *                       blocks were page-aligned runs, as heapprof's sample
 *                       heap serves them and glibc never does) and "ok";
 *                       before that "huge_page_block 0|1": whether a block
 *                       of 40 MiB was such a run.
 *   largeblocks exact   leak_large: 3 blocks of 300 KiB, each grown by
 *                       realloc to 600 KiB and kept; grow_from_small: one
 *                       block of 1000 bytes grown to 400 KiB and kept.
 */
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static long blocks, page_blocks;

static void fail(const char *what, size_t n) {
  printf("FAIL %s %zu\n", what, n);
  exit(1);
}

static void note(void *p) {
  blocks++;
  if ((uintptr_t)p % 4096 == 0 && malloc_usable_size(p) % 4096 == 0) page_blocks++;
}

static void fill(unsigned char *p, size_t from, size_t to, unsigned seed) {
  for (size_t i = from; i < to; i++) p[i] = (unsigned char)(i * 31 + seed);
}

static void expect(const unsigned char *p, size_t n, unsigned seed, const char *what) {
  for (size_t i = 0; i < n; i++)
    if (p[i] != (unsigned char)(i * 31 + seed)) fail(what, i);
}

/* Fills the first n bytes of p, then grows it to 3n, shrinks it to n/2,
 * then to 1000 bytes, checking the contents each time, and frees it. */
static void resize_and_free(unsigned char *p, size_t n, unsigned seed) {
  if (!p) fail("alloc", n);
  note(p);
  fill(p, 0, n, seed);
  if (malloc_usable_size(p) < n) fail("usable", n);
  p = realloc(p, 3 * n);
  if (!p) fail("grow", n);
  expect(p, n, seed, "grown");
  fill(p, n, 3 * n, seed);
  p = realloc(p, n / 2);
  if (!p) fail("shrink", n);
  expect(p, n / 2, seed, "shrunk");
  p = realloc(p, 1000);
  if (!p) fail("small", n);
  expect(p, 1000, seed, "small");
  free(p);
}

static int check(void) {
  static const size_t sizes[] = {128 << 10, 200 << 10, 1 << 20, 3 << 20};
  for (int round = 0; round < 3; round++) {
    for (unsigned i = 0; i < sizeof sizes / sizeof *sizes; i++) {
      size_t n = sizes[i];
      unsigned seed = round * 16 + i;
      resize_and_free(malloc(n), n, seed);
      /* calloc of memory just freed, dirty: must read as zero. */
      unsigned char *d = malloc(n);
      if (!d) fail("dirty", n);
      memset(d, 0xa5, n);
      free(d);
      unsigned char *z = calloc(1, n);
      if (!z) fail("calloc", n);
      for (size_t k = 0; k < n; k++)
        if (z[k]) fail("zero", k);
      resize_and_free(z, n, seed + 1);
      void *a = NULL;
      if (posix_memalign(&a, 64 << 10, n) || (uintptr_t)a % (64 << 10)) fail("posix_memalign", n);
      resize_and_free(a, n, seed + 2);
      unsigned char *b = aligned_alloc(8192, n);
      if (!b || (uintptr_t)b % 8192) fail("aligned_alloc", n);
      resize_and_free(b, n, seed + 3);
      /* A small block grown large by realloc. */
      unsigned char *s = malloc(1000);
      if (!s) fail("small", n);
      fill(s, 0, 1000, seed + 4);
      s = realloc(s, n);
      if (!s) fail("grow small", n);
      expect(s, 1000, seed + 4, "grown from small");
      resize_and_free(s, n, seed + 5);
    }
  }
  /* Past glibc's largest mmap threshold: glibc's own, unless sampled. */
  long before = page_blocks;
  unsigned char *huge = malloc(40 << 20);
  if (!huge) fail("huge", 40 << 20);
  note(huge);
  blocks--;
  huge[0] = huge[(40 << 20) - 1] = 1;
  free(huge);
  printf("huge_page_block %ld\n", page_blocks - before);
  page_blocks = before;
  printf("page_blocks %ld of %ld ok\n", page_blocks, blocks);
  return 0;
}

static void *kept[8];

__attribute__((noinline)) static void leak_large(void) {
  for (int i = 0; i < 3; i++) {
    char *p = malloc(300 << 10);
    memset(p, i, 300 << 10);
    kept[i] = realloc(p, 600 << 10);
  }
}

__attribute__((noinline)) static void grow_from_small(void) {
  char *p = malloc(1000);
  memset(p, 1, 1000);
  kept[3] = realloc(p, 400 << 10);
}

int main(int argc, char **argv) {
  if (argc > 1 && !strcmp(argv[1], "check")) return check();
  if (argc > 1 && !strcmp(argv[1], "exact")) {
    leak_large();
    grow_from_small();
    printf("kept %p %p %p %p\n", kept[0], kept[1], kept[2], kept[3]);
    return 0;
  }
  fprintf(stderr, "usage: largeblocks check|exact\n");
  return 2;
}
