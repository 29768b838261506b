/* The sample heap's contracts, for tests/preload.rs (every check is the
 * program's own: it exits nonzero and says what broke).
 *
 *   sampleheap hold N      keeps N objects of 16-256 bytes (in hold_small),
 *                          prints "rss_anon_kb A hwm_kb H" from /proc/self/status
 *   sampleheap align       every aligned family member, alignments 16 B to
 *                          1 MiB, kept (al_*); calloc of reused memory is zero
 *   sampleheap realloc     20000 reallocs over 64 live blocks of 1 B to 40 KB,
 *                          contents and malloc_usable_size checked each time
 *   sampleheap grow        do_grow: buffers grown by realloc to 8 MB and
 *                          shrunk back (one alone, two in turn, one from a
 *                          64 KiB-aligned block), contents, alignment and
 *                          malloc_usable_size checked each step; prints the
 *                          calls and bytes it asked for and how often the
 *                          lone buffer moved once 64 KiB or more
 *   sampleheap fork        parent_alloc keeps 11 objects; a forked child
 *                          frees them all and keeps 5 of its own (child_alloc)
 *   sampleheap exhaust     fill_up keeps 3000 x 1000 B, frees them, then
 *                          after_free keeps 100 x 1000 B
 */
#define _GNU_SOURCE
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline))

void *kept[2000000]; /* not static: keeps the allocations (see threads.c) */
static int nkept, failures;

static void fail(const char *what, size_t a, size_t b) {
  fprintf(stderr, "FAIL %s (%zu, %zu)\n", what, a, b);
  failures++;
}

static void keep(void *p) { kept[nkept++] = p; }

/* The compiler must assume the block is used (else it may drop a malloc,
 * memset and free altogether). */
static void sink(void *p) { __asm__ volatile("" : : "r"(p) : "memory"); }

static uint64_t rng = 88172645463325252ull;
static uint64_t next(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

static long status_kb(const char *field) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long v = -1;
  size_t n = strlen(field);
  while (f && fgets(line, sizeof line, f))
    if (strncmp(line, field, n) == 0) v = atol(line + n + 1);
  if (f) fclose(f);
  return v;
}

NOINLINE void hold_small(int n) {
  for (int i = 0; i < n; i++) {
    size_t size = 16 + next() % 241;
    char *p = malloc(size);
    memset(p, i, size);
    keep(p);
  }
}

static void check_aligned(const char *what, void *p, size_t align, size_t size) {
  if (!p) return fail(what, align, size);
  if ((uintptr_t)p % align) fail(what, align, (uintptr_t)p % align);
  if (malloc_usable_size(p) < size) fail("usable", size, malloc_usable_size(p));
  memset(p, 0x5a, size);
  keep(p);
}

NOINLINE void al_posix(size_t align, size_t size) {
  void *p = NULL;
  if (posix_memalign(&p, align, size) != 0) p = NULL;
  check_aligned("posix_memalign", p, align, size);
}
NOINLINE void al_aligned(size_t align, size_t size) {
  check_aligned("aligned_alloc", aligned_alloc(align, size), align, size);
}
NOINLINE void al_memalign(size_t align, size_t size) {
  check_aligned("memalign", memalign(align, size), align, size);
}
NOINLINE void al_valloc(size_t size) { check_aligned("valloc", valloc(size), 4096, size); }
NOINLINE void al_pvalloc(size_t size) { check_aligned("pvalloc", pvalloc(size), 4096, size); }

/* Memory freed and handed out again is dirty; calloc must zero it. */
NOINLINE void calloc_reused(void) {
  for (size_t size = 1; size < 70000; size = size * 3 / 2 + 1) {
    for (int round = 0; round < 3; round++) {
      char *d = malloc(size);
      memset(d, 0xff, size);
      sink(d);
      free(d);
      unsigned char *z = calloc(1, size);
      for (size_t i = 0; i < size; i++)
        if (z[i]) {
          fail("calloc not zero", size, i);
          break;
        }
      free(z);
    }
  }
}

static int do_align(void) {
  for (size_t align = 16; align <= (1 << 20); align *= 2) {
    al_posix(align, 100);
    al_posix(align, 3 * align + 5);
    al_aligned(align, align);
    al_aligned(align, 4 * align);
    al_memalign(align, 100);
    al_memalign(align, 2 * align + 1);
  }
  al_valloc(100);
  al_valloc(50000);
  al_pvalloc(100);
  al_pvalloc(50000);
  calloc_reused();
  printf("align: %d objects kept, %d failures\n", nkept, failures);
  return failures != 0;
}

static unsigned char pattern(int slot, unsigned gen, size_t i) {
  return (unsigned char)(slot * 31 + gen * 7 + i * 13 + (i >> 8));
}

NOINLINE int do_realloc(void) {
  enum { SLOTS = 64 };
  unsigned char *p[SLOTS] = {0};
  size_t size[SLOTS] = {0};
  unsigned gen[SLOTS] = {0};
  for (int step = 0; step < 20000; step++) {
    int s = (int)(next() % SLOTS);
    size_t n = 1 + next() % (next() % 8 == 0 ? 40000 : 600);
    unsigned char *q = realloc(p[s], n);
    if (!q) return fail("realloc", n, 0), 1;
    for (size_t i = 0; i < (n < size[s] ? n : size[s]); i++)
      if (q[i] != pattern(s, gen[s], i)) {
        fail("realloc lost contents", size[s], n);
        return 1;
      }
    if (malloc_usable_size(q) < n) fail("usable after realloc", n, malloc_usable_size(q));
    gen[s]++;
    for (size_t i = 0; i < n; i++) q[i] = pattern(s, gen[s], i);
    p[s] = q;
    size[s] = n;
  }
  for (int s = 0; s < SLOTS; s++) free(p[s]);
  return failures != 0;
}

