/*
 * Tests for io/authpool: verification on pool threads, concurrent
 * submissions, table swaps with verifications in flight, freeing with
 * requests pending, and the auth_inbox completion list (order, the
 * was-empty flag, concurrent producers, no lost wake-ups). Hashes are made
 * in the test (auth_fixture.h); cheap ones where many are needed.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth_fixture.h"
#include "authpool.h"

/* Counts completions; done() may run on any pool thread. */
struct tracker {
    pthread_mutex_t lock;
    pthread_cond_t cv;
    unsigned done, ok, unwiped, on_test_thread;
    pthread_t test_thread;
};

static struct tracker tr;

static void
pool_setup(void)
{
    pthread_mutex_init(&tr.lock, NULL);
    pthread_cond_init(&tr.cv, NULL);
    tr.test_thread = pthread_self();
}

TestSuite(authpool, .init = pool_setup, .timeout = 60);

static void
on_done(struct auth_request *req)
{
    struct tracker *t = req->arg;
    bool wiped = true;

    for (size_t i = 0; i < sizeof req->pass; i++)
        wiped &= req->pass[i] == 0;
    pthread_mutex_lock(&t->lock);
    t->done++;
    t->ok += req->ok;
    t->unwiped += !wiped;
    t->on_test_thread += pthread_equal(pthread_self(), t->test_thread) != 0;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->lock);
}

static void
wait_done(unsigned n)
{
    pthread_mutex_lock(&tr.lock);
    while (tr.done < n)
        pthread_cond_wait(&tr.cv, &tr.lock);
    pthread_mutex_unlock(&tr.lock);
}

static void
fill(struct auth_request *req, const char *user, const char *pass)
{
    memset(req, 0, sizeof *req);
    snprintf(req->user, sizeof req->user, "%s", user);
    snprintf(req->pass, sizeof req->pass, "%s", pass);
    req->ok = true;                 /* the pool must overwrite it */
    req->done = on_done;
    req->arg = &tr;
}

static struct authpool *
pool(unsigned nthreads, struct auth_table *t)
{
    char err[256] = "";
    struct authpool *p = authpool_new(nthreads, t, err, sizeof err);

    cr_assert_not_null(p, "%s", err);
    return p;
}

/* "alice:<hash of pass>\n" as a table. */
static struct auth_table *
one_user(const char *prefix, unsigned long cost, const char *pass)
{
    char text[512];

    snprintf(text, sizeof text, "alice:%s\n", test_hash(prefix, cost, pass));
    return test_table(text);
}

/* ---- verification ---- */

Test(authpool, verifies_on_pool_threads_and_wipes_passwords)
{
    char text[1024];
    static struct auth_request r[5];

    snprintf(text, sizeof text, "alice:%s\nbob:%s\n", test_hash("$y$", 1, "wonderland"),
             test_hash("$6$", 1000, "builder"));
    struct authpool *p = pool(2, test_table(text));
    fill(&r[0], "alice", "wonderland");
    fill(&r[1], "alice", "builder");
    fill(&r[2], "bob", "builder");
    fill(&r[3], "mallory", "builder");
    fill(&r[4], "bob", "");
    for (int i = 0; i < 5; i++)
        authpool_submit(p, &r[i]);
    wait_done(5);
    cr_assert(r[0].ok);
    cr_assert_not(r[1].ok);
    cr_assert(r[2].ok);
    cr_assert_not(r[3].ok, "unknown user");
    cr_assert_not(r[4].ok, "empty password");
    cr_assert_eq(tr.ok, 2);
    cr_assert_eq(tr.unwiped, 0, "every password wiped before done()");
    cr_assert_eq(tr.on_test_thread, 0, "done() runs on a pool thread");
    cr_assert_str_eq(r[0].user, "alice", "the user name is left alone");
    authpool_free(p);
}

Test(authpool, zero_threads_means_one)
{
    static struct auth_request r;
    struct authpool *p = pool(0, one_user("$6$", 1000, "pw"));

    fill(&r, "alice", "pw");
    authpool_submit(p, &r);
    wait_done(1);
    cr_assert(r.ok);
    authpool_free(p);
}

Test(authpool, without_a_table_every_request_fails)
{
    static struct auth_request r[2];
    struct authpool *p = pool(1, NULL);

    fill(&r[0], "alice", "pw");
    authpool_submit(p, &r[0]);
    wait_done(1);
    cr_assert_not(r[0].ok);
    authpool_set_table(p, one_user("$6$", 1000, "pw"));
    fill(&r[1], "alice", "pw");
    authpool_submit(p, &r[1]);
    wait_done(2);
    cr_assert(r[1].ok);
    authpool_free(p);
}

