/* A minimal allocator for LD_PRELOAD after heapprof: malloc, free, calloc
 * and realloc only (glibc's underneath, through its __libc_ names), no
 * aligned function at all, as many small custom allocators are. heapprof
 * must serve the aligned calls itself (the program's, and its own: zlib's
 * state wants 64-byte alignment) without taking them from glibc and without
 * failing a dump. */
#include <stddef.h>

extern void *__libc_malloc(size_t);
extern void __libc_free(void *);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);

void *malloc(size_t n) { return __libc_malloc(n); }
void free(void *p) { __libc_free(p); }
void *calloc(size_t n, size_t size) { return __libc_calloc(n, size); }
void *realloc(void *p, size_t n) { return __libc_realloc(p, n); }
