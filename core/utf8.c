/*
 * utf8 - strict UTF-8 validation (RFC 3629 §4, Unicode Table 3-7).
 *
 * Any thread, no state. Every lead byte fixes both the sequence length and
 * the legal range of the first continuation byte; that one range check is what
 * rejects overlong forms, surrogates and code points above U+10FFFF, so no
 * decoded value is ever computed. Reads only [p, p + len): a sequence cut by
 * the end of the buffer is invalid, never completed from what lies beyond.
 */
#include "utf8.h"

/* Checks one sequence at s (n octets left, s[0] >= 0x80); returns its length or 0. */
static size_t
utf8_sequence(const uint8_t *s, size_t n)
{
    uint8_t lo = 0x80, hi = 0xbf;   /* range of the second octet */
    size_t need;

    /* C0, C1 would only encode U+0000..U+007F (overlong); F5..FF lie beyond
     * U+10FFFF; 80..BF are continuation octets without a lead. */
    if (s[0] >= 0xc2 && s[0] <= 0xdf) {
        need = 2;
    } else if (s[0] >= 0xe0 && s[0] <= 0xef) {
        need = 3;
        if (s[0] == 0xe0)
            lo = 0xa0;              /* E0 80..9F would be overlong */
        else if (s[0] == 0xed)
            hi = 0x9f;              /* ED A0..BF are UTF-16 surrogates */
    } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
        need = 4;
        if (s[0] == 0xf0)
            lo = 0x90;              /* F0 80..8F would be overlong */
        else if (s[0] == 0xf4)
            hi = 0x8f;              /* F4 90.. is above U+10FFFF */
    } else {
        return 0;
    }
    if (n < need)
        return 0;
    if (s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < need; i++)
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    return need;
}

bool
utf8_valid(const void *p, size_t len)
{
    const uint8_t *s = p;
    size_t i = 0;

    while (i < len) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        size_t n = utf8_sequence(s + i, len - i);
        if (n == 0)
            return false;
        i += n;
    }
    return true;
}

bool
utf8_is_ascii(const void *p, size_t len)
{
    const uint8_t *s = p;

    for (size_t i = 0; i < len; i++)
        if (s[i] >= 0x80)
            return false;
    return true;
}
