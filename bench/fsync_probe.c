/*
 * ringmta-fsync-probe: how long this machine's fdatasync takes, without the
 * relay. It does what the spool does for one small commit, in a loop: a
 * pwrite at the next offset of a fallocated file, then fdatasync, each timed
 * with CLOCK_MONOTONIC. bench/RESULTS.md uses it to separate the disk's
 * latency tail from the relay's (run it alone, then beside busy CPUs).
 *
 *   ringmta-fsync-probe [--dir D] [--seconds S] [--size N] [--slow-ms M] [--json]
 *
 * Prints the count, p50/p90/p99/p99.9/max in milliseconds, and how many took
 * longer than --slow-ms (3 by default). The file is removed at the end.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench_histogram.h"

#define PROBE_FILE_SIZE (256u << 20)

static uint64_t
probe_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void
probe_usage(FILE *f)
{
    fprintf(f, "usage: ringmta-fsync-probe [--dir D] [--seconds S] [--size N] [--slow-ms M] "
               "[--json]\n");
}

int
main(int argc, char **argv)
{
    const char *dir = "/var/tmp";
    double seconds = 5, slow_ms = 3;
    size_t size = 2048;
    bool json = false;
    static const struct option opts[] = {
        { "dir", required_argument, NULL, 'd' },
        { "seconds", required_argument, NULL, 's' },
        { "size", required_argument, NULL, 'n' },
        { "slow-ms", required_argument, NULL, 'm' },
        { "json", no_argument, NULL, 'j' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'd': dir = optarg; break;
        case 's': seconds = atof(optarg); break;
        case 'n': size = (size_t)strtoul(optarg, NULL, 10); break;
        case 'm': slow_ms = atof(optarg); break;
        case 'j': json = true; break;
        case 'h': probe_usage(stdout); return 0;
        default: probe_usage(stderr); return 2;
        }
    }
    if (seconds <= 0 || size == 0 || size > (1u << 20)) {
        probe_usage(stderr);
        return 2;
    }

    char path[4096];
    snprintf(path, sizeof path, "%s/ringmta-fsync-probe.XXXXXX", dir);
    int fd = mkstemp(path);
    if (fd < 0) {
        fprintf(stderr, "ringmta-fsync-probe: %s: %s\n", path, strerror(errno));
        return 1;
    }
    unlink(path);   /* gone when we exit, however we exit */
    if (fallocate(fd, 0, 0, PROBE_FILE_SIZE) != 0) {
        fprintf(stderr, "ringmta-fsync-probe: fallocate: %s\n", strerror(errno));
        return 1;
    }
    char *buf = malloc(size);
    memset(buf, 'x', size);

    static struct bench_histogram h;
    bench_histogram_init(&h);
    uint64_t slow = 0, slow_us = (uint64_t)(slow_ms * 1000);
    uint64_t start = probe_now_us(), end = start + (uint64_t)(seconds * 1e6);
    off_t off = 0;
    while (probe_now_us() < end) {
        if (off + (off_t)size > (off_t)PROBE_FILE_SIZE)
            off = 0;
        if (pwrite(fd, buf, size, off) != (ssize_t)size) {
            fprintf(stderr, "ringmta-fsync-probe: pwrite: %s\n", strerror(errno));
            return 1;
        }
        off += (off_t)size;
        uint64_t t0 = probe_now_us();
        if (fdatasync(fd) != 0) {
            fprintf(stderr, "ringmta-fsync-probe: fdatasync: %s\n", strerror(errno));
            return 1;
        }
        uint64_t us = probe_now_us() - t0;
        bench_histogram_record(&h, us);
        slow += us > slow_us;
    }
    close(fd);
    free(buf);

    double ms[5];
    static const double pct[5] = { 50, 90, 99, 99.9, 100 };
    for (int i = 0; i < 5; i++)
        ms[i] = (double)bench_histogram_percentile(&h, pct[i]) / 1000.0;
    if (json)
        printf("{\"fdatasyncs\": %llu, \"slow\": %llu, \"slow_ms\": %.3f, \"p50_ms\": %.3f, "
               "\"p90_ms\": %.3f, \"p99_ms\": %.3f, \"p99_9_ms\": %.3f, \"max_ms\": %.3f}\n",
               (unsigned long long)h.total, (unsigned long long)slow, slow_ms, ms[0], ms[1],
               ms[2], ms[3], ms[4]);
    else
        printf("%llu fdatasyncs of %zu-octet writes in %.1f s: p50 %.3f p90 %.3f p99 %.3f "
               "p99.9 %.3f max %.3f ms; %llu over %.1f ms\n",
               (unsigned long long)h.total, size, seconds, ms[0], ms[1], ms[2], ms[3], ms[4],
               (unsigned long long)slow, slow_ms);
    return 0;
}
