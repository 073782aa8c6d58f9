/*
 * Tests for queue/shaping: token buckets over simulated time, AIMD window
 * up and down, the decrease cooldown, dead/probing/alive transitions.
 * Time is a plain counter: nothing here reads a clock.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <stdint.h>

#include "shaping.h"

/* ---- token buckets ---- */

struct rate_case {
    uint64_t count;
    uint64_t per_ms;
    uint64_t burst;
    uint64_t duration_ms;
};

ParameterizedTestParameters(shaping, bucket_honours_rate_over_time)
{
    static struct rate_case cases[] = {
        { 10, 1000, 0, 60000 },       /* 10/s, burst 10 */
        { 10, 1000, 1, 60000 },       /* 10/s, strict pacing */
        { 3, 1000, 2, 10000 },        /* 333.3 ms: fractional refill carries */
        { 1000, 1000, 50, 5000 },     /* one per ms */
        { 7, 1000, 2, 30000 },
        { 1, 60000, 1, 3600000 },     /* 1/min */
        { 100, 3600000, 0, 7200000 }, /* 100/h, burst 100 */
    };
    return cr_make_param_array(struct rate_case, cases, sizeof cases / sizeof cases[0]);
}

/* A greedy sender takes every token at the moment next_ms promises it: it
 * must get exactly burst + rate * T (rounded down), never more. (With burst
 * 1 and a period that is not a whole number of ms, sends must be a whole
 * ms apart and at least the period: 3/s then runs at one per 334 ms.) */
ParameterizedTest(struct rate_case *c, shaping, bucket_honours_rate_over_time)
{
    struct shaping_bucket b;
    uint64_t t0 = 1000000, now = t0, taken = 0;
    uint64_t burst = c->burst ? c->burst : c->count;
    shaping_bucket_init(&b, c->count, c->per_ms, c->burst, t0);

    for (;;) {
        uint64_t at = shaping_bucket_next_ms(&b, now);
        cr_assert_geq(at, now);
        if (at > t0 + c->duration_ms)
            break;
        now = at;
        cr_assert(shaping_bucket_take(&b, now), "next_ms promised a token at %lu",
                  (unsigned long)now);
        taken++;
        /* The limit holds at every instant, not only at the end. */
        uint64_t allowed = burst + (now - t0) * c->count / c->per_ms;
        cr_assert_leq(taken, allowed, "took %lu by +%lu ms, allowed %lu",
                      (unsigned long)taken, (unsigned long)(now - t0),
                      (unsigned long)allowed);
    }
    uint64_t expect = burst + c->duration_ms * c->count / c->per_ms;
    cr_assert_eq(taken, expect, "took %lu, expected %lu", (unsigned long)taken,
                 (unsigned long)expect);
}

Test(shaping, bucket_starts_full_then_refuses)
{
    struct shaping_bucket b;
    shaping_bucket_init(&b, 5, 1000, 3, 0);
    for (int i = 0; i < 3; i++)
        cr_assert(shaping_bucket_take(&b, 0));
    cr_assert_not(shaping_bucket_take(&b, 0));
    cr_assert_eq(shaping_bucket_next_ms(&b, 0), 200);
}

Test(shaping, bucket_refills_fractionally)
{
    struct shaping_bucket b;
    shaping_bucket_init(&b, 3, 1000, 2, 0);
    cr_assert(shaping_bucket_take(&b, 0));
    cr_assert(shaping_bucket_take(&b, 0));
    /* 3/s: a token every 333.33 ms; the partial fill carries over. */
    cr_assert_not(shaping_bucket_take(&b, 333));
    cr_assert_eq(shaping_bucket_next_ms(&b, 333), 334);
    cr_assert(shaping_bucket_take(&b, 334));
    /* 2 units short of a token were kept, so the next is due at 667. */
    cr_assert_eq(shaping_bucket_next_ms(&b, 400), 667);
    cr_assert(shaping_bucket_take(&b, 667));
    cr_assert(shaping_bucket_take(&b, 1000));
}

Test(shaping, bucket_never_holds_more_than_burst)
{
    struct shaping_bucket b;
    shaping_bucket_init(&b, 10, 1000, 4, 0);
    /* A day idle still gives only the burst. */
    for (int i = 0; i < 4; i++)
        cr_assert(shaping_bucket_take(&b, 86400000));
    cr_assert_not(shaping_bucket_take(&b, 86400000));
}

Test(shaping, bucket_default_burst_is_one_period)
{
    struct shaping_bucket b;
    shaping_bucket_init(&b, 6, 60000, 0, 0);
    for (int i = 0; i < 6; i++)
        cr_assert(shaping_bucket_take(&b, 0));
    cr_assert_not(shaping_bucket_take(&b, 0));
    cr_assert_eq(shaping_bucket_next_ms(&b, 0), 10000);
}

