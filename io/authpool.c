/*
 * authpool - verification threads and the auth_inbox completion list.
 *
 * One mutex guards the pending FIFO, the stop flag and the table in use; a
 * condition variable wakes idle threads. The mutex is never held across a
 * hash or a done() call. Tables are reference counted by the verifications
 * using them (struct authpool_table, counts under the mutex): a thread takes
 * a reference to the current table when it dequeues a request, so a table
 * swapped out by authpool_set_table lives until the last verification that
 * started with it ends, and no verification ever starts on an old one.
 * Each thread has its own struct crypt_data (32 KiB, on the heap).
 */
#include "authpool.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"

/* A table and the verifications using it. */
struct authpool_table {
    struct auth_table *table;        /* NULL: every request fails */
    unsigned users;
};

struct authpool {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    struct auth_request *head, *tail;    /* pending, linked by next */
    struct authpool_table *current;
    bool stopping;
    unsigned nthreads;
    pthread_t *threads;
};

static struct authpool_table *
authpool_table_new(struct auth_table *table)
{
    struct authpool_table *pt = xcalloc(1, sizeof *pt);

    pt->table = table;
    return pt;
}

static void
authpool_table_free(struct authpool_table *pt)
{
    if (pt != NULL) {
        auth_table_free(pt->table);
        xfree(pt);
    }
}

/* Drops a verification's reference; frees a table no longer current when
 * it was the last. */
static void
authpool_release(struct authpool *p, struct authpool_table *pt)
{
    bool last;

    pthread_mutex_lock(&p->lock);
    last = --pt->users == 0 && pt != p->current;
    pthread_mutex_unlock(&p->lock);
    if (last)
        authpool_table_free(pt);
}

/* Takes the oldest pending request, or NULL when none. Under the lock. */
static struct auth_request *
authpool_dequeue(struct authpool *p)
{
    struct auth_request *req = p->head;

    if (req != NULL) {
        p->head = req->next;
        if (p->head == NULL)
            p->tail = NULL;
    }
    return req;
}

/* Sets the result, wipes the password and hands the request back. */
static void
authpool_complete(struct auth_request *req, bool ok)
{
    req->ok = ok;
    explicit_bzero(req->pass, sizeof req->pass);
    req->done(req);
}

static void *
authpool_thread(void *arg)
{
    struct authpool *p = arg;
    struct crypt_data *scratch = xcalloc(1, sizeof *scratch);

    for (;;) {
        struct authpool_table *pt = NULL;
        struct auth_request *req;

        pthread_mutex_lock(&p->lock);
        while (p->head == NULL && !p->stopping)
            pthread_cond_wait(&p->wake, &p->lock);
        req = authpool_dequeue(p);
        if (req != NULL && !p->stopping) {
            pt = p->current;
            pt->users++;
        }
        pthread_mutex_unlock(&p->lock);
        if (req == NULL)
            break;                  /* stopping, and nothing left */
        if (pt == NULL) {
            authpool_complete(req, false);   /* stopping: fail what is queued */
            continue;
        }
        bool ok = pt->table != NULL
                  && auth_table_verify(pt->table, req->user, req->pass, scratch);
        authpool_release(p, pt);
        authpool_complete(req, ok);
    }
    explicit_bzero(scratch, sizeof *scratch);
    xfree(scratch);
    return NULL;
}

/* Asks the threads to stop, and joins the first n. */
static void
authpool_stop(struct authpool *p, unsigned n)
{
    pthread_mutex_lock(&p->lock);
    p->stopping = true;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    for (unsigned i = 0; i < n; i++)
        pthread_join(p->threads[i], NULL);
}

static void
authpool_destroy(struct authpool *p)
{
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->lock);
    xfree(p->threads);
    xfree(p);
}

struct authpool *
authpool_new(unsigned nthreads, struct auth_table *table, char *err, size_t errsize)
{
    struct authpool *p = xcalloc(1, sizeof *p);
    sigset_t all, old;
    int r = 0;

    p->nthreads = nthreads > 0 ? nthreads : 1;
    p->threads = xcalloc(p->nthreads, sizeof *p->threads);
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->wake, NULL);
    p->current = authpool_table_new(table);
    /* Threads inherit the creator's mask: block everything so signals go to
     * main's sigwait, whatever the caller had blocked. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    for (unsigned i = 0; i < p->nthreads; i++) {
        r = pthread_create(&p->threads[i], NULL, authpool_thread, p);
        if (r != 0) {
            authpool_stop(p, i);
            break;
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (r != 0) {
        snprintf(err, errsize, "pthread_create: %s", strerror(r));
        p->current->table = NULL;   /* still the caller's */
        authpool_table_free(p->current);
        authpool_destroy(p);
        return NULL;
    }
    return p;
}

void
authpool_set_table(struct authpool *p, struct auth_table *table)
{
    struct authpool_table *pt = authpool_table_new(table), *old;

    pthread_mutex_lock(&p->lock);
    old = p->current;
    p->current = pt;
    if (old->users > 0)
        old = NULL;                 /* the last verification using it frees it */
    pthread_mutex_unlock(&p->lock);
    authpool_table_free(old);
}

void
authpool_submit(struct authpool *p, struct auth_request *req)
{
    req->next = NULL;
    pthread_mutex_lock(&p->lock);
    if (p->tail != NULL)
        p->tail->next = req;
    else
        p->head = req;
    p->tail = req;
    pthread_cond_signal(&p->wake);
    pthread_mutex_unlock(&p->lock);
}

struct authpool *
authpool_free(struct authpool *p)
{
    if (p == NULL)
        return NULL;
    authpool_stop(p, p->nthreads);
    /* Joined: no verification holds a reference any more. */
    authpool_table_free(p->current);
    authpool_destroy(p);
    return NULL;
}

/* ---- auth_inbox ---- */

void
auth_inbox_init(struct auth_inbox *in)
{
    atomic_init(&in->head, NULL);
}

bool
auth_inbox_push(struct auth_inbox *in, struct auth_request *req)
{
    struct auth_request *old = atomic_load_explicit(&in->head, memory_order_relaxed);

    do
        req->next = old;
    while (!atomic_compare_exchange_weak_explicit(&in->head, &old, req, memory_order_release,
                                                  memory_order_relaxed));
    return old == NULL;
}

struct auth_request *
auth_inbox_take_all(struct auth_inbox *in)
{
    struct auth_request *stack = atomic_exchange_explicit(&in->head, NULL,
                                                          memory_order_acquire);
    struct auth_request *fifo = NULL;

    /* The stack is newest first: reverse it. */
    while (stack != NULL) {
        struct auth_request *next = stack->next;
        stack->next = fifo;
        fifo = stack;
        stack = next;
    }
    return fifo;
}
