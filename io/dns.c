/*
 * dns - a worker's resolver: c-ares on the worker's io_uring, MX resolution
 * and an answer cache.
 *
 * Per-worker, never shared; no thread, no blocking call. c-ares owns its
 * sockets and tells us what it waits for through the sock-state callback; we
 * keep one single-shot POLL_ADD per socket and one TIMEOUT for its timers,
 * and hand every completion back to c-ares (ares_process_fd). The decisions
 * (MX order, null MX, what an rcode means) are core/mx.c's.
 *
 * Objects whose address travels in user_data (struct dns_sock, struct
 * dns_timer, and the NOP and IGNORE objects inside struct dns) start with a
 * struct dns_obj naming their kind, and are 16-byte aligned for ud_pack.
 *
 * Invariants:
 *  - A dns_sock has at most one POLL_ADD in flight (armed). When c-ares
 *    closes its socket, the object leaves the live list (the fd number may
 *    come back at once for a new socket, which gets a new object) and is
 *    freed only when its poll's completion has arrived: a POLL_REMOVE asks
 *    for that completion, whose own completion goes to the IGNORE object.
 *    (An armed poll holds a reference to the file, so the close alone would
 *    never complete it.) A completion therefore never finds freed memory.
 *  - Timers are objects too: the current one is r->timer; a replaced one
 *    (cancelled because c-ares needs an earlier wake-up) stays allocated as
 *    stale until its completion arrives, and is then freed unprocessed.
 *    A timer firing early is harmless: c-ares finds nothing due and we re-arm.
 *  - A cache entry is a question (type, name). While its query is in flight
 *    it is pending and collects waiters, so concurrent lookups of one name
 *    send one query. Answered, it lives until its TTL (clamped, see mx.h)
 *    in an LRU of at most DNS_CACHE_MAX entries. Temporary failures are not
 *    cached. Pending entries, and an entry whose waiters are being told, are
 *    never evicted.
 *  - User callbacks run only from the done queue, drained at the end of
 *    dns_on_cqe, never inside c-ares or inside dns_resolve_*.
 *
 * Hazards: c-ares calls back from inside ares_query/ares_process_fd/
 * ares_destroy; every callback here tolerates that (sock-state only records,
 * query callbacks may start further queries, which c-ares allows), and every
 * entry point ends with dns_sync, which arms what the callbacks asked for.
 */
#include "dns.h"

#include <ares.h>
#include <arpa/nameser.h>
#include <assert.h>
#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "alloc.h"
#include "log.h"
#include "worker.h"

/* Per query: timeout of the first try, doubled per round (c-ares), and
 * tries per server: with one server 2 s + 4 s before a TEMPORARY. */
#define DNS_TIMEOUT_MS 2000
#define DNS_TRIES 2
#define DNS_CACHE_MAX 8192
#define DNS_BUCKETS 4096            /* power of two */
#define DNS_MAX_RECORDS 64          /* MX records read from one answer */
#define DNS_MAX_ADDRTTLS 32         /* A/AAAA records read from one answer */

enum dns_obj_kind {
    DNS_OBJ_SOCK = 1,
    DNS_OBJ_TIMER,
    DNS_OBJ_NOP,        /* delivers answers known at once */
    DNS_OBJ_IGNORE,     /* POLL_REMOVE / TIMEOUT_REMOVE completions */
};

struct dns_obj {
    _Alignas(16) unsigned char kind;
};

struct dns_sock {
    struct dns_obj obj;
    int fd;
    bool want_read, want_write;     /* what c-ares asked for last */
    bool armed;                     /* a POLL_ADD is in flight */
    bool cancel_sent;               /* a POLL_REMOVE for it is in flight */
    bool closed;                    /* c-ares closed fd: free at the completion */
    unsigned armed_mask;
    struct dns_sock *next;          /* r->socks (live) */
    struct dns_sock *zprev, *znext; /* r->zombies (closed, poll in flight) */
};

struct dns_timer {
    struct dns_obj obj;
    struct __kernel_timespec ts;
    uint64_t deadline_ms;
    struct dns_timer *prev, *next;  /* r->timers: all in flight */
};

struct dns_lookup;

/* A lookup waiting for a cache entry; slot -1 is the MX question, 2i and
 * 2i+1 the A and AAAA questions of host i. */
struct dns_waiter {
    struct dns_waiter *next;
    struct dns_lookup *lk;
    int slot;
};

