/* A malloc family that counts the calls each thread makes and forwards them
 * to glibc (through its __libc_* names, which never come back here). Listed
 * after the preload library in LD_PRELOAD, it is the "real" allocator the
 * library forwards to, so it sees every allocation the library makes:
 * countmalloc_mine() tells a program how many its own thread caused. */
#include <errno.h>
#include <stddef.h>

extern void *__libc_malloc(size_t);
extern void __libc_free(void *);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void *__libc_valloc(size_t);
extern void *__libc_pvalloc(size_t);

static __thread long mine;

long countmalloc_mine(void) { return mine; }

void *malloc(size_t n) {
  mine++;
  return __libc_malloc(n);
}
void free(void *p) { __libc_free(p); }
void *calloc(size_t n, size_t s) {
  mine++;
  return __libc_calloc(n, s);
}
void *realloc(void *p, size_t n) {
  mine++;
  return __libc_realloc(p, n);
}
void *memalign(size_t a, size_t n) {
  mine++;
  return __libc_memalign(a, n);
}
void *aligned_alloc(size_t a, size_t n) {
  mine++;
  return __libc_memalign(a, n);
}
int posix_memalign(void **out, size_t a, size_t n) {
  mine++;
  void *p = __libc_memalign(a, n);
  if (!p) return ENOMEM;
  *out = p;
  return 0;
}
void *valloc(size_t n) {
  mine++;
  return __libc_valloc(n);
}
void *pvalloc(size_t n) {
  mine++;
  return __libc_pvalloc(n);
}
