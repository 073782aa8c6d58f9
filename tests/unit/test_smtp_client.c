/*
 * smtp_client: the outbound session driven with plain buffers; the test plays
 * the remote server and io/, and checks transcripts of what went on the wire.
 *
 * The harness plays io/ the way the delivery code must: after every call it
 * takes the output (SEND) and appends it to the wire, streams the body when
 * SEND_BODY is set (verbatim, or through body_xform in small pieces, calling
 * body_progress per write) and then calls body_sent(), records RESULTS, IDLE,
 * START_TLS and CLOSE. On every call it checks that command output is CRLF
 * lines with no CR, LF or NUL inside, that RESULTS never leaves a recipient
 * undecided, that nothing is sent after CLOSE, and that the reply parser's
 * memory stays within SMTPC_LINE_MAX.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "body_xform.h"
#include "config.h"
#include "smtp_client.h"
#include "smtp_reply.h"

#define HELO "client.example"
#define T0 UINT64_C(1000000)
#define MAXR 8

struct harness {
    bool live;                  /* set up, not yet torn down */
    struct config cfg;
    struct smtp_client c;
    bool started;
    uint64_t now;
    /* the wire: every octet the client sent, commands and body */
    char *wire;
    size_t wire_len, wire_cap, wire_pos;
    struct smtp_outbuf taken;
    unsigned writes;            /* take_output() calls that carried octets */
    /* the message */
    struct smtpc_msg msg;
    char rcpt[MAXR][300];
    const char *rcptp[MAXR];
    char sender[300];
    char body[4096];
    size_t body_len;
    bool hold_body;             /* io/ does not stream the body (yet) */
    bool body_waiting;
    unsigned body_sends;        /* SEND_BODY seen */
    /* what io/ saw */
    unsigned results_seen;
    struct smtpc_result res[MAXR];
    uint32_t nres;
    unsigned idle_seen;
    bool tls_started;
    bool closed;
};

static struct harness H;

/* --- harness: io/ ----------------------------------------------------------- */

static void
wire_append(const void *p, size_t n)
{
    if (H.wire_len + n + 1 > H.wire_cap) {
        H.wire_cap = (H.wire_len + n + 1) * 2;
        H.wire = realloc(H.wire, H.wire_cap);
    }
    memcpy(H.wire + H.wire_len, p, n);
    H.wire_len += n;
    H.wire[H.wire_len] = '\0';
}

static void h_collect(void);

/* Streams the body as io/ would: from the "spool" in pieces of 7 octets. */
static void
h_stream_body(void)
{
    struct smtp_client *c = &H.c;
    cr_assert(c->txn.body_streaming, "no body due (state %s)", smtp_client_state_name(c->state));
    if (c->txn.body_mode == SMTPC_BODY_VERBATIM) {
        for (size_t i = 0; i < H.body_len; i += 7) {
            size_t k = H.body_len - i < 7 ? H.body_len - i : 7;
            wire_append(H.body + i, k);
            smtp_client_body_progress(c, H.now);
        }
    } else if (c->txn.body_mode == SMTPC_BODY_UNSTUFF) {
        struct body_unstuff u;
        body_unstuff_init(&u);
        for (size_t i = 0; i < H.body_len;) {
            bool drop;
            size_t k = body_unstuff_run(&u, (const uint8_t *)H.body + i, H.body_len - i, &drop);
            wire_append(H.body + i, k);
            i += k + drop;
            smtp_client_body_progress(c, H.now);
        }
    } else {
        struct body_xform x;
        uint8_t out[5];
        body_xform_init(&x);
        size_t i = 0;
        while (i < H.body_len || x.dot_owed) {
            size_t used = 0;
            size_t o = body_xform_stuff(&x, (const uint8_t *)H.body + i, H.body_len - i, &used,
                                        out, sizeof out);
            wire_append(out, o);
            i += used;
            smtp_client_body_progress(c, H.now);
        }
        uint8_t fin[BODY_XFORM_FINISH_MAX];
        wire_append(fin, body_xform_finish(&x, fin, sizeof fin));
    }
    smtp_client_body_sent(c, H.now);
}

static void
h_check_output(const struct smtp_outbuf *b)
{
    size_t start = 0;
    for (size_t i = 0; i < b->len; i++) {
        char ch = b->data[i];
        if (ch == '\n') {
            cr_assert(i > start && b->data[i - 1] == '\r', "bare LF in a command");
            start = i + 1;
        } else if (ch == '\r') {
            cr_assert(i + 1 < b->len && b->data[i + 1] == '\n', "bare CR in a command");
        } else {
            cr_assert(ch != '\0', "NUL in a command");
        }
    }
    cr_assert_eq(start, b->len, "output ends inside a command line");
}

/* Plays io/ after each call into the session. */
static void
h_collect(void)
{
    struct smtp_client *c = &H.c;
    if (!H.started)
        return;
    for (int guard = 0; guard < 16; guard++) {
        cr_assert_leq(c->parser.len, SMTPC_LINE_MAX);
        cr_assert_leq(c->parser.lines, SMTPC_REPLY_LINES_MAX);
        if (c->actions & SMTPC_ACT_SEND) {
            cr_assert_not(H.closed, "output after CLOSE");
            H.taken.len = 0;
            smtp_client_take_output(c, &H.taken);
            cr_assert_eq(c->out.len, 0);
            cr_assert_eq(c->actions & SMTPC_ACT_SEND, 0);
            h_check_output(&H.taken);
            if (H.taken.len > 0)
                H.writes++;
            wire_append(H.taken.data, H.taken.len);
        }
        if (c->actions & SMTPC_ACT_RESULTS) {
            c->actions &= ~SMTPC_ACT_RESULTS;
            H.results_seen++;
            H.nres = H.msg.nrcpt;
            for (uint32_t i = 0; i < H.msg.nrcpt; i++) {
                const struct smtpc_result *r = smtp_client_result(c, i);
                cr_assert_not_null(r);
                cr_assert_neq(r->cls, SMTPC_PENDING, "recipient %u undecided", i);
                for (const char *t = r->reply.text; *t; t++)
                    cr_assert(*t >= 0x20 && *t < 0x7f, "unprintable result text");
                H.res[i] = *r;
            }
        }
        if (c->actions & SMTPC_ACT_IDLE) {
            c->actions &= ~SMTPC_ACT_IDLE;
            cr_assert(smtp_client_idle(c));
            H.idle_seen++;
        }
        if (c->actions & SMTPC_ACT_START_TLS) {
            c->actions &= ~SMTPC_ACT_START_TLS;
            H.tls_started = true;
        }
        if (c->actions & SMTPC_ACT_CLOSE)
            H.closed = true;
        if (c->actions & SMTPC_ACT_SEND_BODY) {
            c->actions &= ~SMTPC_ACT_SEND_BODY;
            H.body_sends++;
            if (H.hold_body) {
                H.body_waiting = true;
                break;
            }
            h_stream_body();
            continue;
        }
        break;
    }
}

/* --- harness: setup ---------------------------------------------------------- */

static void
h_setup(void)
{
    memset(&H, 0, sizeof H);
    config_init(&H.cfg);
    H.now = T0;
    H.live = true;
}

/* Idempotent: loops in a test tear down and set up again. */
static void
h_teardown(void)
{
    if (!H.live)
        return;
    if (H.started)
        smtp_client_free(&H.c);
    outbuf_free(&H.taken);
    config_free(&H.cfg);
    free(H.wire);
    memset(&H, 0, sizeof H);
}

static void
h_connect(void)
{
    smtp_client_init(&H.c, &H.cfg, HELO, H.now);
    H.started = true;
    h_collect();
}

/* The message: sender, NULL-terminated recipients, body and its form. */
static void
h_msg(const char *sender, const char *const *rcpts, const char *body, size_t body_len,
      enum smtpc_body_form form)
{
    snprintf(H.sender, sizeof H.sender, "%s", sender);
    uint32_t n = 0;
    for (; rcpts[n] != NULL; n++) {
        cr_assert_lt(n, MAXR);
        snprintf(H.rcpt[n], sizeof H.rcpt[n], "%s", rcpts[n]);
        H.rcptp[n] = H.rcpt[n];
    }
    memcpy(H.body, body, body_len);
    H.body_len = body_len;
    memset(&H.msg, 0, sizeof H.msg);
    H.msg.sender = H.sender;
    H.msg.rcpts = H.rcptp;
    H.msg.nrcpt = n;
    H.msg.body_len = body_len;
    H.msg.body_form = form;
}

#define RCPTS(...) ((const char *const[]){ __VA_ARGS__, NULL })
#define BODY "Subject: t\r\n\r\nhello\r\n"

static void
h_feed(const char *text, size_t n)
{
    smtp_client_input(&H.c, (const uint8_t *)text, n, H.now);
    h_collect();
}

static void
h_feed_pieces(const char *text, size_t piece)
{
    size_t n = strlen(text);
    for (size_t i = 0; i < n; i += piece)
        h_feed(text + i, n - i < piece ? n - i : piece);
}

static void
h_tick_to(uint64_t at)
{
    H.now = at;
    smtp_client_tick(&H.c, H.now);
    h_collect();
}

/* --- harness: transcripts ---------------------------------------------------- */

static void
expect_wire(const char *s, size_t n)
{
    size_t left = H.wire_len - H.wire_pos;
    cr_assert(left >= n && memcmp(H.wire + H.wire_pos, s, n) == 0,
              "expected on the wire \"%.*s\", got \"%.*s\"", (int)n, s, (int)left,
              H.wire ? H.wire + H.wire_pos : "");
    H.wire_pos += n;
}

static void
expect_nothing_sent(void)
{
    cr_assert_eq(H.wire_pos, H.wire_len, "unexpected on the wire: \"%s\"",
                 H.wire + H.wire_pos);
}

