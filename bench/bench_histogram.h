/*
 * bench_histogram - a small HdrHistogram-style log-linear histogram of
 * non-negative integers (the tools record microseconds and message counts).
 *
 * One histogram per thread, never shared; threads merge at the end with
 * bench_histogram_merge(). No allocation: the struct is a flat array.
 *
 * Layout: values below 128 are counted exactly; above, each power-of-two range
 * [2^k, 2^(k+1)) is split into 64 linear sub-buckets, so any recorded value
 * is reported within 1/64 (1.6 %) of itself. Values at or above 2^40 (about
 * 12 days in microseconds) are clamped into the last bucket; max stays exact.
 */
#ifndef RINGMTA_BENCH_HISTOGRAM_H
#define RINGMTA_BENCH_HISTOGRAM_H

#include <stddef.h>
#include <stdint.h>

#define BENCH_HISTOGRAM_SUB 64
#define BENCH_HISTOGRAM_MAX_BITS 40
/* 128 exact buckets, then 64 per power of two from 2^7 to 2^39. */
#define BENCH_HISTOGRAM_BUCKETS \
    (2 * BENCH_HISTOGRAM_SUB + (BENCH_HISTOGRAM_MAX_BITS - 7) * BENCH_HISTOGRAM_SUB)

struct bench_histogram {
    uint64_t counts[BENCH_HISTOGRAM_BUCKETS];
    uint64_t total;
    uint64_t min;
    uint64_t max;
    uint64_t sum;
};

void bench_histogram_init(struct bench_histogram *h);
void bench_histogram_record(struct bench_histogram *h, uint64_t value);
/* Adds every count of src to dst; src is not changed. */
void bench_histogram_merge(struct bench_histogram *dst, const struct bench_histogram *src);
/*
 * The value at percentile pct (0..100]: the highest value equivalent to the
 * bucket holding the ceil(pct/100 * total)-th smallest value, clamped to the
 * exact max (HdrHistogram's getValueAtPercentile). 0 when empty.
 */
uint64_t bench_histogram_percentile(const struct bench_histogram *h, double pct);
double bench_histogram_mean(const struct bench_histogram *h);

/* Bucket geometry, exposed for tests and for printing distributions. */
size_t bench_histogram_index(uint64_t value);
uint64_t bench_histogram_bucket_low(size_t index);
uint64_t bench_histogram_bucket_high(size_t index);

#endif
