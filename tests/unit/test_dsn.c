/*
 * Tests for core/dsn: RFC 3464 reports, RELIABILITY rows 44-46.
 *
 * Every built message is checked as wire form first (CRLF only, no line over
 * 998 octets, no line that is exactly ".") and un-stuffed, then parsed back
 * here in C: top-level header, multipart/report parts split on the boundary,
 * delivery-status groups and fields (unfolded). Parameter structs hold their
 * text inline: Criterion re-executes the binary per case.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dsn.h"
#include "smtp_params.h"

#define HOST "relay.example.net"
#define NOW_MS 1700000000123ull
#define ARRIVAL_MS (NOW_MS - 5ull * 3600 * 1000)
#define QID 0x0123456789abcdefull

/* ---- parsing what dsn_build made ----------------------------------------- */

struct span {
    const char *p;
    size_t n;
};

struct parsed {
    char *plain;            /* un-stuffed message */
    size_t plen;
    struct span hdr, body;  /* top level */
    char boundary[128];
    struct span parts[4];   /* whole parts (header + body) */
    struct span phdr[4], pbody[4];
    size_t nparts;
};

/* Wire form rules; returns the un-stuffed message. */
static char *
check_wire(const char *p, size_t n, size_t *plen)
{
    char *out = malloc(n + 1);
    size_t o = 0, i = 0;
    cr_assert_gt(n, 2);
    cr_assert(p[n - 2] == '\r' && p[n - 1] == '\n', "message must end with CRLF");
    while (i < n) {
        size_t s = i;
        while (i < n && p[i] != '\r' && p[i] != '\n')
            i++;
        cr_assert(i + 1 < n && p[i] == '\r' && p[i + 1] == '\n',
                  "bare CR or LF at offset %zu", i);
        size_t len = i - s;
        cr_assert_leq(len, 998, "line of %zu octets at offset %zu", len, s);
        cr_assert(!(len == 1 && p[s] == '.'), "a line that is exactly \".\" at %zu", s);
        if (len > 0 && p[s] == '.') {   /* un-stuff */
            s++;
            len--;
        }
        memcpy(out + o, p + s, len);
        o += len;
        out[o++] = '\r';
        out[o++] = '\n';
        i += 2;
    }
    out[o] = '\0';
    *plen = o;
    return out;
}

static const char *
find(const char *p, size_t n, const char *needle)
{
    size_t k = strlen(needle);
    return n >= k ? memmem(p, n, needle, k) : NULL;
}

static size_t
count(const char *p, size_t n, const char *needle)
{
    size_t c = 0, k = strlen(needle);
    const char *q;
    while ((q = find(p, n, needle)) != NULL) {
        c++;
        n -= (size_t)(q - p) + k;
        p = q + k;
    }
    return c;
}

static void
split_entity(struct span e, struct span *hdr, struct span *body)
{
    if (e.n >= 2 && e.p[0] == '\r' && e.p[1] == '\n') {
        *hdr = (struct span){ e.p, 0 };
        *body = (struct span){ e.p + 2, e.n - 2 };
        return;
    }
    const char *q = find(e.p, e.n, "\r\n\r\n");
    cr_assert(q, "no empty line after the header");
    *hdr = (struct span){ e.p, (size_t)(q - e.p) + 2 };
    *body = (struct span){ q + 4, e.n - (size_t)(q + 4 - e.p) };
}

/* Value of field name in a header block, unfolded (CRLF removed), leading
 * white space trimmed. Returns the number of such fields. */
static int
field(struct span h, const char *name, char *out, size_t outsize)
{
    size_t nl = strlen(name);
    int found = 0;
    size_t i = 0;
    out[0] = '\0';
    while (i < h.n) {
        const char *line = h.p + i;
        const char *e = find(line, h.n - i, "\r\n");
        size_t len = e ? (size_t)(e - line) : h.n - i;
        if (len > nl && strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
            if (found++ == 0) {
                size_t o = 0, j = nl + 1;
                while (j < len && (line[j] == ' ' || line[j] == '\t'))
                    j++;
                for (;;) {
                    for (; j < len && o + 1 < outsize; j++)
                        out[o++] = line[j];
                    i += len + 2;
                    if (i < h.n && (h.p[i] == ' ' || h.p[i] == '\t')) {
                        line = h.p + i;
                        e = find(line, h.n - i, "\r\n");
                        len = e ? (size_t)(e - line) : h.n - i;
                        j = 0;
                        continue;
                    }
                    break;
                }
                out[o] = '\0';
                continue;
            }
        }
        i += len + 2;
    }
    return found;
}

