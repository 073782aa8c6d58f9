/*
 * scheduler - per-worker delivery scheduler (see scheduler.h).
 *
 * Per-worker, never shared. Destinations live in a chained hash by key and
 * are never freed while the scheduler lives (a long tail of small domains is
 * a few hundred bytes each; XXX: idle destinations could be reaped).
 * Deferred jobs sit in one binary min-heap by due time. Destinations with
 * ready jobs are on the "want" list, which scheduler_want_connection walks
 * round-robin so one big destination cannot starve the others.
 */
#include "scheduler.h"

#include <stdio.h>
#include <string.h>

#include "alloc.h"

#define SCHEDULER_HASH_SIZE 1024

struct scheduler {
    const struct config *cfg;
    const struct route_table *transport;
    const struct route_hop *relayhost;
    const struct route_policy *policy;
    struct retry_params retry;
    struct retry_rng rng;
    struct scheduler_dest *hash[SCHEDULER_HASH_SIZE];
    size_t ndests;
    struct scheduler_job **heap;    /* deferred jobs, min-heap by due_ms */
    size_t nheap;
    size_t capheap;
    struct scheduler_dest *want;    /* destinations with ready jobs */
    size_t pending;             /* jobs owned by the scheduler (ready + deferred) */
};

static unsigned
scheduler_hash(const char *key)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)key; *p; p++) {
        h ^= *p;
        h *= 16777619u;
    }
    return h % SCHEDULER_HASH_SIZE;
}

struct scheduler *
scheduler_new(const struct config *cfg, const struct route_table *transport,
          const struct route_hop *relayhost, const struct route_policy *policy, uint64_t seed)
{
    struct scheduler *s = xcalloc(1, sizeof *s);
    s->cfg = cfg;
    s->transport = transport;
    s->relayhost = relayhost;
    s->policy = policy;
    retry_params_from_config(&s->retry, cfg);
    retry_rng_seed(&s->rng, seed);
    return s;
}

static void
scheduler_job_free(struct scheduler_job *j)
{
    if (j->entry != NULL)
        queue_entry_free(j->entry);
    xfree(j->results);
    xfree(j);
}

struct scheduler *
scheduler_free(struct scheduler *s)
{
    if (s == NULL)
        return NULL;
    for (size_t i = 0; i < s->nheap; i++)
        scheduler_job_free(s->heap[i]);
    xfree(s->heap);
    for (size_t b = 0; b < SCHEDULER_HASH_SIZE; b++) {
        for (struct scheduler_dest *d = s->hash[b], *n; d != NULL; d = n) {
            n = d->hash_next;
            for (struct scheduler_job *j = d->ready_head, *jn; j != NULL; j = jn) {
                jn = j->next;
                scheduler_job_free(j);
            }
            xfree(d->key);
            xfree(d);
        }
    }
    xfree(s);
    return NULL;
}

/* --- the deferred heap ---------------------------------------------------- */

static void
scheduler_heap_swap(struct scheduler *s, size_t a, size_t b)
{
    struct scheduler_job *t = s->heap[a];
    s->heap[a] = s->heap[b];
    s->heap[b] = t;
    s->heap[a]->heap_index = a;
    s->heap[b]->heap_index = b;
}

static void
scheduler_heap_push(struct scheduler *s, struct scheduler_job *j)
{
    if (s->nheap == s->capheap) {
        s->capheap = s->capheap ? s->capheap * 2 : 64;
        s->heap = xrealloc(s->heap, s->capheap * sizeof *s->heap);
    }
    size_t i = s->nheap++;
    s->heap[i] = j;
    j->heap_index = i;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (s->heap[parent]->due_ms <= s->heap[i]->due_ms)
            break;
        scheduler_heap_swap(s, i, parent);
        i = parent;
    }
}

static struct scheduler_job *
scheduler_heap_pop(struct scheduler *s)
{
    struct scheduler_job *top = s->heap[0];
    s->nheap--;
    if (s->nheap > 0) {
        s->heap[0] = s->heap[s->nheap];
        s->heap[0]->heap_index = 0;
        size_t i = 0;
        for (;;) {
            size_t l = 2 * i + 1, r = l + 1, m = i;
            if (l < s->nheap && s->heap[l]->due_ms < s->heap[m]->due_ms)
                m = l;
            if (r < s->nheap && s->heap[r]->due_ms < s->heap[m]->due_ms)
                m = r;
            if (m == i)
                break;
            scheduler_heap_swap(s, i, m);
            i = m;
        }
    }
    top->heap_index = SIZE_MAX;
    return top;
}

