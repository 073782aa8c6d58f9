/*
 * body_xform: dot-stuffing of raw (BDAT) bodies for DATA, resumable at every
 * input and output boundary, and the final-CRLF rule (RELIABILITY rows 1,
 * 3, 4); body_unstuff, its inverse for stored DATA-form bodies sent by BDAT.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "body_xform.h"
#include "data_scan.h"

TestSuite(body_xform);

/* Runs the whole of in[0..n) through the transform, in input chunks of
 * `chunk` octets and output buffers of `cap` octets, plus finish. Returns
 * the output length (out must be large enough). */
static size_t
run(const char *in, size_t n, size_t chunk, size_t cap, char *out)
{
    struct body_xform x;
    size_t o = 0, i = 0, guard = 0;
    body_xform_init(&x);
    while (i < n) {
        size_t want = n - i < chunk ? n - i : chunk;
        size_t done = 0;
        while (done < want || x.dot_owed) {
            size_t used = 0;
            size_t w = body_xform_stuff(&x, (const uint8_t *)in + i + done, want - done, &used,
                                        (uint8_t *)out + o, cap);
            cr_assert_leq(w, cap);
            cr_assert(w > 0 || used > 0 || (want == done && !x.dot_owed), "no progress");
            o += w;
            done += used;
            cr_assert_lt(++guard, 100000, "loop");
        }
        i += want;
    }
    o += body_xform_finish(&x, (uint8_t *)out + o, BODY_XFORM_FINISH_MAX);
    cr_assert_eq(x.in_total, n);
    cr_assert_eq(x.out_total, o);
    return o;
}

/* The obvious definition, one octet at a time. */
static size_t
reference(const char *in, size_t n, char *out)
{
    size_t o = 0;
    int start = 1;
    for (size_t i = 0; i < n; i++) {
        if (start && in[i] == '.')
            out[o++] = '.';
        out[o++] = in[i];
        start = (in[i] == '\r' || in[i] == '\n');
    }
    if (n > 0 && !(n >= 2 && in[n - 2] == '\r' && in[n - 1] == '\n')) {
        out[o++] = '\r';
        out[o++] = '\n';
    }
    return o;
}

static void
expect_xform(const char *in, const char *want)
{
    char out[1024];
    size_t n = run(in, strlen(in), strlen(in) + 1, sizeof out, out);
    cr_assert_eq(n, strlen(want), "\"%s\": got %zu octets \"%.*s\", want \"%s\"", in, n,
                 (int)n, out, want);
    cr_assert(memcmp(out, want, n) == 0, "\"%s\": got \"%.*s\", want \"%s\"", in, (int)n, out,
              want);
}

Test(body_xform, stuffs_a_line_that_is_one_dot)
{
    expect_xform(".\r\n", "..\r\n");
    expect_xform(".", "..\r\n");
}

Test(body_xform, stuffs_a_line_that_is_two_dots)
{
    /* Row 3: the next hop must receive ".." after unstuffing. */
    expect_xform("..\r\n", "...\r\n");
    expect_xform("a\r\n..\r\nb\r\n", "a\r\n...\r\nb\r\n");
}

Test(body_xform, bdat_content_with_end_of_data_is_data)
{
    /* Row 4: CRLF.CRLF inside BDAT content is content, not a terminator. */
    expect_xform("Subject: x\r\n\r\nhello\r\n.\r\nMAIL FROM:<evil@x>\r\n",
                 "Subject: x\r\n\r\nhello\r\n..\r\nMAIL FROM:<evil@x>\r\n");
}

Test(body_xform, leaves_dots_inside_lines_alone)
{
    expect_xform("a.b\r\nc..\r\n x.\r\n", "a.b\r\nc..\r\n x.\r\n");
}

Test(body_xform, doubles_dots_after_bare_line_ends_too)
{
    /* Defence in depth (row 1): never <CR|LF> "." <CR|LF> in the output. */
    expect_xform("a\n.\nb", "a\n..\nb\r\n");
    expect_xform("a\r.\rb\r\n", "a\r..\rb\r\n");
    expect_xform("a\n.\r\nb\r\n", "a\n..\r\nb\r\n");
}

Test(body_xform, empty_body_stays_empty)
{
    expect_xform("", "");
}

