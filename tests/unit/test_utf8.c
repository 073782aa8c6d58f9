/*
 * Tests for core/utf8: RFC 3629 validation, RELIABILITY row 27.
 * Inputs are placed against an inaccessible page, so reading one octet past
 * len crashes the test instead of passing by luck.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <string.h>

#include "guarded.h"
#include "utf8.h"

/* Criterion runs each parameter in a re-executed child, where pointers into
 * the parent's image are meaningless under ASLR: cases hold their bytes. */
struct utf8_case {
    char name[48];
    char bytes[16];
    size_t len;
    bool valid;
};

#define U(name, lit, valid) { name, lit, sizeof lit - 1, valid }

ParameterizedTestParameters(utf8, classifies_sequences)
{
    static struct utf8_case cases[] = {
        U("empty", "", true),
        U("ascii", "hello", true),
        U("nul is a code point", "a\0b", true),
        U("U+00E9 two octets", "\xc3\xa9", true),
        U("U+0080 smallest two-octet", "\xc2\x80", true),
        U("U+07FF largest two-octet", "\xdf\xbf", true),
        U("U+0800 smallest three-octet", "\xe0\xa0\x80", true),
        U("U+20AC euro", "\xe2\x82\xac", true),
        U("U+D7FF below surrogates", "\xed\x9f\xbf", true),
        U("U+E000 above surrogates", "\xee\x80\x80", true),
        U("U+FFFF", "\xef\xbf\xbf", true),
        U("U+10000 smallest four-octet", "\xf0\x90\x80\x80", true),
        U("U+10FFFF largest code point", "\xf4\x8f\xbf\xbf", true),
        U("greek mixed with ascii", "\xce\xb4\xce\xbf\xce\xba@x.gr", true),

        U("overlong slash C0 AF", "\xc0\xaf", false),
        U("overlong C1 BF", "\xc1\xbf", false),
        U("overlong three-octet E0 80 AF", "\xe0\x80\xaf", false),
        U("overlong three-octet E0 9F BF", "\xe0\x9f\xbf", false),
        U("overlong four-octet F0 8F BF BF", "\xf0\x8f\xbf\xbf", false),
        U("surrogate ED A0 80", "\xed\xa0\x80", false),
        U("surrogate ED BF BF", "\xed\xbf\xbf", false),
        U("surrogate pair", "\xed\xa0\xbd\xed\xb2\xa9", false),
        U("above U+10FFFF F4 90 80 80", "\xf4\x90\x80\x80", false),
        U("lead F5", "\xf5\x80\x80\x80", false),
        U("lead FE", "\xfe", false),
        U("lead FF", "\xff", false),
        U("five-octet form", "\xf8\x88\x80\x80\x80", false),
        U("stray continuation 80", "\x80", false),
        U("stray continuation BF after ascii", "a\xbf", false),
        U("continuation after complete sequence", "\xc3\xa9\xa9", false),
        U("truncated two-octet", "\xc3", false),
        U("truncated three-octet", "\xe2\x82", false),
        U("truncated four-octet", "\xf0\x90\x80", false),
        U("truncated then ascii", "\xc3" "A", false),
        U("bad third octet", "\xe2\x28\xa1", false),
        U("bad fourth octet", "\xf0\x90\x80\x41", false),
    };
    return cr_make_param_array(struct utf8_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct utf8_case *c, utf8, classifies_sequences)
{
    const uint8_t *p = guarded(c->bytes, c->len);
    cr_assert_eq(utf8_valid(p, c->len), c->valid, "%s", c->name);
}

Test(utf8, stops_at_len_not_at_nul_or_later_bytes)
{
    /* The octet after len would complete the sequence; it must not count. */
    cr_assert_not(utf8_valid("\xc3\xa9", 1));
    cr_assert(utf8_valid("ab\xff", 2));
    cr_assert_not(utf8_valid("a\0\xff", 3));
}

Test(utf8, truncated_sequence_at_end_of_buffer_stays_in_bounds)
{
    static const char *tails[] = { "\xc3", "\xe2\x82", "\xf0\x90\x80", "\xf4" };
    for (size_t i = 0; i < sizeof tails / sizeof tails[0]; i++) {
        size_t n = strlen(tails[i]);
        cr_assert_not(utf8_valid(guarded(tails[i], n), n), "tail %zu", i);
    }
}

/* Reference encoder for the exhaustive test below. */
static size_t
encode(uint32_t cp, uint8_t out[4])
{
    if (cp < 0x80) {
        out[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (uint8_t)(0xc0 | cp >> 6);
        out[1] = (uint8_t)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (uint8_t)(0xe0 | cp >> 12);
        out[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (uint8_t)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (uint8_t)(0xf0 | cp >> 18);
    out[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (uint8_t)(0x80 | (cp & 0x3f));
    return 4;
}

Test(utf8, accepts_every_scalar_value_and_rejects_every_surrogate)
{
    uint8_t b[4];
    for (uint32_t cp = 0; cp <= 0x10ffff; cp++) {
        size_t n = encode(cp, b);
        bool surrogate = cp >= 0xd800 && cp <= 0xdfff;
        if (utf8_valid(b, n) == surrogate)
            cr_assert_fail("U+%04X", cp);
        /* Every proper prefix of a multi-octet form is truncated. */
        for (size_t k = 1; k < n; k++)
            if (utf8_valid(b, k))
                cr_assert_fail("prefix %zu of U+%04X", k, cp);
    }
}

Test(utf8, rejects_every_overlong_form)
{
    uint8_t b[4];
    /* Two-octet forms of U+0000..U+007F. */
    for (uint32_t cp = 0; cp < 0x80; cp++) {
        b[0] = (uint8_t)(0xc0 | cp >> 6);
        b[1] = (uint8_t)(0x80 | (cp & 0x3f));
        cr_assert_not(utf8_valid(b, 2), "U+%04X in 2", cp);
    }
    /* Three-octet forms of U+0000..U+07FF. */
    for (uint32_t cp = 0; cp < 0x800; cp++) {
        b[0] = 0xe0;
        b[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
        b[2] = (uint8_t)(0x80 | (cp & 0x3f));
        cr_assert_not(utf8_valid(b, 3), "U+%04X in 3", cp);
    }
    /* Four-octet forms of U+0000..U+FFFF. */
    for (uint32_t cp = 0; cp < 0x10000; cp++) {
        b[0] = 0xf0;
        b[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3f));
        b[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
        b[3] = (uint8_t)(0x80 | (cp & 0x3f));
        cr_assert_not(utf8_valid(b, 4), "U+%04X in 4", cp);
    }
}

Test(utf8, rejects_every_lone_byte_from_80_to_ff)
{
    for (unsigned v = 0x80; v <= 0xff; v++) {
        uint8_t b = (uint8_t)v;
        cr_assert_not(utf8_valid(&b, 1), "0x%02X", v);
    }
}

Test(utf8, is_ascii_only_below_0x80)
{
    cr_assert(utf8_is_ascii("", 0));
    cr_assert(utf8_is_ascii("plain\x7f\0text", 11));
    cr_assert_not(utf8_is_ascii("caf\xc3\xa9", 5));
    cr_assert_not(utf8_is_ascii("\x80", 1));
    /* Looks only at len octets. */
    cr_assert(utf8_is_ascii("ab\xc3\xa9", 2));
    const uint8_t *p = guarded("abc", 3);
    cr_assert(utf8_is_ascii(p, 3));
}
