/*
 * smtp_reply - reply buffers for the server session.
 * Per-session, no I/O; allocation through core/alloc.
 */
#include "smtp_reply.h"

#include <stdio.h>
#include <string.h>

#include "alloc.h"

static void
outbuf_reserve(struct smtp_outbuf *b, size_t extra)
{
    if (b->len + extra <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra)
        cap *= 2;
    b->data = xrealloc(b->data, cap);
    b->cap = cap;
}

void
outbuf_append(struct smtp_outbuf *b, const void *p, size_t n)
{
    outbuf_reserve(b, n);
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

void
outbuf_free(struct smtp_outbuf *b)
{
    b->data = xfree(b->data);
    b->len = b->cap = 0;
}

#define OUTBUF_LINE_MAX 1024   /* a line with its CRLF */

void
outbuf_put_line(struct smtp_outbuf *b, const char *s)
{
    size_t n = strlen(s);
    if (n > OUTBUF_LINE_MAX - 3)
        n = OUTBUF_LINE_MAX - 3;
    outbuf_reserve(b, n + 2);
    memcpy(b->data + b->len, s, n);
    memcpy(b->data + b->len + n, "\r\n", 2);
    b->len += n + 2;
}

void
outbuf_vprintf_line(struct smtp_outbuf *b, const char *fmt, va_list ap)
{
    if (strchr(fmt, '%') == NULL) {
        outbuf_put_line(b, fmt);
        return;
    }
    /* Formatted in place: room for the longest line, then CRLF. */
    outbuf_reserve(b, OUTBUF_LINE_MAX);
    char *line = (char *)b->data + b->len;
    int n = vsnprintf(line, OUTBUF_LINE_MAX - 2, fmt, ap);
    if (n < 0)
        n = 0;
    if ((size_t)n > OUTBUF_LINE_MAX - 3)
        n = OUTBUF_LINE_MAX - 3;
    line[n++] = '\r';
    line[n++] = '\n';
    b->len += (size_t)n;
}

void
outbuf_printf_line(struct smtp_outbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    outbuf_vprintf_line(b, fmt, ap);
    va_end(ap);
}

int
smtp_reply_code(const char *line)
{
    if (line[0] < '2' || line[0] > '5' || line[1] < '0' || line[1] > '9' || line[2] < '0'
        || line[2] > '9')
        return 0;
    return (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
}