Test(body_xform, adds_a_final_crlf_only_when_missing)
{
    expect_xform("abc", "abc\r\n");
    expect_xform("abc\r\n", "abc\r\n");
    expect_xform("abc\r", "abc\r\r\n");
    expect_xform("abc\n", "abc\n\r\n");
    expect_xform("\r\n", "\r\n");
}

static const char *const corpus[] = {
    ".", "..", "...\r\n", ".\r\n.\r\n", "a\r\n.\r\n", "\r\n.\r\n.", "x\r\n..\r\n.x\r\n",
    "a\n.\n", "\r.\r", "..\r\n\r\n.\r\n", "no dots at all\r\n", "\r\n\r\n\r\n",
    "end without crlf.", ".\r", ".\n",
};

Test(body_xform, same_output_for_every_input_split_and_output_size)
{
    for (size_t k = 0; k < sizeof corpus / sizeof *corpus; k++) {
        const char *in = corpus[k];
        size_t n = strlen(in);
        char want[256], got[256];
        size_t wn = reference(in, n, want);
        for (size_t chunk = 1; chunk <= n; chunk++) {
            for (size_t cap = 1; cap <= 8; cap++) {
                size_t gn = run(in, n, chunk, cap, got);
                cr_assert(gn == wn && memcmp(got, want, wn) == 0,
                          "input %zu chunk %zu cap %zu: got \"%.*s\"", k, chunk, cap, (int)gn,
                          got);
            }
        }
    }
}

Test(body_xform, a_line_split_at_every_boundary_between_two_calls)
{
    const char *in = "line\r\n.dot\r\n..two\r\n.\r\nlast";
    size_t n = strlen(in);
    char want[256];
    size_t wn = reference(in, n, want);
    for (size_t cut = 0; cut <= n; cut++) {
        struct body_xform x;
        char out[256];
        size_t o = 0, used = 0;
        body_xform_init(&x);
        o += body_xform_stuff(&x, (const uint8_t *)in, cut, &used, (uint8_t *)out, sizeof out);
        cr_assert_eq(used, cut);
        o += body_xform_stuff(&x, (const uint8_t *)in + cut, n - cut, &used,
                              (uint8_t *)out + o, sizeof out - o);
        cr_assert_eq(used, n - cut);
        o += body_xform_finish(&x, (uint8_t *)out + o, sizeof out - o);
        cr_assert(o == wn && memcmp(out, want, wn) == 0, "cut at %zu: \"%.*s\"", cut, (int)o,
                  out);
    }
}

Test(body_xform, stuffed_dot_straddles_a_one_octet_output)
{
    struct body_xform x;
    uint8_t out[1];
    size_t used = 0;
    body_xform_init(&x);
    cr_assert_eq(body_xform_stuff(&x, (const uint8_t *)".a", 2, &used, out, 1), 1);
    cr_assert_eq(used, 1);
    cr_assert_eq(out[0], '.');
    cr_assert(x.dot_owed);
    cr_assert_eq(body_xform_stuff(&x, (const uint8_t *)"a", 1, &used, out, 1), 1);
    cr_assert_eq(used, 0, "the owed dot comes first");
    cr_assert_eq(out[0], '.');
    cr_assert_eq(body_xform_stuff(&x, (const uint8_t *)"a", 1, &used, out, 1), 1);
    cr_assert_eq(used, 1);
    cr_assert_eq(out[0], 'a');
}

Test(body_xform, zero_room_consumes_nothing)
{
    struct body_xform x;
    uint8_t out[1];
    size_t used = 9;
    body_xform_init(&x);
    cr_assert_eq(body_xform_stuff(&x, (const uint8_t *)"abc", 3, &used, out, 0), 0);
    cr_assert_eq(used, 0);
    cr_assert_eq(x.in_total, 0);
}

Test(body_xform, finish_pays_an_owed_dot_then_the_crlf)
{
    struct body_xform x;
    uint8_t out[4];
    size_t used = 0;
    body_xform_init(&x);
    cr_assert_eq(body_xform_stuff(&x, (const uint8_t *)".", 1, &used, out, 1), 1);
    cr_assert(x.dot_owed);
    size_t n = body_xform_finish(&x, out, sizeof out);
    cr_assert_eq(n, 3);
    cr_assert(memcmp(out, ".\r\n", 3) == 0);
    cr_assert_eq(body_xform_finish(&x, out, sizeof out), 0, "finish twice adds nothing");
}

