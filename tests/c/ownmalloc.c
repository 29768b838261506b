/* A program with its own malloc family (a bump allocator), exported to the
 * libraries it uses: LD_PRELOAD cannot interpose it, and heapprof must say
 * so once without changing what the program does. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static _Alignas(4096) char heap[64 << 20];
static size_t used;

static void *bump(size_t align, size_t n) {
  size_t start = (used + sizeof(size_t) + align - 1) & ~(align - 1);
  if (start + n > sizeof heap) {
    errno = ENOMEM;
    return NULL;
  }
  ((size_t *)(heap + start))[-1] = n;
  used = start + n;
  return heap + start;
}

void *malloc(size_t n) { return bump(16, n); }
void free(void *p) { (void)p; }
void *calloc(size_t n, size_t s) { return bump(16, n * s); } /* never reused: zero */
size_t malloc_usable_size(void *p) { return p ? ((size_t *)p)[-1] : 0; }
void *realloc(void *p, size_t n) {
  void *q = bump(16, n);
  if (p && q) memcpy(q, p, malloc_usable_size(p) < n ? malloc_usable_size(p) : n);
  return q;
}
void *memalign(size_t a, size_t n) { return bump(a < 16 ? 16 : a, n); }
void *aligned_alloc(size_t a, size_t n) { return memalign(a, n); }
void *valloc(size_t n) { return memalign(4096, n); }
void *pvalloc(size_t n) { return memalign(4096, (n + 4095) & ~(size_t)4095); }
int posix_memalign(void **out, size_t a, size_t n) {
  void *p = memalign(a, n);
  if (!p) return ENOMEM;
  *out = p;
  return 0;
}

int main(void) {
  char *s = strdup("own malloc");
  printf("%s, %zu bytes used\n", s, used > 0 ? (size_t)1 : (size_t)0);
  return 0;
}
