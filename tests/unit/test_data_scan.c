/*
 * data_scan: end-of-DATA detection and the content policy, fed in every
 * chunking a network can produce (RELIABILITY rows 1, 3, 18, 34).
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data_scan.h"

#define LINE_LIMIT 998
#define HDR_LIMIT 102400

struct feed_result {
    bool end;
    size_t consumed;   /* octets up to and including the terminator, or all */
};

/* Feeds p[0..n) in pieces of `chunk` octets (0 = all at once), stopping at
 * the end of DATA like io/ does. */
static struct feed_result
feed_chunked(struct data_scan *s, const void *data, size_t n, size_t chunk)
{
    const uint8_t *p = data;
    struct feed_result r = { false, 0 };
    if (chunk == 0)
        chunk = n ? n : 1;
    while (r.consumed < n) {
        size_t want = n - r.consumed < chunk ? n - r.consumed : chunk;
        bool end = false;
        size_t used = data_scan_feed(s, p + r.consumed, want, &end);
        r.consumed += used;
        if (end) {
            r.end = true;
            cr_assert_leq(used, want);
            return r;
        }
        cr_assert_eq(used, want, "without the end every octet is consumed");
    }
    return r;
}

/* Feeds in exactly two pieces split at k. */
static struct feed_result
feed_split(struct data_scan *s, const void *data, size_t n, size_t k)
{
    const uint8_t *p = data;
    struct feed_result r = { false, 0 };
    bool end = false;
    size_t used = data_scan_feed(s, p, k, &end);
    r.consumed = used;
    if (end) {
        r.end = true;
        return r;
    }
    cr_assert_eq(used, k);
    used = data_scan_feed(s, p + k, n - k, &end);
    r.consumed += used;
    r.end = end;
    return r;
}

static void
init_dot(struct data_scan *s)
{
    data_scan_init(s, DATA_SCAN_DOT, LINE_LIMIT, HDR_LIMIT);
}

TestSuite(data_scan);

/* --- the terminator ------------------------------------------------------ */

Test(data_scan, ends_at_crlf_dot_crlf_and_reports_the_octets_used)
{
    static const char in[] = "Subject: x\r\n\r\nhello\r\n.\r\nQUIT\r\n";
    struct data_scan s;
    init_dot(&s);
    bool end = false;
    size_t used = data_scan_feed(&s, (const uint8_t *)in, sizeof in - 1, &end);
    cr_assert(end);
    cr_assert_eq(used, strlen("Subject: x\r\n\r\nhello\r\n.\r\n"));
    cr_assert_eq(s.total, used);
    cr_assert_eq(s.flags, 0);
}

Test(data_scan, terminator_split_at_every_octet_boundary)
{
    static const char in[] = "Subject: x\r\n\r\nhello\r\n.\r\nMAIL FROM:<a@b>\r\n";
    size_t n = sizeof in - 1;
    size_t want = strlen("Subject: x\r\n\r\nhello\r\n.\r\n");
    for (size_t k = 0; k <= n; k++) {
        struct data_scan s;
        init_dot(&s);
        struct feed_result r = feed_split(&s, in, n, k);
        cr_assert(r.end, "split at %zu: end not found", k);
        cr_assert_eq(r.consumed, want, "split at %zu: consumed %zu", k, r.consumed);
        cr_assert_eq(s.flags, 0, "split at %zu", k);
        cr_assert_eq(s.total, want, "split at %zu", k);
    }
}

Test(data_scan, terminator_split_into_three_pieces_anywhere_inside_it)
{
    static const char in[] = "a\r\n.\r\n";
    size_t n = sizeof in - 1;
    for (size_t i = 0; i <= n; i++) {
        for (size_t j = i; j <= n; j++) {
            struct data_scan s;
            init_dot(&s);
            bool end = false;
            size_t got = data_scan_feed(&s, (const uint8_t *)in, i, &end);
            cr_assert_eq(end, i == n);
            cr_assert_eq(got, i);
            if (!end)
                got = data_scan_feed(&s, (const uint8_t *)in + i, j - i, &end);
            if (!end) {
                cr_assert_eq(got, j - i);
                got = data_scan_feed(&s, (const uint8_t *)in + j, n - j, &end);
                cr_assert_eq(got, n - j);
            } else {
                cr_assert(i == n || j == n);
            }
            cr_assert(end, "pieces %zu/%zu", i, j);
            cr_assert_eq(s.total, n);
        }
    }
}

