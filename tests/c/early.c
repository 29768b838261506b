/* A shared library the test program links against, so its constructor runs
 * before the preload library's (the loader initialises a program's
 * dependencies first) and its destructor during exit: allocations before
 * heapprof starts and after its at-exit dump must be served and freed
 * correctly, including realloc/free of early blocks after start-up. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *early_block;
static void *early_aligned;

__attribute__((constructor)) static void early_init(void) {
  for (int i = 0; i < 100; i++) {
    void *p = malloc((size_t)i * 40 + 1);
    free(p);
  }
  early_block = malloc(100);
  strcpy(early_block, "allocated before heapprof started");
  posix_memalign(&early_aligned, 4096, 10000);
}

/* Hands the early blocks to the program, which resizes and frees them. */
char *early_take(void **aligned) {
  *aligned = early_aligned;
  return early_block;
}

__attribute__((destructor)) static void early_fini(void) {
  char *p = calloc(1, 5000);
  p = realloc(p, 20000);
  free(p);
  printf("early fini ok\n");
}
