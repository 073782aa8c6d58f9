/*
 * utf8 - strict UTF-8 validation (RFC 3629) for SMTPUTF8 addresses.
 *
 * Any thread, no state. Rejects overlong forms (C0 AF), surrogates (ED A0 80),
 * code points above U+10FFFF (F4 90 80 80), stray continuation bytes and
 * truncated sequences. Never reads past p + len.
 */
#ifndef RINGMTA_CORE_UTF8_H
#define RINGMTA_CORE_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

bool utf8_valid(const void *p, size_t len);
/* True when every byte is below 0x80. */
bool utf8_is_ascii(const void *p, size_t len);

#endif