/* ---- concurrency ---- */

#define SUBMITTERS 4
#define PER_SUBMITTER 64

struct submitter {
    struct authpool *p;
    struct auth_request *reqs;
};

static void *
submitter_main(void *arg)
{
    struct submitter *s = arg;

    for (int i = 0; i < PER_SUBMITTER; i++)
        authpool_submit(s->p, &s->reqs[i]);
    return NULL;
}

Test(authpool, concurrent_submissions_all_complete_with_the_right_result)
{
    static struct auth_request r[SUBMITTERS][PER_SUBMITTER];
    struct submitter s[SUBMITTERS];
    pthread_t t[SUBMITTERS];
    struct authpool *p = pool(2, one_user("$6$", 1000, "right"));

    for (int k = 0; k < SUBMITTERS; k++) {
        for (int i = 0; i < PER_SUBMITTER; i++)
            fill(&r[k][i], i % 4 == 2 ? "bob" : "alice", i % 2 ? "wrong" : "right");
        s[k] = (struct submitter){ p, r[k] };
        cr_assert_eq(pthread_create(&t[k], NULL, submitter_main, &s[k]), 0);
    }
    for (int k = 0; k < SUBMITTERS; k++)
        pthread_join(t[k], NULL);
    wait_done(SUBMITTERS * PER_SUBMITTER);
    cr_assert_eq(tr.done, SUBMITTERS * PER_SUBMITTER, "each completes once");
    for (int k = 0; k < SUBMITTERS; k++)
        for (int i = 0; i < PER_SUBMITTER; i++)
            cr_assert_eq(r[k][i].ok, i % 4 == 0, "request %d/%d", k, i);
    cr_assert_eq(tr.unwiped, 0);
    authpool_free(p);
}

/* A reload while slow verifications run: they finish against the table they
 * started with; everything submitted after the swap sees the new one. A
 * table freed under a verification is wiped, which makes its result
 * arbitrary (an empty hash and an empty crypt output compare equal): one
 * request in flight must pass and one must fail. */
Test(authpool, set_table_while_requests_are_in_flight)
{
    static struct auth_request r[6];
    struct authpool *p = pool(2, one_user("$y$", 0, "old"));
    struct auth_table *fresh = one_user("$6$", 1000, "new");

    fill(&r[0], "alice", "old");
    fill(&r[1], "alice", "bad");
    authpool_submit(p, &r[0]);
    authpool_submit(p, &r[1]);
    usleep(20000);                 /* both threads are inside yescrypt now */
    authpool_set_table(p, fresh);
    fill(&r[2], "alice", "new");
    fill(&r[3], "alice", "old");
    authpool_submit(p, &r[2]);
    authpool_submit(p, &r[3]);
    wait_done(4);
    cr_assert(r[0].ok, "verified against the table it started with");
    cr_assert_not(r[1].ok);
    cr_assert(r[2].ok, "the new table is used after the swap");
    cr_assert_not(r[3].ok, "the old password is gone");
    /* Two swaps in a row with nothing in flight free the tables at once. */
    authpool_set_table(p, one_user("$6$", 1000, "newer"));
    authpool_set_table(p, one_user("$6$", 1000, "newest"));
    fill(&r[4], "alice", "newest");
    fill(&r[5], "alice", "newer");
    authpool_submit(p, &r[4]);
    authpool_submit(p, &r[5]);
    wait_done(6);
    cr_assert(r[4].ok);
    cr_assert_not(r[5].ok);
    authpool_free(p);
}

Test(authpool, free_completes_pending_requests_with_failure)
{
    enum { N = 20 };
    static struct auth_request r[N];
    struct authpool *p = pool(1, one_user("$y$", 3, "pw"));

    for (int i = 0; i < N; i++) {
        fill(&r[i], "alice", "pw");
        authpool_submit(p, &r[i]);
    }
    authpool_free(p);
    /* free returned: every done() has run, without waiting here. */
    cr_assert_eq(tr.done, N);
    cr_assert_lt(tr.ok, N, "queued requests fail instead of being verified");
    for (int i = tr.ok; i < N; i++)
        cr_assert_not(r[i].ok, "request %d", i);
    cr_assert_eq(tr.unwiped, 0, "failed requests are wiped too");
}

Test(authpool, free_of_null_is_harmless)
{
    cr_assert_null(authpool_free(NULL));
}

/* ---- auth_inbox ---- */

