/* Loads and unloads plugins in turn (tests/unwind.rs): code comes and goes
 * at the same addresses, and the stack walk must not keep rules of code
 * that is gone.
 *
 *   unwind_reload PLUGIN...   each cycle dlopens the next one, runs it,
 *                             dlcloses it */
#include <dlfcn.h>
#include <stdio.h>

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  for (int i = 0; i < 40; i++) {
    const char *path = argv[1 + i % (argc - 1)];
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
      fprintf(stderr, "dlopen %s: %s\n", path, dlerror());
      return 1;
    }
    int (*run)(int) = (int (*)(int))dlsym(h, "plugin_run");
    if (!run) return 1;
    run(50);
    if (dlclose(h) != 0) return 1;
  }
  return 0;
}
