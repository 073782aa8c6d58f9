/*
 * dns_probe - drives io/dns on a ring of its own, for tests/integration/test_dns.py.
 *
 * Single thread: one io_uring, one resolver, the loop below. Resolves the
 * names given as arguments against --server and prints one line per result:
 *   KIND <TAB> NAME <TAB> STATUS <TAB> DSN|- <TAB> implicit=0|1 <TAB> HOSTS <TAB> TEXT
 * with HOSTS "pref name addr addr...;pref name addr..." in delivery order.
 *
 * usage: dns_probe --server ADDR:PORT[,...] [--seed N] [--sequential]
 *                  [--deadline SECONDS] mx:DOMAIN|host:NAME...
 * --sequential starts each lookup when the previous one has answered (so
 * the second of two identical lookups is answered from the cache); without
 * it, every lookup starts at once. Exits 0 when every lookup answered,
 * 2 on the deadline, 1 on a usage or setup error.
 */
#include <errno.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dns.h"
#include "worker.h"

struct probe {
    struct io_uring ring;
    struct dns *dns;
    char **names;
    int nnames;
    int next;
    int answered;
    int sequential;
};

struct probe_arg {
    struct probe *p;
    int index;
};

static struct probe_arg probe_args[256];

static struct io_uring_sqe *
probe_sqe(void *arg)
{
    struct probe *p = arg;
    struct io_uring_sqe *sqe = io_uring_get_sqe(&p->ring);
    if (sqe == NULL) {
        io_uring_submit(&p->ring);
        sqe = io_uring_get_sqe(&p->ring);
        if (sqe == NULL) {
            fprintf(stderr, "dns_probe: submission queue exhausted\n");
            abort();
        }
    }
    return sqe;
}

static uint64_t
probe_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void probe_start(struct probe *p);

static void
probe_answer(void *arg, const struct mx_result *res)
{
    struct probe_arg *a = arg;
    struct probe *p = a->p;
    const char *spec = p->names[a->index];
    const char *colon = strchr(spec, ':');
    printf("%.*s\t%s\t%s\t%s\timplicit=%d\t", (int)(colon - spec), spec, colon + 1,
           mx_status_name(res->status), res->dsn[0] ? res->dsn : "-", res->implicit ? 1 : 0);
    for (size_t i = 0; i < res->nhosts; i++) {
        const struct mx_host *h = &res->hosts[i];
        printf("%s%u %s", i ? ";" : "", h->preference, h->name);
        for (size_t k = 0; k < h->naddrs; k++) {
            char buf[64];
            printf(" %s", netaddr_format(&h->addrs[k], buf, sizeof buf));
        }
    }
    printf("\t%s\n", res->text);
    fflush(stdout);
    p->answered++;
    if (p->sequential)
        probe_start(p);     /* a callback may start lookups */
}

static void
probe_start(struct probe *p)
{
    while (p->next < p->nnames) {
        int i = p->next++;
        struct probe_arg *a = &probe_args[i];
        a->p = p;
        a->index = i;
        const char *spec = p->names[i];
        if (strncmp(spec, "mx:", 3) == 0)
            dns_resolve_mx(p->dns, spec + 3, probe_mono_ms(), probe_answer, a);
        else
            dns_resolve_host(p->dns, spec + 5, probe_mono_ms(), probe_answer, a);
        if (p->sequential)
            return;
    }
}

int
main(int argc, char **argv)
{
    static struct probe p;
    const char *server = "";
    uint64_t seed = 0;
    int have_seed = 0;
    double deadline_s = 30;
    int i;
    for (i = 1; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
        if (strcmp(argv[i], "--server") == 0 && i + 1 < argc)
            server = argv[++i];
        else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc)
            seed = strtoull(argv[++i], NULL, 10), have_seed = 1;
        else if (strcmp(argv[i], "--deadline") == 0 && i + 1 < argc)
            deadline_s = atof(argv[++i]);
        else if (strcmp(argv[i], "--sequential") == 0)
            p.sequential = 1;
        else
            goto usage;
    }
    p.names = argv + i;
    p.nnames = argc - i;
    if (p.nnames == 0 || p.nnames > (int)(sizeof probe_args / sizeof probe_args[0]))
        goto usage;
    for (int k = 0; k < p.nnames; k++)
        if (strncmp(p.names[k], "mx:", 3) != 0 && strncmp(p.names[k], "host:", 5) != 0)
            goto usage;

    int r = io_uring_queue_init(256, &p.ring, 0);
    if (r < 0) {
        fprintf(stderr, "dns_probe: io_uring_queue_init: %s\n", strerror(-r));
        return r == -ENOSYS || r == -EPERM ? 77 : 1;
    }
    char err[256];
    p.dns = dns_new(probe_sqe, &p, server, err, sizeof err);
    if (p.dns == NULL) {
        fprintf(stderr, "dns_probe: %s\n", err);
        return 1;
    }
    if (have_seed)
        dns_seed(p.dns, seed);

    uint64_t deadline = probe_mono_ms() + (uint64_t)(deadline_s * 1000);
    probe_start(&p);
    while (p.answered < p.nnames && probe_mono_ms() < deadline) {
        struct __kernel_timespec ts = { .tv_sec = 0, .tv_nsec = 100 * 1000 * 1000 };
        struct io_uring_cqe *cqe;
        r = io_uring_submit_and_wait_timeout(&p.ring, &cqe, 1, &ts, NULL);
        if (r < 0 && r != -ETIME && r != -EINTR) {
            fprintf(stderr, "dns_probe: io_uring_submit_and_wait_timeout: %s\n", strerror(-r));
            return 1;
        }
        unsigned head, count = 0;
        io_uring_for_each_cqe(&p.ring, head, cqe)
        {
            uint64_t ud = io_uring_cqe_get_data64(cqe);
            if (ud_op(ud) == OP_DNS)
                dns_on_cqe(p.dns, ud_ptr(ud), cqe);
            count++;
        }
        io_uring_cq_advance(&p.ring, count);
    }
    int rc = p.answered == p.nnames ? 0 : 2;
    if (rc != 0)
        fprintf(stderr, "dns_probe: deadline with %zu lookups pending\n", dns_pending(p.dns));
    /* Completions are no longer dispatched from here on: free, then exit. */
    p.dns = dns_free(p.dns);
    io_uring_queue_exit(&p.ring);
    return rc;

usage:
    fprintf(stderr, "usage: dns_probe --server ADDR:PORT[,...] [--seed N] [--sequential] "
                    "[--deadline SECONDS] mx:DOMAIN|host:NAME...\n");
    return 1;
}
