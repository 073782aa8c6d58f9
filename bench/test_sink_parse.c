/*
 * test_sink_parse - the sink's input machine: command classification, DATA
 * un-stuffing, BDAT chunks, and that any split of the input gives the same
 * events. Each test runs in its own process; buffers live in the test.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sink_parse.h"

TestSuite(sink_parse);

/* A transcript of events, so whole and split feeds can be compared. */
struct log {
    char text[65536];
    size_t len;
    char body[65536];
    size_t body_len;
};

static void
log_body(void *ctx, const char *bytes, size_t n)
{
    struct log *l = ctx;
    cr_assert(l->body_len + n <= sizeof(l->body));
    memcpy(l->body + l->body_len, bytes, n);
    l->body_len += n;
}

static void
log_add(struct log *l, const char *fmt, const char *arg)
{
    l->len += (size_t)snprintf(l->text + l->len, sizeof(l->text) - l->len, fmt, arg);
}

/*
 * Feeds input in pieces of step bytes (0 = all at once), acting like the sink:
 * DATA starts a body, "BDAT n" a chunk. Events and body go to l.
 */
static void
run(struct log *l, const char *in, size_t len, size_t step)
{
    struct sink_parse *p = malloc(sizeof(*p));
    sink_parse_init(p, log_body, l);
    size_t off = 0;
    while (off < len || p->mode == SINK_PARSE_MODE_BDAT) {
        size_t n = step == 0 ? len - off : (len - off < step ? len - off : step);
        size_t pos = 0;
        for (;;) {
            size_t used = 0;
            enum sink_parse_event ev = sink_parse_feed(p, in + off + pos, n - pos, &used);
            pos += used;
            if (ev == SINK_PARSE_AGAIN)
                break;
            if (ev == SINK_PARSE_LINE) {
                log_add(l, "LINE[%s]\n", p->line);
                struct sink_cmd cmd;
                if (sink_parse_command(p->line, p->line_len, &cmd) == SINK_CMD_OK) {
                    if (cmd.verb == SINK_VERB_DATA)
                        sink_parse_start_data(p);
                    else if (cmd.verb == SINK_VERB_BDAT)
                        sink_parse_start_bdat(p, cmd.bdat_size);
                }
            } else if (ev == SINK_PARSE_TOO_LONG) {
                log_add(l, "%sTOO_LONG\n", "");
            } else if (ev == SINK_PARSE_DATA_END) {
                log_add(l, "%sDATA_END\n", "");
            } else if (ev == SINK_PARSE_CHUNK_END) {
                log_add(l, "%sCHUNK_END\n", "");
            }
        }
        off += n;
        if (n == 0)
            break;
    }
    free(p);
}

static const char pipelined[] =
    "EHLO client.test\r\n"
    "MAIL FROM:<a@b.test> SIZE=100\r\n"
    "RCPT TO:<c@d.test>\r\n"
    "RCPT TO:<e@f.test>\r\n"
    "DATA\r\n"
    "Subject: x\r\n"
    "\r\n"
    "..leading dot\r\n"
    ".\r\n"
    "line\r\n"
    "..\r\n"
    ".\r\n"
    "BDAT 12\r\n"
    ".\r\n.\r\nabcdefBDAT 0 LAST\r\n"
    "QUIT\r\n";

static const char pipelined_body[] =
    "Subject: x\r\n\r\n.leading dot\r\n";

Test(sink_parse, splits_pipelined_input_into_events_in_order)
{
    struct log *l = calloc(1, sizeof(*l));
    run(l, pipelined, sizeof(pipelined) - 1, 0);
    cr_assert_str_eq(l->text,
                     "LINE[EHLO client.test]\n"
                     "LINE[MAIL FROM:<a@b.test> SIZE=100]\n"
                     "LINE[RCPT TO:<c@d.test>]\n"
                     "LINE[RCPT TO:<e@f.test>]\n"
                     "LINE[DATA]\n"
                     "DATA_END\n"
                     "LINE[line]\n"
                     "LINE[..]\n"
                     "LINE[.]\n"
                     "LINE[BDAT 12]\n"
                     "CHUNK_END\n"
                     "LINE[BDAT 0 LAST]\n"
                     "CHUNK_END\n"
                     "LINE[QUIT]\n");
    /* The DATA body un-stuffed, then the BDAT chunk byte for byte. */
    char want[256];
    snprintf(want, sizeof(want), "%s%s", pipelined_body, ".\r\n.\r\nabcdef");
    cr_assert_eq(l->body_len, strlen(want));
    cr_assert_arr_eq(l->body, want, l->body_len);
    free(l);
}

ParameterizedTestParameters(sink_parse, gives_the_same_events_for_any_split)
{
    static size_t steps[] = {1, 2, 3, 5, 7, 13, 64};
    return cr_make_param_array(size_t, steps, sizeof(steps) / sizeof(steps[0]));
}

