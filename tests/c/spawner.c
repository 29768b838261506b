/* Starts a program as a new process every way libc offers, for
 * tests/exec_follow.rs: none of them runs a fork handler in the child
 * (posix_spawn and vfork never do; system's child execs sh at once).
 *
 *   spawner PROG    runs PROG by posix_spawn, by vfork + execv and by
 *                   system(), waiting for each; prints their exit codes
 */
#define _GNU_SOURCE
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static int code(int status) { return WIFEXITED(status) ? WEXITSTATUS(status) : -1; }

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: spawner PROG\n");
    return 2;
  }
  char *args[] = {argv[1], NULL};
  int status = 0;
  pid_t pid;
  fflush(stdout);
  if (posix_spawn(&pid, argv[1], NULL, NULL, args, environ) != 0) return 1;
  waitpid(pid, &status, 0);
  int a = code(status);
  pid = vfork();
  if (pid == 0) {
    execv(argv[1], args);
    _exit(127);
  }
  waitpid(pid, &status, 0);
  int b = code(status);
  int c = code(system(argv[1]));
  printf("spawner: %d %d %d\n", a, b, c);
  return 0;
}
