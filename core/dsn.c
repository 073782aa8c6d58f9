/*
 * dsn - delivery status notifications (RFC 3464, RFC 3461 §6, RFC 6533).
 *
 * Any thread, no state, no I/O. A report is made in three steps:
 *   1. the original content is read (segments or callback), un-stuffed and
 *      CRLF-normalised into one buffer, stopping as soon as enough is known
 *      (the header section for headers-only reports, or full_limit);
 *   2. the human-readable part and the delivery-status part are made as
 *      plain text from sanitised, bounded, folded pieces;
 *   3. a boundary found in none of the three is chosen, and the message is
 *      written through one line writer that turns everything into DATA wire
 *      form (CRLF, dot-stuffing, lines split at 998 octets).
 * Step 3 is the only place wire form is produced, so no generated or
 * returned line can escape the rules, whatever the content holds.
 * Hazard: memory is about twice the returned content (the un-stuffed copy
 * and the output); full_limit bounds both.
 */
#include "dsn.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "utf8.h"

/* RFC 5322 §2.1.1: "Each line of characters MUST be no more than 998
 * characters, and SHOULD be no more than 78 characters, excluding the CRLF." */
#define DSN_LINE_MAX 998
#define DSN_FOLD_AT 78
#define DSN_FOLD_INDENT "    "
#define DSN_HOST_MAX 255
#define DSN_ADDR_MAX 512
#define DSN_TYPE_MAX 32
#define DSN_DATE_MAX 48
/* Content is read in pieces of this size, so full_limit is checked often. */
#define DSN_READ_CHUNK (64u * 1024)

/* ---- a growing buffer ---------------------------------------------------- */

struct dsn_buf {
    char *p;
    size_t len;
    size_t cap;
};

static void
dsn_buf_reserve(struct dsn_buf *b, size_t n)
{
    if (b->cap - b->len >= n)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < n)
        cap *= 2;
    b->p = xrealloc(b->p, cap);
    b->cap = cap;
}

static void
dsn_buf_put(struct dsn_buf *b, const void *p, size_t n)
{
    dsn_buf_reserve(b, n);
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

static inline void
dsn_buf_putc(struct dsn_buf *b, char c)
{
    if (b->len == b->cap)
        dsn_buf_reserve(b, 1);
    b->p[b->len++] = c;
}

static void
dsn_buf_puts(struct dsn_buf *b, const char *s)
{
    dsn_buf_put(b, s, strlen(s));
}

static void __attribute__((format(printf, 2, 3)))
dsn_buf_printf(struct dsn_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n <= 0)
        return;
    dsn_buf_reserve(b, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* NUL-terminates without counting the NUL, so b->p can be used as a string. */
static const char *
dsn_buf_str(struct dsn_buf *b)
{
    dsn_buf_reserve(b, 1);
    b->p[b->len] = '\0';
    return b->p;
}

static void
dsn_buf_free(struct dsn_buf *b)
{
    b->p = xfree(b->p);
    b->len = b->cap = 0;
}

static bool
dsn_has_8bit(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)p[i] >= 0x80)
            return true;
    return false;
}

/* ---- the line machine: CRLF normalisation, (un)stuffing, line limit ----- */

enum { DSN_LINES_UNSTUFF = 1u << 0, DSN_LINES_STUFF = 1u << 1 };

struct dsn_lines {
    struct dsn_buf *out;
    unsigned mode;
    bool cr;            /* a CR seen, its LF not yet */
    bool bol;           /* the next octet starts a line */
    size_t col;         /* octets on the current output line */
};

static void
dsn_lines_init(struct dsn_lines *l, struct dsn_buf *out, unsigned mode)
{
    *l = (struct dsn_lines){ .out = out, .mode = mode, .bol = true };
}

static void
dsn_lines_eol(struct dsn_lines *l)
{
    dsn_buf_put(l->out, "\r\n", 2);
    l->bol = true;
    l->col = 0;
}

/*
 * Copies p[0..n) to the output, line by line. A bare CR or bare LF becomes
 * CRLF (the spool never holds one, but this code must not depend on it).
 */