struct dns_entry {
    struct dns *r;
    struct dns_entry *hnext;            /* hash chain */
    struct dns_entry *lprev, *lnext;    /* LRU (answered entries only) */
    int qtype;                          /* ns_t_mx, ns_t_a, ns_t_aaaa */
    bool ready;
    bool notifying;
    enum mx_answer answer;
    uint64_t expires_ms;
    struct mx_record *mx;               /* answer for ns_t_mx */
    size_t nmx;
    struct netaddr *addrs;              /* answer for ns_t_a / ns_t_aaaa */
    size_t naddrs;
    struct dns_waiter *waiters;
    char name[MX_NAME_MAX];
};

struct dns_lookup {
    struct dns_lookup *prev, *next;     /* r->lookups: not yet delivered */
    struct dns_lookup *done_next;       /* r->done queue */
    dns_cb *cb;
    void *arg;
    bool nexthop;
    bool decided;                       /* res already holds a failure */
    unsigned pending;                   /* questions out, plus a guard */
    struct mx_result res;
    enum mx_answer (*answers)[2];       /* per host: A, AAAA */
    char domain[MX_NAME_MAX];
};

struct dns {
    struct dns_obj nop;
    struct dns_obj ignore;
    ares_channel ch;
    dns_get_sqe_fn *get_sqe;
    void *sqe_arg;
    uint64_t rng;
    bool freeing;
    bool nop_armed;
    unsigned dispatching;
    uint64_t now_ms;                    /* monotonic; the cache's clock */
    struct dns_sock *socks;
    struct dns_sock *zombies;
    struct dns_timer *timer;            /* the current one, or NULL */
    struct dns_timer *timers;
    struct dns_lookup *lookups;
    size_t nlookups;
    struct dns_lookup *done_head, *done_tail;
    struct dns_entry *buckets[DNS_BUCKETS];
    struct dns_entry *lru_head, *lru_tail;  /* most recent first */
    size_t nready;
};

static void dns_sync(struct dns *r);
static void dns_lookup_answer(struct dns *r, struct dns_lookup *lk, int slot,
                              const struct dns_entry *e);

static uint64_t
dns_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static const char *
dns_type_name(int qtype)
{
    return qtype == ns_t_mx ? "MX" : qtype == ns_t_a ? "A" : "AAAA";
}

/* --- the ring: polls, timer, NOP --------------------------------------- */

/* user_data is set after the prep helper, which may not preserve it. */
static void
dns_tag(struct io_uring_sqe *sqe, void *obj)
{
    assert(((uintptr_t)obj & 0xf) == 0);   /* ud_pack keeps the op in 4 bits */
    io_uring_sqe_set_data64(sqe, ud_pack(OP_DNS, obj));
}

/* Asks the kernel to complete the poll armed for s (its completion then
 * comes, -ECANCELED or with events); the remove's own goes to IGNORE. */
static void
dns_poll_cancel(struct dns *r, struct dns_sock *s)
{
    struct io_uring_sqe *sqe = r->get_sqe(r->sqe_arg);
    io_uring_prep_poll_remove(sqe, ud_pack(OP_DNS, s));
    dns_tag(sqe, &r->ignore);
    s->cancel_sent = true;
}

static void
dns_sock_free(struct dns *r, struct dns_sock *s)
{
    if (s->closed) {
        if (s->zprev != NULL)
            s->zprev->znext = s->znext;
        else if (r->zombies == s)
            r->zombies = s->znext;
        if (s->znext != NULL)
            s->znext->zprev = s->zprev;
    }
    xfree(s);
}

/* c-ares's sock-state callback: records what it waits for; dns_sync arms. */
static void
dns_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
    struct dns *r = data;
    struct dns_sock **pp = &r->socks, *s;
    while ((s = *pp) != NULL && s->fd != fd)
        pp = &s->next;
    if (readable || writable) {
        if (s == NULL) {
            s = xcalloc(1, sizeof *s);
            s->obj.kind = DNS_OBJ_SOCK;
            s->fd = fd;
            s->next = r->socks;
            r->socks = s;
        }
        s->want_read = readable != 0;
        s->want_write = writable != 0;
        return;
    }
    if (s == NULL)
        return;
    /* Closed: off the live list now, since the number may be reused. */
    *pp = s->next;
    s->closed = true;
    s->want_read = s->want_write = false;
    if (!s->armed || r->freeing) {
        xfree(s);
        return;
    }
    s->zprev = NULL;
    s->znext = r->zombies;
    if (r->zombies != NULL)
        r->zombies->zprev = s;
    r->zombies = s;
    if (!s->cancel_sent)
        dns_poll_cancel(r, s);
}

static void
dns_timer_unlink(struct dns *r, struct dns_timer *t)
{
    if (t->prev != NULL)
        t->prev->next = t->next;
    else
        r->timers = t->next;
    if (t->next != NULL)
        t->next->prev = t->prev;
}