ParameterizedTest(size_t *step, sink_parse, gives_the_same_events_for_any_split)
{
    struct log *whole = calloc(1, sizeof(*whole)), *split = calloc(1, sizeof(*split));
    run(whole, pipelined, sizeof(pipelined) - 1, 0);
    run(split, pipelined, sizeof(pipelined) - 1, *step);
    cr_assert_str_eq(split->text, whole->text);
    cr_assert_eq(split->body_len, whole->body_len);
    cr_assert_arr_eq(split->body, whole->body, whole->body_len);
    free(whole);
    free(split);
}

struct unstuff_case {
    const char *wire;  /* after DATA, through the final dot */
    const char *body;
};

/*
 * Criterion runs each parameter in a fresh process (addresses differ under
 * ASLR), so the parameters are indexes into these file-scope tables.
 */
static const struct unstuff_case unstuff_cases[] = {
    {".\r\n", ""},
    {"a\r\n.\r\n", "a\r\n"},
    {"..\r\n.\r\n", ".\r\n"},
    {"...\r\n.\r\n", "..\r\n"},
    {".x\r\n.\r\n", "x\r\n"},
    {"a\r\n..b\r\n.\r\n", "a\r\n.b\r\n"},
    /* ".\r" not followed by LF: the dot was stuffing, the CR is body. */
    {".\rx\r\n.\r\n", "\rx\r\n"},
    /* Bare LF does not end a line: ".\n" inside is body. */
    {"a\n.\nb\r\n.\r\n", "a\n.\nb\r\n"},
    /* CR CR LF: the second CR LF ends the line. */
    {"a\r\r\n.\r\n", "a\r\r\n"},
    {"x. \r\n.\r\n", "x. \r\n"},
};

static size_t *
case_indexes(size_t n)
{
    size_t *idx = cr_malloc(n * sizeof(*idx));
    for (size_t i = 0; i < n; i++)
        idx[i] = i;
    return idx;
}

static void
free_params(struct criterion_test_params *crp)
{
    cr_free(crp->params);
}

ParameterizedTestParameters(sink_parse, unstuffs_data)
{
    size_t n = sizeof(unstuff_cases) / sizeof(unstuff_cases[0]);
    return cr_make_param_array(size_t, case_indexes(n), n, free_params);
}

ParameterizedTest(size_t *i, sink_parse, unstuffs_data)
{
    const struct unstuff_case *c = &unstuff_cases[*i];
    for (size_t step = 0; step <= 3; step++) {
        struct log *l = calloc(1, sizeof(*l));
        char in[256];
        int n = snprintf(in, sizeof(in), "DATA\r\n%sNOOP\r\n", c->wire);
        run(l, in, (size_t)n, step);
        cr_assert_str_eq(l->text, "LINE[DATA]\nDATA_END\nLINE[NOOP]\n", "wire %s step %zu",
                         c->wire, step);
        cr_assert_eq(l->body_len, strlen(c->body), "wire %s step %zu", c->wire, step);
        cr_assert_arr_eq(l->body, c->body, l->body_len);
        free(l);
    }
}

Test(sink_parse, discards_overlong_lines_and_recovers)
{
    struct log *l = calloc(1, sizeof(*l));
    size_t len = SINK_PARSE_LINE_MAX + 100;
    char *in = malloc(len + 32);
    memset(in, 'x', len);
    memcpy(in + len, "\r\nNOOP\r\n", 8);
    run(l, in, len + 8, 0);
    cr_assert_str_eq(l->text, "TOO_LONG\nLINE[NOOP]\n");
    memset(l, 0, sizeof(*l));
    run(l, in, len + 8, 100);
    cr_assert_str_eq(l->text, "TOO_LONG\nLINE[NOOP]\n");
    free(in);
    free(l);
}

Test(sink_parse, tolerates_bare_lf_command_lines)
{
    struct log *l = calloc(1, sizeof(*l));
    run(l, "NOOP\nQUIT\r\n", 11, 0);
    cr_assert_str_eq(l->text, "LINE[NOOP]\nLINE[QUIT]\n");
    free(l);
}

struct cmd_case {
    const char *line;
    enum sink_cmd_result result;
    enum sink_verb verb;
    const char *path;     /* NULL: not checked */
    unsigned long long num; /* SIZE= or BDAT size */
    int last;
};