Test(shaping, unlimited_bucket_always_gives)
{
    struct shaping_bucket b;
    shaping_bucket_init(&b, 0, 1000, 0, 0);
    for (int i = 0; i < 100000; i++)
        cr_assert(shaping_bucket_take(&b, 5));
    cr_assert_eq(shaping_bucket_next_ms(&b, 5), 5);
}

Test(shaping, give_back_restores_but_never_overfills)
{
    struct shaping_bucket b;
    shaping_bucket_init(&b, 1, 1000, 2, 0);
    cr_assert(shaping_bucket_take(&b, 0));
    cr_assert(shaping_bucket_take(&b, 0));
    cr_assert_not(shaping_bucket_take(&b, 0));
    shaping_bucket_give_back(&b, 0);
    cr_assert(shaping_bucket_take(&b, 0));
    shaping_bucket_give_back(&b, 0);
    shaping_bucket_give_back(&b, 0);
    shaping_bucket_give_back(&b, 0);
    cr_assert(shaping_bucket_take(&b, 0));
    cr_assert(shaping_bucket_take(&b, 0));
    cr_assert_not(shaping_bucket_take(&b, 0));
}

Test(shaping, clock_stepping_back_mints_no_tokens)
{
    struct shaping_bucket b;
    shaping_bucket_init(&b, 1, 1000, 1, 10000);
    cr_assert(shaping_bucket_take(&b, 10000));
    cr_assert_not(shaping_bucket_take(&b, 5000));
    cr_assert_not(shaping_bucket_take(&b, 10999));
    cr_assert_geq(shaping_bucket_next_ms(&b, 5000), 11000);
    cr_assert(shaping_bucket_take(&b, 11000));
}

/* ---- concurrency ---- */

static struct shaping_params
params(unsigned max_connections)
{
    struct shaping_params p;
    shaping_params_default(&p, max_connections);
    return p;
}

Test(shaping, initial_window_is_min_of_five_and_max)
{
    struct shaping s;
    struct shaping_params p = params(20);
    shaping_init(&s, &p, 0);
    cr_assert_eq(shaping_window(&s), 5);
    p = params(3);
    shaping_init(&s, &p, 0);
    cr_assert_eq(shaping_window(&s), 3);
    p = params(0);
    shaping_init(&s, &p, 0);
    cr_assert_eq(shaping_window(&s), 1);
}

Test(shaping, grows_by_one_per_window_of_deliveries_up_to_max)
{
    struct shaping s;
    struct shaping_params p = params(8);
    shaping_init(&s, &p, 0);
    unsigned expect[] = { 5, 6, 7, 8 };
    for (size_t i = 0; i + 1 < sizeof expect / sizeof expect[0]; i++) {
        for (unsigned k = 0; k + 1 < expect[i]; k++) {
            shaping_delivered(&s, 0);
            cr_assert_eq(shaping_window(&s), expect[i]);
        }
        shaping_delivered(&s, 0);
        cr_assert_eq(shaping_window(&s), expect[i + 1]);
    }
    for (int i = 0; i < 1000; i++)
        shaping_delivered(&s, 0);
    cr_assert_eq(shaping_window(&s), 8);
}

Test(shaping, grows_by_one_per_n_deliveries_when_n_is_set)
{
    struct shaping s;
    struct shaping_params p = params(20);
    p.success_per_increment = 3;
    shaping_init(&s, &p, 0);
    for (int i = 0; i < 9; i++)
        shaping_delivered(&s, 0);
    cr_assert_eq(shaping_window(&s), 8);
}

Test(shaping, halves_down_to_one_when_failures_are_spaced)
{
    struct shaping s;
    struct shaping_params p = params(20);
    p.initial_concurrency = 20;
    p.dead_after_failures = 0;
    shaping_init(&s, &p, 0);
    unsigned expect[] = { 10, 5, 2, 1, 1 };
    uint64_t now = 0;
    for (size_t i = 0; i < sizeof expect / sizeof expect[0]; i++) {
        cr_assert_not(shaping_connect_failed(&s, now));
        cr_assert_eq(shaping_window(&s), expect[i], "step %zu: %u", i, shaping_window(&s));
        now += p.decrease_cooldown_ms;
    }
}

