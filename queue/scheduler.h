/*
 * scheduler - one worker's delivery scheduler: destinations, their ready and
 * deferred jobs, and the decision which connection to open and which job to
 * send next. Modelled on Postfix's qmgr, split by noun like qmgr.h.
 *
 * Per-worker, never shared: destinations are sharded across workers by
 * next hop (io/worker.c worker_owner), so nothing here takes a lock. Pure: no I/O, no
 * clock reads; io/ passes the time, opens the connections the scheduler asks
 * for, and reports back what happened.
 *
 * Nouns:
 *   - a destination (struct scheduler_dest) is a next hop: the recipient domain
 *     when mail goes by MX, or the relayhost / transport_map hop when one
 *     applies (Postfix shapes per next hop too). It owns its shaping state
 *     (AIMD window, rate buckets, dead/alive) and its ready FIFO.
 *   - a job (struct scheduler_job) is one SMTP transaction's worth: one message,
 *     at most max_rcpt_per_transaction of its recipients at that destination.
 *   - deferred jobs wait in one min-heap by due time; the earliest due time is
 *     the worker's next delivery timer.
 *
 * Ownership: scheduler_add_entry takes the entry; a job handed out by
 * scheduler_next_job belongs to io/ until scheduler_job_done gives it back.
 */
#ifndef RINGMTA_QUEUE_SCHEDULER_H
#define RINGMTA_QUEUE_SCHEDULER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "queue.h"
#include "retry.h"
#include "route.h"
#include "shaping.h"

enum scheduler_outcome {
    SCHEDULER_PENDING = 0,   /* not tried in this attempt */
    SCHEDULER_DELIVERED,     /* remote 2xx after the body */
    SCHEDULER_DEFERRED,      /* 4xx, timeout, connection trouble: try again */
    SCHEDULER_FAILED,        /* 5xx or a permanent local decision: bounce */
};

struct scheduler_result {
    uint8_t outcome;            /* enum scheduler_outcome */
    uint16_t code;              /* SMTP reply code, 0 when none */
    char status[12];            /* enhanced status "4.4.1" */
    char text[256];             /* printable ASCII reply or reason */
    bool delay_notice;          /* deferred, and reported to the sender as delayed */
};

struct scheduler_dest;

struct scheduler_job {
    struct queue_entry *entry;  /* one message, one domain; rcpt[] = this job's */
    struct scheduler_dest *dest;
    unsigned attempt;           /* 0 for the first try */
    uint64_t due_ms;
    struct scheduler_result *results;  /* one per entry->nrcpt, filled by io/ */
    struct scheduler_job *next;     /* ready FIFO */
    size_t heap_index;          /* position in the deferred heap, or SIZE_MAX */
    uint64_t retry_ms;          /* next attempt if deferred, once chosen; 0 = not yet */
};

struct scheduler_dest {
    char *key;                  /* "example.com", "[192.0.2.1]:25", "relay.example:587" */
    struct route_hop hop;       /* where to connect (port 0 = smtp_port) */
    struct route_limits limits;
    struct shaping shaping;
    struct scheduler_job *ready_head;
    struct scheduler_job *ready_tail;
    size_t nready;
    unsigned nconn;             /* connections open or being opened */
    struct scheduler_dest *hash_next;
    struct scheduler_dest *want_next;   /* list of destinations with ready jobs */
    bool in_want;
};

struct scheduler;

/* Builds the scheduler. The tables (may be NULL) and relayhost (may be NULL)
 * stay owned by the caller and must outlive the scheduler. */
struct scheduler *scheduler_new(const struct config *cfg, const struct route_table *transport,
                        const struct route_hop *relayhost, const struct route_policy *policy,
                        uint64_t seed);
struct scheduler *scheduler_free(struct scheduler *s);

/*
 * Takes a queue entry: routes it to its destination and splits it into jobs
 * of at most max_rcpt_per_transaction recipients. Jobs due at or before now
 * are ready at once; later ones wait in the heap. attempt is 0 for new mail.
 */
void scheduler_add_entry(struct scheduler *s, struct queue_entry *e, uint64_t due_ms, unsigned attempt,
                     uint64_t now_ms);

/* Moves deferred jobs that are due into their destinations' ready FIFOs. */
void scheduler_run_timers(struct scheduler *s, uint64_t now_ms);
/* The earliest time something may change without io/ telling us: the next
 * deferred job, the next rate token, the end of a dead hold. UINT64_MAX if
 * nothing waits. */
uint64_t scheduler_next_wakeup(struct scheduler *s, uint64_t now_ms);

/*
 * A destination that should get one more connection now, or NULL: it has
 * ready jobs beyond what its open connections can take, its AIMD window and
 * connection rate allow one more, and it is not dead. The connection is
 * counted (nconn++) at once; io/ must call scheduler_conn_closed for it in the
 * end, whatever happens.
 */
struct scheduler_dest *scheduler_want_connection(struct scheduler *s, uint64_t now_ms);

/* The next job for an open connection to d, or NULL (no ready job, or the
 * message rate says wait). */
struct scheduler_job *scheduler_next_job(struct scheduler *s, struct scheduler_dest *d, uint64_t now_ms);

/* Connection feedback for AIMD: greeting and EHLO went fine / the
 * connection failed at the connection level (refused, timeout, 421). */
void scheduler_conn_ok(struct scheduler *s, struct scheduler_dest *d, uint64_t now_ms);
void scheduler_conn_failed(struct scheduler *s, struct scheduler_dest *d, uint64_t now_ms);
void scheduler_conn_closed(struct scheduler *s, struct scheduler_dest *d);

/*
 * io/ has recorded the job's results durably. Delivered and failed
 * recipients are final. Deferred ones are scheduled again with backoff
 * (attempt + 1); if the message is past max_queue_lifetime they become
 * FAILED with status 5.4.7 instead — *expired tells io/ to bounce them too.
 * A job returned with every result still PENDING (never tried: the
 * connection went away first) is put back at the head of its destination's
 * FIFO without counting an attempt. Frees the job.
 */
void scheduler_job_done(struct scheduler *s, struct scheduler_job *job, uint64_t now_ms);

/* For the caller's decision before scheduler_job_done: true when recipients of
 * this job that deferred now would be past their lifetime. */
bool scheduler_job_expired(const struct scheduler *s, const struct scheduler_job *job, uint64_t now_ms);

/* When the deferred recipients of this job will be tried again (backoff
 * with jitter), chosen once: io/ records it with the deferral, and
 * scheduler_job_done schedules them for that same time. */
uint64_t scheduler_job_retry_at(struct scheduler *s, struct scheduler_job *job, uint64_t now_ms);

size_t scheduler_pending_jobs(const struct scheduler *s);
size_t scheduler_destinations(const struct scheduler *s);

#endif
