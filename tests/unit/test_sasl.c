/*
 * Tests for core/sasl: PLAIN (RFC 4616) and LOGIN exchanges as the session
 * drives them, RELIABILITY row 23 (broken base64, 4 NUL-separated fields,
 * 12 289-byte response, "*" cancel, the next AUTH starts fresh). Client lines
 * are guarded (guarded.h), so reading past len crashes the test. Cases hold
 * their bytes inline: Criterion re-executes the binary per parameter.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <stdio.h>
#include <string.h>

#include "base64.h"
#include "guarded.h"
#include "sasl.h"

static struct sasl_server s;
static char ch[SASL_CHALLENGE_SIZE];

static void
sasl_setup(void)
{
    sasl_server_init(&s);
    memset(ch, 'x', sizeof ch);
}

TestSuite(sasl, .init = sasl_setup);

static enum sasl_status
start(const char *args)
{
    size_t n = strlen(args);

    return sasl_server_start(&s, guarded(args, n), n, ch, sizeof ch);
}

static enum sasl_status
step(const char *line)
{
    size_t n = strlen(line);

    return sasl_server_step(&s, guarded(line, n), n, ch, sizeof ch);
}

/* "AUTH <mech> " + base64 of raw[0..n). */
static enum sasl_status
start_raw(const char *mech, const void *raw, size_t n)
{
    static char args[2048];
    int k = snprintf(args, sizeof args, "%s ", mech);

    cr_assert(base64_encode(raw, n, args + k, sizeof args - (size_t)k) > 0 || n == 0);
    return start(n == 0 ? strcat(args, "=") : args);
}

static enum sasl_status
step_raw(const void *raw, size_t n)
{
    static char line[2048];

    base64_encode(raw, n, line, sizeof line);
    return step(n == 0 ? "" : line);
}

/* True when every octet of p[0..n) is zero. */
static bool
all_zero(const void *p, size_t n)
{
    const unsigned char *u = p;

    for (size_t i = 0; i < n; i++)
        if (u[i] != 0)
            return false;
    return true;
}

#define ASSERT_WIPED() do {                                                  \
        cr_assert(all_zero(&s, sizeof s), "state not wiped");                \
        cr_assert_eq(s.step, SASL_STEP_IDLE);                                \
    } while (0)

#define ASSERT_CHECK(u, p) do {                                              \
        cr_assert_str_eq(s.user, u);                                         \
        cr_assert_eq(s.user_len, strlen(u));                                 \
        cr_assert_str_eq(s.pass, p);                                         \
        cr_assert_eq(s.pass_len, strlen(p));                                 \
    } while (0)

/* ---- mechanisms ---- */

Test(sasl, offers_plain_and_login)
{
    cr_assert_str_eq(sasl_mech_list(), "PLAIN LOGIN");
}

Test(sasl, mechanism_names_are_case_insensitive)
{
    cr_assert_eq(start("pLaIn"), SASL_CHALLENGE);
    cr_assert_eq(s.mech, SASL_MECH_PLAIN);
    cr_assert_eq(start("login"), SASL_CHALLENGE);
    cr_assert_eq(s.mech, SASL_MECH_LOGIN);
    cr_assert_eq(start("Login dGlt"), SASL_CHALLENGE);
    cr_assert_eq(s.step, SASL_STEP_LOGIN_PASS);
}

struct args_case {
    char args[32];
    enum sasl_status st;
};

