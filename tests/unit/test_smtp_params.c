/*
 * Tests for core/smtp_params: MAIL/RCPT ESMTP parameters and xtext,
 * RELIABILITY rows 12, 13, 20 (and 26 for NUL inside a parameter).
 * Inputs are placed against an inaccessible page, so reading one octet past
 * len crashes the test. Parameter structs hold their text inline: Criterion
 * re-executes the binary per case, so pointers into the parent would dangle.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <stdio.h>
#include <string.h>

#include "guarded.h"
#include "smtp_params.h"

static const struct smtp_param_caps all_caps = { .dsn = true, .smtputf8 = true, .auth = true };
static const struct smtp_param_caps no_caps = { 0 };

static int
mail(const char *s, size_t n, const struct smtp_param_caps *caps, struct mail_params *mp,
     struct smtp_reject *rej)
{
    return smtp_parse_mail_params(guarded(s, n), n, caps, mp, rej);
}

static int
rcpt(const char *s, size_t n, const struct smtp_param_caps *caps, struct rcpt_params *rp,
     struct smtp_reject *rej)
{
    return smtp_parse_rcpt_params(guarded(s, n), n, caps, rp, rej);
}

#define MAIL_OK(s, mp) do {                                                  \
        struct smtp_reject rej_ = { 0 };                                     \
        cr_assert_eq(mail(s, sizeof s - 1, &all_caps, mp, &rej_), 0,         \
                     "\"%s\": %u %s", s, rej_.code, rej_.text);              \
    } while (0)

/* ---- rejections, table-driven ---- */

struct reject_case {
    char in[160];
    size_t len;              /* 0: strlen(in) */
    bool dsn, smtputf8, auth;
    uint16_t code;
};

#define ALL .dsn = true, .smtputf8 = true, .auth = true

