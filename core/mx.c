/*
 * mx - what a mail destination's DNS answers mean.
 *
 * Any thread; pure functions over caller memory, no I/O, no clock, nothing of
 * the resolver library. io/dns.c asks the questions and feeds the answers
 * here; tests drive these functions with plain arrays and hand-made packets.
 *
 * Invariants: an mx_result with status MX_OK has hosts, each with at least
 * one address; a failed one has none. Names in results are lower case without
 * the trailing dot, so the cache and the log see one spelling per name.
 *
 * Hazards: everything parsed here comes from the network. mx_wire_ttls checks
 * every offset against the length before reading and follows no compression
 * pointers (it only skips names), so a hostile packet cannot make it loop.
 */
#include "mx.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "alloc.h"

/* DNS wire constants (RFC 1035 §3.2.2, §4.1.1). */
#define MX_T_SOA 6
#define MX_DNS_HEADER 12

uint64_t
mx_rng_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Uniform in [0, n) (n > 0); the modulo bias is irrelevant for n this small. */
static size_t
mx_rng_below(uint64_t *state, size_t n)
{
    return (size_t)(mx_rng_next(state) % n);
}

const char *
mx_answer_name(enum mx_answer a)
{
    switch (a) {
    case MX_ANSWER_RECORDS:     return "RECORDS";
    case MX_ANSWER_NODATA:      return "NODATA";
    case MX_ANSWER_NXDOMAIN:    return "NXDOMAIN";
    case MX_ANSWER_BADNAME:     return "BADNAME";
    case MX_ANSWER_SERVFAIL:    return "SERVFAIL";
    case MX_ANSWER_REFUSED:     return "REFUSED";
    case MX_ANSWER_TIMEOUT:     return "TIMEOUT";
    case MX_ANSWER_UNREACHABLE: return "UNREACHABLE";
    case MX_ANSWER_BADRESP:     return "BADRESP";
    case MX_ANSWER_ERROR:       return "ERROR";
    }
    return "?";
}

const char *
mx_answer_text(enum mx_answer a)
{
    switch (a) {
    case MX_ANSWER_RECORDS:     return "records found";
    case MX_ANSWER_NODATA:      return "no records of that type (NODATA)";
    case MX_ANSWER_NXDOMAIN:    return "domain not found (NXDOMAIN)";
    case MX_ANSWER_BADNAME:     return "name cannot be looked up";
    case MX_ANSWER_SERVFAIL:    return "DNS server failure (SERVFAIL)";
    case MX_ANSWER_REFUSED:     return "query refused (REFUSED)";
    case MX_ANSWER_TIMEOUT:     return "no answer from the DNS servers (timeout)";
    case MX_ANSWER_UNREACHABLE:
        return "no DNS server gave an answer (SERVFAIL, REFUSED or unreachable)";
    case MX_ANSWER_BADRESP:     return "malformed DNS response";
    case MX_ANSWER_ERROR:       return "resolver error";
    }
    return "?";
}

const char *
mx_status_name(enum mx_status s)
{
    switch (s) {
    case MX_OK:        return "OK";
    case MX_TEMPORARY: return "TEMPORARY";
    case MX_PERMANENT: return "PERMANENT";
    }
    return "?";
}

/* The decision table for the MX query. */
enum mx_status
mx_decide(enum mx_answer a, const char **dsn)
{
    switch (a) {
    case MX_ANSWER_RECORDS:
    case MX_ANSWER_NODATA:      /* RFC 5321 §5.1: implicit MX */
        *dsn = "";
        return MX_OK;
    /* RFC 3463: X.1.2 "Bad destination system address": the domain does not
     * exist. A name that cannot be queried at all is as final. */
    case MX_ANSWER_NXDOMAIN:
    case MX_ANSWER_BADNAME:
        *dsn = "5.1.2";
        return MX_PERMANENT;
    /* RFC 3463: X.4.3 "Directory server failure": the answer may be there
     * next time. A REFUSED usually means a resolver misconfiguration on our
     * side, never a verdict about the destination. */
    case MX_ANSWER_SERVFAIL:
    case MX_ANSWER_REFUSED:
    case MX_ANSWER_TIMEOUT:
    case MX_ANSWER_UNREACHABLE:
    case MX_ANSWER_BADRESP:
    case MX_ANSWER_ERROR:
        break;
    }
    *dsn = "4.4.3";
    return MX_TEMPORARY;
}

