/* Leaks 10000 bytes every 10 ms in leaky_c_function for argv[1] seconds
 * (default 10), to read over heapprof's /debug/pprof/ endpoint under the
 * preload library. Prints "pid N" first and "done" at the end. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

__attribute__((noinline)) void *leaky_c_function(size_t n) {
    void *p = malloc(n);
    memset(p, 7, n);
    return p;
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 10.0;
    printf("pid %d\n", (int)getpid());
    fflush(stdout);
    struct timespec tick = {0, 10 * 1000 * 1000};
    for (long i = 0; i < (long)(seconds * 100); i++) {
        leaky_c_function(10000);
        nanosleep(&tick, NULL);
    }
    printf("done\n");
    return 0;
}
