/* Calls the functions the preload library interposes for its dump signal,
 * N times each (argv[1]), so callgrind can count what a wrapper adds:
 * pthread_sigmask (a set-and-restore pair), sigprocmask (a read), ppoll
 * with a temporary mask and no wait, and sigaction (a read, on a signal
 * that is not heapprof's and on heapprof's). */
#define _GNU_SOURCE
#include <poll.h>
#include <signal.h>
#include <stdlib.h>

int main(int argc, char **argv) {
  long n = argc > 1 ? atol(argv[1]) : 0;
  sigset_t one, old, none;
  sigemptyset(&one);
  sigaddset(&one, SIGWINCH);
  sigemptyset(&none);
  struct timespec zero = {0, 0};
  struct sigaction sa;
  for (long i = 0; i < n; i++) {
    pthread_sigmask(SIG_BLOCK, &one, &old);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    sigprocmask(SIG_BLOCK, NULL, &old);
    ppoll(NULL, 0, &zero, &none);
    sigaction(SIGWINCH, NULL, &sa);
    sigaction(SIGUSR2, NULL, &sa);
  }
  return 0;
}