Test(data_scan, one_octet_at_a_time)
{
    static const char in[] = "From: a\r\nReceived: x\r\n\r\n..dots\r\nbody\r\n.\r\n";
    struct data_scan s;
    init_dot(&s);
    struct feed_result r = feed_chunked(&s, in, sizeof in - 1, 1);
    cr_assert(r.end);
    cr_assert_eq(r.consumed, sizeof in - 1);
    cr_assert_eq(s.received, 1);
    cr_assert_eq(s.flags, 0);
}

Test(data_scan, empty_body_is_just_the_dot_line)
{
    struct data_scan s;
    init_dot(&s);
    bool end = false;
    size_t used = data_scan_feed(&s, (const uint8_t *)".\r\nQUIT\r\n", 9, &end);
    cr_assert(end);
    cr_assert_eq(used, 3);
    cr_assert_eq(s.total, 3);
    cr_assert_eq(s.flags, 0);
}

Test(data_scan, zero_length_feed_is_harmless)
{
    struct data_scan s;
    init_dot(&s);
    bool end = true;
    cr_assert_eq(data_scan_feed(&s, (const uint8_t *)"", 0, &end), 0);
    cr_assert_not(end);
    struct feed_result r = feed_chunked(&s, "x\r\n.\r\n", 6, 0);
    cr_assert(r.end);
}

/* --- SMTP smuggling (RELIABILITY row 1) --------------------------------- */

struct smuggle_case {
    char name[16];
    char seq[8];          /* the fake terminator */
    uint32_t flags;       /* violations it must be flagged with */
};

static struct smuggle_case smuggle_cases[] = {
    { "LF.LF", "\n.\n", DATA_SCAN_BARE_LF },
    { "LF.CRLF", "\n.\r\n", DATA_SCAN_BARE_LF },
    { "CRLF.LF", "\r\n.\n", DATA_SCAN_BARE_LF },
    { "CR.CR", "\r.\r", DATA_SCAN_BARE_CR },
    { "CR.CRLF", "\r.\r\n", DATA_SCAN_BARE_CR },
    { "LF.CR", "\n.\r", DATA_SCAN_BARE_LF | DATA_SCAN_BARE_CR },
    { "CRLF.CR", "\r\n.\r", DATA_SCAN_BARE_CR },
    { "CRLF.CRCRLF", "\r\n.\r\r\n", DATA_SCAN_BARE_CR },
};

ParameterizedTestParameters(data_scan, bare_line_ends_never_end_data)
{
    return cr_make_param_array(struct smuggle_case, smuggle_cases,
                               sizeof smuggle_cases / sizeof *smuggle_cases);
}

ParameterizedTest(struct smuggle_case *c, data_scan, bare_line_ends_never_end_data)
{
    char in[512];
    int n = snprintf(in, sizeof in,
                     "Subject: hi\r\n\r\nhello%sMAIL FROM:<evil@x.example>\r\n"
                     "RCPT TO:<victim@example.com>\r\nDATA\r\nsmuggled\r\n",
                     c->seq);
    /* Whole, and octet by octet, and split at every point: never an end. */
    for (size_t chunk = 0; chunk <= 2; chunk++) {
        struct data_scan s;
        init_dot(&s);
        struct feed_result r = feed_chunked(&s, in, (size_t)n, chunk);
        cr_assert_not(r.end, "%s (chunk %zu) ended DATA", c->name, chunk);
        cr_assert_eq(r.consumed, (size_t)n);
        cr_assert_eq(s.flags & c->flags, c->flags, "%s: flags %#x", c->name, s.flags);
        /* The real terminator still ends it, and the message stays marked. */
        r = feed_chunked(&s, ".\r\n", 3, 0);
        cr_assert(r.end, "%s: real end not found", c->name);
        cr_assert_neq(s.flags & (DATA_SCAN_BARE_LF | DATA_SCAN_BARE_CR), 0);
    }
    for (int k = 0; k <= n; k++) {
        struct data_scan s;
        init_dot(&s);
        struct feed_result r = feed_split(&s, in, (size_t)n, (size_t)k);
        cr_assert_not(r.end, "%s split at %d ended DATA", c->name, k);
    }
}