static void
dsn_lines_put(struct dsn_lines *l, const char *p, size_t n)
{
    dsn_buf_reserve(l->out, n + n / 32 + 8);
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (l->cr) {
            l->cr = false;
            dsn_lines_eol(l);
            if (c == '\n')
                continue;
        }
        if (c == '\r') {
            l->cr = true;
            continue;
        }
        if (c == '\n') {
            dsn_lines_eol(l);
            continue;
        }
        /* XXX: a line over the limit is cut in two; see dsn.h. */
        if ((l->mode & DSN_LINES_STUFF) && l->col >= DSN_LINE_MAX)
            dsn_lines_eol(l);
        if (l->bol) {
            l->bol = false;
            /* RFC 5321 §4.5.2: "If the first character is a period and there
             * are other characters on the line, the first character is
             * deleted." */
            if (c == '.' && (l->mode & DSN_LINES_UNSTUFF))
                continue;
            /* RFC 5321 §4.5.2: "Before sending a line of mail text, the SMTP
             * client checks the first character of the line.  If it is a
             * period, one additional period is inserted at the beginning of
             * the line." */
            if (c == '.' && (l->mode & DSN_LINES_STUFF)) {
                dsn_buf_putc(l->out, '.');
                l->col++;
            }
        }
        /* The rest of the line up to a CR, LF or the limit, in one copy. */
        size_t run = 1, room = DSN_LINE_MAX - (l->col < DSN_LINE_MAX ? l->col : DSN_LINE_MAX);
        if (!(l->mode & DSN_LINES_STUFF))
            room = n - i;
        while (i + run < n && run < room && p[i + run] != '\r' && p[i + run] != '\n')
            run++;
        dsn_buf_put(l->out, p + i, run);
        l->col += run;
        i += run - 1;
    }
}

/* Ends the last line: a pending CR, or octets after the last line end. */
static void
dsn_lines_finish(struct dsn_lines *l)
{
    if (l->cr) {
        l->cr = false;
        dsn_lines_eol(l);
    }
    if (!l->bol)
        dsn_lines_eol(l);
}

/* ---- reading the original ------------------------------------------------ */

struct dsn_content {
    struct dsn_buf buf;         /* un-stuffed, CRLF lines */
    struct dsn_lines lines;
    uint64_t limit;
    size_t scanned;             /* header end searched below this offset */
    bool hdr_known;
    size_t hdr_len;             /* header section, its last CRLF included */
    bool want_headers_only;
    bool headers_only;          /* buf holds the header section only */
    bool truncated;             /* ... because of the limit */
    bool done;                  /* no more input needed */
};

/* The header section ends at the first empty line (RFC 5322 §2.1). */
static void
dsn_content_find_header_end(struct dsn_content *c)
{
    const char *p = c->buf.p;
    size_t n = c->buf.len;
    if (c->hdr_known || n < 2)
        return;
    if (p[0] == '\r' && p[1] == '\n') {
        c->hdr_known = true;
        c->hdr_len = 0;
        return;
    }
    size_t from = c->scanned > 3 ? c->scanned - 3 : 0;
    const char *e = n > from ? memmem(p + from, n - from, "\r\n\r\n", 4) : NULL;
    if (e) {
        c->hdr_known = true;
        c->hdr_len = (size_t)(e - p) + 2;
    }
    c->scanned = n;
}

static void
dsn_content_cut_to_headers(struct dsn_content *c)
{
    c->buf.len = c->hdr_len;
    c->headers_only = true;
    c->done = true;
}

static void
dsn_content_feed(struct dsn_content *c, const char *p, size_t n)
{
    dsn_lines_put(&c->lines, p, n);
    dsn_content_find_header_end(c);
    if (c->want_headers_only && c->hdr_known) {
        dsn_content_cut_to_headers(c);
    } else if (c->buf.len > c->limit) {
        if (!c->hdr_known) {
            /* A header section alone over the limit: keep whole lines. */
            size_t k = c->limit;
            while (k >= 2 && !(c->buf.p[k - 2] == '\r' && c->buf.p[k - 1] == '\n'))
                k--;
            c->hdr_known = true;
            c->hdr_len = k >= 2 ? k : 0;
        }
        c->truncated = true;
        dsn_content_cut_to_headers(c);
    }
}

static void
dsn_content_end(struct dsn_content *c)
{
    dsn_lines_finish(&c->lines);
    dsn_content_find_header_end(c);
    if (!c->hdr_known) {
        /* No empty line: all of it is header. */
        c->hdr_known = true;
        c->hdr_len = c->buf.len;
    }
    if (c->want_headers_only)
        dsn_content_cut_to_headers(c);
    else if (c->buf.len > c->limit) {
        c->truncated = true;
        dsn_content_cut_to_headers(c);
    }
}

/* Returns 0, or the reader's negative error. */
static int
dsn_content_read(const struct dsn_report *r, struct dsn_content *c)
{
    if (r->nseg > 0) {
        for (size_t i = 0; i < r->nseg && !c->done; i++) {
            const char *p = r->segs[i].p;
            size_t left = r->segs[i].len;
            while (left > 0 && !c->done) {
                size_t k = left < DSN_READ_CHUNK ? left : DSN_READ_CHUNK;
                dsn_content_feed(c, p, k);
                p += k;
                left -= k;
            }
        }
    } else {
        char *chunk = xmalloc(DSN_READ_CHUNK);
        while (!c->done) {
            long got = r->read(r->read_arg, chunk, DSN_READ_CHUNK);
            if (got < 0) {
                xfree(chunk);
                return (int)got;
            }
            if (got == 0)
                break;
            dsn_content_feed(c, chunk, (size_t)got > DSN_READ_CHUNK ? DSN_READ_CHUNK
                                                                    : (size_t)got);
        }
        xfree(chunk);
    }
    if (!c->done)
        dsn_content_end(c);
    return 0;
}

