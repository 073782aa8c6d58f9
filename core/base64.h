/*
 * base64 - strict base64 (RFC 4648 §4), for SASL exchanges (RFC 4954).
 *
 * Any thread, no state. The decoder accepts exactly one spelling of each
 * octet string: the standard alphabet only (no URL-safe one, no white space,
 * no line breaks), a length that is a multiple of 4, '=' only as the last one
 * or two characters, and zero pad bits (RFC 4648 §3.5: "SHOULD reject" a
 * non-canonical encoding; we do). It reads only in[0..len), never stops at a
 * NUL and writes only out[0..cap). Decoded octets are passwords: apart from
 * looking for the final '=', the decoder neither branches on an input
 * character nor uses one as a table index.
 */
#ifndef RINGMTA_CORE_BASE64_H
#define RINGMTA_CORE_BASE64_H

#include <stddef.h>
#include <stdint.h>

/* Room base64_encode needs for n octets, including the NUL. */
#define BASE64_ENCODED_SIZE(n) (((n) + 2) / 3 * 4 + 1)
/* Room that always suffices for decoding len characters. */
#define BASE64_DECODED_MAX(len) ((len) / 4 * 3)

/*
 * Decodes in[0..len) into out[0..cap) and sets *outlen. Returns 0, -EINVAL
 * for anything but canonical base64 (empty input is valid and decodes to
 * nothing), or -ENOSPC when the result does not fit; -EINVAL wins when both
 * apply. On error *outlen is 0 and out holds no decoded octet.
 */
int base64_decode(const char *in, size_t len, uint8_t *out, size_t cap, size_t *outlen);

/*
 * Encodes in[0..len) into out with '=' padding and a NUL. Returns the length
 * without the NUL, or 0 when cap < BASE64_ENCODED_SIZE(len) (out untouched);
 * empty input also returns 0, with out = "".
 */
size_t base64_encode(const uint8_t *in, size_t len, char *out, size_t cap);

#endif
