/*
 * route - next-hop syntax, transport_map and destination_policy tables.
 *
 * Any thread; a parsed table is immutable. No I/O: the caller passes file
 * text. See route.h for the syntax and the Postfix behaviour it mirrors.
 *
 * Invariants: table keys are stored lowercased, without a trailing dot,
 * sorted by strcmp and unique, so a lookup is at most (labels + 2) binary
 * searches; a hop's host is validated (LDH host name or an IP address that
 * netaddr accepts) and normalised (lowercase; addresses in netaddr's
 * canonical text), so the DNS layer never sees syntax it has to reject.
 * Parse errors leave *out untouched and free everything built so far.
 *
 * Hazard: "smtp:" is stripped from transport_map values for Postfix
 * compatibility, so a host literally named "smtp" with a port must be
 * written "smtp:smtp:2525" there (relayhost takes no prefix).
 */
#include "route.h"

#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>

#include "alloc.h"
#include "config.h"
#include "netaddr.h"

#define ROUTE_DOMAIN_MAX 253        /* RFC 1035 text form, no trailing dot */
#define ROUTE_LABEL_MAX 63
#define ROUTE_LINE_MAX 65536        /* one logical entry, continuations included */
#define ROUTE_FIELDS_MAX 32

/* ---- characters (ASCII only: no locale may change what a host name is) ---- */

static char
route_lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

static bool
route_is_space(char c)
{
    return c == ' ' || c == '\t';
}

static bool
route_is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool
route_is_ldh(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || route_is_digit(c) ||
           c == '-' || c == '_';
}

static bool
route_prefix_ci(const char *s, size_t n, const char *prefix)
{
    size_t k = strlen(prefix);
    if (n < k)
        return false;
    for (size_t i = 0; i < k; i++)
        if (route_lower(s[i]) != prefix[i])
            return false;
    return true;
}