/* ---- sanitising attacker text -------------------------------------------- */

/*
 * Free text (a remote reply): every run of whitespace, CR and LF included,
 * becomes one space; other controls, DEL and 8-bit octets become '?'; leading
 * and trailing space go; more than max octets end in "...".
 */
static void
dsn_clean_text(struct dsn_buf *b, const char *s, size_t n, size_t max)
{
    size_t start = b->len;
    bool space = false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f') {
            space = true;
            continue;
        }
        if (c < 0x20 || c >= 0x7f)
            c = '?';
        if (space && b->len > start)
            dsn_buf_putc(b, ' ');
        space = false;
        dsn_buf_putc(b, (char)c);
        if (b->len - start > max) {
            b->len = start + max - 3;
            dsn_buf_puts(b, "...");
            break;
        }
    }
    dsn_buf_str(b);
}

/* A host name or an atom: letters, digits and the few octets names use;
 * anything else becomes '?'. Empty input gives dflt. */
static void
dsn_clean_token(struct dsn_buf *b, const char *s, const char *extra, size_t max,
                const char *dflt)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0) {
        dsn_buf_puts(b, dflt);
        dsn_buf_str(b);
        return;
    }
    if (n > max)
        n = max;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                  (c >= '0' && c <= '9') || c == '-' || (c != '\0' && strchr(extra, c));
        dsn_buf_putc(b, ok ? (char)c : '?');
    }
    dsn_buf_str(b);
}

/*
 * A mailbox or an ORCPT value for display and for rfc822-type fields:
 * printable ASCII kept, other octets '?', except UTF-8 when utf8 is set (the
 * caller checked it is valid). Cut at max octets.
 */
static void
dsn_clean_addr(struct dsn_buf *b, const char *s, bool utf8, size_t max)
{
    size_t n = strlen(s);
    if (n > max)
        n = max;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        bool ok = (c >= 0x20 && c < 0x7f) || (utf8 && c >= 0x80);
        dsn_buf_putc(b, ok ? (char)c : '?');
    }
    dsn_buf_str(b);
}

/*
 * An address of type "utf-8" (RFC 6533 §3, utf-8-addr-unitext): UTF-8 and
 * the ASCII graphic characters other than '+', '=' and '\' stand as they
 * are; space, those three and controls are written "\x{HEX}".
 */
static void
dsn_utf8_addr(struct dsn_buf *b, const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n > max)
        n = max;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x80 || (c > 0x20 && c < 0x7f && c != '+' && c != '=' && c != '\\'))
            dsn_buf_putc(b, (char)c);
        else
            dsn_buf_printf(b, "\\x{%X}", c);
    }
    dsn_buf_str(b);
}

/* True when the address may be shown as UTF-8 (SMTPUTF8 original, valid,
 * not plain ASCII). */
static bool
dsn_addr_is_utf8(const struct dsn_report *r, const char *a)
{
    size_t n = strlen(a);
    return r->smtputf8 && !utf8_is_ascii(a, n) && utf8_valid(a, n);
}

/* ---- dates and codes ----------------------------------------------------- */

/* RFC 5322 §3.3 date-time in UTC, from unix milliseconds; no libc time zone
 * or locale involved. */
static void
dsn_date(uint64_t unix_ms, char out[DSN_DATE_MAX])
{
    static const char wday[7][4] = { "Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed" };
    static const char mon[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
    uint64_t secs = unix_ms / 1000, days = secs / 86400, rem = secs % 86400;
    /* Civil date from days since 1970-01-01 (proleptic Gregorian). */
    uint64_t z = days + 719468, era = z / 146097, doe = z - era * 146097;
    uint64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    uint64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100), mp = (5 * doy + 2) / 153;
    unsigned d = (unsigned)(doy - (153 * mp + 2) / 5 + 1);
    unsigned m = (unsigned)(mp < 10 ? mp + 3 : mp - 9);
    uint64_t y = yoe + era * 400 + (m <= 2);
    snprintf(out, DSN_DATE_MAX, "%s, %02u %s %04llu %02u:%02u:%02u +0000",
             wday[days % 7], d, mon[m - 1], (unsigned long long)y,
             (unsigned)(rem / 3600), (unsigned)(rem / 60 % 60), (unsigned)(rem % 60));
}

/*
 * The Status field: RFC 3464 §2.3.4 takes an RFC 3463 code, whose class must
 * agree with the action ("failed" 5, "delayed" 4, the others 2). A code with
 * the wrong class keeps its subject and detail (an expired deferral 4.4.7 is
 * reported failed as 5.4.7); a malformed or missing one becomes X.0.0.
 */
