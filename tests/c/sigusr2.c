/* A program with its own SIGUSR2 handler, installed in main (after the
 * preload library's constructor took the signal): it must keep working. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static volatile sig_atomic_t got;
void *sig_kept; /* not static: keeps the allocation (see threads.c) */

static void on_usr2(int sig) {
  (void)sig;
  got++;
}

int main(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_usr2;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGUSR2, &sa, NULL) != 0) return 1;
  for (int i = 0; i < 3; i++) {
    sig_kept = malloc(100 + (size_t)i);
    raise(SIGUSR2);
  }
  printf("handler ran %d times\n", (int)got);
  return got == 3 ? 0 : 1;
}
