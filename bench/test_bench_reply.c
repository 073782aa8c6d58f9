/*
 * test_bench_reply - the generator's reply reader: single and multi-line
 * replies, EHLO keywords, any split of the input, malformed replies.
 * Each test runs in its own process.
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <string.h>

#include "bench_reply.h"

TestSuite(bench_reply);

/* Feeds text in steps (0 = whole); writes the codes seen, "E" for an error. */
static void
codes(const char *text, size_t step, char *out, unsigned *ext)
{
    struct bench_reply r;
    bench_reply_init(&r);
    size_t len = strlen(text), off = 0;
    out[0] = '\0';
    while (off < len) {
        size_t n = step == 0 ? len - off : (len - off < step ? len - off : step), pos = 0;
        while (pos < n) {
            size_t used;
            enum bench_reply_event ev = bench_reply_feed(&r, text + off + pos, n - pos, &used);
            pos += used;
            if (ev == BENCH_REPLY_AGAIN)
                break;
            if (ev == BENCH_REPLY_ERROR) {
                strcat(out, "E");
                return;
            }
            char c[8];
            snprintf(c, sizeof(c), "%d ", r.code);
            strcat(out, c);
            if (ext)
                *ext |= r.ext;
        }
        off += n;
    }
}

static const char ehlo[] = "220 sink.test ESMTP\r\n"
                           "250-sink.test greets you\r\n"
                           "250-PIPELINING\r\n"
                           "250-SIZE 1000\r\n"
                           "250-8BITMIME\r\n"
                           "250 CHUNKING\r\n"
                           "250 2.1.0 Ok\r\n"
                           "250 2.1.5 Ok\r\n"
                           "354 go ahead\r\n";

Test(bench_reply, joins_multiline_replies_and_notes_keywords)
{
    char out[128];
    unsigned ext = 0;
    codes(ehlo, 0, out, &ext);
    cr_assert_str_eq(out, "220 250 250 250 354 ");
    cr_assert_eq(ext, BENCH_REPLY_EXT_PIPELINING | BENCH_REPLY_EXT_SIZE |
                          BENCH_REPLY_EXT_8BITMIME | BENCH_REPLY_EXT_CHUNKING);
}

Test(bench_reply, gives_the_same_replies_for_any_split)
{
    for (size_t step = 1; step < 20; step++) {
        char out[128];
        unsigned ext = 0;
        codes(ehlo, step, out, &ext);
        cr_assert_str_eq(out, "220 250 250 250 354 ", "step %zu", step);
        cr_assert(ext & BENCH_REPLY_EXT_PIPELINING);
    }
}

Test(bench_reply, notes_starttls_only_as_a_keyword)
{
    char out[128];
    unsigned ext = 0;
    codes("250-sink.test greets you\r\n250-STARTTLS\r\n250 8BITMIME\r\n", 0, out, &ext);
    cr_assert_str_eq(out, "250 ");
    cr_assert_eq(ext, BENCH_REPLY_EXT_STARTTLS | BENCH_REPLY_EXT_8BITMIME);
    ext = 0;
    codes("250-sink.test\r\n250 STARTTLSX\r\n220 STARTTLS ready\r\n250 STARTTLS\r\n", 0,
          out, &ext);
    /* Not "STARTTLSX"; not the first line of a reply (the domain or a text). */
    cr_assert_str_eq(out, "250 220 250 ");
    cr_assert_eq(ext, 0);
}

Test(bench_reply, accepts_a_bare_code_and_bare_lf)
{
    char out[64];
    codes("250\r\n221 bye\n", 0, out, NULL);
    cr_assert_str_eq(out, "250 221 ");
}

Test(bench_reply, rejects_malformed_lines)
{
    char out[64];
    codes("hello\r\n", 0, out, NULL);
    cr_assert_str_eq(out, "E");
    codes("25\r\n", 0, out, NULL);
    cr_assert_str_eq(out, "E");
    codes("250x\r\n", 0, out, NULL);
    cr_assert_str_eq(out, "E");
    codes("650 no such class\r\n", 0, out, NULL);
    cr_assert_str_eq(out, "E");
}

Test(bench_reply, rejects_a_code_change_inside_a_reply)
{
    char out[64];
    codes("250-a\r\n251 b\r\n", 0, out, NULL);
    cr_assert_str_eq(out, "E");
}

Test(bench_reply, rejects_overlong_lines)
{
    static char text[BENCH_REPLY_LINE_MAX + 64];
    memset(text, 'x', sizeof(text) - 1);
    memcpy(text, "250 ", 4);
    text[sizeof(text) - 1] = '\0';
    char out[64];
    codes(text, 0, out, NULL);
    cr_assert_str_eq(out, "E");
}
