/*
 * clientlimit - exact per-IP connection accounting shared by all workers.
 *
 * 64 stripes, each with a mutex and a chained hash of entries. An entry lives
 * while the client has connections or its rate window is still open; stale
 * entries are dropped when their stripe is next touched, so memory follows
 * the number of active clients.
 */
#include "clientlimit.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>

#include "alloc.h"

#define CL_STRIPES 64
#define CL_WINDOW_MS 60000

struct cl_entry {
    struct cl_entry *next;
    struct netaddr addr;
    unsigned conns;
    unsigned window_count;
    uint64_t window_start;
    unsigned auth_failures;     /* in the auth window */
    uint64_t auth_window_start;
};

struct cl_stripe {
    pthread_mutex_t lock;
    struct cl_entry *head;
};

struct clientlimit {
    unsigned per_client;
    unsigned rate_limit;
    unsigned total;
    unsigned auth_failure_limit;
    atomic_uint current;
    struct cl_stripe stripes[CL_STRIPES];
};

struct clientlimit *
clientlimit_new(unsigned per_client, unsigned rate_limit, unsigned total)
{
    struct clientlimit *cl = xcalloc(1, sizeof *cl);
    cl->per_client = per_client;
    cl->rate_limit = rate_limit;
    cl->total = total;
    for (int i = 0; i < CL_STRIPES; i++)
        pthread_mutex_init(&cl->stripes[i].lock, NULL);
    return cl;
}

struct clientlimit *
clientlimit_free(struct clientlimit *cl)
{
    if (cl == NULL)
        return NULL;
    for (int i = 0; i < CL_STRIPES; i++) {
        for (struct cl_entry *e = cl->stripes[i].head, *n; e; e = n) {
            n = e->next;
            xfree(e);
        }
        pthread_mutex_destroy(&cl->stripes[i].lock);
    }
    xfree(cl);
    return NULL;
}

static unsigned
cl_hash(const struct netaddr *a)
{
    uint32_t h = 2166136261u;
    size_t n = a->family == AF_INET ? 4 : 16;
    for (size_t i = 0; i < n; i++) {
        h ^= a->bytes[i];
        h *= 16777619u;
    }
    return h % CL_STRIPES;
}

static bool
cl_same(const struct netaddr *a, const struct netaddr *b)
{
    return a->family == b->family
           && memcmp(a->bytes, b->bytes, a->family == AF_INET ? 4 : 16) == 0;
}

enum clientlimit_verdict
clientlimit_acquire(struct clientlimit *cl, const struct netaddr *a, uint64_t now_ms,
                    bool exempt)
{
    unsigned cur = atomic_fetch_add(&cl->current, 1);
    if (cl->total && cur >= cl->total) {
        atomic_fetch_sub(&cl->current, 1);
        return CLIENTLIMIT_TOO_MANY_TOTAL;
    }
    if (exempt)
        return CLIENTLIMIT_OK;
    struct cl_stripe *st = &cl->stripes[cl_hash(a)];
    enum clientlimit_verdict v = CLIENTLIMIT_OK;
    pthread_mutex_lock(&st->lock);
    struct cl_entry **pp = &st->head, *e = NULL;
    while (*pp != NULL) {
        struct cl_entry *x = *pp;
        if (cl_same(&x->addr, a)) {
            e = x;
            pp = &x->next;
            continue;
        }
        if (x->conns == 0 && now_ms - x->window_start >= CL_WINDOW_MS
            && now_ms - x->auth_window_start >= CL_WINDOW_MS) {
            *pp = x->next;   /* stale: no connections, window over */
            xfree(x);
            continue;
        }
        pp = &x->next;
    }
    if (e == NULL) {
        e = xcalloc(1, sizeof *e);
        e->addr = *a;
        e->window_start = now_ms;
        e->next = st->head;
        st->head = e;
    }
    if (now_ms - e->window_start >= CL_WINDOW_MS) {
        e->window_start = now_ms;
        e->window_count = 0;
    }
    if (cl->per_client && e->conns >= cl->per_client)
        v = CLIENTLIMIT_TOO_MANY_FROM_CLIENT;
    else if (cl->rate_limit && e->window_count >= cl->rate_limit)
        v = CLIENTLIMIT_TOO_FAST;
    else {
        e->conns++;
        e->window_count++;
    }
    pthread_mutex_unlock(&st->lock);
    if (v != CLIENTLIMIT_OK)
        atomic_fetch_sub(&cl->current, 1);
    return v;
}

void
clientlimit_set_auth_failure_limit(struct clientlimit *cl, unsigned per_minute)
{
    cl->auth_failure_limit = per_minute;
}

/* The client's entry (created when add), window rolled; stripe locked. */
static struct cl_entry *
cl_auth_entry(struct cl_stripe *st, const struct netaddr *a, uint64_t now_ms, bool add)
{
    struct cl_entry *e = st->head;
    while (e != NULL && !cl_same(&e->addr, a))
        e = e->next;
    if (e == NULL && add) {
        e = xcalloc(1, sizeof *e);
        e->addr = *a;
        e->window_start = now_ms;
        e->auth_window_start = now_ms;
        e->next = st->head;
        st->head = e;
    }
    if (e != NULL && now_ms - e->auth_window_start >= CL_WINDOW_MS) {
        e->auth_window_start = now_ms;
        e->auth_failures = 0;
    }
    return e;
}

bool
clientlimit_auth_allowed(struct clientlimit *cl, const struct netaddr *a, uint64_t now_ms)
{
    if (cl->auth_failure_limit == 0)
        return true;
    struct cl_stripe *st = &cl->stripes[cl_hash(a)];
    pthread_mutex_lock(&st->lock);
    struct cl_entry *e = cl_auth_entry(st, a, now_ms, false);
    bool ok = e == NULL || e->auth_failures < cl->auth_failure_limit;
    pthread_mutex_unlock(&st->lock);
    return ok;
}

bool
clientlimit_auth_failed(struct clientlimit *cl, const struct netaddr *a, uint64_t now_ms)
{
    if (cl->auth_failure_limit == 0)
        return false;
    struct cl_stripe *st = &cl->stripes[cl_hash(a)];
    pthread_mutex_lock(&st->lock);
    struct cl_entry *e = cl_auth_entry(st, a, now_ms, true);
    e->auth_failures++;
    bool over = e->auth_failures >= cl->auth_failure_limit;
    pthread_mutex_unlock(&st->lock);
    return over;
}

void
clientlimit_release(struct clientlimit *cl, const struct netaddr *a, bool exempt)
{
    if (exempt) {
        atomic_fetch_sub(&cl->current, 1);
        return;
    }
    struct cl_stripe *st = &cl->stripes[cl_hash(a)];
    pthread_mutex_lock(&st->lock);
    for (struct cl_entry *e = st->head; e != NULL; e = e->next) {
        if (cl_same(&e->addr, a)) {
            if (e->conns > 0)
                e->conns--;
            break;
        }
    }
    pthread_mutex_unlock(&st->lock);
    atomic_fetch_sub(&cl->current, 1);
}
