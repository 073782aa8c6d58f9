/*
 * test_envelope - the envelope's TLV encoding: round trips, octets that a
 * line-based format would split (CR, LF, NUL), truncation and corruption.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "envelope.h"

static struct envelope_rcpt test_rcpts[3];

/* A fully populated envelope; strings are static (never freed). */
static struct envelope
test_envelope(void)
{
    test_rcpts[0] = (struct envelope_rcpt){ .addr = "a@example.org", .orcpt = NULL,
                                            .notify = 0 };
    test_rcpts[1] = (struct envelope_rcpt){ .addr = "b@example.net",
                                            .orcpt = "rfc822;B@example.net",
                                            .notify = 2 | 4 };
    test_rcpts[2] = (struct envelope_rcpt){ .addr = "c@[192.0.2.7]", .orcpt = NULL,
                                            .notify = 1 };
    return (struct envelope){
        .sender = "sender@example.com",
        .rcpts = test_rcpts,
        .nrcpt = 3,
        .client_addr = "192.0.2.1",
        .client_helo = "mx.example.com",
        .auth_id = "alice",
        .envid = "QQ314159",
        .arrival_ms = 1700000000123ull,
        .size_hint = 123456,
        .body_type = 2,
        .ret = 1,
        .smtputf8 = true,
    };
}

static uint8_t *
test_encode(const struct envelope *env, size_t *len)
{
    *len = envelope_encoded_size(env);
    uint8_t *buf = xmalloc(*len);
    envelope_encode(env, buf);
    return buf;
}

static void
test_assert_str_eq(const char *a, const char *b)
{
    if (a == NULL || b == NULL) {
        cr_assert_eq(a, b);
        return;
    }
    cr_assert_str_eq(a, b);
}

static void
test_assert_env_eq(const struct envelope *a, const struct envelope *b)
{
    test_assert_str_eq(a->sender, b->sender);
    cr_assert_eq(a->nrcpt, b->nrcpt);
    for (uint32_t i = 0; i < a->nrcpt; i++) {
        test_assert_str_eq(a->rcpts[i].addr, b->rcpts[i].addr);
        test_assert_str_eq(a->rcpts[i].orcpt, b->rcpts[i].orcpt);
        cr_assert_eq(a->rcpts[i].notify, b->rcpts[i].notify);
    }
    test_assert_str_eq(a->client_addr, b->client_addr);
    test_assert_str_eq(a->client_helo, b->client_helo);
    test_assert_str_eq(a->auth_id, b->auth_id);
    test_assert_str_eq(a->envid, b->envid);
    cr_assert_eq(a->arrival_ms, b->arrival_ms);
    cr_assert_eq(a->size_hint, b->size_hint);
    cr_assert_eq(a->body_type, b->body_type);
    cr_assert_eq(a->ret, b->ret);
    cr_assert_eq(a->smtputf8, b->smtputf8);
}

TestSuite(envelope);

Test(envelope, round_trip_keeps_every_field)
{
    struct envelope env = test_envelope(), out;
    size_t len;
    uint8_t *buf = test_encode(&env, &len);
    cr_assert_eq(envelope_decode(buf, len, &out), 0);
    test_assert_env_eq(&env, &out);
    for (uint32_t i = 0; i < out.nrcpt; i++)
        cr_assert_eq(out.rcpts[i].state, RCPT_PENDING);
    envelope_free(&out);
    free(buf);
}

Test(envelope, null_sender_and_absent_optionals_round_trip)
{
    struct envelope_rcpt r = { .addr = "postmaster" };
    struct envelope env = { .sender = "", .rcpts = &r, .nrcpt = 1 }, out;
    size_t len;
    uint8_t *buf = test_encode(&env, &len);
    cr_assert_eq(envelope_decode(buf, len, &out), 0);
    cr_assert_str_eq(out.sender, "");
    cr_assert_null(out.client_addr);
    cr_assert_null(out.client_helo);
    cr_assert_null(out.auth_id);
    cr_assert_null(out.envid);
    cr_assert_null(out.rcpts[0].orcpt);
    cr_assert_eq(out.smtputf8, false);
    envelope_free(&out);
    free(buf);
}

