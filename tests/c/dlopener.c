/* dlopen/dlclose of TLS-using libraries from several threads while others
 * allocate (and create threads), for tests/preload.rs.
 *
 *   dlopener LIB...   each loader thread cycles through the LIBs (distinct
 *                     files, so each dlopen loads a new module with TLS)
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#define LOADERS 4
#define ALLOCATORS 4
#define CYCLES 40

static char **libs;
static int nlibs;
static atomic_int stop, failures;

static void sink(void *p) { __asm__ volatile("" : : "r"(p) : "memory"); }

static void *nothing(void *arg) {
  void *p = malloc(100);
  sink(p);
  free(p);
  return arg;
}

static void *loader(void *arg) {
  int k = (int)(size_t)arg;
  for (int i = 0; i < CYCLES; i++) {
    const char *path = libs[(k + i) % nlibs];
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
      fprintf(stderr, "dlopen %s: %s\n", path, dlerror());
      atomic_fetch_add(&failures, 1);
      continue;
    }
    long (*touch)(long) = (long (*)(long))dlsym(h, "touch");
    if (!touch || touch(i + 1) < i + 1) atomic_fetch_add(&failures, 1);
    /* A failed lookup: glibc allocates the dlerror message. */
    if (dlsym(h, "no_such_symbol") != NULL || dlerror() == NULL) atomic_fetch_add(&failures, 1);
    dlclose(h);
  }
  return NULL;
}

static void *allocator(void *arg) {
  unsigned x = (unsigned)(size_t)arg + 7;
  void *slots[128] = {0};
  int n = 0;
  while (!atomic_load(&stop)) {
    x = x * 1103515245u + 12345u;
    int i = (int)(x >> 8) % 128;
    free(slots[i]);
    slots[i] = (x & 1) ? malloc(1 + (x >> 16) % 5000) : calloc(1, 1 + (x >> 16) % 300);
    sink(slots[i]);
    if (++n % 500 == 0) { /* a new thread: its DTV and TLS come from malloc */
      pthread_t t;
      if (pthread_create(&t, NULL, nothing, NULL) == 0) pthread_join(t, NULL);
    }
  }
  for (int i = 0; i < 128; i++) free(slots[i]);
  return NULL;
}

int main(int argc, char **argv) {
  libs = argv + 1;
  nlibs = argc - 1;
  if (nlibs < 1) return 2;
  pthread_t l[LOADERS], a[ALLOCATORS];
  for (int i = 0; i < ALLOCATORS; i++) pthread_create(&a[i], NULL, allocator, (void *)(size_t)i);
  for (int i = 0; i < LOADERS; i++) pthread_create(&l[i], NULL, loader, (void *)(size_t)i);
  for (int i = 0; i < LOADERS; i++) pthread_join(l[i], NULL);
  atomic_store(&stop, 1);
  for (int i = 0; i < ALLOCATORS; i++) pthread_join(a[i], NULL);
  printf("dlopener: %d loaders x %d cycles, %d failures\n", LOADERS, CYCLES, atomic_load(&failures));
  return atomic_load(&failures) != 0;
}
