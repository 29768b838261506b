/* What a program sees of heapprof's dump signal (tests/dump_signal.rs).
 *
 *   dumpsig waits     two threads wait in sleep, nanosleep, poll, epoll_wait,
 *                     select, usleep and (with an empty temporary mask) ppoll,
 *                     pselect, epoll_pwait, and sigsuspend for a SIGWINCH
 *                     another thread sends; each wait must
 *                     last its full time. Stops when stdin closes. Prints the
 *                     count of waits, every problem, the observed masks and
 *                     dispositions.
 *   dumpsig spawn     children through fork+execl/execvp/execve, posix_spawn,
 *                     posix_spawnp, system and popen print their SigBlk.
 *   dumpsig sigwait SIG   blocks SIG, says "ready", takes it 3 times with
 *                     sigwaitinfo. (signalfd SIG: the same through a signalfd.)
 *   dumpsig raise SIG     raises SIG 3 times, waiting for each profile.
 *   dumpsig noalloc SIG   counts the allocations its thread makes in the
 *                     interposed signal functions (under countmalloc.so).
 *   dumpsig workers SIG   forks 3 workers (as a server does); each blocks
 *                     most signals for a moment as PostgreSQL's backends do
 *                     while starting (all but QUIT, TERM, ALRM), restores
 *                     its mask, then installs its own handler for SIG,
 *                     lives 0.3 s and exits; the parent waits for them.
 *   dumpsig handler SIG   installs a handler for SIG, starts a thread, says
 *                     "ready", waits for it 3 times and says how often it ran
 *                     on a thread the program did not create.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static volatile int stop;
static int waits[2], problems;
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static void problem(int who, const char *what, const char *detail) {
  pthread_mutex_lock(&out_lock);
  printf("thread %d: %s: %s\n", who, what, detail);
  problems++;
  pthread_mutex_unlock(&out_lock);
}

/* A wait that returned `r` (0: timed out / slept it all) after starting at
 * `t0` for `want` ms. */
static void check(int who, const char *what, int r, double t0, double want) {
  double took = now_ms() - t0;
  char buf[96];
  waits[who]++;
  if (r != 0) {
    snprintf(buf, sizeof buf, "returned %d (%s)", r, r < 0 ? strerror(errno) : "early");
    problem(who, what, buf);
  } else if (took < want - 0.5) {
    snprintf(buf, sizeof buf, "lasted %.1f ms of %.0f", took, want);
    problem(who, what, buf);
  }
}

static const struct timespec ms100 = {0, 100 * 1000 * 1000};

static void print_mask(const char *who) {
  sigset_t a, b;
  pthread_sigmask(SIG_BLOCK, NULL, &a);
  sigprocmask(SIG_BLOCK, NULL, &b);
  char buf[256] = "";
  for (int s = 1; s < 65; s++) {
    if (sigismember(&a, s) != sigismember(&b, s)) strcat(buf, " (pthread_sigmask and sigprocmask differ)");
    if (sigismember(&a, s)) sprintf(buf + strlen(buf), " %d", s);
  }
  printf("mask %s:%s\n", who, buf[0] ? buf : " none");
}

static volatile sig_atomic_t winches;
static void on_winch(int sig) {
  (void)sig;
  winches++;
}

/* Sends SIGWINCH to the second thread every 100 ms: it blocks SIGWINCH
 * and takes it only in sigsuspend, the classic way. */
static void *ticker(void *arg) {
  pthread_t to = *(pthread_t *)arg;
  while (!stop) {
    nanosleep(&(struct timespec){0, 100 * 1000 * 1000}, NULL);
    pthread_kill(to, SIGWINCH);
  }
  return NULL;
}