/* Keeps one timer armed no later than c-ares's next timeout. */
static void
dns_sync_timer(struct dns *r)
{
    struct timeval tvbuf, *tv = ares_timeout(r->ch, NULL, &tvbuf);
    if (tv == NULL)
        return;     /* nothing pending; an armed timer fires and finds nothing */
    uint64_t ms = (uint64_t)tv->tv_sec * 1000 + ((uint64_t)tv->tv_usec + 999) / 1000;
    if (ms == 0)
        ms = 1;
    uint64_t deadline = dns_mono_ms() + ms;
    if (r->timer != NULL) {
        if (r->timer->deadline_ms <= deadline)
            return;
        struct io_uring_sqe *sqe = r->get_sqe(r->sqe_arg);
        io_uring_prep_timeout_remove(sqe, ud_pack(OP_DNS, r->timer), 0);
        dns_tag(sqe, &r->ignore);
        r->timer = NULL;    /* stale: freed at its completion */
    }
    struct dns_timer *t = xcalloc(1, sizeof *t);
    t->obj.kind = DNS_OBJ_TIMER;
    t->deadline_ms = deadline;
    t->ts.tv_sec = (long long)(ms / 1000);
    t->ts.tv_nsec = (long long)(ms % 1000) * 1000000;
    t->next = r->timers;
    if (r->timers != NULL)
        r->timers->prev = t;
    r->timers = t;
    r->timer = t;
    struct io_uring_sqe *sqe = r->get_sqe(r->sqe_arg);
    io_uring_prep_timeout(sqe, &t->ts, 0, 0);
    dns_tag(sqe, t);
}

/* Arms what c-ares waits for: a poll per socket, the timer, the NOP. */
static void
dns_sync(struct dns *r)
{
    if (r->freeing)
        return;
    for (struct dns_sock *s = r->socks; s != NULL; s = s->next) {
        unsigned mask = (s->want_read ? POLLIN : 0) | (s->want_write ? POLLOUT : 0);
        if (!s->armed && mask != 0) {
            struct io_uring_sqe *sqe = r->get_sqe(r->sqe_arg);
            io_uring_prep_poll_add(sqe, s->fd, mask);
            dns_tag(sqe, s);
            s->armed = true;
            s->armed_mask = mask;
        } else if (s->armed && (mask & ~s->armed_mask) != 0 && !s->cancel_sent) {
            /* c-ares now also wants to write (a TCP query queued): cancel
             * and re-arm with the wider mask when the completion comes. A
             * narrower wish needs nothing: an extra wake-up is harmless. */
            dns_poll_cancel(r, s);
        }
    }
    dns_sync_timer(r);
    if (r->done_head != NULL && r->dispatching == 0 && !r->nop_armed) {
        struct io_uring_sqe *sqe = r->get_sqe(r->sqe_arg);
        io_uring_prep_nop(sqe);
        dns_tag(sqe, &r->nop);
        r->nop_armed = true;
    }
}

/* --- lookups ----------------------------------------------------------- */

/* Orders each host's addresses: IPv4 then IPv6, each family shuffled. */
static void
dns_order_addrs(struct dns *r, struct mx_host *h)
{
    size_t v4 = 0;
    for (size_t i = 0; i < h->naddrs; i++)
        if (h->addrs[i].family == AF_INET) {
            struct netaddr tmp = h->addrs[v4];
            h->addrs[v4++] = h->addrs[i];
            h->addrs[i] = tmp;
        }
    mx_shuffle_addrs(h->addrs, v4, &r->rng);
    mx_shuffle_addrs(h->addrs + v4, h->naddrs - v4, &r->rng);
}

/* Every question answered: decide and queue the callback. */
static void
dns_lookup_finish(struct dns *r, struct dns_lookup *lk)
{
    if (!lk->decided) {
        for (size_t i = 0; i < lk->res.nhosts; i++)
            dns_order_addrs(r, &lk->res.hosts[i]);
        mx_result_finish(&lk->res, (const enum mx_answer(*)[2])lk->answers, lk->domain,
                         lk->nexthop);
    }
    lk->done_next = NULL;
    if (r->done_tail != NULL)
        r->done_tail->done_next = lk;
    else
        r->done_head = lk;
    r->done_tail = lk;
}

static void
dns_lookup_release(struct dns *r, struct dns_lookup *lk)
{
    if (--lk->pending == 0)
        dns_lookup_finish(r, lk);
}

static void
dns_lookup_fail(struct dns_lookup *lk, enum mx_status status, const char *dsn, const char *what)
{
    mx_result_fail(&lk->res, status, dsn, "%s", what);
    lk->decided = true;
}