/*
 * Plays a transcript. "C: x" expects the command line x (CRLF added) on the
 * wire; "W: x" expects the raw octets x; "S: x" is the server sending x
 * (raw, with its own line ends), after every client octet was matched;
 * "T: ms" lets ms pass and ticks; "M:" gives the message; "Q:" asks to quit;
 * "E:" is the peer closing; "B:" lets a held body go; "I:" expects IDLE
 * since the last "I:"; "X:" expects CLOSE.
 */
static void
play(const char *const *steps)
{
    for (size_t i = 0; steps[i] != NULL; i++) {
        const char *st = steps[i];
        if (strncmp(st, "C: ", 3) == 0) {
            expect_wire(st + 3, strlen(st + 3));
            expect_wire("\r\n", 2);
        } else if (strncmp(st, "W: ", 3) == 0) {
            expect_wire(st + 3, strlen(st + 3));
        } else if (strncmp(st, "S: ", 3) == 0) {
            expect_nothing_sent();
            h_feed(st + 3, strlen(st + 3));
        } else if (strncmp(st, "T: ", 3) == 0) {
            h_tick_to(H.now + strtoull(st + 3, NULL, 10));
        } else if (strcmp(st, "M:") == 0) {
            expect_nothing_sent();
            smtp_client_send(&H.c, &H.msg, H.now);
            h_collect();
        } else if (strcmp(st, "Q:") == 0) {
            smtp_client_quit(&H.c, H.now);
            h_collect();
        } else if (strcmp(st, "E:") == 0) {
            smtp_client_peer_closed(&H.c, H.now);
            h_collect();
        } else if (strcmp(st, "B:") == 0) {
            cr_assert(H.body_waiting, "no body to release");
            H.hold_body = false;
            H.body_waiting = false;
            h_stream_body();
            h_collect();
        } else if (strcmp(st, "I:") == 0) {
            cr_assert_gt(H.idle_seen, 0, "session not idle (state %s)",
                         smtp_client_state_name(H.c.state));
            H.idle_seen = 0;
        } else if (strcmp(st, "X:") == 0) {
            cr_assert(H.closed, "session not closed (state %s)",
                      smtp_client_state_name(H.c.state));
        } else {
            cr_assert_fail("bad transcript step \"%s\"", st);
        }
    }
    expect_nothing_sent();
}

#define PLAY(...) play((const char *const[]){ __VA_ARGS__, NULL })

#define GREET "S: 220 mx.example ESMTP\r\n", "C: EHLO " HELO
#define EHLO_PIPE                                                                        \
    GREET,                                                                               \
        "S: 250-mx.example\r\n250-PIPELINING\r\n250-SIZE 100000\r\n250-8BITMIME\r\n"     \
        "250-ENHANCEDSTATUSCODES\r\n250 SMTPUTF8\r\n",                                   \
        "I:"
#define EHLO_PLAIN GREET, "S: 250-mx.example\r\n250 SIZE 100000\r\n", "I:"
#define EHLO_CHUNK                                                                       \
    GREET, "S: 250-mx.example\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 ENHANCEDSTATUSCODES\r\n", \
        "I:"
#define EHLO_CHUNK_ONLY GREET, "S: 250-mx.example\r\n250 CHUNKING\r\n", "I:"

static void
expect_result(uint32_t i, enum smtpc_class cls, unsigned code, const char *enh)
{
    cr_assert_lt(i, H.nres);
    cr_assert_eq(H.res[i].cls, cls, "rcpt %u: class %d, want %d (%s)", i, H.res[i].cls, cls,
                 H.res[i].reply.text);
    cr_assert_eq(H.res[i].reply.code, code, "rcpt %u: code %u, want %u", i,
                 H.res[i].reply.code, code);
    cr_assert_str_eq(H.res[i].reply.enh, enh, "rcpt %u", i);
}

TestSuite(smtp_client, .init = h_setup, .fini = h_teardown);

/* --- greeting and EHLO ----------------------------------------------------- */

Test(smtp_client, waits_for_the_greeting_then_ehlo_and_parses_extensions)
{
    h_connect();
    expect_nothing_sent();
    cr_assert_eq(H.c.state, SMTPC_ST_BANNER);
    cr_assert_str_eq(smtp_client_state_name(H.c.state), "banner");
    PLAY(GREET,
         "S: 250-mx.example hi\r\n250-pipelining\r\n250-SIZE 5000\r\n250-8BITMIME\r\n"
         "250-SMTPUTF8\r\n250-CHUNKING\r\n250-ENHANCEDSTATUSCODES\r\n250-DSN\r\n"
         "250-X-UNKNOWN foo\r\n250 STARTTLS\r\n",
         "I:");
    const struct smtpc_caps *k = &H.c.caps;
    cr_assert(k->pipelining && k->size && k->eightbitmime && k->smtputf8 && k->chunking
              && k->enhancedstatuscodes && k->dsn && k->starttls);
    cr_assert_eq(k->size_max, 5000);
    cr_assert(H.c.esmtp);
    cr_assert(smtp_client_idle(&H.c));
    cr_assert_eq(smtp_client_deadline(&H.c), UINT64_MAX, "no deadline while idle");
}

Test(smtp_client, ehlo_5xx_falls_back_to_helo_without_extensions)
{
    h_connect();
    h_msg("a@x.example", RCPTS("b@y.example"), BODY, strlen(BODY), SMTPC_STORED_DATA);
    PLAY(GREET, "S: 502 5.5.2 what\r\n", "C: HELO " HELO, "S: 250 mx.example\r\n", "I:",
         "M:", "C: MAIL FROM:<a@x.example>", "S: 250 ok\r\n", "C: RCPT TO:<b@y.example>",
         "S: 250 ok\r\n", "C: DATA", "S: 354 go\r\n", "W: " BODY, "C: .",
         "S: 250 queued\r\n", "I:");
    cr_assert_not(H.c.esmtp);
    expect_result(0, SMTPC_DELIVERED, 250, "2.0.0");
}

Test(smtp_client, helo_refused_too_fails_the_connection_with_quit)
{
    h_connect();
    PLAY(GREET, "S: 500 no\r\n", "C: HELO " HELO, "S: 554 go away\r\n", "C: QUIT",
         "S: 221 bye\r\n", "X:");
    cr_assert(H.c.failed);
    cr_assert_eq(H.c.failure.code, 554);
    cr_assert_eq(H.c.fail_state, SMTPC_ST_HELO);
}

Test(smtp_client, greeting_554_is_a_connection_failure_and_we_quit)
{
    /* RFC 5321 §3.1: the server waits for QUIT after a 554 greeting. */
    h_connect();
    PLAY("S: 554 mx.example no service\r\n", "C: QUIT", "S: 221 bye\r\n", "X:");
    cr_assert(H.c.failed);
    cr_assert_eq(H.c.failure.code, 554);
    cr_assert_str_eq(H.c.failure.enh, "5.0.0");
    cr_assert_str_eq(H.c.failure.text, "554 mx.example no service");
    cr_assert_eq(H.c.fail_state, SMTPC_ST_BANNER);
    cr_assert_eq(H.results_seen, 0, "no message was involved");
}

Test(smtp_client, garbage_after_our_quit_still_closes_and_keeps_the_first_reason)
{
    h_connect();
    PLAY("S: 554 no service\r\n", "C: QUIT", "S: 2x1 what\r\n", "X:");
    cr_assert_eq(H.c.failure.code, 554);
    h_teardown();
    h_setup();
    h_connect();
    PLAY(EHLO_PLAIN, "Q:", "C: QUIT", "S: 25\r\n", "X:");
    cr_assert_not(H.c.failed);
}

Test(smtp_client, greeting_421_closes_without_quit)
{
    h_connect();
    PLAY("S: 421 4.3.2 busy\r\n", "X:");
    cr_assert(H.c.failed);
    cr_assert_eq(H.c.failure.code, 421);
}

Test(smtp_client, ehlo_4xx_fails_the_connection)
{
    h_connect();
    PLAY(GREET, "S: 451 later\r\n", "C: QUIT", "S: 221 bye\r\n", "X:");
    cr_assert_eq(H.c.failure.code, 451);
}

/* --- transactions ----------------------------------------------------------- */

Test(smtp_client, happy_path_without_pipelining_one_command_at_a_time)
{
    h_connect();
    h_msg("a@x.example", RCPTS("b@y.example", "c@y.example"), BODY, strlen(BODY),
          SMTPC_STORED_DATA);
    PLAY(EHLO_PLAIN, "M:", "C: MAIL FROM:<a@x.example> SIZE=21", "S: 250 ok\r\n",
         "C: RCPT TO:<b@y.example>", "S: 250 ok\r\n", "C: RCPT TO:<c@y.example>",
         "S: 250 ok\r\n", "C: DATA", "S: 354 go ahead\r\n", "W: " BODY, "C: .",
         "S: 250 2.0.0 queued as X\r\n", "I:");
    cr_assert_eq(H.results_seen, 1);
    expect_result(0, SMTPC_DELIVERED, 250, "2.0.0");
    expect_result(1, SMTPC_DELIVERED, 250, "2.0.0");
    cr_assert_str_eq(H.res[0].reply.text, "250 2.0.0 queued as X");
    cr_assert_eq(H.c.messages, 1);
}

Test(smtp_client, happy_path_with_pipelining_sends_mail_rcpts_data_in_one_write)
{
    h_connect();
    h_msg("a@x.example", RCPTS("b@y.example", "c@y.example"), BODY, strlen(BODY),
          SMTPC_STORED_DATA);
    PLAY(EHLO_PIPE);
    unsigned writes = H.writes;
    PLAY("M:", "C: MAIL FROM:<a@x.example> SIZE=21", "C: RCPT TO:<b@y.example>",
         "C: RCPT TO:<c@y.example>", "C: DATA");
    cr_assert_eq(H.writes, writes + 1, "MAIL, RCPTs and DATA in one write");
    PLAY("S: 250 2.1.0 ok\r\n250 2.1.5 ok\r\n250 2.1.5 ok\r\n354 go\r\n", "W: " BODY, "C: .",
         "S: 250 2.0.0 queued\r\n", "I:");
    expect_result(0, SMTPC_DELIVERED, 250, "2.0.0");
    expect_result(1, SMTPC_DELIVERED, 250, "2.0.0");
}

