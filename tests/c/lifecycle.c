/* Allocations across the preload library's life (see early.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *early_take(void **aligned);

int main(void) {
  void *aligned = NULL;
  char *s = early_take(&aligned);
  s = realloc(s, 100000);
  printf("%s\n", s);
  free(s);
  free(aligned);
  return 0;
}