static void
dsn_status(const char *in, enum dsn_action action, char out[16])
{
    char cls = action == DSN_ACTION_FAILED ? '5' : action == DSN_ACTION_DELAYED ? '4' : '2';
    size_t i = 0, d1 = 0, d2 = 0;
    bool ok = in && (in[0] == '2' || in[0] == '4' || in[0] == '5') && in[1] == '.';
    if (ok) {
        for (i = 2; in[i] >= '0' && in[i] <= '9'; i++)
            d1++;
        ok = d1 >= 1 && d1 <= 3 && in[i] == '.';
    }
    if (ok) {
        for (i++; in[i] >= '0' && in[i] <= '9'; i++)
            d2++;
        ok = d2 >= 1 && d2 <= 3 && in[i] == '\0';
    }
    if (ok)
        snprintf(out, 16, "%c%s", cls, in + 1);
    else
        snprintf(out, 16, "%c.0.0", cls);
}

const char *
dsn_action_name(enum dsn_action action)
{
    switch (action) {
    case DSN_ACTION_FAILED: return "failed";
    case DSN_ACTION_DELAYED: return "delayed";
    case DSN_ACTION_DELIVERED: return "delivered";
    case DSN_ACTION_RELAYED: return "relayed";
    case DSN_ACTION_EXPANDED: return "expanded";
    }
    return "failed";
}

/* ---- folding ------------------------------------------------------------- */

/*
 * Appends prefix, then the words of text (separated by single spaces),
 * folding before a word that would pass column DSN_FOLD_AT; continuation
 * lines start with DSN_FOLD_INDENT. RFC 3464 §2.1.1: "Since these fields
 * are defined according to the rules of [RFC822], the same conventions for
 * continuation lines and comments apply." A word longer than a line is cut
 * (XXX: unfolding then shows a space inside it). Ends with CRLF.
 */
static void
dsn_fold(struct dsn_buf *b, const char *prefix, const char *text, size_t len)
{
    const size_t ind = sizeof DSN_FOLD_INDENT - 1;
    size_t col = strlen(prefix), i = 0;
    dsn_buf_puts(b, prefix);
    while (i < len) {
        while (i < len && text[i] == ' ')
            i++;
        if (i == len)
            break;
        size_t w = 0;
        while (i + w < len && text[i + w] != ' ')
            w++;
        if (col + 1 + w > DSN_FOLD_AT && col > ind) {
            dsn_buf_puts(b, "\r\n" DSN_FOLD_INDENT);
            col = ind;
        } else {
            dsn_buf_putc(b, ' ');
            col++;
        }
        while (w > 0) {
            if (col >= DSN_FOLD_AT) {
                dsn_buf_puts(b, "\r\n" DSN_FOLD_INDENT);
                col = ind;
            }
            size_t k = DSN_FOLD_AT - col < w ? DSN_FOLD_AT - col : w;
            dsn_buf_put(b, text + i, k);
            col += k;
            i += k;
            w -= k;
        }
    }
    dsn_buf_puts(b, "\r\n");
}

/* ---- the two generated parts --------------------------------------------- */

static enum dsn_kind
dsn_kind_of(const struct dsn_report *r)
{
    enum dsn_kind k = DSN_KIND_SUCCESS;
    for (uint32_t i = 0; i < r->nrcpt; i++) {
        if (r->rcpts[i].action == DSN_ACTION_FAILED)
            return DSN_KIND_FAILURE;
        if (r->rcpts[i].action == DSN_ACTION_DELAYED)
            k = DSN_KIND_DELAY;
    }
    return k;
}

/* "N day(s)" / "N hour(s)" / "N minute(s)" for a duration in ms. */
static void
dsn_duration(struct dsn_buf *b, uint64_t ms)
{
    uint64_t min = ms / 60000;
    if (min >= 24 * 60)
        dsn_buf_printf(b, "%llu day(s)", (unsigned long long)(min / (24 * 60)));
    else if (min >= 60)
        dsn_buf_printf(b, "%llu hour(s)", (unsigned long long)(min / 60));
    else
        dsn_buf_printf(b, "%llu minute(s)", (unsigned long long)min);
}

