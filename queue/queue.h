/*
 * queue - committed messages in memory, split per destination domain for
 * the workers that deliver them.
 *
 * A struct queue_msg is shared by every worker that holds recipients of it
 * (reference counted, atomic); a struct queue_entry (one message, one
 * destination domain) belongs to exactly one worker's scheduler
 * (queue/scheduler.h), used only by that worker's thread. Destinations are
 * sharded by a hash of their next hop (io/worker.c worker_owner), so each
 * destination's connection pool and limits live on one worker and need no
 * locks.
 */
#ifndef RINGMTA_QUEUE_QUEUE_H
#define RINGMTA_QUEUE_QUEUE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "envelope.h"
#include "spool.h"

struct queue_msg {
    uint64_t qid;
    struct envelope env;
    uint64_t body_len;
    uint32_t body_flags;        /* SPOOL_BODY_RAW */
    struct spool_extent *body;  /* where the body lies, in order */
    uint32_t nbody;
    atomic_uint open_rcpts;     /* recipients not yet final (any worker) */
    atomic_uint refs;
    struct spool_holdset holds; /* its segments; spool_retire'd when finished */
};

struct queue_entry {
    struct queue_msg *msg;
    struct queue_entry *next;
    uint32_t nrcpt;
    uint32_t *rcpt;             /* indexes into msg->env.rcpts */
    char domain[];              /* lowercased destination domain */
};


/* Takes ownership of env (moved, not copied), of body (the array and one
 * segment reference per extent, released with the last put) and of holds
 * (moved; NULL for none; released by the last put unless retired first).
 * refs starts at 1. */
struct queue_msg *queue_msg_new(uint64_t qid, struct envelope *env, uint64_t body_len,
                                uint32_t body_flags, struct spool_extent *body,
                                uint32_t nbody, struct spool_holdset *holds);
void queue_msg_get(struct queue_msg *m);
void queue_msg_put(struct queue_msg *m);

/* The worker that owns domain (lowercased) among nworkers. */
unsigned queue_domain_owner(const char *domain, unsigned nworkers);

/*
 * Splits m by recipient domain: calls emit(arg, entry) once per distinct
 * domain with a new entry holding a reference to m. Recipients already in a
 * final state are skipped. Returns the number of entries emitted.
 */
size_t queue_msg_split(struct queue_msg *m, void (*emit)(void *arg, struct queue_entry *e),
                       void *arg);
void queue_entry_free(struct queue_entry *e);


#endif
