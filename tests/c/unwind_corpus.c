/* Stacks for comparing heapprof's own walk with libunwind's full unwind
 * (tests/unwind.rs runs this under HEAPPROF_UNWIND=check at rate 1):
 * recursion deeper than a profile keeps, threads (and threads reusing the
 * stack of one that exited), a signal handler that allocates (a signal
 * frame), longjmp out of frames, and qsort's callback (libc's frames). */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

static void *volatile sink;

__attribute__((noinline)) static void churn(int n) {
  for (int i = 0; i < n; i++) {
    void *p = malloc(16 + i % 200);
    sink = p;
    free(p);
  }
}

__attribute__((noinline)) static int recurse(int depth, int n) {
  char pad[depth % 7 * 16 + 8]; /* a variable frame: rbp-based CFA */
  memset(pad, depth, sizeof pad);
  sink = pad;
  if (depth == 0) {
    churn(n);
    return pad[0];
  }
  return recurse(depth - 1, n) + pad[sizeof pad - 1];
}

static jmp_buf back;

__attribute__((noinline)) static void jump_from(int depth) {
  if (depth == 0) {
    churn(10);
    longjmp(back, 1);
  }
  jump_from(depth - 1);
  sink = &depth;
}

static volatile sig_atomic_t handled;

static void on_alarm(int sig) {
  (void)sig;
  /* malloc in a handler is not async-signal-safe in general; here the
   * signal comes from raise() at a known point, outside malloc. */
  churn(20);
  handled++;
}

__attribute__((noinline)) static void in_signal(void) {
  raise(SIGALRM);
}

static int compare(const void *a, const void *b) {
  free(malloc(24));
  return *(const int *)a - *(const int *)b;
}

static void *thread_main(void *arg) {
  int depth = (int)(long)arg;
  recurse(depth, 50);
  return NULL;
}

int main(void) {
  signal(SIGALRM, on_alarm);
  for (int round = 0; round < 3; round++) {
    recurse(5, 100);
    recurse(300, 20); /* deeper than the 128 frames kept */
    if (setjmp(back) == 0)
      jump_from(30);
    recurse(8, 100); /* after the longjmp: frames reused at new depths */
    in_signal();
    int v[64];
    for (int i = 0; i < 64; i++)
      v[i] = (i * 37) % 64;
    qsort(v, 64, sizeof v[0], compare);
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
      pthread_create(&t[i], NULL, thread_main, (void *)(long)(i * 10));
    for (int i = 0; i < 4; i++)
      pthread_join(t[i], NULL);
    /* One at a time: each thread on the stack the last one left. */
    for (int i = 0; i < 4; i++) {
      pthread_create(&t[0], NULL, thread_main, (void *)(long)(i * 3 + 1));
      pthread_join(t[0], NULL);
    }
  }
  return handled == 3 ? 0 : 1;
}
