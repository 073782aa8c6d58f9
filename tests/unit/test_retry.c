/*
 * Tests for queue/retry: the backoff schedule and its cap, jitter bounds and
 * determinism, expiry at the exact boundary, and the restart spread.
 */
#include <criterion/criterion.h>
#include <stdint.h>

#include "config.h"
#include "retry.h"

#define S 1000ULL
#define DAY (86400 * S)

static struct retry_params
params(void)
{
    struct retry_params p = {
        .minimal_backoff_ms = 300 * S,
        .maximal_backoff_ms = 4000 * S,
        .max_lifetime_ms = 5 * DAY,
        .jitter_percent = 15,
        .recovery_window_ms = 60 * S,
    };
    return p;
}

Test(retry, params_come_from_config)
{
    struct config cfg;
    struct retry_params p;
    config_init(&cfg);
    retry_params_from_config(&p, &cfg);
    cr_assert_eq(p.minimal_backoff_ms, 300 * S);
    cr_assert_eq(p.maximal_backoff_ms, 4000 * S);
    cr_assert_eq(p.max_lifetime_ms, 5 * DAY);
    cr_assert(p.jitter_percent >= 10 && p.jitter_percent <= 20);
    config_free(&cfg);
}

Test(retry, schedule_doubles_from_minimal_to_maximal)
{
    struct retry_params p = params();
    uint64_t expect[] = { 300 * S, 600 * S, 1200 * S, 2400 * S, 4000 * S, 4000 * S };
    for (unsigned a = 1; a <= 6; a++)
        cr_assert_eq(retry_backoff_ms(&p, a, NULL), expect[a - 1], "attempt %u", a);
    /* Attempt 0 (never tried) reads as the first. */
    cr_assert_eq(retry_backoff_ms(&p, 0, NULL), 300 * S);
}

Test(retry, cap_holds_for_huge_attempt_numbers)
{
    struct retry_params p = params();
    struct retry_rng rng;
    retry_rng_seed(&rng, 1);
    unsigned attempts[] = { 7, 30, 63, 64, 65, 1000, UINT32_MAX };
    for (size_t i = 0; i < sizeof attempts / sizeof attempts[0]; i++) {
        cr_assert_eq(retry_backoff_ms(&p, attempts[i], NULL), 4000 * S);
        cr_assert_leq(retry_backoff_ms(&p, attempts[i], &rng), 4000 * S);
    }
}

Test(retry, maximal_below_minimal_means_minimal)
{
    struct retry_params p = params();
    p.maximal_backoff_ms = 10 * S;
    cr_assert_eq(retry_backoff_ms(&p, 1, NULL), 300 * S);
    cr_assert_eq(retry_backoff_ms(&p, 9, NULL), 300 * S);
}

Test(retry, jitter_stays_in_bounds_and_fills_them)
{
    struct retry_params p = params();
    struct retry_rng rng;
    retry_rng_seed(&rng, 42);
    for (unsigned a = 1; a <= 7; a++) {
        uint64_t nominal = retry_backoff_ms(&p, a, NULL);
        uint64_t lo = nominal - nominal * 15 / 100, hi = nominal + nominal * 15 / 100;
        if (lo < p.minimal_backoff_ms)
            lo = p.minimal_backoff_ms;
        if (hi > p.maximal_backoff_ms)
            hi = p.maximal_backoff_ms;
        uint64_t seen_lo = UINT64_MAX, seen_hi = 0;
        unsigned below = 0, n = 20000;
        for (unsigned i = 0; i < n; i++) {
            uint64_t d = retry_backoff_ms(&p, a, &rng);
            cr_assert(d >= lo && d <= hi, "attempt %u: %lu outside [%lu, %lu]", a,
                      (unsigned long)d, (unsigned long)lo, (unsigned long)hi);
            seen_lo = d < seen_lo ? d : seen_lo;
            seen_hi = d > seen_hi ? d : seen_hi;
            below += d < (lo + hi) / 2;
        }
        /* Uniform over the range: both ends reached (within 0.5 %), and no
         * pile-up on a clipped bound (half below the midpoint, +-3 %). */
        uint64_t slack = (hi - lo) / 200;
        cr_assert_leq(seen_lo, lo + slack, "attempt %u", a);
        cr_assert_geq(seen_hi, hi - slack, "attempt %u", a);
        cr_assert(below > n * 47 / 100 && below < n * 53 / 100, "attempt %u: %u below", a,
                  below);
    }
}

Test(retry, same_seed_same_schedule)
{
    struct retry_params p = params();
    struct retry_rng a, b, c;
    retry_rng_seed(&a, 7);
    retry_rng_seed(&b, 7);
    retry_rng_seed(&c, 8);
    unsigned differ = 0;
    for (unsigned i = 1; i <= 100; i++) {
        uint64_t x = retry_backoff_ms(&p, i % 6 + 1, &a);
        cr_assert_eq(x, retry_backoff_ms(&p, i % 6 + 1, &b));
        differ += x != retry_backoff_ms(&p, i % 6 + 1, &c);
    }
    cr_assert_gt(differ, 90);
}

Test(retry, rng_below_stays_below)
{
    struct retry_rng rng;
    retry_rng_seed(&rng, 0);
    cr_assert_eq(retry_rng_below(&rng, 0), 0);
    cr_assert_eq(retry_rng_below(&rng, 1), 0);
    for (int i = 0; i < 10000; i++)
        cr_assert_lt(retry_rng_below(&rng, 3), 3);
}

