/*
 * address - RFC 5321 §4.1.2 paths (with RFC 6531 UTF-8), and the relay
 * decision on their canonical form.
 *
 * Any thread, no state, no I/O. The parser is a single forward scan of
 * [p, p + len): it never reads past len and never stops at a NUL. CR, LF and
 * NUL match no character class of the grammar, so inside a path they can only
 * ever be a syntax error - never a place where the address is cut short.
 * Octets after the closing '>' are not examined; they belong to the
 * parameter parser, which refuses the same octets.
 *
 * Checks run in a fixed order so that the status is predictable:
 *   syntax -> 8-bit without SMTPUTF8 -> invalid UTF-8 -> local part length
 *   -> domain length (total or one label) -> path length.
 * *out is zeroed first and filled only when all of them passed.
 *
 * The address is never interpreted: "`id`@x" and "${run{/bin/sh}}@x" are
 * legal Dot-strings (backquote, '$', '{', '}', '/' are atext) and stay
 * opaque strings; ";sleep 66;" is not a mailbox and is a syntax error.
 */
#include "address.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "utf8.h"

/* RFC 1035 §2.3.4: a DNS label is at most 63 octets. */
#define ADDRESS_LABEL_MAX 63

/* Longest address-literal body worth trying: "IPv6:" + 45 octets of text. */
#define ADDRESS_LITERAL_MAX 64

/* A position in the input; the parse never moves i beyond len. */
struct cursor {
    const unsigned char *p;
    size_t len;
    size_t i;
    bool high;          /* an octet >= 0x80 was accepted somewhere */
};

static bool
cur_peek(const struct cursor *c, unsigned char ch)
{
    return c->i < c->len && c->p[c->i] == ch;
}

static bool
cur_take(struct cursor *c, unsigned char ch)
{
    if (!cur_peek(c, ch))
        return false;
    c->i++;
    return true;
}

