/*
 * shaping - per-destination token buckets and AIMD concurrency.
 *
 * Per-worker, never shared; pure (now_ms is passed in). See shaping.h for
 * the contract and the Postfix parameters this mirrors.
 *
 * Invariants: 1 <= window <= max(1, max_connections); units <= cap; a
 * bucket's last_ms never moves backwards, so a clock that steps back only
 * delays refill instead of minting tokens (or underflowing).
 *
 * Why halve instead of Postfix's -1/concurrency: Postfix adjusts gently
 * because its negative feedback is a connection or handshake failure seen
 * one delivery agent at a time; ours also fires on 421 "slow down" replies
 * from large providers, which ask for an immediate, large back-off. The
 * cooldown stands in for Postfix's hysteresis: the connections of one burst
 * fail together (a timed-out connect, a wave of 421 greetings), and that is
 * one signal, not window-many.
 */
#include "shaping.h"

#include <limits.h>
#include <string.h>

#define SHAPING_DEFAULT_INITIAL 5       /* Postfix initial_destination_concurrency */
#define SHAPING_DEFAULT_DEAD_AFTER 5    /* failed_cohort_limit (1) x initial window */
#define SHAPING_DEFAULT_COOLDOWN_MS 10000
#define SHAPING_DEFAULT_HOLD_MS 300000  /* Postfix minimal_backoff_time */

/* ---- token buckets ---- */

static bool
shaping_bucket_unlimited(const struct shaping_bucket *b)
{
    return b->count == 0 || b->per_ms == 0;
}

/* Brings units up to now_ms without overflowing: the multiplication only
 * happens when it stays below what is missing plus one step. */
static void
shaping_bucket_refill(struct shaping_bucket *b, uint64_t now_ms)
{
    if (shaping_bucket_unlimited(b) || now_ms <= b->last_ms)
        return;
    uint64_t elapsed = now_ms - b->last_ms;
    b->last_ms = now_ms;
    if (b->units >= b->cap) {
        b->units = b->cap;
        return;
    }
    uint64_t need = b->cap - b->units;
    uint64_t to_full = need / b->count + (need % b->count != 0);
    if (elapsed >= to_full)
        b->units = b->cap;
    else
        b->units += elapsed * b->count;
}

void
shaping_bucket_init(struct shaping_bucket *b, uint64_t count, uint64_t per_ms,
                    uint64_t burst, uint64_t now_ms)
{
    memset(b, 0, sizeof *b);
    b->count = count;
    b->per_ms = per_ms;
    b->last_ms = now_ms;
    if (shaping_bucket_unlimited(b))
        return;
    if (burst == 0)
        burst = count;
    /* Saturate rather than wrap: a burst that large is "unlimited" anyway. */
    b->cap = burst > UINT64_MAX / 2 / per_ms ? UINT64_MAX / 2 : burst * per_ms;
    if (b->cap < per_ms)
        b->cap = per_ms;
    b->units = b->cap;
}

bool
shaping_bucket_take(struct shaping_bucket *b, uint64_t now_ms)
{
    if (shaping_bucket_unlimited(b))
        return true;
    shaping_bucket_refill(b, now_ms);
    if (b->units < b->per_ms)
        return false;
    b->units -= b->per_ms;
    return true;
}

void
shaping_bucket_give_back(struct shaping_bucket *b, uint64_t now_ms)
{
    if (shaping_bucket_unlimited(b))
        return;
    shaping_bucket_refill(b, now_ms);
    b->units = b->cap - b->units < b->per_ms ? b->cap : b->units + b->per_ms;
}

uint64_t
shaping_bucket_next_ms(const struct shaping_bucket *b, uint64_t now_ms)
{
    if (shaping_bucket_unlimited(b))
        return now_ms;
    struct shaping_bucket copy = *b;
    shaping_bucket_refill(&copy, now_ms);
    if (copy.units >= copy.per_ms)
        return now_ms;
    uint64_t deficit = copy.per_ms - copy.units;
    uint64_t wait = deficit / copy.count + (deficit % copy.count != 0);
    /* last_ms may be ahead of now_ms if the clock stepped back. */
    uint64_t from = copy.last_ms > now_ms ? copy.last_ms : now_ms;
    return from + wait;
}

/* ---- concurrency ---- */

void
shaping_params_default(struct shaping_params *p, unsigned max_connections)
{
    memset(p, 0, sizeof *p);
    p->max_connections = max_connections ? max_connections : 1;
    p->initial_concurrency = p->max_connections < SHAPING_DEFAULT_INITIAL
                                 ? p->max_connections
                                 : SHAPING_DEFAULT_INITIAL;
    p->success_per_increment = 0;
    p->dead_after_failures = SHAPING_DEFAULT_DEAD_AFTER;
    p->decrease_cooldown_ms = SHAPING_DEFAULT_COOLDOWN_MS;
    p->dead_hold_ms = SHAPING_DEFAULT_HOLD_MS;
    p->message_rate_per_ms = 1000;
    p->connection_rate_per_ms = 1000;
}

