/*
 * handoff - Vyukov bounded MPMC queue used as MPSC.
 *
 * Each slot holds a sequence number. A producer claims position pos with a
 * CAS on tail when slot[pos].seq == pos, stores the item, then publishes by
 * setting seq = pos + 1 (release). The consumer takes slot[head] when its seq
 * == head + 1 (acquire), then frees it for the next lap with seq = head + cap.
 */
#include "handoff.h"

#include <errno.h>
#include <stdatomic.h>

#include "alloc.h"

struct handoff_slot {
    _Atomic size_t seq;
    void *item;
};

struct handoff {
    size_t mask;
    struct handoff_slot *slots;
    _Alignas(64) _Atomic size_t tail;   /* producers */
    _Alignas(64) _Atomic size_t head;   /* the consumer */
};

struct handoff *
handoff_new(size_t capacity)
{
    size_t cap = 2;
    while (cap < capacity)
        cap <<= 1;
    struct handoff *h = xcalloc(1, sizeof *h);
    h->mask = cap - 1;
    h->slots = xcalloc(cap, sizeof *h->slots);
    for (size_t i = 0; i < cap; i++)
        atomic_store_explicit(&h->slots[i].seq, i, memory_order_relaxed);
    atomic_store(&h->tail, 0);
    atomic_store(&h->head, 0);
    return h;
}

struct handoff *
handoff_free(struct handoff *h)
{
    if (h != NULL) {
        xfree(h->slots);
        xfree(h);
    }
    return NULL;
}

int
handoff_push(struct handoff *h, void *item)
{
    size_t pos = atomic_load_explicit(&h->tail, memory_order_relaxed);
    for (;;) {
        struct handoff_slot *slot = &h->slots[pos & h->mask];
        size_t seq = atomic_load_explicit(&slot->seq, memory_order_acquire);
        intptr_t dif = (intptr_t)seq - (intptr_t)pos;
        if (dif == 0) {
            if (atomic_compare_exchange_weak_explicit(&h->tail, &pos, pos + 1,
                                                      memory_order_relaxed,
                                                      memory_order_relaxed)) {
                slot->item = item;
                atomic_store_explicit(&slot->seq, pos + 1, memory_order_release);
                return 0;
            }
        } else if (dif < 0) {
            return -EAGAIN;   /* full: the consumer has not freed this slot */
        } else {
            pos = atomic_load_explicit(&h->tail, memory_order_relaxed);
        }
    }
}

void *
handoff_pop(struct handoff *h)
{
    size_t pos = atomic_load_explicit(&h->head, memory_order_relaxed);
    struct handoff_slot *slot = &h->slots[pos & h->mask];
    size_t seq = atomic_load_explicit(&slot->seq, memory_order_acquire);
    if ((intptr_t)seq - (intptr_t)(pos + 1) < 0)
        return NULL;
    void *item = slot->item;
    atomic_store_explicit(&h->head, pos + 1, memory_order_relaxed);
    atomic_store_explicit(&slot->seq, pos + h->mask + 1, memory_order_release);
    return item;
}

size_t
handoff_count(const struct handoff *h)
{
    size_t t = atomic_load_explicit(&h->tail, memory_order_relaxed);
    size_t hd = atomic_load_explicit(&h->head, memory_order_relaxed);
    return t - hd;
}
