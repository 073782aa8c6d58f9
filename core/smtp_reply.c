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
    /* Formatted in place, into the room the buffer has (at least a short
     * line's worth); a longer line is formatted again once its length is
     * known. The buffer never grows by more than the line: a session's
     * buffer stays small while it idles (10 000 idle sessions). */
    outbuf_reserve(b, 128);
    size_t room = b->cap - b->len;
    if (room > OUTBUF_LINE_MAX)
        room = OUTBUF_LINE_MAX;
    va_list again;
    va_copy(again, ap);
    int n = vsnprintf((char *)b->data + b->len, room - 2, fmt, ap);
    if (n < 0)
        n = 0;
    if ((size_t)n > OUTBUF_LINE_MAX - 3)
        n = OUTBUF_LINE_MAX - 3;
    if ((size_t)n + 3 > room) {
        outbuf_reserve(b, (size_t)n + 3);
        (void)vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, again);
    }
    va_end(again);
    char *line = (char *)b->data + b->len;
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