Test(smtp_client, several_messages_on_one_connection_then_quit)
{
    h_connect();
    PLAY(EHLO_PIPE);
    for (int m = 0; m < 3; m++) {
        h_msg("", RCPTS("b@y.example"), BODY, strlen(BODY), SMTPC_STORED_DATA);
        PLAY("M:", "C: MAIL FROM:<> SIZE=21", "C: RCPT TO:<b@y.example>", "C: DATA",
             "S: 250 ok\r\n250 ok\r\n354 go\r\n", "W: " BODY, "C: .", "S: 250 ok\r\n", "I:");
        expect_result(0, SMTPC_DELIVERED, 250, "2.0.0");
    }
    cr_assert_eq(H.results_seen, 3);
    cr_assert_eq(H.c.messages, 3);
    PLAY("Q:", "C: QUIT", "S: 221 bye\r\n", "X:");
    cr_assert_not(H.c.failed);
}

Test(smtp_client, rcpt_250_450_550_then_data_250_give_delivered_deferred_failed)
{
    /* RELIABILITY row 48. */
    h_connect();
    h_msg("a@x.example", RCPTS("ok@y.example", "later@y.example", "gone@y.example"), BODY,
          strlen(BODY), SMTPC_STORED_DATA);
    PLAY(EHLO_PIPE, "M:", "C: MAIL FROM:<a@x.example> SIZE=21", "C: RCPT TO:<ok@y.example>",
         "C: RCPT TO:<later@y.example>", "C: RCPT TO:<gone@y.example>", "C: DATA",
         "S: 250 2.1.0 ok\r\n250 2.1.5 ok\r\n450 4.2.1 try later\r\n"
         "550 5.1.1 no such user\r\n354 go\r\n",
         "W: " BODY, "C: .", "S: 250 2.0.0 queued\r\n", "I:");
    expect_result(0, SMTPC_DELIVERED, 250, "2.0.0");
    expect_result(1, SMTPC_DEFERRED, 450, "4.2.1");
    expect_result(2, SMTPC_FAILED, 550, "5.1.1");
    cr_assert_str_eq(H.res[2].reply.text, "550 5.1.1 no such user");
}

Test(smtp_client, final_reply_after_data_applies_to_every_accepted_rcpt)
{
    h_connect();
    h_msg("a@x.example", RCPTS("b@y.example", "c@y.example", "d@y.example"), BODY,
          strlen(BODY), SMTPC_STORED_DATA);
    PLAY(EHLO_PIPE, "M:", "C: MAIL FROM:<a@x.example> SIZE=21", "C: RCPT TO:<b@y.example>",
         "C: RCPT TO:<c@y.example>", "C: RCPT TO:<d@y.example>", "C: DATA",
         "S: 250 ok\r\n250 ok\r\n550 5.1.1 no\r\n250 ok\r\n354 go\r\n", "W: " BODY, "C: .",
         "S: 554 5.7.1 spam\r\n", "I:");
    expect_result(0, SMTPC_FAILED, 554, "5.7.1");
    expect_result(1, SMTPC_FAILED, 550, "5.1.1");
    expect_result(2, SMTPC_FAILED, 554, "5.7.1");
}

Test(smtp_client, final_4xx_after_data_defers)
{
    h_connect();
    h_msg("a@x.example", RCPTS("b@y.example"), BODY, strlen(BODY), SMTPC_STORED_DATA);
    PLAY(EHLO_PLAIN, "M:", "C: MAIL FROM:<a@x.example> SIZE=21", "S: 250 ok\r\n",
         "C: RCPT TO:<b@y.example>", "S: 250 ok\r\n", "C: DATA", "S: 354 go\r\n", "W: " BODY,
         "C: .", "S: 451 4.3.0 disk\r\n", "I:");
    /* Taken from the text even without ENHANCEDSTATUSCODES (as Postfix does). */
    expect_result(0, SMTPC_DEFERRED, 451, "4.3.0");
    /* The end of data ended the transaction: the next MAIL needs no RSET. */
    PLAY("M:", "C: MAIL FROM:<a@x.example> SIZE=21");
}

Test(smtp_client, all_rcpts_rejected_sends_rset_and_no_body)
{
    h_connect();
    h_msg("a@x.example", RCPTS("b@y.example", "c@y.example"), BODY, strlen(BODY),
          SMTPC_STORED_DATA);
    PLAY(EHLO_PLAIN, "M:", "C: MAIL FROM:<a@x.example> SIZE=21", "S: 250 ok\r\n",
         "C: RCPT TO:<b@y.example>", "S: 550 no\r\n", "C: RCPT TO:<c@y.example>",
         "S: 451 later\r\n", "C: RSET", "S: 250 ok\r\n", "I:");
    cr_assert_eq(H.body_sends, 0);
    cr_assert_eq(H.results_seen, 1);
    expect_result(0, SMTPC_FAILED, 550, "5.0.0");
    expect_result(1, SMTPC_DEFERRED, 451, "4.0.0");
}

Test(smtp_client, all_rcpts_rejected_when_pipelined_takes_the_data_503_then_rset)
{
    h_connect();
    h_msg("a@x.example", RCPTS("b@y.example"), BODY, strlen(BODY), SMTPC_STORED_DATA);
    PLAY(EHLO_PIPE, "M:", "C: MAIL FROM:<a@x.example> SIZE=21", "C: RCPT TO:<b@y.example>",
         "C: DATA", "S: 250 ok\r\n550 5.1.1 no\r\n554 5.5.1 no valid recipients\r\n",
         "C: RSET", "S: 250 ok\r\n", "I:");
    cr_assert_eq(H.body_sends, 0);
    expect_result(0, SMTPC_FAILED, 550, "5.1.1");
}

Test(smtp_client, pipelined_data_accepted_with_nobody_accepted_gets_a_lone_dot)
{
    /* RFC 2920 §3.1: "if the DATA command was accepted the client SMTP
     * should send a single dot." */
    h_connect();
    h_msg("a@x.example", RCPTS("b@y.example"), BODY, strlen(BODY), SMTPC_STORED_DATA);
    PLAY(EHLO_PIPE, "M:", "C: MAIL FROM:<a@x.example> SIZE=21", "C: RCPT TO:<b@y.example>",
         "C: DATA", "S: 250 ok\r\n550 5.1.1 no\r\n354 go\r\n", "C: .",
         "S: 554 5.5.1 no valid recipients\r\n", "I:");
    cr_assert_eq(H.body_sends, 0);
    expect_result(0, SMTPC_FAILED, 550, "5.1.1");
}

Test(smtp_client, mail_refused_refuses_every_rcpt_without_sending_them)
{
    h_connect();
    h_msg("a@x.example", RCPTS("b@y.example", "c@y.example"), BODY, strlen(BODY),
          SMTPC_STORED_DATA);
    PLAY(EHLO_PLAIN, "M:", "C: MAIL FROM:<a@x.example> SIZE=21", "S: 553 bad sender\r\n",
         "I:");
    expect_result(0, SMTPC_FAILED, 553, "5.0.0");
    expect_result(1, SMTPC_FAILED, 553, "5.0.0");
    cr_assert_str_eq(H.res[1].reply.text, "553 bad sender");
}

Test(smtp_client, mail_refused_when_pipelined_consumes_the_other_replies)
{
    h_connect();
    h_msg("a@x.example", RCPTS("b@y.example", "c@y.example"), BODY, strlen(BODY),
          SMTPC_STORED_DATA);
    PLAY(EHLO_PIPE, "M:", "C: MAIL FROM:<a@x.example> SIZE=21", "C: RCPT TO:<b@y.example>",
         "C: RCPT TO:<c@y.example>", "C: DATA",
         "S: 451 4.3.0 later\r\n503 5.5.1 need MAIL\r\n503 5.5.1 need MAIL\r\n"
         "503 5.5.1 need MAIL\r\n",
         "I:");
    expect_result(0, SMTPC_DEFERRED, 451, "4.3.0");
    expect_result(1, SMTPC_DEFERRED, 451, "4.3.0");
    cr_assert_eq(H.body_sends, 0);
    cr_assert_not(H.c.failed);
}

/* --- body forms ------------------------------------------------------------- */

Test(smtp_client, raw_body_goes_by_bdat_with_mail_and_rcpt_in_one_write)
{
    /* RFC 3030 §4.2: MAIL, RCPT, BDAT and its chunk pipelined; one write,
     * one round trip for the whole transaction. */
    h_connect();
    h_msg("a@x.example", RCPTS("b@y.example"), "hello\r\n.\r\nno end", 16, SMTPC_STORED_RAW);
    PLAY(EHLO_CHUNK);
    unsigned writes = H.writes;
    PLAY("M:", "C: MAIL FROM:<a@x.example>", "C: RCPT TO:<b@y.example>", "C: BDAT 16 LAST",
         "W: hello\r\n.\r\nno end");
    cr_assert_eq(H.writes, writes + 1, "commands in %u writes", H.writes - writes);
    cr_assert_eq(H.c.state, SMTPC_ST_MAIL);
    PLAY("S: 250 ok\r\n250 ok\r\n250 2.0.0 ok\r\n", "I:");
    cr_assert_eq(H.c.txn.body_mode, SMTPC_BODY_VERBATIM);
    expect_result(0, SMTPC_DELIVERED, 250, "2.0.0");
}