Test(data_scan, bare_lf_at_line_start_never_begins_a_dot_line)
{
    /* "\n.\r\n" right at the start of DATA. */
    struct data_scan s;
    init_dot(&s);
    struct feed_result r = feed_chunked(&s, "\n.\r\nx", 5, 0);
    cr_assert_not(r.end);
    cr_assert(s.flags & DATA_SCAN_BARE_LF);
}

Test(data_scan, cr_alone_at_data_start_then_dot)
{
    struct data_scan s;
    init_dot(&s);
    struct feed_result r = feed_chunked(&s, "\r.\r\nx", 5, 1);
    cr_assert_not(r.end);
    cr_assert(s.flags & DATA_SCAN_BARE_CR);
}

Test(data_scan, clean_crlf_message_has_no_flags)
{
    struct data_scan s;
    init_dot(&s);
    struct feed_result r = feed_chunked(&s, "a: b\r\n\r\nline\r\n\r\nline2\r\n.\r\n", 27, 3);
    cr_assert(r.end);
    cr_assert_eq(s.flags, 0);
}

/* --- dot lines (RELIABILITY row 3) -------------------------------------- */

Test(data_scan, double_dot_line_is_data_not_the_end)
{
    static const char in[] = "a\r\n..\r\n.x\r\n..\r\n.\r\n";
    for (size_t chunk = 0; chunk <= 3; chunk++) {
        struct data_scan s;
        init_dot(&s);
        struct feed_result r = feed_chunked(&s, in, sizeof in - 1, chunk);
        cr_assert(r.end);
        cr_assert_eq(r.consumed, sizeof in - 1, "chunk %zu", chunk);
        cr_assert_eq(s.flags, 0);
    }
}

/* dot_lines says whether the stored form is also the unstuffed message
 * (delivery then may send it by BDAT as it is). */
Test(data_scan, dot_lines_counts_stuffed_lines_not_the_terminator)
{
    static const struct {
        const char *in;
        uint32_t dots;
    } cases[] = {
        { "a\r\nb\r\n.\r\n", 0 },
        { ".\r\n", 0 },
        { "..a\r\nb\r\n.\r\n", 1 },
        { "Subject: x\r\n\r\na.b\r\n..\r\nc\r\n...\r\n.\r\n", 2 },
        { "a\n.b\r\n.\r\n", 0 },     /* after a bare LF: not a line start (rejected anyway) */
        { "x\r\n.\rx\r\n.\r\n", 1 }, /* ".\r" then text: a dot line, not the end */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        size_t n = strlen(cases[i].in);
        for (size_t chunk = 0; chunk <= n; chunk++) {
            struct data_scan s;
            init_dot(&s);
            struct feed_result r = feed_chunked(&s, cases[i].in, n, chunk);
            cr_assert(r.end, "case %zu", i);
            cr_assert_eq(s.dot_lines, cases[i].dots, "case %zu chunk %zu: %u dot lines", i,
                         chunk, s.dot_lines);
        }
    }
}

Test(data_scan, dot_line_at_data_start_with_text)
{
    struct data_scan s;
    init_dot(&s);
    struct feed_result r = feed_chunked(&s, "..\r\n.\r\n", 7, 0);
    cr_assert(r.end);
    cr_assert_eq(r.consumed, 7);
}

Test(data_scan, dot_in_the_middle_of_a_line_is_text)
{
    struct data_scan s;
    init_dot(&s);
    struct feed_result r = feed_chunked(&s, "a.\r\nb\r\n.\r\n", 10, 0);
    cr_assert(r.end);
    cr_assert_eq(r.consumed, 10);
}

/* --- RAW mode (BDAT) ------------------------------------------------------ */

Test(data_scan, raw_mode_never_ends_and_dots_are_data)
{
    static const char in[] = "a\r\n.\r\n..\r\nb\r\n.\r\n";
    struct data_scan s;
    data_scan_init(&s, DATA_SCAN_RAW, LINE_LIMIT, HDR_LIMIT);
    struct feed_result r = feed_chunked(&s, in, sizeof in - 1, 1);
    cr_assert_not(r.end);
    cr_assert_eq(r.consumed, sizeof in - 1);
    cr_assert_eq(s.total, sizeof in - 1);
    cr_assert_eq(s.flags, 0);
}

