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

/* Counts the arguments after `arg` up to the terminating null pointer. */
#define COUNT_ARGS(argc, arg)                                                  \
  do {                                                                         \
    va_list ap;                                                                \
    va_start(ap, arg);                                                         \
    for (argc = 1; va_arg(ap, const char *) != NULL; argc++) {                 \
      if (argc == INT_MAX) {                                                   \
        va_end(ap);                                                            \
        errno = E2BIG;                                                         \
        return -1;                                                             \
      }                                                                        \
    }                                                                          \
    va_end(ap);                                                                \
  } while (0)

int heapprof_execl(const char *path, const char *arg, ...) {
  ptrdiff_t argc;
  COUNT_ARGS(argc, arg);
  char *argv[argc + 1];
  va_list ap;
  va_start(ap, arg);
  argv[0] = (char *)arg;
  for (ptrdiff_t i = 1; i <= argc; i++) argv[i] = va_arg(ap, char *);
  va_end(ap);
  return execv(path, argv);
}

int heapprof_execlp(const char *file, const char *arg, ...) {
  ptrdiff_t argc;
  COUNT_ARGS(argc, arg);
  char *argv[argc + 1];
  va_list ap;
  va_start(ap, arg);
  argv[0] = (char *)arg;
  for (ptrdiff_t i = 1; i <= argc; i++) argv[i] = va_arg(ap, char *);
  va_end(ap);
  return execvp(file, argv);
}

int heapprof_execle(const char *path, const char *arg, ...) {
  ptrdiff_t argc;
  COUNT_ARGS(argc, arg);
  char *argv[argc + 1];
  char **envp;
  va_list ap;
  va_start(ap, arg);
  argv[0] = (char *)arg;
  for (ptrdiff_t i = 1; i <= argc; i++) argv[i] = va_arg(ap, char *);
  envp = va_arg(ap, char **);
  va_end(ap);
  return execve(path, argv, envp);
}
