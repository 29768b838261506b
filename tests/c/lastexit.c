/* Programs whose last thread ends with pthread_exit, for heapprof's
 * control::lifetime: the process must end then, as bare, with status 0,
 * its atexit handlers run and its output flushed.
 *   main       a thread allocates and ends; main joins it, then calls
 *              pthread_exit (main is the last thread)
 *   worker     main calls pthread_exit at once; the thread ends later, last
 *   single     no thread at all: main calls pthread_exit
 *   fork       a thread forks; the child (that thread alone) calls
 *              pthread_exit; the parent reports the child's status
 *   forks      while a thread grows the heap (so the dumper is busy
 *              taking growth dumps), another forks 100 children in turn,
 *              each calling pthread_exit as in fork; a child not ended
 *              within 10 s is killed and reported
 *   term       main calls pthread_exit; the thread waits for SIGTERM (its
 *              handler sets a flag), prints "got SIGTERM" and ends
 *   pause      main calls pthread_exit; the thread waits in pause() for ever
 *              (SIGTERM's default action ends the process)
 * Each prints "ready" (flushed) once its threads are set up. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void *volatile sink;
static volatile sig_atomic_t got_term;

static void at_exit_handler(void) { printf("atexit ran\n"); }

__attribute__((noinline)) static void allocate(const char *who) {
  for (int i = 0; i < 1000; i++) {
    char *p = malloc(1000 + i);
    p[0] = 1;
    sink = p;
    free(p);
  }
  sink = malloc(4096); /* kept: shows in the exit profile */
  printf("%s allocated\n", who);
}

static void *ends(void *arg) {
  usleep((unsigned)(long)arg * 1000);
  allocate("thread");
  return NULL;
}

static void on_term(int sig) {
  (void)sig;
  got_term = 1;
}

static void *waits_for_term(void *arg) {
  (void)arg;
  printf("ready\n");
  fflush(stdout);
  while (!got_term) pause();
  printf("got SIGTERM\n");
  pthread_exit(NULL);
}

static void *pauses(void *arg) {
  (void)arg;
  printf("ready\n");
  fflush(stdout);
  for (;;) pause();
}

static void *forks(void *arg) {
  (void)arg;
  fflush(stdout);
  pid_t pid = fork();
  if (pid == 0) {
    allocate("child");
    fflush(stdout);
    pthread_exit(NULL);
  }
  int st = 0;
  waitpid(pid, &st, 0);
  printf("child status %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
  return NULL;
}

static volatile int stop_growing;

static void *grows(void *arg) {
  (void)arg;
  while (!stop_growing) {
    sink = malloc(256 << 10); /* kept */
    memset(sink, 1, 4096);
    usleep(10000);
  }
  return NULL;
}

static void *forks_many(void *arg) {
  (void)arg;
  int ok = 0;
  fflush(stdout);
  for (int i = 0; i < 100; i++) {
    pid_t pid = fork();
    if (pid == 0) {
      for (int j = 0; j < 100; j++) free(malloc(100 + j));
      pthread_exit(NULL);
    }
    int st = -1;
    for (int waited = 0; waitpid(pid, &st, WNOHANG) == 0; waited++) {
      if (waited == 10000) {
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
        printf("child %d hung\n", i);
        break;
      }
      usleep(1000);
    }
    ok += WIFEXITED(st) && WEXITSTATUS(st) == 0;
  }
  printf("%d of 100 children ended with status 0\n", ok);
  return NULL;
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "main";
  pthread_t t;
  atexit(at_exit_handler);
  allocate("main");
  if (!strcmp(mode, "main")) {
    pthread_create(&t, NULL, ends, (void *)0L);
    pthread_join(t, NULL);
  } else if (!strcmp(mode, "worker")) {
    pthread_create(&t, NULL, ends, (void *)200L);
  } else if (!strcmp(mode, "fork")) {
    pthread_create(&t, NULL, forks, NULL);
    pthread_join(t, NULL);
  } else if (!strcmp(mode, "forks")) {
    pthread_t g;
    pthread_create(&g, NULL, grows, NULL);
    pthread_create(&t, NULL, forks_many, NULL);
    pthread_join(t, NULL);
    stop_growing = 1;
    pthread_join(g, NULL);
  } else if (!strcmp(mode, "term")) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    printf("main ends\n");
    pthread_create(&t, NULL, waits_for_term, NULL);
    pthread_exit(NULL);
  } else if (!strcmp(mode, "pause")) {
    printf("main ends\n");
    pthread_create(&t, NULL, pauses, NULL);
    pthread_exit(NULL);
  } else if (strcmp(mode, "single")) {
    fprintf(stderr, "unknown mode %s\n", mode);
    return 2;
  }
  printf("main ends\n");
  pthread_exit(NULL);
}