Test(data_scan, raw_mode_flags_bare_lf_too)
{
    struct data_scan s;
    data_scan_init(&s, DATA_SCAN_RAW, LINE_LIMIT, HDR_LIMIT);
    feed_chunked(&s, "a\nb\r\n", 5, 0);
    cr_assert(s.flags & DATA_SCAN_BARE_LF);
}

Test(data_scan, raw_mode_does_not_discount_a_leading_dot)
{
    char line[LINE_LIMIT + 4];
    memset(line, 'x', sizeof line);
    line[0] = '.';
    memcpy(line + LINE_LIMIT + 1, "\r\n", 2);   /* 999 octets + CRLF */
    struct data_scan s;
    data_scan_init(&s, DATA_SCAN_RAW, LINE_LIMIT, HDR_LIMIT);
    feed_chunked(&s, line, LINE_LIMIT + 3, 0);
    cr_assert(s.flags & DATA_SCAN_LONG_LINE);
}

/* --- Received: counting (RELIABILITY row 34) ----------------------------- */

static char *
make_received_headers(unsigned count, size_t *len)
{
    size_t cap = (size_t)count * 64 + 256;
    char *buf = malloc(cap);
    size_t n = 0;
    for (unsigned i = 0; i < count; i++)
        n += (size_t)snprintf(buf + n, cap - n,
                              "Received: from h%u.example by x.example; Mon, 1 Jan 2024\r\n", i);
    n += (size_t)snprintf(buf + n, cap - n, "Subject: loop\r\n\r\nbody\r\n.\r\n");
    *len = n;
    return buf;
}

Test(data_scan, counts_received_headers)
{
    size_t n;
    char *in = make_received_headers(101, &n);
    for (size_t chunk = 0; chunk <= 7; chunk += 7) {
        struct data_scan s;
        init_dot(&s);
        struct feed_result r = feed_chunked(&s, in, n, chunk);
        cr_assert(r.end);
        cr_assert_eq(s.received, 101, "chunk %zu: %u", chunk, s.received);
    }
    free(in);
}

Test(data_scan, received_name_split_across_feeds_at_every_point)
{
    static const char in[] = "X: y\r\nReceived: from a\r\nReCeIvEd:b\r\n\r\n.\r\n";
    size_t n = sizeof in - 1;
    for (size_t k = 0; k <= n; k++) {
        struct data_scan s;
        init_dot(&s);
        struct feed_result r = feed_split(&s, in, n, k);
        cr_assert(r.end);
        cr_assert_eq(s.received, 2, "split at %zu: %u", k, s.received);
    }
}

Test(data_scan, folded_received_line_counts_once)
{
    static const char in[] = "Received: from a\r\n"
                             " Received: not a header\r\n"
                             "\tReceived: nor this\r\n"
                             "\r\n.\r\n";
    struct data_scan s;
    init_dot(&s);
    feed_chunked(&s, in, sizeof in - 1, 0);
    cr_assert_eq(s.received, 1);
}

Test(data_scan, received_in_the_body_is_not_counted)
{
    static const char in[] = "Subject: x\r\n\r\nReceived: a\r\nReceived: b\r\n.\r\n";
    for (size_t chunk = 0; chunk <= 1; chunk++) {
        struct data_scan s;
        init_dot(&s);
        feed_chunked(&s, in, sizeof in - 1, chunk);
        cr_assert_eq(s.received, 0);
        cr_assert_not(s.in_header);
    }
}

Test(data_scan, similar_header_names_are_not_counted)
{
    static const char in[] = "X-Received: a\r\nReceived-SPF: pass\r\nReceive: x\r\n"
                             "Received : x\r\nRECEIVED:y\r\n\r\n.\r\n";
    struct data_scan s;
    init_dot(&s);
    feed_chunked(&s, in, sizeof in - 1, 1);
    cr_assert_eq(s.received, 1);   /* only "RECEIVED:y" */
}