static const struct cmd_case cmd_cases[] = {
    {"EHLO client.test", SINK_CMD_OK, SINK_VERB_EHLO, NULL, 0, 0},
    {"ehlo client.test", SINK_CMD_OK, SINK_VERB_EHLO, NULL, 0, 0},
    {"EHLO", SINK_CMD_SYNTAX, SINK_VERB_EHLO, NULL, 0, 0},
    {"HELO x", SINK_CMD_OK, SINK_VERB_HELO, NULL, 0, 0},
    {"MAIL FROM:<a@b.test>", SINK_CMD_OK, SINK_VERB_MAIL, "a@b.test", 0, 0},
    {"MAIL FROM:<>", SINK_CMD_OK, SINK_VERB_MAIL, "", 0, 0},
    {"mail from: <a@b.test> SIZE=2048 BODY=8BITMIME", SINK_CMD_OK, SINK_VERB_MAIL,
     "a@b.test", 2048, 0},
    {"MAIL FROM:a@b.test", SINK_CMD_SYNTAX, SINK_VERB_MAIL, NULL, 0, 0},
    {"MAIL TO:<a@b.test>", SINK_CMD_SYNTAX, SINK_VERB_MAIL, NULL, 0, 0},
    {"MAIL FROM:<a@b.test> SIZE=x", SINK_CMD_SYNTAX, SINK_VERB_MAIL, NULL, 0, 0},
    {"RCPT TO:<rcpt1@example.test>", SINK_CMD_OK, SINK_VERB_RCPT, "rcpt1@example.test", 0, 0},
    {"RCPT TO:<a@b.test", SINK_CMD_SYNTAX, SINK_VERB_RCPT, NULL, 0, 0},
    {"RCPT", SINK_CMD_SYNTAX, SINK_VERB_RCPT, NULL, 0, 0},
    {"DATA", SINK_CMD_OK, SINK_VERB_DATA, NULL, 0, 0},
    {"DATA ", SINK_CMD_OK, SINK_VERB_DATA, NULL, 0, 0},
    {"DATA x", SINK_CMD_SYNTAX, SINK_VERB_DATA, NULL, 0, 0},
    {"BDAT 1000", SINK_CMD_OK, SINK_VERB_BDAT, NULL, 1000, 0},
    {"BDAT 0 LAST", SINK_CMD_OK, SINK_VERB_BDAT, NULL, 0, 1},
    {"bdat 5 last", SINK_CMD_OK, SINK_VERB_BDAT, NULL, 5, 1},
    {"BDAT x", SINK_CMD_SYNTAX, SINK_VERB_BDAT, NULL, 0, 0},
    {"BDAT 5 FIRST", SINK_CMD_SYNTAX, SINK_VERB_BDAT, NULL, 5, 0},
    {"BDAT 99999999999999999999", SINK_CMD_SYNTAX, SINK_VERB_BDAT, NULL, 0, 0},
    {"RSET", SINK_CMD_OK, SINK_VERB_RSET, NULL, 0, 0},
    {"NOOP", SINK_CMD_OK, SINK_VERB_NOOP, NULL, 0, 0},
    {"NOOP anything", SINK_CMD_OK, SINK_VERB_NOOP, NULL, 0, 0},
    {"QUIT", SINK_CMD_OK, SINK_VERB_QUIT, NULL, 0, 0},
    {"VRFY x", SINK_CMD_OK, SINK_VERB_VRFY, NULL, 0, 0},
    {"STARTTLS", SINK_CMD_OK, SINK_VERB_STARTTLS, NULL, 0, 0},
    {"XYZZY", SINK_CMD_UNKNOWN, SINK_VERB_UNKNOWN, NULL, 0, 0},
    {"", SINK_CMD_UNKNOWN, SINK_VERB_UNKNOWN, NULL, 0, 0},
    {"MAILFROM:<a@b>", SINK_CMD_UNKNOWN, SINK_VERB_UNKNOWN, NULL, 0, 0},
};

ParameterizedTestParameters(sink_parse, classifies_commands)
{
    size_t n = sizeof(cmd_cases) / sizeof(cmd_cases[0]);
    return cr_make_param_array(size_t, case_indexes(n), n, free_params);
}

ParameterizedTest(size_t *i, sink_parse, classifies_commands)
{
    const struct cmd_case *c = &cmd_cases[*i];
    struct sink_cmd cmd;
    enum sink_cmd_result r = sink_parse_command(c->line, strlen(c->line), &cmd);
    cr_assert_eq(r, c->result, "\"%s\": result %d, want %d", c->line, r, c->result);
    cr_assert_eq(cmd.verb, c->verb, "\"%s\": verb", c->line);
    if (r != SINK_CMD_OK)
        return;
    if (c->path != NULL) {
        cr_assert_eq(cmd.path_len, strlen(c->path), "\"%s\": path", c->line);
        cr_assert_arr_eq(cmd.path, c->path, cmd.path_len);
    }
    if (c->verb == SINK_VERB_MAIL)
        cr_assert_eq(cmd.mail_size, c->num, "\"%s\": SIZE", c->line);
    if (c->verb == SINK_VERB_BDAT) {
        cr_assert_eq(cmd.bdat_size, c->num, "\"%s\": chunk size", c->line);
        cr_assert_eq(cmd.bdat_last, (bool)c->last, "\"%s\": LAST", c->line);
    }
}

Test(sink_parse, counts_body_bytes_without_a_callback)
{
    struct sink_parse *p = malloc(sizeof(*p));
    sink_parse_init(p, NULL, NULL);
    sink_parse_start_data(p);
    size_t used;
    const char in[] = "..ab\r\n.\r\n";
    cr_assert_eq(sink_parse_feed(p, in, sizeof(in) - 1, &used), SINK_PARSE_DATA_END);
    cr_assert_eq(used, sizeof(in) - 1);
    cr_assert_eq(p->body_bytes, 5); /* ".ab\r\n" */
    free(p);
}