/* --- destinations --------------------------------------------------------- */

/* Shaping parameters from the effective limits of a destination. */
static void
scheduler_shaping_params(struct shaping_params *p, const struct route_limits *l)
{
    shaping_params_default(p, l->max_connections);
    p->message_rate = l->max_message_rate.count;
    p->message_rate_per_ms = l->max_message_rate.per_ms;
    p->connection_rate = l->max_connection_rate.count;
    p->connection_rate_per_ms = l->max_connection_rate.per_ms;
}

/* The destination for a recipient domain: the next hop decides the key, so
 * everything sent through one relayhost shares one set of limits. */
static struct scheduler_dest *
scheduler_dest_for(struct scheduler *s, const char *domain, uint64_t now_ms)
{
    struct route_hop hop;
    memset(&hop, 0, sizeof hop);
    if (route_resolve(s->transport, s->relayhost, domain, &hop) != 0) {
        /* A malformed address literal: route it to itself; the connection
         * attempt fails and the recipient bounces with the reason. */
        snprintf(hop.host, sizeof hop.host, "%s", domain);
        hop.mx_lookup = false;
    }
    char key[ROUTE_HOST_MAX + 32];
    if (hop.mx_lookup)
        snprintf(key, sizeof key, "%s", hop.host);
    else
        snprintf(key, sizeof key, "[%s]:%u", hop.host,
                 hop.port ? hop.port : s->cfg->smtp_port);
    unsigned b = scheduler_hash(key);
    for (struct scheduler_dest *d = s->hash[b]; d != NULL; d = d->hash_next)
        if (strcmp(d->key, key) == 0)
            return d;
    struct scheduler_dest *d = xcalloc(1, sizeof *d);
    d->key = xstrdup(key);
    d->hop = hop;
    route_policy_lookup(s->policy, s->cfg, domain, &d->limits);
    struct shaping_params p;
    scheduler_shaping_params(&p, &d->limits);
    shaping_init(&d->shaping, &p, now_ms);
    d->hash_next = s->hash[b];
    s->hash[b] = d;
    s->ndests++;
    return d;
}

static void
scheduler_want(struct scheduler *s, struct scheduler_dest *d)
{
    if (d->in_want || d->nready == 0)
        return;
    d->in_want = true;
    d->want_next = s->want;
    s->want = d;
}

static void
scheduler_ready_append(struct scheduler *s, struct scheduler_job *j)
{
    struct scheduler_dest *d = j->dest;
    j->next = NULL;
    if (d->ready_tail != NULL)
        d->ready_tail->next = j;
    else
        d->ready_head = j;
    d->ready_tail = j;
    d->nready++;
    scheduler_want(s, d);
}

static void
scheduler_ready_prepend(struct scheduler *s, struct scheduler_job *j)
{
    struct scheduler_dest *d = j->dest;
    j->next = d->ready_head;
    d->ready_head = j;
    if (d->ready_tail == NULL)
        d->ready_tail = j;
    d->nready++;
    scheduler_want(s, d);
}

static void
scheduler_enqueue(struct scheduler *s, struct scheduler_job *j, uint64_t now_ms)
{
    s->pending++;
    if (j->due_ms <= now_ms)
        scheduler_ready_append(s, j);
    else
        scheduler_heap_push(s, j);
}

/* --- entries and jobs ----------------------------------------------------- */

static struct scheduler_job *
scheduler_job_new(struct queue_entry *e, struct scheduler_dest *d, unsigned attempt, uint64_t due_ms)
{
    struct scheduler_job *j = xcalloc(1, sizeof *j);
    j->entry = e;
    j->dest = d;
    j->attempt = attempt;
    j->due_ms = due_ms;
    j->heap_index = SIZE_MAX;
    j->results = xcalloc(e->nrcpt ? e->nrcpt : 1, sizeof *j->results);
    return j;
}

/* A new entry holding rcpt[from..from+n) of e (another reference to the
 * same message). */
