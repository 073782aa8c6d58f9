/*
 * delivery - the outbound half of a worker: resolves next hops, opens
 * connections the scheduler asks for, runs the SMTP client sessions, streams
 * bodies from the spool mappings, and records every per-recipient outcome
 * durably before acting on it.
 *
 * Per-worker, never shared; every function takes the worker it runs on.
 */
#ifndef RINGMTA_IO_DELIVERY_H
#define RINGMTA_IO_DELIVERY_H

#include <liburing.h>
#include <stdint.h>

struct worker;
struct queue_entry;

/* Creates the scheduler and the resolver. Returns 0 or -1 with err. */
int delivery_init(struct worker *w, char *err, size_t errsize);
void delivery_free(struct worker *w);

/* A queue entry this worker owns is ready (due_ms: when to try first). */
void delivery_add(struct worker *w, struct queue_entry *e, uint64_t due_ms);

/* After each batch of completions and on every tick: timers, new
 * connections, jobs for idle connections, idle connections to close,
 * outcomes whose records became durable. */
void delivery_pump(struct worker *w);
void delivery_tick(struct worker *w);

/* Completions of OP_OUT (outbound connections) and OP_DNS (the resolver). */
void delivery_on_cqe(struct worker *w, void *ptr, struct io_uring_cqe *cqe);
void delivery_on_dns_cqe(struct worker *w, void *ptr, struct io_uring_cqe *cqe);

/* Stop: close idle connections, let active ones finish or fail. True when
 * nothing outbound is left. */
int delivery_drained(struct worker *w);
void delivery_shutdown(struct worker *w);

#endif