static void dns_ask(struct dns *r, struct dns_lookup *lk, int qtype, const char *name, int slot);

/* Adds a host to a lookup: an address (bracketed, or bare if bare_ok) is
 * used as it is, a name is asked for. */
static void
dns_lookup_add_host(struct dns *r, struct dns_lookup *lk, const char *name, unsigned pref,
                    bool bare_ok)
{
    size_t i = lk->res.nhosts;
    struct mx_host *h = mx_result_add_host(&lk->res, name, pref);
    lk->answers = xrealloc(lk->answers, (i + 1) * sizeof *lk->answers);
    struct netaddr a;
    if (mx_parse_literal(name, bare_ok, &a) == 1) {
        mx_host_add_addr(h, &a);
        lk->answers[i][0] = lk->answers[i][1] = MX_ANSWER_RECORDS;
        return;
    }
    lk->answers[i][0] = lk->answers[i][1] = MX_ANSWER_ERROR;
    dns_ask(r, lk, ns_t_a, name, (int)(2 * i));
    dns_ask(r, lk, ns_t_aaaa, name, (int)(2 * i + 1));
}

/* The MX answer of a lookup: fail, go implicit, or ask for each host. */
static void
dns_lookup_on_mx(struct dns *r, struct dns_lookup *lk, const struct dns_entry *e)
{
    const char *dsn;
    enum mx_status st = mx_decide(e->answer, &dsn);
    if (st != MX_OK) {
        mx_result_fail(&lk->res, st, dsn, "MX lookup for %.100s: %s", lk->domain,
                       mx_answer_text(e->answer));
        lk->decided = true;
        return;
    }
    if (e->answer == MX_ANSWER_NODATA || e->nmx == 0) {
        /* RFC 5321 §5.1: "If an empty list of MXs is returned, the address is
         * treated as if it was associated with an implicit MX RR, with a
         * preference of 0, pointing to that host." */
        lk->res.implicit = true;
        dns_lookup_add_host(r, lk, lk->domain, 0, false);
        return;
    }
    if (mx_is_null(e->mx, e->nmx)) {
        /* RFC 7505 §4.2: "SMTP clients ... SHOULD NOT attempt delivery ...
         * 550 5.1.10" for a domain advertising a null MX. */
        mx_result_fail(&lk->res, MX_PERMANENT, "5.1.10", "%.100s does not accept mail (null MX)",
                       lk->domain);
        lk->decided = true;
        return;
    }
    struct mx_record *recs = xmemdup(e->mx, e->nmx * sizeof *recs);
    size_t n = mx_order(recs, e->nmx, &r->rng);
    for (size_t i = 0; i < n; i++) {
        struct netaddr a;
        if (mx_parse_literal(recs[i].name, true, &a) == 1)
            log_info("dns: numeric domain name in MX record of %s: %s (used as an address)",
                     lk->domain, recs[i].name);
        dns_lookup_add_host(r, lk, recs[i].name, recs[i].preference, true);
    }
    xfree(recs);
}

/* One question of a lookup has its answer (e is only read). */
static void
dns_lookup_answer(struct dns *r, struct dns_lookup *lk, int slot, const struct dns_entry *e)
{
    if (slot < 0) {
        dns_lookup_on_mx(r, lk, e);
    } else {
        size_t i = (size_t)slot / 2;
        lk->answers[i][slot % 2] = e->answer;
        for (size_t k = 0; k < e->naddrs; k++)
            mx_host_add_addr(&lk->res.hosts[i], &e->addrs[k]);
    }
    dns_lookup_release(r, lk);
}

static struct dns_lookup *
dns_lookup_new(struct dns *r, dns_cb *cb, void *arg)
{
    struct dns_lookup *lk = xcalloc(1, sizeof *lk);
    lk->cb = cb;
    lk->arg = arg;
    lk->pending = 1;    /* guard: released when the first questions are out */
    lk->next = r->lookups;
    if (r->lookups != NULL)
        r->lookups->prev = lk;
    r->lookups = lk;
    r->nlookups++;
    return lk;
}

static void
dns_lookup_free(struct dns *r, struct dns_lookup *lk)
{
    if (lk->prev != NULL)
        lk->prev->next = lk->next;
    else
        r->lookups = lk->next;
    if (lk->next != NULL)
        lk->next->prev = lk->prev;
    r->nlookups--;
    mx_result_clear(&lk->res);
    xfree(lk->answers);
    xfree(lk);
}

