/*
 * authpool - password verification off the event loop: a few threads that
 * run auth_table_verify for requests any thread submits, and the lock-free
 * completion list (auth_inbox) a worker collects the results from.
 *
 * Threads: submit from any thread; it takes a mutex for a few pointer stores
 * and never waits for a hash. The verification runs on a pool thread, which
 * then calls the request's done(). set_table and free are for the thread that
 * owns the pool (main). Pool threads start with every signal blocked.
 *
 * The usual wiring: a worker fills a request (user, pass from struct
 * sasl_server), sets done to a function that pushes it onto the worker's
 * auth_inbox and, when the push reports the inbox was empty, wakes the
 * worker (eventfd); the worker's loop takes all and answers 235 or 535.
 *
 * Invariants: every submitted request completes exactly once (done() runs
 * once), also when the pool is freed with requests pending (ok = false).
 * req->pass is wiped (explicit_bzero) before done() runs. A table swapped out
 * by authpool_set_table is freed by the last verification that uses it.
 */
#ifndef RINGMTA_IO_AUTHPOOL_H
#define RINGMTA_IO_AUTHPOOL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "auth_table.h"
#include "sasl.h"

#define AUTHPOOL_DEFAULT_THREADS 2

/* One verification. Owned by the caller, who must keep it alive and leave it
 * alone from authpool_submit until done() runs. */
struct auth_request {
    char user[SASL_USER_MAX + 1];       /* NUL-terminated, copied in by the caller */
    char pass[SASL_PASS_MAX + 1];       /* NUL-terminated; wiped before done() */
    bool ok;                            /* the result, set before done() */
    /* Called once on a pool thread when the request is finished; must be
     * cheap and thread-safe (typically: auth_inbox_push and a wake-up). From
     * then on the request is the caller's again. */
    void (*done)(struct auth_request *req);
    void *arg;                          /* the caller's, e.g. the connection */
    /* Used by the pool while the request is queued; after done() free for
     * the caller's completion list (auth_inbox). */
    struct auth_request *next;
};

struct authpool;

/*
 * Starts nthreads threads (0 means 1) verifying against table (NULL: every
 * request fails). On success the pool owns the table. On failure (a thread
 * could not be created) returns NULL with err set; the table stays the
 * caller's.
 */
struct authpool *authpool_new(unsigned nthreads, struct auth_table *table, char *err,
                              size_t errsize);
/* Reload (SIGHUP): later verifications use table (NULL: all fail); the old
 * table is freed as soon as no verification in progress uses it. */
void authpool_set_table(struct authpool *p, struct auth_table *table);
/* Queues req (FIFO). Any thread; never blocks on a hash. */
void authpool_submit(struct authpool *p, struct auth_request *req);
/* Stops the pool: verifications in progress finish, queued requests complete
 * with ok = false (done() on a pool thread), the threads are joined, the
 * table is freed. No submit may follow or race with it. Returns NULL. */
struct authpool *authpool_free(struct authpool *p);

/*
 * auth_inbox - lock-free multi-producer, single-consumer list of finished
 * requests (a Treiber stack whose consumer takes the whole stack at once).
 *
 * Ordering: a push is a compare-and-swap with release, so the request's
 * fields (ok, the caller's state) written before it are visible to the
 * consumer, whose take is an exchange with acquire; every push is a
 * read-modify-write of the same head, so pushes form one release sequence
 * and the take synchronizes with all of them. Taking the whole list at once
 * means a node is never popped alone, so there is no ABA problem. Lost
 * wake-ups cannot happen: after a take the list is empty, so the next push
 * returns true and its producer wakes the consumer.
 */
struct auth_inbox {
    _Atomic(struct auth_request *) head;
};

void auth_inbox_init(struct auth_inbox *in);
/* Any thread. Returns true when the inbox was empty before this push: the
 * consumer may be asleep and must be woken. Uses req->next. */
bool auth_inbox_push(struct auth_inbox *in, struct auth_request *req);
/* Consumer only. Every request pushed so far, oldest first (linked by
 * next, NULL-terminated); NULL when empty. */
struct auth_request *auth_inbox_take_all(struct auth_inbox *in);

#endif
