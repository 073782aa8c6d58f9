/*
 * bench_ring - io_uring helpers shared by ringmta-bench and ringmta-sink:
 * user_data packing, SQE acquisition, ring setup, the clock.
 *
 * Per ring, never shared: each thread owns its ring. user_data is packed as
 * op (8 bits) | generation (24 bits) | slot (32 bits); a completion whose
 * generation no longer matches its slot belongs to a freed connection and is a
 * bug (slots are only reused once no SQE for them is in flight).
 */
#ifndef RINGMTA_BENCH_RING_H
#define RINGMTA_BENCH_RING_H

#include <stdint.h>

#include <liburing.h>

static inline uint64_t
bench_ring_udata(unsigned op, uint32_t slot, uint32_t gen)
{
    return ((uint64_t)(op & 0xff) << 56) | ((uint64_t)(gen & 0xffffff) << 32) | slot;
}

static inline unsigned
bench_ring_udata_op(uint64_t ud)
{
    return (unsigned)(ud >> 56);
}

static inline uint32_t
bench_ring_udata_gen(uint64_t ud)
{
    return (uint32_t)(ud >> 32) & 0xffffff;
}

static inline uint32_t
bench_ring_udata_slot(uint64_t ud)
{
    return (uint32_t)ud;
}

/*
 * Sets up a ring for one thread, preferring SINGLE_ISSUER|DEFER_TASKRUN
 * (completions run only when this thread waits) and falling back to plain
 * flags on older kernels. Returns 0 or -errno.
 */
int bench_ring_init(struct io_uring *ring, unsigned entries);
/* An SQE, submitting first if the SQ is full. Never NULL. */
struct io_uring_sqe *bench_ring_sqe(struct io_uring *ring);
/*
 * Cancels the request whose user_data is target; the cancel's own completion
 * carries ignore. By user_data, never by fd: the generation in it cannot match
 * a later connection that got the same fd number.
 */
void bench_ring_cancel(struct io_uring *ring, uint64_t target, uint64_t ignore);
/* CLOCK_MONOTONIC in microseconds. */
uint64_t bench_ring_now_us(void);
/* A relative timespec of us microseconds, for io_uring_prep_timeout. */
void bench_ring_timespec(struct __kernel_timespec *ts, uint64_t us);

#endif