/* Runs the callbacks of finished lookups, in the order they finished. */
static void
dns_deliver(struct dns *r)
{
    while (r->done_head != NULL) {
        struct dns_lookup *lk = r->done_head;
        r->done_head = lk->done_next;
        if (r->done_head == NULL)
            r->done_tail = NULL;
        lk->cb(lk->arg, &lk->res);
        dns_lookup_free(r, lk);
    }
}

/* --- cache --------------------------------------------------------------- */

static size_t
dns_hash(int qtype, const char *name)
{
    uint32_t h = 2166136261u ^ (uint32_t)qtype;     /* FNV-1a */
    for (const char *p = name; *p; p++)
        h = (h ^ (uint8_t)*p) * 16777619u;
    return h & (DNS_BUCKETS - 1);
}

static void
dns_lru_unlink(struct dns *r, struct dns_entry *e)
{
    if (e->lprev != NULL)
        e->lprev->lnext = e->lnext;
    else
        r->lru_head = e->lnext;
    if (e->lnext != NULL)
        e->lnext->lprev = e->lprev;
    else
        r->lru_tail = e->lprev;
    e->lprev = e->lnext = NULL;
    r->nready--;
}

static void
dns_lru_push(struct dns *r, struct dns_entry *e)
{
    e->lprev = NULL;
    e->lnext = r->lru_head;
    if (r->lru_head != NULL)
        r->lru_head->lprev = e;
    else
        r->lru_tail = e;
    r->lru_head = e;
    r->nready++;
}

static void
dns_entry_unhash(struct dns *r, struct dns_entry *e)
{
    struct dns_entry **pp = &r->buckets[dns_hash(e->qtype, e->name)];
    while (*pp != NULL && *pp != e)
        pp = &(*pp)->hnext;
    if (*pp == e)
        *pp = e->hnext;
}

static void
dns_entry_free(struct dns_entry *e)
{
    while (e->waiters != NULL) {
        struct dns_waiter *w = e->waiters;
        e->waiters = w->next;
        xfree(w);
    }
    xfree(e->mx);
    xfree(e->addrs);
    xfree(e);
}

/* Drops least recently used answers while over the bound. */
static void
dns_cache_trim(struct dns *r)
{
    struct dns_entry *e = r->lru_tail;
    while (r->nready > DNS_CACHE_MAX && e != NULL) {
        struct dns_entry *prev = e->lprev;
        if (!e->notifying) {
            dns_lru_unlink(r, e);
            dns_entry_unhash(r, e);
            dns_entry_free(e);
        }
        e = prev;
    }
}

static enum mx_answer
dns_answer_of(int status)
{
    switch (status) {
    case ARES_SUCCESS:      return MX_ANSWER_RECORDS;
    case ARES_ENODATA:      return MX_ANSWER_NODATA;
    case ARES_ENOTFOUND:    return MX_ANSWER_NXDOMAIN;
    case ARES_EBADNAME:     return MX_ANSWER_BADNAME;
    case ARES_ESERVFAIL:    return MX_ANSWER_SERVFAIL;
    case ARES_EREFUSED:     return MX_ANSWER_REFUSED;
    case ARES_ETIMEOUT:     return MX_ANSWER_TIMEOUT;
    case ARES_ECONNREFUSED: return MX_ANSWER_UNREACHABLE;
    case ARES_EFORMERR:
    case ARES_ENOTIMP:
    case ARES_EBADRESP:     return MX_ANSWER_BADRESP;
    default:                return MX_ANSWER_ERROR;
    }
}