static void *second(void *arg) {
  (void)arg;
  sigset_t winch, none;
  sigemptyset(&winch);
  sigaddset(&winch, SIGWINCH);
  sigemptyset(&none);
  pthread_sigmask(SIG_BLOCK, &winch, NULL);
  pthread_t me = pthread_self(), tick;
  pthread_create(&tick, NULL, ticker, &me);
  int never[2];
  if (pipe(never)) abort();
  int ep = epoll_create1(0);
  struct epoll_event ev = {.events = EPOLLIN}, out;
  epoll_ctl(ep, EPOLL_CTL_ADD, never[0], &ev);
  while (!stop) {
    double t0 = now_ms();
    struct pollfd in = {.fd = 0, .events = POLLIN};
    int r = poll(&in, 1, 100);
    if (r > 0) {
      char b[64];
      if (read(0, b, sizeof b) <= 0) stop = 1;
      continue;
    }
    check(1, "poll(stdin)", r, t0, 100);
    t0 = now_ms();
    check(1, "epoll_wait(pipe)", epoll_wait(ep, &out, 1, 100), t0, 100);
    t0 = now_ms();
    check(1, "nanosleep", nanosleep(&ms100, NULL), t0, 100);
    t0 = now_ms();
    check(1, "clock_nanosleep", clock_nanosleep(CLOCK_MONOTONIC, 0, &ms100, NULL), t0, 100);
    t0 = now_ms();
    check(1, "usleep", usleep(100000), t0, 100);
    /* Only the ticker's SIGWINCH may end it. */
    int before = winches;
    waits[1]++;
    if (sigsuspend(&none) != -1 || errno != EINTR || winches == before)
      problem(1, "sigsuspend(empty mask)", "woken by another signal");
  }
  pthread_join(tick, NULL);
  pthread_sigmask(SIG_UNBLOCK, &winch, NULL);
  pthread_mutex_lock(&out_lock);
  print_mask("thread");
  pthread_mutex_unlock(&out_lock);
  return NULL;
}

static int waits_mode(void) {
  /* The program's own mask round trip: block one signal, restore. */
  sigset_t one, old;
  sigemptyset(&one);
  sigaddset(&one, SIGWINCH);
  pthread_sigmask(SIG_BLOCK, &one, &old);
  pthread_sigmask(SIG_SETMASK, &old, NULL);

  struct sigaction sw;
  memset(&sw, 0, sizeof sw);
  sw.sa_handler = on_winch;
  sigaction(SIGWINCH, &sw, NULL);
  pthread_t t;
  pthread_create(&t, NULL, second, NULL);
  int ep = epoll_create1(0);
  struct epoll_event out;
  sigset_t none;
  sigemptyset(&none);
  printf("ready\n");
  fflush(stdout);
  while (!stop) {
    double t0 = now_ms();
    unsigned left = sleep(1);
    check(0, "sleep", (int)left, t0, 1000);
    struct timespec rem = {0, 0};
    t0 = now_ms();
    check(0, "nanosleep", nanosleep(&ms100, &rem), t0, 100);
    t0 = now_ms();
    check(0, "poll", poll(NULL, 0, 100), t0, 100);
    t0 = now_ms();
    check(0, "epoll_wait", epoll_wait(ep, &out, 1, 100), t0, 100);
    t0 = now_ms();
    struct timeval tv = {0, 100000};
    check(0, "select", select(0, NULL, NULL, NULL, &tv), t0, 100);
    t0 = now_ms();
    check(0, "ppoll(empty mask)", ppoll(NULL, 0, &ms100, &none), t0, 100);
    t0 = now_ms();
    check(0, "pselect(empty mask)", pselect(0, NULL, NULL, NULL, &ms100, &none), t0, 100);
    t0 = now_ms();
    check(0, "epoll_pwait(empty mask)", epoll_pwait(ep, &out, 1, 100, &none), t0, 100);
  }
  pthread_join(t, NULL);
  print_mask("main");
  struct sigaction a1, a2;
  sigaction(SIGUSR1, NULL, &a1);
  sigaction(SIGUSR2, NULL, &a2);
  printf("dispositions: %s %s\n", a1.sa_handler == SIG_DFL ? "default" : "other",
         a2.sa_handler == SIG_DFL ? "default" : "other");
  printf("waits %d and %d, problems %d\n", waits[0], waits[1], problems);
  return problems != 0;
}

#define CMD "exec grep SigBlk /proc/self/status"

static void label(const char *how) {
  printf("%s: ", how);
  fflush(stdout);
}

static void reap(pid_t pid) {
  int st;
  waitpid(pid, &st, 0);
}

