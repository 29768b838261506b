/* Threads, for tests/preload.rs: cross-thread frees, a create/exit loop of
 * 100 threads at a time, allocation in pthread key destructors and in atexit
 * handlers (with enough handlers that atexit itself must allocate).
 *
 * At HEAPPROF_RATE=1 the profile at exit must show exactly:
 *   produce        PRODUCERS*PER_PRODUCER allocated, nothing in use
 *   thread_leak    ROUNDS*100 objects of 64 bytes in use
 *   dtor_leak      ROUNDS*100 objects of 48 bytes in use
 *   atexit_leak    HANDLERS objects of 24 bytes in use
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NOINLINE __attribute__((noinline))
#define PRODUCERS 4
#define PER_PRODUCER 2000
#define ROUNDS 5
#define HANDLERS 40

static void sink(void *p) { __asm__ volatile("" : : "r"(p) : "memory"); }

/* ---- cross-thread frees: a bounded queue guarded by a mutex ---- */
static void *queue[256];
static int qhead, qtail, qcount, producers_left = PRODUCERS;
static pthread_mutex_t qlock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t qcond = PTHREAD_COND_INITIALIZER;

NOINLINE void *produce(size_t n) {
  char *p = malloc(n);
  memset(p, 'p', n);
  return p;
}

static void *producer(void *arg) {
  (void)arg;
  for (int i = 0; i < PER_PRODUCER; i++) {
    void *p = produce(16 + (size_t)(i % 200) * 8);
    pthread_mutex_lock(&qlock);
    while (qcount == 256) pthread_cond_wait(&qcond, &qlock);
    queue[qtail] = p;
    qtail = (qtail + 1) % 256;
    qcount++;
    pthread_cond_broadcast(&qcond);
    pthread_mutex_unlock(&qlock);
  }
  pthread_mutex_lock(&qlock);
  producers_left--;
  pthread_cond_broadcast(&qcond);
  pthread_mutex_unlock(&qlock);
  return NULL;
}

static void *consumer(void *arg) {
  (void)arg;
  for (;;) {
    pthread_mutex_lock(&qlock);
    while (qcount == 0 && producers_left > 0) pthread_cond_wait(&qcond, &qlock);
    if (qcount == 0) {
      pthread_mutex_unlock(&qlock);
      return NULL;
    }
    void *p = queue[qhead];
    qhead = (qhead + 1) % 256;
    qcount--;
    pthread_cond_broadcast(&qcond);
    pthread_mutex_unlock(&qlock);
    free(p); /* freed by a thread that did not allocate it */
  }
}

/* ---- 100 threads at a time, created and exiting ---- */
static pthread_key_t key;
/* Not static: the compiler must assume someone reads it, or it would drop
 * the stores and then the allocations. */
void *leaked[ROUNDS * 100 * 2 + HANDLERS];
static int nleaked;
static pthread_mutex_t leak_lock = PTHREAD_MUTEX_INITIALIZER;

static void keep(void *p) {
  pthread_mutex_lock(&leak_lock);
  leaked[nleaked++] = p;
  pthread_mutex_unlock(&leak_lock);
}

NOINLINE void thread_leak(void) {
  void *p = malloc(64);
  memset(p, 't', 64);
  keep(p);
}

NOINLINE void dtor_leak(void) {
  void *p = malloc(48);
  memset(p, 'd', 48);
  keep(p);
}

/* Runs as the thread exits, after its start routine returned. */
static void key_destructor(void *value) {
  free(value);
  void *tmp = calloc(3, 100);
  sink(tmp);
  free(tmp);
  dtor_leak();
}

static void *short_lived(void *arg) {
  (void)arg;
  pthread_setspecific(key, malloc(32));
  for (int i = 0; i < 20; i++) {
    void *p = malloc((size_t)(i * 50 + 1));
    sink(p);
    free(p);
  }
  thread_leak();
  return NULL;
}

/* ---- atexit handlers that allocate ---- */
NOINLINE void atexit_leak(void) {
  void *p = malloc(24);
  memset(p, 'x', 24);
  leaked[nleaked++] = p;
}

static void handler(void) {
  void *p = malloc(1000);
  sink(p);
  free(p);
  atexit_leak();
}

int main(void) {
  pthread_t t[100];
  for (int i = 0; i < PRODUCERS; i++) pthread_create(&t[i], NULL, producer, NULL);
  for (int i = 0; i < 4; i++) pthread_create(&t[PRODUCERS + i], NULL, consumer, NULL);
  for (int i = 0; i < PRODUCERS + 4; i++) pthread_join(t[i], NULL);

  pthread_key_create(&key, key_destructor);
  for (int r = 0; r < ROUNDS; r++) {
    for (int i = 0; i < 100; i++) {
      if (pthread_create(&t[i], NULL, short_lived, NULL) != 0) {
        perror("pthread_create");
        return 1;
      }
    }
    for (int i = 0; i < 100; i++) pthread_join(t[i], NULL);
  }
  /* More handlers than fit in glibc's first block: atexit itself callocs. */
  for (int i = 0; i < HANDLERS; i++) atexit(handler);
  printf("threads: %d objects kept\n", nleaked);
  return 0;
}