/* One paragraph of the text part: "<addr>: what happened", wrapped. */
static void
dsn_text_rcpt(struct dsn_buf *t, const struct dsn_report *r, const struct dsn_rcpt *rc)
{
    struct dsn_buf addr = { 0 }, host = { 0 }, diag = { 0 }, say = { 0 };
    char status[16];
    dsn_status(rc->status, rc->action, status);
    dsn_buf_putc(&addr, '<');
    dsn_clean_addr(&addr, rc->addr ? rc->addr : "", rc->addr && dsn_addr_is_utf8(r, rc->addr),
                   DSN_ADDR_MAX);
    dsn_buf_puts(&addr, ">:");
    if (rc->remote_mta)
        dsn_clean_token(&host, rc->remote_mta, ".:_[]", DSN_HOST_MAX, "unknown");
    if (rc->diag)
        dsn_clean_text(&diag, rc->diag, rc->diag_len, DSN_DIAG_MAX);
    bool h = host.len > 0, d = diag.len > 0;
    switch (rc->action) {
    case DSN_ACTION_FAILED:
    case DSN_ACTION_DELAYED:
        if (h && d)
            dsn_buf_printf(&say, "host %s said: %s", host.p, diag.p);
        else if (d)
            dsn_buf_puts(&say, diag.p);
        else
            dsn_buf_printf(&say, "%s%s%s (status %s)",
                           rc->action == DSN_ACTION_FAILED ? "delivery failed"
                                                           : "delivery temporarily deferred",
                           h ? " at host " : "", h ? host.p : "", status);
        break;
    case DSN_ACTION_DELIVERED:
        dsn_buf_printf(&say, "delivered%s%s%s%s", h ? " via " : "", h ? host.p : "",
                       d ? ": " : "", d ? diag.p : "");
        break;
    case DSN_ACTION_RELAYED:
        dsn_buf_printf(&say, "relayed%s%s to a server that does not report delivery "
                       "status%s%s", h ? " via " : "", h ? host.p : "", d ? ": " : "",
                       d ? diag.p : "");
        break;
    case DSN_ACTION_EXPANDED:
        dsn_buf_printf(&say, "delivered to an alias or mailing list and expanded%s%s",
                       d ? ": " : "", d ? diag.p : "");
        break;
    }
    dsn_buf_puts(t, "\r\n");
    dsn_fold(t, dsn_buf_str(&addr), dsn_buf_str(&say), say.len);
    dsn_buf_free(&addr);
    dsn_buf_free(&host);
    dsn_buf_free(&diag);
    dsn_buf_free(&say);
}

/* Part 1, the explanation for people (wording after Postfix's bounce
 * templates, not a copy). */
static void
dsn_text_part(struct dsn_buf *t, const struct dsn_report *r, enum dsn_kind kind,
              const char *host, uint64_t now_ms)
{
    dsn_buf_printf(t, "This is the mail system at host %s.\r\n\r\n", host);
    switch (kind) {
    case DSN_KIND_FAILURE:
        dsn_buf_puts(t, "Your message could not be delivered to one or more recipients.\r\n"
                        "The reasons are listed below, and your message, or its header,\r\n"
                        "is attached.\r\n\r\n");
        break;
    case DSN_KIND_DELAY: {
        uint64_t until = 0;
        for (uint32_t i = 0; i < r->nrcpt; i++)
            if (r->rcpts[i].action == DSN_ACTION_DELAYED && r->rcpts[i].retry_until_ms > until)
                until = r->rcpts[i].retry_until_ms;
        dsn_buf_puts(t, "##################################################################\r\n"
                        "# THIS IS A WARNING ONLY. YOU DO NOT NEED TO RESEND YOUR MESSAGE. #\r\n"
                        "##################################################################\r\n"
                        "\r\nYour message could not be delivered for more than ");
        dsn_duration(t, now_ms > r->arrival_ms ? now_ms - r->arrival_ms : 0);
        dsn_buf_puts(t, ".\r\n");
        if (until > r->arrival_ms) {
            dsn_buf_puts(t, "It will be retried until it is ");
            dsn_duration(t, until - r->arrival_ms);
            dsn_buf_puts(t, " old.\r\n");
        }
        dsn_buf_puts(t, "\r\n");
        break;
    }
    case DSN_KIND_SUCCESS:
        dsn_buf_puts(t, "Your message was delivered to the destinations listed below.\r\n"
                        "A message delivered to a mailbox will cause no further reports;\r\n"
                        "other systems along the way may still report errors.\r\n\r\n");
        break;
    }
    if (kind != DSN_KIND_SUCCESS)
        dsn_buf_puts(t, "For further assistance, please send mail to postmaster.\r\n\r\n"
                        "If you do so, please include this problem report. You can\r\n"
                        "delete your own text from the attached returned message.\r\n\r\n");
    dsn_buf_puts(t, "                   The mail system\r\n");
    for (uint32_t i = 0; i < r->nrcpt; i++)
        dsn_text_rcpt(t, r, &r->rcpts[i]);
}

/*
 * Part 2. RFC 3464 §2.1: "delivery-status-content = per-message-fields
 * 1*( CRLF per-recipient-fields )", each group in the order of its ABNF.
 */