Test(body_xform, unstuffing_gives_back_a_clean_body)
{
    /* What the next hop does (RFC 5321 §4.5.2): drop the first '.' of each
     * line that starts with one. For CRLF-only bodies we get the original
     * (plus CRLF when it lacked one). */
    const char *in = ".\r\n..\r\n...x\r\nplain\r\n.\r\nend.";
    char out[256], back[256];
    size_t n = run(in, strlen(in), 3, 5, out);
    size_t b = 0;
    int start = 1;
    for (size_t i = 0; i < n; i++) {
        if (start && out[i] == '.') {
            start = 0;
            continue;
        }
        back[b++] = out[i];
        start = (i > 0 && out[i - 1] == '\r' && out[i] == '\n');
    }
    cr_assert_eq(b, strlen(in) + 2);
    cr_assert(memcmp(back, in, strlen(in)) == 0);
    cr_assert(memcmp(back + strlen(in), "\r\n", 2) == 0);
}

Test(body_xform, output_never_holds_a_line_that_is_a_lone_dot)
{
    /* Whatever the content, no <CR|LF> "." <CR|LF> before our terminator:
     * 2^k combinations of the octets that matter. */
    static const char alphabet[] = { '\r', '\n', '.', 'a' };
    char in[8], out[64];
    for (unsigned v = 0; v < 4u * 4 * 4 * 4 * 4 * 4; v++) {
        unsigned w = v;
        for (int k = 0; k < 6; k++, w /= 4)
            in[k] = alphabet[w % 4];
        size_t n = run(in, 6, 2, 3, out);
        for (size_t i = 0; i + 2 < n; i++) {
            bool le = out[i] == '\r' || out[i] == '\n';
            bool le2 = out[i + 2] == '\r' || out[i + 2] == '\n';
            cr_assert(!(le && out[i + 1] == '.' && le2), "pattern at %zu for case %u", i, v);
        }
        cr_assert(!(out[0] == '.' && n > 1 && (out[1] == '\r' || out[1] == '\n')),
                  "lone dot first line for case %u", v);
    }
}

struct crlf_case {
    char body[16];
    size_t len;
    bool needs;
};

ParameterizedTestParameters(body_xform, tells_whether_a_final_crlf_is_needed)
{
    static struct crlf_case cases[] = {
        { "", 0, false },          { "\r\n", 2, false },     { "abc\r\n", 5, false },
        { "abc", 3, true },        { "abc\r", 4, true },     { "abc\n", 4, true },
        { "\n", 1, true },         { "\r", 1, true },        { ".", 1, true },
        { "a\r\n.\r\n", 6, false }, { "a\r\nb", 4, true },   { "\n\r", 2, true },
    };
    return cr_make_param_array(struct crlf_case, cases, sizeof cases / sizeof *cases);
}

ParameterizedTest(struct crlf_case *c, body_xform, tells_whether_a_final_crlf_is_needed)
{
    cr_assert_eq(body_xform_needs_final_crlf((const uint8_t *)c->body, c->len), c->needs,
                 "body \"%s\"", c->body);
    /* Streaming in one-octet chunks says the same. */
    struct body_xform x;
    uint8_t out[8];
    body_xform_init(&x);
    for (size_t i = 0; i < c->len; i++) {
        size_t used = 0;
        while (used == 0)
            body_xform_stuff(&x, (const uint8_t *)c->body + i, 1, &used, out, sizeof out);
    }
    cr_assert_eq(body_xform_pending_crlf(&x), c->needs, "streamed \"%s\"", c->body);
}

/* --- body_unstuff ------------------------------------------------------------ */

/* Unstuffs in[0..n) fed in pieces of `chunk` octets (0: whole), gathering
 * the runs as a sender would; returns the output length. */