Test(smtp_client, bdat_without_pipelining_waits_for_the_rcpt_replies)
{
    h_connect();
    h_msg("a@x.example", RCPTS("b@y.example"), "hello\r\n", 7, SMTPC_STORED_RAW);
    PLAY(EHLO_CHUNK_ONLY, "M:", "C: MAIL FROM:<a@x.example>", "S: 250 ok\r\n",
         "C: RCPT TO:<b@y.example>", "S: 250 ok\r\n", "C: BDAT 7 LAST", "W: hello\r\n",
         "S: 250 2.0.0 ok\r\n", "I:");
    expect_result(0, SMTPC_DELIVERED, 250, "2.0.0");
}

Test(smtp_client, data_form_without_dot_lines_goes_by_bdat_as_stored)
{
    /* Nothing stuffed: the stored DATA octets are the message itself. */
    h_connect();
    h_msg("a@x.example", RCPTS("b@y.example", "c@y.example"), BODY, strlen(BODY),
          SMTPC_STORED_DATA_NO_DOT_LINES);
    PLAY(EHLO_CHUNK, "M:", "C: MAIL FROM:<a@x.example>", "C: RCPT TO:<b@y.example>",
         "C: RCPT TO:<c@y.example>", "C: BDAT 21 LAST", "W: " BODY,
         "S: 250 ok\r\n250 ok\r\n450 4.2.1 later\r\n250 2.0.0 ok\r\n", "I:");
    cr_assert_eq(H.c.txn.body_mode, SMTPC_BODY_VERBATIM);
    expect_result(0, SMTPC_DELIVERED, 250, "2.0.0");
    expect_result(1, SMTPC_DEFERRED, 450, "4.2.1");
}

Test(smtp_client, data_form_without_dot_lines_to_a_peer_without_chunking_uses_data)
{
    h_connect();
    h_msg("a@x.example", RCPTS("b@y.example"), BODY, strlen(BODY),
          SMTPC_STORED_DATA_NO_DOT_LINES);
    PLAY(EHLO_PIPE, "M:", "C: MAIL FROM:<a@x.example> SIZE=21", "C: RCPT TO:<b@y.example>",
         "C: DATA", "S: 250 ok\r\n250 ok\r\n354 go\r\n", "W: " BODY, "C: .",
         "S: 250 ok\r\n", "I:");
}

Test(smtp_client, stuffed_data_form_goes_unstuffed_by_bdat_when_io_offers_it)
{
    /* The chunk is the message less its stuffing dots: 21 - 2 octets. */
    static const char stored[] = "..a\r\nplain\r\n..\r\nb.c\r\n";
    h_connect();
    h_msg("a@x.example", RCPTS("b@y.example"), stored, strlen(stored), SMTPC_STORED_DATA);
    H.msg.unstuffed_offered = true;
    H.msg.unstuffed_len = strlen(stored) - 2;
    PLAY(EHLO_CHUNK, "M:", "C: MAIL FROM:<a@x.example>", "C: RCPT TO:<b@y.example>",
         "C: BDAT 19 LAST", "W: .a\r\nplain\r\n.\r\nb.c\r\n", "S: 250 ok\r\n250 ok\r\n250 2.0.0 ok\r\n",
         "I:");
    cr_assert_eq(H.c.txn.body_mode, SMTPC_BODY_UNSTUFF);
    expect_result(0, SMTPC_DELIVERED, 250, "2.0.0");
}

Test(smtp_client, stuffed_data_form_goes_by_data_without_the_offer_or_without_chunking)
{
    static const char stored[] = "..a\r\nplain\r\n";
    h_connect();
    h_msg("a@x.example", RCPTS("b@y.example"), stored, strlen(stored), SMTPC_STORED_DATA);
    PLAY(EHLO_CHUNK, "M:", "C: MAIL FROM:<a@x.example>", "C: RCPT TO:<b@y.example>", "C: DATA",
         "S: 250 ok\r\n250 ok\r\n354 go\r\n", "W: " "..a\r\nplain\r\n", "C: .",
         "S: 250 ok\r\n", "I:");
    cr_assert_eq(H.c.txn.body_mode, SMTPC_BODY_VERBATIM);

    h_connect();
    h_msg("a@x.example", RCPTS("b@y.example"), stored, strlen(stored), SMTPC_STORED_DATA);
    H.msg.unstuffed_offered = true;
    H.msg.unstuffed_len = strlen(stored) - 1;
    PLAY(EHLO_PIPE, "M:", "C: MAIL FROM:<a@x.example> SIZE=12", "C: RCPT TO:<b@y.example>",
         "C: DATA", "S: 250 ok\r\n250 ok\r\n354 go\r\n", "W: " "..a\r\nplain\r\n", "C: .",
         "S: 250 ok\r\n", "I:");
    cr_assert_eq(H.c.txn.body_mode, SMTPC_BODY_VERBATIM);
}

Test(smtp_client, replies_while_the_pipelined_chunk_is_still_going_out_are_taken)
{
    /* A server may answer MAIL and RCPT before it has read the chunk. */
    h_connect();
    H.hold_body = true;
    h_msg("a@x.example", RCPTS("b@y.example"), BODY, strlen(BODY),
          SMTPC_STORED_DATA_NO_DOT_LINES);
    PLAY(EHLO_CHUNK, "M:", "C: MAIL FROM:<a@x.example>", "C: RCPT TO:<b@y.example>",
         "C: BDAT 21 LAST", "S: 250 ok\r\n250 ok\r\n");
    cr_assert_eq(H.c.state, SMTPC_ST_DOT);
    cr_assert_not(H.closed);
    /* The final reply's timer starts once the chunk is out. */
    H.now += 1000;
    PLAY("B:", "W: " BODY);
    cr_assert_eq(smtp_client_deadline(&H.c), H.now + H.cfg.smtp_data_done_timeout_ms);
    PLAY("S: 250 2.0.0 ok\r\n", "I:");
    expect_result(0, SMTPC_DELIVERED, 250, "2.0.0");
}

Test(smtp_client, bdat_reply_before_the_chunk_is_out_is_a_protocol_error)
{
    h_connect();
    H.hold_body = true;
    h_msg("a@x.example", RCPTS("b@y.example"), BODY, strlen(BODY), SMTPC_STORED_RAW);
    PLAY(EHLO_CHUNK, "M:", "C: MAIL FROM:<a@x.example>", "C: RCPT TO:<b@y.example>",
         "C: BDAT 21 LAST", "S: 250 ok\r\n250 ok\r\n250 2.0.0 early\r\n", "X:");
    expect_result(0, SMTPC_DEFERRED, 0, "4.5.0");
    cr_assert_not(H.c.txn.body_streaming, "io/ is told to stop sending the body");
}

Test(smtp_client, raw_body_to_a_peer_without_chunking_is_dot_stuffed_for_data)
{
    /* RELIABILITY rows 3 and 4: BDAT content with "\r\n.\r\n" is data. */
    h_connect();
    const char raw[] = ".start\r\nhello\r\n.\r\n..\r\nno end";
    h_msg("a@x.example", RCPTS("b@y.example"), raw, strlen(raw), SMTPC_STORED_RAW);
    PLAY(EHLO_PIPE, "M:", "C: MAIL FROM:<a@x.example> SIZE=28", "C: RCPT TO:<b@y.example>",
         "C: DATA", "S: 250 ok\r\n250 ok\r\n354 go\r\n",
         "W: ..start\r\nhello\r\n..\r\n...\r\nno end\r\n", "C: .", "S: 250 ok\r\n", "I:");
    cr_assert_eq(H.c.txn.body_mode, SMTPC_BODY_STUFF);
    expect_result(0, SMTPC_DELIVERED, 250, "2.0.0");
}

Test(smtp_client, stored_data_form_uses_data_even_with_chunking)
{
    h_connect();
    const char stored[] = "..dot\r\nx\r\n";
    h_msg("a@x.example", RCPTS("b@y.example"), stored, strlen(stored), SMTPC_STORED_DATA);
    PLAY(EHLO_CHUNK, "M:", "C: MAIL FROM:<a@x.example>", "C: RCPT TO:<b@y.example>",
         "C: DATA", "S: 250 ok\r\n250 ok\r\n354 go\r\n", "W: ..dot\r\nx\r\n", "C: .",
         "S: 250 ok\r\n", "I:");
    cr_assert_eq(H.c.txn.body_mode, SMTPC_BODY_VERBATIM);
}

Test(smtp_client, empty_bodies_in_both_forms)
{
    h_connect();
    h_msg("a@x.example", RCPTS("b@y.example"), "", 0, SMTPC_STORED_RAW);
    PLAY(EHLO_PLAIN, "M:", "C: MAIL FROM:<a@x.example> SIZE=0", "S: 250 ok\r\n",
         "C: RCPT TO:<b@y.example>", "S: 250 ok\r\n", "C: DATA", "S: 354 go\r\n", "C: .",
         "S: 250 ok\r\n", "I:");
    h_msg("a@x.example", RCPTS("b@y.example"), "", 0, SMTPC_STORED_DATA);
    PLAY("M:", "C: MAIL FROM:<a@x.example> SIZE=0", "S: 250 ok\r\n",
         "C: RCPT TO:<b@y.example>", "S: 250 ok\r\n", "C: DATA", "S: 354 go\r\n", "C: .",
         "S: 250 ok\r\n", "I:");
    cr_assert_eq(H.body_sends, 2);
}

Test(smtp_client, failed_bdat_is_followed_by_rset)
{
    h_connect();
    h_msg("a@x.example", RCPTS("b@y.example"), "abc\r\n", 5, SMTPC_STORED_RAW);
    PLAY(EHLO_CHUNK, "M:", "C: MAIL FROM:<a@x.example>", "C: RCPT TO:<b@y.example>",
         "C: BDAT 5 LAST", "W: abc\r\n", "S: 250 ok\r\n250 ok\r\n552 5.3.4 too big\r\n",
         "C: RSET", "S: 250 ok\r\n", "I:");
    expect_result(0, SMTPC_FAILED, 552, "5.3.4");
}

