/*
 * base64 - strict RFC 4648 base64 decoding and encoding.
 *
 * Any thread, no state. The decoder makes one pass over whole quads: the
 * structure (length, where the '=' are) is checked first and decides which
 * characters are pads; every other character goes through base64_value,
 * whose result is folded into one error flag, so the loop neither branches
 * nor looks up a table on a (secret) input character. Octets are written only
 * when the whole result fits, and wiped again if the input proves invalid.
 */
#include "base64.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>

static const char base64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/*
 * The 6-bit value of c, or -1 if c is not in the alphabet. Each line adds
 * (value - previous) when c lies in one range: ((lo - 1 - c) & (c - hi - 1))
 * is negative exactly when lo <= c <= hi, and >> 8 turns that into an all-ones
 * mask (gcc and clang shift signed ints arithmetically).
 */
static int
base64_value(unsigned char ch)
{
    int c = ch, v = -1;

    v += ((('A' - 1) - c) & (c - ('Z' + 1))) >> 8 & (c - 'A' + 1);
    v += ((('a' - 1) - c) & (c - ('z' + 1))) >> 8 & (c - 'a' + 27);
    v += ((('0' - 1) - c) & (c - ('9' + 1))) >> 8 & (c - '0' + 53);
    v += ((('+' - 1) - c) & (c - ('+' + 1))) >> 8 & 63;
    v += ((('/' - 1) - c) & (c - ('/' + 1))) >> 8 & 64;
    return v;
}

int
base64_decode(const char *in, size_t len, uint8_t *out, size_t cap, size_t *outlen)
{
    size_t pad = 0, n, o = 0;
    int bad = 0;                        /* negative once any character was not base64 */
    unsigned last_bits = 0;             /* the bits below the last full octet */

    *outlen = 0;
    if (len % 4 != 0)
        return -EINVAL;
    if (len == 0)
        return 0;
    if (in[len - 1] == '=')
        pad = in[len - 2] == '=' ? 2 : 1;
    n = len / 4 * 3 - pad;
    bool fits = n <= cap;
    for (size_t i = 0; i < len; i += 4) {
        bool final = i + 4 == len;
        int a = base64_value((unsigned char)in[i]);
        int b = base64_value((unsigned char)in[i + 1]);
        int c = final && pad == 2 ? 0 : base64_value((unsigned char)in[i + 2]);
        int d = final && pad >= 1 ? 0 : base64_value((unsigned char)in[i + 3]);

        bad |= a | b | c | d;
        uint32_t v = ((uint32_t)a & 63) << 18 | ((uint32_t)b & 63) << 12
                     | ((uint32_t)c & 63) << 6 | ((uint32_t)d & 63);
        size_t k = final ? 3 - pad : 3;
        if (final)
            last_bits = pad == 2 ? (unsigned)b & 15 : pad == 1 ? (unsigned)c & 3 : 0;
        if (fits) {
            uint8_t q[3] = { (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v };
            memcpy(out + o, q, k);
            o += k;
        }
    }
    /* RFC 4648 §3.5: pad bits must be zero, or "QQ==" and "QR==" would both
     * decode to "A" and the encoding would not be canonical. */
    if (bad < 0 || last_bits != 0) {
        explicit_bzero(out, o);
        return -EINVAL;
    }
    if (!fits)
        return -ENOSPC;
    *outlen = n;
    return 0;
}

size_t
base64_encode(const uint8_t *in, size_t len, char *out, size_t cap)
{
    size_t o = 0, i;

    /* BASE64_ENCODED_SIZE(len) without its overflow. */
    if (len / 3 >= (SIZE_MAX - 5) / 4 || cap < BASE64_ENCODED_SIZE(len))
        return 0;
    for (i = 0; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = base64_alphabet[v >> 18];
        out[o++] = base64_alphabet[v >> 12 & 63];
        out[o++] = base64_alphabet[v >> 6 & 63];
        out[o++] = base64_alphabet[v & 63];
    }
    if (i < len) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < len ? (uint32_t)in[i + 1] << 8 : 0);
        out[o++] = base64_alphabet[v >> 18];
        out[o++] = base64_alphabet[v >> 12 & 63];
        out[o++] = i + 1 < len ? base64_alphabet[v >> 6 & 63] : '=';
        out[o++] = '=';
    }
    out[o] = '\0';
    return o;
}
