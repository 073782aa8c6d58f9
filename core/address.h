/*
 * address - RFC 5321 paths: parsing MAIL FROM / RCPT TO addresses, and the
 * relay decision on their canonical form.
 *
 * Any thread, no state, no I/O. Parsers never read past the given length,
 * never stop at a NUL (a NUL is a syntax error), and never expand anything:
 * an address is an opaque string once parsed.
 */
#ifndef RINGMTA_CORE_ADDRESS_H
#define RINGMTA_CORE_ADDRESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "netaddr.h"

/* RFC 5321 §4.5.3.1: local part 64 octets, domain 255, path 256 incl. <>. */
#define ADDRESS_LOCAL_MAX 64
#define ADDRESS_DOMAIN_MAX 255
#define ADDRESS_PATH_MAX 256

enum address_status {
    ADDRESS_OK = 0,
    ADDRESS_SYNTAX,            /* 501 5.1.3 (RCPT) / 501 5.1.7 (MAIL) */
    ADDRESS_LOCAL_TOO_LONG,    /* 553 5.1.3 */
    ADDRESS_DOMAIN_TOO_LONG,   /* 553 5.1.3 */
    ADDRESS_PATH_TOO_LONG,     /* 553 5.1.3 */
    ADDRESS_NEEDS_SMTPUTF8,    /* 553 5.6.7: non-ASCII without SMTPUTF8 */
    ADDRESS_BAD_UTF8,          /* 501 5.6.7 (our choice: 553 5.6.7 too) */
};

/*
 * A parsed mailbox. addr is "local@domain" as received (source route dropped,
 * RFC 5321 §4.1.1.3 says to ignore it), NUL-terminated; "" for the null
 * reverse-path <>. A mailbox without a domain ("postmaster") has at == len.
 * domain_lc is the domain lowercased with one trailing dot removed, for routing
 * and policy; "" when there is no domain.
 */
struct mailbox {
    char addr[ADDRESS_PATH_MAX + 1];
    char domain_lc[ADDRESS_DOMAIN_MAX + 1];
    uint16_t len;        /* strlen(addr) */
    uint16_t at;         /* index of the separating '@' in addr, or len */
    bool utf8;           /* contains non-ASCII octets */
    bool literal;        /* domain is an address literal [..] */
    bool quoted;         /* local part is a quoted-string */
    bool route_chars;    /* local part contains '%', '!' or '@' (routing hacks) */
};

/*
 * Parses a path at p: "<" [source-route ":"] mailbox ">" (or "<>" when
 * allow_null). *consumed is set to the octets used, up to and including '>'.
 * Leading spaces are not allowed (RFC 5321 "MAIL FROM:<...>"), but callers
 * may skip one space themselves for compatibility.
 * With smtputf8 false, any octet >= 0x80 gives ADDRESS_NEEDS_SMTPUTF8; with it
 * true, the address must be valid UTF-8 (ADDRESS_BAD_UTF8 otherwise).
 */
enum address_status address_parse_path(const char *p, size_t len, bool allow_null,
                                       bool smtputf8, struct mailbox *out,
                                       size_t *consumed);

/* True for the bare "postmaster" (any case, no domain; RFC 5321 §4.5.1). */
bool address_is_postmaster(const struct mailbox *m);

/* Relay policy, immutable after building; shared by all workers. */
struct relay_policy {
    char **domains;          /* lowercased, no trailing dot */
    size_t ndomains;
    struct cidr_list networks;
};

enum relay_verdict {
    RELAY_OK_LOCAL = 0,      /* recipient in relay_domains (or bare postmaster) */
    RELAY_OK_TRUSTED,        /* client is trusted (network or authenticated) */
    RELAY_DENIED,            /* 554 5.7.1 Relay access denied */
};

/*
 * Builds a policy from the relay_domains and relay_networks settings
 * ("a.example, b.example" and "127.0.0.0/8, ::1"). Returns 0 or -1 with err.
 */
int relay_policy_init(struct relay_policy *pol, const char *domains,
                      const char *networks, char *err, size_t errsize);
void relay_policy_free(struct relay_policy *pol);
bool relay_client_trusted(const struct relay_policy *pol, const struct netaddr *client);

/*
 * Decides whether rcpt may be accepted. Trusted clients (client in
 * relay_networks, or authenticated) may send anywhere. Others only to
 * relay_domains, judged on the canonical domain, and never when the local part
 * carries routing characters (%, !, quoted @) or the domain is an address
 * literal: "victim%ext@ours" must not become a relay (RELIABILITY row 36).
 * The bare postmaster is always accepted.
 */
enum relay_verdict relay_check(const struct relay_policy *pol, const struct mailbox *rcpt,
                               const struct netaddr *client, bool authenticated);

#endif