static int spawn_mode(void) {
  char *argv[] = {"sh", "-c", CMD, NULL};
  pid_t pid;

  label("fork+execl");
  if ((pid = fork()) == 0) {
    execl("/bin/sh", "sh", "-c", CMD, (char *)NULL);
    _exit(127);
  }
  reap(pid);
  label("fork+execlp");
  if ((pid = fork()) == 0) {
    execlp("sh", "sh", "-c", CMD, (char *)NULL);
    _exit(127);
  }
  reap(pid);
  label("fork+execle");
  if ((pid = fork()) == 0) {
    execle("/bin/sh", "sh", "-c", CMD, (char *)NULL, environ);
    _exit(127);
  }
  reap(pid);
  label("fork+execvp");
  if ((pid = fork()) == 0) {
    execvp("sh", argv);
    _exit(127);
  }
  reap(pid);
  label("fork+execve");
  if ((pid = fork()) == 0) {
    execve("/bin/sh", argv, environ);
    _exit(127);
  }
  reap(pid);
  label("posix_spawn");
  if (posix_spawn(&pid, "/bin/sh", NULL, NULL, argv, environ) == 0) reap(pid);
  label("posix_spawnp+attr");
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF);
  if (posix_spawnp(&pid, "sh", NULL, &attr, argv, environ) == 0) reap(pid);
  /* A mask the program chose is the child's. */
  label("posix_spawn+SIGWINCH");
  sigset_t winch;
  sigemptyset(&winch);
  sigaddset(&winch, SIGWINCH);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
  posix_spawnattr_setsigmask(&attr, &winch);
  if (posix_spawn(&pid, "/bin/sh", NULL, &attr, argv, environ) == 0) reap(pid);
  posix_spawnattr_destroy(&attr);
  label("system");
  system(CMD);
  label("popen");
  FILE *f = popen(CMD, "r");
  char line[128];
  while (f && fgets(line, sizeof line, f)) fputs(line, stdout);
  if (f) pclose(f);
  print_mask("main");
  return 0;
}

static int sigwait_mode(int sig, int use_fd) {
  sigset_t s;
  sigemptyset(&s);
  sigaddset(&s, sig);
  pthread_sigmask(SIG_BLOCK, &s, NULL);
  int fd = use_fd ? signalfd(-1, &s, 0) : -1;
  printf("ready\n");
  fflush(stdout);
  for (int i = 0; i < 3; i++) {
    int got, from;
    if (use_fd) {
      struct signalfd_siginfo si;
      if (read(fd, &si, sizeof si) != sizeof si) return 1;
      got = (int)si.ssi_signo;
      from = (int)si.ssi_pid;
    } else {
      siginfo_t si;
      if (sigwaitinfo(&s, &si) < 0) return 1;
      got = si.si_signo;
      from = si.si_pid;
    }
    printf("got %d from %s\n", got, from == getppid() ? "parent" : "elsewhere");
    fflush(stdout);
  }
  return 0;
}

static volatile sig_atomic_t handled, elsewhere;
static volatile pid_t idle_tid;

/* Counts runs on a thread the program did not create (heapprof's). */
static void on_sig(int sig) {
  (void)sig;
  handled++;
  pid_t tid = (pid_t)syscall(SYS_gettid);
  if (tid != getpid() && tid != idle_tid) elsewhere++;
}

static void *idle(void *arg) {
  (void)arg;
  idle_tid = (pid_t)syscall(SYS_gettid);
  while (!stop) poll(NULL, 0, 20);
  return NULL;
}

static int handler_mode(int sig) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_sig;
  sigemptyset(&sa.sa_mask);
  if (sigaction(sig, &sa, NULL)) return 1;
  pthread_t t;
  pthread_create(&t, NULL, idle, NULL);
  while (!idle_tid) poll(NULL, 0, 1);
  printf("ready\n");
  fflush(stdout);
  while (handled < 3) pause();
  stop = 1;
  pthread_join(t, NULL);
  printf("handler ran %d times, %d on threads the program did not create\n", (int)handled,
         (int)elsewhere);
  return 0;
}

/* Every interposed signal function but the ones that exec or wait, many
 * times, then the yield (blocking the dump signal): the allocations the
 * calling thread made meanwhile, as counted by countmalloc.so. */