static bool
address_is_alnum(unsigned char ch)
{
    return (ch >= '0' && ch <= '9') || (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z');
}

/* RFC 5322 atext, plus UTF8-non-ascii (RFC 6531 §3.3), checked later. */
static bool
address_is_atext(unsigned char ch)
{
    if (address_is_alnum(ch) || ch >= 0x80)
        return true;
    switch (ch) {
    case '!': case '#': case '$': case '%': case '&': case '\'': case '*':
    case '+': case '-': case '/': case '=': case '?': case '^': case '_':
    case '`': case '{': case '|': case '}': case '~':
        return true;
    }
    return false;
}

/* Letters, digits and U-label octets may start, end and fill a label. */
static bool
address_is_letdig(unsigned char ch)
{
    return address_is_alnum(ch) || ch >= 0x80;
}

/* Compares s[0..n) with a lowercase ASCII word, ignoring ASCII case. */
static bool
address_ieq(const unsigned char *s, size_t n, const char *lower)
{
    size_t i;

    for (i = 0; i < n && lower[i] != '\0'; i++) {
        unsigned char ch = s[i];
        if (ch >= 'A' && ch <= 'Z')
            ch = (unsigned char)(ch - 'A' + 'a');
        if (ch != (unsigned char)lower[i])
            return false;
    }
    return i == n && lower[i] == '\0';
}

/* Dot-string = Atom *("." Atom): no empty atom, so no leading, trailing or
 * doubled dot. */
static bool
scan_dot_string(struct cursor *c)
{
    for (;;) {
        size_t start = c->i;
        while (c->i < c->len && address_is_atext(c->p[c->i])) {
            if (c->p[c->i] >= 0x80)
                c->high = true;
            c->i++;
        }
        if (c->i == start)
            return false;
        if (!cur_take(c, '.'))
            return true;
    }
}

/*
 * Quoted-string = DQUOTE *QcontentSMTP DQUOTE
 *   qtextSMTP = %d32-33 / %d35-91 / %d93-126 (/ UTF8-non-ascii, RFC 6531)
 *   quoted-pairSMTP = %d92 %d32-126
 */
static bool
scan_quoted_string(struct cursor *c)
{
    if (!cur_take(c, '"'))
        return false;
    while (c->i < c->len) {
        unsigned char ch = c->p[c->i];
        if (ch == '"') {
            c->i++;
            return true;
        }
        if (ch == '\\') {
            if (c->len - c->i < 2 || c->p[c->i + 1] < 32 || c->p[c->i + 1] > 126)
                return false;
            c->i += 2;
            continue;
        }
        if (ch >= 0x80)
            c->high = true;
        else if (ch < 32 || ch > 126)
            return false;
        c->i++;
    }
    return false;
}

/*
 * Domain = sub-domain *("." sub-domain), sub-domain = Let-dig [Ldh-str]:
 * a label starts and ends with a letter or digit. One trailing dot (the DNS
 * root) is accepted because senders do write it; domain_lc drops it.
 * *label_max receives the longest label, checked against 63 later so that
 * an overlong domain gets its own status instead of a syntax error.
 */
static bool
scan_domain(struct cursor *c, size_t *label_max)
{
    size_t labels = 0;

    *label_max = 0;
    for (;;) {
        size_t start = c->i;
        if (c->i >= c->len || !address_is_letdig(c->p[c->i]))
            return labels > 0;       /* after a trailing dot, or nothing */
        while (c->i < c->len && (address_is_letdig(c->p[c->i]) || c->p[c->i] == '-')) {
            if (c->p[c->i] >= 0x80)
                c->high = true;
            c->i++;
        }
        if (c->p[c->i - 1] == '-')
            return false;
        labels++;
        if (c->i - start > *label_max)
            *label_max = c->i - start;
        if (!cur_take(c, '.'))
            return true;
    }
}

/*
 * address-literal = "[" ( IPv4-address-literal / IPv6-address-literal ) "]"
 * General-address-literal needs an IANA-registered tag and none but IPv6 is
 * registered, so anything else is refused. The text is handed to inet_pton,
 * which accepts exactly the dotted-quad and RFC 4291 forms.
 * XXX glibc refuses leading zeros ("[01.2.3.4]") that Snum = 1*3DIGIT allows;
 * refusing them is an accepted compromise: a literal is never local anyway.
 */
static bool
scan_address_literal(struct cursor *c)
{
    char buf[ADDRESS_LITERAL_MAX + 1];
    unsigned char b[16];
    size_t start, n;

    if (!cur_take(c, '['))
        return false;
    start = c->i;
    /* dcontent = %d33-90 / %d94-126: printable ASCII except "[", "\", "]". */
    while (c->i < c->len && c->p[c->i] >= 33 && c->p[c->i] <= 126
           && c->p[c->i] != '[' && c->p[c->i] != '\\' && c->p[c->i] != ']')
        c->i++;
    n = c->i - start;
    if (!cur_take(c, ']') || n == 0 || n > ADDRESS_LITERAL_MAX)
        return false;
    memcpy(buf, c->p + start, n);
    buf[n] = '\0';
    if (n > 5 && address_ieq((const unsigned char *)buf, 5, "ipv6:"))
        return inet_pton(AF_INET6, buf + 5, b) == 1;
    return inet_pton(AF_INET, buf, b) == 1;
}

/* A-d-l = At-domain *( "," At-domain ), At-domain = "@" Domain; then ":". */
static bool
scan_source_route(struct cursor *c)
{
    size_t label_max;

    do {
        if (!cur_take(c, '@') || !scan_domain(c, &label_max))
            return false;
        if (label_max > ADDRESS_LABEL_MAX)
            return false;
    } while (cur_take(c, ','));
    return cur_take(c, ':');
}

/* Lowercases ASCII (U-labels are left as sent: no Unicode case folding) and
 * drops one trailing dot. dst has room for n + 1 octets. */
static void
address_domain_canon(char *dst, const unsigned char *src, size_t n)
{
    if (n > 0 && src[n - 1] == '.')
        n--;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = src[i];
        dst[i] = (char)(ch >= 'A' && ch <= 'Z' ? ch - 'A' + 'a' : ch);
    }
    dst[n] = '\0';
}

static bool
address_has_route_chars(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] == '%' || s[i] == '!' || s[i] == '@')
            return true;
    return false;
}