Test(envelope, zero_recipients_round_trip)
{
    struct envelope env = { .sender = "x@y" }, out;
    size_t len;
    uint8_t *buf = test_encode(&env, &len);
    cr_assert_eq(envelope_decode(buf, len, &out), 0);
    cr_assert_eq(out.nrcpt, 0);
    envelope_free(&out);
    free(buf);
}

/* RELIABILITY row 15: CR and LF stay inside the one field. */
Test(envelope, fields_with_cr_lf_come_back_as_one_field)
{
    struct envelope env = test_envelope(), out;
    env.sender = "evil\r\nRCPT TO:<x@y>\r\n";
    env.client_helo = "helo\nX-Injected: 1\n";
    env.envid = "\r";
    test_rcpts[1].addr = "b\r\n.\r\n@example.net";
    test_rcpts[1].orcpt = "rfc822;\n\n";
    size_t len;
    uint8_t *buf = test_encode(&env, &len);
    cr_assert_eq(envelope_decode(buf, len, &out), 0);
    test_assert_env_eq(&env, &out);
    envelope_free(&out);
    free(buf);
}

/* A NUL inside a field is kept whole: the copy holds every octet. */
Test(envelope, field_with_nul_is_kept_whole)
{
    struct envelope env = test_envelope(), out;
    env.sender = "abcXdef";
    test_rcpts[0].addr = "rcptYtail";
    size_t len;
    uint8_t *buf = test_encode(&env, &len);
    uint8_t *x = memchr(buf, 'X', len);
    uint8_t *y = memchr(buf, 'Y', len);
    cr_assert_not_null(x);
    cr_assert_not_null(y);
    *x = 0;
    *y = 0;
    cr_assert_eq(envelope_decode(buf, len, &out), 0);
    cr_assert_eq(memcmp(out.sender, "abc\0def", 8), 0);
    cr_assert_eq(memcmp(out.rcpts[0].addr, "rcpt\0tail", 10), 0);
    envelope_free(&out);
    free(buf);
}

Test(envelope, every_truncation_fails_cleanly)
{
    struct envelope env = test_envelope(), out;
    size_t len;
    uint8_t *buf = test_encode(&env, &len);
    for (size_t n = 0; n < len; n++) {
        /* A fresh copy of exactly n octets, so a sanitizer sees overreads. */
        uint8_t *cut = xmalloc(n ? n : 1);
        memcpy(cut, buf, n);
        cr_assert_eq(envelope_decode(cut, n, &out), -1, "prefix of %zu/%zu decoded", n, len);
        cr_assert_null(out.sender);
        cr_assert_null(out.rcpts);
        free(cut);
    }
    free(buf);
}

Test(envelope, every_single_byte_corruption_is_bounds_safe)
{
    struct envelope env = test_envelope(), out;
    size_t len;
    uint8_t *buf = test_encode(&env, &len);
    static const uint8_t vals[] = { 0x00, 0xff, 0x7f, 0x80, 0x01 };
    for (size_t i = 0; i < len; i++) {
        for (size_t v = 0; v < sizeof vals; v++) {
            uint8_t *copy = xmemdup(buf, len);
            copy[i] = vals[v];
            if (envelope_decode(copy, len, &out) == 0)
                envelope_free(&out);
            free(copy);
        }
    }
    free(buf);
}

Test(envelope, trailing_bytes_after_end_are_refused)
{
    struct envelope env = test_envelope(), out;
    size_t len;
    uint8_t *buf = test_encode(&env, &len);
    uint8_t *more = xcalloc(1, len + 6);
    memcpy(more, buf, len);
    more[len] = 99; /* an unknown field after END */
    cr_assert_eq(envelope_decode(more, len + 6, &out), -1);
    free(more);
    free(buf);
}

/* Inserts field (tag, value) at offset at of buf; returns the new buffer. */
static uint8_t *
test_insert_field(const uint8_t *buf, size_t len, size_t at, uint16_t tag, const char *val,
                  size_t *newlen)
{
    size_t vl = strlen(val);
    *newlen = len + 6 + vl;
    uint8_t *out = xmalloc(*newlen);
    memcpy(out, buf, at);
    out[at] = (uint8_t)tag;
    out[at + 1] = (uint8_t)(tag >> 8);
    out[at + 2] = (uint8_t)vl;
    out[at + 3] = (uint8_t)(vl >> 8);
    out[at + 4] = 0;
    out[at + 5] = 0;
    memcpy(out + at + 6, val, vl);
    memcpy(out + at + 6 + vl, buf + at, len - at);
    return out;
}

