/* handoff: the lock-free MPSC ring between workers. */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

#include "handoff.h"

Test(handoff, pops_in_push_order_and_reports_empty)
{
    struct handoff *h = handoff_new(8);
    cr_assert_null(handoff_pop(h));
    for (uintptr_t i = 1; i <= 5; i++)
        cr_assert_eq(handoff_push(h, (void *)i), 0);
    cr_assert_eq(handoff_count(h), 5);
    for (uintptr_t i = 1; i <= 5; i++)
        cr_assert_eq((uintptr_t)handoff_pop(h), i);
    cr_assert_null(handoff_pop(h));
    handoff_free(h);
}

Test(handoff, full_ring_refuses_with_eagain_and_loses_nothing)
{
    struct handoff *h = handoff_new(4);
    for (uintptr_t i = 1; i <= 4; i++)
        cr_assert_eq(handoff_push(h, (void *)i), 0);
    cr_assert_eq(handoff_push(h, (void *)99), -EAGAIN);
    cr_assert_eq((uintptr_t)handoff_pop(h), 1);
    cr_assert_eq(handoff_push(h, (void *)5), 0, "a freed slot is reused");
    for (uintptr_t i = 2; i <= 5; i++)
        cr_assert_eq((uintptr_t)handoff_pop(h), i);
    cr_assert_null(handoff_pop(h));
    handoff_free(h);
}

#define PRODUCERS 4
#define PER_PRODUCER 200000

struct producer {
    struct handoff *h;
    uintptr_t id;
};

static void *
producer_main(void *arg)
{
    struct producer *p = arg;
    for (uintptr_t i = 0; i < PER_PRODUCER; i++) {
        /* item = producer id in the top bits, sequence below; never 0 */
        void *item = (void *)((p->id << 32) | (i + 1));
        while (handoff_push(p->h, item) != 0)
            sched_yield();
    }
    return NULL;
}

/* Several threads push concurrently while one pops: every item arrives
 * exactly once, and each producer's items arrive in its order. */
Test(handoff, concurrent_producers_deliver_every_item_once_in_order, .timeout = 60)
{
    struct handoff *h = handoff_new(1024);
    pthread_t t[PRODUCERS];
    struct producer p[PRODUCERS];
    for (uintptr_t i = 0; i < PRODUCERS; i++) {
        p[i] = (struct producer){ h, i + 1 };
        pthread_create(&t[i], NULL, producer_main, &p[i]);
    }
    uint64_t next[PRODUCERS + 1] = { 0 };
    size_t got = 0;
    while (got < (size_t)PRODUCERS * PER_PRODUCER) {
        void *item = handoff_pop(h);
        if (item == NULL) {
            sched_yield();
            continue;
        }
        uintptr_t v = (uintptr_t)item, id = v >> 32, seq = v & 0xffffffffu;
        cr_assert(id >= 1 && id <= PRODUCERS);
        cr_assert_eq(seq, next[id] + 1, "producer %lu: got %lu after %lu",
                     (unsigned long)id, (unsigned long)seq, (unsigned long)next[id]);
        next[id] = seq;
        got++;
    }
    for (int i = 0; i < PRODUCERS; i++)
        pthread_join(t[i], NULL);
    cr_assert_null(handoff_pop(h));
    handoff_free(h);
}
