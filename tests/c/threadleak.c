/* Threads that never exit, for tests/preload.rs (the threads profile).
 *
 *   threadleak exact
 *     leaves exactly, then prints "ready default_stack=N" (glibc's default
 *     stack size) and waits for a line on stdin:
 *       leak_blocked       LEAKED joinable threads blocked forever, named "leaker"
 *       leak_detached      DETACHED detached threads blocked forever
 *     and none from these sites, whose threads have all ended:
 *       churn_joined       CHURN threads created and joined
 *       churn_exit         EXITS threads ending in pthread_exit, joined
 *       churn_cancelled    CANCELS threads blocked, cancelled, joined
 *       churn_detached     DETACHED_EXITS detached threads that return
 *       churn_exit_nested  NESTED_EXITS threads ending in pthread_exit two
 *                          calls deep, under a cleanup handler of their own
 *                          (checked to run), joined
 *       churn_detached_exit  DETACHED_PTHREAD_EXITS detached threads ending
 *                          in pthread_exit
 *       churn_cancel_async ASYNC_CANCELS threads spinning with asynchronous
 *                          cancellation, cancelled, joined
 *       churn_detached_cancelled  DETACHED_CANCELS detached threads blocked,
 *                          then cancelled
 *     A second "ready" line follows once the LEAKED joinable ones are
 *     cancelled and joined (the test dumps at each); then it waits for
 *     another line or end of input and exits.
 *   threadleak grow ROUNDS MS
 *     each round leaks 2 threads at leak_blocked and churns 20 at
 *     churn_joined, then sleeps MS milliseconds; prints "done" and exits.
 *   threadleak heapgrow ROUNDS MS
 *     each round leaks 64 KiB of heap at leak_heap, 16 KiB at a cache
 *     (cache_fill) in the first quarter of the rounds only, and one thread
 *     at leak_blocked, then sleeps MS milliseconds; prints "done" and exits.
 *   threadleak fork
 *     leaks 3 threads at leak_blocked, forks a child from main (which exits
 *     at once), then a thread created at fork_site forks a child that exits
 *     from that thread; prints "forked". At exit the parent has 3 live
 *     threads, the first child none, the second one: the forking thread.
 *   threadleak storm THREADS PER_THREAD
 *     THREADS threads each create and join PER_THREAD threads that add to a
 *     checksum; prints the checksum (identical with and without heapprof).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline))
#define LEAKED 7
#define DETACHED 3
#define CHURN 200
#define EXITS 50
#define CANCELS 30
#define DETACHED_EXITS 40
#define NESTED_EXITS 20
#define DETACHED_PTHREAD_EXITS 20
#define ASYNC_CANCELS 10
#define DETACHED_CANCELS 10

static void *block_forever(void *arg) {
  if (arg) pthread_setname_np(pthread_self(), (const char *)arg);
  for (;;) pause(); /* a cancellation point; signals just loop */
  return NULL;
}

static void *quick(void *arg) { return arg; }

static void *exits(void *arg) {
  pthread_exit(arg);
  return NULL;
}

static atomic_int cleanups_run;

static void count_cleanup(void *arg) {
  (void)arg;
  atomic_fetch_add(&cleanups_run, 1);
}

NOINLINE static void exit_deepest(void) { pthread_exit(NULL); }

NOINLINE static void exit_deeper(void) {
  exit_deepest();
  __asm__ volatile("" ::: "memory"); /* not a tail call */
}

static void *exits_nested(void *arg) {
  pthread_cleanup_push(count_cleanup, arg);
  exit_deeper();
  pthread_cleanup_pop(0);
  return NULL;
}

static atomic_int spinning;

static void *spin_async(void *arg) {
  pthread_setcanceltype(PTHREAD_CANCEL_ASYNCHRONOUS, NULL);
  atomic_store(&spinning, 1);
  for (;;) __asm__ volatile("" ::: "memory"); /* no cancellation point */
  return arg;
}

static void check(int rc, const char *what) {
  if (rc != 0) {
    fprintf(stderr, "%s failed: %s\n", what, strerror(rc));
    exit(1);
  }
}