Test(smtp_client, all_rcpts_rejected_with_pipelined_bdat_takes_its_refusal_then_rset)
{
    /* The chunk went with the group; the server refuses the BDAT, and each
     * recipient keeps its own RCPT reply. */
    h_connect();
    h_msg("a@x.example", RCPTS("b@y.example"), "abc\r\n", 5, SMTPC_STORED_RAW);
    PLAY(EHLO_CHUNK, "M:", "C: MAIL FROM:<a@x.example>", "C: RCPT TO:<b@y.example>",
         "C: BDAT 5 LAST", "W: abc\r\n",
         "S: 250 ok\r\n550 5.1.1 no\r\n554 5.5.1 no valid recipients\r\n", "C: RSET",
         "S: 250 ok\r\n", "I:");
    expect_result(0, SMTPC_FAILED, 550, "5.1.1");
}

Test(smtp_client, mail_refused_with_pipelined_bdat_consumes_every_reply)
{
    h_connect();
    h_msg("a@x.example", RCPTS("b@y.example", "c@y.example"), "abc\r\n", 5, SMTPC_STORED_RAW);
    PLAY(EHLO_CHUNK, "M:", "C: MAIL FROM:<a@x.example>", "C: RCPT TO:<b@y.example>",
         "C: RCPT TO:<c@y.example>", "C: BDAT 5 LAST", "W: abc\r\n",
         "S: 451 4.3.0 try later\r\n503 5.5.1 no MAIL\r\n503 5.5.1 no MAIL\r\n"
         "503 5.5.1 no MAIL\r\n",
         "C: RSET", "S: 250 ok\r\n", "I:");
    expect_result(0, SMTPC_DEFERRED, 451, "4.3.0");
    expect_result(1, SMTPC_DEFERRED, 451, "4.3.0");
}

Test(smtp_client, all_rcpts_rejected_with_bdat_without_pipelining_sends_no_chunk)
{
    h_connect();
    h_msg("a@x.example", RCPTS("b@y.example"), "abc\r\n", 5, SMTPC_STORED_RAW);
    PLAY(EHLO_CHUNK_ONLY, "M:", "C: MAIL FROM:<a@x.example>", "S: 250 ok\r\n",
         "C: RCPT TO:<b@y.example>", "S: 550 5.1.1 no\r\n", "C: RSET", "S: 250 ok\r\n", "I:");
    cr_assert_eq(H.body_sends, 0);
}

/* --- never downgrade silently (row 28) ------------------------------------ */

Test(smtp_client, smtputf8_message_to_a_peer_without_it_fails_without_mail)
{
    h_connect();
    h_msg("a@x.example", RCPTS("b@y.example", "c@y.example"), BODY, strlen(BODY),
          SMTPC_STORED_DATA);
    H.msg.needs_smtputf8 = true;
    PLAY(EHLO_PLAIN, "M:", "I:");
    cr_assert_eq(H.results_seen, 1);
    expect_result(0, SMTPC_FAILED, 0, "5.6.7");
    expect_result(1, SMTPC_FAILED, 0, "5.6.7");
    cr_assert(smtp_client_idle(&H.c), "the connection stays usable");
}

Test(smtp_client, non_ascii_address_needs_smtputf8_even_when_not_flagged)
{
    h_connect();
    h_msg("a@x.example", RCPTS("j\xc3\xb6rg@y.example"), BODY, strlen(BODY),
          SMTPC_STORED_DATA);
    PLAY(EHLO_PLAIN, "M:", "I:");
    expect_result(0, SMTPC_FAILED, 0, "5.6.7");
}

Test(smtp_client, smtputf8_message_to_a_peer_with_it_says_so_in_mail)
{
    h_connect();
    h_msg("a@x.example", RCPTS("j\xc3\xb6rg@y.example"), BODY, strlen(BODY),
          SMTPC_STORED_DATA);
    H.msg.body_8bit = true;
    PLAY(EHLO_PIPE, "M:", "C: MAIL FROM:<a@x.example> SIZE=21 BODY=8BITMIME SMTPUTF8",
         "C: RCPT TO:<j\xc3\xb6rg@y.example>", "C: DATA",
         "S: 250 ok\r\n250 ok\r\n354 go\r\n", "W: " BODY, "C: .", "S: 250 ok\r\n", "I:");
    expect_result(0, SMTPC_DELIVERED, 250, "2.0.0");
}

Test(smtp_client, eight_bit_body_to_a_peer_without_8bitmime_fails_5_6_3)
{
    h_connect();
    h_msg("a@x.example", RCPTS("b@y.example"), BODY, strlen(BODY), SMTPC_STORED_DATA);
    H.msg.body_8bit = true;
    PLAY(EHLO_PLAIN, "M:", "I:");
    expect_result(0, SMTPC_FAILED, 0, "5.6.3");
}

Test(smtp_client, message_over_the_peer_size_fails_5_3_4_without_sending)
{
    h_connect();
    h_msg("a@x.example", RCPTS("b@y.example"), BODY, strlen(BODY), SMTPC_STORED_DATA);
    H.msg.size = 100001;
    PLAY(EHLO_PLAIN, "M:", "I:");
    expect_result(0, SMTPC_FAILED, 0, "5.3.4");
    cr_assert(strstr(H.res[0].reply.text, "100001") != NULL, "%s", H.res[0].reply.text);
    /* Exactly the limit is fine. */
    H.msg.size = 100000;
    PLAY("M:", "C: MAIL FROM:<a@x.example> SIZE=100000");
}

Test(smtp_client, size_zero_means_no_limit)
{
    h_connect();
    h_msg("a@x.example", RCPTS("b@y.example"), BODY, strlen(BODY), SMTPC_STORED_DATA);
    H.msg.size = UINT64_C(1) << 40;
    PLAY(GREET, "S: 250-mx\r\n250 SIZE 0\r\n", "I:", "M:",
         "C: MAIL FROM:<a@x.example> SIZE=1099511627776");
}

Test(smtp_client, addresses_that_could_inject_commands_are_never_sent)
{
    h_connect();
    h_msg("a@x.example", RCPTS("b@y.example>\r\nRSET", "c@y.example", "d\x01@y.example"),
          BODY, strlen(BODY), SMTPC_STORED_DATA);
    PLAY(EHLO_PLAIN, "M:", "C: MAIL FROM:<a@x.example> SIZE=21", "S: 250 ok\r\n",
         "C: RCPT TO:<c@y.example>", "S: 250 ok\r\n", "C: DATA", "S: 354 go\r\n", "W: " BODY,
         "C: .", "S: 250 ok\r\n", "I:");
    expect_result(0, SMTPC_FAILED, 0, "5.1.3");
    expect_result(1, SMTPC_DELIVERED, 250, "2.0.0");
    expect_result(2, SMTPC_FAILED, 0, "5.1.3");

    h_msg("a@x.example>\r\nDATA", RCPTS("c@y.example"), BODY, strlen(BODY),
          SMTPC_STORED_DATA);
    PLAY("M:", "I:");
    expect_result(0, SMTPC_FAILED, 0, "5.1.7");
}

Test(smtp_client, recipients_past_the_transaction_limit_are_deferred_unsent)
{
    H.cfg.max_rcpt_per_transaction = 2;
    h_connect();
    h_msg("a@x.example", RCPTS("b@y.example", "c@y.example", "d@y.example"), BODY,
          strlen(BODY), SMTPC_STORED_DATA);
    PLAY(EHLO_PIPE, "M:", "C: MAIL FROM:<a@x.example> SIZE=21", "C: RCPT TO:<b@y.example>",
         "C: RCPT TO:<c@y.example>", "C: DATA", "S: 250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n",
         "W: " BODY, "C: .", "S: 250 ok\r\n", "I:");
    expect_result(2, SMTPC_DEFERRED, 0, "4.5.3");
}

Test(smtp_client, message_without_recipients_ends_at_once)
{
    h_connect();
    h_msg("a@x.example", (const char *const[]){ NULL }, BODY, strlen(BODY),
          SMTPC_STORED_DATA);
    PLAY(EHLO_PIPE, "M:", "I:");
    cr_assert_eq(H.results_seen, 1);
    cr_assert_null(smtp_client_result(&H.c, 0));
}

Test(smtp_client, send_when_not_idle_does_nothing)
{
    h_connect();
    h_msg("a@x.example", RCPTS("b@y.example"), BODY, strlen(BODY), SMTPC_STORED_DATA);
    smtp_client_send(&H.c, &H.msg, H.now);   /* before the greeting */
    h_collect();
    expect_nothing_sent();
    cr_assert_eq(H.results_seen, 0);
    PLAY(EHLO_PLAIN, "M:", "C: MAIL FROM:<a@x.example> SIZE=21");
    smtp_client_send(&H.c, &H.msg, H.now);   /* mid-transaction */
    smtp_client_quit(&H.c, H.now);
    h_collect();
    expect_nothing_sent();
}

/* --- replies: enhanced codes and text ---------------------------------------- */

struct enh_case {
    char reply[64];
    bool offered;
    char enh[12];
};

ParameterizedTestParameters(smtp_client, takes_valid_enhanced_codes_of_the_reply_class)
{
    static struct enh_case cases[] = {
        { "550 5.1.1 no such user\r\n", true, "5.1.1" },
        { "550 5.1.1 no such user\r\n", false, "5.1.1" },  /* used even unadvertised */
        { "550 4.1.1 wrong class\r\n", false, "5.0.0" },
        { "550 4.1.1 wrong class\r\n", true, "5.0.0" },
        { "550 5.1 short\r\n", true, "5.0.0" },
        { "550 5.1.1234 long\r\n", true, "5.0.0" },
        { "550 5.1.1x glued\r\n", true, "5.0.0" },
        { "550 5.123.456\r\n", true, "5.123.456" },
        { "550\r\n", true, "5.0.0" },
        { "550-5.7.1 first\r\n550 5.7.1 second\r\n", true, "5.7.1" },
        { "452 4.5.3 too many\r\n", true, "4.5.3" },
    };
    return cr_make_param_array(struct enh_case, cases, sizeof cases / sizeof *cases);
}

