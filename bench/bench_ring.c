/*
 * bench_ring - io_uring setup and SQE helpers (see bench_ring.h).
 * Per ring, never shared.
 */
#include "bench_ring.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int
bench_ring_init(struct io_uring *ring, unsigned entries)
{
    struct io_uring_params p = {0};

    p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
              IORING_SETUP_SUBMIT_ALL;
    p.flags |= IORING_SETUP_CQSIZE;
    p.cq_entries = entries * 4; /* multishot accept and pipelined bursts */
    int ret = io_uring_queue_init_params(entries, ring, &p);
    if (ret == -EINVAL) {
        struct io_uring_params q = {0};
        q.flags = IORING_SETUP_CQSIZE;
        q.cq_entries = entries * 4;
        ret = io_uring_queue_init_params(entries, ring, &q);
    }
    return ret;
}

struct io_uring_sqe *
bench_ring_sqe(struct io_uring *ring)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    while (sqe == NULL) {
        int ret = io_uring_submit(ring);
        if (ret < 0 && ret != -EAGAIN && ret != -EINTR) {
            fprintf(stderr, "io_uring_submit: %d\n", ret);
            abort();
        }
        sqe = io_uring_get_sqe(ring);
    }
    return sqe;
}

void
bench_ring_cancel(struct io_uring *ring, uint64_t target, uint64_t ignore)
{
    struct io_uring_sqe *sqe = bench_ring_sqe(ring);
    io_uring_prep_cancel64(sqe, target, 0);
    io_uring_sqe_set_data64(sqe, ignore);
}

uint64_t
bench_ring_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

void
bench_ring_timespec(struct __kernel_timespec *ts, uint64_t us)
{
    ts->tv_sec = (long long)(us / 1000000u);
    ts->tv_nsec = (long long)(us % 1000000u) * 1000;
}