static void
parse(const struct dsn_output *o, struct parsed *m)
{
    char ct[512];
    memset(m, 0, sizeof *m);
    cr_assert_not_null(o->data);
    cr_assert_null(memchr(o->data, '\0', o->len), "NUL in the report");
    m->plain = check_wire(o->data, o->len, &m->plen);
    split_entity((struct span){ m->plain, m->plen }, &m->hdr, &m->body);
    cr_assert_eq(field(m->hdr, "Content-Type", ct, sizeof ct), 1);
    cr_assert(strncmp(ct, "multipart/report;", 17) == 0, "%s", ct);
    const char *b = strstr(ct, "boundary=\"");
    cr_assert_not_null(b);
    b += 10;
    const char *e = strchr(b, '"');
    cr_assert_not_null(e);
    cr_assert_leq(e - b, 70, "RFC 2046: boundary at most 70 characters");
    snprintf(m->boundary, sizeof m->boundary, "--%.*s", (int)(e - b), b);

    /* body: preamble, then "--B" CRLF part ("\r\n--B" CRLF part)* "\r\n--B--" CRLF */
    char delim[140];
    snprintf(delim, sizeof delim, "\r\n%s", m->boundary);
    const char *p = find(m->body.p, m->body.n, delim);
    const char *end = m->body.p + m->body.n;
    cr_assert_not_null(p, "no first boundary");
    p += strlen(delim);
    for (;;) {
        if (end - p >= 2 && p[0] == '-' && p[1] == '-') {
            cr_assert_eq(end - p, 4, "text after the closing boundary");
            cr_assert(p[2] == '\r' && p[3] == '\n');
            break;
        }
        cr_assert(end - p >= 2 && p[0] == '\r' && p[1] == '\n', "boundary line not ended");
        p += 2;
        const char *q = find(p, (size_t)(end - p), delim);
        cr_assert_not_null(q, "part without a following boundary");
        cr_assert_lt(m->nparts, 4);
        m->parts[m->nparts] = (struct span){ p, (size_t)(q - p) };
        split_entity(m->parts[m->nparts], &m->phdr[m->nparts], &m->pbody[m->nparts]);
        m->nparts++;
        p = q + strlen(delim);
    }
    /* The boundary occurs in the Content-Type and the delimiters, nowhere else. */
    cr_assert_eq(count(m->plain, m->plen, m->boundary + 2), m->nparts + 2);
}

static void
parsed_free(struct parsed *m)
{
    free(m->plain);
}

/* The n-th group (0 = per-message) of the delivery-status part. */
static struct span
group(const struct parsed *m, size_t n)
{
    struct span b = m->pbody[1];
    const char *p = b.p, *end = b.p + b.n;
    for (size_t i = 0;; i++) {
        const char *q = find(p, (size_t)(end - p), "\r\n\r\n");
        const char *ge = q ? q + 2 : end;
        if (i == n)
            return (struct span){ p, (size_t)(ge - p) };
        cr_assert_not_null(q, "no group %zu", n);
        p = q + 4;
    }
}

static size_t
ngroups(const struct parsed *m)
{
    return count(m->pbody[1].p, m->pbody[1].n, "\r\n\r\n") + 1;
}

static void
assert_field(struct span h, const char *name, const char *want)
{
    char v[4096];
    cr_assert_eq(field(h, name, v, sizeof v), 1, "field %s missing or repeated", name);
    cr_assert_str_eq(v, want, "%s", name);
}

static bool
has_field(struct span h, const char *name)
{
    char v[16];
    return field(h, name, v, sizeof v) > 0;
}

static bool
span_eq(struct span s, const char *p, size_t n)
{
    return s.n == n && memcmp(s.p, p, n) == 0;
}

/* ---- fixtures ------------------------------------------------------------ */

/* As the spool stores a DATA message: dot-stuffed. */
static const char orig_stuffed[] =
    "Received: from client.example (unknown [192.0.2.1])\r\n"
    "\tby " HOST " (ringmta) with ESMTP id 0123456789abcdef;\r\n"
    "\tTue, 14 Nov 2023 17:13:20 +0000\r\n"
    "From: Alice <alice@example.org>\r\n"
    "To: <bob@example.com>\r\n"
    "Subject: hello\r\n"
    "Message-ID: <m1@example.org>\r\n"
    "\r\n"
    "Hello Bob,\r\n"
    "..\r\n"
    "..leading dot\r\n"
    "\r\n"
    "...\r\n"
    "bye\r\n";
/* The same, un-stuffed. */
static const char orig_plain[] =
    "Received: from client.example (unknown [192.0.2.1])\r\n"
    "\tby " HOST " (ringmta) with ESMTP id 0123456789abcdef;\r\n"
    "\tTue, 14 Nov 2023 17:13:20 +0000\r\n"
    "From: Alice <alice@example.org>\r\n"
    "To: <bob@example.com>\r\n"
    "Subject: hello\r\n"
    "Message-ID: <m1@example.org>\r\n"
    "\r\n"
    "Hello Bob,\r\n"
    ".\r\n"
    ".leading dot\r\n"
    "\r\n"
    "..\r\n"
    "bye\r\n";
#define ORIG_HDR_LEN (sizeof orig_plain - 1 - (sizeof "Hello Bob,\r\n.\r\n.leading dot\r\n\r\n..\r\nbye\r\n" - 1) - 2)

static const char diag_550[] = "550 5.1.1 <bob@example.com>: Recipient address rejected: User unknown in virtual mailbox table";

static struct dsn_rcpt
failed_rcpt(void)
{
    return (struct dsn_rcpt){
        .addr = "bob@example.com",
        .action = DSN_ACTION_FAILED,
        .status = "5.1.1",
        .remote_mta = "mx.example.com",
        .diag = diag_550,
        .diag_len = sizeof diag_550 - 1,
        .last_attempt_ms = NOW_MS - 1000,
    };
}

static struct dsn_segment orig_seg = { orig_stuffed, sizeof orig_stuffed - 1 };

static struct dsn_report
report(const struct dsn_rcpt *rcpts, uint32_t n)
{
    return (struct dsn_report){
        .reporting_mta = HOST,
        .sender = "alice@example.org",
        .arrival_ms = ARRIVAL_MS,
        .qid = QID,
        .rcpts = rcpts,
        .nrcpt = n,
        .segs = &orig_seg,
        .nseg = 1,
        .form = DSN_CONTENT_DATA,
    };
}

static void
build(const struct dsn_report *r, struct dsn_output *o, struct parsed *m)
{
    cr_assert_eq(dsn_build(r, NOW_MS, o), 0);
    parse(o, m);
}

TestSuite(dsn);

