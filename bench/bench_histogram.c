/*
 * bench_histogram - log-linear histogram (see bench_histogram.h for layout).
 * Per thread, never shared. Pure arithmetic, no allocation, no I/O.
 */
#include "bench_histogram.h"

#include <string.h>

#define EXACT (2 * BENCH_HISTOGRAM_SUB) /* values below this have their own bucket */

/* Title: bucket index of a value (clamped into the last bucket). */
size_t
bench_histogram_index(uint64_t value)
{
    if (value < EXACT)
        return (size_t)value;
    if (value >> BENCH_HISTOGRAM_MAX_BITS)
        return BENCH_HISTOGRAM_BUCKETS - 1;
    unsigned msb = 63u - (unsigned)__builtin_clzll(value); /* >= 7 */
    unsigned shift = msb - 6;                             /* sub-bucket width 2^shift */
    size_t sub = (size_t)(value >> shift) - BENCH_HISTOGRAM_SUB; /* 0..63 */
    return EXACT + (size_t)(msb - 7) * BENCH_HISTOGRAM_SUB + sub;
}

/* Title: smallest value that lands in bucket index. */
uint64_t
bench_histogram_bucket_low(size_t index)
{
    if (index < EXACT)
        return index;
    size_t rel = index - EXACT;
    unsigned msb = 7 + (unsigned)(rel / BENCH_HISTOGRAM_SUB);
    uint64_t sub = BENCH_HISTOGRAM_SUB + rel % BENCH_HISTOGRAM_SUB;
    return sub << (msb - 6);
}

/* Title: largest value that lands in bucket index. */
uint64_t
bench_histogram_bucket_high(size_t index)
{
    if (index < EXACT)
        return index;
    size_t rel = index - EXACT;
    unsigned msb = 7 + (unsigned)(rel / BENCH_HISTOGRAM_SUB);
    return bench_histogram_bucket_low(index) + ((uint64_t)1 << (msb - 6)) - 1;
}

void
bench_histogram_init(struct bench_histogram *h)
{
    memset(h, 0, sizeof(*h));
    h->min = UINT64_MAX;
}

void
bench_histogram_record(struct bench_histogram *h, uint64_t value)
{
    h->counts[bench_histogram_index(value)]++;
    h->total++;
    h->sum += value;
    if (value < h->min)
        h->min = value;
    if (value > h->max)
        h->max = value;
}

void
bench_histogram_merge(struct bench_histogram *dst, const struct bench_histogram *src)
{
    for (size_t i = 0; i < BENCH_HISTOGRAM_BUCKETS; i++)
        dst->counts[i] += src->counts[i];
    dst->total += src->total;
    dst->sum += src->sum;
    if (src->min < dst->min)
        dst->min = src->min;
    if (src->max > dst->max)
        dst->max = src->max;
}

uint64_t
bench_histogram_percentile(const struct bench_histogram *h, double pct)
{
    if (h->total == 0)
        return 0;
    if (pct > 100.0)
        pct = 100.0;
    /* Rank of the wanted value, 1-based; ceil without libm. */
    double want = pct / 100.0 * (double)h->total;
    uint64_t rank = (uint64_t)want;
    if ((double)rank < want)
        rank++;
    if (rank == 0)
        rank = 1;
    uint64_t seen = 0;
    for (size_t i = 0; i < BENCH_HISTOGRAM_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= rank) {
            uint64_t v = bench_histogram_bucket_high(i);
            if (v > h->max)
                v = h->max;
            if (v < h->min)
                v = h->min;
            return v;
        }
    }
    return h->max;
}

double
bench_histogram_mean(const struct bench_histogram *h)
{
    return h->total ? (double)h->sum / (double)h->total : 0.0;
}