ParameterizedTest(struct enh_case *k, smtp_client, takes_valid_enhanced_codes_of_the_reply_class)
{
    h_connect();
    h_msg("a@x.example", RCPTS("b@y.example"), BODY, strlen(BODY), SMTPC_STORED_DATA);
    if (k->offered)
        PLAY(GREET, "S: 250-mx\r\n250 ENHANCEDSTATUSCODES\r\n", "I:");
    else
        PLAY(GREET, "S: 250 mx\r\n", "I:");
    PLAY("M:", "C: MAIL FROM:<a@x.example>", "S: 250 ok\r\n", "C: RCPT TO:<b@y.example>");
    h_feed(k->reply, strlen(k->reply));
    cr_assert_not(H.c.failed, "%s", H.c.failure.text);
    PLAY("C: RSET", "S: 250 ok\r\n", "I:");
    cr_assert_str_eq(H.res[0].reply.enh, k->enh, "reply %s", k->reply);
}

Test(smtp_client, reply_text_is_printable_bounded_and_joined)
{
    h_connect();
    h_msg("a@x.example", RCPTS("b@y.example"), BODY, strlen(BODY), SMTPC_STORED_DATA);
    PLAY(EHLO_PLAIN, "M:", "C: MAIL FROM:<a@x.example> SIZE=21", "S: 250 ok\r\n",
         "C: RCPT TO:<b@y.example>");
    char reply[3000];
    int n = snprintf(reply, sizeof reply, "550-bad \x01\xff\x7f octets\r\n550 ");
    memset(reply + n, 'x', 1500);
    memcpy(reply + n + 1500, "\r\n", 3);
    h_feed(reply, strlen(reply));
    PLAY("C: RSET", "S: 250 ok\r\n", "I:");
    const char *t = H.res[0].reply.text;
    cr_assert_eq(strlen(t), SMTPC_TEXT_MAX - 1);
    cr_assert(strncmp(t, "550-bad ??? octets 550 xxx", 26) == 0, "%s", t);
    cr_assert_eq(H.c.last.code, 250);
}

Test(smtp_client, bare_lf_replies_are_accepted)
{
    h_connect();
    h_msg("a@x.example", RCPTS("b@y.example"), BODY, strlen(BODY), SMTPC_STORED_DATA);
    PLAY("S: 220 mx\n", "C: EHLO " HELO, "S: 250-mx\n250 PIPELINING\n", "I:", "M:",
         "C: MAIL FROM:<a@x.example>", "C: RCPT TO:<b@y.example>", "C: DATA",
         "S: 250 ok\n250 ok\r\n354 go\n", "W: " BODY, "C: .", "S: 250 ok\n", "I:");
    expect_result(0, SMTPC_DELIVERED, 250, "2.0.0");
}

/* --- bounded reply parser (row 14) ------------------------------------------ */

struct bad_reply_case {
    char reply[64];
};

ParameterizedTestParameters(smtp_client, malformed_replies_defer_as_protocol_errors)
{
    static struct bad_reply_case cases[] = {
        { "25\r\n" },
        { "2\r\n" },
        { "\r\n" },
        { "250-a\r\n550 b\r\n" },
        { "250-a\r\n251 b\r\n" },
        { "abc def\r\n" },
        { "2x0 ok\r\n" },
        { "250x ok\r\n" },
        { "650 ok\r\n" },
        { "150 ok\r\n" },
        { " 250 ok\r\n" },
        { "25\x00 ok\r\n" },
        { "354 go ahead\r\n" },   /* a 3xx to RCPT */
    };
    return cr_make_param_array(struct bad_reply_case, cases, sizeof cases / sizeof *cases);
}

ParameterizedTest(struct bad_reply_case *k, smtp_client, malformed_replies_defer_as_protocol_errors)
{
    h_connect();
    h_msg("a@x.example", RCPTS("b@y.example", "c@y.example"), BODY, strlen(BODY),
          SMTPC_STORED_DATA);
    PLAY(EHLO_PIPE, "M:", "C: MAIL FROM:<a@x.example> SIZE=21", "C: RCPT TO:<b@y.example>",
         "C: RCPT TO:<c@y.example>", "C: DATA", "S: 250 ok\r\n");
    size_t len = strlen(k->reply);
    if (k->reply[2] == '\0' && k->reply[3] == ' ')
        len = 8;   /* the case with a NUL inside */
    h_feed(k->reply, len);
    PLAY("X:");
    cr_assert(H.c.failed);
    cr_assert_eq(H.c.failure.code, 0);
    cr_assert_str_eq(H.c.failure.enh, "4.5.0");
    cr_assert(strncmp(H.c.failure.text, "protocol error after RCPT TO", 28) == 0, "%s",
              H.c.failure.text);
    expect_result(0, SMTPC_DEFERRED, 0, "4.5.0");
    expect_result(1, SMTPC_DEFERRED, 0, "4.5.0");
    cr_assert_eq(H.body_sends, 0);
}

Test(smtp_client, endless_multiline_reply_stops_at_100_lines)
{
    h_connect();
    PLAY("S: 220 mx\r\n", "C: EHLO " HELO);
    for (int i = 0; i < SMTPC_REPLY_LINES_MAX; i++) {
        h_feed("250-\r\n", 6);
        cr_assert_not(H.closed, "closed after %d lines", i + 1);
    }
    h_feed("250-\r\n", 6);
    PLAY("X:");
    cr_assert_str_eq(H.c.failure.enh, "4.5.0");
    cr_assert(strstr(H.c.failure.text, "too many lines") != NULL, "%s", H.c.failure.text);
    /* The peer keeps going: ignored, nothing grows. */
    for (int i = 0; i < 1000; i++)
        h_feed("250-\r\n", 6);
    expect_nothing_sent();
}

Test(smtp_client, two_megabyte_reply_line_fails_in_flat_memory)
{
    h_connect();
    h_msg("a@x.example", RCPTS("b@y.example"), BODY, strlen(BODY), SMTPC_STORED_DATA);
    PLAY(EHLO_PIPE, "M:", "C: MAIL FROM:<a@x.example> SIZE=21", "C: RCPT TO:<b@y.example>",
         "C: DATA");
    static char chunk[65536];
    memset(chunk, 'x', sizeof chunk);
    memcpy(chunk, "250 ", 4);
    h_feed(chunk, sizeof chunk);
    cr_assert(H.closed, "a 64 KiB line must already have failed");
    memset(chunk, 'x', 4);
    for (int i = 1; i < 32; i++)
        h_feed(chunk, sizeof chunk);
    h_feed("\r\n", 2);
    PLAY("X:");
    cr_assert(strstr(H.c.failure.text, "too long") != NULL, "%s", H.c.failure.text);
    expect_result(0, SMTPC_DEFERRED, 0, "4.5.0");
}

Test(smtp_client, line_of_exactly_the_limit_is_fine_one_more_is_not)
{
    h_connect();
    char line[SMTPC_LINE_MAX + 2];
    memset(line, 'a', sizeof line);
    memcpy(line, "220 ", 4);
    memcpy(line + SMTPC_LINE_MAX - 2, "\r\n", 2);
    h_feed(line, SMTPC_LINE_MAX);
    PLAY("C: EHLO " HELO);
    cr_assert_not(H.closed);
    memset(line, 'a', sizeof line);
    memcpy(line, "250 ", 4);
    memcpy(line + SMTPC_LINE_MAX - 1, "\r\n", 2);
    h_feed(line, SMTPC_LINE_MAX + 1);
    PLAY("X:");
}

Test(smtp_client, reply_ahead_of_its_command_is_a_protocol_error)
{
    /* Without PIPELINING only one command is out; a second reply in the
     * same read cannot belong to the RCPT we have not sent yet. That RCPT
     * is dropped unsent: the stream is out of sync. */
    h_connect();
    h_msg("a@x.example", RCPTS("b@y.example"), BODY, strlen(BODY), SMTPC_STORED_DATA);
    PLAY(EHLO_PLAIN, "M:", "C: MAIL FROM:<a@x.example> SIZE=21",
         "S: 250 ok\r\n250 ok\r\n", "X:");
    cr_assert(strstr(H.c.failure.text, "reply without a command") != NULL, "%s",
              H.c.failure.text);
    expect_result(0, SMTPC_DEFERRED, 0, "4.5.0");
}

Test(smtp_client, extra_reply_split_before_the_command_left_is_caught)
{
    h_connect();
    h_msg("a@x.example", RCPTS("b@y.example"), BODY, strlen(BODY), SMTPC_STORED_DATA);
    PLAY(EHLO_PLAIN, "M:", "C: MAIL FROM:<a@x.example> SIZE=21", "S: 250 ok\r\n2",
         "C: RCPT TO:<b@y.example>", "S: 50 ok\r\n", "X:");
}

Test(smtp_client, unsolicited_reply_while_idle_is_a_protocol_error)
{
    h_connect();
    PLAY(EHLO_PLAIN, "S: 250 surprise\r\n", "X:");
    cr_assert(H.c.failed);
    cr_assert_eq(H.results_seen, 0);
}

Test(smtp_client, idle_421_closes_quietly)
{
    h_connect();
    PLAY(EHLO_PLAIN, "S: 421 4.4.2 idle timeout\r\n", "X:");
    cr_assert_eq(H.c.failure.code, 421);
    cr_assert_eq(H.results_seen, 0);
}