/* Reads the records of a successful answer into e; returns the answer. */
static enum mx_answer
dns_parse(struct dns_entry *e, const unsigned char *abuf, int alen)
{
    int st;
    if (e->qtype == ns_t_mx) {
        struct ares_mx_reply *mx = NULL;
        st = ares_parse_mx_reply(abuf, alen, &mx);
        if (st == ARES_SUCCESS) {
            e->mx = xcalloc(DNS_MAX_RECORDS, sizeof *e->mx);
            for (struct ares_mx_reply *m = mx; m != NULL && e->nmx < DNS_MAX_RECORDS;
                 m = m->next) {
                /* c-ares gives the root as ""; an overlong name cannot be a
                 * host, so it is kept empty-but-invalid and mx_order drops it. */
                struct mx_record *rec = &e->mx[e->nmx++];
                rec->preference = m->priority;
                if (strlen(m->host) < sizeof rec->name)
                    memcpy(rec->name, m->host, strlen(m->host) + 1);
                else
                    snprintf(rec->name, sizeof rec->name, "%s", "-invalid-");
            }
            ares_free_data(mx);
        }
    } else if (e->qtype == ns_t_a) {
        struct ares_addrttl at[DNS_MAX_ADDRTTLS];
        int n = DNS_MAX_ADDRTTLS;
        st = ares_parse_a_reply(abuf, alen, NULL, at, &n);
        if (st == ARES_SUCCESS && n == 0)
            st = ARES_ENODATA;
        if (st == ARES_SUCCESS) {
            e->addrs = xcalloc((size_t)n, sizeof *e->addrs);
            for (int i = 0; i < n; i++) {
                e->addrs[i].family = AF_INET;
                memcpy(e->addrs[i].bytes, &at[i].ipaddr, 4);
            }
            e->naddrs = (size_t)n;
        }
    } else {
        struct ares_addr6ttl at[DNS_MAX_ADDRTTLS];
        int n = DNS_MAX_ADDRTTLS;
        st = ares_parse_aaaa_reply(abuf, alen, NULL, at, &n);
        if (st == ARES_SUCCESS && n == 0)
            st = ARES_ENODATA;
        if (st == ARES_SUCCESS) {
            e->addrs = xcalloc((size_t)n, sizeof *e->addrs);
            for (int i = 0; i < n; i++) {
                struct sockaddr_in6 sa;
                memset(&sa, 0, sizeof sa);
                sa.sin6_family = AF_INET6;
                memcpy(&sa.sin6_addr, &at[i].ip6addr, 16);
                netaddr_from_sockaddr(&e->addrs[i], (struct sockaddr *)&sa);
            }
            e->naddrs = (size_t)n;
        }
    }
    /* NOERROR with only CNAMEs, or only records of other types: NODATA. */
    if (st == ARES_ENODATA)
        return MX_ANSWER_NODATA;
    return st == ARES_SUCCESS ? MX_ANSWER_RECORDS : MX_ANSWER_BADRESP;
}

/* c-ares's answer to one question: cache it and tell the waiters. */
static void
dns_answer_cb(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    struct dns_entry *e = arg;
    struct dns *r = e->r;
    if (r->freeing || status == ARES_EDESTRUCTION || status == ARES_ECANCELLED)
        return;     /* dns_free frees the entry */
    enum mx_answer a = dns_answer_of(status);
    if (a == MX_ANSWER_RECORDS)
        a = dns_parse(e, abuf, alen);
    e->answer = a;
    uint32_t ttl = UINT32_MAX, neg = UINT32_MAX;
    if (abuf != NULL && alen > 0 && mx_wire_ttls(abuf, (size_t)alen, &ttl, &neg) != 0)
        ttl = neg = UINT32_MAX;
    const char *dsn;
    bool cacheable = a == MX_ANSWER_RECORDS || mx_decide(a, &dsn) == MX_PERMANENT
                     || a == MX_ANSWER_NODATA;
    log_debug("dns: %s %s: %s (ttl %u, negative ttl %u)%s", dns_type_name(e->qtype), e->name,
              mx_answer_name(a), ttl, neg, cacheable ? "" : ", not cached");
    if (a == MX_ANSWER_NXDOMAIN || a == MX_ANSWER_NODATA)
        ttl = ttl < neg ? ttl : neg;
    e->ready = true;
    e->expires_ms = r->now_ms + (uint64_t)mx_cache_seconds(ttl) * 1000;
    if (cacheable) {
        dns_lru_push(r, e);
    } else {
        /* Not kept: off the table first, so a question asked while the
         * waiters are told starts a fresh query. */
        dns_entry_unhash(r, e);
    }
    e->notifying = true;
    struct dns_waiter *w = e->waiters;
    e->waiters = NULL;
    while (w != NULL) {
        struct dns_waiter *next = w->next;
        dns_lookup_answer(r, w->lk, w->slot, e);
        xfree(w);
        w = next;
    }
    e->notifying = false;
    if (cacheable)
        dns_cache_trim(r);
    else
        dns_entry_free(e);
}

/* Asks one question for a lookup: from the cache, by joining the query in
 * flight, or with a new query. */