Test(retry, expiry_boundary_is_inclusive)
{
    struct retry_params p = params();
    uint64_t arrival = 1700000000000ULL;
    cr_assert_not(retry_expired(&p, arrival, arrival));
    cr_assert_not(retry_expired(&p, arrival, arrival + 5 * DAY - 1));
    cr_assert(retry_expired(&p, arrival, arrival + 5 * DAY));
    cr_assert(retry_expired(&p, arrival, arrival + 6 * DAY));
    /* A clock behind the arrival time is not an expiry. */
    cr_assert_not(retry_expired(&p, arrival, arrival - 1000));
}

Test(retry, zero_lifetime_means_try_once)
{
    struct retry_params p = params();
    uint64_t next = 0;
    p.max_lifetime_ms = 0;
    cr_assert(retry_expired(&p, 1000, 1000));
    cr_assert_eq(retry_after_failure(&p, 1000, 1, 1000, NULL, &next), RETRY_EXPIRED);
}

Test(retry, huge_lifetime_does_not_wrap)
{
    struct retry_params p = params();
    p.max_lifetime_ms = UINT64_MAX;
    cr_assert_not(retry_expired(&p, 5000, UINT64_MAX - 1));
}

Test(retry, failure_defers_with_backoff_then_expires)
{
    struct retry_params p = params();
    uint64_t arrival = 10 * DAY, now = arrival, next = 0;
    unsigned attempt = 1;
    /* Without jitter: 300 s, 600 s, ... 4000 s, ... until 5 days. */
    for (;;) {
        enum retry_decision d = retry_after_failure(&p, arrival, attempt, now, NULL, &next);
        if (d == RETRY_EXPIRED)
            break;
        cr_assert_gt(next, now);
        cr_assert_leq(next, arrival + 5 * DAY);
        if (attempt == 1)
            cr_assert_eq(next - now, 300 * S);
        else if (next < arrival + 5 * DAY)
            cr_assert_eq(next - now, attempt >= 5 ? 4000 * S : (300 * S) << (attempt - 1));
        now = next;
        attempt++;
    }
    /* Expired exactly at the lifetime, not up to 4000 s after it. */
    cr_assert_eq(now, arrival + 5 * DAY);
    /* 300+600+1200+2400 = 4500 s, then 4000 s steps over the rest. */
    cr_assert_eq(attempt, 4 + (5 * 86400 - 4500 + 3999) / 4000 + 1);
}

Test(retry, next_attempt_never_passes_expiry)
{
    struct retry_params p = params();
    struct retry_rng rng;
    uint64_t next;
    retry_rng_seed(&rng, 3);
    uint64_t arrival = 0, now = 5 * DAY - 10 * S;
    cr_assert_eq(retry_after_failure(&p, arrival, 9, now, &rng, &next), RETRY_DEFER);
    cr_assert_eq(next, 5 * DAY);
}

Test(retry, recovered_overdue_mail_spreads_over_the_window)
{
    struct retry_params p = params();
    struct retry_rng rng;
    enum { N = 200000, BINS = 20 };
    unsigned bins[BINS] = { 0 };
    uint64_t now = 100 * DAY;
    retry_rng_seed(&rng, 99);
    for (unsigned i = 0; i < N; i++) {
        /* Overdue by up to a day, or never tried (due at arrival). */
        uint64_t arrival = now - 2 * DAY + i;
        uint64_t next = i % 3 ? now - (uint64_t)i * 400 : 0;
        uint64_t due = retry_recovered_due(&p, arrival, next, now, &rng);
        cr_assert(due >= now && due < now + 60 * S);
        bins[(due - now) * BINS / (60 * S)]++;
    }
    /* Each 3 s slice gets 5 % +- 0.5 %: no stampede at "now". */
    for (unsigned b = 0; b < BINS; b++)
        cr_assert(bins[b] > N / BINS * 9 / 10 && bins[b] < N / BINS * 11 / 10,
                  "bin %u: %u", b, bins[b]);
}

Test(retry, recovered_mail_is_never_due_before_its_backoff)
{
    struct retry_params p = params();
    struct retry_rng rng;
    uint64_t now = 100 * DAY;
    retry_rng_seed(&rng, 5);
    for (unsigned i = 0; i < 10000; i++) {
        uint64_t next = now + i * 6;     /* due within the window */
        uint64_t due = retry_recovered_due(&p, now - DAY, next, now, &rng);
        cr_assert_geq(due, next);
        cr_assert_lt(due, now + 60 * S);
    }
}

Test(retry, recovered_mail_due_later_keeps_its_time)
{
    struct retry_params p = params();
    struct retry_rng rng;
    uint64_t now = 100 * DAY;
    retry_rng_seed(&rng, 5);
    cr_assert_eq(retry_recovered_due(&p, now - DAY, now + 60 * S, now, &rng), now + 60 * S);
    cr_assert_eq(retry_recovered_due(&p, now - DAY, now + 3600 * S, now, &rng),
                 now + 3600 * S);
}

Test(retry, recovered_spread_is_deterministic_per_seed)
{
    struct retry_params p = params();
    struct retry_rng a, b;
    retry_rng_seed(&a, 11);
    retry_rng_seed(&b, 11);
    for (unsigned i = 0; i < 1000; i++)
        cr_assert_eq(retry_recovered_due(&p, 0, 0, 100 * S, &a),
                     retry_recovered_due(&p, 0, 0, 100 * S, &b));
}

Test(retry, zero_window_makes_overdue_mail_due_now)
{
    struct retry_params p = params();
    struct retry_rng rng;
    p.recovery_window_ms = 0;
    retry_rng_seed(&rng, 1);
    cr_assert_eq(retry_recovered_due(&p, 0, 5, 1000, &rng), 1000);
    cr_assert_eq(retry_recovered_due(&p, 0, 5000, 1000, &rng), 5000);
}