Test(shaping, one_burst_of_failures_halves_once)
{
    struct shaping s;
    struct shaping_params p = params(20);
    p.initial_concurrency = 16;
    p.dead_after_failures = 0;
    shaping_init(&s, &p, 1000);
    /* 16 connections hit by the same 421 wave within the cooldown. */
    for (int i = 0; i < 16; i++)
        shaping_connect_failed(&s, 1000 + (uint64_t)i * 100);
    cr_assert_eq(shaping_window(&s), 8);
    /* One ms short of the cooldown: still the same burst. */
    shaping_connect_failed(&s, 1000 + p.decrease_cooldown_ms - 1);
    cr_assert_eq(shaping_window(&s), 8);
    shaping_connect_failed(&s, 1000 + p.decrease_cooldown_ms);
    cr_assert_eq(shaping_window(&s), 4);
}

Test(shaping, decrease_restarts_the_growth_count)
{
    struct shaping s;
    struct shaping_params p = params(20);
    p.success_per_increment = 4;
    shaping_init(&s, &p, 0);
    for (int i = 0; i < 3; i++)
        shaping_delivered(&s, 0);
    shaping_connect_failed(&s, 0);
    cr_assert_eq(shaping_window(&s), 2);
    shaping_connect_ok(&s, 0);
    for (int i = 0; i < 3; i++)
        shaping_delivered(&s, 0);
    cr_assert_eq(shaping_window(&s), 2);
    shaping_delivered(&s, 0);
    cr_assert_eq(shaping_window(&s), 3);
}

Test(shaping, up_down_sequence)
{
    struct shaping s;
    struct shaping_params p = params(10);
    p.success_per_increment = 1;
    p.dead_after_failures = 0;
    p.decrease_cooldown_ms = 0;
    shaping_init(&s, &p, 0);
    /* d = delivered, f = connection failure */
    const char *seq = "dddddddfdfff" "ddd";
    unsigned expect[] = { 6, 7, 8, 9, 10, 10, 10, 5, 6, 3, 1, 1, 2, 3, 4 };
    for (size_t i = 0; seq[i]; i++) {
        if (seq[i] == 'd')
            shaping_delivered(&s, i);
        else
            shaping_connect_failed(&s, i);
        cr_assert_eq(shaping_window(&s), expect[i], "after %zu: %u", i, shaping_window(&s));
    }
}

Test(shaping, connect_begin_respects_window_and_rate)
{
    struct shaping s;
    struct shaping_params p = params(20);
    p.connection_rate = 2;          /* 2/s, burst 2 */
    shaping_init(&s, &p, 0);
    cr_assert(shaping_connect_begin(&s, 0, 0));
    cr_assert(shaping_connect_begin(&s, 0, 1));
    cr_assert_not(shaping_connect_begin(&s, 0, 2));      /* rate */
    cr_assert_eq(shaping_next_connect_ms(&s, 0, 2), 500);
    cr_assert(shaping_connect_begin(&s, 500, 2));
    cr_assert(shaping_connect_begin(&s, 1000, 3));
    cr_assert(shaping_connect_begin(&s, 1500, 4));
    cr_assert_not(shaping_connect_begin(&s, 99999, 5));  /* window 5 full */
    cr_assert_eq(shaping_next_connect_ms(&s, 99999, 5), SHAPING_NEVER);
    cr_assert_eq(shaping_next_connect_ms(&s, 99999, 4), 99999);
}

Test(shaping, message_rate_is_its_own_bucket)
{
    struct shaping s;
    struct shaping_params p = params(20);
    p.message_rate = 1;
    p.message_rate_per_ms = 60000;  /* 1/min */
    shaping_init(&s, &p, 0);
    cr_assert(shaping_message_begin(&s, 0));
    cr_assert_not(shaping_message_begin(&s, 1));
    cr_assert_eq(shaping_next_message_ms(&s, 1), 60000);
    shaping_message_give_back(&s, 1);
    cr_assert(shaping_message_begin(&s, 1));
    /* Connections are unlimited meanwhile. */
    cr_assert(shaping_connect_begin(&s, 1, 0));
}

/* ---- dead destinations ---- */

Test(shaping, dead_after_consecutive_failures_and_held)
{
    struct shaping s;
    struct shaping_params p = params(20);
    p.dead_after_failures = 3;
    p.dead_hold_ms = 300000;
    shaping_init(&s, &p, 0);
    cr_assert_not(shaping_connect_failed(&s, 10));
    cr_assert_not(shaping_connect_failed(&s, 20));
    cr_assert_eq(shaping_state(&s, 20), SHAPING_ALIVE);
    cr_assert(shaping_connect_failed(&s, 30));
    cr_assert_eq(shaping_state(&s, 30), SHAPING_DEAD);
    cr_assert_eq(shaping_dead_until(&s), 300030);
    cr_assert_not(shaping_connect_begin(&s, 40, 0));
    cr_assert_eq(shaping_next_connect_ms(&s, 40, 0), 300030);
    cr_assert_not(shaping_connect_begin(&s, 300029, 0));
}

