/* scheduler: destinations, jobs, connection and retry decisions. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "scheduler.h"

static struct config cfg;

static void
setup(void)
{
    config_init(&cfg);
}

static void
teardown(void)
{
    config_free(&cfg);
}

static void
take_entry(void *arg, struct queue_entry *e)
{
    *(struct queue_entry **)arg = e;
}

/* A message with n recipients at domain, split into its queue entry. */
static struct queue_entry *
entry(uint64_t qid, const char *domain, uint32_t n, uint64_t arrival_ms)
{
    struct envelope env;
    memset(&env, 0, sizeof env);
    env.sender = xstrdup("s@example.org");
    env.arrival_ms = arrival_ms;
    env.nrcpt = n;
    env.rcpts = xcalloc(n, sizeof *env.rcpts);
    for (uint32_t i = 0; i < n; i++) {
        char a[300];
        snprintf(a, sizeof a, "r%u@%s", i, domain);
        env.rcpts[i].addr = xstrdup(a);
    }
    struct queue_msg *m = queue_msg_new(qid, &env, 10, 0, NULL, 0, NULL);
    struct queue_entry *out = NULL;
    queue_msg_split(m, take_entry, &out);
    queue_msg_put(m);
    return out;
}

TestSuite(scheduler, .init = setup, .fini = teardown);

Test(scheduler, splits_recipients_into_transactions_of_the_configured_size)
{
    cfg.max_rcpt_per_transaction = 100;
    struct scheduler *s = scheduler_new(&cfg, NULL, NULL, NULL, 1);
    scheduler_add_entry(s, entry(1, "big.example", 250, 0), 0, 0, 1000);
    cr_assert_eq(scheduler_pending_jobs(s), 3);
    cr_assert_eq(scheduler_destinations(s), 1);
    struct scheduler_dest *d = scheduler_want_connection(s, 1000);
    cr_assert_not_null(d);
    cr_assert_str_eq(d->key, "big.example");
    uint32_t sizes[3];
    for (int i = 0; i < 3; i++) {
        struct scheduler_job *j = scheduler_next_job(s, d, 1000);
        cr_assert_not_null(j);
        sizes[i] = j->entry->nrcpt;
        for (uint32_t k = 0; k < j->entry->nrcpt; k++)
            j->results[k].outcome = SCHEDULER_DELIVERED;
        scheduler_job_done(s, j, 1000);
    }
    cr_assert_eq(sizes[0] + sizes[1] + sizes[2], 250);
    cr_assert_eq(sizes[0], 100);
    cr_assert_null(scheduler_next_job(s, d, 1000));
    cr_assert_eq(scheduler_pending_jobs(s), 0);
    scheduler_free(s);
}

Test(scheduler, connections_follow_ready_work_and_the_initial_window)
{
    cfg.max_connections = 20;
    struct scheduler *s = scheduler_new(&cfg, NULL, NULL, NULL, 1);
    for (uint64_t q = 1; q <= 3; q++)
        scheduler_add_entry(s, entry(q, "a.example", 1, 0), 0, 0, 0);
    int opened = 0;
    while (scheduler_want_connection(s, 0) != NULL)
        opened++;
    cr_assert_eq(opened, 3, "no more connections than ready jobs");
    for (uint64_t q = 4; q <= 40; q++)
        scheduler_add_entry(s, entry(q, "a.example", 1, 0), 0, 0, 0);
    while (scheduler_want_connection(s, 0) != NULL)
        opened++;
    cr_assert_eq(opened, 5, "AIMD starts at min(max_connections, 5)");
    scheduler_free(s);
}

Test(scheduler, relayhost_puts_every_domain_on_one_destination)
{
    struct route_hop relay;
    char err[128];
    cr_assert_eq(route_hop_parse(&relay, "[127.0.0.1]:2526", err, sizeof err), 0);
    struct scheduler *s = scheduler_new(&cfg, NULL, &relay, NULL, 1);
    scheduler_add_entry(s, entry(1, "one.example", 1, 0), 0, 0, 0);
    scheduler_add_entry(s, entry(2, "two.example", 1, 0), 0, 0, 0);
    cr_assert_eq(scheduler_destinations(s), 1);
    struct scheduler_dest *d = scheduler_want_connection(s, 0);
    cr_assert_str_eq(d->key, "[127.0.0.1]:2526");
    cr_assert_eq(d->hop.port, 2526);
    cr_assert(!d->hop.mx_lookup);
    scheduler_free(s);
}

