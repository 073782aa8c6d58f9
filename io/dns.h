/*
 * dns - a worker's asynchronous resolver: c-ares driven from the worker's
 * io_uring (its sockets as POLL_ADDs, its timeouts as one TIMEOUT), MX
 * resolution for mail destinations, address lookups for next hops, and a
 * per-resolver cache of answers.
 *
 * Per-worker, never shared: every function runs on the thread that owns the
 * ring. Nothing blocks: no getaddrinfo, no threads.
 *
 * Wiring (the worker):
 *   r = dns_new(worker_dns_sqe, w, cfg->dns_servers, err, sizeof err);
 *   ...in the completion switch:  case OP_DNS: dns_on_cqe(w->dns, p, cqe);
 *   ...after the loop, once no more completions are dispatched: dns_free(r).
 * Every SQE this module prepares carries ud_pack(OP_DNS, object) and is
 * submitted by the worker's next io_uring_submit*(); the module never
 * submits or reaps by itself.
 *
 * Callbacks run only from dns_on_cqe, never from inside dns_resolve_*: an
 * answer already known (cache, address literal, bad name) is delivered
 * through a NOP completion. A callback may start new lookups; it must not
 * call dns_free.
 */
#ifndef RINGMTA_IO_DNS_H
#define RINGMTA_IO_DNS_H

#include <liburing.h>
#include <stddef.h>
#include <stdint.h>

#include "mx.h"

struct dns;

/* Returns a free SQE of the ring, never NULL (worker_sqe flushes a full SQ). */
typedef struct io_uring_sqe *dns_get_sqe_fn(void *arg);

/*
 * A finished lookup. res is owned by the resolver and valid only during the
 * call: copy what you keep (mx_result_copy). On MX_OK, res->hosts are in
 * delivery order, each with addresses (IPv4 first, then IPv6); ports are the
 * caller's (smtp_port, or the next hop's).
 */
typedef void dns_cb(void *arg, const struct mx_result *res);

/*
 * Creates a resolver. servers: "" reads /etc/resolv.conf; otherwise
 * "ADDR[:PORT], ..." with IPv6 as "[ADDR]:PORT" (the dns_servers setting).
 * get_sqe(arg) supplies SQEs. Returns NULL with err filled on failure.
 * The random order among equal MX preferences is seeded from getrandom();
 * tests fix it with dns_seed.
 */
struct dns *dns_new(dns_get_sqe_fn *get_sqe, void *arg, const char *servers, char *err,
                    size_t errsize);

/* Reseeds the generator that orders equal-preference MX hosts and addresses. */
void dns_seed(struct dns *r, uint64_t seed);

/*
 * Frees the resolver, its sockets and cache. Lookups not yet answered are
 * dropped without their callbacks. Call it only when dns_on_cqe will not be
 * called again: SQEs still in flight point into memory freed here, so their
 * completions must never be dispatched (the worker frees the resolver after
 * its loop, when the ring is being torn down). Returns NULL.
 */
struct dns *dns_free(struct dns *r);

/*
 * Resolves a mail domain to the hosts to deliver to (RFC 5321 §5.1):
 *  - MX records in preference order, random among equal preferences; each
 *    host's A and AAAA records; hosts without addresses are skipped;
 *  - no MX records (NODATA): the domain itself, preference 0 (res->implicit);
 *  - null MX (RFC 7505): MX_PERMANENT 5.1.10;
 *  - NXDOMAIN or an invalid domain name: MX_PERMANENT 5.1.2;
 *  - SERVFAIL, REFUSED, timeout, unreachable servers, garbage: MX_TEMPORARY
 *    4.4.3; MX hosts none of which has an address: MX_TEMPORARY 4.4.3;
 *  - no MX and no A/AAAA for the domain: MX_PERMANENT 5.4.4;
 *  - an address literal "[192.0.2.1]" / "[IPv6:2001:db8::1]": that address.
 * Like Postfix, an MX exchange that is an address ("10 192.0.2.1", invalid
 * per RFC 1035 but seen) is used as that address, and CNAMEs are followed
 * wherever they appear (the domain, an MX host; RFC 2181 §10.3 forbids the
 * latter but refusing it would only lose mail).
 * domain is copied. now_ms is the caller's monotonic clock (CLOCK_MONOTONIC,
 * like worker->now_ms), used for the cache. cb(arg, res) is called exactly
 * once, later, from dns_on_cqe; arg must stay valid until then.
 */
void dns_resolve_mx(struct dns *r, const char *domain, uint64_t now_ms, dns_cb *cb, void *arg);

/*
 * Resolves a next hop (relayhost, transport_map) without MX lookup: name is a
 * host name, a bare address, or a bracketed literal; the result has one host
 * (preference 0) with its A and AAAA addresses. A name that does not resolve
 * is MX_TEMPORARY 4.4.3, never permanent: a broken next hop is our
 * configuration, and must not bounce mail (Postfix defers the same way).
 * Same ownership and callback rules as dns_resolve_mx.
 */
void dns_resolve_host(struct dns *r, const char *name, uint64_t now_ms, dns_cb *cb, void *arg);

/* The completion of an SQE that carried ud_pack(OP_DNS, ptr). */
void dns_on_cqe(struct dns *r, void *ptr, struct io_uring_cqe *cqe);

/* Lookups started whose callback has not run yet. */
size_t dns_pending(const struct dns *r);

#endif