static void
dns_ask(struct dns *r, struct dns_lookup *lk, int qtype, const char *name, int slot)
{
    lk->pending++;
    uint64_t now = r->now_ms;
    struct dns_entry **bucket = &r->buckets[dns_hash(qtype, name)], *e;
    for (e = *bucket; e != NULL; e = e->hnext)
        if (e->qtype == qtype && strcmp(e->name, name) == 0)
            break;
    /* An entry whose waiters are being told counts as fresh even if the
     * clock moved past it meanwhile: it cannot be recycled under them. */
    if (e != NULL && e->ready && (e->expires_ms > now || e->notifying)) {
        bool was_notifying = e->notifying;
        if (!was_notifying) {
            dns_lru_unlink(r, e);
            dns_lru_push(r, e);
        }
        /* Pinned while the lookup reads it: what the answer starts may
         * finish other queries and trim the cache. */
        e->notifying = true;
        dns_lookup_answer(r, lk, slot, e);
        e->notifying = was_notifying;
        return;
    }
    struct dns_waiter *w = xcalloc(1, sizeof *w);
    w->lk = lk;
    w->slot = slot;
    if (e != NULL && !e->ready) {
        w->next = e->waiters;       /* a query for it is in flight: join */
        e->waiters = w;
        return;
    }
    if (e != NULL) {
        /* Expired (and so on the LRU): ask again, reusing the entry. */
        dns_lru_unlink(r, e);
        xfree(e->mx);
        xfree(e->addrs);
        e->mx = NULL;
        e->addrs = NULL;
        e->nmx = e->naddrs = 0;
        e->ready = false;
    } else {
        e = xcalloc(1, sizeof *e);
        e->r = r;
        e->qtype = qtype;
        snprintf(e->name, sizeof e->name, "%s", name);
        e->hnext = *bucket;
        *bucket = e;
    }
    e->waiters = w;
    /* May call dns_answer_cb before returning (e.g. no server reachable). */
    ares_query(r->ch, e->name, ns_c_in, qtype, dns_answer_cb, e);
}

/* --- API ----------------------------------------------------------------- */

/* "1.2.3.4:5353, [::1]:53" -> "1.2.3.4:5353,[::1]:53" for c-ares. */
static char *
dns_servers_csv(const char *servers)
{
    char *csv = xmalloc(strlen(servers) + 1), *o = csv;
    for (const char *p = servers; *p; p++)
        if (*p != ' ' && *p != '\t')
            *o++ = *p;
    *o = '\0';
    return csv;
}

struct dns *
dns_new(dns_get_sqe_fn *get_sqe, void *arg, const char *servers, char *err, size_t errsize)
{
    struct dns *r = xcalloc(1, sizeof *r);
    r->nop.kind = DNS_OBJ_NOP;
    r->ignore.kind = DNS_OBJ_IGNORE;
    r->get_sqe = get_sqe;
    r->sqe_arg = arg;
    if (getrandom(&r->rng, sizeof r->rng, GRND_NONBLOCK) != (ssize_t)sizeof r->rng)
        r->rng = dns_mono_ms() ^ (uint64_t)(uintptr_t)r;

    struct ares_options opts;
    memset(&opts, 0, sizeof opts);
    /* NOSEARCH: a mail domain is absolute, never completed from resolv.conf's
     * search list. NOALIASES: HOSTALIASES from the environment is not ours. */
    opts.flags = ARES_FLAG_NOSEARCH | ARES_FLAG_NOALIASES;
    opts.timeout = DNS_TIMEOUT_MS;
    opts.tries = DNS_TRIES;
    opts.sock_state_cb = dns_sock_state;
    opts.sock_state_cb_data = r;
    int mask = ARES_OPT_FLAGS | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_SOCK_STATE_CB;
    int st = ares_init_options(&r->ch, &opts, mask);
    if (st != ARES_SUCCESS) {
        snprintf(err, errsize, "c-ares: %s", ares_strerror(st));
        xfree(r);
        return NULL;
    }
    if (servers != NULL && servers[0] != '\0') {
        char *csv = dns_servers_csv(servers);
        st = csv[0] ? ares_set_servers_ports_csv(r->ch, csv) : ARES_EBADSTR;
        xfree(csv);
        if (st != ARES_SUCCESS) {
            snprintf(err, errsize, "dns_servers \"%s\": %s", servers, ares_strerror(st));
            r->freeing = true;
            ares_destroy(r->ch);
            xfree(r);
            return NULL;
        }
    }
    return r;
}

void
dns_seed(struct dns *r, uint64_t seed)
{
    r->rng = seed;
}

struct dns *
dns_free(struct dns *r)
{
    if (r == NULL)
        return NULL;
    r->freeing = true;
    ares_destroy(r->ch);    /* closes its sockets (dns_sock_state frees live ones) */
    while (r->socks != NULL) {
        struct dns_sock *s = r->socks;
        r->socks = s->next;
        xfree(s);
    }
    while (r->zombies != NULL) {
        struct dns_sock *s = r->zombies;
        r->zombies = s->znext;
        xfree(s);
    }
    while (r->timers != NULL) {
        struct dns_timer *t = r->timers;
        r->timers = t->next;
        xfree(t);
    }
    for (size_t b = 0; b < DNS_BUCKETS; b++)
        while (r->buckets[b] != NULL) {
            struct dns_entry *e = r->buckets[b];
            r->buckets[b] = e->hnext;
            dns_entry_free(e);
        }
    while (r->lookups != NULL)
        dns_lookup_free(r, r->lookups);
    xfree(r);
    return NULL;
}

