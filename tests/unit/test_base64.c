/*
 * Tests for core/base64: RFC 4648 §10 vectors, every way to be non-canonical,
 * output bounds, and round trips. Inputs are guarded (guarded.h), so a read
 * past len crashes. Cases hold their bytes inline: Criterion re-executes the
 * binary per parameter, where pointers into the parent would dangle.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base64.h"
#include "guarded.h"

static int
decode(const char *s, size_t n, uint8_t *out, size_t cap, size_t *outlen)
{
    return base64_decode(guarded(s, n), n, out, cap, outlen);
}

/* ---- RFC 4648 §10 ---- */

struct vector {
    char plain[8];
    char encoded[12];
};

ParameterizedTestParameters(base64, rfc4648_test_vectors)
{
    static struct vector cases[] = {
        { "", "" },
        { "f", "Zg==" },
        { "fo", "Zm8=" },
        { "foo", "Zm9v" },
        { "foob", "Zm9vYg==" },
        { "fooba", "Zm9vYmE=" },
        { "foobar", "Zm9vYmFy" },
    };
    return cr_make_param_array(struct vector, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct vector *v, base64, rfc4648_test_vectors)
{
    char enc[16];
    uint8_t dec[16];
    size_t plen = strlen(v->plain), elen = strlen(v->encoded), n = 99;

    cr_assert_eq(base64_encode((const uint8_t *)v->plain, plen, enc, sizeof enc), elen);
    cr_assert_str_eq(enc, v->encoded);
    cr_assert_eq(decode(v->encoded, elen, dec, sizeof dec, &n), 0, "\"%s\"", v->encoded);
    cr_assert_eq(n, plen);
    cr_assert_arr_eq(dec, v->plain, plen);
}

/* ---- rejections ---- */

struct bad_case {
    char in[16];
    size_t len;
};

#define B(lit) { lit, sizeof lit - 1 }

ParameterizedTestParameters(base64, rejects_non_canonical_input)
{
    static struct bad_case cases[] = {
        /* length not a multiple of 4 */
        B("Z"), B("Zg"), B("Zg="), B("Zm9vY"), B("Zm9vYg="), B("Zm9vYg==="),
        /* white space, line breaks, NUL: never skipped */
        B("Zm9v\r\n"), B("Zm\r\n"), B("Zm9vYmF\n"), B(" Zm9"), B("Zm 9"),
        B("Zm9\t"), B("Zm\0v"), B("Zm9v\0\0\0\0"), B("\0\0\0\0"),
        /* '=' anywhere but the last one or two positions */
        B("=Zm9"), B("Z=m9"), B("Zm=v"), B("Zg=A"), B("Zg==Zg=="), B("===="),
        B("A==="), B("Zm9v===="), B("Zm9v=Zm9"), B("Zm8=Zm8="),
        /* non-zero pad bits: "Zh==" and "Zg==" would both be "f" */
        B("Zh=="), B("Zv=="), B("Zm9="), B("Zm//" "Zm+="), B("AB=="), B("AAB="),
        /* outside the alphabet: URL-safe, punctuation, 8-bit */
        B("Pz8-"), B("Pz8_"), B("Zm9!"), B("Zm9."), B("Zm9\x7f"), B("Zm9\xff"),
        B("\x80" "AAA"), B("Zm9v*" "AAA"), B("*" "AAA"),
    };
    return cr_make_param_array(struct bad_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct bad_case *c, base64, rejects_non_canonical_input)
{
    uint8_t out[16];
    size_t n = 99;

    cr_assert_eq(decode(c->in, c->len, out, sizeof out, &n), -EINVAL, "accepted \"%s\"", c->in);
    cr_assert_eq(n, 0);
}

/* Every octet value: exactly the 64 of the alphabet are digits, with the
 * value of their position. */
Test(base64, exactly_the_alphabet_decodes)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    unsigned accepted = 0;

    for (int c = 0; c < 256; c++) {
        char quad[4] = { (char)c, 'A', 'A', 'A' };
        uint8_t out[3];
        size_t n;
        const char *pos = c != 0 ? memchr(alphabet, c, 64) : NULL;
        int r = decode(quad, 4, out, sizeof out, &n);

        if (pos == NULL) {
            cr_assert_eq(r, -EINVAL, "octet 0x%02x accepted", c);
            continue;
        }
        cr_assert_eq(r, 0, "'%c' refused", c);
        cr_assert_eq(out[0] >> 2, pos - alphabet, "'%c'", c);
        accepted++;
    }
    cr_assert_eq(accepted, 64);
}

Test(base64, empty_input_decodes_to_nothing)
{
    size_t n = 99;

    cr_assert_eq(base64_decode("", 0, NULL, 0, &n), 0);
    cr_assert_eq(n, 0);
}

Test(base64, refuses_short_output_with_enospc)
{
    uint8_t out[8];
    size_t n = 99;

    cr_assert_eq(decode("Zm9vYmFy", 8, out, 5, &n), -ENOSPC);
    cr_assert_eq(n, 0);
    cr_assert_eq(decode("Zm9vYmFy", 8, out, 6, &n), 0);
    cr_assert_eq(n, 6);
    /* Padding counts: "Zm9vYg==" is 4 octets, not 6. */
    cr_assert_eq(decode("Zm9vYg==", 8, out, 4, &n), 0);
    cr_assert_eq(n, 4);
    cr_assert_eq(decode("Zg==", 4, out, 0, &n), -ENOSPC);
}

Test(base64, invalid_input_wins_over_short_output)
{
    uint8_t out[2];
    size_t n;

    cr_assert_eq(decode("Zm9vYm!y", 8, out, 0, &n), -EINVAL);
    cr_assert_eq(decode("Zm9vYm!y", 8, out, sizeof out, &n), -EINVAL);
    cr_assert_eq(decode("Zm9vZh==", 8, out, sizeof out, &n), -EINVAL);
}

Test(base64, leaves_no_decoded_octets_behind_on_error)
{
    uint8_t out[16];
    size_t n;

    /* "c2VjcmV0" is "secret"; the bad last quad comes after it was written. */
    memset(out, 0x5a, sizeof out);
    cr_assert_eq(decode("c2VjcmV0cGF!", 12, out, sizeof out, &n), -EINVAL);
    for (size_t i = 0; i < 9; i++)
        cr_assert_eq(out[i], 0, "octet %zu kept", i);
    cr_assert_eq(out[9], 0x5a, "nothing past the result is written");
}

Test(base64, decoder_writes_only_the_result)
{
    uint8_t out[8];
    size_t n;

    memset(out, 0x5a, sizeof out);
    cr_assert_eq(decode("Zm8=", 4, out, sizeof out, &n), 0);
    cr_assert_eq(n, 2);
    cr_assert_arr_eq(out, "fo", 2);
    for (size_t i = 2; i < sizeof out; i++)
        cr_assert_eq(out[i], 0x5a);
}

/* ---- encoding ---- */

Test(base64, encoder_needs_room_for_the_nul)
{
    char out[9];

    memset(out, 'x', sizeof out);
    cr_assert_eq(BASE64_ENCODED_SIZE(6), 9);
    cr_assert_eq(base64_encode((const uint8_t *)"foobar", 6, out, 8), 0);
    cr_assert_eq(out[0], 'x', "out untouched when too small");
    cr_assert_eq(base64_encode((const uint8_t *)"foobar", 6, out, 9), 8);
    cr_assert_str_eq(out, "Zm9vYmFy");
    cr_assert_eq(base64_encode((const uint8_t *)"f", 1, out, 4), 0);
    cr_assert_eq(base64_encode((const uint8_t *)"f", 1, out, 5), 4);
    cr_assert_str_eq(out, "Zg==");
    cr_assert_eq(base64_encode((const uint8_t *)"", 0, out, 0), 0);
    cr_assert_eq(base64_encode((const uint8_t *)"", 0, out, 1), 0);
    cr_assert_str_eq(out, "");
}

Test(base64, encoder_refuses_a_length_whose_size_would_overflow)
{
    char out[8];

    cr_assert_eq(base64_encode((const uint8_t *)"", SIZE_MAX, out, SIZE_MAX), 0);
    cr_assert_eq(base64_encode((const uint8_t *)"", SIZE_MAX / 4 * 3, out, SIZE_MAX), 0);
}

Test(base64, encodes_every_octet_value)
{
    uint8_t in[256], dec[256];
    char enc[BASE64_ENCODED_SIZE(256)];
    size_t n;

    for (int i = 0; i < 256; i++)
        in[i] = (uint8_t)i;
    size_t e = base64_encode(in, sizeof in, enc, sizeof enc);
    cr_assert_eq(e, 344);
    cr_assert_eq(strncmp(enc, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8g", 44), 0);
    cr_assert_str_eq(enc + 332, "+fr7/P3+/w==");
    cr_assert_eq(decode(enc, e, dec, sizeof dec, &n), 0);
    cr_assert_eq(n, 256);
    cr_assert_arr_eq(dec, in, 256);
}

Test(base64, random_data_round_trips)
{
    static uint8_t in[1024], dec[1024];
    static char enc[BASE64_ENCODED_SIZE(1024)];

    srand(4648);
    for (size_t len = 0; len <= sizeof in; len += 1 + (size_t)rand() % 7) {
        size_t n;

        for (size_t i = 0; i < len; i++)
            in[i] = (uint8_t)rand();
        size_t e = base64_encode(in, len, enc, sizeof enc);
        cr_assert_eq(e, (len + 2) / 3 * 4);
        cr_assert_eq(strlen(enc), e);
        cr_assert_eq(decode(enc, e, dec, BASE64_DECODED_MAX(e), &n), 0, "length %zu", len);
        cr_assert_eq(n, len);
        cr_assert_arr_eq(dec, in, len, "length %zu", len);
    }
}