Test(scheduler, deferred_recipients_come_back_after_the_backoff)
{
    cfg.minimal_backoff_time_ms = 300000;
    struct scheduler *s = scheduler_new(&cfg, NULL, NULL, NULL, 7);
    scheduler_add_entry(s, entry(1, "d.example", 3, 0), 0, 0, 1000);
    struct scheduler_dest *d = scheduler_want_connection(s, 1000);
    struct scheduler_job *j = scheduler_next_job(s, d, 1000);
    j->results[0].outcome = SCHEDULER_DELIVERED;
    j->results[1].outcome = SCHEDULER_DEFERRED;
    j->results[2].outcome = SCHEDULER_FAILED;
    cr_assert(!scheduler_job_expired(s, j, 1000));
    scheduler_job_done(s, j, 1000);
    cr_assert_eq(scheduler_pending_jobs(s), 1, "only the deferred recipient remains");
    uint64_t wake = scheduler_next_wakeup(s, 1000);
    cr_assert_geq(wake, 1000 + 300000 * 85 / 100);
    cr_assert_leq(wake, 1000 + 300000 * 115 / 100);
    scheduler_run_timers(s, wake - 1);
    cr_assert_null(scheduler_next_job(s, d, wake - 1), "not before it is due");
    scheduler_run_timers(s, wake);
    struct scheduler_job *again = scheduler_next_job(s, d, wake);
    cr_assert_not_null(again);
    cr_assert_eq(again->entry->nrcpt, 1);
    cr_assert_eq(again->entry->rcpt[0], 1);
    cr_assert_eq(again->attempt, 1);
    again->results[0].outcome = SCHEDULER_DELIVERED;
    scheduler_job_done(s, again, wake);
    cr_assert_eq(scheduler_pending_jobs(s), 0);
    scheduler_free(s);
}

Test(scheduler, an_untried_job_goes_back_to_the_head_without_an_attempt)
{
    struct scheduler *s = scheduler_new(&cfg, NULL, NULL, NULL, 1);
    scheduler_add_entry(s, entry(1, "x.example", 1, 0), 0, 0, 0);
    scheduler_add_entry(s, entry(2, "x.example", 1, 0), 0, 0, 0);
    struct scheduler_dest *d = scheduler_want_connection(s, 0);
    struct scheduler_job *j = scheduler_next_job(s, d, 0);
    uint64_t qid = j->entry->msg->qid;
    scheduler_job_done(s, j, 0);   /* all PENDING: the connection died first */
    struct scheduler_job *k = scheduler_next_job(s, d, 0);
    cr_assert_eq(k->entry->msg->qid, qid);
    cr_assert_eq(k->attempt, 0);
    k->results[0].outcome = SCHEDULER_DELIVERED;
    scheduler_job_done(s, k, 0);
    scheduler_free(s);
}

Test(scheduler, expiry_is_reported_before_the_job_is_returned)
{
    cfg.max_queue_lifetime_ms = 1000;
    struct scheduler *s = scheduler_new(&cfg, NULL, NULL, NULL, 1);
    scheduler_add_entry(s, entry(1, "e.example", 1, 0), 0, 0, 500);
    struct scheduler_dest *d = scheduler_want_connection(s, 500);
    struct scheduler_job *j = scheduler_next_job(s, d, 500);
    cr_assert(!scheduler_job_expired(s, j, 500));
    cr_assert(scheduler_job_expired(s, j, 1000));
    j->results[0].outcome = SCHEDULER_DEFERRED;
    scheduler_job_done(s, j, 1000);
    cr_assert_eq(scheduler_pending_jobs(s), 0, "expired recipients are not retried");
    scheduler_free(s);
}

Test(scheduler, message_rate_limits_jobs_per_destination)
{
    cfg.max_message_rate = 2;   /* per second */
    struct scheduler *s = scheduler_new(&cfg, NULL, NULL, NULL, 1);
    for (uint64_t q = 1; q <= 5; q++)
        scheduler_add_entry(s, entry(q, "r.example", 1, 0), 0, 0, 0);
    struct scheduler_dest *d = scheduler_want_connection(s, 0);
    int got = 0;
    struct scheduler_job *j;
    while ((j = scheduler_next_job(s, d, 0)) != NULL) {
        j->results[0].outcome = SCHEDULER_DELIVERED;
        scheduler_job_done(s, j, 0);
        got++;
    }
    cr_assert_eq(got, 2, "a burst of one second's worth");
    uint64_t wake = scheduler_next_wakeup(s, 0);
    cr_assert_gt(wake, 0);
    cr_assert_leq(wake, 1000);
    scheduler_free(s);
}