/* RFC 7505 §3: "a single MX RR with an RDATA exchange of "." and preference
 * 0". A "." among other records is not a null MX (the RFC forbids the mix);
 * mx_order drops it and delivery tries the others. */
bool
mx_is_null(const struct mx_record *recs, size_t n)
{
    if (n != 1 || recs[0].preference != 0)
        return false;
    return recs[0].name[0] == '\0' || strcmp(recs[0].name, ".") == 0;
}

int
mx_normalize_name(char *out, size_t outsize, const char *in)
{
    size_t len = strlen(in);
    if (len > 0 && in[len - 1] == '.')
        len--;
    if (outsize > 0)
        out[0] = '\0';
    if (len == 0 || len > 253 || len >= outsize)
        return -1;
    size_t label = 0;
    for (size_t i = 0; i < len; i++) {
        char c = in[i];
        if (c == '.') {
            if (label == 0 || in[i - 1] == '-')
                goto bad;
            label = 0;
            out[i] = '.';
            continue;
        }
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
                  || c == '-' || c == '_';
        if (!ok || (label == 0 && c == '-') || ++label > 63)
            goto bad;
        out[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
    }
    if (in[len - 1] == '-')
        goto bad;
    out[len] = '\0';
    return 0;
bad:
    out[0] = '\0';
    return -1;
}

int
mx_parse_literal(const char *text, bool bare, struct netaddr *out)
{
    size_t len = strlen(text);
    if (len > 0 && text[0] == '[') {
        char buf[64];
        if (len < 3 || text[len - 1] != ']' || len - 2 >= sizeof buf)
            return -1;
        memcpy(buf, text + 1, len - 2);
        buf[len - 2] = '\0';
        /* RFC 5321 §4.1.3: IPv6 literals carry the "IPv6:" tag; IPv4 bare. */
        if (strncasecmp(buf, "IPv6:", 5) == 0) {
            if (netaddr_parse(out, buf + 5) != 0 || strchr(buf + 5, ':') == NULL)
                return -1;
            return 1;
        }
        if (strchr(buf, ':') != NULL || netaddr_parse(out, buf) != 0)
            return -1;
        return 1;
    }
    if (bare && netaddr_parse(out, text) == 0)
        return 1;
    return 0;
}

/* Orders MX records: filter, sort, drop repeats, shuffle equals, cap. */
size_t
mx_order(struct mx_record *recs, size_t n, uint64_t *rng)
{
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        char norm[MX_NAME_MAX];
        struct netaddr a;
        /* An exchange that is an address (Postfix: "numeric domain name in
         * resource data") stays, in its canonical text, for the caller to
         * use as an address; IPv6 text would fail the name syntax. */
        if (recs[i].name[0] != '[' && mx_parse_literal(recs[i].name, true, &a) == 1)
            netaddr_format(&a, norm, sizeof norm);
        else if (mx_normalize_name(norm, sizeof norm, recs[i].name) != 0)
            continue;   /* the root (null MX among others) or a malformed name */
        recs[kept].preference = recs[i].preference;
        memcpy(recs[kept].name, norm, sizeof norm);
        kept++;
    }
    /* Insertion sort, stable: answers are a handful of records. */
    for (size_t i = 1; i < kept; i++) {
        struct mx_record tmp = recs[i];
        size_t j = i;
        while (j > 0 && recs[j - 1].preference > tmp.preference) {
            recs[j] = recs[j - 1];
            j--;
        }
        recs[j] = tmp;
    }
    /* A name listed twice keeps its lowest preference (the first after the
     * sort): trying one host twice per delivery helps nobody. */
    size_t uniq = 0;
    for (size_t i = 0; i < kept; i++) {
        bool seen = false;
        for (size_t j = 0; j < uniq && !seen; j++)
            seen = strcmp(recs[j].name, recs[i].name) == 0;
        if (!seen) {
            if (uniq != i)
                recs[uniq] = recs[i];
            uniq++;
        }
    }
    /* RFC 5321 §5.1: "If there are multiple destinations with the same
     * preference and there is no clear reason to favor one (e.g., by
     * recognition of an easily reached address), then the sender-SMTP MUST
     * randomize them to spread the load across multiple mail exchangers". */
    for (size_t start = 0; start < uniq;) {
        size_t end = start + 1;
        while (end < uniq && recs[end].preference == recs[start].preference)
            end++;
        for (size_t i = end - 1; i > start; i--) {
            size_t j = start + mx_rng_below(rng, i - start + 1);
            if (j != i) {
                struct mx_record tmp = recs[i];
                recs[i] = recs[j];
                recs[j] = tmp;
            }
        }
        start = end;
    }
    return uniq < MX_MAX_HOSTS ? uniq : MX_MAX_HOSTS;
}