/* ---- structure ----------------------------------------------------------- */

Test(dsn, failure_report_has_rfc3464_structure)
{
    struct dsn_rcpt rc = failed_rcpt();
    struct dsn_report r = report(&rc, 1);
    struct dsn_output o;
    struct parsed m;
    char v[1024];
    build(&r, &o, &m);

    cr_assert_eq(o.kind, DSN_KIND_FAILURE);
    cr_assert(!o.eightbit && !o.smtputf8 && !o.headers_only && !o.truncated);
    assert_field(m.hdr, "From", "MAILER-DAEMON@" HOST " (Mail Delivery System)");
    assert_field(m.hdr, "To", "<alice@example.org>");
    assert_field(m.hdr, "Subject", "Undelivered Mail Returned to Sender");
    assert_field(m.hdr, "Date", "Tue, 14 Nov 2023 22:13:20 +0000");
    assert_field(m.hdr, "Auto-Submitted", "auto-replied");
    assert_field(m.hdr, "MIME-Version", "1.0");
    cr_assert_eq(field(m.hdr, "Message-ID", v, sizeof v), 1);
    cr_assert(v[0] == '<' && strstr(v, "@" HOST ">") && strstr(v, "0123456789abcdef"), "%s", v);
    cr_assert_eq(field(m.hdr, "Content-Type", v, sizeof v), 1);
    cr_assert_not_null(strstr(v, "report-type=delivery-status;"), "%s", v);

    cr_assert_eq(m.nparts, 3);
    cr_assert_eq(field(m.phdr[0], "Content-Type", v, sizeof v), 1);
    cr_assert_str_eq(v, "text/plain; charset=us-ascii");
    assert_field(m.phdr[1], "Content-Type", "message/delivery-status");
    assert_field(m.phdr[2], "Content-Type", "message/rfc822");

    /* Human part: one paragraph naming the recipient and quoting the reply. */
    cr_assert_not_null(find(m.pbody[0].p, m.pbody[0].n, "<bob@example.com>: host mx.example.com"));
    cr_assert_not_null(find(m.pbody[0].p, m.pbody[0].n, "550 5.1.1"));
    cr_assert_not_null(find(m.pbody[0].p, m.pbody[0].n, HOST));

    cr_assert_eq(ngroups(&m), 2);
    struct span g0 = group(&m, 0), g1 = group(&m, 1);
    assert_field(g0, "Reporting-MTA", "dns; " HOST);
    assert_field(g0, "Arrival-Date", "Tue, 14 Nov 2023 17:13:20 +0000");
    cr_assert(!has_field(g0, "Original-Envelope-Id"));
    assert_field(g1, "Final-Recipient", "rfc822; bob@example.com");
    assert_field(g1, "Action", "failed");
    assert_field(g1, "Status", "5.1.1");
    assert_field(g1, "Remote-MTA", "dns; mx.example.com");
    assert_field(g1, "Last-Attempt-Date", "Tue, 14 Nov 2023 22:13:19 +0000");
    cr_assert(!has_field(g1, "Original-Recipient"));
    cr_assert(!has_field(g1, "Will-Retry-Until"));
    cr_assert_eq(field(g1, "Diagnostic-Code", v, sizeof v), 1);
    /* Folded at spaces: unfolding gives the reply back with the indents. */
    char want[512];
    snprintf(want, sizeof want, "smtp; %s", diag_550);
    char *a = v, *b = want;
    while (*a && *b) {
        if (*a == ' ' && *b == ' ') {
            while (*a == ' ')
                a++;
            while (*b == ' ')
                b++;
            continue;
        }
        cr_assert_eq(*a, *b, "diagnostic differs: %s", v);
        a++, b++;
    }
    cr_assert(!*a && !*b, "%s", v);

    /* The returned message: the original, un-stuffed, byte for byte. */
    cr_assert(span_eq(m.pbody[2], orig_plain, sizeof orig_plain - 1));
    parsed_free(&m);
    dsn_output_free(&o);
    cr_assert_null(o.data);
}

Test(dsn, mixed_actions_give_one_group_each)
{
    struct dsn_rcpt rc[3] = { failed_rcpt(), failed_rcpt(), failed_rcpt() };
    rc[1].addr = "carol@example.com";
    rc[1].action = DSN_ACTION_DELAYED;
    rc[1].status = "4.4.1";
    rc[1].diag = "connect to mx2.example.com: Connection timed out";
    rc[1].diag_len = strlen(rc[1].diag);
    rc[1].diag_type = "X-ringmta";
    rc[1].remote_mta = NULL;
    rc[1].retry_until_ms = ARRIVAL_MS + 5ull * 86400 * 1000;
    rc[2].addr = "dave@example.com";
    rc[2].action = DSN_ACTION_DELIVERED;
    rc[2].status = "2.0.0";
    rc[2].diag = "250 2.0.0 Ok: queued as 4Xyz";
    rc[2].diag_len = strlen(rc[2].diag);
    rc[2].retry_until_ms = ARRIVAL_MS;     /* ignored: not delayed */
    struct dsn_report r = report(rc, 3);
    struct dsn_output o;
    struct parsed m;
    build(&r, &o, &m);

    cr_assert_eq(o.kind, DSN_KIND_FAILURE);
    assert_field(m.hdr, "Subject", "Undelivered Mail Returned to Sender");
    cr_assert_eq(ngroups(&m), 4);
    struct span g1 = group(&m, 1), g2 = group(&m, 2), g3 = group(&m, 3);
    assert_field(g1, "Final-Recipient", "rfc822; bob@example.com");
    assert_field(g1, "Action", "failed");
    assert_field(g1, "Status", "5.1.1");
    cr_assert(!has_field(g1, "Will-Retry-Until"));
    assert_field(g2, "Final-Recipient", "rfc822; carol@example.com");
    assert_field(g2, "Action", "delayed");
    assert_field(g2, "Status", "4.4.1");
    assert_field(g2, "Diagnostic-Code",
                 "X-ringmta; connect to mx2.example.com: Connection timed out");
    assert_field(g2, "Will-Retry-Until", "Sun, 19 Nov 2023 17:13:20 +0000");
    cr_assert(!has_field(g2, "Remote-MTA"));
    assert_field(g3, "Final-Recipient", "rfc822; dave@example.com");
    assert_field(g3, "Action", "delivered");
    assert_field(g3, "Status", "2.0.0");
    assert_field(g3, "Diagnostic-Code", "smtp; 250 2.0.0 Ok: queued as 4Xyz");
    cr_assert(!has_field(g3, "Will-Retry-Until"));
    /* One paragraph per recipient in the human part. */
    cr_assert_not_null(find(m.pbody[0].p, m.pbody[0].n, "<carol@example.com>:"));
    cr_assert_not_null(find(m.pbody[0].p, m.pbody[0].n, "<dave@example.com>: delivered via"));
    parsed_free(&m);
    dsn_output_free(&o);
}

