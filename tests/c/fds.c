/* Descriptors and files a program sees, for tests/preload.rs: run bare and
 * under the library, the output must not change (heapprof's descriptors are
 * high, close-on-exec and never touched once the program may reuse them).
 *
 *   fds daemon   close every descriptor >= 3, then send a message through a
 *                socketpair and a pipe (allocating between bytes, so samples
 *                are unwound) and print what came back
 *   fds stdin    (run with stdin closed) whether fstat(0) works, and the
 *                numbers a new pipe gets
 *   fds list     the descriptors open (number, close-on-exec flag)
 *   fds child    a child spawned without LD_PRELOAD lists its descriptors
 *                (what a static or setuid child would inherit)
 *   fds swap     for 2 s, close its stdout and put it back with dup2 (as
 *                CPython's tests of redirection do) while allocating; a
 *                descriptor of heapprof's landing on the free number must
 *                never cost it the one it put back: prints how often fd 1
 *                was gone after the dup2 (0)
 *   fds swap-threads   the same with a second thread alive, so heapprof's
 *                dumper thread (not the watcher) makes the dumps
 *   fds plant DIR TARGET   plant symbolic links (to TARGET) and files at the
 *                names this process's first dumps may use under DIR/p,
 *                then allocate and exit (the exit dump lands past them)
 *
 * An alarm ends a run that hangs (a test fails rather than blocks). */
#define _GNU_SOURCE
#include <alloca.h>
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char MESSAGE[] = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ()";

/* Allocation from a few call sites, enough to be sampled at the default
 * rate now and then, and at every call at rate 1. */
__attribute__((noinline)) static void churn_deep(int i) {
  for (int k = 0; k < 8; k++) {
    char *p = malloc(4096 + 64 * (size_t)((i + k) % 13));
    p[0] = (char)k;
    __asm__ volatile("" : : "r"(p) : "memory");
    free(p);
  }
}

__attribute__((noinline)) static void churn(int i) {
  char *big = malloc(96 * 1024);
  big[0] = 1;
  __asm__ volatile("" : : "r"(big) : "memory");
  churn_deep(i);
  free(big);
}

/* Calls fn(arg) through a frame with no unwind information (no CFI), as
 * hand-written assembly has, with the frame pointer at `record`: libunwind
 * 1.6 guesses that frame from the frame chain and validates every address
 * it reads there, each time (through its pipe, unless heapprof took that
 * away), except on the few pages it validated last. */
#ifdef __x86_64__
void nocfi_call(void (*fn)(int), int arg, void *record);
__asm__(".text\n"
        ".globl nocfi_call\n"
        ".type nocfi_call, @function\n"
        "nocfi_call:\n"
        "  push %rbp\n"
        "  mov %rdx, %rbp\n"
        "  mov %rdi, %rax\n"
        "  mov %esi, %edi\n"
        "  call *%rax\n"
        "  pop %rbp\n"
        "  ret\n"
        ".size nocfi_call, .-nocfi_call\n");
#else
static void nocfi_call(void (*fn)(int), int arg, void *record) {
  (void)record;
  fn(arg);
}
#endif

/* Allocation below a guessed frame whose frame record (saved frame
 * pointer 0, return address 0: the chain's end) lies on a different stack
 * page at each of a dozen depths. */
__attribute__((noinline)) static void guessed(int i) {
  void **record = alloca(4096 * (size_t)(i % 12) + 64);
  record[0] = 0;
  record[1] = 0;
  nocfi_call(churn, i, record);
  __asm__ volatile("" : : "r"(record) : "memory");
}

/* Sends MESSAGE from `w` to `r` a byte at a time, allocating between, and
 * prints what arrived. */
static void round_trip(const char *what, int r, int w) {
  char got[sizeof MESSAGE] = {0};
  size_t n = strlen(MESSAGE);
  for (size_t i = 0; i < n; i++) {
    churn((int)i);
    if (write(w, &MESSAGE[i], 1) != 1) {
      printf("%s: write failed\n", what);
      return;
    }
    guessed((int)i);
    if (read(r, &got[i], 1) != 1) {
      printf("%s: read failed\n", what);
      return;
    }
  }
  /* Nothing more may be waiting (a stray byte written by someone else). */
  int fl = fcntl(r, F_GETFL);
  fcntl(r, F_SETFL, fl | O_NONBLOCK);
  char extra;
  ssize_t more = read(r, &extra, 1);
  printf("%s: fds %d %d got %s extra %zd\n", what, r, w, got, more);
}