static struct queue_entry *
scheduler_entry_slice(const struct queue_entry *e, uint32_t from, uint32_t n)
{
    size_t dlen = strlen(e->domain);
    struct queue_entry *x = xcalloc(1, sizeof *x + dlen + 1);
    memcpy(x->domain, e->domain, dlen + 1);
    x->nrcpt = n;
    x->rcpt = xmemdup(e->rcpt + from, (size_t)n * sizeof *x->rcpt);
    queue_msg_get(e->msg);
    x->msg = e->msg;
    return x;
}

void
scheduler_add_entry(struct scheduler *s, struct queue_entry *e, uint64_t due_ms, unsigned attempt,
                uint64_t now_ms)
{
    struct scheduler_dest *d = scheduler_dest_for(s, e->domain, now_ms);
    uint32_t per = d->limits.max_rcpt_per_transaction ? d->limits.max_rcpt_per_transaction
                                                      : 100;
    if (e->nrcpt <= per) {
        scheduler_enqueue(s, scheduler_job_new(e, d, attempt, due_ms), now_ms);
        return;
    }
    for (uint32_t from = 0; from < e->nrcpt; from += per) {
        uint32_t n = e->nrcpt - from < per ? e->nrcpt - from : per;
        scheduler_enqueue(s, scheduler_job_new(scheduler_entry_slice(e, from, n), d, attempt, due_ms),
                      now_ms);
    }
    queue_entry_free(e);
}

void
scheduler_run_timers(struct scheduler *s, uint64_t now_ms)
{
    while (s->nheap > 0 && s->heap[0]->due_ms <= now_ms)
        scheduler_ready_append(s, scheduler_heap_pop(s));
}

uint64_t
scheduler_next_wakeup(struct scheduler *s, uint64_t now_ms)
{
    uint64_t next = s->nheap > 0 ? s->heap[0]->due_ms : UINT64_MAX;
    for (struct scheduler_dest *d = s->want; d != NULL; d = d->want_next) {
        if (d->nready == 0)
            continue;
        /* Work waits for a message token first, then for a connection. */
        uint64_t t = shaping_next_message_ms(&d->shaping, now_ms);
        if (t == SHAPING_NEVER)
            continue;
        if (t <= now_ms && d->nconn < d->nready)
            t = shaping_next_connect_ms(&d->shaping, now_ms, d->nconn);
        if (t != SHAPING_NEVER && t < next)
            next = t;
    }
    return next;
}

/* Drops destinations without ready jobs from the want list. */
static void
scheduler_prune_want(struct scheduler *s)
{
    struct scheduler_dest **pp = &s->want;
    while (*pp != NULL) {
        struct scheduler_dest *d = *pp;
        if (d->nready == 0) {
            *pp = d->want_next;
            d->want_next = NULL;
            d->in_want = false;
        } else {
            pp = &d->want_next;
        }
    }
}

struct scheduler_dest *
scheduler_want_connection(struct scheduler *s, uint64_t now_ms)
{
    scheduler_prune_want(s);
    for (struct scheduler_dest **pp = &s->want; *pp != NULL; pp = &(*pp)->want_next) {
        struct scheduler_dest *d = *pp;
        /* One connection per ready job at most: more would sit idle. */
        if (d->nconn >= d->nready)
            continue;
        /* No connection while the message rate says wait: it would idle. */
        if (d->nconn > 0 && shaping_next_message_ms(&d->shaping, now_ms) > now_ms)
            continue;
        if (!shaping_connect_begin(&d->shaping, now_ms, d->nconn))
            continue;
        d->nconn++;
        /* Round-robin: the chosen destination goes to the end of the list. */
        if (d->want_next != NULL) {
            *pp = d->want_next;
            struct scheduler_dest **tail = pp;
            while (*tail != NULL)
                tail = &(*tail)->want_next;
            *tail = d;
            d->want_next = NULL;
        }
        return d;
    }
    return NULL;
}