/* Starts a lookup: known at once (literal, bad name) or by questions. */
static void
dns_start(struct dns *r, const char *name, uint64_t now_ms, bool nexthop, dns_cb *cb,
          void *arg)
{
    if (now_ms > r->now_ms)
        r->now_ms = now_ms;
    struct dns_lookup *lk = dns_lookup_new(r, cb, arg);
    lk->nexthop = nexthop;
    snprintf(lk->domain, sizeof lk->domain, "%s", name);
    struct netaddr a;
    int lit = mx_parse_literal(name, nexthop, &a);
    char norm[MX_NAME_MAX], inner[MX_NAME_MAX];
    size_t len = strlen(name);
    if (lit < 0 && nexthop && len > 2 && len - 2 < sizeof inner) {
        /* Postfix's "[mail.example.com]" next hop: brackets only say "no MX
         * lookup", which is what this call does anyway. */
        memcpy(inner, name + 1, len - 2);
        inner[len - 2] = '\0';
        if (mx_normalize_name(norm, sizeof norm, inner) == 0) {
            lit = 0;
            name = inner;
        }
    }
    if (lit == 1) {
        dns_lookup_add_host(r, lk, name, 0, nexthop);    /* no question asked */
    } else if (lit < 0 || mx_normalize_name(norm, sizeof norm, name) != 0) {
        char shown[80], text[sizeof lk->res.text];
        log_escape(shown, sizeof shown, name, strlen(name));
        snprintf(text, sizeof text, "invalid %s name \"%s\"", nexthop ? "host" : "domain",
                 shown);
        /* A next hop is configuration, so it defers; a recipient domain that
         * can never be asked for is final. */
        dns_lookup_fail(lk, nexthop ? MX_TEMPORARY : MX_PERMANENT,
                        nexthop ? "4.4.3" : "5.1.2", text);
    } else {
        snprintf(lk->domain, sizeof lk->domain, "%s", norm);
        if (nexthop)
            dns_lookup_add_host(r, lk, norm, 0, false);
        else
            dns_ask(r, lk, ns_t_mx, norm, -1);
    }
    dns_lookup_release(r, lk);
    dns_sync(r);
}

void
dns_resolve_mx(struct dns *r, const char *domain, uint64_t now_ms, dns_cb *cb, void *arg)
{
    dns_start(r, domain, now_ms, false, cb, arg);
}

void
dns_resolve_host(struct dns *r, const char *name, uint64_t now_ms, dns_cb *cb, void *arg)
{
    dns_start(r, name, now_ms, true, cb, arg);
}

size_t
dns_pending(const struct dns *r)
{
    return r->nlookups;
}

/* The completion of one of our SQEs. */
void
dns_on_cqe(struct dns *r, void *ptr, struct io_uring_cqe *cqe)
{
    struct dns_obj *obj = ptr;
    r->now_ms = dns_mono_ms();
    r->dispatching++;
    switch ((enum dns_obj_kind)obj->kind) {
    case DNS_OBJ_SOCK: {
        struct dns_sock *s = ptr;
        s->armed = false;
        s->cancel_sent = false;
        if (s->closed) {
            dns_sock_free(r, s);
            break;
        }
        int res = cqe->res;
        if (res == -ECANCELED)
            break;  /* re-armed below with what c-ares wants now */
        ares_socket_t rfd = ARES_SOCKET_BAD, wfd = ARES_SOCKET_BAD;
        if (res < 0) {
            /* The poll itself failed: let c-ares try the socket and see. */
            log_debug("dns: poll on fd %d: %s", s->fd, strerror(-res));
            res = POLLIN | POLLOUT;
        }
        if (res & (POLLIN | POLLERR | POLLHUP))
            rfd = s->fd;
        if ((res & (POLLOUT | POLLERR | POLLHUP)) && s->want_write)
            wfd = s->fd;
        /* May close the socket (and free s): s is not touched after. */
        ares_process_fd(r->ch, rfd, wfd);
        break;
    }
    case DNS_OBJ_TIMER: {
        struct dns_timer *t = ptr;
        bool current = t == r->timer;
        dns_timer_unlink(r, t);
        xfree(t);
        if (current) {
            r->timer = NULL;
            ares_process_fd(r->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
        }
        break;
    }
    case DNS_OBJ_NOP:
        r->nop_armed = false;
        break;
    case DNS_OBJ_IGNORE:
        break;
    }
    dns_deliver(r);
    r->dispatching--;
    dns_sync(r);
}
