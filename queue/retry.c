/*
 * retry - backoff with jitter, queue lifetime, and the restart spread.
 *
 * Any thread; pure. See retry.h for the contract.
 *
 * Why attempts and not age: Postfix sets a deferred message's next delay
 * to its age, clamped to [minimal_backoff_time, maximal_backoff_time],
 * which doubles per attempt as long as retries happen on time. ringmta
 * records the attempt number with every deferral, so it doubles that
 * directly; a recipient that waited in a dead destination's hold then does
 * not jump straight to the maximum.
 *
 * Why jitter: messages deferred together (one 421 wave, one dead
 * destination) would otherwise come due together forever after, and hit
 * the destination as the same burst that failed. +-15 % decorrelates them
 * within a few attempts.
 *
 * Invariants: every delay is within [minimal_backoff, maximal_backoff]
 * (maximal taken as at least minimal); time additions saturate instead of
 * wrapping, so "infinite" settings stay infinite.
 */
#include "retry.h"

#include <string.h>

#include "config.h"

#define RETRY_DEFAULT_JITTER_PERCENT 15
#define RETRY_DEFAULT_RECOVERY_WINDOW_MS 60000

static uint64_t
retry_add(uint64_t a, uint64_t b)
{
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

void
retry_rng_seed(struct retry_rng *rng, uint64_t seed)
{
    rng->state = seed;
}

/* splitmix64 (Steele, Lea, Flood 2014), as used to seed xoshiro. */
uint64_t
retry_rng_next(struct retry_rng *rng)
{
    uint64_t z = (rng->state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Lemire's multiply-shift; the bias (< n / 2^64) is far below anything a
 * schedule could notice, so no rejection loop. */
uint64_t
retry_rng_below(struct retry_rng *rng, uint64_t n)
{
    if (n == 0)
        return 0;
    return (uint64_t)(((unsigned __int128)retry_rng_next(rng) * n) >> 64);
}

void
retry_params_from_config(struct retry_params *p, const struct config *cfg)
{
    memset(p, 0, sizeof *p);
    p->minimal_backoff_ms = cfg->minimal_backoff_time_ms;
    p->maximal_backoff_ms = cfg->maximal_backoff_time_ms;
    p->max_lifetime_ms = cfg->max_queue_lifetime_ms;
    p->jitter_percent = RETRY_DEFAULT_JITTER_PERCENT;
    /* A restart never holds mail back longer than a failed attempt would:
     * the spread is at most the first retry delay. */
    p->recovery_window_ms = RETRY_DEFAULT_RECOVERY_WINDOW_MS;
    if (cfg->minimal_backoff_time_ms < p->recovery_window_ms)
        p->recovery_window_ms = cfg->minimal_backoff_time_ms;
}

uint64_t
retry_backoff_ms(const struct retry_params *p, unsigned attempt, struct retry_rng *rng)
{
    uint64_t lo_bound = p->minimal_backoff_ms;
    uint64_t hi_bound = p->maximal_backoff_ms > lo_bound ? p->maximal_backoff_ms : lo_bound;
    unsigned shift = attempt > 1 ? attempt - 1 : 0;

    /* minimal << shift, saturating at the cap. */
    uint64_t nominal = hi_bound;
    if (shift < 64 && lo_bound <= (hi_bound >> shift))
        nominal = lo_bound << shift;
    if (rng == NULL || p->jitter_percent == 0)
        return nominal;

    unsigned pct = p->jitter_percent < 100 ? p->jitter_percent : 100;
    /* nominal * pct / 100 without overflow for any nominal. */
    uint64_t spread = nominal / 100 * pct + nominal % 100 * pct / 100;
    uint64_t lo = nominal - spread;
    uint64_t hi = retry_add(nominal, spread);
    if (lo < lo_bound)
        lo = lo_bound;
    if (hi > hi_bound)
        hi = hi_bound;
    if (hi - lo == UINT64_MAX)
        return lo + retry_rng_next(rng);
    return lo + retry_rng_below(rng, hi - lo + 1);
}

bool
retry_expired(const struct retry_params *p, uint64_t arrival_ms, uint64_t now_ms)
{
    return retry_add(arrival_ms, p->max_lifetime_ms) <= now_ms;
}

enum retry_decision
retry_after_failure(const struct retry_params *p, uint64_t arrival_ms, unsigned attempt,
                    uint64_t now_ms, struct retry_rng *rng, uint64_t *next_ms)
{
    if (retry_expired(p, arrival_ms, now_ms))
        return RETRY_EXPIRED;
    uint64_t next = retry_add(now_ms, retry_backoff_ms(p, attempt, rng));
    uint64_t expiry = retry_add(arrival_ms, p->max_lifetime_ms);
    *next_ms = next < expiry ? next : expiry;
    return RETRY_DEFER;
}

uint64_t
retry_recovered_due(const struct retry_params *p, uint64_t arrival_ms,
                    uint64_t next_attempt_ms, uint64_t now_ms, struct retry_rng *rng)
{
    uint64_t due = next_attempt_ms ? next_attempt_ms : arrival_ms;
    if (due >= retry_add(now_ms, p->recovery_window_ms))
        return due;
    uint64_t spread = retry_add(now_ms, retry_rng_below(rng, p->recovery_window_ms));
    return due > spread ? due : spread;
}