void
mx_shuffle_addrs(struct netaddr *addrs, size_t n, uint64_t *rng)
{
    for (size_t i = n; i > 1; i--) {
        size_t j = mx_rng_below(rng, i);
        struct netaddr tmp = addrs[i - 1];
        addrs[i - 1] = addrs[j];
        addrs[j] = tmp;
    }
}

/* --- wire form --------------------------------------------------------- */

static uint16_t
mx_get16(const uint8_t *p)
{
    return (uint16_t)((uint16_t)p[0] << 8 | p[1]);
}

static uint32_t
mx_get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Skips a (possibly compressed) name at *pos without following pointers.
 * Returns 0, or -1 if it runs past len or uses a reserved label type. */
static int
mx_skip_name(const uint8_t *msg, size_t len, size_t *pos)
{
    size_t p = *pos;
    for (unsigned labels = 0; labels < 128; labels++) {
        if (p >= len)
            return -1;
        uint8_t c = msg[p];
        if (c == 0) {
            *pos = p + 1;
            return 0;
        }
        if ((c & 0xc0) == 0xc0) {
            if (p + 2 > len)
                return -1;
            *pos = p + 2;
            return 0;
        }
        if (c & 0xc0)
            return -1;  /* 0x40/0x80 label types: obsolete or unassigned */
        p += 1 + (size_t)c;
    }
    return -1;
}

/* Reads the TTLs of a response. */
int
mx_wire_ttls(const uint8_t *msg, size_t len, uint32_t *answer_ttl, uint32_t *negative_ttl)
{
    *answer_ttl = UINT32_MAX;
    *negative_ttl = UINT32_MAX;
    if (len < MX_DNS_HEADER)
        return -1;
    unsigned qd = mx_get16(msg + 4), an = mx_get16(msg + 6), ns = mx_get16(msg + 8);
    size_t pos = MX_DNS_HEADER;
    for (unsigned i = 0; i < qd; i++) {
        if (mx_skip_name(msg, len, &pos) != 0 || pos + 4 > len)
            return -1;
        pos += 4;
    }
    for (unsigned i = 0; i < an + ns; i++) {
        if (mx_skip_name(msg, len, &pos) != 0 || pos + 10 > len)
            return -1;
        uint16_t type = mx_get16(msg + pos);
        uint32_t ttl = mx_get32(msg + pos + 4);
        size_t rdlen = mx_get16(msg + pos + 8);
        size_t rdata = pos + 10;
        if (rdata + rdlen > len)
            return -1;
        /* RFC 2181 §8: a TTL with the top bit set is treated as zero. */
        if (ttl > 0x7fffffffu)
            ttl = 0;
        if (i < an) {
            /* CNAMEs count like any record: the answer depends on them. */
            if (ttl < *answer_ttl)
                *answer_ttl = ttl;
        } else if (type == MX_T_SOA) {
            /* RFC 2308 §5: negative answers live min(SOA TTL, MINIMUM). */
            size_t p = rdata;
            if (mx_skip_name(msg, rdata + rdlen, &p) != 0
                || mx_skip_name(msg, rdata + rdlen, &p) != 0 || p + 20 > rdata + rdlen)
                return -1;
            uint32_t minimum = mx_get32(msg + p + 16);
            if (minimum > 0x7fffffffu)
                minimum = 0;
            uint32_t neg = ttl < minimum ? ttl : minimum;
            if (neg < *negative_ttl)
                *negative_ttl = neg;
        }
        pos = rdata + rdlen;
    }
    return 0;
}

uint32_t
mx_cache_seconds(uint32_t ttl)
{
    if (ttl == UINT32_MAX)
        return MX_TTL_NEGATIVE;
    if (ttl < MX_TTL_MIN)
        return MX_TTL_MIN;
    if (ttl > MX_TTL_MAX)
        return MX_TTL_MAX;
    return ttl;
}

/* --- results ----------------------------------------------------------- */

void
mx_result_fail(struct mx_result *res, enum mx_status status, const char *dsn, const char *fmt,
               ...)
{
    bool implicit = res->implicit;
    mx_result_clear(res);
    res->implicit = implicit;
    res->status = status;
    snprintf(res->dsn, sizeof res->dsn, "%s", dsn);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(res->text, sizeof res->text, fmt, ap);
    va_end(ap);
}