Test(dsn, delay_warning_returns_headers_only_even_with_ret_full)
{
    struct dsn_rcpt rc = failed_rcpt();
    rc.action = DSN_ACTION_DELAYED;
    rc.status = "4.7.0";
    rc.retry_until_ms = ARRIVAL_MS + 5ull * 86400 * 1000;
    struct dsn_report r = report(&rc, 1);
    r.ret = MAIL_RET_FULL;
    struct dsn_output o;
    struct parsed m;
    build(&r, &o, &m);

    cr_assert_eq(o.kind, DSN_KIND_DELAY);
    cr_assert(o.headers_only && !o.truncated);
    assert_field(m.hdr, "Subject", "Delayed Mail (still being retried)");
    assert_field(m.phdr[2], "Content-Type", "text/rfc822-headers");
    cr_assert(span_eq(m.pbody[2], orig_plain, ORIG_HDR_LEN));
    cr_assert_not_null(find(m.pbody[0].p, m.pbody[0].n, "WARNING ONLY"));
    cr_assert_not_null(find(m.pbody[0].p, m.pbody[0].n, "for more than 5 hour(s)"));
    cr_assert_not_null(find(m.pbody[0].p, m.pbody[0].n, "until it is 5 day(s) old"));
    assert_field(group(&m, 1), "Will-Retry-Until", "Sun, 19 Nov 2023 17:13:20 +0000");
    assert_field(group(&m, 1), "Status", "4.7.0");
    parsed_free(&m);
    dsn_output_free(&o);
}

Test(dsn, success_report_for_delivered_relayed_expanded)
{
    struct dsn_rcpt rc[3] = { failed_rcpt(), failed_rcpt(), failed_rcpt() };
    rc[0].action = DSN_ACTION_DELIVERED;
    rc[0].status = "2.0.0";
    rc[1].action = DSN_ACTION_RELAYED;
    rc[1].status = NULL;
    rc[1].diag = NULL;
    rc[2].action = DSN_ACTION_EXPANDED;
    rc[2].status = "2.1.5";
    rc[2].remote_mta = NULL;
    rc[2].diag = NULL;
    struct dsn_report r = report(rc, 3);
    struct dsn_output o;
    struct parsed m;
    build(&r, &o, &m);

    cr_assert_eq(o.kind, DSN_KIND_SUCCESS);
    cr_assert(o.headers_only);
    assert_field(m.hdr, "Subject", "Successful Mail Delivery Report");
    assert_field(group(&m, 1), "Action", "delivered");
    assert_field(group(&m, 2), "Action", "relayed");
    assert_field(group(&m, 2), "Status", "2.0.0");
    cr_assert(!has_field(group(&m, 2), "Diagnostic-Code"));
    assert_field(group(&m, 3), "Action", "expanded");
    assert_field(group(&m, 3), "Status", "2.1.5");
    for (size_t i = 1; i <= 3; i++)
        cr_assert(!has_field(group(&m, i), "Will-Retry-Until"));
    assert_field(m.phdr[2], "Content-Type", "text/rfc822-headers");
    parsed_free(&m);
    dsn_output_free(&o);
}

Test(dsn, no_content_gives_two_parts)
{
    struct dsn_rcpt rc = failed_rcpt();
    struct dsn_report r = report(&rc, 1);
    r.segs = NULL;
    r.nseg = 0;
    struct dsn_output o;
    struct parsed m;
    build(&r, &o, &m);
    cr_assert_eq(m.nparts, 2);
    parsed_free(&m);
    dsn_output_free(&o);
}

/* ---- RET and size -------------------------------------------------------- */

Test(dsn, ret_hdrs_returns_the_header_section)
{
    struct dsn_rcpt rc = failed_rcpt();
    struct dsn_report r = report(&rc, 1);
    r.ret = MAIL_RET_HDRS;
    struct dsn_output o;
    struct parsed m;
    build(&r, &o, &m);
    cr_assert(o.headers_only && !o.truncated);
    assert_field(m.phdr[2], "Content-Type", "text/rfc822-headers");
    assert_field(m.phdr[2], "Content-Description", "Undelivered Message Headers");
    cr_assert(span_eq(m.pbody[2], orig_plain, ORIG_HDR_LEN));
    cr_assert_null(find(m.plain, m.plen, "Hello Bob"));
    parsed_free(&m);
    dsn_output_free(&o);
}

