/*
 * test_bench_msg - generated messages: exact sizes, line limits, dot lines,
 * and that stuffing then the sink's un-stuffing gives back the same bytes.
 * Each test runs in its own process; buffers live in the test.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include <stdlib.h>
#include <string.h>

#include "bench_msg.h"
#include "sink_parse.h"

TestSuite(bench_msg);

/* Checks CRLF line structure; returns the number of lines starting with '.'. */
static unsigned
check_lines(const char *t, size_t len)
{
    unsigned dots = 0;
    size_t start = 0;
    for (size_t i = 0; i < len; i++) {
        if (t[i] == '\n') {
            cr_assert(i > 0 && t[i - 1] == '\r', "bare LF at %zu", i);
            size_t l = i - 1 - start;
            cr_assert_leq(l, BENCH_MSG_LINE_MAX, "line of %zu at %zu", l, start);
            if (l > 0 && t[start] == '.')
                dots++;
            start = i + 1;
        } else {
            cr_assert(t[i] != '\r' || (i + 1 < len && t[i + 1] == '\n'), "bare CR at %zu", i);
        }
    }
    cr_assert_eq(start, len, "text does not end with CRLF");
    return dots;
}

ParameterizedTestParameters(bench_msg, builds_fillers_of_exact_size)
{
    static size_t sizes[] = {0, 2, 3, 79, 80, 81, 82, 83, 160, 161, 162, 163, 700, 1024, 10240,
                             102400};
    return cr_make_param_array(size_t, sizes, sizeof(sizes) / sizeof(sizes[0]));
}

ParameterizedTest(size_t *size, bench_msg, builds_fillers_of_exact_size)
{
    struct bench_msg_filler f;
    bench_msg_filler_build(&f, *size);
    cr_assert_eq(f.raw_len, *size);
    unsigned dots = check_lines(f.raw, f.raw_len);
    if (*size >= 1024)
        cr_assert_geq(dots, 3, "want some lines starting with '.'");
    bench_msg_filler_free(&f);
}

Test(bench_msg, every_size_up_to_400_is_exact)
{
    for (size_t n = 0; n <= 400; n++) {
        if (n == 1)
            continue; /* documented: cannot be a line */
        struct bench_msg_filler f;
        bench_msg_filler_build(&f, n);
        cr_assert_eq(f.raw_len, n, "size %zu", n);
        check_lines(f.raw, f.raw_len);
        bench_msg_filler_free(&f);
    }
}

Test(bench_msg, stuffs_lines_starting_with_a_dot)
{
    const char raw[] = ".\r\n..x\r\nab.\r\n.";
    char out[64];
    size_t n = bench_msg_stuff(raw, sizeof(raw) - 1, out);
    const char want[] = "..\r\n...x\r\nab.\r\n..";
    cr_assert_eq(n, sizeof(want) - 1);
    cr_assert_arr_eq(out, want, n);
}

struct collect {
    char *buf;
    size_t len;
};

static void
collect(void *ctx, const char *bytes, size_t n)
{
    struct collect *c = ctx;
    memcpy(c->buf + c->len, bytes, n);
    c->len += n;
}

Test(bench_msg, round_trips_through_the_sinks_unstuffing)
{
    struct bench_msg_header h;
    bench_msg_header_build(&h, "bench@example.test", 3, "example.test", "bench.test", 0xabcdef01,
                           "Sat, 29 Nov 2025 18:42:00 +0000");
    struct bench_msg_filler f;
    bench_msg_filler_build(&f, 10000);
    size_t wire_len = h.len + f.stuffed_len + 3;
    char *wire = malloc(wire_len);
    bench_msg_header_fill(&h, wire, 42);
    memcpy(wire + h.len, f.stuffed, f.stuffed_len);
    memcpy(wire + h.len + f.stuffed_len, ".\r\n", 3);

    struct collect c = {malloc(wire_len), 0};
    struct sink_parse *p = malloc(sizeof(*p));
    sink_parse_init(p, collect, &c);
    sink_parse_start_data(p);
    size_t used = 0;
    cr_assert_eq(sink_parse_feed(p, wire, wire_len, &used), SINK_PARSE_DATA_END);
    cr_assert_eq(used, wire_len);
    cr_assert_eq(c.len, h.len + f.raw_len);
    cr_assert_arr_eq(c.buf, wire, h.len);
    cr_assert_arr_eq(c.buf + h.len, f.raw, f.raw_len);
    free(p);
    free(c.buf);
    free(wire);
    bench_msg_filler_free(&f);
    bench_msg_header_free(&h);
}

Test(bench_msg, numbers_each_header_without_changing_its_length)
{
    struct bench_msg_header h;
    bench_msg_header_build(&h, "bench@example.test", 10, "example.test", "bench.test", 0x1234,
                           "Sat, 29 Nov 2025 18:42:00 +0000");
    check_lines(h.text, h.len);
    cr_assert(h.len > 4 && memcmp(h.text + h.len - 4, "\r\n\r\n", 4) == 0,
              "header block ends with an empty line");
    char *a = malloc(h.len + 1), *b = malloc(h.len + 1);
    bench_msg_header_fill(&h, a, 1);
    bench_msg_header_fill(&h, b, 0xfedcba9876543210ull);
    a[h.len] = b[h.len] = '\0';
    cr_assert(strstr(a, "Message-ID: <0000000000000001.00001234@bench.test>\r\n") != NULL, "%s", a);
    cr_assert(strstr(b, "Subject: ringmta-bench message fedcba9876543210\r\n") != NULL, "%s", b);
    cr_assert(strstr(a, "rcpt10@example.test\r\n") != NULL, "%s", a);
    cr_assert(strstr(a, "Date: Sat, 29 Nov 2025 18:42:00 +0000\r\n") != NULL, "%s", a);
    free(a);
    free(b);
    bench_msg_header_free(&h);
}