struct scheduler_job *
scheduler_next_job(struct scheduler *s, struct scheduler_dest *d, uint64_t now_ms)
{
    if (d->ready_head == NULL)
        return NULL;
    if (!shaping_message_begin(&d->shaping, now_ms))
        return NULL;
    struct scheduler_job *j = d->ready_head;
    d->ready_head = j->next;
    if (d->ready_head == NULL)
        d->ready_tail = NULL;
    d->nready--;
    j->next = NULL;
    s->pending--;
    memset(j->results, 0, (j->entry->nrcpt ? j->entry->nrcpt : 1) * sizeof *j->results);
    j->retry_ms = 0;
    return j;
}

void
scheduler_conn_ok(struct scheduler *s, struct scheduler_dest *d, uint64_t now_ms)
{
    (void)s;
    shaping_connect_ok(&d->shaping, now_ms);
}

void
scheduler_conn_failed(struct scheduler *s, struct scheduler_dest *d, uint64_t now_ms)
{
    (void)s;
    shaping_connect_failed(&d->shaping, now_ms);
}

void
scheduler_conn_closed(struct scheduler *s, struct scheduler_dest *d)
{
    if (d->nconn > 0)
        d->nconn--;
    scheduler_want(s, d);
}

bool
scheduler_job_expired(const struct scheduler *s, const struct scheduler_job *job, uint64_t now_ms)
{
    return retry_expired(&s->retry, job->entry->msg->env.arrival_ms, now_ms);
}

uint64_t
scheduler_job_retry_at(struct scheduler *s, struct scheduler_job *job, uint64_t now_ms)
{
    uint64_t next = 0;
    if (job->retry_ms == 0
        && retry_after_failure(&s->retry, job->entry->msg->env.arrival_ms, job->attempt, now_ms,
                               &s->rng, &next) == RETRY_DEFER)
        job->retry_ms = next;
    return job->retry_ms;
}

void
scheduler_job_done(struct scheduler *s, struct scheduler_job *job, uint64_t now_ms)
{
    struct queue_entry *e = job->entry;
    uint32_t ndeferred = 0, npending = 0, ndelivered = 0;
    for (uint32_t i = 0; i < e->nrcpt; i++) {
        switch (job->results[i].outcome) {
        case SCHEDULER_DEFERRED:
            ndeferred++;
            break;
        case SCHEDULER_PENDING:
            npending++;
            break;
        case SCHEDULER_DELIVERED:
            ndelivered++;
            break;
        default:
            break;
        }
    }
    if (ndelivered > 0)
        shaping_delivered(&job->dest->shaping, now_ms);
    if (npending == e->nrcpt) {
        /* Never tried (the connection went away first): same attempt, and
         * the message rate token is given back. */
        shaping_message_give_back(&job->dest->shaping, now_ms);
        s->pending++;
        scheduler_ready_prepend(s, job);
        return;
    }
    uint32_t nretry = ndeferred + npending;
    if (nretry == 0) {
        scheduler_job_free(job);
        return;
    }
    /* The time io/ recorded with the deferral, if it asked for one. */
    uint64_t next = job->retry_ms;
    enum retry_decision dec = RETRY_DEFER;
    if (next == 0)
        dec = retry_after_failure(&s->retry, e->msg->env.arrival_ms, job->attempt, now_ms,
                                  &s->rng, &next);
    if (dec == RETRY_EXPIRED) {
        /* io/ saw scheduler_job_expired() and bounced these already. */
        scheduler_job_free(job);
        return;
    }
    /* The recipients still to do become a new entry, due at next. */
    size_t dlen = strlen(e->domain);
    struct queue_entry *x = xcalloc(1, sizeof *x + dlen + 1);
    memcpy(x->domain, e->domain, dlen + 1);
    x->rcpt = xmalloc((size_t)nretry * sizeof *x->rcpt);
    for (uint32_t i = 0; i < e->nrcpt; i++) {
        uint8_t o = job->results[i].outcome;
        if (o == SCHEDULER_DEFERRED || o == SCHEDULER_PENDING)
            x->rcpt[x->nrcpt++] = e->rcpt[i];
    }
    queue_msg_get(e->msg);
    x->msg = e->msg;
    struct scheduler_job *again = scheduler_job_new(x, job->dest, job->attempt + 1, next);
    scheduler_job_free(job);
    scheduler_enqueue(s, again, now_ms);
}

size_t
scheduler_pending_jobs(const struct scheduler *s)
{
    return s->pending;
}

size_t
scheduler_destinations(const struct scheduler *s)
{
    return s->ndests;
}