static void
dsn_status_part(struct dsn_buf *s, const struct dsn_report *r, const char *host)
{
    char date[DSN_DATE_MAX], status[16], qid[17];
    struct dsn_buf v = { 0 }, line = { 0 };

    if (r->envid) {
        /* RFC 3464 §2.2.1: the ENVID the sender gave, returned so it can
         * match the report to its message. Stored xtext-decoded; kept
         * printable and bounded here all the same. */
        dsn_clean_addr(&v, r->envid, false, SMTP_ENVID_MAX);
        dsn_buf_printf(s, "Original-Envelope-Id: %s\r\n", v.p);
    }
    dsn_buf_printf(s, "Reporting-MTA: dns; %s\r\n", host);
    dsn_date(r->arrival_ms, date);
    dsn_buf_printf(s, "Arrival-Date: %s\r\n", date);
    snprintf(qid, sizeof qid, "%016llx", (unsigned long long)r->qid);
    dsn_buf_printf(s, "X-Ringmta-Queue-ID: %s\r\n", qid);

    for (uint32_t i = 0; i < r->nrcpt; i++) {
        const struct dsn_rcpt *rc = &r->rcpts[i];
        const char *addr = rc->addr ? rc->addr : "";
        dsn_buf_puts(s, "\r\n");
        if (rc->orcpt) {
            v.len = 0;
            dsn_clean_token(&v, rc->orcpt_type, "", DSN_TYPE_MAX, "rfc822");
            dsn_buf_printf(s, "Original-Recipient: %s;", v.p);
            v.len = 0;
            dsn_clean_addr(&v, rc->orcpt, false, SMTP_ORCPT_MAX);
            dsn_buf_printf(s, "%s\r\n", v.p);
        }
        v.len = 0;
        if (dsn_addr_is_utf8(r, addr)) {
            dsn_utf8_addr(&v, addr, DSN_ADDR_MAX);
            dsn_buf_printf(s, "Final-Recipient: utf-8; %s\r\n", v.p);
        } else {
            dsn_clean_addr(&v, addr, false, DSN_ADDR_MAX);
            dsn_buf_printf(s, "Final-Recipient: rfc822; %s\r\n", v.p);
        }
        dsn_status(rc->status, rc->action, status);
        dsn_buf_printf(s, "Action: %s\r\nStatus: %s\r\n", dsn_action_name(rc->action), status);
        if (rc->remote_mta) {
            v.len = 0;
            dsn_clean_token(&v, rc->remote_mta, ".:_[]", DSN_HOST_MAX, "unknown");
            dsn_buf_printf(s, "Remote-MTA: dns; %s\r\n", v.p);
        }
        if (rc->diag) {
            /* RFC 3464 §2.3.6: after an SMTP attempt the diagnostic-type is
             * "smtp" and the text is the peer's reply, so attacker text:
             * cleaned, bounded and folded. */
            v.len = 0;
            dsn_clean_token(&v, rc->diag_type, "", DSN_TYPE_MAX, "smtp");
            line.len = 0;
            dsn_buf_printf(&line, "Diagnostic-Code: %s;", v.p);
            v.len = 0;
            dsn_clean_text(&v, rc->diag, rc->diag_len, DSN_DIAG_MAX);
            dsn_fold(s, dsn_buf_str(&line), v.p, v.len);
        }
        if (rc->last_attempt_ms) {
            dsn_date(rc->last_attempt_ms, date);
            dsn_buf_printf(s, "Last-Attempt-Date: %s\r\n", date);
        }
        /* RFC 3464 §2.3.9: "For DSNs of type "delayed", the Will-Retry-Until
         * field gives the date after which the Reporting MTA expects to
         * abandon all attempts to deliver the message to that recipient." */
        if (rc->action == DSN_ACTION_DELAYED && rc->retry_until_ms) {
            dsn_date(rc->retry_until_ms, date);
            dsn_buf_printf(s, "Will-Retry-Until: %s\r\n", date);
        }
    }
    dsn_buf_free(&v);
    dsn_buf_free(&line);
}

/* ---- the boundary -------------------------------------------------------- */

static uint64_t
dsn_mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/*
 * RFC 2046 §5.1.1: "The boundary delimiter MUST NOT appear inside any of the
 * encapsulated parts, on a line by itself or as the prefix of any line."
 * "=_" cannot occur in quoted-printable or base64 text; the rest comes from
 * qid, time and a counter. Each candidate is searched for anywhere in every
 * part (stricter than line starts), and the next counter tried on a hit.
 */
static void
dsn_boundary(char out[64], uint64_t qid, uint64_t now_ms, const struct dsn_buf *parts[],
             size_t nparts)
{
    for (uint64_t counter = 0;; counter++) {
        snprintf(out, 64, "=_ringmta_%016llx_%016llx", (unsigned long long)qid,
                 (unsigned long long)dsn_mix(dsn_mix(qid ^ now_ms) + counter));
        size_t n = strlen(out);
        bool seen = false;
        for (size_t i = 0; i < nparts && !seen; i++)
            seen = parts[i]->len >= n && memmem(parts[i]->p, parts[i]->len, out, n);
        if (!seen)
            return;
    }
}

/* ---- the whole message --------------------------------------------------- */