Test(shaping, a_good_connection_breaks_the_failure_run)
{
    struct shaping s;
    struct shaping_params p = params(20);
    p.dead_after_failures = 3;
    shaping_init(&s, &p, 0);
    shaping_connect_failed(&s, 0);
    shaping_connect_failed(&s, 1);
    shaping_connect_ok(&s, 2);
    cr_assert_not(shaping_connect_failed(&s, 3));
    cr_assert_not(shaping_connect_failed(&s, 4));
    cr_assert_eq(shaping_state(&s, 4), SHAPING_ALIVE);
    cr_assert(shaping_connect_failed(&s, 5));
}

Test(shaping, late_failures_do_not_extend_the_hold)
{
    struct shaping s;
    struct shaping_params p = params(20);
    p.dead_after_failures = 1;
    p.dead_hold_ms = 1000;
    shaping_init(&s, &p, 0);
    cr_assert(shaping_connect_failed(&s, 0));
    /* Connections begun before the hold fail afterwards. */
    cr_assert_not(shaping_connect_failed(&s, 500));
    cr_assert_not(shaping_connect_failed(&s, 999));
    cr_assert_eq(shaping_dead_until(&s), 1000);
}

Test(shaping, probe_after_hold_allows_one_connection)
{
    struct shaping s;
    struct shaping_params p = params(20);
    p.dead_after_failures = 1;
    p.dead_hold_ms = 1000;
    shaping_init(&s, &p, 0);
    shaping_connect_failed(&s, 0);
    cr_assert_eq(shaping_state(&s, 1000), SHAPING_PROBING);
    cr_assert_eq(shaping_next_connect_ms(&s, 1000, 0), 1000);
    cr_assert(shaping_connect_begin(&s, 1000, 0));
    cr_assert_not(shaping_connect_begin(&s, 1000, 1));
    cr_assert_eq(shaping_next_connect_ms(&s, 1000, 1), SHAPING_NEVER);
}

Test(shaping, failed_probe_holds_again)
{
    struct shaping s;
    struct shaping_params p = params(20);
    p.dead_after_failures = 2;
    p.dead_hold_ms = 1000;
    shaping_init(&s, &p, 0);
    shaping_connect_failed(&s, 0);
    cr_assert(shaping_connect_failed(&s, 1));
    cr_assert(shaping_connect_begin(&s, 1001, 0));
    /* One failed probe is enough: the run of failures never ended. */
    cr_assert(shaping_connect_failed(&s, 1500));
    cr_assert_eq(shaping_state(&s, 1500), SHAPING_DEAD);
    cr_assert_eq(shaping_dead_until(&s), 2500);
}

Test(shaping, good_probe_revives_with_initial_window)
{
    struct shaping s;
    struct shaping_params p = params(20);
    p.dead_after_failures = 2;
    p.decrease_cooldown_ms = 0;
    shaping_init(&s, &p, 0);
    shaping_connect_failed(&s, 0);
    shaping_connect_failed(&s, 1);
    cr_assert_eq(shaping_window(&s), 1);
    uint64_t t = shaping_dead_until(&s);
    cr_assert(shaping_connect_begin(&s, t, 0));
    shaping_connect_ok(&s, t + 10);
    cr_assert_eq(shaping_state(&s, t + 10), SHAPING_ALIVE);
    cr_assert_eq(shaping_window(&s), 5);
    cr_assert_eq(shaping_dead_until(&s), 0);
    cr_assert(shaping_connect_begin(&s, t + 10, 4));
}

Test(shaping, deliveries_while_dead_do_not_grow_the_window)
{
    struct shaping s;
    struct shaping_params p = params(20);
    p.dead_after_failures = 1;
    p.success_per_increment = 1;
    shaping_init(&s, &p, 0);
    shaping_connect_failed(&s, 0);
    unsigned w = shaping_window(&s);
    for (int i = 0; i < 10; i++)
        shaping_delivered(&s, 1);
    cr_assert_eq(shaping_window(&s), w);
    /* Messages on connections already open are still allowed. */
    cr_assert(shaping_message_begin(&s, 1));
}

Test(shaping, zero_dead_limit_never_declares_dead)
{
    struct shaping s;
    struct shaping_params p = params(20);
    p.dead_after_failures = 0;
    shaping_init(&s, &p, 0);
    for (uint64_t i = 0; i < 1000; i++)
        cr_assert_not(shaping_connect_failed(&s, i * 100000));
    cr_assert_eq(shaping_state(&s, 1000 * 100000), SHAPING_ALIVE);
    cr_assert_eq(shaping_window(&s), 1);
    cr_assert(shaping_connect_begin(&s, 1000 * 100000, 0));
}