ParameterizedTestParameters(sasl, rejects_bad_auth_arguments)
{
    static struct args_case cases[] = {
        { "CRAM-MD5", SASL_BAD_MECH },
        { "GSSAPI dGlt", SASL_BAD_MECH },
        { "PLAINX", SASL_BAD_MECH },
        { "PLAI", SASL_BAD_MECH },
        { "LOGIN-", SASL_BAD_MECH },
        { "PLAIN\tAHRpbQB4", SASL_BAD_MECH },
        { "", SASL_BAD_SYNTAX },
        { " PLAIN", SASL_BAD_SYNTAX },
        { "  ", SASL_BAD_SYNTAX },
        { "PLAIN  AHRpbQB4", SASL_BAD_SYNTAX },
        { "PLAIN AHRpbQB4 x", SASL_BAD_SYNTAX },
        { "PLAIN ==", SASL_BAD_SYNTAX },
    };
    return cr_make_param_array(struct args_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct args_case *c, sasl, rejects_bad_auth_arguments)
{
    cr_assert_eq(start(c->args), c->st, "\"%s\"", c->args);
    ASSERT_WIPED();
}

Test(sasl, unknown_mechanism_is_checked_before_the_response)
{
    cr_assert_eq(start("XOAUTH2 !!!!"), SASL_BAD_MECH);
}

Test(sasl, nul_inside_the_mechanism_name_is_no_match)
{
    cr_assert_eq(sasl_server_start(&s, guarded("PL\0IN", 5), 5, ch, sizeof ch), SASL_BAD_MECH);
    cr_assert_eq(sasl_server_start(&s, guarded("PLAIN\0", 6), 6, ch, sizeof ch),
                 SASL_BAD_MECH);
    cr_assert_eq(sasl_server_start(&s, guarded("PLAIN", 4), 4, ch, sizeof ch), SASL_BAD_MECH,
                 "never reads past len");
}

Test(sasl, trailing_spaces_after_the_mechanism_are_ignored)
{
    cr_assert_eq(start("PLAIN   "), SASL_CHALLENGE);
    cr_assert_str_eq(ch, "");
    cr_assert_eq(start("PLAIN AHRpbQB4  "), SASL_CHECK);
    ASSERT_CHECK("tim", "x");
}

/* ---- PLAIN ---- */

/* RFC 4616 §4, first example, as an initial response. */
Test(sasl, plain_rfc4616_example_with_initial_response)
{
    static const char msg[] = "\0tim\0tanstaaftanstaaf";

    cr_assert_eq(start_raw("PLAIN", msg, sizeof msg - 1), SASL_CHECK);
    ASSERT_CHECK("tim", "tanstaaftanstaaf");
    cr_assert_eq(s.mech, SASL_MECH_PLAIN);
    sasl_server_reset(&s);
    ASSERT_WIPED();
}

/* RFC 4616 §4, second example: Kurt acting as Ursel. We authorize no one
 * as anyone else. */
Test(sasl, plain_rfc4616_example_with_other_authzid_is_refused)
{
    static const char msg[] = "Ursel\0Kurt\0xipj3plmq";

    cr_assert_eq(start_raw("PLAIN", msg, sizeof msg - 1), SASL_BAD_CREDS_FORMAT);
    ASSERT_WIPED();
}

Test(sasl, plain_authzid_equal_to_authcid_is_accepted)
{
    static const char msg[] = "kurt\0kurt\0xipj3plmq";

    cr_assert_eq(start_raw("PLAIN", msg, sizeof msg - 1), SASL_CHECK);
    ASSERT_CHECK("kurt", "xipj3plmq");
}

Test(sasl, plain_without_initial_response_sends_an_empty_challenge)
{
    static const char msg[] = "\0tim\0tanstaaftanstaaf";

    cr_assert_eq(start("PLAIN"), SASL_CHALLENGE);
    cr_assert_str_eq(ch, "", "334 with empty text");
    cr_assert_eq(s.step, SASL_STEP_PLAIN_RESPONSE);
    cr_assert_eq(step_raw(msg, sizeof msg - 1), SASL_CHECK);
    ASSERT_CHECK("tim", "tanstaaftanstaaf");
}

Test(sasl, empty_initial_response_is_an_empty_message)
{
    /* "=" is a zero-length response: for PLAIN no fields at all. */
    cr_assert_eq(start("PLAIN ="), SASL_BAD_SYNTAX);
    ASSERT_WIPED();
    /* For LOGIN an empty user name. */
    cr_assert_eq(start("LOGIN ="), SASL_BAD_CREDS_FORMAT);
    ASSERT_WIPED();
}

Test(sasl, empty_line_answering_the_plain_challenge_is_malformed)
{
    cr_assert_eq(start("PLAIN"), SASL_CHALLENGE);
    cr_assert_eq(step(""), SASL_BAD_SYNTAX);
    ASSERT_WIPED();
}

struct plain_case {
    char name[40];
    char msg[48];
    size_t len;
    enum sasl_status st;
};

#define P(name, lit, st) { name, lit, sizeof lit - 1, st }

ParameterizedTestParameters(sasl, plain_rejects_bad_messages)
{
    static struct plain_case cases[] = {
        /* Row 23: one field more or less is malformed. */
        P("4 fields", "a\0tim\0pw\0x", SASL_BAD_SYNTAX),
        P("4 fields, empty 4th", "\0tim\0pw\0", SASL_BAD_SYNTAX),
        P("5 fields", "\0tim\0pw\0\0", SASL_BAD_SYNTAX),
        P("2 fields", "\0timpw", SASL_BAD_SYNTAX),
        P("2 fields, authzid", "tim\0pw", SASL_BAD_SYNTAX),
        P("1 field", "timpw", SASL_BAD_SYNTAX),
        P("NULs only", "\0\0", SASL_BAD_CREDS_FORMAT),
        P("empty authcid", "\0\0pw", SASL_BAD_CREDS_FORMAT),
        P("empty authcid, authzid", "tim\0\0pw", SASL_BAD_CREDS_FORMAT),
        P("empty passwd", "\0tim\0", SASL_BAD_CREDS_FORMAT),
        P("other authzid", "admin\0tim\0pw", SASL_BAD_CREDS_FORMAT),
        P("authzid prefix", "ti\0tim\0pw", SASL_BAD_CREDS_FORMAT),
        P("authzid longer", "timx\0tim\0pw", SASL_BAD_CREDS_FORMAT),
        P("authzid case", "Tim\0tim\0pw", SASL_BAD_CREDS_FORMAT),
        P("control in user", "\0ti\x01m\0pw", SASL_BAD_CREDS_FORMAT),
        P("CR LF in user", "\0tim\r\nRSET\0pw", SASL_BAD_CREDS_FORMAT),
        P("DEL in user", "\0tim\x7f\0pw", SASL_BAD_CREDS_FORMAT),
        P("C1 NEL in user", "\0t\xc2\x85m\0pw", SASL_BAD_CREDS_FORMAT),
        P("overlong UTF-8 user", "\0t\xc0\xafm\0pw", SASL_BAD_CREDS_FORMAT),
        P("surrogate user", "\0t\xed\xa0\x80m\0pw", SASL_BAD_CREDS_FORMAT),
        P("truncated UTF-8 user", "\0tim\xc3\0pw", SASL_BAD_CREDS_FORMAT),
        P("Latin-1 user", "\0j\xfcrgen\0pw", SASL_BAD_CREDS_FORMAT),
    };
    return cr_make_param_array(struct plain_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct plain_case *c, sasl, plain_rejects_bad_messages)
{
    cr_assert_eq(start_raw("PLAIN", c->msg, c->len), c->st, "%s", c->name);
    ASSERT_WIPED();
    /* The same message answering the empty challenge. */
    cr_assert_eq(start("PLAIN"), SASL_CHALLENGE);
    cr_assert_eq(step_raw(c->msg, c->len), c->st, "%s (after 334)", c->name);
    ASSERT_WIPED();
}

Test(sasl, plain_accepts_utf8_user_and_any_password_octets)
{
    static const char msg[] = "\0j\xc3\xbcrgen \xe2\x82\xac\0p\xff\x01 \r\n";

    cr_assert_eq(start_raw("PLAIN", msg, sizeof msg - 1), SASL_CHECK);
    ASSERT_CHECK("j\xc3\xbcrgen \xe2\x82\xac", "p\xff\x01 \r\n");
}

/* Builds authzid NUL authcid NUL passwd with fields of the given lengths. */
static size_t
plain_msg(char *m, size_t zlen, size_t clen, size_t plen)
{
    size_t n = 0;

    memset(m + n, 'u', zlen);
    n += zlen;
    m[n++] = '\0';
    memset(m + n, 'u', clen);
    n += clen;
    m[n++] = '\0';
    memset(m + n, 'p', plen);
    return n + plen;
}

Test(sasl, plain_fields_up_to_255_octets)
{
    static char m[1024];

    cr_assert_eq(start_raw("PLAIN", m, plain_msg(m, 255, 255, 255)), SASL_CHECK);
    cr_assert_eq(s.user_len, 255);
    cr_assert_eq(s.pass_len, 255);
    cr_assert_eq(strlen(s.user), 255);
    cr_assert_eq(strlen(s.pass), 255);
    cr_assert_eq(start_raw("PLAIN", m, plain_msg(m, 0, 256, 1)), SASL_BAD_SYNTAX);
    ASSERT_WIPED();
    cr_assert_eq(start_raw("PLAIN", m, plain_msg(m, 0, 1, 256)), SASL_BAD_SYNTAX);
    ASSERT_WIPED();
    cr_assert_eq(start_raw("PLAIN", m, plain_msg(m, 256, 1, 1)), SASL_BAD_SYNTAX);
    cr_assert_eq(start_raw("PLAIN", m, plain_msg(m, 256, 256, 256)), SASL_BAD_SYNTAX);
    cr_assert_eq(start_raw("PLAIN", m, plain_msg(m, 0, 600, 1)), SASL_BAD_SYNTAX);
}

/* ---- broken base64 and oversized responses ---- */

struct line_case {
    char line[32];
    size_t len;
};

#define L(lit) { lit, sizeof lit - 1 }

ParameterizedTestParameters(sasl, broken_base64_is_a_syntax_error)
{
    static struct line_case cases[] = {
        L("AHRpbQB4eA"),          /* no padding */
        L("AHRpbQB4eA="),         /* short padding */
        L("AHRpbQB4eA==\r"),      /* stray CR */
        L("AHRp bQB4"),           /* space inside */
        L(" AHRpbQB4"),
        L("AHRpbQB4\0"),
        L("AHRpbQ\0\0"),
        L("AHRpbQB4eB=="),        /* non-zero pad bits */
        L("AHRpbQ-4"),            /* URL-safe alphabet */
        L("!!!!"),
        L("="),                   /* "=" is only for initial responses */
        L("**"),
        L("* "),
    };
    return cr_make_param_array(struct line_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct line_case *c, sasl, broken_base64_is_a_syntax_error)
{
    cr_assert_eq(start("PLAIN"), SASL_CHALLENGE);
    cr_assert_eq(sasl_server_step(&s, guarded(c->line, c->len), c->len, ch, sizeof ch),
                 SASL_BAD_SYNTAX);
    ASSERT_WIPED();
    cr_assert_eq(start("LOGIN"), SASL_CHALLENGE);
    cr_assert_eq(sasl_server_step(&s, guarded(c->line, c->len), c->len, ch, sizeof ch),
                 SASL_BAD_SYNTAX);
    ASSERT_WIPED();
}

Test(sasl, broken_initial_response_is_a_syntax_error)
{
    cr_assert_eq(start("PLAIN AHRpbQB4eA"), SASL_BAD_SYNTAX);
    ASSERT_WIPED();
    cr_assert_eq(start("LOGIN dGlt!"), SASL_BAD_SYNTAX);
    ASSERT_WIPED();
}

/* Row 23: RFC 4954 §4 caps the AUTH line at 12 288 octets; one more, and
 * 12 288 octets of perfectly good base64, are refused in bounds. */
Test(sasl, oversized_responses_are_refused_in_bounds)
{
    static char big[12289 + 16];
    size_t n;

    memset(big, 'A', 12289);
    cr_assert_eq(start("PLAIN"), SASL_CHALLENGE);
    cr_assert_eq(sasl_server_step(&s, guarded(big, 12289), 12289, ch, sizeof ch),
                 SASL_BAD_SYNTAX);
    ASSERT_WIPED();
    cr_assert_eq(start("PLAIN"), SASL_CHALLENGE);
    cr_assert_eq(sasl_server_step(&s, guarded(big, 12288), 12288, ch, sizeof ch),
                 SASL_BAD_SYNTAX);
    ASSERT_WIPED();
    /* As an initial response: 12 284 octets of valid base64. */
    memcpy(big, "PLAIN ", 6);
    memset(big + 6, 'A', 12284);
    n = 6 + 12284;
    cr_assert_eq(sasl_server_start(&s, guarded(big, n), n, ch, sizeof ch), SASL_BAD_SYNTAX);
    ASSERT_WIPED();
    /* The longest acceptable PLAIN message is 767 octets, 1024 of base64;
     * 1028 no longer fit. */
    cr_assert_eq(start("LOGIN"), SASL_CHALLENGE);
    memset(big, 'A', 1028);
    cr_assert_eq(sasl_server_step(&s, guarded(big, 1028), 1028, ch, sizeof ch),
                 SASL_BAD_SYNTAX);
    ASSERT_WIPED();
}

/* ---- LOGIN ---- */

Test(sasl, login_asks_for_username_then_password)
{
    cr_assert_eq(start("LOGIN"), SASL_CHALLENGE);
    cr_assert_str_eq(ch, "VXNlcm5hbWU6");
    cr_assert_eq(s.mech, SASL_MECH_LOGIN);
    cr_assert_eq(step("dGlt"), SASL_CHALLENGE);
    cr_assert_str_eq(ch, "UGFzc3dvcmQ6");
    cr_assert_eq(step("dGFuc3RhYWZ0YW5zdGFhZg=="), SASL_CHECK);
    ASSERT_CHECK("tim", "tanstaaftanstaaf");
    sasl_server_reset(&s);
    ASSERT_WIPED();
}

Test(sasl, login_takes_the_username_as_initial_response)
{
    cr_assert_eq(start("LOGIN dGlt"), SASL_CHALLENGE);
    cr_assert_str_eq(ch, "UGFzc3dvcmQ6");
    cr_assert_eq(step("c2VjcmV0"), SASL_CHECK);
    ASSERT_CHECK("tim", "secret");
}

Test(sasl, login_refuses_empty_or_nul_fields)
{
    cr_assert_eq(start("LOGIN"), SASL_CHALLENGE);
    cr_assert_eq(step(""), SASL_BAD_CREDS_FORMAT, "empty user");
    ASSERT_WIPED();
    cr_assert_eq(start("LOGIN dGlt"), SASL_CHALLENGE);
    cr_assert_eq(step(""), SASL_BAD_CREDS_FORMAT, "empty password");
    ASSERT_WIPED();
    cr_assert_eq(start("LOGIN"), SASL_CHALLENGE);
    cr_assert_eq(step_raw("ti\0m", 4), SASL_BAD_CREDS_FORMAT, "NUL in user");
    ASSERT_WIPED();
    cr_assert_eq(start("LOGIN dGlt"), SASL_CHALLENGE);
    cr_assert_eq(step_raw("se\0cret", 7), SASL_BAD_CREDS_FORMAT, "NUL in password");
    ASSERT_WIPED();
    cr_assert_eq(start("LOGIN"), SASL_CHALLENGE);
    cr_assert_eq(step_raw("tim\r\n", 5), SASL_BAD_CREDS_FORMAT, "CRLF in user");
    ASSERT_WIPED();
}

Test(sasl, login_fields_up_to_255_octets)
{
    char f[300];

    memset(f, 'a', sizeof f);
    cr_assert_eq(start("LOGIN"), SASL_CHALLENGE);
    cr_assert_eq(step_raw(f, 255), SASL_CHALLENGE);
    cr_assert_eq(step_raw(f, 255), SASL_CHECK);
    cr_assert_eq(s.user_len, 255);
    cr_assert_eq(s.pass_len, 255);
    cr_assert_eq(start("LOGIN"), SASL_CHALLENGE);
    cr_assert_eq(step_raw(f, 256), SASL_BAD_SYNTAX);
    ASSERT_WIPED();
    cr_assert_eq(start("LOGIN"), SASL_CHALLENGE);
    cr_assert_eq(step_raw(f, 255), SASL_CHALLENGE);
    cr_assert_eq(step_raw(f, 256), SASL_BAD_SYNTAX);
    ASSERT_WIPED();
}

/* ---- cancel ---- */

Test(sasl, star_cancels_at_every_step)
{
    cr_assert_eq(start("PLAIN"), SASL_CHALLENGE);
    cr_assert_eq(step("*"), SASL_CANCELLED);
    ASSERT_WIPED();
    cr_assert_eq(start("LOGIN"), SASL_CHALLENGE);
    cr_assert_eq(step("*"), SASL_CANCELLED);
    ASSERT_WIPED();
    cr_assert_eq(start("LOGIN"), SASL_CHALLENGE);
    cr_assert_eq(step("dGlt"), SASL_CHALLENGE);
    cr_assert_eq(step("*"), SASL_CANCELLED);
    ASSERT_WIPED();
    cr_assert_eq(start("PLAIN *"), SASL_CANCELLED);
    ASSERT_WIPED();
}

/* ---- the next exchange starts fresh ---- */

Test(sasl, next_exchange_after_a_failure_starts_fresh)
{
    static const char msg[] = "\0bob\0builder";

    cr_assert_eq(start("LOGIN dGlt"), SASL_CHALLENGE);
    cr_assert_eq(step("bad!"), SASL_BAD_SYNTAX);
    ASSERT_WIPED();
    /* No exchange is in progress: a stray line is not a password. */
    cr_assert_eq(step("c2VjcmV0"), SASL_BAD_SYNTAX);
    ASSERT_WIPED();
    cr_assert_eq(start_raw("PLAIN", msg, sizeof msg - 1), SASL_CHECK);
    ASSERT_CHECK("bob", "builder");
}

Test(sasl, a_new_start_abandons_the_exchange_in_progress)
{
    cr_assert_eq(start("LOGIN dGlt"), SASL_CHALLENGE);
    cr_assert_eq(s.user_len, 3);
    cr_assert_eq(start("LOGIN"), SASL_CHALLENGE);
    cr_assert_str_eq(ch, "VXNlcm5hbWU6");
    cr_assert_eq(s.user_len, 0);
    cr_assert(all_zero(s.user, sizeof s.user));
}

Test(sasl, step_after_check_is_refused_and_wipes)
{
    cr_assert_eq(start("PLAIN AHRpbQB4"), SASL_CHECK);
    cr_assert_eq(step("AHRpbQB4"), SASL_BAD_SYNTAX);
    ASSERT_WIPED();
}

Test(sasl, step_without_exchange_is_refused)
{
    cr_assert_eq(step("AHRpbQB4"), SASL_BAD_SYNTAX);
    ASSERT_WIPED();
}

Test(sasl, reset_wipes_user_and_password)
{
    cr_assert_eq(start("LOGIN dGlt"), SASL_CHALLENGE);
    cr_assert_eq(step("c2VjcmV0"), SASL_CHECK);
    cr_assert_not(all_zero(s.pass, sizeof s.pass));
    sasl_server_reset(&s);
    ASSERT_WIPED();
    cr_assert_eq(s.mech, SASL_MECH_NONE);
}

/* ---- the challenge buffer ---- */

Test(sasl, too_small_challenge_buffer_ends_the_exchange)
{
    char small[12];

    cr_assert_eq(sasl_server_start(&s, "LOGIN", 5, small, sizeof small), SASL_BAD_SYNTAX);
    ASSERT_WIPED();
    cr_assert_eq(sasl_server_start(&s, "LOGIN", 5, ch, sizeof ch), SASL_CHALLENGE);
    cr_assert_eq(sasl_server_step(&s, "dGlt", 4, small, sizeof small), SASL_BAD_SYNTAX);
    ASSERT_WIPED();
    cr_assert_eq(sasl_server_start(&s, "PLAIN", 5, small, 1), SASL_CHALLENGE);
    cr_assert_str_eq(small, "");
    cr_assert_eq(sasl_server_start(&s, "PLAIN", 5, small, 0), SASL_BAD_SYNTAX);
}

/* ---- replies and user names ---- */

Test(sasl, every_terminal_failure_has_its_reply)
{
    cr_assert_null(sasl_status_reply(SASL_CHALLENGE));
    cr_assert_null(sasl_status_reply(SASL_CHECK));
    cr_assert_str_eq(sasl_status_reply(SASL_BAD_MECH),
                     "504 5.5.4 Unrecognized authentication type");
    cr_assert_str_eq(sasl_status_reply(SASL_BAD_SYNTAX), "501 5.5.2 Cannot decode response");
    cr_assert_str_eq(sasl_status_reply(SASL_CANCELLED), "501 5.7.0 Authentication aborted");
    cr_assert_str_eq(sasl_status_reply(SASL_BAD_CREDS_FORMAT),
                     "535 5.7.8 Authentication credentials invalid");
}

Test(sasl, user_names_are_clean_utf8_of_1_to_255_octets)
{
    char u[300];

    memset(u, 'a', sizeof u);
    cr_assert(sasl_user_valid("tim", 3));
    cr_assert(sasl_user_valid("tim@example.org", 15));
    cr_assert(sasl_user_valid("J\xc3\xbcrgen M\xc3\xbcller", 15));
    cr_assert(sasl_user_valid("\xc2\xa0", 2), "U+00A0 is not a control");
    cr_assert(sasl_user_valid("\xf0\x9f\x93\xa7", 4));
    cr_assert(sasl_user_valid(u, 255));
    cr_assert_not(sasl_user_valid(u, 256));
    cr_assert_not(sasl_user_valid("", 0));
    cr_assert_not(sasl_user_valid("t\0m", 3));
    cr_assert_not(sasl_user_valid("t\tm", 3));
    cr_assert_not(sasl_user_valid("tim\n", 4));
    cr_assert_not(sasl_user_valid("t\x7fm", 3));
    cr_assert_not(sasl_user_valid("t\xc2\x80m", 4));
    cr_assert_not(sasl_user_valid("t\xc2\x9fm", 4));
    cr_assert_not(sasl_user_valid("\xc2", 1));
    cr_assert_not(sasl_user_valid("\xed\xa0\x80", 3));
    cr_assert_not(sasl_user_valid(guarded("ab\xc2", 3), 3));
}
