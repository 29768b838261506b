/* fork and exec under the preload library, for tests/preload.rs.
 *
 *   forker fork N     threads keep allocating while main forks N children;
 *                     each child leaks 777 bytes in child_leak, churns, and
 *                     exits normally (so writes its own profile at exit)
 *   forker exec PROG  a child execs PROG; prints what PROG printed
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline))

void *child_kept; /* not static: keeps the allocation (see threads.c) */
static atomic_int stop;

static void sink(void *p) { __asm__ volatile("" : : "r"(p) : "memory"); }

static void *churn(void *arg) {
  unsigned x = (unsigned)(size_t)arg * 2654435761u + 1;
  void *slots[64] = {0};
  while (!atomic_load(&stop)) {
    x = x * 1103515245u + 12345u;
    int i = (int)(x >> 8) % 64;
    free(slots[i]);
    slots[i] = malloc(1 + (x >> 16) % 2000);
    sink(slots[i]);
  }
  for (int i = 0; i < 64; i++) free(slots[i]);
  return NULL;
}

NOINLINE void child_leak(void) {
  child_kept = malloc(777);
  memset(child_kept, 'c', 777);
}

static int forks(int n) {
  pthread_t t[3];
  for (int i = 0; i < 3; i++) pthread_create(&t[i], NULL, churn, (void *)(size_t)i);
  int bad = 0;
  for (int i = 0; i < n; i++) {
    usleep(2000); /* let the threads get going */
    pid_t pid = fork();
    if (pid == 0) {
      child_leak();
      for (int j = 0; j < 200; j++) {
        void *p = malloc((size_t)j * 10 + 1);
        sink(p);
        free(p);
      }
      exit(0);
    }
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
        WEXITSTATUS(status) != 0)
      bad++;
  }
  atomic_store(&stop, 1);
  for (int i = 0; i < 3; i++) pthread_join(t[i], NULL);
  printf("forked %d children, %d failed\n", n, bad);
  return bad != 0;
}

static int exec_child(const char *prog) {
  fflush(stdout);
  pid_t pid = fork();
  if (pid == 0) {
    execl(prog, prog, (char *)NULL);
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  printf("exec child exited %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[1], "fork") == 0) return forks(atoi(argv[2]));
  if (argc == 3 && strcmp(argv[1], "exec") == 0) return exec_child(argv[2]);
  fprintf(stderr, "usage: forker fork N | forker exec PROG\n");
  return 2;
}