NOINLINE void leak_blocked(pthread_t *out) {
  check(pthread_create(out, NULL, block_forever, "leaker"), "pthread_create");
}

NOINLINE void leak_detached(void) {
  pthread_attr_t a;
  pthread_attr_init(&a);
  pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&a, 1 << 20);
  pthread_t t;
  check(pthread_create(&t, &a, block_forever, NULL), "pthread_create");
  pthread_attr_destroy(&a);
}

NOINLINE void churn_joined(void) {
  pthread_t t;
  check(pthread_create(&t, NULL, quick, NULL), "pthread_create");
  pthread_join(t, NULL);
}

NOINLINE void churn_exit(void) {
  pthread_t t;
  check(pthread_create(&t, NULL, exits, NULL), "pthread_create");
  pthread_join(t, NULL);
}

NOINLINE void churn_cancelled(void) {
  pthread_t t;
  check(pthread_create(&t, NULL, block_forever, NULL), "pthread_create");
  pthread_cancel(t);
  void *res;
  pthread_join(t, &res);
  if (res != PTHREAD_CANCELED) {
    fprintf(stderr, "not cancelled\n");
    exit(1);
  }
}


NOINLINE void churn_exit_nested(void) {
  pthread_t t;
  check(pthread_create(&t, NULL, exits_nested, NULL), "pthread_create");
  pthread_join(t, NULL);
}

static pthread_t detached(void *(*fn)(void *)) {
  pthread_attr_t a;
  pthread_attr_init(&a);
  pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
  pthread_t t;
  check(pthread_create(&t, &a, fn, NULL), "pthread_create");
  pthread_attr_destroy(&a);
  return t;
}

NOINLINE void churn_detached(void) { detached(quick); }

NOINLINE void churn_detached_exit(void) { detached(exits); }

NOINLINE void churn_cancel_async(void) {
  pthread_t t;
  atomic_store(&spinning, 0);
  check(pthread_create(&t, NULL, spin_async, NULL), "pthread_create");
  while (!atomic_load(&spinning)) usleep(100);
  pthread_cancel(t);
  void *res;
  pthread_join(t, &res);
  if (res != PTHREAD_CANCELED) {
    fprintf(stderr, "not cancelled\n");
    exit(1);
  }
}

/* Returns the thread, which stays valid until it is cancelled. */
NOINLINE pthread_t churn_detached_cancelled(void) { return detached(block_forever); }

/* Threads of this process the kernel still has. */
static int tasks(void) {
  DIR *d = opendir("/proc/self/task");
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) n += e->d_name[0] != '.';
  closedir(d);
  return n;
}

static void wait_for_stdin_line(void) {
  char buf[64];
  if (!fgets(buf, sizeof buf, stdin)) return;
}

static int exact(void) {
  int base = tasks(); /* main and heapprof's dumper */
  pthread_t leaked[LEAKED];
  for (int i = 0; i < LEAKED; i++) leak_blocked(&leaked[i]);
  for (int i = 0; i < DETACHED; i++) leak_detached();
  for (int i = 0; i < CHURN; i++) churn_joined();
  for (int i = 0; i < EXITS; i++) churn_exit();
  for (int i = 0; i < CANCELS; i++) churn_cancelled();
  for (int i = 0; i < DETACHED_EXITS; i++) churn_detached();
  for (int i = 0; i < NESTED_EXITS; i++) churn_exit_nested();
  for (int i = 0; i < DETACHED_PTHREAD_EXITS; i++) churn_detached_exit();
  for (int i = 0; i < ASYNC_CANCELS; i++) churn_cancel_async();
  for (int i = 0; i < DETACHED_CANCELS; i++) pthread_cancel(churn_detached_cancelled());
  if (atomic_load(&cleanups_run) != NESTED_EXITS) {
    fprintf(stderr, "%d cleanup handlers ran, not %d\n", atomic_load(&cleanups_run), NESTED_EXITS);
    exit(1);
  }
  /* Detached threads that ended are gone once the kernel says so (heapprof
   * forgot them before, as they left their start routines). */
  while (tasks() != base + LEAKED + DETACHED) usleep(1000);
  pthread_attr_t dflt;
  size_t stack = 0;
  pthread_getattr_default_np(&dflt);
  pthread_attr_getstacksize(&dflt, &stack);
  pthread_attr_destroy(&dflt);
  printf("ready default_stack=%zu\n", stack);
  fflush(stdout);
  wait_for_stdin_line();
  for (int i = 0; i < LEAKED; i++) {
    pthread_cancel(leaked[i]);
    pthread_join(leaked[i], NULL);
  }
  printf("ready default_stack=%zu\n", stack);
  fflush(stdout);
  wait_for_stdin_line();
  return 0;
}

