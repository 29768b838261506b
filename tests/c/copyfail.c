/* A single-threaded program whose copies of itself start failing, for the
 * watcher's fallback (src/control/copy_dump.rs): a dump asked for then must
 * not be lost.
 *   copyfail exit    allocates, then refuses every clone(2) that makes no
 *                    thread (a seccomp filter on all its threads, the
 *                    watcher included: EAGAIN), asks for a dump with
 *                    SIGUSR2, waits WAIT_MS and exits
 *   copyfail thread  the same, then creates and joins a thread (the dumper
 *                    thread takes over from the watcher), waits, exits
 * Prints "asked" after the signal and "done" at the end. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__)
#define ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define ARCH AUDIT_ARCH_AARCH64
#endif

#define WAIT_MS 1500

static void *volatile sink;

__attribute__((noinline)) static void kept_block(void) { sink = malloc(1 << 20); }

static void *nothing(void *arg) { return arg; }

static void refuse_copies(void) {
  struct sock_filter f[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ARCH, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_clone, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0])),
      BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, CLONE_THREAD, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EAGAIN),
  };
  struct sock_fprog prog = {.len = sizeof f / sizeof f[0], .filter = f};
  /* TSYNC: every thread of the process, the watcher too. */
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) ||
      syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &prog)) {
    perror("copyfail: seccomp");
    exit(2);
  }
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "exit";
  kept_block();
  refuse_copies();
  kill(getpid(), SIGUSR2);
  printf("asked\n");
  fflush(stdout);
  usleep(WAIT_MS * 1000);
  if (!strcmp(mode, "thread")) {
    pthread_t t;
    pthread_create(&t, NULL, nothing, NULL);
    pthread_join(t, NULL);
    usleep(WAIT_MS * 1000);
  }
  printf("done\n");
  return 0;
}
