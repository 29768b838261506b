/* The variadic exec functions, rebuilt over the interposed execv, execvp
 * and execve (see signals.rs): glibc's own call its internal __execve,
 * which an interposed execve never sees. Exported under their standard
 * names by trampolines in signals.rs. The argument array lives on the
 * stack, as in glibc: nothing here allocates. */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <unistd.h>

/* Declares `argv`, the null-terminated array of `arg` and the arguments
 * after it, on the stack, and leaves `ap` just past its null pointer (where
 * execle's envp follows); the caller ends `ap`. Returns -1 with E2BIG from
 * the enclosing function if there are too many. */
#define COLLECT_ARGV(argv, ap, arg)                                            \
  ptrdiff_t argc_;                                                             \
  do {                                                                         \
    va_list count_;                                                            \
    va_start(count_, arg);                                                     \
    for (argc_ = 1; va_arg(count_, const char *) != NULL; argc_++) {           \
      if (argc_ == INT_MAX) {                                                  \
        va_end(count_);                                                        \
        errno = E2BIG;                                                         \
        return -1;                                                             \
      }                                                                        \
    }                                                                          \
    va_end(count_);                                                            \
  } while (0);                                                                 \
  char *argv[argc_ + 1];                                                       \
  va_list ap;                                                                  \
  va_start(ap, arg);                                                           \
  argv[0] = (char *)arg;                                                       \
  for (ptrdiff_t i_ = 1; i_ <= argc_; i_++)                                    \
    argv[i_] = va_arg(ap, char *)

int heapprof_execl(const char *path, const char *arg, ...) {
  COLLECT_ARGV(argv, ap, arg);
  va_end(ap);
  return execv(path, argv);
}

int heapprof_execlp(const char *file, const char *arg, ...) {
  COLLECT_ARGV(argv, ap, arg);
  va_end(ap);
  return execvp(file, argv);
}

int heapprof_execle(const char *path, const char *arg, ...) {
  COLLECT_ARGV(argv, ap, arg);
  char **envp = va_arg(ap, char **);
  va_end(ap);
  return execve(path, argv, envp);
}
