/* A plugin for unwind_reload.c: allocates from a short recursion, so the
 * stack walk needs rules for the plugin's own code. */
#include <stdlib.h>

static void *volatile sink;

__attribute__((noinline)) static int nest(int depth, int n) {
  char pad[depth * 16 + 8]; /* a variable frame: rbp-based CFA */
  pad[0] = (char)depth;
  sink = pad;
  if (depth == 0) {
    for (int i = 0; i < n; i++) {
      void *p = malloc(32 + i % 64);
      sink = p;
      free(p);
    }
    return pad[0];
  }
  return nest(depth - 1, n) + pad[0];
}

int plugin_run(int n) { return nest(4, n); }
