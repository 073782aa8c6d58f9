/*
 * handoff - bounded lock-free MPSC ring: accepted messages travel from the
 * worker that received them to the worker that owns their destination.
 *
 * Any thread may push (multi-producer); only the owning worker pops. Slots
 * carry a sequence number (Vyukov's bounded queue), so a producer never
 * overwrites a slot the consumer has not taken, and no lock is ever held.
 * The ring says nothing about waking the consumer: io/ does that (eventfd or
 * IORING_OP_MSG_RING) when push reports the ring was empty before.
 */
#ifndef RINGMTA_QUEUE_HANDOFF_H
#define RINGMTA_QUEUE_HANDOFF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct handoff;

/* capacity is rounded up to a power of two. */
struct handoff *handoff_new(size_t capacity);
struct handoff *handoff_free(struct handoff *h);
/* Returns 0, or -EAGAIN when full (the caller retries later; nothing lost). */
int handoff_push(struct handoff *h, void *item);
/* Returns the oldest item, or NULL when empty. Consumer thread only. */
void *handoff_pop(struct handoff *h);
/* Approximate count, for metrics. */
size_t handoff_count(const struct handoff *h);

#endif