int
dsn_build(const struct dsn_report *r, uint64_t now_ms, struct dsn_output *out)
{
    static const char *const subject[] = {
        [DSN_KIND_FAILURE] = "Undelivered Mail Returned to Sender",
        [DSN_KIND_DELAY] = "Delayed Mail (still being retried)",
        [DSN_KIND_SUCCESS] = "Successful Mail Delivery Report",
    };
    static const char *const what[] = {
        [DSN_KIND_FAILURE] = "Undelivered Message",
        [DSN_KIND_DELAY] = "Delayed Message",
        [DSN_KIND_SUCCESS] = "Delivered Message",
    };
    static const char kind_tag[] = { [DSN_KIND_FAILURE] = 'F', [DSN_KIND_DELAY] = 'D',
                                     [DSN_KIND_SUCCESS] = 'S' };
    struct dsn_content c = { .limit = r->full_limit ? r->full_limit : DSN_FULL_LIMIT_DEFAULT };
    struct dsn_buf host = { 0 }, to = { 0 }, text = { 0 }, status = { 0 }, wire = { 0 };
    enum dsn_kind kind = dsn_kind_of(r);
    bool has_content = r->nseg > 0 || r->read != NULL;
    char date[DSN_DATE_MAX], boundary[64], qid[17];

    *out = (struct dsn_output){ .kind = kind };

    /* RFC 3461 §4.3: "RET=FULL requests that the entire message be returned
     * in any "failed" DSN issued for this recipient.  RET=HDRS requests that
     * only the headers of the message be returned." Without RET the choice
     * is ours: the full message, as Postfix does. RFC 3461 §4.3 also: "If a
     * DSN contains no indications of delivery failure, only the headers of
     * the message SHOULD be returned." */
    c.want_headers_only = r->ret == MAIL_RET_HDRS || kind != DSN_KIND_FAILURE;
    dsn_lines_init(&c.lines, &c.buf, r->form == DSN_CONTENT_DATA ? DSN_LINES_UNSTUFF : 0);
    if (has_content) {
        int err = dsn_content_read(r, &c);
        if (err < 0) {
            dsn_buf_free(&c.buf);
            return err;
        }
        out->headers_only = c.headers_only;
        out->truncated = c.truncated;
    }

    dsn_clean_token(&host, r->reporting_mta, ".:_[]", DSN_HOST_MAX, "localhost");
    dsn_text_part(&text, r, kind, host.p, now_ms);
    dsn_status_part(&status, r, host.p);
    const struct dsn_buf *parts[] = { &text, &status, &c.buf };
    dsn_boundary(boundary, r->qid, now_ms, parts, has_content ? 3 : 2);

    bool text8 = dsn_has_8bit(text.p, text.len);
    bool status8 = dsn_has_8bit(status.p, status.len);
    bool content8 = dsn_has_8bit(c.buf.p, c.buf.len);
    const char *sender = r->sender ? r->sender : "";
    bool null_sender = sender[0] == '\0' || strcmp(sender, "<>") == 0;
    if (!null_sender) {
        dsn_buf_putc(&to, '<');
        dsn_clean_addr(&to, sender, dsn_addr_is_utf8(r, sender), DSN_ADDR_MAX);
        dsn_buf_putc(&to, '>');
    } else {
        dsn_buf_puts(&to, "undisclosed-recipients:;");
    }
    bool to8 = dsn_has_8bit(to.p, to.len);
    out->eightbit = text8 || status8 || content8 || to8;
    out->smtputf8 = r->smtputf8 && out->eightbit;

    /* RFC 6533 §6: message/global-delivery-status and message/global are
     * the SMTPUTF8 counterparts; RFC 6522 §3: report-type is "the MIME
     * subtype of the second body part". */
    const char *status_type = r->smtputf8 ? "global-delivery-status" : "delivery-status";
    const char *returned_type = c.headers_only
        ? (r->smtputf8 ? "message/global-headers" : "text/rfc822-headers")
        : (r->smtputf8 ? "message/global" : "message/rfc822");

    struct dsn_lines w;
    dsn_lines_init(&w, &wire, DSN_LINES_STUFF);
    dsn_buf_reserve(&wire, text.len + status.len + c.buf.len + c.buf.len / 32 + 4096);
    dsn_buf_str(&to);
    snprintf(qid, sizeof qid, "%016llx", (unsigned long long)r->qid);
    dsn_date(now_ms, date);
    struct dsn_buf hdr = { 0 };
    dsn_buf_printf(&hdr,
                   "From: MAILER-DAEMON@%s (Mail Delivery System)\r\n"
                   "To: %s\r\n"
                   "Subject: %s\r\n"
                   "Date: %s\r\n"
                   "Message-ID: <%llu.%s.%c@%s>\r\n",
                   host.p, to.p, subject[kind], date, (unsigned long long)now_ms, qid,
                   kind_tag[kind], host.p);
    /* RFC 3834 §5: "auto-replied - Indicates that a message was
     * automatically generated as a direct response to another message." */
    dsn_buf_puts(&hdr, "Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n");
    dsn_buf_printf(&hdr,
                   "Content-Type: multipart/report; report-type=%s;\r\n"
                   "\tboundary=\"%s\"\r\n"
                   "Content-Transfer-Encoding: %s\r\n\r\n"
                   "This is a MIME-encapsulated message.\r\n",
                   status_type, boundary, out->eightbit ? "8bit" : "7bit");
    dsn_lines_put(&w, hdr.p, hdr.len);

    /* RFC 3464 §2: first a human readable explanation, then the
     * message/delivery-status part, then, if present, the returned message
     * or its header. */
    hdr.len = 0;
    dsn_buf_printf(&hdr,
                   "\r\n--%s\r\n"
                   "Content-Description: Notification\r\n"
                   "Content-Type: text/plain; charset=%s\r\n"
                   "Content-Transfer-Encoding: %s\r\n\r\n",
                   boundary, text8 ? "utf-8" : "us-ascii", text8 ? "8bit" : "7bit");
    dsn_lines_put(&w, hdr.p, hdr.len);
    dsn_lines_put(&w, text.p, text.len);

    hdr.len = 0;
    dsn_buf_printf(&hdr,
                   "\r\n--%s\r\n"
                   "Content-Description: Delivery report\r\n"
                   "Content-Type: message/%s\r\n"
                   "Content-Transfer-Encoding: %s\r\n\r\n",
                   boundary, status_type, status8 ? "8bit" : "7bit");
    dsn_lines_put(&w, hdr.p, hdr.len);
    dsn_lines_put(&w, status.p, status.len);

    if (has_content) {
        /* RFC 2046 §5.2.1: "No encoding other than "7bit", "8bit", or
         * "binary" is permitted for the body of a "message/rfc822" entity." */
        hdr.len = 0;
        dsn_buf_printf(&hdr,
                       "\r\n--%s\r\n"
                       "Content-Description: %s%s\r\n"
                       "Content-Type: %s\r\n"
                       "Content-Transfer-Encoding: %s\r\n\r\n",
                       boundary, what[kind], c.headers_only ? " Headers" : "", returned_type,
                       content8 ? "8bit" : "7bit");
        dsn_lines_put(&w, hdr.p, hdr.len);
        dsn_lines_put(&w, c.buf.p, c.buf.len);
    }
    hdr.len = 0;
    dsn_buf_printf(&hdr, "\r\n--%s--\r\n", boundary);
    dsn_lines_put(&w, hdr.p, hdr.len);
    dsn_lines_finish(&w);

    out->data = wire.p;
    out->len = wire.len;
    dsn_buf_free(&hdr);
    dsn_buf_free(&host);
    dsn_buf_free(&to);
    dsn_buf_free(&text);
    dsn_buf_free(&status);
    dsn_buf_free(&c.buf);
    return 0;
}

