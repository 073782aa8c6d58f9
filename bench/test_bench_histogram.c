/*
 * test_bench_histogram - the log-linear histogram: bucket geometry, precision,
 * percentiles, merge. Each test runs in its own process; no shared state.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include <stdlib.h>

#include "bench_histogram.h"

TestSuite(bench_histogram);

Test(bench_histogram, counts_values_below_128_exactly)
{
    for (uint64_t v = 0; v < 128; v++) {
        size_t i = bench_histogram_index(v);
        cr_assert_eq(bench_histogram_bucket_low(i), v);
        cr_assert_eq(bench_histogram_bucket_high(i), v);
    }
}

Test(bench_histogram, buckets_tile_the_range_without_gaps)
{
    for (size_t i = 0; i + 1 < BENCH_HISTOGRAM_BUCKETS; i++) {
        cr_assert_eq(bench_histogram_bucket_high(i) + 1, bench_histogram_bucket_low(i + 1),
                     "gap after bucket %zu", i);
        cr_assert_eq(bench_histogram_index(bench_histogram_bucket_low(i)), i);
        cr_assert_eq(bench_histogram_index(bench_histogram_bucket_high(i)), i);
    }
    cr_assert_eq(bench_histogram_bucket_high(BENCH_HISTOGRAM_BUCKETS - 1),
                 (1ull << BENCH_HISTOGRAM_MAX_BITS) - 1);
}

Test(bench_histogram, splits_each_power_of_two_into_64_sub_buckets)
{
    for (unsigned k = 7; k < BENCH_HISTOGRAM_MAX_BITS; k++) {
        size_t first = bench_histogram_index(1ull << k);
        size_t last = bench_histogram_index((2ull << k) - 1);
        cr_assert_eq(last - first + 1, 64, "2^%u", k);
    }
}

Test(bench_histogram, keeps_relative_error_under_one_in_64)
{
    srand(7);
    for (int n = 0; n < 100000; n++) {
        uint64_t mask = (1ull << BENCH_HISTOGRAM_MAX_BITS) - 1;
        uint64_t v = (((uint64_t)rand() << 20 ^ (uint64_t)rand()) & mask) >> (rand() % 40);
        size_t i = bench_histogram_index(v);
        uint64_t lo = bench_histogram_bucket_low(i), hi = bench_histogram_bucket_high(i);
        cr_assert(lo <= v && v <= hi, "%llu not in [%llu, %llu]", (unsigned long long)v,
                  (unsigned long long)lo, (unsigned long long)hi);
        cr_assert((hi - lo) * 64 <= v, "bucket too wide for %llu", (unsigned long long)v);
    }
}

Test(bench_histogram, reports_percentiles_of_a_uniform_run)
{
    struct bench_histogram *h = malloc(sizeof(*h));
    bench_histogram_init(h);
    for (uint64_t v = 1; v <= 10000; v++)
        bench_histogram_record(h, v);
    cr_assert_eq(h->total, 10000);
    cr_assert_eq(h->min, 1);
    cr_assert_eq(h->max, 10000);
    struct {
        double pct;
        uint64_t want;
    } cases[] = {{50, 5000}, {90, 9000}, {99, 9900}, {99.9, 9990}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint64_t got = bench_histogram_percentile(h, cases[i].pct);
        cr_assert(got >= cases[i].want && got <= cases[i].want + cases[i].want / 64,
                  "p%g = %llu, want ~%llu", cases[i].pct, (unsigned long long)got,
                  (unsigned long long)cases[i].want);
    }
    cr_assert_eq(bench_histogram_percentile(h, 100), 10000);
    cr_assert_float_eq(bench_histogram_mean(h), 5000.5, 1e-9);
    free(h);
}

Test(bench_histogram, never_reports_beyond_the_exact_max)
{
    struct bench_histogram *h = malloc(sizeof(*h));
    bench_histogram_init(h);
    bench_histogram_record(h, 1000001); /* bucket high is above this */
    cr_assert_eq(bench_histogram_percentile(h, 50), 1000001);
    cr_assert_eq(bench_histogram_percentile(h, 99.9), 1000001);
    free(h);
}

Test(bench_histogram, is_zero_when_empty)
{
    struct bench_histogram *h = malloc(sizeof(*h));
    bench_histogram_init(h);
    cr_assert_eq(bench_histogram_percentile(h, 50), 0);
    cr_assert_float_eq(bench_histogram_mean(h), 0.0, 1e-12);
    free(h);
}

Test(bench_histogram, clamps_huge_values_but_keeps_max)
{
    struct bench_histogram *h = malloc(sizeof(*h));
    bench_histogram_init(h);
    bench_histogram_record(h, UINT64_MAX / 2);
    cr_assert_eq(h->counts[BENCH_HISTOGRAM_BUCKETS - 1], 1);
    cr_assert_eq(h->max, UINT64_MAX / 2);
    free(h);
}

Test(bench_histogram, merges_counts_min_and_max)
{
    struct bench_histogram *a = malloc(sizeof(*a)), *b = malloc(sizeof(*b));
    bench_histogram_init(a);
    bench_histogram_init(b);
    for (uint64_t v = 0; v < 100; v++)
        bench_histogram_record(a, 10 + v);
    for (uint64_t v = 0; v < 300; v++)
        bench_histogram_record(b, 5000 + v);
    bench_histogram_merge(a, b);
    cr_assert_eq(a->total, 400);
    cr_assert_eq(a->min, 10);
    cr_assert_eq(a->max, 5299);
    uint64_t p25 = bench_histogram_percentile(a, 25);
    cr_assert_eq(p25, 109);
    uint64_t p50 = bench_histogram_percentile(a, 50);
    cr_assert(p50 >= 5099 && p50 <= 5099 + 5099 / 64);
    free(a);
    free(b);
}