Test(data_scan, bare_lf_does_not_start_a_header_line)
{
    /* "\n" is not a line break, so neither this Received: nor the
     * "empty line" after it count. */
    static const char in[] = "X: a\nReceived: b\r\n\n\nReceived: c\r\n\r\n.\r\n";
    struct data_scan s;
    init_dot(&s);
    feed_chunked(&s, in, sizeof in - 1, 0);
    cr_assert_eq(s.received, 0);
    cr_assert(s.flags & DATA_SCAN_BARE_LF);
}

/* --- line length (RELIABILITY row 18) ------------------------------------- */

static void
scan_one_line(struct data_scan *s, char first, size_t len, size_t chunk)
{
    char *buf = malloc(len + 8);
    memset(buf, 'x', len);
    if (len > 0)
        buf[0] = first;
    memcpy(buf + len, "\r\n.\r\n", 5);
    struct feed_result r = feed_chunked(s, buf, len + 5, chunk);
    cr_assert(r.end);
    free(buf);
}

Test(data_scan, line_of_998_octets_is_fine_999_is_long)
{
    for (size_t chunk = 0; chunk <= 100; chunk += 100) {
        struct data_scan s;
        init_dot(&s);
        scan_one_line(&s, 'x', 998, chunk);
        cr_assert_eq(s.flags, 0);
        init_dot(&s);
        scan_one_line(&s, 'x', 999, chunk);
        cr_assert_eq(s.flags, DATA_SCAN_LONG_LINE);
    }
}

Test(data_scan, stuffing_dot_is_not_counted)
{
    struct data_scan s;
    init_dot(&s);
    scan_one_line(&s, '.', 999, 0);   /* "." + 998 octets of content */
    cr_assert_eq(s.flags, 0);
    init_dot(&s);
    scan_one_line(&s, '.', 1000, 0);
    cr_assert_eq(s.flags, DATA_SCAN_LONG_LINE);
}

Test(data_scan, long_line_flag_is_sticky_and_survives_a_huge_line)
{
    struct data_scan s;
    init_dot(&s);
    char chunk[4096];
    memset(chunk, 'y', sizeof chunk);
    bool end;
    for (int i = 0; i < 1024; i++)   /* 4 MiB without a line break */
        data_scan_feed(&s, (const uint8_t *)chunk, sizeof chunk, &end);
    cr_assert(s.flags & DATA_SCAN_LONG_LINE);
    struct feed_result r = feed_chunked(&s, "\r\nshort\r\n.\r\n", 12, 0);
    cr_assert(r.end);
    cr_assert(s.flags & DATA_SCAN_LONG_LINE);
}

Test(data_scan, no_line_limit_when_zero)
{
    struct data_scan s;
    data_scan_init(&s, DATA_SCAN_DOT, 0, 0);
    scan_one_line(&s, 'x', 5000, 0);
    cr_assert_eq(s.flags, 0);
}

Test(data_scan, bare_cr_and_lf_count_toward_the_line)
{
    struct data_scan s;
    init_dot(&s);
    char buf[1100];
    for (size_t i = 0; i < 1000; i++)
        buf[i] = (i % 2) ? '\n' : 'a';
    memcpy(buf + 1000, "\r\n.\r\n", 5);
    feed_chunked(&s, buf, 1005, 0);
    cr_assert(s.flags & DATA_SCAN_LONG_LINE);
    cr_assert(s.flags & DATA_SCAN_BARE_LF);
}

/* --- header size (RELIABILITY row 18) ------------------------------------- */

static char *
make_header(size_t target, size_t *len)
{
    /* Folded header lines of 78 octets until target octets, then the
     * blank line and a body. */
    char *buf = malloc(target + 256);
    size_t n = (size_t)sprintf(buf, "Subject: start\r\n");
    while (n + 80 < target) {
        memset(buf + n, 'h', 78);
        buf[n] = '\t';
        memcpy(buf + n + 78, "\r\n", 2);
        n += 80;
    }
    n += (size_t)sprintf(buf + n, "\r\nbody\r\n.\r\n");
    *len = n;
    return buf;
}

