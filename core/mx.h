/*
 * mx - what a mail destination's DNS answers mean: MX ordering (RFC 5321
 * §5.1), null MX (RFC 7505), the decision table from DNS outcomes to
 * OK / TEMPORARY / PERMANENT, and the result handed to delivery.
 *
 * Any thread; pure functions, no I/O, no clock, no resolver library (io/dns.c
 * maps c-ares statuses to enum mx_answer). Randomness comes from a state the
 * caller owns (mx_rng_next), so tests can seed it.
 */
#ifndef RINGMTA_CORE_MX_H
#define RINGMTA_CORE_MX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "netaddr.h"

/* A domain name in presentation form, without the trailing dot (RFC 1035:
 * 253 octets of text), plus the NUL. */
#define MX_NAME_MAX 254
/* MX hosts kept after ordering, and addresses kept per host. Postfix caps
 * what one delivery tries the same way (smtp_mx_address_limit); a domain
 * with more hosts than this is misconfigured or hostile. */
#define MX_MAX_HOSTS 10
#define MX_MAX_ADDRS 16
/* Cache lifetimes in seconds: answers live for their TTL within these bounds;
 * a negative answer without an SOA to say otherwise lives MX_TTL_NEGATIVE. */
#define MX_TTL_MIN 5
#define MX_TTL_MAX 3600
#define MX_TTL_NEGATIVE 60

enum mx_status {
    MX_OK = 0,
    MX_TEMPORARY,       /* try again later (4.x.x) */
    MX_PERMANENT,       /* the destination does not exist or takes no mail (5.x.x) */
};

/* What one DNS query came to, independent of the resolver library. */
enum mx_answer {
    MX_ANSWER_RECORDS = 0,  /* NOERROR with records of the type asked */
    MX_ANSWER_NODATA,       /* NOERROR, the name exists, no such records */
    MX_ANSWER_NXDOMAIN,     /* RCODE 3: the name does not exist */
    MX_ANSWER_BADNAME,      /* the name cannot be put in a query */
    MX_ANSWER_SERVFAIL,     /* RCODE 2 */
    MX_ANSWER_REFUSED,      /* RCODE 5 */
    MX_ANSWER_TIMEOUT,      /* no answer from any server */
    MX_ANSWER_UNREACHABLE,  /* no server gave a usable answer: connection
                             * refused, or (c-ares 1.18, which tries the next
                             * server and then forgets the rcode) SERVFAIL or
                             * REFUSED from every server */
    MX_ANSWER_BADRESP,      /* FORMERR, NOTIMP, or an answer we could not parse */
    MX_ANSWER_ERROR,        /* anything else (out of memory, ...) */
};

/* One MX record: the exchange in presentation form ("" is the root, "."). */
struct mx_record {
    char name[MX_NAME_MAX];
    unsigned preference;
};

struct mx_host {
    char *name;                 /* lower case, no trailing dot */
    unsigned preference;        /* 0 for an implicit MX or a next hop */
    struct netaddr *addrs;      /* IPv4 first, then IPv6; at most MX_MAX_ADDRS */
    size_t naddrs;
};

/* The answer for one destination. On MX_OK, hosts are in the order delivery
 * should try them and every host has at least one address; otherwise hosts
 * is empty and dsn/text say why. */
struct mx_result {
    enum mx_status status;
    char dsn[8];                /* "4.4.3", "5.1.10"...; "" on MX_OK */
    char text[200];             /* for the log and the DSN; "" on MX_OK */
    bool implicit;              /* no MX records: the domain itself (RFC 5321 §5.1) */
    struct mx_host *hosts;
    size_t nhosts;
};

/* splitmix64: a fast, seedable generator (not for secrets). */
uint64_t mx_rng_next(uint64_t *state);

/* "NXDOMAIN", "TIMEOUT"...: short, for logs. */
const char *mx_answer_name(enum mx_answer a);
/* A phrase for the reply text: "domain not found (NXDOMAIN)"... */
const char *mx_answer_text(enum mx_answer a);
const char *mx_status_name(enum mx_status s);

/*
 * The decision table for the MX query of a destination: RECORDS and NODATA
 * are MX_OK (go on with the records, or with the implicit MX); NXDOMAIN and
 * BADNAME are MX_PERMANENT 5.1.2 (bad destination system); SERVFAIL, REFUSED,
 * TIMEOUT, UNREACHABLE, BADRESP, ERROR are MX_TEMPORARY 4.4.3 (directory
 * server failure). *dsn is set to a static string ("" for MX_OK).
 */
enum mx_status mx_decide(enum mx_answer a, const char **dsn);