static int grow(int rounds, int ms) {
  for (int r = 0; r < rounds; r++) {
    pthread_t t;
    leak_blocked(&t);
    leak_blocked(&t);
    for (int i = 0; i < 20; i++) churn_joined();
    usleep((useconds_t)ms * 1000);
  }
  printf("done\n");
  return 0;
}

static void *volatile kept;

NOINLINE void leak_heap(void) {
  char *p = malloc(64 << 10);
  memset(p, 1, 64 << 10);
  kept = p;
}

NOINLINE void cache_fill(void) {
  char *p = malloc(16 << 10);
  memset(p, 2, 16 << 10);
  kept = p;
}

static int heapgrow(int rounds, int ms) {
  for (int r = 0; r < rounds; r++) {
    pthread_t t;
    leak_heap();
    if (r < rounds / 4) cache_fill();
    leak_blocked(&t);
    usleep((useconds_t)ms * 1000);
  }
  printf("done\n");
  return 0;
}

static void *forking(void *arg) {
  (void)arg;
  pid_t c = fork();
  if (c == 0) exit(0);
  waitpid(c, NULL, 0);
  return NULL;
}

NOINLINE void fork_site(void) {
  pthread_t t;
  check(pthread_create(&t, NULL, forking, NULL), "pthread_create");
  pthread_join(t, NULL);
}

static int forks(void) {
  pthread_t t;
  for (int i = 0; i < 3; i++) leak_blocked(&t);
  pid_t c = fork();
  if (c == 0) exit(0);
  waitpid(c, NULL, 0);
  fork_site();
  printf("forked\n");
  return 0;
}

static unsigned long per_thread;
static pthread_mutex_t sum_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned long sum;

static void *add(void *arg) {
  unsigned long v = (unsigned long)arg;
  pthread_mutex_lock(&sum_lock);
  sum += v * v % 1000003;
  pthread_mutex_unlock(&sum_lock);
  return NULL;
}

static void *creator(void *arg) {
  unsigned long base = (unsigned long)arg * per_thread;
  for (unsigned long i = 0; i < per_thread; i++) {
    pthread_t t;
    check(pthread_create(&t, NULL, add, (void *)(base + i)), "pthread_create");
    pthread_join(t, NULL);
  }
  return NULL;
}

static int storm(int threads, unsigned long n) {
  per_thread = n;
  pthread_t t[64];
  if (threads > 64) threads = 64;
  for (int i = 0; i < threads; i++)
    check(pthread_create(&t[i], NULL, creator, (void *)(unsigned long)i), "pthread_create");
  for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
  printf("storm: %d x %lu threads, checksum %lu\n", threads, n, sum);
  return 0;
}

int main(int argc, char **argv) {
  if (argc >= 2 && strcmp(argv[1], "exact") == 0) return exact();
  if (argc >= 4 && strcmp(argv[1], "grow") == 0) return grow(atoi(argv[2]), atoi(argv[3]));
  if (argc >= 4 && strcmp(argv[1], "heapgrow") == 0)
    return heapgrow(atoi(argv[2]), atoi(argv[3]));
  if (argc >= 2 && strcmp(argv[1], "fork") == 0) return forks();
  if (argc >= 4 && strcmp(argv[1], "storm") == 0)
    return storm(atoi(argv[2]), strtoul(argv[3], NULL, 10));
  fprintf(stderr, "usage: threadleak exact | grow ROUNDS MS | heapgrow ROUNDS MS | fork | storm THREADS N\n");
  return 2;
}