Test(data_scan, big_header_flagged_when_fed_in_pieces)
{
    size_t n;
    char *in = make_header(1024 * 1024, &n);
    struct data_scan s;
    init_dot(&s);
    struct feed_result r = feed_chunked(&s, in, n, 4096);
    cr_assert(r.end);
    cr_assert(s.flags & DATA_SCAN_BIG_HEADER);
    cr_assert_not(s.flags & DATA_SCAN_LONG_LINE);
    free(in);
}

/* Bug: header_bytes was only added when a feed ended still inside the
 * header, so a header section and its blank line arriving in one read
 * (a 1 MB folded header in one buffer) was never measured. */
Test(data_scan, big_header_flagged_when_it_ends_in_the_same_feed)
{
    size_t n;
    char *in = make_header(1024 * 1024, &n);
    struct data_scan s;
    init_dot(&s);
    struct feed_result r = feed_chunked(&s, in, n, 0);
    cr_assert(r.end);
    cr_assert(s.flags & DATA_SCAN_BIG_HEADER);
    free(in);
}

Test(data_scan, big_header_flagged_when_data_ends_inside_the_header)
{
    size_t n;
    char *in = make_header(1024 * 1024, &n);
    /* Drop the blank line: "...\r\nbody\r\n.\r\n" becomes header lines. */
    char *blank = strstr(in, "\r\n\r\nbody");
    memmove(blank + 2, blank + 4, strlen(blank + 4) + 1);
    n -= 2;
    struct data_scan s;
    init_dot(&s);
    struct feed_result r = feed_chunked(&s, in, n, 0);
    cr_assert(r.end);
    cr_assert(s.in_header);
    cr_assert(s.flags & DATA_SCAN_BIG_HEADER);
    free(in);
}

Test(data_scan, header_size_boundary_is_the_same_for_any_chunking)
{
    /* The header section (up to and including the blank line) is exactly
     * the limit: fine; one octet more: too big. */
    static const char hdr[] = "Subject: 0123456789\r\n\r\n";   /* 23 octets */
    size_t hl = sizeof hdr - 1;
    char in[64];
    memcpy(in, hdr, hl);
    memcpy(in + hl, "body\r\n.\r\n", 10);
    for (size_t chunk = 0; chunk <= hl + 10; chunk++) {
        struct data_scan s;
        data_scan_init(&s, DATA_SCAN_DOT, LINE_LIMIT, hl);
        feed_chunked(&s, in, hl + 10, chunk);
        cr_assert_eq(s.flags, 0, "chunk %zu: %#x", chunk, s.flags);
        data_scan_init(&s, DATA_SCAN_DOT, LINE_LIMIT, hl - 1);
        feed_chunked(&s, in, hl + 10, chunk);
        cr_assert_eq(s.flags, DATA_SCAN_BIG_HEADER, "chunk %zu: %#x", chunk, s.flags);
    }
}

Test(data_scan, big_body_is_not_a_big_header)
{
    struct data_scan s;
    data_scan_init(&s, DATA_SCAN_DOT, LINE_LIMIT, 100);
    feed_chunked(&s, "A: b\r\n\r\n", 8, 0);
    char line[82];
    memset(line, 'b', 80);
    memcpy(line + 80, "\r\n", 2);
    bool end;
    for (int i = 0; i < 100; i++)
        data_scan_feed(&s, (const uint8_t *)line, sizeof line, &end);
    cr_assert_eq(s.flags, 0);
}

/* --- resumability: any chunking gives the same verdict --------------------- */

static const char *const corpus[] = {
    "Received: a\r\nReceived: b\r\n\r\n..x\r\n.y\r\nReceived: z\r\n.\r\n",
    "A: b\r\n\r\nx\ny\r\n.\r\n",
    "A: b\r\n\r\nx\ry\r\n\r\n.\r\n",
    "\r\n\r\n.\r\n",
    ".\r\n",
    "x\r\n.\n.\r\n\r\n.\r\n",
    "Received:\r\n\tReceived:\r\nreceived:x\r\n\r\nreceived:\r\n.\r\n",
};