struct mx_host *
mx_result_add_host(struct mx_result *res, const char *name, unsigned preference)
{
    res->hosts = xrealloc(res->hosts, (res->nhosts + 1) * sizeof *res->hosts);
    struct mx_host *h = &res->hosts[res->nhosts++];
    memset(h, 0, sizeof *h);
    h->name = xstrdup(name);
    h->preference = preference;
    return h;
}

bool
mx_host_add_addr(struct mx_host *h, const struct netaddr *a)
{
    if (h->naddrs >= MX_MAX_ADDRS)
        return false;
    for (size_t i = 0; i < h->naddrs; i++)
        if (h->addrs[i].family == a->family && memcmp(h->addrs[i].bytes, a->bytes, 16) == 0)
            return false;
    if (h->addrs == NULL)
        h->addrs = xmalloc(MX_MAX_ADDRS * sizeof *h->addrs);
    h->addrs[h->naddrs++] = *a;
    return true;
}

static bool
mx_not_found(enum mx_answer a)
{
    return a == MX_ANSWER_NXDOMAIN || a == MX_ANSWER_NODATA || a == MX_ANSWER_BADNAME;
}

/* Ends a resolution: drops hosts without addresses, decides the status. */
void
mx_result_finish(struct mx_result *res, const enum mx_answer (*addr_answers)[2],
                 const char *domain, bool nexthop)
{
    size_t kept = 0;
    bool all_not_found = true;
    char why[96] = "";
    for (size_t i = 0; i < res->nhosts; i++) {
        struct mx_host *h = &res->hosts[i];
        if (h->naddrs > 0) {
            res->hosts[kept++] = *h;
            continue;
        }
        if (why[0] == '\0')
            snprintf(why, sizeof why, "%.60s: A %s, AAAA %s", h->name,
                     mx_answer_name(addr_answers[i][0]), mx_answer_name(addr_answers[i][1]));
        if (!mx_not_found(addr_answers[i][0]) || !mx_not_found(addr_answers[i][1]))
            all_not_found = false;
        xfree(h->name);
        xfree(h->addrs);
    }
    res->nhosts = kept;
    if (kept > 0) {
        res->status = MX_OK;
        res->dsn[0] = res->text[0] = '\0';
        return;
    }
    res->hosts = xfree(res->hosts);
    if (res->implicit && all_not_found) {
        /* RFC 5321 §5.1: "If MX records are present, but none of them are
         * usable, or the implicit MX is unusable, this situation MUST be
         * reported as an error." No MX and no address: the domain takes no
         * mail, now or later. 5.4.4: unable to route. */
        mx_result_fail(res, MX_PERMANENT, "5.4.4", "%.100s has no MX and no address records",
                       domain);
    } else if (res->implicit) {
        mx_result_fail(res, MX_TEMPORARY, "4.4.3", "address lookup for %.100s failed (%s)",
                       domain, why);
    } else if (nexthop) {
        mx_result_fail(res, MX_TEMPORARY, "4.4.3", "next hop %.100s has no address (%s)",
                       domain, why);
    } else {
        mx_result_fail(res, MX_TEMPORARY, "4.4.3", "no MX host of %.100s has an address%s%s%s",
                       domain, why[0] ? " (" : "", why, why[0] ? ")" : "");
    }
}

void
mx_result_clear(struct mx_result *res)
{
    for (size_t i = 0; i < res->nhosts; i++) {
        xfree(res->hosts[i].name);
        xfree(res->hosts[i].addrs);
    }
    xfree(res->hosts);
    memset(res, 0, sizeof *res);
}

struct mx_result *
mx_result_copy(const struct mx_result *res)
{
    struct mx_result *c = xmalloc(sizeof *c);
    *c = *res;
    c->hosts = NULL;
    if (res->nhosts > 0) {
        c->hosts = xcalloc(res->nhosts, sizeof *c->hosts);
        for (size_t i = 0; i < res->nhosts; i++) {
            const struct mx_host *h = &res->hosts[i];
            c->hosts[i].name = xstrdup(h->name);
            c->hosts[i].preference = h->preference;
            c->hosts[i].naddrs = h->naddrs;
            if (h->naddrs > 0)
                c->hosts[i].addrs = xmemdup(h->addrs, h->naddrs * sizeof *h->addrs);
        }
    }
    return c;
}

struct mx_result *
mx_result_free(struct mx_result *res)
{
    if (res != NULL) {
        mx_result_clear(res);
        xfree(res);
    }
    return NULL;
}
