/*
 * smtp_reply - building SMTP replies into an output buffer.
 *
 * Per-session buffers, no I/O. Every reply line ends in CRLF; multi-line
 * replies use "code-" continuation (RFC 5321 §4.2.1). Texts given here are
 * ours, never the client's: client octets are escaped before they are quoted.
 */
#ifndef RINGMTA_CORE_SMTP_REPLY_H
#define RINGMTA_CORE_SMTP_REPLY_H

#include <stdarg.h>
#include <stddef.h>

#include "smtp_server.h"

void outbuf_append(struct smtp_outbuf *b, const void *p, size_t n);
void outbuf_free(struct smtp_outbuf *b);
/* Appends one formatted line plus CRLF (at most 1021 octets of text). A
 * format without conversions is copied as it is, without printf. */
void outbuf_printf_line(struct smtp_outbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void outbuf_vprintf_line(struct smtp_outbuf *b, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));
/* Appends the text s plus CRLF. */
void outbuf_put_line(struct smtp_outbuf *b, const char *s);

/* Reply code of a full reply line ("250 2.0.0 Ok" -> 250). */
int smtp_reply_code(const char *line);

#endif
