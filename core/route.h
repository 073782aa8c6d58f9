/*
 * route - where a domain's mail goes (relayhost, transport_map) and under
 * which limits (destination_policy). Parsing and lookup only: io/ reads the
 * files and passes their text; DNS happens later, on the hop this returns.
 *
 * Any thread; tables are immutable once parsed (a reload parses new ones
 * and swaps the pointer with the config).
 *
 * Syntax follows Postfix where Postfix has one:
 *  - a next hop is relayhost's "host", "host:port", "[host]:port",
 *    "[1.2.3.4]:port", "[2001:db8::1]:port" (also "[IPv6:2001:db8::1]");
 *    brackets mean "no MX lookup", exactly as in Postfix. An IP address
 *    never gets an MX lookup; IPv6 needs the brackets (colons).
 *  - transport_map is transport(5): "domain nexthop" lines; the nexthop may
 *    carry Postfix's "smtp:" prefix, and "smtp:" alone means "no override".
 *    "example.com" matches that domain only, ".example.com" its subdomains
 *    only, "*" everything else; the most specific match wins.
 *  - destination_policy is "domain key=value ..." lines with the same
 *    domain patterns. Every matching line applies, least specific first
 *    ("*", ".com", ".example.com", "example.com"), so a key set for a
 *    domain overrides the same key set for its parents; keys not set
 *    anywhere come from main.cf.
 * All three: '#' starts a comment, a line starting with white space
 * continues the previous one (main.cf / postmap style). Errors name the
 * origin and line: "transport_map:7: bad port '99999'".
 */
#ifndef RINGMTA_CORE_ROUTE_H
#define RINGMTA_CORE_ROUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct config;

#define ROUTE_HOST_MAX 255

struct route_hop {
    char host[ROUTE_HOST_MAX + 1];  /* lowercase domain or host name, or IP
                                       address text without brackets */
    uint16_t port;                  /* 0 = the config's smtp_port */
    bool mx_lookup;                 /* look up host's MX first (RFC 5321 §5.1) */
    bool is_address;                /* host is an IP address: no DNS at all */
};

/* Parses one next hop (the relayhost value, a transport_map nexthop).
 * Returns 0, or -1 with err filled. */
int route_hop_parse(struct route_hop *out, const char *text, char *err, size_t errsize);
/* For logs and ctl: "example.com", "[mx.example.com]:2525", "[2001:db8::1]".
 * Returns buf. */
char *route_hop_format(const struct route_hop *hop, char *buf, size_t size);

/* ---- transport_map ---- */

struct route_table;

/* Parses transport_map text (not NUL-terminated; len bytes). On success
 * *out is owned by the caller (route_table_free). origin names the file in
 * errors. Duplicate domains are errors. */
int route_table_parse(struct route_table **out, const char *text, size_t len,
                      const char *origin, char *err, size_t errsize);
struct route_table *route_table_free(struct route_table *t);
size_t route_table_count(const struct route_table *t);

enum route_result {
    ROUTE_DEFAULT = 0,   /* no override: relayhost if set, else MX of the domain */
    ROUTE_HOP,           /* *out is the next hop */
};

/* Looks domain up (any case, one trailing dot ignored): exact entry, then
 * ".parent" entries from the nearest parent up, then "*". t may be NULL
 * (no transport_map). */
enum route_result route_lookup(const struct route_table *t, const char *domain,
                               struct route_hop *out);

/*
 * The next hop for domain, always: the transport_map entry, else relayhost
 * (NULL or an empty host = none), else the domain itself with MX lookup.
 * An address-literal domain ("[192.0.2.1]", "[IPv6:2001:db8::1]", RFC 5321
 * §4.1.3) that no entry names goes to that address. Returns 0, or -1 for a
 * malformed address literal (a permanent failure for its recipients).
 */
int route_resolve(const struct route_table *t, const struct route_hop *relayhost,
                  const char *domain, struct route_hop *out);

/* ---- destination_policy ---- */

/* count per per_ms milliseconds; count 0 = no limit. Written "10" (per
 * second), "10/s", "600/m", "100/h", "2000/d". */
struct route_rate {
    uint64_t count;
    uint64_t per_ms;
};

/* Effective limits of one destination. To add a key (require_tls=yes, ...):
 * a field here, its default in route_limits_from_config, one row in
 * route.c's route_policy_keys. */
struct route_limits {
    unsigned max_connections;
    unsigned max_messages_per_connection;
    unsigned max_rcpt_per_transaction;
    struct route_rate max_message_rate;
    struct route_rate max_connection_rate;
    unsigned smtp_tls_security_level;   /* enum tls_level */
};

/* The main.cf values (rates per second). */
void route_limits_from_config(struct route_limits *out, const struct config *cfg);

struct route_policy;

/* Parses destination_policy text; as route_table_parse. Unknown keys, bad
 * values, a key twice on one line, a domain twice are errors. */
int route_policy_parse(struct route_policy **out, const char *text, size_t len,
                       const char *origin, char *err, size_t errsize);
struct route_policy *route_policy_free(struct route_policy *p);
size_t route_policy_count(const struct route_policy *p);

/* Effective limits for domain: cfg's values, overridden by every matching
 * line (see above). p may be NULL (no destination_policy). */
void route_policy_lookup(const struct route_policy *p, const struct config *cfg,
                         const char *domain, struct route_limits *out);

/* Parses a rate ("10", "10/s", "600/m", "100/h", "2000/d"). Returns 0 or -1. */
int route_rate_parse(const char *text, struct route_rate *out);

/* ---- smtp_sasl_password_file ---- */

/*
 * Credentials for smarthosts, Postfix's smtp_sasl_password_maps format:
 * "nexthop user:password" lines. The nexthop is written as in relayhost or
 * transport_map: "[relay.example]:587", "[192.0.2.1]:2525",
 * "relay.example:587"; a bare "relay.example" or "192.0.2.1" (no brackets,
 * no port) serves that host on any port.
 * The password runs to the end of the field (it may hold ':'). Errors never
 * repeat a password.
 */
#define ROUTE_SECRET_MAX 255

struct route_credentials;

/* As route_table_parse; default_port fills a port the nexthop leaves out
 * ("[relay.example]" is "[relay.example]:25" with smtp_port 25). */
int route_credentials_parse(struct route_credentials **out, const char *text, size_t len,
                            uint16_t default_port, const char *origin, char *err,
                            size_t errsize);
struct route_credentials *route_credentials_free(struct route_credentials *t);
size_t route_credentials_count(const struct route_credentials *t);

/* The entry for hop (port 0 = default_port), else for its bare host name.
 * true with *user and *pass pointing into t; t may be NULL. */
bool route_credentials_lookup(const struct route_credentials *t, const struct route_hop *hop,
                              uint16_t default_port, const char **user, const char **pass);

#endif