void
dsn_output_free(struct dsn_output *out)
{
    xfree(out->data);
    *out = (struct dsn_output){ 0 };
}

/* ---- whether to notify at all -------------------------------------------- */

bool
dsn_should_notify(const char *sender, uint8_t notify, enum dsn_action action)
{
    /* RFC 5321 §6.1: "The recipient of this notification MUST be the address
     * from the envelope return path (or the Return-Path: line).  However, if
     * this address is null ("<>"), the receiver-SMTP MUST NOT send a
     * notification." (RELIABILITY row 45: logged only.) */
    if (!sender || sender[0] == '\0' || strcmp(sender, "<>") == 0)
        return false;
    /* RFC 3461 §4.1: "A NOTIFY parameter value of NEVER requests that a DSN
     * not be returned to the sender under any conditions." */
    if (notify & NOTIFY_NEVER)
        return false;
    switch (action) {
    case DSN_ACTION_FAILED:
        /* "...containing the SUCCESS or FAILURE keywords requests that a DSN
         * be issued on successful delivery or delivery failure,
         * respectively." Without NOTIFY the default is ours: failures are
         * reported, as every MTA does. */
        return notify == 0 || (notify & NOTIFY_FAILURE);
    case DSN_ACTION_DELAYED:
        /* "A NOTIFY parameter value containing the keyword DELAY indicates
         * the sender's willingness to receive "delayed" DSNs." Without
         * NOTIFY, §4.1 lets the MTA act as for NOTIFY=FAILURE or for
         * NOTIFY=FAILURE,DELAY; like Postfix we take the latter (whether a
         * delay notice is sent at all is delay_warning_time's choice). */
        return notify == 0 || (notify & NOTIFY_DELAY) != 0;
    case DSN_ACTION_DELIVERED:
    case DSN_ACTION_RELAYED:
    case DSN_ACTION_EXPANDED:
        return (notify & NOTIFY_SUCCESS) != 0;
    }
    return false;
}