Test(dsn, ret_full_and_unspecified_return_the_whole_message)
{
    enum mail_ret rets[] = { MAIL_RET_FULL, MAIL_RET_UNSPEC };
    for (size_t i = 0; i < 2; i++) {
        struct dsn_rcpt rc = failed_rcpt();
        struct dsn_report r = report(&rc, 1);
        r.ret = rets[i];
        struct dsn_output o;
        struct parsed m;
        build(&r, &o, &m);
        cr_assert(!o.headers_only);
        assert_field(m.phdr[2], "Content-Type", "message/rfc822");
        assert_field(m.phdr[2], "Content-Description", "Undelivered Message");
        cr_assert(span_eq(m.pbody[2], orig_plain, sizeof orig_plain - 1));
        parsed_free(&m);
        dsn_output_free(&o);
    }
}

Test(dsn, message_over_full_limit_returns_headers_only)
{
    size_t big = 300000;
    char *content = malloc(ORIG_HDR_LEN + 2 + big);
    memcpy(content, orig_plain, ORIG_HDR_LEN + 2);
    for (size_t i = 0; i < big; i++)
        content[ORIG_HDR_LEN + 2 + i] = i % 100 == 98 ? '\r' : i % 100 == 99 ? '\n' : 'x';
    struct dsn_segment seg = { content, ORIG_HDR_LEN + 2 + big };
    struct dsn_rcpt rc = failed_rcpt();
    struct dsn_report r = report(&rc, 1);
    r.segs = &seg;
    r.full_limit = 100000;
    struct dsn_output o;
    struct parsed m;
    build(&r, &o, &m);
    cr_assert(o.headers_only && o.truncated);
    assert_field(m.phdr[2], "Content-Type", "text/rfc822-headers");
    cr_assert(span_eq(m.pbody[2], orig_plain, ORIG_HDR_LEN));
    cr_assert_lt(o.len, 20000);
    parsed_free(&m);
    dsn_output_free(&o);
    free(content);
}

/* ---- passthrough and sanitising ------------------------------------------ */

Test(dsn, envid_and_orcpt_pass_through_decoded)
{
    char envid[SMTP_ENVID_MAX + 1], orcpt[SMTP_ORCPT_MAX + 1];
    const char xenvid[] = "QQ+2B314159+3Dx", xorcpt[] = "bob+2Btag@example.com";
    cr_assert_gt(xtext_decode(xenvid, sizeof xenvid - 1, envid, sizeof envid), 0);
    cr_assert_gt(xtext_decode(xorcpt, sizeof xorcpt - 1, orcpt, sizeof orcpt), 0);
    struct dsn_rcpt rc = failed_rcpt();
    rc.orcpt = orcpt;
    struct dsn_rcpt rc2 = failed_rcpt();
    rc2.orcpt = "bad\r\nInjected: yes";     /* never from xtext_decode, but survive it */
    rc2.orcpt_type = "x-odd type;";
    struct dsn_rcpt rcs[2] = { rc, rc2 };
    struct dsn_report r = report(rcs, 2);
    r.envid = envid;
    struct dsn_output o;
    struct parsed m;
    build(&r, &o, &m);
    assert_field(group(&m, 0), "Original-Envelope-Id", "QQ+314159=x");
    assert_field(group(&m, 1), "Original-Recipient", "rfc822;bob+tag@example.com");
    assert_field(group(&m, 1), "Final-Recipient", "rfc822; bob@example.com");
    assert_field(group(&m, 2), "Original-Recipient", "x-odd?type?;bad??Injected: yes");
    cr_assert(!has_field(group(&m, 2), "Injected"));
    parsed_free(&m);
    dsn_output_free(&o);
}

Test(dsn, hostile_diagnostic_is_sanitised_bounded_and_folded)
{
    size_t n = 10 * 1024;
    char *d = malloc(n);
    static const char head[] = "550-5.1.1 first\r\n550 5.1.1 \0second\x80\xff\n\n  tail";
    memcpy(d, head, sizeof head - 1);
    for (size_t i = sizeof head - 1; i < n; i++)
        d[i] = i < 4000 ? (i % 9 == 0 ? ' ' : 'w') : (i % 7 == 0 ? '\r' : 'L');
    d[5000] = '\n';
    struct dsn_rcpt rc = failed_rcpt();
    rc.diag = d;
    rc.diag_len = n;
    rc.remote_mta = "mx.example.com\r\nX-Evil: 1";
    struct dsn_report r = report(&rc, 1);
    struct dsn_output o;
    struct parsed m;
    char v[16384];
    build(&r, &o, &m);

    struct span g = group(&m, 1);
    cr_assert_eq(field(g, "Diagnostic-Code", v, sizeof v), 1);
    cr_assert(strncmp(v, "smtp; 550-5.1.1 first 550 5.1.1 ?second?? tail", 46) == 0, "%s", v);
    size_t len = strlen(v);
    for (size_t i = 0; i < len; i++)
        cr_assert(v[i] >= 0x20 && v[i] < 0x7f, "octet %02x at %zu", (unsigned char)v[i], i);
    cr_assert(len >= 3 && strcmp(v + len - 3, "...") == 0, "cut text ends with ...");
    cr_assert_leq(len, DSN_DIAG_MAX + 6 + 4 * 20, "bounded: %zu", len);
    cr_assert_not_null(strstr(v, "wwwwwwww"));
    /* Folded: header-like lines of the report stay within 78 columns. */
    for (size_t part = 0; part < 2; part++) {
        const char *p = m.pbody[part].p, *end = p + m.pbody[part].n;
        while (p < end) {
            const char *e = find(p, (size_t)(end - p), "\r\n");
            cr_assert_leq(e - p, 78, "line over 78: %.*s", (int)(e - p), p);
            p = e + 2;
        }
    }
    assert_field(g, "Remote-MTA", "dns; mx.example.com??X-Evil:?1");
    cr_assert(!has_field(g, "X-Evil"));
    parsed_free(&m);
    dsn_output_free(&o);
    free(d);
}

