/*
 * queue - committed messages in memory and their split by destination.
 *
 * Any thread: struct queue_msg is shared and reference counted (atomic); the
 * entries queue_msg_split emits go to the owning worker's scheduler.
 */
#include "queue.h"

#include <string.h>

#include "alloc.h"


struct queue_msg *
queue_msg_new(uint64_t qid, struct envelope *env, uint64_t body_len, uint32_t body_flags,
              struct spool_extent *body, uint32_t nbody, struct spool_holdset *holds)
{
    struct queue_msg *m = xcalloc(1, sizeof *m);
    if (holds != NULL)
        spool_holdset_move(&m->holds, holds);
    m->qid = qid;
    m->env = *env;
    memset(env, 0, sizeof *env);
    m->body_len = body_len;
    m->body_flags = body_flags;
    m->body = body;
    m->nbody = nbody;
    unsigned open = 0;
    for (uint32_t i = 0; i < m->env.nrcpt; i++)
        open += m->env.rcpts[i].state != RCPT_DELIVERED && m->env.rcpts[i].state != RCPT_FAILED;
    atomic_init(&m->open_rcpts, open);
    atomic_init(&m->refs, 1);
    return m;
}

void
queue_msg_get(struct queue_msg *m)
{
    atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
}

void
queue_msg_put(struct queue_msg *m)
{
    if (atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) == 1) {
        envelope_free(&m->env);
        if (m->body != NULL)
            spool_extents_release(m->body, m->nbody);
        spool_holdset_release(&m->holds);
        xfree(m);
    }
}

/* FNV-1a over the domain: stable across runs, so a restart keeps owners. */
unsigned
queue_domain_owner(const char *domain, unsigned nworkers)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)domain; *p; p++) {
        h ^= (*p >= 'A' && *p <= 'Z') ? (unsigned)(*p + 32) : *p;
        h *= 16777619u;
    }
    return nworkers ? h % nworkers : 0;
}

/* The lowercased domain of an address, or "" for a bare local part. */
static void
queue_rcpt_domain(const char *addr, char *out, size_t size)
{
    const char *at = strrchr(addr, '@');
    size_t k = 0;
    if (at != NULL) {
        for (const char *p = at + 1; *p && k < size - 1; p++)
            out[k++] = (*p >= 'A' && *p <= 'Z') ? (char)(*p + 32) : *p;
        if (k > 0 && out[k - 1] == '.')
            k--;
    }
    out[k] = '\0';
}

size_t
queue_msg_split(struct queue_msg *m, void (*emit)(void *arg, struct queue_entry *e),
                void *arg)
{
    uint32_t n = m->env.nrcpt;
    char (*domains)[256] = xmalloc((size_t)(n ? n : 1) * sizeof *domains);
    uint8_t *taken = xcalloc(n ? n : 1, 1);
    uint32_t *idx = xmalloc((size_t)(n ? n : 1) * sizeof *idx);
    size_t emitted = 0;

    for (uint32_t i = 0; i < n; i++)
        queue_rcpt_domain(m->env.rcpts[i].addr, domains[i], sizeof domains[i]);
    for (uint32_t i = 0; i < n; i++) {
        uint8_t st = m->env.rcpts[i].state;
        if (taken[i] || st == RCPT_DELIVERED || st == RCPT_FAILED)
            continue;
        uint32_t k = 0;
        for (uint32_t j = i; j < n; j++) {
            uint8_t sj = m->env.rcpts[j].state;
            if (!taken[j] && sj != RCPT_DELIVERED && sj != RCPT_FAILED
                && strcmp(domains[i], domains[j]) == 0) {
                taken[j] = 1;
                idx[k++] = j;
            }
        }
        size_t dlen = strlen(domains[i]);
        struct queue_entry *e = xcalloc(1, sizeof *e + dlen + 1);
        memcpy(e->domain, domains[i], dlen + 1);
        e->nrcpt = k;
        e->rcpt = xmemdup(idx, (size_t)k * sizeof *idx);
        queue_msg_get(m);
        e->msg = m;
        emit(arg, e);
        emitted++;
    }
    xfree(idx);
    xfree(taken);
    xfree(domains);
    return emitted;
}

void
queue_entry_free(struct queue_entry *e)
{
    queue_msg_put(e->msg);
    xfree(e->rcpt);
    xfree(e);
}