Test(envelope, unknown_top_level_tag_is_skipped)
{
    struct envelope env = test_envelope(), out;
    size_t len, nl;
    uint8_t *buf = test_encode(&env, &len);
    /* After VERSION (6 + 4 octets). */
    uint8_t *b2 = test_insert_field(buf, len, 10, 0x7777, "from the future", &nl);
    cr_assert_eq(envelope_decode(b2, nl, &out), 0);
    test_assert_env_eq(&env, &out);
    envelope_free(&out);
    free(b2);
    free(buf);
}

Test(envelope, unknown_recipient_tag_is_skipped)
{
    struct envelope_rcpt r = { .addr = "x@y" };
    struct envelope env = { .sender = "", .rcpts = &r, .nrcpt = 1 }, out;
    size_t len;
    uint8_t *buf = test_encode(&env, &len);
    /* VERSION (10) + SENDER "" (6) then RCPT header at 16; its value at 22. */
    cr_assert_eq(buf[16], 3);
    size_t nl;
    uint8_t *b2 = test_insert_field(buf, len, 22, 0x4242, "zz", &nl);
    /* Fix the RCPT length: it grew by 8. */
    uint32_t rl = (uint32_t)b2[18] | ((uint32_t)b2[19] << 8);
    rl += 8;
    b2[18] = (uint8_t)rl;
    b2[19] = (uint8_t)(rl >> 8);
    cr_assert_eq(envelope_decode(b2, nl, &out), 0);
    cr_assert_eq(out.nrcpt, 1);
    cr_assert_str_eq(out.rcpts[0].addr, "x@y");
    envelope_free(&out);
    free(b2);
    free(buf);
}

Test(envelope, other_version_is_refused)
{
    struct envelope env = test_envelope(), out;
    size_t len;
    uint8_t *buf = test_encode(&env, &len);
    buf[6] = 2; /* VERSION value */
    cr_assert_eq(envelope_decode(buf, len, &out), -1);
    free(buf);
}

Test(envelope, duplicate_sender_is_refused)
{
    struct envelope env = test_envelope(), out;
    size_t len, nl;
    uint8_t *buf = test_encode(&env, &len);
    uint8_t *b2 = test_insert_field(buf, len, 10, 2, "second@sender", &nl);
    cr_assert_eq(envelope_decode(b2, nl, &out), -1);
    free(b2);
    free(buf);
}

Test(envelope, recipient_without_address_is_refused)
{
    struct envelope_rcpt r = { .addr = "x" };
    struct envelope env = { .sender = "", .rcpts = &r, .nrcpt = 1 }, out;
    size_t len;
    uint8_t *buf = test_encode(&env, &len);
    /* Rename the ADDR tag (at 22) to an unknown one. */
    cr_assert_eq(buf[22], 1);
    buf[22] = 0x55;
    cr_assert_eq(envelope_decode(buf, len, &out), -1);
    free(buf);
}

Test(envelope, copy_is_deep)
{
    struct envelope env = test_envelope(), dec, cp;
    size_t len;
    uint8_t *buf = test_encode(&env, &len);
    cr_assert_eq(envelope_decode(buf, len, &dec), 0);
    envelope_copy(&cp, &dec);
    cr_assert_neq(cp.sender, dec.sender);
    cr_assert_neq(cp.rcpts, dec.rcpts);
    cr_assert_neq(cp.rcpts[1].orcpt, dec.rcpts[1].orcpt);
    envelope_free(&dec);
    test_assert_env_eq(&env, &cp);
    envelope_free(&cp);
    free(buf);
}

Test(envelope, encoded_size_is_exact)
{
    struct envelope env = test_envelope();
    size_t len = envelope_encoded_size(&env);
    uint8_t *buf = xmalloc(len + 16);
    memset(buf, 0xa5, len + 16);
    envelope_encode(&env, buf);
    for (size_t i = len; i < len + 16; i++)
        cr_assert_eq(buf[i], 0xa5);
    free(buf);
}