/* RFC 7505: exactly one MX record, preference 0, exchange the root. */
bool mx_is_null(const struct mx_record *recs, size_t n);

/*
 * Orders MX records for delivery, in place: by preference, ascending, with
 * records of equal preference in random order (RFC 5321 §5.1). Names are
 * normalized (mx_normalize_name); an exchange that is an IPv4 or IPv6
 * address is kept as its canonical text. Records whose exchange is the
 * root or an invalid host name are dropped, and so are
 * repeats of a name (the lowest preference stays); at most MX_MAX_HOSTS
 * records remain. Returns how many. Does not test for null MX: call
 * mx_is_null first.
 */
size_t mx_order(struct mx_record *recs, size_t n, uint64_t *rng);

/* Shuffles n addresses in place (Postfix does the same for one host's
 * addresses so load spreads over a host's A records). */
void mx_shuffle_addrs(struct netaddr *addrs, size_t n, uint64_t *rng);

/*
 * Copies a domain name to out (outsize >= MX_NAME_MAX) lower-cased, without a
 * trailing dot, after checking its syntax: labels of letters, digits, '-' and
 * '_' (seen in real MX names), 1..63 octets each, 253 in all, no leading or
 * trailing hyphen. Returns 0, or -1 if it is not such a name (out is then "").
 */
int mx_normalize_name(char *out, size_t outsize, const char *in);

/*
 * Recognises an address where a host name would be: "[192.0.2.1]",
 * "[IPv6:2001:db8::1]" (RFC 5321 §4.1.3 address literals), and, if bare is
 * true, "192.0.2.1" or "2001:db8::1" (a next hop, or an MX exchange that
 * names an address, which Postfix accepts with a warning). Returns 1 with
 * *out set, 0 if the text is not an address, -1 if it is bracketed but not
 * a valid literal.
 */
int mx_parse_literal(const char *text, bool bare, struct netaddr *out);

/*
 * Reads the TTLs of a DNS response (wire form): *answer_ttl = the smallest TTL
 * in the answer section (CNAMEs included, since the answer depends on them;
 * UINT32_MAX if the section is empty) and *negative_ttl = min(SOA TTL, SOA
 * MINIMUM) of an SOA in the authority section (RFC 2308 §5; UINT32_MAX if
 * none). Returns 0, or -1 if the message is malformed; never reads past len.
 */
int mx_wire_ttls(const uint8_t *msg, size_t len, uint32_t *answer_ttl, uint32_t *negative_ttl);

/* How long to cache an answer, in seconds: the TTL within [MX_TTL_MIN,
 * MX_TTL_MAX]; UINT32_MAX (unknown) means MX_TTL_NEGATIVE. */
uint32_t mx_cache_seconds(uint32_t ttl);

/* Sets res to a failure: no hosts, implicit kept. dsn is copied; text is
 * printf-style. */
void mx_result_fail(struct mx_result *res, enum mx_status status, const char *dsn,
                    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Appends a host without addresses; returns it, valid until the next
 * append (the array grows). name is copied. */
struct mx_host *mx_result_add_host(struct mx_result *res, const char *name, unsigned preference);

/* Appends an address to a host unless it is there already or the host has
 * MX_MAX_ADDRS; returns true if added. */
bool mx_host_add_addr(struct mx_host *h, const struct netaddr *a);

/*
 * Ends a resolution once every address query has answered. addr_answers[i]
 * holds the two answers (A, AAAA) of hosts[i]. Hosts without addresses are
 * dropped; the result is MX_OK if any host remains. Otherwise:
 *  - implicit MX (res->implicit) and both answers NXDOMAIN or NODATA: the
 *    domain has neither MX nor address records: MX_PERMANENT 5.4.4;
 *  - anything else (MX hosts none of which has an address, a temporary
 *    failure, a next hop that does not resolve): MX_TEMPORARY 4.4.3, since a
 *    broken MX host or relayhost is usually fixed by its owner and must not
 *    bounce mail (Postfix defers when its relayhost does not resolve).
 * domain names the destination in the text; nexthop says it was a
 * relayhost/transport next hop rather than a recipient domain.
 */
void mx_result_finish(struct mx_result *res, const enum mx_answer (*addr_answers)[2],
                      const char *domain, bool nexthop);

/* Frees what res holds and empties it (res itself is not freed). */
void mx_result_clear(struct mx_result *res);
/* A deep copy on the heap, owned by the caller; free with mx_result_free. */
struct mx_result *mx_result_copy(const struct mx_result *res);
/* Frees a copy from mx_result_copy; returns NULL. */
struct mx_result *mx_result_free(struct mx_result *res);

#endif
