/*
 * netaddr - IPv4/IPv6 addresses and CIDR lists (relay_networks).
 *
 * Any thread; a cidr_list is immutable once parsed. No I/O, no DNS: text is
 * parsed with inet_pton, which takes dotted-quad IPv4 only (no "10.1",
 * no octal, no hex), so an address has exactly one spelling per family.
 *
 * Invariants: bytes beyond the family's length are zero, and an IPv4-mapped
 * IPv6 address (::ffff:a.b.c.d) is always stored as AF_INET. A dual-stack
 * listener reports IPv4 clients in mapped form; folding them keeps
 * "127.0.0.0/8" matching those clients instead of silently never matching.
 * CIDR entries have no host bits set below the prefix: "10.1.2.3/8" is
 * refused rather than guessed at, since either guess may trust the wrong hosts.
 */
#include "netaddr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"

/* Longest token worth looking at: "[" + 45-char IPv6 text + "]/128". */
#define NETADDR_TOKEN_MAX 64

static const uint8_t netaddr_v4mapped_prefix[12] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff,
};

/* Stores a 16-octet IPv6 address, folding the IPv4-mapped range to AF_INET. */
static void
netaddr_set_v6(struct netaddr *out, const uint8_t b[16])
{
    memset(out, 0, sizeof *out);
    if (memcmp(b, netaddr_v4mapped_prefix, sizeof netaddr_v4mapped_prefix) == 0) {
        out->family = AF_INET;
        memcpy(out->bytes, b + 12, 4);
    } else {
        out->family = AF_INET6;
        memcpy(out->bytes, b, 16);
    }
}

int
netaddr_from_sockaddr(struct netaddr *out, const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in4 = (const struct sockaddr_in *)sa;
        memset(out, 0, sizeof *out);
        out->family = AF_INET;
        memcpy(out->bytes, &in4->sin_addr, 4);
        return 0;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        netaddr_set_v6(out, in6->sin6_addr.s6_addr);
        return 0;
    }
    return -1;
}

/* Parses exactly n octets of text (not NUL-terminated) as an address. */
static int
netaddr_parse_n(struct netaddr *out, const char *text, size_t n)
{
    char buf[INET6_ADDRSTRLEN];
    uint8_t b[16];

    /* inet_pton needs a C string; copying also bounds what it reads. */
    if (n == 0 || n >= sizeof buf || memchr(text, '\0', n) != NULL)
        return -1;
    memcpy(buf, text, n);
    buf[n] = '\0';
    if (inet_pton(AF_INET, buf, b) == 1) {
        memset(out, 0, sizeof *out);
        out->family = AF_INET;
        memcpy(out->bytes, b, 4);
        return 0;
    }
    if (inet_pton(AF_INET6, buf, b) == 1) {
        netaddr_set_v6(out, b);
        return 0;
    }
    return -1;
}

int
netaddr_parse(struct netaddr *out, const char *text)
{
    return netaddr_parse_n(out, text, strnlen(text, INET6_ADDRSTRLEN));
}

char *
netaddr_format(const struct netaddr *a, char *buf, size_t size)
{
    if (size == 0)
        return buf;
    if ((a->family != AF_INET && a->family != AF_INET6)
        || inet_ntop(a->family, a->bytes, buf, (socklen_t)size) == NULL)
        snprintf(buf, size, "?");
    return buf;
}

