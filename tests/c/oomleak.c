/* A program for the black box tests (tests/blackbox.rs).
 *   oomleak grow CHUNK   leak CHUNK bytes at a time (touched) in
 *                        leak_chunk(), with some churn, until killed; after
 *                        each leak prints the total leaked so far
 *   oomleak idle N SIZE  leak N objects of SIZE bytes in leak_known(),
 *                        print "ready", then sleep until killed
 *   oomleak fork N SIZE  as idle, then fork: the child leaks 10 x 300 bytes
 *                        in child_known, the parent 5 x 200 in after_fork;
 *                        each prints "child PID" or "parent PID" and
 *                        sleeps until killed */
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

__attribute__((noinline)) void *child_known(size_t n) {
    void *p = malloc(n);
    if (p)
        memset(p, 3, n);
    return p;
}

__attribute__((noinline)) void *after_fork(size_t n) {
    void *p = malloc(n);
    if (p)
        memset(p, 4, n);
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
    if (argc == 4 && strcmp(argv[1], "fork") == 0) {
        long n = strtol(argv[2], NULL, 10);
        size_t size = strtoul(argv[3], NULL, 10);
        for (long i = 0; i < n; i++)
            leak_known(size);
        pid_t pid = fork();
        if (pid < 0)
            return 3;
        for (int i = 0; i < (pid == 0 ? 10 : 5); i++) {
            if (pid == 0)
                child_known(300);
            else
                after_fork(200);
        }
        printf("%s %d\n", pid == 0 ? "child" : "parent", (int)getpid());
        for (;;)
            pause();
    }
    fprintf(stderr, "usage: oomleak grow CHUNK | oomleak idle N SIZE | oomleak fork N SIZE\n");
    return 2;
}