ParameterizedTestParameters(smtp_params, rejects_bad_mail_parameters)
{
    static struct reject_case cases[] = {
        /* Row 20: SIZE syntax and range. */
        { " SIZE=18446744073709551616", 0, ALL, 501 },
        { " SIZE=99999999999999999999", 0, ALL, 501 },
        { " SIZE=000000000000000000001", 0, ALL, 501 },
        { " SIZE=-1", 0, ALL, 501 },
        { " SIZE=+1", 0, ALL, 501 },
        { " SIZE=", 0, ALL, 501 },
        { " SIZE= ", 0, ALL, 501 },
        { " SIZE", 0, ALL, 501 },
        { " SIZE=1k", 0, ALL, 501 },
        { " SIZE=0x10", 0, ALL, 501 },
        { " SIZE=1.5", 0, ALL, 501 },
        /* Row 13: malformed and duplicate parameters. */
        { " X=", 0, ALL, 501 },
        { " =", 0, ALL, 501 },
        { " =x", 0, ALL, 501 },
        { " SIZE=1 SIZE=2", 0, ALL, 501 },
        { " size=1 SIZE=1", 0, ALL, 501 },
        { " BODY=7BIT BODY=8BITMIME", 0, ALL, 501 },
        { " SMTPUTF8 SMTPUTF8", 0, ALL, 501 },
        { " -SIZE=1", 0, ALL, 501 },
        { " SI_ZE=1", 0, ALL, 501 },
        { " SIZE==1", 0, ALL, 501 },
        { " ENVID=a=b", 0, ALL, 501 },
        { "SIZE=1", 0, ALL, 501 },
        { " FOO=bar", 0, ALL, 555 },
        { " FOO", 0, ALL, 555 },
        { " NOTIFY=NEVER", 0, ALL, 555 },
        { " ORCPT=rfc822;a", 0, ALL, 555 },
        { " SIZE=1 FOO=bar", 0, ALL, 555 },
        /* Not advertised means unknown. */
        { " SMTPUTF8", 0, .dsn = true, .auth = true, .code = 555 },
        { " RET=FULL", 0, .smtputf8 = true, .auth = true, .code = 555 },
        { " ENVID=abc", 0, .smtputf8 = true, .auth = true, .code = 555 },
        { " AUTH=<>", 0, .dsn = true, .smtputf8 = true, .code = 555 },
        /* Values. */
        { " BODY=BINARYMIME", 0, ALL, 501 },
        { " BODY=8BIT", 0, ALL, 501 },
        { " BODY=", 0, ALL, 501 },
        { " SMTPUTF8=yes", 0, ALL, 501 },
        { " RET=ALL", 0, ALL, 501 },
        { " RET=", 0, ALL, 501 },
        /* Row 12: xtext that would decode to controls, and bad xtext. */
        { " ENVID=abc+0D+0Adef", 0, ALL, 501 },
        { " ENVID=abc+0A", 0, ALL, 501 },
        { " ENVID=abc+00", 0, ALL, 501 },
        { " ENVID=+7F", 0, ALL, 501 },
        { " ENVID=+C3+A9", 0, ALL, 501 },
        { " ENVID=+zz", 0, ALL, 501 },
        { " ENVID=abc+", 0, ALL, 501 },
        { " ENVID=abc+4", 0, ALL, 501 },
        { " ENVID=abc+4a", 0, ALL, 501 },
        { " AUTH=user+0D+0A", 0, ALL, 501 },
        { " AUTH=+00", 0, ALL, 501 },
        { " AUTH=", 0, ALL, 501 },
        /* Row 26 and separators: only SP separates, controls never pass. */
        { "\tSIZE=1", 0, ALL, 501 },
        { " SIZE=1\tBODY=7BIT", 0, ALL, 501 },
        { " SIZE=1\r\n", 0, ALL, 501 },
        { " SIZE=1\n", 0, ALL, 501 },
        { " SIZE=1\0 BODY=7BIT", 18, ALL, 501 },
        { " SIZE=1\0", 8, ALL, 501 },
        { " ENVID=ab\0cd", 12, ALL, 501 },
        { " \0", 2, ALL, 501 },
        { " ENVID=caf\xc3\xa9", 0, ALL, 501 },
        { " SIZE=1\x7f", 0, ALL, 501 },
    };
    return cr_make_param_array(struct reject_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct reject_case *c, smtp_params, rejects_bad_mail_parameters)
{
    struct smtp_param_caps caps = { .dsn = c->dsn, .smtputf8 = c->smtputf8, .auth = c->auth };
    struct mail_params mp, zero;
    struct smtp_reject rej = { 0 };
    size_t n = c->len ? c->len : strlen(c->in);

    memset(&mp, 0x5a, sizeof mp);
    memset(&zero, 0, sizeof zero);
    cr_assert_eq(mail(c->in, n, &caps, &mp, &rej), -1, "accepted \"%s\"", c->in);
    cr_assert_eq(rej.code, c->code, "\"%s\" got %u %s", c->in, rej.code, rej.text);
    cr_assert_str_eq(rej.enh, "5.5.4");
    cr_assert_not_null(rej.text);
    /* Nothing half-stored from the parameters that were fine. */
    cr_assert_arr_eq(&mp, &zero, sizeof mp, "\"%s\" left data in out", c->in);
}

ParameterizedTestParameters(smtp_params, rejects_bad_rcpt_parameters)
{
    static struct reject_case cases[] = {
        { " NOTIFY=NEVER,SUCCESS", 0, ALL, 501 },
        { " NOTIFY=FAILURE,NEVER", 0, ALL, 501 },
        { " NOTIFY=SUCCESS,SUCCESS", 0, ALL, 501 },
        { " NOTIFY=NEVER,NEVER", 0, ALL, 501 },
        { " NOTIFY=", 0, ALL, 501 },
        { " NOTIFY", 0, ALL, 501 },
        { " NOTIFY=SUCCESS,", 0, ALL, 501 },
        { " NOTIFY=,SUCCESS", 0, ALL, 501 },
        { " NOTIFY=SUCCESS,,DELAY", 0, ALL, 501 },
        { " NOTIFY=SUCCES", 0, ALL, 501 },
        { " NOTIFY=SUCCESSX", 0, ALL, 501 },
        { " NOTIFY=ALWAYS", 0, ALL, 501 },
        { " NOTIFY=NEVER NOTIFY=NEVER", 0, ALL, 501 },
        { " ORCPT=rfc822", 0, ALL, 501 },
        { " ORCPT=;a+40b", 0, ALL, 501 },
        { " ORCPT=rfc822;", 0, ALL, 501 },
        { " ORCPT=rfc_822;a", 0, ALL, 501 },
        { " ORCPT=rfc822;a+0D+0AMAIL", 0, ALL, 501 },
        { " ORCPT=rfc822;a+00b", 0, ALL, 501 },
        { " ORCPT=rfc822;+zz", 0, ALL, 501 },
        { " ORCPT=rfc822;abc+", 0, ALL, 501 },
        { " ORCPT=rfc822;a ORCPT=rfc822;b", 0, ALL, 501 },
        { " ORCPT=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa;x", 0, ALL, 501 },
        { " X=", 0, ALL, 501 },
        { " =", 0, ALL, 501 },
        { " NOTIFY=NEVER\r\n", 0, ALL, 501 },
        { " NOTIFY=NEVER\0", 14, ALL, 501 },
        { " SIZE=1", 0, ALL, 555 },
        { " BODY=7BIT", 0, ALL, 555 },
        { " FOO=bar", 0, ALL, 555 },
        { " NOTIFY=NEVER", 0, .smtputf8 = true, .auth = true, .code = 555 },
        { " ORCPT=rfc822;a", 0, .smtputf8 = true, .auth = true, .code = 555 },
    };
    return cr_make_param_array(struct reject_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct reject_case *c, smtp_params, rejects_bad_rcpt_parameters)
{
    struct smtp_param_caps caps = { .dsn = c->dsn, .smtputf8 = c->smtputf8, .auth = c->auth };
    struct rcpt_params rp, zero;
    struct smtp_reject rej = { 0 };
    size_t n = c->len ? c->len : strlen(c->in);

    memset(&rp, 0x5a, sizeof rp);
    memset(&zero, 0, sizeof zero);
    cr_assert_eq(rcpt(c->in, n, &caps, &rp, &rej), -1, "accepted \"%s\"", c->in);
    cr_assert_eq(rej.code, c->code, "\"%s\" got %u %s", c->in, rej.code, rej.text);
    cr_assert_str_eq(rej.enh, "5.5.4");
    cr_assert_not_null(rej.text);
    cr_assert_arr_eq(&rp, &zero, sizeof rp, "\"%s\" left data in out", c->in);
}

/* ---- MAIL, accepted ---- */

Test(smtp_params, accepts_empty_and_trailing_spaces)
{
    struct mail_params mp;

    MAIL_OK("", &mp);
    cr_assert_not(mp.has_size);
    cr_assert_eq(mp.body, MAIL_BODY_UNSPEC);
    cr_assert_eq(mp.ret, MAIL_RET_UNSPEC);
    MAIL_OK("   ", &mp);
    MAIL_OK(" SIZE=1   ", &mp);
    cr_assert_eq(mp.size, 1);
}

Test(smtp_params, accepts_size_up_to_uint64_max)
{
    struct mail_params mp;

    MAIL_OK(" SIZE=0", &mp);
    cr_assert(mp.has_size);
    cr_assert_eq(mp.size, 0);
    MAIL_OK(" SIZE=10485760", &mp);
    cr_assert_eq(mp.size, 10485760);
    MAIL_OK(" SIZE=18446744073709551615", &mp);
    cr_assert_eq(mp.size, UINT64_MAX);
    MAIL_OK(" SIZE=00000000000000000001", &mp);
    cr_assert_eq(mp.size, 1);
}

Test(smtp_params, bad_size_names_the_parameter)
{
    struct mail_params mp;
    struct smtp_reject rej;

    cr_assert_eq(mail(" SIZE=18446744073709551616", 26, &all_caps, &mp, &rej), -1);
    cr_assert_eq(rej.code, 501);
    cr_assert_str_eq(rej.text, "Bad SIZE parameter syntax");
}

Test(smtp_params, keywords_and_values_are_case_insensitive)
{
    struct mail_params mp;

    MAIL_OK(" size=5 body=8bitmime smtputf8 ret=hdrs", &mp);
    cr_assert_eq(mp.size, 5);
    cr_assert_eq(mp.body, MAIL_BODY_8BITMIME);
    cr_assert(mp.smtputf8);
    cr_assert_eq(mp.ret, MAIL_RET_HDRS);
    MAIL_OK(" Body=7Bit Ret=Full", &mp);
    cr_assert_eq(mp.body, MAIL_BODY_7BIT);
    cr_assert_eq(mp.ret, MAIL_RET_FULL);
}

Test(smtp_params, accepts_every_mail_parameter_at_once)
{
    struct mail_params mp;

    MAIL_OK("  SIZE=1000  BODY=8BITMIME SMTPUTF8 RET=FULL ENVID=QQ314159+2B+3Dx "
            "AUTH=user+40example.com", &mp);
    cr_assert(mp.has_size);
    cr_assert_eq(mp.size, 1000);
    cr_assert_eq(mp.body, MAIL_BODY_8BITMIME);
    cr_assert(mp.smtputf8);
    cr_assert_eq(mp.ret, MAIL_RET_FULL);
    cr_assert(mp.has_envid);
    cr_assert_str_eq(mp.envid, "QQ314159+=x");
    cr_assert(mp.has_auth);
    cr_assert_str_eq(mp.auth, "user@example.com");
}

Test(smtp_params, keeps_auth_null_sender_as_angle_brackets)
{
    struct mail_params mp;

    MAIL_OK(" AUTH=<>", &mp);
    cr_assert(mp.has_auth);
    cr_assert_str_eq(mp.auth, "<>");
}

Test(smtp_params, envid_decodes_space_but_nothing_below_it)
{
    struct mail_params mp;

    MAIL_OK(" ENVID=a+20b", &mp);
    cr_assert_str_eq(mp.envid, "a b");
}

Test(smtp_params, envid_limited_to_100_octets)
{
    char line[160];
    struct mail_params mp;
    struct smtp_reject rej;

    int n = snprintf(line, sizeof line, " ENVID=%0100d", 0);
    cr_assert_eq(mail(line, (size_t)n, &all_caps, &mp, &rej), 0);
    cr_assert_eq(strlen(mp.envid), 100);
    n = snprintf(line, sizeof line, " ENVID=%0101d", 0);
    cr_assert_eq(mail(line, (size_t)n, &all_caps, &mp, &rej), -1);
    cr_assert_eq(rej.code, 501);
}

Test(smtp_params, auth_limited_to_500_octets)
{
    char line[700];
    struct mail_params mp;
    struct smtp_reject rej;

    memcpy(line, " AUTH=", 6);
    memset(line + 6, 'a', 500);
    cr_assert_eq(mail(line, 506, &all_caps, &mp, &rej), 0);
    cr_assert_eq(strlen(mp.auth), 500);
    line[506] = 'a';
    cr_assert_eq(mail(line, 507, &all_caps, &mp, &rej), -1);
    cr_assert_eq(rej.code, 501);
}

Test(smtp_params, never_reads_past_len)
{
    /* The octets beyond len would make these valid; they must not count. */
    static const char line[] = " SIZE=12 BODY=7BIT";
    struct mail_params mp;
    struct smtp_reject rej;

    cr_assert_eq(mail(line, 7, &all_caps, &mp, &rej), 0);
    cr_assert_eq(mp.size, 1);
    cr_assert_eq(mail(line, 6, &all_caps, &mp, &rej), -1);
    cr_assert_eq(mail(line, 14, &all_caps, &mp, &rej), -1);
    cr_assert_eq(mail(" ENVID=ab+4", 11, &all_caps, &mp, &rej), -1);
    cr_assert_eq(mail(" ENVID=ab+", 10, &all_caps, &mp, &rej), -1);
}

Test(smtp_params, rejects_a_flood_of_parameters_quickly)
{
    /* 2000 parameters: refused at the first duplicate or unknown, in bounds. */
    static char line[2000 * 8];
    struct mail_params mp;
    struct smtp_reject rej;
    size_t n = 0;

    for (int i = 0; i < 2000; i++)
        n += (size_t)snprintf(line + n, sizeof line - n, " SIZE=%d", i % 10);
    cr_assert_eq(mail(line, n, &all_caps, &mp, &rej), -1);
    cr_assert_eq(rej.code, 501);
    n = 0;
    for (int i = 0; i < 2000; i++)
        n += (size_t)snprintf(line + n, sizeof line - n, " X%d", i % 10);
    cr_assert_eq(mail(line, n, &all_caps, &mp, &rej), -1);
    cr_assert_eq(rej.code, 555);
}

Test(smtp_params, mail_tolerates_missing_caps_for_plain_params)
{
    struct mail_params mp;
    struct smtp_reject rej;

    cr_assert_eq(mail(" SIZE=1 BODY=7BIT", 17, &no_caps, &mp, &rej), 0);
    cr_assert_eq(mp.size, 1);
}

/* ---- RCPT, accepted ---- */

Test(smtp_params, notify_never_alone)
{
    struct rcpt_params rp;
    struct smtp_reject rej;

    cr_assert_eq(rcpt(" NOTIFY=NEVER", 13, &all_caps, &rp, &rej), 0);
    cr_assert_eq(rp.notify, NOTIFY_NEVER);
}

Test(smtp_params, notify_list_in_any_order_and_case)
{
    struct rcpt_params rp;
    struct smtp_reject rej;

    cr_assert_eq(rcpt(" NOTIFY=delay,Success,FAILURE", 29, &all_caps, &rp, &rej), 0);
    cr_assert_eq(rp.notify, NOTIFY_SUCCESS | NOTIFY_FAILURE | NOTIFY_DELAY);
    cr_assert_eq(rcpt(" notify=FAILURE", 15, &all_caps, &rp, &rej), 0);
    cr_assert_eq(rp.notify, NOTIFY_FAILURE);
}

Test(smtp_params, rcpt_without_parameters_has_no_notify)
{
    struct rcpt_params rp;
    struct smtp_reject rej;

    cr_assert_eq(rcpt("", 0, &no_caps, &rp, &rej), 0);
    cr_assert_eq(rp.notify, 0);
    cr_assert_not(rp.has_orcpt);
}

Test(smtp_params, orcpt_decodes_xtext_and_keeps_type)
{
    static const char line[] = " NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Victim+2Btag+40Example.COM";
    struct rcpt_params rp;
    struct smtp_reject rej;

    cr_assert_eq(rcpt(line, sizeof line - 1, &all_caps, &rp, &rej), 0);
    cr_assert(rp.has_orcpt);
    cr_assert_str_eq(rp.orcpt_type, "rfc822");
    cr_assert_str_eq(rp.orcpt, "Victim+tag@Example.COM");
    cr_assert_eq(rp.notify, NOTIFY_SUCCESS | NOTIFY_FAILURE);
}

Test(smtp_params, orcpt_accepts_utf8_addr_type)
{
    static const char line[] = " ORCPT=utf-8;a+40b";
    struct rcpt_params rp;
    struct smtp_reject rej;

    cr_assert_eq(rcpt(line, sizeof line - 1, &all_caps, &rp, &rej), 0);
    cr_assert_str_eq(rp.orcpt_type, "utf-8");
    cr_assert_str_eq(rp.orcpt, "a@b");
}

Test(smtp_params, orcpt_limited_to_500_decoded_octets)
{
    char line[700];
    struct rcpt_params rp;
    struct smtp_reject rej;
    size_t head = strlen(" ORCPT=rfc822;");

    memcpy(line, " ORCPT=rfc822;", head);
    memset(line + head, 'a', 500);
    cr_assert_eq(rcpt(line, head + 500, &all_caps, &rp, &rej), 0);
    cr_assert_eq(strlen(rp.orcpt), 500);
    line[head + 500] = 'a';
    cr_assert_eq(rcpt(line, head + 501, &all_caps, &rp, &rej), -1);
    cr_assert_eq(rej.code, 501);
}

/* ---- xtext ---- */

struct xtext_case {
    char in[48];
    int result;          /* decoded length, or -1 */
    char out[48];
};

ParameterizedTestParameters(smtp_params, decodes_xtext)
{
    static struct xtext_case cases[] = {
        { "", 0, "" },
        { "abc", 3, "abc" },
        { "a+2Bb", 3, "a+b" },
        { "+3D", 1, "=" },
        { "+41+42", 2, "AB" },
        { "+20", 1, " " },
        { "+7E", 1, "~" },
        { "<>", 2, "<>" },
        { "!~", 2, "!~" },
        { "+zz", -1, "" },
        { "+", -1, "" },
        { "abc+", -1, "" },
        { "abc+4", -1, "" },
        { "+4a", -1, "" },
        { "+g0", -1, "" },
        { "++41", -1, "" },
        { "+0D", -1, "" },
        { "+0A", -1, "" },
        { "+00", -1, "" },
        { "+1F", -1, "" },
        { "+7F", -1, "" },
        { "+80", -1, "" },
        { "+FF", -1, "" },
        { "a=b", -1, "" },
        { "a b", -1, "" },
        { "a\tb", -1, "" },
        { "a\x7f", -1, "" },
        { "caf\xc3\xa9", -1, "" },
    };
    return cr_make_param_array(struct xtext_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct xtext_case *c, smtp_params, decodes_xtext)
{
    char out[64];
    size_t n = strlen(c->in);

    int r = xtext_decode(guarded(c->in, n), n, out, sizeof out);
    cr_assert_eq(r, c->result, "\"%s\" -> %d", c->in, r);
    if (r >= 0)
        cr_assert_str_eq(out, c->out);
}

Test(smtp_params, xtext_decode_never_stops_at_nul)
{
    char out[16];

    cr_assert_eq(xtext_decode("ab\0cd", 5, out, sizeof out), -1);
}

Test(smtp_params, xtext_decode_respects_output_size)
{
    char out[4];

    cr_assert_eq(xtext_decode("abc", 3, out, 4), 3);
    cr_assert_str_eq(out, "abc");
    cr_assert_eq(xtext_decode("abcd", 4, out, 4), -1);
    cr_assert_eq(xtext_decode("+41+42+43+44", 12, out, 4), -1);
    cr_assert_eq(xtext_decode("", 0, out, 0), -1);
}

Test(smtp_params, xtext_encode_escapes_plus_equals_and_non_printables)
{
    char out[64];

    cr_assert_eq(xtext_encode("a+b=c d", 7, out, sizeof out), 13);
    cr_assert_str_eq(out, "a+2Bb+3Dc+20d");
    cr_assert_eq(xtext_encode("\r\n\0\xff", 4, out, sizeof out), 12);
    cr_assert_str_eq(out, "+0D+0A+00+FF");
    cr_assert_eq(xtext_encode("", 0, out, sizeof out), 0);
    cr_assert_str_eq(out, "");
}

Test(smtp_params, xtext_encode_refuses_small_output)
{
    char out[8];

    cr_assert_eq(xtext_encode("abc", 3, out, 4), 3);
    cr_assert_eq(xtext_encode("abcd", 4, out, 4), -1);
    cr_assert_eq(xtext_encode("a+", 2, out, 4), -1);
    cr_assert_eq(xtext_encode("a+", 2, out, 5), 4);
    cr_assert_eq(xtext_encode("", 0, out, 0), -1);
}

Test(smtp_params, xtext_round_trips_every_printable_octet)
{
    char in[95], enc[400], dec[100];

    for (int i = 0; i < 95; i++)
        in[i] = (char)(0x20 + i);
    int n = xtext_encode(in, sizeof in, enc, sizeof enc);
    cr_assert_gt(n, 0);
    cr_assert_eq(xtext_decode(enc, (size_t)n, dec, sizeof dec), 95);
    cr_assert_arr_eq(dec, in, 95);
}