/* True when a and net agree on the first prefix bits (same family only). */
static bool
netaddr_prefix_eq(const struct netaddr *a, const struct netaddr *net, unsigned prefix)
{
    unsigned whole = prefix / 8, rest = prefix % 8;

    if (a->family != net->family)
        return false;
    if (memcmp(a->bytes, net->bytes, whole) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (a->bytes[whole] & mask) == (net->bytes[whole] & mask);
}

static void
cidr_error(char *err, size_t errsize, const char *what, const char *tok, size_t n)
{
    int shown = (int)(n > NETADDR_TOKEN_MAX ? NETADDR_TOKEN_MAX : n);

    if (err != NULL && errsize > 0)
        snprintf(err, errsize, "%s: \"%.*s\"", what, shown, tok);
}

/* Parses the decimal prefix length s[0..n); -1 if malformed or above max. */
static int
cidr_parse_prefix(const char *s, size_t n, unsigned max)
{
    unsigned v = 0;

    /* "/08" is refused: one spelling per value, like the addresses. */
    if (n == 0 || n > 3 || (n > 1 && s[0] == '0'))
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    return v > max ? -1 : (int)v;
}

/* Parses one token "addr", "[addr]", "addr/len" or "[addr]/len". */
static int
cidr_parse_one(struct cidr *out, const char *tok, size_t n, char *err, size_t errsize)
{
    const char *slash = memchr(tok, '/', n);
    size_t alen = slash != NULL ? (size_t)(slash - tok) : n;
    const char *addr = tok;

    if (alen >= 2 && addr[0] == '[' && addr[alen - 1] == ']') {
        addr++;
        alen -= 2;
    }
    if (netaddr_parse_n(&out->net, addr, alen) < 0) {
        cidr_error(err, errsize, "bad network address", tok, n);
        return -1;
    }
    /* A network written in IPv4-mapped form was folded to AF_INET, so its
     * prefix counts from bit 96 of the IPv6 spelling. */
    bool written_v6 = memchr(addr, ':', alen) != NULL;
    unsigned max = written_v6 ? 128 : 32;
    int prefix = (int)max;
    if (slash != NULL) {
        prefix = cidr_parse_prefix(slash + 1, n - (size_t)(slash + 1 - tok), max);
        if (prefix < 0) {
            cidr_error(err, errsize, "bad network prefix length", tok, n);
            return -1;
        }
    }
    if (written_v6 && out->net.family == AF_INET) {
        if (prefix < 96) {
            cidr_error(err, errsize, "IPv4-mapped network needs a prefix of at least 96", tok, n);
            return -1;
        }
        prefix -= 96;
    }
    out->prefix = (uint8_t)prefix;

    struct netaddr masked = { .family = out->net.family };
    memcpy(masked.bytes, out->net.bytes, (size_t)prefix / 8);
    if (prefix % 8)
        masked.bytes[prefix / 8] = out->net.bytes[prefix / 8] & (uint8_t)(0xff << (8 - prefix % 8));
    if (memcmp(masked.bytes, out->net.bytes, sizeof masked.bytes) != 0) {
        cidr_error(err, errsize, "host bits set below the prefix length", tok, n);
        return -1;
    }
    return 0;
}

static bool
cidr_is_separator(char c)
{
    /* Newlines too: a config value may continue over several lines. */
    return c == ',' || c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

int
cidr_list_parse(struct cidr_list *out, const char *text, char *err, size_t errsize)
{
    size_t cap = 0;
    const char *s = text;

    out->items = NULL;
    out->count = 0;
    if (err != NULL && errsize > 0)
        err[0] = '\0';
    for (;;) {
        while (*s != '\0' && cidr_is_separator(*s))
            s++;
        if (*s == '\0')
            return 0;
        size_t n = 0;
        while (s[n] != '\0' && !cidr_is_separator(s[n]))
            n++;
        if (n > NETADDR_TOKEN_MAX) {
            cidr_error(err, errsize, "network entry too long", s, n);
            cidr_list_free(out);
            return -1;
        }
        if (out->count == cap) {
            cap = cap ? cap * 2 : 8;
            out->items = xrealloc(out->items, cap * sizeof *out->items);
        }
        if (cidr_parse_one(&out->items[out->count], s, n, err, errsize) < 0) {
            cidr_list_free(out);
            return -1;
        }
        out->count++;
        s += n;
    }
}

bool
cidr_list_match(const struct cidr_list *list, const struct netaddr *a)
{
    for (size_t i = 0; i < list->count; i++)
        if (netaddr_prefix_eq(a, &list->items[i].net, list->items[i].prefix))
            return true;
    return false;
}

void
cidr_list_free(struct cidr_list *list)
{
    list->items = xfree(list->items);
    list->count = 0;
}