static long grow_calls, grow_bytes;

/* realloc(p, n) of slot `slot`'s buffer (old bytes `old`, generation *gen):
 * checks what must hold, then refills it for the next step. */
static unsigned char *resize(unsigned char *p, size_t old, size_t n, int slot, unsigned *gen) {
  unsigned char *q = realloc(p, n);
  grow_calls++;
  grow_bytes += (long)n;
  if (!q) {
    fail("grow: realloc", old, n);
    exit(1);
  }
  if ((uintptr_t)q % 16) fail("grow: alignment", n, (uintptr_t)q % 16);
  for (size_t i = 0; i < (n < old ? n : old); i++)
    if (q[i] != pattern(slot, *gen, i)) {
      fail("grow: lost contents", old, n);
      break;
    }
  if (malloc_usable_size(q) < n) fail("grow: usable", n, malloc_usable_size(q));
  ++*gen;
  for (size_t i = 0; i < n; i++) q[i] = pattern(slot, *gen, i);
  return q;
}

/* Returns the lone buffer's moves (its report is printed by main: stdio's
 * buffer is no allocation of do_grow's). */
NOINLINE int do_grow(void) {
  enum { MAX = 8 << 20 };
  unsigned gen[4] = {0};
  int moves = 0;
  /* One buffer alone, 1 B to 8 MB and back. */
  unsigned char *a = NULL;
  size_t n = 0;
  for (size_t m = 1; m <= MAX; m = m * 5 / 4 + 1) {
    unsigned char *q = resize(a, n, m, 0, &gen[0]);
    if (n >= 65536 && q != a) moves++;
    a = q;
    n = m;
  }
  for (size_t m = n * 4 / 5; m > 0; m = m * 4 / 5) {
    a = resize(a, n, m, 0, &gen[0]);
    n = m;
  }
  free(a);
  /* Two in turn, to 4 MB. */
  unsigned char *b = NULL, *c = NULL;
  size_t nb = 0, nc = 0;
  for (size_t m = 1; m <= MAX / 2; m = m * 5 / 4 + 1) {
    b = resize(b, nb, m, 1, &gen[1]);
    nb = m;
    c = resize(c, nc, m + 1000, 2, &gen[2]);
    nc = m + 1000;
  }
  free(b);
  free(c);
  /* From a 64 KiB-aligned block. */
  void *d = NULL;
  size_t nd = 100000;
  if (posix_memalign(&d, 65536, nd) != 0) {
    fail("grow: posix_memalign", nd, 0);
    exit(1);
  }
  grow_calls++;
  grow_bytes += (long)nd;
  for (size_t i = 0; i < nd; i++) ((unsigned char *)d)[i] = pattern(3, gen[3], i);
  for (size_t m = nd + 1; m <= MAX / 2; m = m * 5 / 4 + 1) {
    d = resize(d, nd, m, 3, &gen[3]);
    nd = m;
  }
  free(d);
  return moves;
}

NOINLINE void parent_alloc(void) {
  for (int i = 0; i < 10; i++) keep(memset(malloc(100), 'p', 100));
  keep(memset(malloc(100000), 'P', 100000));
}

NOINLINE void child_alloc(void) {
  for (int i = 0; i < 5; i++) keep(memset(malloc(300), 'c', 300));
}

static int do_fork(void) {
  parent_alloc();
  pid_t pid = fork();
  if (pid == 0) {
    for (int i = 0; i < nkept; i++) {
      unsigned char *c = kept[i];
      if (c[0] != (i < 10 ? 'p' : 'P')) fail("child sees parent's object", i, c[0]);
      free(kept[i]);
    }
    nkept = 0;
    child_alloc();
    exit(failures != 0);
  }
  int status = 0;
  if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
    fail("child", (size_t)status, 0);
  printf("fork: %d failures\n", failures);
  return failures != 0;
}

NOINLINE void fill_up(void) {
  for (int i = 0; i < 3000; i++) keep(memset(malloc(1000), 'f', 1000));
}

NOINLINE void after_free(void) {
  for (int i = 0; i < 100; i++) keep(memset(malloc(1000), 'a', 1000));
}

static int do_exhaust(void) {
  fill_up();
  for (int i = 0; i < nkept; i++) {
    unsigned char *c = kept[i];
    if (c[999] != 'f') fail("contents", i, c[999]);
    free(kept[i]);
  }
  nkept = 0;
  after_free();
  printf("exhaust: %d failures\n", failures);
  return failures != 0;
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "";
  if (strcmp(mode, "hold") == 0 && argc > 2) {
    hold_small(atoi(argv[2]));
    printf("rss_anon_kb %ld hwm_kb %ld\n", status_kb("RssAnon:"), status_kb("VmHWM:"));
    return 0;
  }
  if (strcmp(mode, "align") == 0) return do_align();
  if (strcmp(mode, "realloc") == 0) {
    int bad = do_realloc();
    printf("realloc: %d failures\n", failures);
    return bad;
  }
  if (strcmp(mode, "grow") == 0) {
    int moves = do_grow();
    printf("grow: %ld calls, %ld bytes, %d moves, %d failures\n", grow_calls, grow_bytes, moves,
           failures);
    return failures != 0;
  }
  if (strcmp(mode, "fork") == 0) return do_fork();
  if (strcmp(mode, "exhaust") == 0) return do_exhaust();
  fprintf(stderr, "usage: sampleheap hold N | align | realloc | grow | fork | exhaust\n");
  return 2;
}
