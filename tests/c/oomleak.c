/* A program for the black box tests (tests/blackbox.rs).
 *   oomleak grow CHUNK   leak CHUNK bytes at a time (touched) in
 *                        leak_chunk(), with some churn, until killed; after
 *                        each leak prints the total leaked so far
 *   oomleak idle N SIZE  leak N objects of SIZE bytes in leak_known(),
 *                        print "ready", then sleep until killed */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

__attribute__((noinline)) void *leak_chunk(size_t n) {
    char *p = malloc(n);
    if (p)
        memset(p, 1, n);
    return p;
}

__attribute__((noinline)) void *leak_known(size_t n) {
    void *p = malloc(n);
    if (p)
        memset(p, 2, n);
    return p;
}

__attribute__((noinline)) void churn(void) {
    for (int i = 0; i < 64; i++) {
        void *volatile p = malloc(1000 + i * 37);
        free(p);
    }
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 3 && strcmp(argv[1], "grow") == 0) {
        size_t chunk = strtoul(argv[2], NULL, 10);
        unsigned long long total = 0;
        for (;;) {
            if (!leak_chunk(chunk))
                return 3;
            total += chunk;
            printf("leaked %llu\n", total);
            churn();
        }
    }
    if (argc == 4 && strcmp(argv[1], "idle") == 0) {
        long n = strtol(argv[2], NULL, 10);
        size_t size = strtoul(argv[3], NULL, 10);
        for (long i = 0; i < n; i++)
            leak_known(size);
        printf("ready\n");
        for (;;)
            pause();
    }
    fprintf(stderr, "usage: oomleak grow CHUNK | oomleak idle N SIZE\n");
    return 2;
}