static int noalloc_mode(int sig) {
  long (*mine)(void) = (long (*)(void))dlsym(RTLD_DEFAULT, "countmalloc_mine");
  if (!mine) {
    printf("countmalloc.so is not loaded\n");
    return 1;
  }
  sigset_t one, old, none;
  sigemptyset(&one);
  sigaddset(&one, SIGWINCH);
  sigemptyset(&none);
  struct timespec zero = {0, 0};
  struct sigaction sa, prev;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_winch;
  int ep = epoll_create1(0);
  struct epoll_event out;
  siginfo_t si;
  long before = mine();
  void *volatile p = malloc(10); /* the counter counts */
  free(p);
  printf("one malloc counts %ld\n", mine() - before);
  before = mine();
  for (int i = 0; i < 1000; i++) {
    pthread_sigmask(SIG_BLOCK, &one, &old);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_sigmask(SIG_UNBLOCK, &none, NULL);
    sigprocmask(SIG_BLOCK, NULL, &old);
    sigaction(SIGWINCH, &sa, &prev);
    sigaction(sig, NULL, &prev);
    sigaction(sig, &prev, NULL); /* the default it reads: kept as heapprof's */
    signal(SIGWINCH, SIG_DFL);
    ppoll(NULL, 0, &zero, &none);
    pselect(0, NULL, NULL, NULL, &zero, &none);
    epoll_pwait(ep, &out, 1, 0, &none);
    sigtimedwait(&one, &si, &zero);
  }
  sigset_t s;
  sigemptyset(&s);
  sigaddset(&s, sig);
  pthread_sigmask(SIG_BLOCK, &s, NULL);
  printf("allocations in the wrappers: %ld\n", mine() - before);
  return 0;
}

/* raise(SIG) three times, each time waiting (up to 20 s) for the profile
 * it asks for: HEAPPROF_OUT.PID.SEQ.pb.gz. */
static int raise_mode(int sig) {
  const char *out = getenv("HEAPPROF_OUT");
  if (!out) return 2;
  for (int seq = 0; seq < 3; seq++) {
    if (raise(sig) != 0) return 1;
    char path[4096];
    snprintf(path, sizeof path, "%s.%d.%d.pb.gz", out, (int)getpid(), seq);
    int waited = 0;
    while (access(path, F_OK) != 0 && waited++ < 2000) poll(NULL, 0, 10);
    printf("profile %d %s\n", seq, access(path, F_OK) == 0 ? "written" : "missing");
  }
  return 0;
}

static int workers_mode(int sig) {
  for (int i = 0; i < 3; i++) {
    pid_t pid = fork();
    if (pid < 0) return 1;
    if (pid == 0) {
      sigset_t startup, old;
      sigfillset(&startup);
      sigdelset(&startup, SIGQUIT);
      sigdelset(&startup, SIGTERM);
      sigdelset(&startup, SIGALRM);
      pthread_sigmask(SIG_SETMASK, &startup, &old);
      free(malloc(100));
      pthread_sigmask(SIG_SETMASK, &old, NULL);
      struct sigaction sa;
      memset(&sa, 0, sizeof sa);
      sa.sa_handler = on_sig;
      sigaction(sig, &sa, NULL);
      usleep(300000); /* a worker lives on: time for heapprof to say it */
      _exit(0);
    }
    int st;
    if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st)) return 1;
  }
  printf("workers done\n");
  return 0;
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "";
  int sig = argc > 2 ? atoi(argv[2]) : SIGUSR2;
  free(malloc(1000)); /* something to profile */
  if (!strcmp(mode, "waits")) return waits_mode();
  if (!strcmp(mode, "spawn")) return spawn_mode();
  if (!strcmp(mode, "sigwait")) return sigwait_mode(sig, 0);
  if (!strcmp(mode, "signalfd")) return sigwait_mode(sig, 1);
  if (!strcmp(mode, "handler")) return handler_mode(sig);
  if (!strcmp(mode, "workers")) return workers_mode(sig);
  if (!strcmp(mode, "noalloc")) return noalloc_mode(sig);
  if (!strcmp(mode, "raise")) return raise_mode(sig);
  fprintf(stderr, "usage: dumpsig waits|spawn|sigwait SIG|signalfd SIG|handler SIG\n");
  return 2;
}