Test(smtp_client, talk_during_the_body_is_a_protocol_error)
{
    h_connect();
    H.hold_body = true;
    h_msg("a@x.example", RCPTS("b@y.example"), BODY, strlen(BODY), SMTPC_STORED_DATA);
    PLAY(EHLO_PIPE, "M:", "C: MAIL FROM:<a@x.example> SIZE=21", "C: RCPT TO:<b@y.example>",
         "C: DATA", "S: 250 ok\r\n250 ok\r\n354 go\r\n", "S: 250 early\r\n", "X:");
    expect_result(0, SMTPC_DEFERRED, 0, "4.5.0");
}

Test(smtp_client, a_421_mid_transaction_defers_with_its_reply)
{
    h_connect();
    h_msg("a@x.example", RCPTS("b@y.example", "c@y.example"), BODY, strlen(BODY),
          SMTPC_STORED_DATA);
    PLAY(EHLO_PIPE, "M:", "C: MAIL FROM:<a@x.example> SIZE=21", "C: RCPT TO:<b@y.example>",
         "C: RCPT TO:<c@y.example>", "C: DATA",
         "S: 250 ok\r\n550 5.1.1 no\r\n421 4.3.2 shutting down\r\n", "X:");
    expect_result(0, SMTPC_FAILED, 550, "5.1.1");
    expect_result(1, SMTPC_DEFERRED, 421, "4.3.2");
    cr_assert_eq(H.c.failure.code, 421);
}

Test(smtp_client, pipelined_replies_split_at_every_byte_boundary)
{
    const char replies[] = "250 2.1.0 ok\r\n250-2.1.5 one\r\n250 2.1.5 two\r\n"
                           "450 4.2.1 later\r\n354 go\r\n";
    const size_t n = strlen(replies);
    for (size_t cut = 0; cut <= n + 1; cut++) {
        h_teardown();
        h_setup();
        h_connect();
        h_msg("a@x.example", RCPTS("b@y.example", "c@y.example"), BODY, strlen(BODY),
              SMTPC_STORED_DATA);
        PLAY(EHLO_PIPE, "M:", "C: MAIL FROM:<a@x.example> SIZE=21",
             "C: RCPT TO:<b@y.example>", "C: RCPT TO:<c@y.example>", "C: DATA");
        if (cut <= n) {
            h_feed(replies, cut);
            h_feed(replies + cut, n - cut);
        } else {
            h_feed_pieces(replies, 1);   /* and one octet at a time */
        }
        PLAY("W: " BODY, "C: .");
        h_feed_pieces("250-2.0.0 queued\r\n250 2.0.0 as X\r\n", cut % 5 + 1);
        PLAY("I:");
        cr_assert_not(H.c.failed, "cut %zu: %s", cut, H.c.failure.text);
        expect_result(0, SMTPC_DELIVERED, 250, "2.0.0");
        expect_result(1, SMTPC_DEFERRED, 450, "4.2.1");
        cr_assert_str_eq(H.res[0].reply.text, "250-2.0.0 queued 250 2.0.0 as X");
    }
}

/* --- timeouts (RFC 5321 §4.5.3.2, row 47) ----------------------------------- */

Test(smtp_client, no_banner_times_out)
{
    h_connect();
    cr_assert_eq(smtp_client_deadline(&H.c), T0 + H.cfg.smtp_helo_timeout_ms);
    PLAY("T: 299999");
    cr_assert_not(H.closed);
    PLAY("T: 1", "X:");
    cr_assert(H.c.failed);
    cr_assert_str_eq(H.c.failure.enh, "4.4.2");
    cr_assert_str_eq(H.c.failure.text, "conversation timed out while receiving the initial greeting");
    cr_assert_eq(H.c.fail_state, SMTPC_ST_BANNER);
}

Test(smtp_client, partial_lines_do_not_extend_a_deadline)
{
    h_connect();
    for (int i = 0; i < 10; i++) {
        H.now += 29000;
        h_feed("2", 1);
        smtp_client_tick(&H.c, H.now);
        h_collect();
    }
    PLAY("T: 10000", "X:");
}

enum stage { ST_EHLO, ST_MAIL, ST_RCPT, ST_DATA, ST_BODY, ST_DOT, ST_RSET, ST_QUIT };

struct timeout_case {
    int stage;
    int pipelined;
    char context[48];
};

ParameterizedTestParameters(smtp_client, every_stage_times_out_and_defers)
{
    static struct timeout_case cases[] = {
        { ST_EHLO, 0, "after EHLO" },
        { ST_MAIL, 0, "after MAIL FROM" },
        { ST_RCPT, 0, "after RCPT TO" },
        { ST_RCPT, 1, "after RCPT TO" },
        { ST_DATA, 0, "after DATA" },
        { ST_DATA, 1, "after DATA" },
        { ST_BODY, 1, "while sending the message body" },
        { ST_DOT, 0, "after end of data" },
        { ST_DOT, 1, "after end of data" },
        { ST_RSET, 0, "after RSET" },
        { ST_QUIT, 0, "" },
    };
    return cr_make_param_array(struct timeout_case, cases, sizeof cases / sizeof *cases);
}

ParameterizedTest(struct timeout_case *k, smtp_client, every_stage_times_out_and_defers)
{
    h_connect();
    H.hold_body = (k->stage == ST_BODY);
    h_msg("a@x.example", RCPTS("b@y.example"), BODY, strlen(BODY), SMTPC_STORED_DATA);
    uint64_t tmo = 0;
    PLAY(GREET);
    if (k->stage == ST_EHLO) {
        tmo = H.cfg.smtp_helo_timeout_ms;
    } else {
        if (k->pipelined)
            PLAY("S: 250-mx\r\n250 PIPELINING\r\n", "I:", "M:", "C: MAIL FROM:<a@x.example>",
                 "C: RCPT TO:<b@y.example>", "C: DATA");
        else
            PLAY("S: 250 mx\r\n", "I:", "M:", "C: MAIL FROM:<a@x.example>");
        switch (k->stage) {
        case ST_MAIL:
            tmo = H.cfg.smtp_mail_timeout_ms;
            break;
        case ST_RCPT:
            if (k->pipelined)
                PLAY("S: 250 ok\r\n");
            else
                PLAY("S: 250 ok\r\n", "C: RCPT TO:<b@y.example>");
            tmo = H.cfg.smtp_mail_timeout_ms;
            break;
        case ST_DATA:
            if (k->pipelined)
                PLAY("S: 250 ok\r\n250 ok\r\n");
            else
                PLAY("S: 250 ok\r\n", "C: RCPT TO:<b@y.example>", "S: 250 ok\r\n", "C: DATA");
            tmo = H.cfg.smtp_data_init_timeout_ms;
            break;
        case ST_BODY:
            PLAY("S: 250 ok\r\n250 ok\r\n354 go\r\n");
            cr_assert(H.body_waiting);
            tmo = H.cfg.smtp_data_xfer_timeout_ms;
            break;
        case ST_DOT:
            /* Row 47: stall after our final dot. */
            if (k->pipelined)
                PLAY("S: 250 ok\r\n250 ok\r\n354 go\r\n", "W: " BODY, "C: .");
            else
                PLAY("S: 250 ok\r\n", "C: RCPT TO:<b@y.example>", "S: 250 ok\r\n", "C: DATA",
                     "S: 354 go\r\n", "W: " BODY, "C: .");
            tmo = H.cfg.smtp_data_done_timeout_ms;
            break;
        case ST_RSET:
            PLAY("S: 250 ok\r\n", "C: RCPT TO:<b@y.example>", "S: 550 no\r\n", "C: RSET");
            tmo = H.cfg.smtp_mail_timeout_ms;
            break;
        case ST_QUIT:
            PLAY("S: 250 ok\r\n", "C: RCPT TO:<b@y.example>", "S: 550 no\r\n", "C: RSET",
                 "S: 250 ok\r\n", "I:", "Q:", "C: QUIT");
            tmo = H.cfg.smtp_mail_timeout_ms;
            break;
        default:
            break;
        }
    }
    cr_assert_eq(smtp_client_deadline(&H.c), H.now + tmo, "stage %d", k->stage);
    PLAY("T: 1");
    cr_assert_not(H.closed);
    h_tick_to(H.now - 1 + tmo);
    PLAY("X:");
    if (k->stage == ST_QUIT) {
        cr_assert_not(H.c.failed, "a silent QUIT is no failure");
    } else {
        char want[96];
        snprintf(want, sizeof want, "conversation timed out %s", k->context);
        cr_assert(H.c.failed);
        cr_assert_str_eq(H.c.failure.text, want);
        cr_assert_str_eq(H.c.failure.enh, "4.4.2");
    }
    if (k->stage != ST_EHLO && k->stage != ST_RSET && k->stage != ST_QUIT) {
        cr_assert_eq(H.results_seen, 1);
        expect_result(0, SMTPC_DEFERRED, 0, "4.4.2");
    }
}

Test(smtp_client, body_progress_restarts_the_data_block_timer)
{
    h_connect();
    H.hold_body = true;
    h_msg("a@x.example", RCPTS("b@y.example"), BODY, strlen(BODY), SMTPC_STORED_DATA);
    PLAY(EHLO_PIPE, "M:", "C: MAIL FROM:<a@x.example> SIZE=21", "C: RCPT TO:<b@y.example>",
         "C: DATA", "S: 250 ok\r\n250 ok\r\n354 go\r\n");
    for (int i = 0; i < 5; i++) {
        H.now += H.cfg.smtp_data_xfer_timeout_ms - 1;
        smtp_client_body_progress(&H.c, H.now);
        smtp_client_tick(&H.c, H.now);
        h_collect();
        cr_assert_not(H.closed);
    }
    PLAY("B:", "W: " BODY, "C: .");
    cr_assert_eq(smtp_client_deadline(&H.c), H.now + H.cfg.smtp_data_done_timeout_ms);
    PLAY("S: 250 ok\r\n", "I:");
}

/* --- the peer goes away ------------------------------------------------------- */