enum address_status
address_parse_path(const char *p, size_t len, bool allow_null, bool smtputf8,
                   struct mailbox *out, size_t *consumed)
{
    struct cursor c = { .p = (const unsigned char *)p, .len = len };
    size_t local_start, local_end, dom_start, dom_end, label_max = 0;
    bool routed = false, quoted, literal = false, bare = false;

    memset(out, 0, sizeof *out);
    if (consumed != NULL)
        *consumed = 0;

    if (!cur_take(&c, '<'))
        return ADDRESS_SYNTAX;
    if (cur_peek(&c, '>')) {
        if (!allow_null)
            return ADDRESS_SYNTAX;
        if (consumed != NULL)
            *consumed = 2;
        return ADDRESS_OK;
    }
    /* RFC 5321 §4.1.1.3: the source route "MUST" be accepted and "SHOULD"
     * be ignored. It is dropped, so "@ours:victim@ext" is judged - and
     * relayed or refused - as victim@ext. */
    if (cur_peek(&c, '@')) {
        if (!scan_source_route(&c))
            return ADDRESS_SYNTAX;
        routed = true;
    }

    local_start = c.i;
    quoted = cur_peek(&c, '"');
    if (!(quoted ? scan_quoted_string(&c) : scan_dot_string(&c)))
        return ADDRESS_SYNTAX;
    local_end = c.i;

    if (cur_take(&c, '@')) {
        dom_start = c.i;
        if (cur_peek(&c, '[')) {
            literal = true;
            if (!scan_address_literal(&c))
                return ADDRESS_SYNTAX;
        } else if (!scan_domain(&c, &label_max)) {
            return ADDRESS_SYNTAX;
        }
        dom_end = c.i;
    } else {
        /* RFC 5321 §4.1.1.3: "<Postmaster>" without a domain is the one
         * mailbox a path may name without '@'. */
        if (routed || quoted
            || !address_ieq(c.p + local_start, local_end - local_start, "postmaster"))
            return ADDRESS_SYNTAX;
        bare = true;
        dom_start = dom_end = c.i;
    }
    if (!cur_take(&c, '>'))
        return ADDRESS_SYNTAX;

    if (c.high) {
        if (!smtputf8)
            return ADDRESS_NEEDS_SMTPUTF8;
        if (!utf8_valid(c.p, c.i))
            return ADDRESS_BAD_UTF8;
    }
    if (local_end - local_start > ADDRESS_LOCAL_MAX)
        return ADDRESS_LOCAL_TOO_LONG;
    if (dom_end - dom_start > ADDRESS_DOMAIN_MAX || label_max > ADDRESS_LABEL_MAX)
        return ADDRESS_DOMAIN_TOO_LONG;
    if (c.i > ADDRESS_PATH_MAX)
        return ADDRESS_PATH_TOO_LONG;

    /* The mailbox is at most path - 2 octets, so it fits addr. */
    size_t llen = local_end - local_start;
    memcpy(out->addr, p + local_start, llen);
    if (!bare) {
        out->addr[llen] = '@';
        memcpy(out->addr + llen + 1, p + dom_start, dom_end - dom_start);
        out->len = (uint16_t)(llen + 1 + dom_end - dom_start);
        address_domain_canon(out->domain_lc, c.p + dom_start, dom_end - dom_start);
    } else {
        out->len = (uint16_t)llen;
    }
    out->addr[out->len] = '\0';
    out->at = (uint16_t)llen;
    out->utf8 = c.high;
    out->literal = literal;
    out->quoted = quoted;
    out->route_chars = address_has_route_chars(out->addr, llen);
    if (consumed != NULL)
        *consumed = c.i;
    return ADDRESS_OK;
}

bool
address_is_postmaster(const struct mailbox *m)
{
    return m->len > 0 && m->at == m->len
           && address_ieq((const unsigned char *)m->addr, m->len, "postmaster");
}

/* ---- relay policy ---- */

static bool
relay_is_separator(char ch)
{
    /* Newlines too: a config value may continue over several lines. */
    return ch == ',' || ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n';
}

