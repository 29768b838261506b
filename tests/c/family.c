/* The whole malloc family, for tests/preload.rs.
 *
 * leak_*  functions leave known objects allocated (exact at HEAPPROF_RATE=1);
 * churn_* functions allocate through every member and free everything, so
 * their stacks must end with nothing in use. The program checks the
 * allocator's contracts itself (alignment, zeroing, usable size, realloc
 * copies) and exits nonzero if one is broken.
 *
 *   family [--jemalloc]    --jemalloc: also prove jemalloc serves the memory
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline))

/* Not static: the compiler must assume someone reads it (see threads.c). */
void *kept[64];
static int nkept;
static int failures;

/* Keeps a pointer reachable, so the compiler cannot drop the allocation. */
static void hold(void *p) {
  if (!p) {
    fprintf(stderr, "allocation failed\n");
    failures++;
  }
  kept[nkept++] = p;
}

static void check(int ok, const char *what) {
  if (!ok) {
    fprintf(stderr, "broken: %s\n", what);
    failures++;
  }
}

static void check_aligned(void *p, size_t align, const char *what) {
  check(p && ((uintptr_t)p % align) == 0, what);
}

/* Writes a pattern (touching the memory like a real program). */
static void fill(void *p, size_t n, int c) {
  memset(p, c, n);
  __asm__ volatile("" : : "r"(p) : "memory");
}

NOINLINE void leak_malloc(void) {
  for (int i = 0; i < 3; i++) {
    void *p = malloc(1000);
    fill(p, 1000, i);
    hold(p);
  }
}

NOINLINE void leak_calloc(void) {
  unsigned char *p = calloc(10, 30);
  unsigned char *q = calloc(1, 77);
  for (int i = 0; i < 300; i++) check(p[i] == 0, "calloc zeroed");
  for (int i = 0; i < 77; i++) check(q[i] == 0, "calloc zeroed");
  hold(p);
  hold(q);
}

NOINLINE void leak_realloc(void) {
  char *p = malloc(100);
  fill(p, 100, 'r');
  p = realloc(p, 5000);
  check(p && p[0] == 'r' && p[99] == 'r', "realloc keeps contents");
  hold(p);
}

NOINLINE void leak_reallocarray(void) {
  char *p = reallocarray(NULL, 10, 40);
  fill(p, 400, 'a');
  p = reallocarray(p, 20, 40);
  check(p && p[399] == 'a', "reallocarray keeps contents");
  volatile size_t huge = SIZE_MAX / 2;
  errno = 0;
  check(reallocarray(p, huge, 4) == NULL && errno == ENOMEM,
        "reallocarray overflow");
  hold(p);
}

NOINLINE void leak_posix_memalign(void) {
  void *p = NULL, *q = NULL;
  check(posix_memalign(&p, 64, 200) == 0, "posix_memalign");
  check_aligned(p, 64, "posix_memalign 64");
  check(posix_memalign(&q, 8192, 300) == 0, "posix_memalign");
  check_aligned(q, 8192, "posix_memalign 8192");
  void *bad = (void *)1;
  check(posix_memalign(&bad, 3, 10) == EINVAL && bad == (void *)1,
        "posix_memalign EINVAL");
  hold(p);
  hold(q);
}

NOINLINE void leak_aligned_alloc(void) {
  void *p = aligned_alloc(128, 256);
  check_aligned(p, 128, "aligned_alloc 128");
  hold(p);
}

NOINLINE void leak_memalign(void) {
  void *p = memalign(32, 100);
  check_aligned(p, 32, "memalign 32");
  hold(p);
}

NOINLINE void leak_valloc(void) {
  void *p = valloc(1234);
  check_aligned(p, 4096, "valloc");
  hold(p);
}

NOINLINE void leak_pvalloc(void) {
  void *p = pvalloc(5000);
  check_aligned(p, 4096, "pvalloc");
  check(malloc_usable_size(p) >= 8192, "pvalloc rounds up to pages");
  hold(p);
}