Test(authpool, inbox_returns_requests_oldest_first_and_reports_empty)
{
    static struct auth_request r[3];
    struct auth_inbox in;

    auth_inbox_init(&in);
    cr_assert_null(auth_inbox_take_all(&in));
    cr_assert(auth_inbox_push(&in, &r[0]), "was empty: wake the consumer");
    cr_assert_not(auth_inbox_push(&in, &r[1]));
    cr_assert_not(auth_inbox_push(&in, &r[2]));
    struct auth_request *list = auth_inbox_take_all(&in);
    cr_assert_eq(list, &r[0]);
    cr_assert_eq(list->next, &r[1]);
    cr_assert_eq(list->next->next, &r[2]);
    cr_assert_null(list->next->next->next);
    cr_assert_null(auth_inbox_take_all(&in));
    cr_assert(auth_inbox_push(&in, &r[1]), "empty again after a take");
    cr_assert_eq(auth_inbox_take_all(&in), &r[1]);
}

#define PRODUCERS 4
#define PER_PRODUCER 5000

struct producer {
    struct auth_inbox *in;
    struct auth_request *reqs;
    sem_t *wake;
};

static void *
producer_main(void *arg)
{
    struct producer *pr = arg;

    for (int i = 0; i < PER_PRODUCER; i++)
        if (auth_inbox_push(pr->in, &pr->reqs[i]))
            sem_post(pr->wake);
    return NULL;
}

/* Producers wake the consumer only when their push found the inbox empty;
 * the consumer sleeps between takes. Every request must arrive exactly once,
 * each producer's in its order, and the consumer must never sleep forever. */
Test(authpool, inbox_concurrent_producers_lose_neither_requests_nor_wakeups)
{
    static struct auth_request r[PRODUCERS][PER_PRODUCER];
    struct producer pr[PRODUCERS];
    pthread_t t[PRODUCERS];
    struct auth_inbox in;
    sem_t wake;
    uintptr_t next[PRODUCERS] = { 0 };
    size_t got = 0;

    auth_inbox_init(&in);
    sem_init(&wake, 0, 0);
    for (uintptr_t k = 0; k < PRODUCERS; k++) {
        for (uintptr_t i = 0; i < PER_PRODUCER; i++)
            r[k][i].arg = (void *)(k << 32 | i);
        pr[k] = (struct producer){ &in, r[k], &wake };
        cr_assert_eq(pthread_create(&t[k], NULL, producer_main, &pr[k]), 0);
    }
    while (got < (size_t)PRODUCERS * PER_PRODUCER) {
        sem_wait(&wake);
        for (struct auth_request *q = auth_inbox_take_all(&in); q != NULL; q = q->next) {
            uintptr_t v = (uintptr_t)q->arg, k = v >> 32, i = v & 0xffffffffu;
            cr_assert_lt(k, PRODUCERS);
            cr_assert_eq(i, next[k], "producer %lu: %lu after %lu", (unsigned long)k,
                         (unsigned long)i, (unsigned long)next[k]);
            next[k]++;
            got++;
        }
    }
    for (int k = 0; k < PRODUCERS; k++)
        pthread_join(t[k], NULL);
    cr_assert_null(auth_inbox_take_all(&in));
    sem_destroy(&wake);
}

/* The wiring the worker uses: done() pushes onto an inbox. */
static struct auth_inbox wired_inbox;
static sem_t wired_wake;

static void
on_done_push(struct auth_request *req)
{
    if (auth_inbox_push(&wired_inbox, req))
        sem_post(&wired_wake);
}

Test(authpool, completions_reach_the_worker_through_the_inbox)
{
    enum { N = 32 };
    static struct auth_request r[N];
    struct authpool *p = pool(2, one_user("$6$", 1000, "pw"));
    unsigned got = 0, ok = 0;

    auth_inbox_init(&wired_inbox);
    sem_init(&wired_wake, 0, 0);
    for (int i = 0; i < N; i++) {
        fill(&r[i], "alice", i % 3 ? "pw" : "nope");
        r[i].done = on_done_push;
        authpool_submit(p, &r[i]);
    }
    while (got < N) {
        sem_wait(&wired_wake);
        for (struct auth_request *q = auth_inbox_take_all(&wired_inbox); q; q = q->next) {
            got++;
            ok += q->ok;
            cr_assert_eq(q->ok, (q - r) % 3 != 0, "request %td", q - r);
        }
    }
    cr_assert_eq(ok, N - (N + 2) / 3);
    authpool_free(p);
    sem_destroy(&wired_wake);
}
