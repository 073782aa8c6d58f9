/*
 * test_log - level filtering, line formatting limits, the default sink and
 * log_escape. A capturing sink records what core/log.c hands over.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <criterion/redirect.h>

#include <string.h>

#include "log.h"

static struct {
    int calls;
    enum log_level level;
    char line[4096];
    size_t len;
} captured;

static void
capture_sink(enum log_level level, const char *line, size_t len)
{
    captured.calls++;
    captured.level = level;
    captured.len = len;
    memcpy(captured.line, line, len < sizeof captured.line ? len : sizeof captured.line);
    captured.line[len < sizeof captured.line ? len : sizeof captured.line - 1] = '\0';
}

static void
capture_setup(void)
{
    memset(&captured, 0, sizeof captured);
    log_set_sink(capture_sink);
    /* The level is left alone: each test is a fresh process at the default. */
}

TestSuite(log, .init = capture_setup);

Test(log, default_level_is_info)
{
    cr_assert_eq(log_get_level(), LOG_INFO);
    log_info("shown");
    log_debug("hidden");
    cr_assert_eq(captured.calls, 1);
}

Test(log, out_of_range_level_is_clamped_to_debug)
{
    log_set_level((enum log_level)42);
    cr_assert_eq(log_get_level(), LOG_DEBUG);
}

Test(log, passes_formatted_line_and_level_to_sink)
{
    log_warn("queue %s has %d messages", "active", 3);
    cr_assert_eq(captured.calls, 1);
    cr_assert_eq(captured.level, LOG_WARN);
    cr_assert_str_eq(captured.line, "queue active has 3 messages");
    cr_assert_eq(captured.len, strlen("queue active has 3 messages"));
}

Test(log, drops_messages_less_severe_than_the_level)
{
    log_set_level(LOG_WARN);
    log_info("not shown");
    log_debug("not shown");
    cr_assert_eq(captured.calls, 0);
    log_warn("shown");
    log_error("shown too");
    cr_assert_eq(captured.calls, 2);
    cr_assert_eq(captured.level, LOG_ERROR);
}

static int debug_arg_evaluations;

static int
count_evaluation(void)
{
    return ++debug_arg_evaluations;
}

Test(log, debug_macro_does_not_evaluate_arguments_when_filtered)
{
    log_set_level(LOG_INFO);
    log_debug("value %d", count_evaluation());
    cr_assert_eq(debug_arg_evaluations, 0);
    log_set_level(LOG_DEBUG);
    log_debug("value %d", count_evaluation());
    cr_assert_eq(debug_arg_evaluations, 1);
    cr_assert_str_eq(captured.line, "value 1");
}

Test(log, error_level_shows_only_errors)
{
    log_set_level(LOG_ERROR);
    log_warn("no");
    cr_assert_eq(captured.calls, 0);
    log_error("yes");
    cr_assert_eq(captured.calls, 1);
}

Test(log, truncates_long_message_to_2047_bytes_ending_in_ellipsis)
{
    static char big[5000];

    memset(big, 'a', sizeof big - 1);
    log_info("%s", big);
    cr_assert_eq(captured.len, 2047);
    cr_assert_eq(memcmp(captured.line + 2044, "...", 3), 0);
    cr_assert_eq(captured.line[2043], 'a');
}

Test(log, message_of_exactly_2047_bytes_is_not_truncated)
{
    static char text[2048];

    memset(text, 'b', 2047);
    log_info("%s", text);
    cr_assert_eq(captured.len, 2047);
    cr_assert_eq(captured.line[2046], 'b');
}

Test(log, strips_trailing_newline)
{
    log_info("done\n");
    cr_assert_str_eq(captured.line, "done");
    log_info("done\r\n");
    cr_assert_str_eq(captured.line, "done");
}

Test(log, embedded_newlines_cannot_forge_a_second_line)
{
    log_info("one\ntwo\rthree");
    cr_assert_str_eq(captured.line, "one two three");
}

Test(log, null_sink_restores_default_stderr_sink, .init = cr_redirect_stderr)
{
    log_set_sink(NULL);
    log_set_level(LOG_INFO);
    log_warn("disk %d%% full", 91);
    fflush(stderr);
    cr_assert_stderr_eq_str("warn: disk 91% full\n");
}

/* Parameters are copied into each test's process, which may map the binary
 * elsewhere: they hold text inline, never pointers. */
struct level_case {
    char name[16];
    int level;
};

ParameterizedTestParameters(log, parses_level_names)
{
    static struct level_case cases[] = {
        {"error", LOG_ERROR}, {"warn", LOG_WARN},   {"info", LOG_INFO},
        {"debug", LOG_DEBUG}, {"warning", -1},      {"", -1},
        {"INFO ", -1},        {"verbose", -1},
    };
    return cr_make_param_array(struct level_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct level_case *c, log, parses_level_names)
{
    cr_assert_eq(log_level_parse(c->name), c->level, "'%s'", c->name);
    if (c->level >= 0)
        cr_assert_str_eq(log_level_name((enum log_level)c->level), c->name);
}

struct escape_case {
    char in[24];
    size_t inlen;
    size_t outsize;
    char out[48];
};

ParameterizedTestParameters(log, escapes_untrusted_bytes)
{
    static struct escape_case cases[] = {
        /* printable ASCII passes through */
        {"MAIL FROM:<a@b>", 15, 64, "MAIL FROM:<a@b>"},
        {"", 0, 64, ""},
        /* CR, LF, NUL, backslash, DEL and 8-bit bytes are escaped */
        {"a\r\nb", 4, 64, "a\\x0d\\x0ab"},
        {"a\0b", 3, 64, "a\\x00b"},
        {"C:\\x", 4, 64, "C:\\\\x"},
        {"\x7f\x80\xff", 3, 64, "\\x7f\\x80\\xff"},
        {"tab\there", 8, 64, "tab\\x09here"},
        /* the input length is respected, not a NUL */
        {"abcdef", 3, 64, "abc"},
        /* exact fit: no ellipsis */
        {"abc", 3, 4, "abc"},
        {"\r", 1, 5, "\\x0d"},
        /* truncation keeps whole escapes and ends in "..." */
        {"abcdefghij", 10, 8, "abcd..."},
        {"ab\r\n", 4, 8, "ab..."},
        {"abcd\\", 5, 6, "ab..."},
        {"abcd", 4, 4, "..."},
        /* tiny buffers still get a NUL */
        {"abcd", 4, 3, ".."},
        {"abcd", 4, 1, ""},
    };
    return cr_make_param_array(struct escape_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct escape_case *c, log, escapes_untrusted_bytes)
{
    char out[64];

    memset(out, 'Z', sizeof out);
    cr_assert_eq(log_escape(out, c->outsize, c->in, c->inlen), out);
    cr_assert_str_eq(out, c->out, "outsize %zu", c->outsize);
    cr_assert_lt(strlen(out), c->outsize);
}

Test(log, escape_with_zero_outsize_writes_nothing)
{
    char out[4] = "xyz";

    log_escape(out, 0, "abc", 3);
    cr_assert_str_eq(out, "xyz");
}