NOINLINE void leak_strdup(void) { hold(strdup("a string a library copied")); }

/* Every member, every object freed. Sizes vary so that at a low rate some
 * calls are sampled and some not, in every combination realloc can meet. */
NOINLINE void churn_all(int rounds) {
  for (int r = 0; r < rounds; r++) {
    size_t n = 16 + (size_t)(r * 37 % 3000);
    char *a = malloc(n);
    fill(a, n, 1);
    check(malloc_usable_size(a) >= n, "usable size");
    char *b = calloc(r % 7 + 1, n);
    check(b[0] == 0 && b[n - 1] == 0, "calloc zeroed");
    a = realloc(a, n * 3); /* grow */
    check(a[n - 1] == 1, "realloc grow keeps contents");
    a = realloc(a, n / 2 + 1); /* shrink */
    check(a[n / 2] == 1, "realloc shrink keeps contents");
    char *c = realloc(NULL, n); /* = malloc */
    fill(c, n, 2);
    check(realloc(c, 0) == NULL, "realloc(p, 0) frees"); /* = free */
    char *d = reallocarray(NULL, 3, n);
    d = reallocarray(d, 5, n);
    void *e = NULL;
    check(posix_memalign(&e, 64 << (r % 8), n) == 0, "posix_memalign");
    check_aligned(e, 64 << (r % 8), "posix_memalign");
    void *f = aligned_alloc(256, (n + 255) & ~(size_t)255);
    check_aligned(f, 256, "aligned_alloc");
    void *g = memalign(16 << (r % 10), n);
    check_aligned(g, 16 << (r % 10), "memalign");
    void *h = valloc(n);
    check_aligned(h, 4096, "valloc");
    void *i = pvalloc(n);
    check_aligned(i, 4096, "pvalloc");
    char *s = strdup("churn");
    free(a);
    free(b);
    free(d);
    free(e);
    free(f);
    free(g);
    free(h);
    free(i);
    free(s);
    free(NULL);
  }
}

/* Proves jemalloc (chained after heapprof) hands out the memory: its
 * per-thread counter of allocated bytes grows by what we allocate. Many
 * blocks, because the ones heapprof samples come from its own sample heap
 * instead: at least one of them must be jemalloc's. */
static int jemalloc_serves(void) {
  int (*mallctl)(const char *, void *, size_t *, void *, size_t) =
      (int (*)(const char *, void *, size_t *, void *, size_t))dlsym(RTLD_DEFAULT, "mallctl");
  if (!mallctl) {
    puts("jemalloc not loaded");
    return 0;
  }
  uint64_t before = 0, after = 0;
  size_t len = sizeof before;
  if (mallctl("thread.allocated", &before, &len, NULL, 0) != 0) {
    puts("jemalloc has no thread.allocated");
    return 0;
  }
  enum { N = 256, SIZE = 4096 };
  static void *blocks[N];
  for (int i = 0; i < N; i++) {
    blocks[i] = malloc(SIZE);
    fill(blocks[i], SIZE, 3);
  }
  mallctl("thread.allocated", &after, &len, NULL, 0);
  for (int i = 0; i < N; i++) free(blocks[i]);
  if (after - before < SIZE) {
    puts("jemalloc did not serve malloc");
    return 0;
  }
  puts("jemalloc serves malloc");
  return 1;
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "--jemalloc") == 0 && !jemalloc_serves()) return 2;
  leak_malloc();
  free(kept[--nkept]); /* one of the three back */
  leak_calloc();
  leak_realloc();
  leak_reallocarray();
  leak_posix_memalign();
  leak_aligned_alloc();
  leak_memalign();
  leak_valloc();
  leak_pvalloc();
  leak_strdup();
  churn_all(300);
  printf("family: %d objects kept, %d failures\n", nkept, failures);
  return failures ? 1 : 0;
}
