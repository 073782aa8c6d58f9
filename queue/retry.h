/*
 * retry - when a deferred recipient is tried again, when it has waited too
 * long, and when recovered mail is first tried after a restart.
 *
 * Any thread; pure: times (milliseconds, wall clock as stored in the spool)
 * are passed in, and randomness comes from a caller-owned struct retry_rng,
 * so a seeded rng gives the same schedule every run (tests, replays). One
 * rng per worker; it is not thread-safe.
 *
 * Mirrors Postfix's minimal_backoff_time, maximal_backoff_time and
 * maximal_queue_lifetime (ringmta's max_queue_lifetime).
 */
#ifndef RINGMTA_QUEUE_RETRY_H
#define RINGMTA_QUEUE_RETRY_H

#include <stdbool.h>
#include <stdint.h>

struct config;

/* splitmix64: tiny, fast, every seed (0 included) is a good stream. */
struct retry_rng {
    uint64_t state;
};

void retry_rng_seed(struct retry_rng *rng, uint64_t seed);
uint64_t retry_rng_next(struct retry_rng *rng);
/* Uniform in [0, n); 0 when n is 0. */
uint64_t retry_rng_below(struct retry_rng *rng, uint64_t n);

struct retry_params {
    uint64_t minimal_backoff_ms;  /* first delay; no delay is shorter */
    uint64_t maximal_backoff_ms;  /* no delay is longer */
    uint64_t max_lifetime_ms;     /* age at which a temporary failure bounces;
                                     0 = try once, like Postfix */
    unsigned jitter_percent;      /* delays spread over +-this % of nominal */
    uint64_t recovery_window_ms;  /* overdue mail found at start spreads over this */
};

/* From the config's minimal_backoff_time, maximal_backoff_time and
 * max_queue_lifetime; jitter 15 %, recovery window 60 s. */
void retry_params_from_config(struct retry_params *p, const struct config *cfg);

/*
 * The delay before attempt + 1, after attempt (1 = the first delivery
 * attempt) failed temporarily: minimal_backoff << (attempt - 1), capped at
 * maximal_backoff, then drawn uniformly from +-jitter_percent of that,
 * clipped to [minimal_backoff, maximal_backoff]. The clip narrows the
 * range instead of piling draws on the bound, so the spread stays uniform.
 * With rng NULL, the nominal delay (no jitter).
 */
uint64_t retry_backoff_ms(const struct retry_params *p, unsigned attempt,
                          struct retry_rng *rng);

enum retry_decision {
    RETRY_DEFER = 0,     /* try again at *next_ms */
    RETRY_EXPIRED,       /* bounce: 4.4.7 reply -> DSN status 5.4.7, "expired" */
};

/* True when a message that arrived at arrival_ms has been queued for
 * max_lifetime or longer: arrival + max_lifetime <= now. */
bool retry_expired(const struct retry_params *p, uint64_t arrival_ms, uint64_t now_ms);

/*
 * What to do after a temporary failure of attempt (1-based) at now_ms.
 * EXPIRED when retry_expired says so (Postfix decides expiry at a failure,
 * not by a timer). Otherwise DEFER with *next_ms = now + backoff, but never
 * later than the expiry time, so the last attempt happens at the lifetime
 * instead of up to maximal_backoff after it.
 */
enum retry_decision retry_after_failure(const struct retry_params *p, uint64_t arrival_ms,
                                        unsigned attempt, uint64_t now_ms,
                                        struct retry_rng *rng, uint64_t *next_ms);

/*
 * First due time of a recipient recovered from the spool at start-up
 * (RELIABILITY row 49: a million recovered messages must not all be due at
 * once). next_attempt_ms is the recorded next attempt, 0 if never tried
 * (then it is due at arrival). Due times beyond now + recovery_window are
 * kept; earlier ones become max(next_attempt, now + U[0, window)): spread
 * over the window, and never earlier than the backoff recorded for them.
 */
uint64_t retry_recovered_due(const struct retry_params *p, uint64_t arrival_ms,
                             uint64_t next_attempt_ms, uint64_t now_ms,
                             struct retry_rng *rng);

#endif
