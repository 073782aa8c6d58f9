/* queue: committed messages split by destination domain, sharded by owner. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "queue.h"

static struct envelope
make_env(const char *const *rcpts, size_t n)
{
    struct envelope env;
    memset(&env, 0, sizeof env);
    env.sender = xstrdup("a@example.org");
    env.nrcpt = (uint32_t)n;
    env.rcpts = xcalloc(n, sizeof *env.rcpts);
    for (size_t i = 0; i < n; i++)
        env.rcpts[i].addr = xstrdup(rcpts[i]);
    return env;
}

struct collected {
    struct queue_entry *e[8];
    size_t n;
};

static void
collect(void *arg, struct queue_entry *e)
{
    struct collected *c = arg;
    c->e[c->n++] = e;
}

Test(queue, split_groups_recipients_by_case_insensitive_domain)
{
    const char *r[] = { "x@One.Example", "y@two.example", "z@one.example.", "postmaster" };
    struct envelope env = make_env(r, 4);
    struct queue_msg *m = queue_msg_new(42, &env, 100, 0, NULL, 0, NULL);
    struct collected c = { .n = 0 };
    cr_assert_eq(queue_msg_split(m, collect, &c), 3);
    cr_assert_str_eq(c.e[0]->domain, "one.example");
    cr_assert_eq(c.e[0]->nrcpt, 2);
    cr_assert_eq(c.e[0]->rcpt[0], 0);
    cr_assert_eq(c.e[0]->rcpt[1], 2);
    cr_assert_str_eq(c.e[1]->domain, "two.example");
    cr_assert_eq(c.e[1]->nrcpt, 1);
    cr_assert_str_eq(c.e[2]->domain, "", "a bare local part has no domain");
    cr_assert_eq(atomic_load(&m->refs), 4, "one reference per entry plus ours");
    queue_msg_put(m);
    for (size_t i = 0; i < c.n; i++)
        queue_entry_free(c.e[i]);
}

Test(queue, split_skips_recipients_already_final)
{
    const char *r[] = { "x@a.example", "y@b.example", "z@b.example" };
    struct envelope env = make_env(r, 3);
    env.rcpts[0].state = RCPT_DELIVERED;
    env.rcpts[1].state = RCPT_FAILED;
    struct queue_msg *m = queue_msg_new(7, &env, 10, 0, NULL, 0, NULL);
    struct collected c = { .n = 0 };
    cr_assert_eq(queue_msg_split(m, collect, &c), 1);
    cr_assert_str_eq(c.e[0]->domain, "b.example");
    cr_assert_eq(c.e[0]->nrcpt, 1);
    cr_assert_eq(c.e[0]->rcpt[0], 2);
    queue_msg_put(m);
    queue_entry_free(c.e[0]);
}

Test(queue, owner_is_stable_and_case_insensitive)
{
    cr_assert_eq(queue_domain_owner("Example.COM", 7), queue_domain_owner("example.com", 7));
    unsigned seen[4] = { 0 };
    char name[32];
    for (int i = 0; i < 400; i++) {
        snprintf(name, sizeof name, "d%d.example", i);
        unsigned o = queue_domain_owner(name, 4);
        cr_assert_lt(o, 4);
        seen[o]++;
    }
    for (int i = 0; i < 4; i++)
        cr_assert_gt(seen[i], 50, "domains spread over workers (%u on %d)", seen[i], i);
}
