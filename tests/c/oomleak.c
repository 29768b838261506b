/* A program for the black box tests (tests/blackbox.rs).
 *   oomleak grow CHUNK [PAUSE_MS]
 *                        leak CHUNK bytes at a time (touched) in
 *                        leak_chunk(), with some churn, until killed; after
 *                        each leak prints the total leaked so far, then
 *                        sleeps PAUSE_MS (default 0)
 *   oomleak peak         one thread only: grow to 200 MiB in 1 MiB blocks
 *                        (grow_peak, 10 ms apart), hold it 2.5 s, free it,
 *                        keep 8 x 1 MiB in leak_known, print "freed", exit
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

__attribute__((noinline)) void *grow_peak(size_t n) {
    char *p = malloc(n);
    if (p)
        memset(p, 5, n);
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
    if ((argc == 3 || argc == 4) && strcmp(argv[1], "grow") == 0) {
        size_t chunk = strtoul(argv[2], NULL, 10);
        unsigned pause_ms = argc == 4 ? (unsigned)strtoul(argv[3], NULL, 10) : 0;
        unsigned long long total = 0;
        for (;;) {
            if (!leak_chunk(chunk))
                return 3;
            total += chunk;
            printf("leaked %llu\n", total);
            churn();
            if (pause_ms)
                usleep(pause_ms * 1000);
        }
    }
    if (argc == 2 && strcmp(argv[1], "peak") == 0) {
        static void *held[200];
        for (int i = 0; i < 200; i++) {
            held[i] = grow_peak(1 << 20);
            usleep(10000);
        }
        usleep(2500000);
        for (int i = 0; i < 200; i++)
            free(held[i]);
        for (int i = 0; i < 8; i++)
            leak_known(1 << 20);
        printf("freed\n");
        return 0;
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
    fprintf(stderr, "usage: oomleak grow CHUNK [PAUSE_MS] | oomleak peak | oomleak idle N SIZE | oomleak fork N SIZE\n");
    return 2;
}