/* Checks one relay_domains entry with the same rules as a mailbox domain, so
 * that every entry can actually be matched by some domain_lc. */
static bool
relay_domain_valid(const char *s, size_t n)
{
    struct cursor c = { .p = (const unsigned char *)s, .len = n };
    size_t label_max;

    if (!scan_domain(&c, &label_max) || c.i != n)
        return false;
    if (n > ADDRESS_DOMAIN_MAX || label_max > ADDRESS_LABEL_MAX)
        return false;
    return !c.high || utf8_valid(s, n);
}

int
relay_policy_init(struct relay_policy *pol, const char *domains, const char *networks,
                  char *err, size_t errsize)
{
    size_t cap = 0;
    const char *s = domains != NULL ? domains : "";

    memset(pol, 0, sizeof *pol);
    if (err != NULL && errsize > 0)
        err[0] = '\0';
    for (;;) {
        while (*s != '\0' && relay_is_separator(*s))
            s++;
        if (*s == '\0')
            break;
        size_t n = 0;
        while (s[n] != '\0' && !relay_is_separator(s[n]))
            n++;
        if (!relay_domain_valid(s, n)) {
            if (err != NULL && errsize > 0)
                snprintf(err, errsize, "relay_domains: bad domain \"%.*s\"",
                         (int)(n > ADDRESS_DOMAIN_MAX ? ADDRESS_DOMAIN_MAX : n), s);
            relay_policy_free(pol);
            return -1;
        }
        if (pol->ndomains == cap) {
            cap = cap ? cap * 2 : 8;
            pol->domains = xrealloc(pol->domains, cap * sizeof *pol->domains);
        }
        char *d = xmalloc(n + 1);
        address_domain_canon(d, (const unsigned char *)s, n);
        pol->domains[pol->ndomains++] = d;
        s += n;
    }

    char nerr[128];
    if (cidr_list_parse(&pol->networks, networks != NULL ? networks : "", nerr, sizeof nerr) < 0) {
        if (err != NULL && errsize > 0)
            snprintf(err, errsize, "relay_networks: %s", nerr);
        relay_policy_free(pol);
        return -1;
    }
    return 0;
}

void
relay_policy_free(struct relay_policy *pol)
{
    for (size_t i = 0; i < pol->ndomains; i++)
        xfree(pol->domains[i]);
    pol->domains = xfree(pol->domains);
    pol->ndomains = 0;
    cidr_list_free(&pol->networks);
}

bool
relay_client_trusted(const struct relay_policy *pol, const struct netaddr *client)
{
    return client != NULL && cidr_list_match(&pol->networks, client);
}

/*
 * True when rcpt is plainly one of our domains. Judged from the stored text,
 * not only from the flags, so a hand-built mailbox cannot skip the checks:
 *  - '%', '!' or '@' in the local part: the next hop (sendmail, old UUCP
 *    gateways) may reroute "victim%ext@ours" to ext; RELIABILITY row 36.
 *  - an address literal names a host, not one of our domains.
 *  - exact match only: "sub.ours" is not "ours" unless listed.
 */
static bool
relay_is_local(const struct relay_policy *pol, const struct mailbox *rcpt)
{
    if (rcpt->at >= rcpt->len || rcpt->literal || rcpt->route_chars
        || rcpt->domain_lc[0] == '\0' || rcpt->domain_lc[0] == '['
        || address_has_route_chars(rcpt->addr, rcpt->at))
        return false;
    for (size_t i = 0; i < pol->ndomains; i++)
        if (strcmp(pol->domains[i], rcpt->domain_lc) == 0)
            return true;
    return false;
}

enum relay_verdict
relay_check(const struct relay_policy *pol, const struct mailbox *rcpt,
            const struct netaddr *client, bool authenticated)
{
    /* RFC 5321 §4.5.1: postmaster must be accepted, from anyone. */
    if (address_is_postmaster(rcpt))
        return RELAY_OK_LOCAL;
    if (relay_is_local(pol, rcpt))
        return RELAY_OK_LOCAL;
    if (authenticated || relay_client_trusted(pol, client))
        return RELAY_OK_TRUSTED;
    return RELAY_DENIED;
}