static size_t
unstuff(const char *in, size_t n, size_t chunk, char *out, uint64_t *dots)
{
    struct body_unstuff u;
    size_t o = 0, i = 0;
    body_unstuff_init(&u);
    *dots = 0;
    while (i < n) {
        size_t piece = chunk == 0 || n - i < chunk ? n - i : chunk;
        const char *p = in + i;
        size_t left = piece;
        while (left > 0) {
            bool drop;
            size_t k = body_unstuff_run(&u, (const uint8_t *)p, left, &drop);
            cr_assert_leq(k, left);
            cr_assert(k > 0 || drop, "no progress");
            memcpy(out + o, p, k);
            o += k;
            if (drop) {
                cr_assert_eq(p[k], '.', "only a dot is dropped");
                (*dots)++;
                k++;
            }
            p += k;
            left -= k;
        }
        i += piece;
    }
    return o;
}

Test(body_unstuff, drops_the_dot_that_starts_the_body_or_follows_crlf)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        { "", "" },
        { "plain\r\n", "plain\r\n" },
        { "..x\r\n", ".x\r\n" },
        { "a\r\n..\r\n...b\r\n", "a\r\n.\r\n..b\r\n" },
        { "a\r\n.x\r\n", "a\r\nx\r\n" },
        { "a\n.b\r\n", "a\n.b\r\n" },         /* a bare LF opens no line */
        { "a\r.b\r\n", "a\r.b\r\n" },         /* nor does a bare CR */
        { "a\r\r\n.b\r\n", "a\r\r\nb\r\n" },   /* CR CR LF: the scanner's line end */
        { "a.b\r\nc..\r\n", "a.b\r\nc..\r\n" }, /* inside a line: text */
        { "..\r\n..\r\n", ".\r\n.\r\n" },
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        size_t n = strlen(cases[c].in);
        for (size_t chunk = 0; chunk <= n; chunk++) {
            char out[64];
            uint64_t dots;
            size_t o = unstuff(cases[c].in, n, chunk, out, &dots);
            cr_assert_eq(o, strlen(cases[c].out), "case %zu chunk %zu: length %zu", c, chunk, o);
            cr_assert(memcmp(out, cases[c].out, o) == 0, "case %zu chunk %zu", c, chunk);
            cr_assert_eq(dots, n - o);
            struct body_unstuff u;
            body_unstuff_init(&u);
            cr_assert_eq(body_unstuff_count(&u, (const uint8_t *)cases[c].in, n), dots);
        }
    }
}

/* The dots dropped are exactly the ones the inbound scanner counted as
 * stuffed, and unstuffing gives back the lines the client stuffed: random
 * messages, stuffed the way an SMTP client does, random piece sizes. */
Test(body_unstuff, inverts_client_stuffing_and_agrees_with_the_scanner)
{
    static const char alphabet[] = { '.', '.', 'a', 'b', '\r' };
    srand(20261206);
    for (int round = 0; round < 3000; round++) {
        char msg[512], wire[1024], out[1024];
        size_t m = 0, w = 0;
        int lines = rand() % 12;
        for (int l = 0; l < lines; l++) {
            int len = rand() % 6;
            size_t start = m;
            for (int k = 0; k < len; k++)
                msg[m++] = alphabet[rand() % sizeof alphabet];
            /* No bare CR at the end of a line: it would join the CRLF. */
            while (m > start && msg[m - 1] == '\r')
                m--;
            if (m > start && msg[start] == '.')
                wire[w++] = '.';
            memcpy(wire + w, msg + start, m - start);
            w += m - start;
            memcpy(msg + m, "\r\n", 2);
            memcpy(wire + w, "\r\n", 2);
            m += 2;
            w += 2;
        }
        size_t chunk = (size_t)(rand() % 8);
        uint64_t dots;
        size_t o = unstuff(wire, w, chunk, out, &dots);
        cr_assert_eq(o, m, "round %d", round);
        cr_assert(memcmp(out, msg, m) == 0, "round %d", round);

        struct data_scan s;
        bool end = false;
        data_scan_init(&s, DATA_SCAN_DOT, 1000, 1u << 20);
        memcpy(wire + w, ".\r\n", 3);
        size_t used = data_scan_feed(&s, (const uint8_t *)wire, w + 3, &end);
        cr_assert(end && used == w + 3, "round %d: the scanner found the end", round);
        cr_assert_eq(s.dot_lines, dots, "round %d: %u stuffed lines, %llu dots dropped", round,
                     s.dot_lines, (unsigned long long)dots);
    }
}