Test(smtp_client, close_before_the_final_reply_defers)
{
    /* Row 47/50: the peer may have the message; deferred, duplicate risk
     * accepted. */
    h_connect();
    h_msg("a@x.example", RCPTS("b@y.example", "c@y.example"), BODY, strlen(BODY),
          SMTPC_STORED_DATA);
    PLAY(EHLO_PIPE, "M:", "C: MAIL FROM:<a@x.example> SIZE=21", "C: RCPT TO:<b@y.example>",
         "C: RCPT TO:<c@y.example>", "C: DATA", "S: 250 ok\r\n250 ok\r\n550 5.1.1 no\r\n354 go\r\n",
         "W: " BODY, "C: .", "E:", "X:");
    expect_result(0, SMTPC_DEFERRED, 0, "4.4.2");
    expect_result(1, SMTPC_FAILED, 550, "5.1.1");
    cr_assert_str_eq(H.res[0].reply.text, "lost connection after end of data");
}

Test(smtp_client, close_mid_rcpt_defers_the_rest)
{
    h_connect();
    h_msg("a@x.example", RCPTS("b@y.example", "c@y.example"), BODY, strlen(BODY),
          SMTPC_STORED_DATA);
    PLAY(EHLO_PLAIN, "M:", "C: MAIL FROM:<a@x.example> SIZE=21", "S: 250 ok\r\n",
         "C: RCPT TO:<b@y.example>", "S: 550 no\r\n", "C: RCPT TO:<c@y.example>", "E:", "X:");
    expect_result(0, SMTPC_FAILED, 550, "5.0.0");
    expect_result(1, SMTPC_DEFERRED, 0, "4.4.2");
}

Test(smtp_client, close_while_idle_or_after_quit_is_quiet)
{
    h_connect();
    PLAY(EHLO_PLAIN, "Q:", "C: QUIT", "E:", "X:");
    cr_assert_not(H.c.failed);
    cr_assert_eq(H.results_seen, 0);
    /* Events after the end change nothing. */
    PLAY("S: 250 late\r\n", "T: 999999999", "E:");
}

/* --- STARTTLS hook (row 8) ---------------------------------------------------- */

Test(smtp_client, starttls_discards_everything_buffered_after_its_220)
{
    h_connect();
    smtp_client_set_starttls(&H.c, true);
    PLAY(GREET, "S: 250-mx\r\n250-CHUNKING\r\n250-PIPELINING\r\n250 STARTTLS\r\n",
         "C: STARTTLS", "S: 220 2.0.0 go ahead\r\n250-injected\r\n250 CHUNKING\r\n");
    cr_assert(H.tls_started);
    cr_assert_eq(H.c.state, SMTPC_ST_TLS);
    cr_assert_gt(H.c.discarded, 0);
    cr_assert_eq(H.c.parser.len, 0);
    cr_assert_not(H.c.failed);
    /* More plaintext before the handshake completes: dropped too. */
    PLAY("S: 250 more\r\n");
    cr_assert_not(H.c.failed);
    /* RFC 3207 §4.2: after the handshake, forget and EHLO again. */
    smtp_client_tls_done(&H.c, 0, NULL, H.now);
    h_collect();
    cr_assert_not(H.c.caps.chunking, "pre-TLS extensions are forgotten");
    PLAY("C: EHLO " HELO, "S: 250-mx\r\n250 STARTTLS\r\n", "I:");
    cr_assert(H.c.tls_active);
    cr_assert_not(H.c.caps.chunking);
}

Test(smtp_client, failed_handshake_fails_the_connection)
{
    h_connect();
    smtp_client_set_starttls(&H.c, true);
    PLAY(GREET, "S: 250-mx\r\n250 STARTTLS\r\n", "C: STARTTLS", "S: 220 go\r\n");
    smtp_client_tls_done(&H.c, -1, "bad certificate", H.now);
    h_collect();
    PLAY("X:");
    cr_assert_str_eq(H.c.failure.enh, "4.7.5");
    cr_assert_not_null(strstr(H.c.failure.text, "bad certificate"), "%s", H.c.failure.text);
}

Test(smtp_client, required_tls_not_offered_defers_after_quit)
{
    h_connect();
    smtp_client_require_tls(&H.c, true);
    PLAY(GREET, "S: 250-mx\r\n250 PIPELINING\r\n", "C: QUIT", "S: 221 bye\r\n", "X:");
    cr_assert(H.c.failed);
    cr_assert_str_eq(H.c.failure.enh, "4.7.4");
    cr_assert_not_null(strstr(H.c.failure.text, "TLS is required"), "%s", H.c.failure.text);
}

Test(smtp_client, required_tls_refused_defers_with_the_reply)
{
    h_connect();
    smtp_client_require_tls(&H.c, true);
    PLAY(GREET, "S: 250-mx\r\n250 STARTTLS\r\n", "C: STARTTLS", "S: 454 4.7.0 no tls\r\n",
         "C: QUIT", "S: 221 bye\r\n", "X:");
    cr_assert(H.c.failed);
    cr_assert_eq(H.c.failure.code, 454);
}

Test(smtp_client, required_tls_and_helo_only_host_defers)
{
    h_connect();
    smtp_client_require_tls(&H.c, true);
    PLAY(GREET, "S: 502 no ehlo\r\n", "C: HELO " HELO, "S: 250 mx\r\n", "C: QUIT",
         "S: 221 bye\r\n", "X:");
    cr_assert_str_eq(H.c.failure.enh, "4.7.4");
}

Test(smtp_client, refused_starttls_continues_in_plaintext)
{
    h_connect();
    smtp_client_set_starttls(&H.c, true);
    PLAY(GREET, "S: 250-mx\r\n250 STARTTLS\r\n", "C: STARTTLS", "S: 454 4.7.0 no tls\r\n", "I:");
    cr_assert(H.c.tls_refused);
    cr_assert_not(H.c.tls_active);
}

Test(smtp_client, starttls_not_offered_is_not_sent)
{
    h_connect();
    smtp_client_set_starttls(&H.c, true);
    PLAY(EHLO_PLAIN);
}

/* --- AUTH to a smarthost (RFC 4954) ------------------------------------------- */

/* base64("\0relay\0s3cret") and base64("relay"), base64("s3cret") */
#define PLAIN_RELAY "AHJlbGF5AHMzY3JldA=="
#define B64_USER "cmVsYXk="
#define B64_PASS "czNjcmV0"

Test(smtp_client, auth_plain_goes_with_an_initial_response_after_starttls)
{
    h_connect();
    smtp_client_set_starttls(&H.c, true);
    smtp_client_set_auth(&H.c, "relay", "s3cret");
    PLAY(GREET, "S: 250-mx\r\n250-AUTH PLAIN LOGIN\r\n250 STARTTLS\r\n", "C: STARTTLS",
         "S: 220 go\r\n");
    smtp_client_tls_done(&H.c, 0, NULL, H.now);
    h_collect();
    PLAY("C: EHLO " HELO, "S: 250-mx\r\n250 AUTH LOGIN PLAIN\r\n", "C: AUTH PLAIN " PLAIN_RELAY,
         "S: 235 2.7.0 Authentication successful\r\n", "I:");
    cr_assert(H.c.authenticated);
}

Test(smtp_client, auth_login_answers_both_challenges)
{
    h_connect();
    smtp_client_set_auth(&H.c, "relay", "s3cret");
    PLAY(GREET, "S: 250-mx\r\n250 AUTH LOGIN CRAM-MD5\r\n", "C: AUTH LOGIN",
         "S: 334 VXNlcm5hbWU6\r\n", "C: " B64_USER, "S: 334 UGFzc3dvcmQ6\r\n", "C: " B64_PASS,
         "S: 235 ok\r\n", "I:");
    cr_assert(H.c.authenticated);
}

Test(smtp_client, auth_refused_defers_the_connection_after_quit)
{
    h_connect();
    smtp_client_set_auth(&H.c, "relay", "wrong");
    PLAY(GREET, "S: 250-mx\r\n250 AUTH PLAIN\r\n", "C: AUTH PLAIN AHJlbGF5AHdyb25n",
         "S: 535 5.7.8 Authentication credentials invalid\r\n", "C: QUIT", "S: 221 bye\r\n",
         "X:");
    cr_assert(H.c.failed);
    cr_assert_eq(H.c.failure.code, 535);
    cr_assert_not(H.c.authenticated);
}

Test(smtp_client, a_third_login_challenge_is_a_protocol_error)
{
    h_connect();
    smtp_client_set_auth(&H.c, "relay", "s3cret");
    PLAY(GREET, "S: 250-mx\r\n250 AUTH LOGIN\r\n", "C: AUTH LOGIN", "S: 334 VXNlcm5hbWU6\r\n",
         "C: " B64_USER, "S: 334 UGFzc3dvcmQ6\r\n", "C: " B64_PASS, "S: 334 more?\r\n");
    cr_assert(H.c.failed);
    cr_assert_not(H.c.authenticated);
}

Test(smtp_client, no_usable_mechanism_sends_without_auth)
{
    h_connect();
    smtp_client_set_auth(&H.c, "relay", "s3cret");
    PLAY(GREET, "S: 250-mx\r\n250 AUTH CRAM-MD5\r\n", "I:");
    cr_assert_not(H.c.authenticated);
    cr_assert(H.c.caps.auth);
}

Test(smtp_client, state_names_and_contexts)
{
    cr_assert_str_eq(smtp_client_state_name(SMTPC_ST_DOT), "dot");
    cr_assert_str_eq(smtp_client_state_name((enum smtpc_state)99), "?");
    cr_assert_str_eq(smtp_client_state_context(SMTPC_ST_RCPT), "after RCPT TO");
    for (int s = SMTPC_ST_BANNER; s <= SMTPC_ST_CLOSED; s++)
        cr_assert_neq(smtp_client_state_name((enum smtpc_state)s), NULL);
}
