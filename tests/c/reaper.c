/* A parent blocked in wait() for its one child, while heapprof dumps it: the
 * dump's copy of the process (see src/profile/copy_process.rs) must be
 * invisible to the program. It counts SIGCHLD, forks a child that lives
 * until stdin closes, says "ready", and blocks in wait(). The test sends
 * SIGUSR2 meanwhile; wait() must return only when the real child exits,
 * with its pid and status, after exactly one SIGCHLD, and then no child is
 * left (ECHILD). Its pthread_atfork handlers count the forks it sees: its
 * own one only. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t sigchld;
static int prepared, in_parent;

static void on_prepare(void) { prepared++; }
static void on_parent(void) { in_parent++; }
void *reaper_kept[4]; /* not static: keeps the allocations */

static void on_sigchld(int sig) {
  (void)sig;
  sigchld++;
}

__attribute__((noinline)) void reaper_leak(void) {
  for (int i = 0; i < 4; i++) {
    reaper_kept[i] = malloc(8192);
    memset(reaper_kept[i], 'r', 8192);
  }
}

int main(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_sigchld;
  sigaction(SIGCHLD, &sa, NULL);
  pthread_atfork(on_prepare, on_parent, NULL);
  reaper_leak();
  pid_t kid = fork();
  if (kid == 0) {
    char buf[64];
    while (read(0, buf, sizeof buf) > 0) {
    }
    _exit(7);
  }
  printf("ready\n");
  fflush(stdout);
  int status = 0;
  pid_t got;
  while ((got = wait(&status)) < 0 && errno == EINTR) {
  }
  int more = wait(NULL);
  int more_errno = errno;
  printf("waited %s status %d sigchld %d then %s; atfork %d %d\n",
         got == kid ? "kid" : "other", WIFEXITED(status) ? WEXITSTATUS(status) : -1,
         (int)sigchld, more < 0 && more_errno == ECHILD ? "ECHILD" : "more",
         prepared, in_parent);
  return 0;
}