static void daemon_mode(void) {
  long max = sysconf(_SC_OPEN_MAX);
  if (max < 0 || max > 65536)
    max = 65536;
  for (int fd = 3; fd < max; fd++)
    close(fd);
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) {
    perror("socketpair");
    exit(1);
  }
  /* The first output allocates stdout's buffer: a new stack to unwind
   * while the socket holds the lowest numbers. */
  printf("socketpair %d %d made\n", sv[0], sv[1]);
  round_trip("socketpair", sv[0], sv[1]);
  int p[2];
  if (pipe(p) != 0) {
    perror("pipe");
    exit(1);
  }
  round_trip("pipe", p[0], p[1]);
}

static void stdin_mode(void) {
  struct stat st;
  printf("fstat(0) %s\n", fstat(0, &st) == 0 ? "works" : "fails");
  churn(1);
  int p[2];
  if (pipe(p) != 0) {
    perror("pipe");
    exit(1);
  }
  printf("pipe %d %d\n", p[0], p[1]);
}

static void list_mode(void) {
  churn(2);
  DIR *d = opendir("/proc/self/fd");
  if (!d) {
    perror("opendir");
    exit(1);
  }
  int own = dirfd(d);
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.')
      continue;
    int fd = atoi(e->d_name);
    if (fd == own)
      continue;
    int flags = fcntl(fd, F_GETFD);
    printf("fd %d%s\n", fd, flags >= 0 && (flags & FD_CLOEXEC) ? " cloexec" : "");
  }
  closedir(d);
}

static void child_mode(const char *self) {
  churn(3);
  fflush(stdout);
  /* posix_spawn, as CPython's subprocess and system() use: no fork
   * handler runs in the child. */
  char *argv[] = {(char *)self, "list", NULL};
  char *envp[] = {"PATH=/usr/bin:/bin", NULL};
  pid_t pid;
  if (posix_spawn(&pid, self, NULL, NULL, argv, envp) != 0) {
    perror("posix_spawn");
    exit(1);
  }
  int status;
  waitpid(pid, &status, 0);
  printf("child status %d\n", status);
}

/* The names a dump of this process may take first: final names
 * DIR/p.PID.SEQ.pb.gz and temporary ones DIR/.p.PID.SEQ.pb.gz.tmp.PID.N. */
static void plant_mode(const char *dir, const char *target) {
  char name[4096];
  int pid = getpid();
  for (int seq = 0; seq < 4; seq++) {
    snprintf(name, sizeof name, "%s/p.%d.%d.pb.gz", dir, pid, seq);
    if (seq % 2 == 0) {
      if (symlink(target, name) != 0)
        perror("symlink");
    } else {
      FILE *f = fopen(name, "w");
      fputs("planted", f);
      fclose(f);
    }
    for (int n = 0; n < 6; n++) {
      snprintf(name, sizeof name, "%s/.p.%d.%d.pb.gz.tmp.%d.%d", dir, pid, seq, pid, n);
      if (symlink(target, name) != 0)
        perror("symlink");
    }
  }
  for (int i = 0; i < 64; i++)
    churn(i);
  printf("planted\n");
}

static void swap_mode(void) {
  int saved = dup(1);
  long lost = 0, rounds = 0;
  struct timespec t0, t;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  do {
    for (int i = 0; i < 1000; i++) {
      close(1);
      if (dup2(saved, 1) != 1 || fcntl(1, F_GETFD) < 0) {
        lost++;
        dup2(saved, 1);
      }
      if (i % 16 == 0)
        churn(i);
    }
    rounds++;
    clock_gettime(CLOCK_MONOTONIC, &t);
  } while (t.tv_sec - t0.tv_sec < 2);
  printf("stdout lost %ld times\n", lost);
}

static void *idle_thread(void *arg) {
  (void)arg;
  pause();
  return NULL;
}

int main(int argc, char **argv) {
  alarm(30);
  const char *mode = argc > 1 ? argv[1] : "";
  if (strcmp(mode, "daemon") == 0)
    daemon_mode();
  else if (strcmp(mode, "stdin") == 0)
    stdin_mode();
  else if (strcmp(mode, "list") == 0)
    list_mode();
  else if (strcmp(mode, "child") == 0)
    child_mode(argv[0]);
  else if (strcmp(mode, "swap") == 0)
    swap_mode();
  else if (strcmp(mode, "swap-threads") == 0) {
    pthread_t t;
    pthread_create(&t, NULL, idle_thread, NULL);
    swap_mode();
  }
  else if (strcmp(mode, "plant") == 0 && argc > 3)
    plant_mode(argv[2], argv[3]);
  else {
    fprintf(stderr, "usage: fds daemon|stdin|list|child|swap|swap-threads|plant DIR TARGET\n");
    return 2;
  }
  return 0;
}