Test(dsn, hostile_sender_cannot_add_header_lines)
{
    struct dsn_rcpt rc = failed_rcpt();
    struct dsn_report r = report(&rc, 1);
    r.sender = "a@b\r\nBcc: victim@example.com";
    r.reporting_mta = "host\r\nX-Evil: 1";
    struct dsn_output o;
    struct parsed m;
    build(&r, &o, &m);
    assert_field(m.hdr, "To", "<a@b??Bcc: victim@example.com>");
    cr_assert(!has_field(m.hdr, "Bcc"));
    cr_assert(!has_field(m.hdr, "X-Evil"));
    assert_field(group(&m, 0), "Reporting-MTA", "dns; host??X-Evil:?1");
    parsed_free(&m);
    dsn_output_free(&o);
}

/* ---- content round trips ------------------------------------------------- */

Test(dsn, stuffed_content_round_trips_in_one_octet_segments)
{
    size_t n = sizeof orig_stuffed - 1;
    struct dsn_segment *segs = calloc(n, sizeof *segs);
    for (size_t i = 0; i < n; i++)
        segs[i] = (struct dsn_segment){ orig_stuffed + i, 1 };
    struct dsn_rcpt rc = failed_rcpt();
    struct dsn_report r = report(&rc, 1);
    r.segs = segs;
    r.nseg = n;
    struct dsn_output o;
    struct parsed m;
    build(&r, &o, &m);
    cr_assert(span_eq(m.pbody[2], orig_plain, sizeof orig_plain - 1));
    /* On the wire the "." line is stuffed again. */
    cr_assert_not_null(find(o.data, o.len, "\r\n..\r\n..leading dot\r\n\r\n...\r\n"));
    parsed_free(&m);
    dsn_output_free(&o);
    free(segs);
}

struct reader {
    const char *p;
    size_t len, off, step;
};

static long
read_some(void *arg, void *buf, size_t cap)
{
    struct reader *rd = arg;
    size_t k = rd->len - rd->off;
    if (k > rd->step)
        k = rd->step;
    if (k > cap)
        k = cap;
    memcpy(buf, rd->p + rd->off, k);
    rd->off += k;
    rd->step = rd->step % 7 + 1;    /* 1..7 octets per read */
    return (long)k;
}

Test(dsn, raw_content_with_dot_lines_round_trips_through_callback)
{
    /* BDAT: not stuffed; "\r\n.\r\n" is content here; no final CRLF. */
    static const char raw[] = "Subject: dots\r\n\r\n.\r\nline\r\n.\r\n..\r\n.x\r\n\r\n.\r\n.";
    struct reader rd = { raw, sizeof raw - 1, 0, 1 };
    struct dsn_rcpt rc = failed_rcpt();
    struct dsn_report r = report(&rc, 1);
    r.segs = NULL;
    r.nseg = 0;
    r.read = read_some;
    r.read_arg = &rd;
    r.form = DSN_CONTENT_RAW;
    struct dsn_output o;
    struct parsed m;
    build(&r, &o, &m);
    static const char want[] = "Subject: dots\r\n\r\n.\r\nline\r\n.\r\n..\r\n.x\r\n\r\n.\r\n.\r\n";
    cr_assert(span_eq(m.pbody[2], want, sizeof want - 1), "%.*s", (int)m.pbody[2].n,
              m.pbody[2].p);
    parsed_free(&m);
    dsn_output_free(&o);
}

Test(dsn, bare_cr_lf_and_long_lines_become_valid_wire_form)
{
    size_t longlen = 3000;
    char *raw = malloc(64 + longlen);
    size_t n = 0;
    n += (size_t)sprintf(raw, "Subject: x\n\na\nb\rc\r\r\n");
    for (size_t i = 0; i < longlen; i++)
        raw[n++] = i == 997 ? '.' : 'y';
    struct dsn_segment seg = { raw, n };
    struct dsn_rcpt rc = failed_rcpt();
    struct dsn_report r = report(&rc, 1);
    r.segs = &seg;
    r.form = DSN_CONTENT_RAW;
    struct dsn_output o;
    struct parsed m;
    build(&r, &o, &m);      /* parse() checks CRLF and the 998 limit */
    cr_assert(find(m.pbody[2].p, m.pbody[2].n, "Subject: x\r\n\r\na\r\nb\r\nc\r\n\r\n"));
    parsed_free(&m);
    dsn_output_free(&o);
    free(raw);
}

static long
read_fails(void *arg, void *buf, size_t cap)
{
    (void)arg;
    (void)buf;
    (void)cap;
    return -EIO;
}

Test(dsn, read_error_is_returned_and_nothing_is_left_to_free)
{
    struct dsn_rcpt rc = failed_rcpt();
    struct dsn_report r = report(&rc, 1);
    r.segs = NULL;
    r.nseg = 0;
    r.read = read_fails;
    struct dsn_output o;
    cr_assert_eq(dsn_build(&r, NOW_MS, &o), -EIO);
    cr_assert_null(o.data);
    cr_assert_eq(o.len, 0);
}