Test(data_scan, random_chunkings_agree_with_one_shot)
{
    unsigned seed = 12345;
    for (size_t c = 0; c < sizeof corpus / sizeof *corpus; c++) {
        size_t n = strlen(corpus[c]);
        struct data_scan ref;
        init_dot(&ref);
        struct feed_result rr = feed_chunked(&ref, corpus[c], n, 0);
        for (int trial = 0; trial < 200; trial++) {
            struct data_scan s;
            init_dot(&s);
            struct feed_result r = { false, 0 };
            while (r.consumed < n && !r.end) {
                seed = seed * 1103515245u + 12345u;
                size_t want = 1 + (seed >> 16) % 5;
                if (want > n - r.consumed)
                    want = n - r.consumed;
                bool end = false;
                size_t used = data_scan_feed(&s, (const uint8_t *)corpus[c] + r.consumed,
                                             want, &end);
                r.consumed += used;
                r.end = end;
            }
            cr_assert_eq(r.end, rr.end, "corpus %zu", c);
            cr_assert_eq(r.consumed, rr.consumed, "corpus %zu", c);
            cr_assert_eq(s.flags, ref.flags, "corpus %zu", c);
            cr_assert_eq(s.received, ref.received, "corpus %zu", c);
            cr_assert_eq(s.total, ref.total, "corpus %zu", c);
        }
    }
}

Test(data_scan, raw_body_ending_in_a_lone_cr_is_a_bare_cr)
{
    struct data_scan s;
    bool end;
    data_scan_init(&s, DATA_SCAN_RAW, 998, 102400);
    data_scan_feed(&s, (const uint8_t *)"Subject: x\r\n\r\nbody\r", 19, &end);
    cr_assert_eq(s.flags & DATA_SCAN_BARE_CR, 0);
    data_scan_finish(&s);
    cr_assert_neq(s.flags & DATA_SCAN_BARE_CR, 0);

    data_scan_init(&s, DATA_SCAN_RAW, 998, 102400);
    data_scan_feed(&s, (const uint8_t *)"Subject: x\r\n\r\nbody", 18, &end);
    data_scan_finish(&s);
    cr_assert_eq(s.flags, 0, "a last line without a line end is fine");
}

/* --- the memchr fast path ------------------------------------------------- */

/* A body of bare CRs and no LF: the fast path looks for the next LF once per
 * feed, not once per CR (quadratic, minutes for this input), and every CR is
 * a violation that never ends a line. */
Test(data_scan, a_megabyte_of_bare_crs_without_lf_is_scanned_once)
{
    size_t n = 1u << 20;
    uint8_t *p = malloc(n);
    cr_assert_not_null(p);
    memcpy(p, "Subject: x\r\n\r\n", 14);
    for (size_t i = 14; i < n; i++)
        p[i] = (i & 1) ? '\r' : 'a';
    struct data_scan s;
    data_scan_init(&s, DATA_SCAN_DOT, 0, HDR_LIMIT);
    bool end = true;
    cr_assert_eq(data_scan_feed(&s, p, n, &end), n);
    cr_assert_not(end);
    cr_assert(s.flags & DATA_SCAN_BARE_CR);
    cr_assert_not(s.flags & DATA_SCAN_BARE_LF);
    /* One line: a bare CR never ends it. The last CR still waits to see
     * whether an LF follows, so it is not counted yet. */
    cr_assert_eq(s.line_len, n - 14 - 1);
    free(p);
}

/* Long ordinary lines are measured exactly by the fast path: 998 passes,
 * 999 is flagged, at any chunking. */
Test(data_scan, fast_path_measures_long_lines_exactly)
{
    for (size_t chunk = 0; chunk <= 7; chunk += 7) {
        for (size_t len = 998; len <= 999; len++) {
            size_t n = 14 + len + 2 + 3;
            char *p = malloc(n);
            cr_assert_not_null(p);
            memcpy(p, "Subject: x\r\n\r\n", 14);
            memset(p + 14, 'y', len);
            memcpy(p + 14 + len, "\r\n.\r\n", 5);
            struct data_scan s;
            init_dot(&s);
            struct feed_result r = feed_chunked(&s, p, n, chunk);
            cr_assert(r.end);
            cr_assert_eq(r.consumed, n);
            cr_assert_eq(!!(s.flags & DATA_SCAN_LONG_LINE), len > LINE_LIMIT,
                         "len %zu chunk %zu", len, chunk);
            free(p);
        }
    }
}
