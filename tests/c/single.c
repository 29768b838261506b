/* A single-threaded program for heapprof's watcher (src/control/watcher.rs):
 * glibc must keep seeing one thread while the preload library profiles it.
 * Reads one command per line on stdin and answers each with one line:
 *   flag      "single N": glibc's __libc_single_threaded
 *   tasks     "tasks N": entries in /proc/self/task
 *   churn N   N malloc/free pairs of 16..4111 bytes; every 64th pair also
 *             leaks 100 bytes from churn_keep: "ok"
 *   thread    creates and joins a thread: "joined"
 *   drop      gives up root for nobody (65534), as daemons do: "uid N"
 * and exits at end of input, printing "bye".
 */
#include <dirent.h>
#include <grp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern char __libc_single_threaded;

static void *volatile sink;

__attribute__((noinline)) static void churn_keep(void) { sink = malloc(100); }

static void churn(long n) {
  for (long i = 0; i < n; i++) {
    char *p = malloc(16 + (size_t)(i * 37 % 4096));
    p[0] = 1;
    sink = p;
    free(p);
    if (i % 64 == 0) churn_keep();
  }
}

static int tasks(void) {
  int n = 0;
  DIR *d = opendir("/proc/self/task");
  struct dirent *e;
  if (!d) return -1;
  while ((e = readdir(d)))
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n;
}

static void *nothing(void *arg) { return arg; }

int main(void) {
  char line[256];
  setvbuf(stdout, NULL, _IOLBF, 0);
  printf("ready\n");
  while (fgets(line, sizeof line, stdin)) {
    if (!strncmp(line, "flag", 4)) {
      printf("single %d\n", __libc_single_threaded);
    } else if (!strncmp(line, "tasks", 5)) {
      printf("tasks %d\n", tasks());
    } else if (!strncmp(line, "churn ", 6)) {
      churn(atol(line + 6));
      printf("ok\n");
    } else if (!strncmp(line, "drop", 4)) {
      if (geteuid() == 0 && (setgroups(0, NULL) || setgid(65534) || setuid(65534)))
        perror("drop");
      printf("uid %d\n", (int)geteuid());
    } else if (!strncmp(line, "thread", 6)) {
      pthread_t t;
      pthread_create(&t, NULL, nothing, NULL);
      pthread_join(t, NULL);
      printf("joined\n");
    }
  }
  printf("bye\n");
  return 0;
}