/* Decimal digits only, no sign or spaces, value <= max. */
static int
route_parse_decimal(const char *s, size_t n, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;
    if (n == 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (!route_is_digit(s[i]))
            return -1;
        uint64_t d = (uint64_t)(s[i] - '0');
        if (v > (max - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

/*
 * Checks a domain name of n bytes: labels of 1..63 characters separated by
 * single dots, 253 in all, the last not all digits. allow_utf8 admits bytes >= 0x80 (U-labels in
 * recipient domains under SMTPUTF8); host names we connect to must be
 * ASCII (A-labels), since the resolver takes nothing else.
 */
static bool
route_domain_ok(const char *s, size_t n, bool allow_utf8)
{
    size_t label = 0;
    bool numeric = true;
    if (n == 0 || n > ROUTE_DOMAIN_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '.') {
            if (label == 0)
                return false;
            label = 0;
            numeric = true;
            continue;
        }
        if (!(route_is_ldh((char)c) || (allow_utf8 && c >= 0x80)))
            return false;
        if (++label > ROUTE_LABEL_MAX)
            return false;
        numeric = numeric && route_is_digit((char)c);
    }
    /* An all-digit last label is a mistyped address ("10.0.0"), not a
     * name: no top-level domain is numeric (RFC 3696 §2). */
    return label > 0 && !numeric;
}

/* ---- next hops ---- */

/* Copies host (n bytes) lowercased into out->host. n <= ROUTE_HOST_MAX. */
static void
route_hop_set_host(struct route_hop *out, const char *host, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out->host[i] = route_lower(host[i]);
    out->host[n] = '\0';
}

/* If host (n bytes) is an IP address of the wanted family (0 = any), stores
 * its canonical text and returns true. */
static bool
route_hop_set_address(struct route_hop *out, const char *host, size_t n, int family)
{
    char tmp[ROUTE_HOST_MAX + 1];
    struct netaddr a;
    if (n > ROUTE_HOST_MAX)
        return false;
    memcpy(tmp, host, n);
    tmp[n] = '\0';
    if (netaddr_parse(&a, tmp) != 0)
        return false;
    if (family != 0 && a.family != family)
        return false;
    netaddr_format(&a, out->host, sizeof out->host);
    out->is_address = true;
    return true;
}

int
route_hop_parse(struct route_hop *out, const char *text, char *err, size_t errsize)
{
    struct route_hop hop;
    const char *s = text;
    size_t n = strlen(text);
    const char *host, *port = NULL;
    size_t hostlen, portlen = 0;

    memset(&hop, 0, sizeof hop);
    while (n > 0 && route_is_space(*s))
        s++, n--;
    while (n > 0 && route_is_space(s[n - 1]))
        n--;
    if (n == 0) {
        snprintf(err, errsize, "empty next hop");
        return -1;
    }

    if (s[0] == '[') {
        /* "[...]" or "[...]:port": Postfix's "do not look up MX". */
        const char *close = memchr(s, ']', n);
        if (close == NULL) {
            snprintf(err, errsize, "missing ']' in '%.*s'", (int)n, s);
            return -1;
        }
        host = s + 1;
        hostlen = (size_t)(close - host);
        size_t rest = n - (size_t)(close + 1 - s);
        if (rest > 0) {
            if (close[1] != ':') {
                snprintf(err, errsize, "expected ':port' after ']' in '%.*s'", (int)n, s);
                return -1;
            }
            port = close + 2;
            portlen = rest - 1;
        }
        if (hostlen == 0) {
            snprintf(err, errsize, "empty host in '%.*s'", (int)n, s);
            return -1;
        }
        hop.mx_lookup = false;
        if (route_prefix_ci(host, hostlen, "ipv6:")) {
            /* RFC 5321 §4.1.3's tag, as in a recipient's address literal. */
            if (!route_hop_set_address(&hop, host + 5, hostlen - 5, AF_INET6)) {
                snprintf(err, errsize, "bad IPv6 address in '%.*s'", (int)n, s);
                return -1;
            }
        } else if (!route_hop_set_address(&hop, host, hostlen, 0)) {
            if (hostlen > 1 && host[hostlen - 1] == '.')
                hostlen--;
            if (!route_domain_ok(host, hostlen, false)) {
                snprintf(err, errsize, "bad host name or address in '%.*s'", (int)n, s);
                return -1;
            }
            route_hop_set_host(&hop, host, hostlen);
        }
    } else {
        const char *colon = memchr(s, ':', n);
        host = s;
        hostlen = n;
        if (colon != NULL) {
            if (memchr(colon + 1, ':', n - (size_t)(colon + 1 - s)) != NULL) {
                snprintf(err, errsize,
                         "an IPv6 address needs brackets: '[%.*s]' or '[addr]:port'",
                         (int)n, s);
                return -1;
            }
            hostlen = (size_t)(colon - s);
            port = colon + 1;
            portlen = n - hostlen - 1;
        }
        if (route_hop_set_address(&hop, host, hostlen, AF_INET)) {
            /* An address has no MX: "1.2.3.4" means "[1.2.3.4]". */
            hop.mx_lookup = false;
        } else {
            if (hostlen > 1 && host[hostlen - 1] == '.')
                hostlen--;
            if (!route_domain_ok(host, hostlen, false)) {
                snprintf(err, errsize, "bad host name '%.*s'", (int)hostlen, host);
                return -1;
            }
            route_hop_set_host(&hop, host, hostlen);
            hop.mx_lookup = true;
        }
    }

    if (port != NULL) {
        uint64_t v;
        if (route_parse_decimal(port, portlen, 65535, &v) != 0 || v == 0) {
            snprintf(err, errsize, "bad port '%.*s'", (int)portlen, port);
            return -1;
        }
        hop.port = (uint16_t)v;
    }
    *out = hop;
    return 0;
}

char *
route_hop_format(const struct route_hop *hop, char *buf, size_t size)
{
    const char *open = hop->mx_lookup ? "" : "[";
    const char *close = hop->mx_lookup ? "" : "]";
    if (hop->port != 0)
        snprintf(buf, size, "%s%s%s:%u", open, hop->host, close, (unsigned)hop->port);
    else
        snprintf(buf, size, "%s%s%s", open, hop->host, close);
    return buf;
}

/* ---- reading table files ---- */

/* Walks the text one logical entry at a time: comments and blank lines
 * dropped, continuation lines joined with a space. */
struct route_reader {
    const char *text;
    size_t len;
    size_t pos;
    unsigned lineno;        /* physical lines consumed */
    unsigned entry_line;    /* first line of the entry in buf */
    const char *origin;
    char *err;
    size_t errsize;
    char *buf;              /* the entry, NUL-terminated */
    size_t used;
    size_t cap;
};

__attribute__((format(printf, 3, 4))) static void
route_errorf(struct route_reader *r, unsigned line, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(r->err, r->errsize, "%s:%u: %s", r->origin, line, msg);
}

/*
 * Sorts a parsed file's n entries (size sz each, their key string at
 * key_off and line number at line_off) with cmp, then reports the first key
 * given twice, citing both lines. Shared by transport_map and
 * destination_policy. Returns 0, or -1 with the error set in r.
 */
static int
route_sort_unique(struct route_reader *r, void *v, size_t n, size_t sz,
                  int (*cmp)(const void *, const void *), size_t key_off, size_t line_off)
{
    if (n < 2)
        return 0;
    qsort(v, n, sz, cmp);
    char *base = v;
    for (size_t i = 1; i < n; i++) {
        const char *ka = *(char *const *)(base + (i - 1) * sz + key_off);
        const char *kb = *(char *const *)(base + i * sz + key_off);
        if (strcmp(ka, kb) != 0)
            continue;
        unsigned a = *(const unsigned *)(base + (i - 1) * sz + line_off);
        unsigned b = *(const unsigned *)(base + i * sz + line_off);
        route_errorf(r, a > b ? a : b, "duplicate entry for '%s' (also on line %u)", kb,
                     a > b ? b : a);
        return -1;
    }
    return 0;
}

static void
route_reader_append(struct route_reader *r, const char *s, size_t n)
{
    if (r->used + n + 1 > r->cap) {
        r->cap = (r->used + n + 1) * 2;
        r->buf = xrealloc(r->buf, r->cap);
    }
    memcpy(r->buf + r->used, s, n);
    r->used += n;
    r->buf[r->used] = '\0';
}

/* Returns 1 with the next entry in r->buf, 0 at the end, -1 on error. */
static int
route_reader_next(struct route_reader *r)
{
    bool have = false;
    r->used = 0;
    while (r->pos < r->len) {
        const char *line = r->text + r->pos;
        size_t avail = r->len - r->pos;
        const char *nl = memchr(line, '\n', avail);
        size_t n = nl ? (size_t)(nl - line) : avail;
        size_t next = r->pos + n + (nl ? 1 : 0);

        if (n > 0 && line[n - 1] == '\r')
            n--;
        if (memchr(line, '\0', n) != NULL) {
            route_errorf(r, r->lineno + 1, "NUL byte in the line");
            return -1;
        }
        const char *hash = memchr(line, '#', n);
        if (hash != NULL)
            n = (size_t)(hash - line);
        size_t lead = 0;
        while (lead < n && route_is_space(line[lead]))
            lead++;
        if (lead == n) {                     /* blank or comment */
            r->pos = next;
            r->lineno++;
            continue;
        }
        if (lead == 0 && have)
            return 1;                        /* the next entry starts here */
        if (lead > 0 && !have) {
            route_errorf(r, r->lineno + 1, "continuation line with no entry before it");
            return -1;
        }
        if (r->used + n + 1 > ROUTE_LINE_MAX) {
            route_errorf(r, have ? r->entry_line : r->lineno + 1, "entry too long");
            return -1;
        }
        r->pos = next;
        r->lineno++;
        if (!have) {
            have = true;
            r->entry_line = r->lineno;
        } else {
            route_reader_append(r, " ", 1);
        }
        route_reader_append(r, line + lead, n - lead);
    }
    return have ? 1 : 0;
}

/* Splits line in place at white space. Returns the field count, or
 * ROUTE_FIELDS_MAX + 1 if there are more. */
static size_t
route_split(char *line, char **fields)
{
    size_t count = 0;
    char *p = line;
    for (;;) {
        while (route_is_space(*p))
            p++;
        if (*p == '\0')
            return count;
        if (count == ROUTE_FIELDS_MAX)
            return ROUTE_FIELDS_MAX + 1;
        fields[count++] = p;
        while (*p != '\0' && !route_is_space(*p))
            p++;
        if (*p != '\0')
            *p++ = '\0';
    }
}

/*
 * A table key: "*", "domain", ".domain" (subdomains only), or an address
 * literal "[...]" (matched as text). Stores it lowercased without a
 * trailing dot in out (ROUTE_HOST_MAX + 1 bytes).
 */
static int
route_key_parse(const char *field, char *out)
{
    size_t n = strlen(field);
    if (strcmp(field, "*") == 0) {
        strcpy(out, "*");
        return 0;
    }
    if (field[0] == '[') {
        if (n < 3 || n > ROUTE_HOST_MAX || field[n - 1] != ']')
            return -1;
    } else {
        size_t start = field[0] == '.' ? 1 : 0;
        if (n > start + 1 && field[n - 1] == '.')
            n--;
        if (!route_domain_ok(field + start, n - start, true))
            return -1;
    }
    for (size_t i = 0; i < n; i++)
        out[i] = route_lower(field[i]);
    out[n] = '\0';
    return 0;
}

/*
 * Fills keys with the lookup keys of domain, most specific first: the
 * domain, then ".parent" from the nearest parent up, then "*". domain is
 * lowercased into buf (ROUTE_HOST_MAX + 1); the keys point into buf or at
 * a literal. Returns the number of keys.
 */
static size_t
route_lookup_keys(const char *domain, char *buf, const char **keys, size_t max)
{
    size_t n = strlen(domain), count = 0;
    if (n > 1 && domain[n - 1] == '.')
        n--;
    if (n > 0 && n <= ROUTE_HOST_MAX) {
        for (size_t i = 0; i < n; i++)
            buf[i] = route_lower(domain[i]);
        buf[n] = '\0';
        keys[count++] = buf;
        if (buf[0] != '[') {
            for (size_t i = 1; i < n && count + 1 < max; i++)
                if (buf[i] == '.')
                    keys[count++] = buf + i;
        }
    }
    keys[count++] = "*";
    return count;
}

/* ---- transport_map ---- */

struct route_entry {
    char *key;
    struct route_hop hop;
    bool is_default;        /* "smtp:": no override */
    unsigned line;
};

struct route_table {
    struct route_entry *v;
    size_t n;
};

static int
route_entry_cmp(const void *a, const void *b)
{
    const struct route_entry *x = a, *y = b;
    return strcmp(x->key, y->key);
}

static int
route_key_cmp(const void *key, const void *entry)
{
    return strcmp(key, ((const struct route_entry *)entry)->key);
}

struct route_table *
route_table_free(struct route_table *t)
{
    if (t == NULL)
        return NULL;
    for (size_t i = 0; i < t->n; i++)
        xfree(t->v[i].key);
    xfree(t->v);
    return xfree(t);
}

size_t
route_table_count(const struct route_table *t)
{
    return t ? t->n : 0;
}

/* Parses a transport_map value into e: "smtp:" alone, an optional "smtp:"
 * prefix, then a next hop. */
static int
route_entry_value(struct route_reader *r, const char *value, struct route_entry *e)
{
    char why[256];
    const char *colon = strchr(value, ':');
    if (route_prefix_ci(value, strlen(value), "smtp:")) {
        value += 5;
        if (*value == '\0') {
            e->is_default = true;
            return 0;
        }
    } else if (value[0] != '[' && colon != NULL && strchr(colon + 1, ':') == NULL) {
        /* "lmtp:host", "relay:host": another Postfix transport. */
        bool digits = colon[1] != '\0';
        for (const char *p = colon + 1; *p; p++)
            digits = digits && route_is_digit(*p);
        if (!digits) {
            route_errorf(r, r->entry_line, "unsupported transport '%.*s' (only smtp:)",
                         (int)(colon - value), value);
            return -1;
        }
    }
    if (route_hop_parse(&e->hop, value, why, sizeof why) != 0) {
        route_errorf(r, r->entry_line, "%s", why);
        return -1;
    }
    return 0;
}

int
route_table_parse(struct route_table **out, const char *text, size_t len, const char *origin,
                  char *err, size_t errsize)
{
    struct route_reader r = {
        .text = text, .len = len, .origin = origin, .err = err, .errsize = errsize,
    };
    struct route_table *t = xcalloc(1, sizeof *t);
    size_t cap = 0;
    int rc;

    while ((rc = route_reader_next(&r)) == 1) {
        char *fields[ROUTE_FIELDS_MAX];
        char key[ROUTE_HOST_MAX + 1];
        size_t nf = route_split(r.buf, fields);
        struct route_entry e = { .line = r.entry_line };

        if (nf != 2) {
            route_errorf(&r, r.entry_line, "expected 'domain nexthop', got %zu field%s",
                         nf, nf == 1 ? "" : "s");
            rc = -1;
            break;
        }
        if (route_key_parse(fields[0], key) != 0) {
            route_errorf(&r, r.entry_line, "bad domain '%s'", fields[0]);
            rc = -1;
            break;
        }
        if (route_entry_value(&r, fields[1], &e) != 0) {
            rc = -1;
            break;
        }
        e.key = xstrdup(key);
        if (t->n == cap) {
            cap = cap ? cap * 2 : 16;
            t->v = xrealloc(t->v, cap * sizeof *t->v);
        }
        t->v[t->n++] = e;
    }
    if (rc == 0)
        rc = route_sort_unique(&r, t->v, t->n, sizeof *t->v, route_entry_cmp,
                               offsetof(struct route_entry, key),
                               offsetof(struct route_entry, line));
    xfree(r.buf);
    if (rc != 0) {
        route_table_free(t);
        return -1;
    }
    *out = t;
    return 0;
}

enum route_result
route_lookup(const struct route_table *t, const char *domain, struct route_hop *out)
{
    char buf[ROUTE_HOST_MAX + 1];
    const char *keys[ROUTE_DOMAIN_MAX / 2 + 3];
    if (t == NULL || t->n == 0)
        return ROUTE_DEFAULT;
    size_t nkeys = route_lookup_keys(domain, buf, keys, sizeof keys / sizeof keys[0]);
    for (size_t i = 0; i < nkeys; i++) {
        const struct route_entry *e = bsearch(keys[i], t->v, t->n, sizeof *t->v, route_key_cmp);
        if (e == NULL)
            continue;
        if (e->is_default)
            return ROUTE_DEFAULT;
        *out = e->hop;
        return ROUTE_HOP;
    }
    return ROUTE_DEFAULT;
}

int
route_resolve(const struct route_table *t, const struct route_hop *relayhost,
              const char *domain, struct route_hop *out)
{
    if (route_lookup(t, domain, out) == ROUTE_HOP)
        return 0;
    if (relayhost != NULL && relayhost->host[0] != '\0') {
        *out = *relayhost;
        return 0;
    }
    size_t n = strlen(domain);
    memset(out, 0, sizeof *out);
    if (n > 0 && domain[0] == '[') {
        /* RFC 5321 §4.1.3: IPv4-address-literal or "IPv6:" tag; other
         * general address literals name nothing we can connect to. */
        if (n < 3 || domain[n - 1] != ']')
            return -1;
        const char *inner = domain + 1;
        size_t innerlen = n - 2;
        if (route_prefix_ci(inner, innerlen, "ipv6:"))
            return route_hop_set_address(out, inner + 5, innerlen - 5, AF_INET6) ? 0 : -1;
        /* netaddr folds "::ffff:a.b.c.d" to AF_INET, so require dots-only text. */
        if (memchr(inner, ':', innerlen) != NULL)
            return -1;
        return route_hop_set_address(out, inner, innerlen, AF_INET) ? 0 : -1;
    }
    if (n > 1 && domain[n - 1] == '.')
        n--;
    if (n > ROUTE_HOST_MAX)
        return -1;
    route_hop_set_host(out, domain, n);
    out->mx_lookup = true;
    return 0;
}

/* ---- destination_policy ---- */

enum route_key_type {
    ROUTE_KEY_UINT,         /* unsigned, >= min */
    ROUTE_KEY_RATE,         /* struct route_rate */
    ROUTE_KEY_CHOICE,       /* unsigned: index into choices */
};

struct route_policy_key {
    const char *name;
    enum route_key_type type;
    size_t offset;          /* in struct route_limits */
    unsigned min;
    const char *const *choices;   /* ROUTE_KEY_CHOICE */
};

#define ROUTE_LIMIT(field) offsetof(struct route_limits, field)

/* Same names as the main.cf settings they override. */
static const struct route_policy_key route_policy_keys[] = {
    { "max_connections", ROUTE_KEY_UINT, ROUTE_LIMIT(max_connections), 1, NULL },
    { "max_messages_per_connection", ROUTE_KEY_UINT,
      ROUTE_LIMIT(max_messages_per_connection), 1, NULL },
    { "max_rcpt_per_transaction", ROUTE_KEY_UINT, ROUTE_LIMIT(max_rcpt_per_transaction), 1,
      NULL },
    { "max_message_rate", ROUTE_KEY_RATE, ROUTE_LIMIT(max_message_rate), 0, NULL },
    { "max_connection_rate", ROUTE_KEY_RATE, ROUTE_LIMIT(max_connection_rate), 0, NULL },
    { "smtp_tls_security_level", ROUTE_KEY_CHOICE, ROUTE_LIMIT(smtp_tls_security_level), 0,
      config_tls_level_words },
};
#define ROUTE_NKEYS (sizeof route_policy_keys / sizeof route_policy_keys[0])
_Static_assert(ROUTE_NKEYS <= 32, "the set mask is 32 bits");

struct route_policy_entry {
    char *key;
    struct route_limits v;
    uint32_t set;           /* bit i: route_policy_keys[i] given */
    unsigned line;
};

struct route_policy {
    struct route_policy_entry *v;
    size_t n;
};

static int
route_pentry_cmp(const void *a, const void *b)
{
    const struct route_policy_entry *x = a, *y = b;
    return strcmp(x->key, y->key);
}

static int
route_pkey_cmp(const void *key, const void *entry)
{
    return strcmp(key, ((const struct route_policy_entry *)entry)->key);
}

void
route_limits_from_config(struct route_limits *out, const struct config *cfg)
{
    memset(out, 0, sizeof *out);
    out->max_connections = cfg->max_connections;
    out->max_messages_per_connection = cfg->max_messages_per_connection;
    out->max_rcpt_per_transaction = cfg->max_rcpt_per_transaction;
    out->max_message_rate = (struct route_rate){ cfg->max_message_rate, 1000 };
    out->max_connection_rate = (struct route_rate){ cfg->max_connection_rate, 1000 };
    out->smtp_tls_security_level = (unsigned)cfg->smtp_tls_security_level;
}

int
route_rate_parse(const char *text, struct route_rate *out)
{
    static const struct {
        const char *unit;
        uint64_t ms;
    } units[] = {
        { "s", 1000 }, { "sec", 1000 }, { "m", 60000 }, { "min", 60000 },
        { "h", 3600000 }, { "hour", 3600000 }, { "d", 86400000 }, { "day", 86400000 },
    };
    const char *slash = strchr(text, '/');
    size_t n = slash ? (size_t)(slash - text) : strlen(text);
    uint64_t count, per_ms = 1000;

    /* 10^12 per period is far past any link; it keeps count * ms in range. */
    if (route_parse_decimal(text, n, 1000000000000ULL, &count) != 0)
        return -1;
    if (slash != NULL) {
        size_t i;
        for (i = 0; i < sizeof units / sizeof units[0]; i++)
            if (strcmp(slash + 1, units[i].unit) == 0)
                break;
        if (i == sizeof units / sizeof units[0])
            return -1;
        per_ms = units[i].ms;
    }
    out->count = count;
    out->per_ms = per_ms;
    return 0;
}

/* Parses "key=value" into e. */
static int
route_policy_setting(struct route_reader *r, const char *field, struct route_policy_entry *e)
{
    const char *eq = strchr(field, '=');
    if (eq == NULL || eq == field) {
        route_errorf(r, r->entry_line, "expected key=value, got '%s'", field);
        return -1;
    }
    size_t klen = (size_t)(eq - field);
    const char *value = eq + 1;
    size_t i;
    for (i = 0; i < ROUTE_NKEYS; i++)
        if (strlen(route_policy_keys[i].name) == klen &&
            memcmp(route_policy_keys[i].name, field, klen) == 0)
            break;
    if (i == ROUTE_NKEYS) {
        route_errorf(r, r->entry_line, "unknown key '%.*s'", (int)klen, field);
        return -1;
    }
    const struct route_policy_key *k = &route_policy_keys[i];
    if (e->set & (UINT32_C(1) << i)) {
        route_errorf(r, r->entry_line, "%s given twice", k->name);
        return -1;
    }
    char *dst = (char *)&e->v + k->offset;
    switch (k->type) {
    case ROUTE_KEY_UINT: {
        uint64_t v;
        if (route_parse_decimal(value, strlen(value), UINT_MAX, &v) != 0 || v < k->min) {
            route_errorf(r, r->entry_line, "bad value for %s: '%s' (a number >= %u)",
                         k->name, value, k->min);
            return -1;
        }
        unsigned u = (unsigned)v;
        memcpy(dst, &u, sizeof u);
        break;
    }
    case ROUTE_KEY_CHOICE: {
        unsigned c;
        for (c = 0; k->choices[c] != NULL; c++)
            if (strcmp(k->choices[c], value) == 0)
                break;
        if (k->choices[c] == NULL) {
            route_errorf(r, r->entry_line, "bad value for %s: '%s'", k->name, value);
            return -1;
        }
        memcpy(dst, &c, sizeof c);
        break;
    }
    case ROUTE_KEY_RATE: {
        struct route_rate rate;
        if (route_rate_parse(value, &rate) != 0) {
            route_errorf(r, r->entry_line,
                         "bad value for %s: '%s' (N, N/s, N/m, N/h or N/d)", k->name,
                         value);
            return -1;
        }
        memcpy(dst, &rate, sizeof rate);
        break;
    }
    }
    e->set |= UINT32_C(1) << i;
    return 0;
}

struct route_policy *
route_policy_free(struct route_policy *p)
{
    if (p == NULL)
        return NULL;
    for (size_t i = 0; i < p->n; i++)
        xfree(p->v[i].key);
    xfree(p->v);
    return xfree(p);
}

size_t
route_policy_count(const struct route_policy *p)
{
    return p ? p->n : 0;
}

int
route_policy_parse(struct route_policy **out, const char *text, size_t len,
                   const char *origin, char *err, size_t errsize)
{
    struct route_reader r = {
        .text = text, .len = len, .origin = origin, .err = err, .errsize = errsize,
    };
    struct route_policy *p = xcalloc(1, sizeof *p);
    size_t cap = 0;
    int rc;

    while ((rc = route_reader_next(&r)) == 1) {
        char *fields[ROUTE_FIELDS_MAX];
        char key[ROUTE_HOST_MAX + 1];
        size_t nf = route_split(r.buf, fields);
        struct route_policy_entry e = { .line = r.entry_line };

        if (nf < 2) {
            route_errorf(&r, r.entry_line, "expected 'domain key=value ...'");
            rc = -1;
            break;
        }
        if (nf > ROUTE_FIELDS_MAX) {
            route_errorf(&r, r.entry_line, "too many fields");
            rc = -1;
            break;
        }
        if (route_key_parse(fields[0], key) != 0) {
            route_errorf(&r, r.entry_line, "bad domain '%s'", fields[0]);
            rc = -1;
            break;
        }
        for (size_t i = 1; i < nf && rc == 1; i++)
            if (route_policy_setting(&r, fields[i], &e) != 0)
                rc = -1;
        if (rc != 1)
            break;
        e.key = xstrdup(key);
        if (p->n == cap) {
            cap = cap ? cap * 2 : 16;
            p->v = xrealloc(p->v, cap * sizeof *p->v);
        }
        p->v[p->n++] = e;
    }
    if (rc == 0)
        rc = route_sort_unique(&r, p->v, p->n, sizeof *p->v, route_pentry_cmp,
                               offsetof(struct route_policy_entry, key),
                               offsetof(struct route_policy_entry, line));
    xfree(r.buf);
    if (rc != 0) {
        route_policy_free(p);
        return -1;
    }
    *out = p;
    return 0;
}

/* Copies the keys e sets into out. */
static void
route_policy_apply(const struct route_policy_entry *e, struct route_limits *out)
{
    for (size_t i = 0; i < ROUTE_NKEYS; i++) {
        if (!(e->set & (UINT32_C(1) << i)))
            continue;
        const struct route_policy_key *k = &route_policy_keys[i];
        size_t size = k->type == ROUTE_KEY_RATE ? sizeof(struct route_rate) : sizeof(unsigned);
        memcpy((char *)out + k->offset, (const char *)&e->v + k->offset, size);
    }
}

void
route_policy_lookup(const struct route_policy *p, const struct config *cfg,
                    const char *domain, struct route_limits *out)
{
    char buf[ROUTE_HOST_MAX + 1];
    const char *keys[ROUTE_DOMAIN_MAX / 2 + 3];
    route_limits_from_config(out, cfg);
    if (p == NULL || p->n == 0)
        return;
    size_t nkeys = route_lookup_keys(domain, buf, keys, sizeof keys / sizeof keys[0]);
    /* keys run most specific first; apply least specific first. */
    for (size_t i = nkeys; i-- > 0;) {
        const struct route_policy_entry *e =
            bsearch(keys[i], p->v, p->n, sizeof *p->v, route_pkey_cmp);
        if (e != NULL)
            route_policy_apply(e, out);
    }
}

/* ---- smtp_sasl_password_file ---- */

struct route_credential {
    char *key;              /* route_credential_key() of the next hop */
    char *user;
    char *pass;
    unsigned line;
};

struct route_credentials {
    struct route_credential *v;
    size_t n;
};

/* "[host]:port" / "host:port" with the port always written, or the bare
 * host when the entry names a host without brackets or port (it then
 * serves that host on any port, as Postfix's hostname lookup does). */
static void
route_credential_key(const struct route_hop *hop, uint16_t default_port, bool bare, char *buf,
                     size_t size)
{
    if (bare) {
        snprintf(buf, size, "%s", hop->host);
        return;
    }
    struct route_hop h = *hop;
    if (h.port == 0)
        h.port = default_port;
    route_hop_format(&h, buf, size);
}

static int
route_credential_cmp(const void *a, const void *b)
{
    return strcmp(((const struct route_credential *)a)->key,
                  ((const struct route_credential *)b)->key);
}

static int
route_credential_key_cmp(const void *key, const void *entry)
{
    return strcmp(key, ((const struct route_credential *)entry)->key);
}

static void
route_secret_free(char *s)
{
    if (s != NULL) {
        explicit_bzero(s, strlen(s));
        xfree(s);
    }
}

struct route_credentials *
route_credentials_free(struct route_credentials *t)
{
    if (t == NULL)
        return NULL;
    for (size_t i = 0; i < t->n; i++) {
        xfree(t->v[i].key);
        route_secret_free(t->v[i].user);
        route_secret_free(t->v[i].pass);
    }
    xfree(t->v);
    return xfree(t);
}

size_t
route_credentials_count(const struct route_credentials *t)
{
    return t ? t->n : 0;
}

int
route_credentials_parse(struct route_credentials **out, const char *text, size_t len,
                        uint16_t default_port, const char *origin, char *err, size_t errsize)
{
    struct route_reader r = {
        .text = text, .len = len, .origin = origin, .err = err, .errsize = errsize,
    };
    struct route_credentials *t = xcalloc(1, sizeof *t);
    size_t cap = 0;
    int rc;

    while ((rc = route_reader_next(&r)) == 1) {
        char *fields[ROUTE_FIELDS_MAX];
        size_t nf = route_split(r.buf, fields);
        struct route_hop hop;
        char why[256], key[ROUTE_HOST_MAX + 16];
        if (nf != 2) {
            route_errorf(&r, r.entry_line, "expected 'nexthop user:password', got %zu field%s",
                         nf, nf == 1 ? "" : "s");
            rc = -1;
            break;
        }
        if (route_hop_parse(&hop, fields[0], why, sizeof why) != 0) {
            route_errorf(&r, r.entry_line, "%s", why);
            rc = -1;
            break;
        }
        const char *colon = strchr(fields[1], ':');
        size_t ulen = colon ? (size_t)(colon - fields[1]) : 0;
        if (colon == NULL || ulen == 0 || ulen > ROUTE_SECRET_MAX
            || strlen(colon + 1) > ROUTE_SECRET_MAX) {
            /* The value is a secret: the message does not repeat it. */
            route_errorf(&r, r.entry_line,
                         "expected user:password after '%s' (each 1 to %u octets)", fields[0],
                         ROUTE_SECRET_MAX);
            explicit_bzero(r.buf, r.used);
            rc = -1;
            break;
        }
        /* "relay.example" or "192.0.2.1": no brackets and no port. */
        bool bare = fields[0][0] != '[' && hop.port == 0;
        route_credential_key(&hop, default_port, bare, key, sizeof key);
        struct route_credential e = {
            .key = xstrdup(key),
            .user = xstrndup(fields[1], ulen),
            .pass = xstrdup(colon + 1),
            .line = r.entry_line,
        };
        explicit_bzero(r.buf, r.used);
        if (t->n == cap) {
            cap = cap ? cap * 2 : 8;
            t->v = xrealloc(t->v, cap * sizeof *t->v);
        }
        t->v[t->n++] = e;
    }
    if (rc == 0)
        rc = route_sort_unique(&r, t->v, t->n, sizeof *t->v, route_credential_cmp,
                               offsetof(struct route_credential, key),
                               offsetof(struct route_credential, line));
    if (r.buf != NULL)
        explicit_bzero(r.buf, r.cap);
    xfree(r.buf);
    if (rc != 0) {
        route_credentials_free(t);
        return -1;
    }
    *out = t;
    return 0;
}

bool
route_credentials_lookup(const struct route_credentials *t, const struct route_hop *hop,
                         uint16_t default_port, const char **user, const char **pass)
{
    if (t == NULL || t->n == 0)
        return false;
    char key[ROUTE_HOST_MAX + 16];
    for (int bare = 0; bare <= 1; bare++) {
        route_credential_key(hop, default_port, bare, key, sizeof key);
        const struct route_credential *e =
            bsearch(key, t->v, t->n, sizeof *t->v, route_credential_key_cmp);
        if (e != NULL) {
            *user = e->user;
            *pass = e->pass;
            return true;
        }
    }
    return false;
}
