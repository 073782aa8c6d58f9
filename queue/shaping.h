/*
 * shaping - how fast one destination may be sent to: token buckets for the
 * message and connection rates, and an AIMD concurrency window with a
 * "dead destination" hold.
 *
 * Per-worker, never shared: a struct shaping lives inside the destination
 * that owns it, on the worker that owns that destination (queue.h shards
 * destinations by domain), so nothing here locks. Pure: no clock is read;
 * every function takes now_ms from a monotonic clock the caller reads once
 * per loop iteration. Time going backwards is treated as no time passing.
 *
 * The fields are exposed only so a destination can embed the struct without
 * a second allocation; read and change them through the functions.
 *
 * Mirrors Postfix's qmgr feedback (qmgr_feedback.c, qmgr_queue.c):
 * initial_destination_concurrency, destination_concurrency_limit,
 * destination_concurrency_positive_feedback ("1/concurrency"),
 * destination_concurrency_negative_feedback, and
 * destination_concurrency_failed_cohort_limit, with two changes: negative
 * feedback also comes from reply codes (421 greeting, connection-level 4xx),
 * and a decrease halves the window (TCP-style) rather than subtracting.
 */
#ifndef RINGMTA_QUEUE_SHAPING_H
#define RINGMTA_QUEUE_SHAPING_H

#include <stdbool.h>
#include <stdint.h>

/* "No time": returned by the next_* functions when only an event (a
 * connection closing) can change the answer, never the clock. */
#define SHAPING_NEVER UINT64_MAX

/*
 * A token bucket holding at most burst tokens, refilled at count tokens per
 * per_ms milliseconds. Arithmetic is exact integers: one token is per_ms
 * units and every millisecond adds count units, so "10 per second" and
 * "1 per minute" both refill fractionally without rounding drift.
 */
struct shaping_bucket {
    uint64_t count;       /* tokens per period; 0 = unlimited */
    uint64_t per_ms;      /* the period */
    uint64_t cap;         /* burst * per_ms units */
    uint64_t units;       /* current fill, 0..cap */
    uint64_t last_ms;     /* when units was last brought up to date */
};

/* Starts full. burst 0 means one period's worth (count, at least 1):
 * "100/h" may send 100 at once, then one every 36 s. */
void shaping_bucket_init(struct shaping_bucket *b, uint64_t count, uint64_t per_ms,
                         uint64_t burst, uint64_t now_ms);
/* Takes one token if there is one. An unlimited bucket always has one. */
bool shaping_bucket_take(struct shaping_bucket *b, uint64_t now_ms);
/* Returns a token taken for work that then did not happen (the connection
 * died before MAIL); the bucket never overfills. */
void shaping_bucket_give_back(struct shaping_bucket *b, uint64_t now_ms);
/* The earliest time >= now_ms at which take() succeeds: the scheduler's
 * timer. now_ms when a token is there already. */
uint64_t shaping_bucket_next_ms(const struct shaping_bucket *b, uint64_t now_ms);

/* A destination's limits. Fill with shaping_params_default, then override
 * from config/destination_policy. */
struct shaping_params {
    unsigned max_connections;       /* window ceiling (destination_concurrency_limit) */
    unsigned initial_concurrency;   /* start window (initial_destination_concurrency) */
    unsigned success_per_increment; /* +1 per this many deliveries; 0 = per
                                       window (Postfix's 1/concurrency feedback) */
    unsigned dead_after_failures;   /* consecutive connection failures that
                                       declare it dead (failed_cohort_limit x
                                       the initial window); 0 = never */
    uint64_t decrease_cooldown_ms;  /* failures this soon after a halving do not
                                       halve again: one burst, one decrease */
    uint64_t dead_hold_ms;          /* a dead destination is left alone this long
                                       (Postfix unthrottles after minimal_backoff_time) */
    uint64_t message_rate;          /* messages per message_rate_per_ms; 0 = none */
    uint64_t message_rate_per_ms;
    uint64_t message_burst;         /* 0 = one period's worth */
    uint64_t connection_rate;       /* connections per connection_rate_per_ms; 0 = none */
    uint64_t connection_rate_per_ms;
    uint64_t connection_burst;      /* 0 = one period's worth */
};

/* Defaults: initial window min(max_connections, 5), +1 per window of
 * deliveries, dead after 5 consecutive failures (one cohort of the initial
 * window), 10 s cooldown, 300 s hold, no rate limits (per second). */
void shaping_params_default(struct shaping_params *p, unsigned max_connections);

enum shaping_state {
    SHAPING_ALIVE = 0,    /* connect up to the window */
    SHAPING_DEAD,         /* connect nothing until dead_until */
    SHAPING_PROBING,      /* hold over: one connection at a time decides */
};

struct shaping {
    struct shaping_params p;
    struct shaping_bucket messages;
    struct shaping_bucket connections;
    unsigned window;          /* current concurrency limit, 1..max_connections */
    unsigned successes;       /* deliveries since the window last changed */
    unsigned failures;        /* consecutive connection failures */
    bool dead;                /* failures reached dead_after_failures */
    bool decreased;           /* last_decrease_ms is valid */
    uint64_t last_decrease_ms;
    uint64_t dead_until_ms;
};

/* params is copied. */
void shaping_init(struct shaping *s, const struct shaping_params *params, uint64_t now_ms);

enum shaping_state shaping_state(const struct shaping *s, uint64_t now_ms);
unsigned shaping_window(const struct shaping *s);

/*
 * Connections. nconn is the number the destination has open or opening.
 * connect_begin says yes (and takes a connection-rate token) when the state
 * allows one more (ALIVE: nconn < window; PROBING: nconn == 0) and the
 * rate allows it now. next_connect_ms says when to ask again: now_ms if
 * begin would say yes, a time for the rate or the dead hold, or
 * SHAPING_NEVER when the window is full (ask again when one closes).
 */
bool shaping_connect_begin(struct shaping *s, uint64_t now_ms, unsigned nconn);
uint64_t shaping_next_connect_ms(const struct shaping *s, uint64_t now_ms, unsigned nconn);
/* The peer greeted with 2xx and accepted EHLO/HELO: the destination is
 * alive. Clears the failure count; ends DEAD/PROBING with the initial window. */
void shaping_connect_ok(struct shaping *s, uint64_t now_ms);
/*
 * Connection-level failure: refused, timed out, TLS handshake failed, a 421
 * or other 4xx greeting, or a 421 mid-session. Halves the window (not below
 * 1) unless it was halved less than decrease_cooldown_ms ago; counts toward
 * dead. Returns true when this failure made the destination DEAD (the
 * caller then defers what waits for it, or keeps it until dead_until).
 * Not for per-recipient or per-message replies (452, 550): those say
 * nothing about the destination's capacity.
 */
bool shaping_connect_failed(struct shaping *s, uint64_t now_ms);
/* When a DEAD destination may be probed; 0 when not dead. */
uint64_t shaping_dead_until(const struct shaping *s);

/*
 * Messages. message_begin takes a message-rate token (at MAIL FROM time);
 * message_give_back returns it if MAIL was never sent. delivered is
 * positive feedback: a message accepted at end of data (even if some
 * recipients were refused).
 */
bool shaping_message_begin(struct shaping *s, uint64_t now_ms);
void shaping_message_give_back(struct shaping *s, uint64_t now_ms);
uint64_t shaping_next_message_ms(const struct shaping *s, uint64_t now_ms);
void shaping_delivered(struct shaping *s, uint64_t now_ms);

#endif