/* The window a destination starts with and returns to after a dead hold. */
static unsigned
shaping_initial_window(const struct shaping_params *p)
{
    unsigned max = p->max_connections ? p->max_connections : 1;
    unsigned w = p->initial_concurrency ? p->initial_concurrency : 1;
    return w < max ? w : max;
}

void
shaping_init(struct shaping *s, const struct shaping_params *params, uint64_t now_ms)
{
    memset(s, 0, sizeof *s);
    s->p = *params;
    if (s->p.max_connections == 0)
        s->p.max_connections = 1;
    s->window = shaping_initial_window(&s->p);
    shaping_bucket_init(&s->messages, s->p.message_rate, s->p.message_rate_per_ms,
                        s->p.message_burst, now_ms);
    shaping_bucket_init(&s->connections, s->p.connection_rate,
                        s->p.connection_rate_per_ms, s->p.connection_burst, now_ms);
}

enum shaping_state
shaping_state(const struct shaping *s, uint64_t now_ms)
{
    if (!s->dead)
        return SHAPING_ALIVE;
    return now_ms < s->dead_until_ms ? SHAPING_DEAD : SHAPING_PROBING;
}

unsigned
shaping_window(const struct shaping *s)
{
    return s->window;
}

uint64_t
shaping_dead_until(const struct shaping *s)
{
    return s->dead ? s->dead_until_ms : 0;
}

/* How many connections the state allows at once. */
static unsigned
shaping_allowed(const struct shaping *s, uint64_t now_ms)
{
    switch (shaping_state(s, now_ms)) {
    case SHAPING_ALIVE:
        return s->window;
    case SHAPING_PROBING:
        return 1;
    case SHAPING_DEAD:
        break;
    }
    return 0;
}

bool
shaping_connect_begin(struct shaping *s, uint64_t now_ms, unsigned nconn)
{
    if (nconn >= shaping_allowed(s, now_ms))
        return false;
    return shaping_bucket_take(&s->connections, now_ms);
}

uint64_t
shaping_next_connect_ms(const struct shaping *s, uint64_t now_ms, unsigned nconn)
{
    enum shaping_state st = shaping_state(s, now_ms);
    if (st == SHAPING_DEAD) {
        /* At dead_until the state is PROBING and may want nconn == 0. */
        if (nconn > 0)
            return SHAPING_NEVER;
        return shaping_bucket_next_ms(&s->connections, s->dead_until_ms);
    }
    if (nconn >= shaping_allowed(s, now_ms))
        return SHAPING_NEVER;
    return shaping_bucket_next_ms(&s->connections, now_ms);
}

void
shaping_connect_ok(struct shaping *s, uint64_t now_ms)
{
    s->failures = 0;
    if (s->dead) {
        /* A probe (or a connection begun before the hold) got through.
         * Like Postfix's qmgr_queue_unthrottle: back to the initial window. */
        s->dead = false;
        s->dead_until_ms = 0;
        s->window = shaping_initial_window(&s->p);
        s->successes = 0;
    }
}

bool
shaping_connect_failed(struct shaping *s, uint64_t now_ms)
{
    if (s->failures < UINT_MAX)
        s->failures++;
    if (s->dead) {
        /* Failures of connections begun before the hold do not extend it;
         * a failed probe (the hold is over) starts a new one. */
        if (now_ms < s->dead_until_ms)
            return false;
        s->dead_until_ms = now_ms + s->p.dead_hold_ms;
        return true;
    }
    /* A clock that stepped back counts as no time passing: no decrease. */
    if (!s->decreased || (now_ms >= s->last_decrease_ms &&
                          now_ms - s->last_decrease_ms >= s->p.decrease_cooldown_ms)) {
        s->window = s->window / 2 ? s->window / 2 : 1;
        s->successes = 0;
        s->decreased = true;
        s->last_decrease_ms = now_ms;
    }
    if (s->p.dead_after_failures && s->failures >= s->p.dead_after_failures) {
        s->dead = true;
        s->dead_until_ms = now_ms + s->p.dead_hold_ms;
        return true;
    }
    return false;
}

bool
shaping_message_begin(struct shaping *s, uint64_t now_ms)
{
    return shaping_bucket_take(&s->messages, now_ms);
}

void
shaping_message_give_back(struct shaping *s, uint64_t now_ms)
{
    shaping_bucket_give_back(&s->messages, now_ms);
}

uint64_t
shaping_next_message_ms(const struct shaping *s, uint64_t now_ms)
{
    return shaping_bucket_next_ms(&s->messages, now_ms);
}

void
shaping_delivered(struct shaping *s, uint64_t now_ms)
{
    (void)now_ms;
    /* A dead destination's window is reset on revival; growing it is moot. */
    if (s->dead)
        return;
    unsigned per = s->p.success_per_increment ? s->p.success_per_increment : s->window;
    if (++s->successes < per)
        return;
    s->successes = 0;
    if (s->window < s->p.max_connections)
        s->window++;
}