Test(dsn, boundary_never_occurs_in_the_content)
{
    struct dsn_rcpt rc = failed_rcpt();
    struct dsn_report r = report(&rc, 1);
    r.segs = NULL;
    r.nseg = 0;
    struct dsn_output o;
    struct parsed m;
    build(&r, &o, &m);
    char first[128];
    snprintf(first, sizeof first, "%s", m.boundary);   /* "--" + boundary */
    parsed_free(&m);
    dsn_output_free(&o);

    /* The same report, now returning a message that holds that boundary. */
    char content[512];
    int n = snprintf(content, sizeof content,
                     "Subject: trap\r\n\r\n%s\r\nContent-Type: text/plain\r\n\r\nfake\r\n%s--\r\n",
                     first, first);
    struct dsn_segment seg = { content, (size_t)n };
    r.segs = &seg;
    r.nseg = 1;
    r.form = DSN_CONTENT_RAW;
    build(&r, &o, &m);
    cr_assert_str_neq(m.boundary, first);
    cr_assert_eq(m.nparts, 3);
    cr_assert(span_eq(m.pbody[2], content, (size_t)n));
    parsed_free(&m);
    dsn_output_free(&o);
}

/* ---- dates, ids, status codes -------------------------------------------- */

Test(dsn, dates_are_rfc5322_utc)
{
    static const struct { uint64_t ms; const char *want; } cases[] = {
        { 0, "Thu, 01 Jan 1970 00:00:00 +0000" },
        { 1709208000000ull, "Thu, 29 Feb 2024 12:00:00 +0000" },
        { 1709251199999ull, "Thu, 29 Feb 2024 23:59:59 +0000" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct dsn_rcpt rc = failed_rcpt();
        struct dsn_report r = report(&rc, 1);
        r.arrival_ms = cases[i].ms;
        struct dsn_output o;
        struct parsed m;
        build(&r, &o, &m);
        assert_field(group(&m, 0), "Arrival-Date", cases[i].want);
        parsed_free(&m);
        dsn_output_free(&o);
    }
}

Test(dsn, message_ids_differ_by_queue_id_time_and_kind)
{
    char ids[4][256];
    for (int i = 0; i < 4; i++) {
        struct dsn_rcpt rc = failed_rcpt();
        if (i == 3) {
            rc.action = DSN_ACTION_DELAYED;
            rc.status = "4.0.0";
        }
        struct dsn_report r = report(&rc, 1);
        r.qid = i == 1 ? QID + 1 : QID;
        struct dsn_output o;
        struct parsed m;
        cr_assert_eq(dsn_build(&r, i == 2 ? NOW_MS + 1 : NOW_MS, &o), 0);
        parse(&o, &m);
        cr_assert_eq(field(m.hdr, "Message-ID", ids[i], sizeof ids[i]), 1);
        for (int j = 0; j < i; j++)
            cr_assert_str_neq(ids[i], ids[j]);
        parsed_free(&m);
        dsn_output_free(&o);
    }
}

struct status_case {
    char in[16];
    bool null_in;
    int action;
    char want[16];
};

ParameterizedTestParameters(dsn, status_class_follows_action)
{
    static struct status_case cases[] = {
        { "5.1.1", false, DSN_ACTION_FAILED, "5.1.1" },
        { "4.4.7", false, DSN_ACTION_FAILED, "5.4.7" },   /* row 46: expiry */
        { "", true, DSN_ACTION_FAILED, "5.0.0" },
        { "x", false, DSN_ACTION_FAILED, "5.0.0" },
        { "5.1", false, DSN_ACTION_FAILED, "5.0.0" },
        { "5.1.1 ", false, DSN_ACTION_FAILED, "5.0.0" },
        { "5.1234.1", false, DSN_ACTION_FAILED, "5.0.0" },
        { "3.1.1", false, DSN_ACTION_FAILED, "5.0.0" },
        { "4.4.1", false, DSN_ACTION_DELAYED, "4.4.1" },
        { "5.4.1", false, DSN_ACTION_DELAYED, "4.4.1" },
        { "", true, DSN_ACTION_DELAYED, "4.0.0" },
        { "2.6.0", false, DSN_ACTION_DELIVERED, "2.6.0" },
        { "", true, DSN_ACTION_RELAYED, "2.0.0" },
        { "5.9.999", false, DSN_ACTION_EXPANDED, "2.9.999" },
    };
    return cr_make_param_array(struct status_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct status_case *c, dsn, status_class_follows_action)
{
    struct dsn_rcpt rc = failed_rcpt();
    rc.status = c->null_in ? NULL : c->in;
    rc.action = (enum dsn_action)c->action;
    struct dsn_report r = report(&rc, 1);
    struct dsn_output o;
    struct parsed m;
    build(&r, &o, &m);
    assert_field(group(&m, 1), "Status", c->want);
    assert_field(group(&m, 1), "Action", dsn_action_name(rc.action));
    parsed_free(&m);
    dsn_output_free(&o);
}

/* ---- SMTPUTF8 ------------------------------------------------------------ */

Test(dsn, smtputf8_original_uses_global_types)
{
    static const char content[] = "Subject: caf\xc3\xa9\r\nFrom: <j\xc3\xb6rg@example.de>\r\n\r\n"
                                  "Gr\xc3\xbc\xc3\x9f" "e\r\n";
    struct dsn_segment seg = { content, sizeof content - 1 };
    struct dsn_rcpt rc = failed_rcpt();
    rc.addr = "\xe7\x94\xa8\xe6\x88\xb7+x@example.com";
    struct dsn_report r = report(&rc, 1);
    r.smtputf8 = true;
    r.sender = "j\xc3\xb6rg@example.de";
    r.segs = &seg;
    struct dsn_output o;
    struct parsed m;
    char v[512];
    build(&r, &o, &m);
    cr_assert(o.eightbit && o.smtputf8);
    cr_assert_eq(field(m.hdr, "Content-Type", v, sizeof v), 1);
    cr_assert_not_null(strstr(v, "report-type=global-delivery-status;"), "%s", v);
    assert_field(m.hdr, "To", "<j\xc3\xb6rg@example.de>");
    assert_field(m.phdr[1], "Content-Type", "message/global-delivery-status");
    assert_field(m.phdr[2], "Content-Type", "message/global");
    assert_field(m.phdr[2], "Content-Transfer-Encoding", "8bit");
    assert_field(group(&m, 1), "Final-Recipient",
                 "utf-8; \xe7\x94\xa8\xe6\x88\xb7\\x{2B}x@example.com");
    cr_assert(span_eq(m.pbody[2], content, sizeof content - 1));
    parsed_free(&m);
    dsn_output_free(&o);
}

Test(dsn, eight_bit_without_smtputf8_is_replaced_in_addresses)
{
    struct dsn_rcpt rc = failed_rcpt();
    rc.addr = "b\xc3\xb6@example.com";
    struct dsn_report r = report(&rc, 1);
    r.segs = NULL;
    r.nseg = 0;
    struct dsn_output o;
    struct parsed m;
    build(&r, &o, &m);
    cr_assert(!o.eightbit && !o.smtputf8);
    assert_field(group(&m, 1), "Final-Recipient", "rfc822; b??@example.com");
    parsed_free(&m);
    dsn_output_free(&o);
}

/* ---- whether to notify: RELIABILITY rows 44-46 --------------------------- */

struct notify_case {
    char sender[32];
    uint8_t notify;
    int action;
    bool want;
};

#define A_F DSN_ACTION_FAILED
#define A_D DSN_ACTION_DELAYED
#define A_S DSN_ACTION_DELIVERED
#define N_S NOTIFY_SUCCESS
#define N_F NOTIFY_FAILURE
#define N_D NOTIFY_DELAY

ParameterizedTestParameters(dsn, should_notify_truth_table)
{
    static struct notify_case cases[] = {
        /* Rows 44, 45: never to the null sender, whatever NOTIFY says. */
        { "", 0, A_F, false },
        { "", N_F, A_F, false },
        { "", N_S | N_F | N_D, A_D, false },
        { "", N_S, A_S, false },
        { "<>", 0, A_F, false },
        /* Row 46 and the default: failures are reported without NOTIFY. */
        { "alice@example.org", 0, A_F, true },
        { "alice@example.org", 0, A_D, true },   /* as FAILURE,DELAY */
        { "alice@example.org", 0, A_S, false },
        { "alice@example.org", 0, DSN_ACTION_RELAYED, false },
        /* NEVER. */
        { "alice@example.org", NOTIFY_NEVER, A_F, false },
        { "alice@example.org", NOTIFY_NEVER, A_D, false },
        { "alice@example.org", NOTIFY_NEVER, A_S, false },
        /* Explicit NOTIFY: exactly what was asked. */
        { "alice@example.org", N_F, A_F, true },
        { "alice@example.org", N_S, A_F, false },
        { "alice@example.org", N_D, A_F, false },
        { "alice@example.org", N_S | N_D, A_F, false },
        { "alice@example.org", N_D, A_D, true },
        { "alice@example.org", N_F, A_D, false },
        { "alice@example.org", N_F | N_S, A_D, false },
        { "alice@example.org", N_S, A_S, true },
        { "alice@example.org", N_S, DSN_ACTION_RELAYED, true },
        { "alice@example.org", N_S, DSN_ACTION_EXPANDED, true },
        { "alice@example.org", N_F | N_D, A_S, false },
        { "alice@example.org", N_F | N_D, DSN_ACTION_RELAYED, false },
        { "alice@example.org", N_S | N_F | N_D, A_F, true },
        { "alice@example.org", N_S | N_F | N_D, A_D, true },
        { "alice@example.org", N_S | N_F | N_D, A_S, true },
    };
    return cr_make_param_array(struct notify_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct notify_case *c, dsn, should_notify_truth_table)
{
    cr_assert_eq(dsn_should_notify(c->sender, c->notify, (enum dsn_action)c->action), c->want,
                 "sender \"%s\" notify %u action %s", c->sender, c->notify,
                 dsn_action_name((enum dsn_action)c->action));
}

Test(dsn, null_sender_string_is_never_notified)
{
    cr_assert(!dsn_should_notify(NULL, 0, DSN_ACTION_FAILED));
    cr_assert_str_eq(DSN_ENVELOPE_SENDER, "");
}

/* Row 46: an expired message bounces 5.4.7 to its sender. */
Test(dsn, expired_message_bounces_with_5_4_7)
{
    static const char reason[] = "delivery time expired";
    struct dsn_rcpt rc = failed_rcpt();
    rc.status = "4.4.7";
    rc.diag_type = "X-ringmta";
    rc.diag = reason;
    rc.diag_len = sizeof reason - 1;
    cr_assert(dsn_should_notify("alice@example.org", 0, rc.action));
    struct dsn_report r = report(&rc, 1);
    struct dsn_output o;
    struct parsed m;
    build(&r, &o, &m);
    assert_field(group(&m, 1), "Status", "5.4.7");
    assert_field(group(&m, 1), "Diagnostic-Code", "X-ringmta; delivery time expired");
    assert_field(m.hdr, "To", "<alice@example.org>");
    parsed_free(&m);
    dsn_output_free(&o);
}
