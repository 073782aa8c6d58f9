/*
 * bench_reply - resumable SMTP reply reader (see bench_reply.h).
 * Per session, never shared.
 */
#include "bench_reply.h"

#include <string.h>
#include <strings.h>

void
bench_reply_init(struct bench_reply *r)
{
    r->code = 0;
    r->ext = 0;
    r->done = false;
    r->len = 0;
    r->line[0] = '\0';
}

/* Title: EHLO keyword of one reply line's text, as an EXT bit (0 if none). */
static unsigned
reply_keyword(const char *text, size_t n)
{
    static const struct {
        const char *word;
        unsigned bit;
    } words[] = {
        {"PIPELINING", BENCH_REPLY_EXT_PIPELINING},
        {"CHUNKING", BENCH_REPLY_EXT_CHUNKING},
        {"8BITMIME", BENCH_REPLY_EXT_8BITMIME},
        {"SIZE", BENCH_REPLY_EXT_SIZE},
        {"STARTTLS", BENCH_REPLY_EXT_STARTTLS},
    };
    size_t wlen = 0;
    while (wlen < n && text[wlen] != ' ')
        wlen++;
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
        if (strlen(words[i].word) == wlen && strncasecmp(words[i].word, text, wlen) == 0)
            return words[i].bit;
    return 0;
}

/*
 * RFC 5321 4.2: Reply-line = *( Reply-code "-" [ textstring ] CRLF )
 *                            Reply-code [ SP textstring ] CRLF
 * Every line of one reply carries the same code.
 */
enum bench_reply_event
bench_reply_feed(struct bench_reply *r, const char *in, size_t len, size_t *used)
{
    if (r->done) {
        r->done = false;
        r->code = 0;
        r->ext = 0;
    }
    size_t off = 0;
    while (off < len) {
        const char *lf = memchr(in + off, '\n', len - off);
        size_t take = lf ? (size_t)(lf - (in + off)) : len - off;
        if (r->len + take > BENCH_REPLY_LINE_MAX) {
            *used = off + take;
            return BENCH_REPLY_ERROR;
        }
        memcpy(r->line + r->len, in + off, take);
        r->len += take;
        off += take;
        if (lf == NULL)
            break;
        off++; /* the LF */
        if (r->len > 0 && r->line[r->len - 1] == '\r')
            r->len--;
        r->line[r->len] = '\0';

        const char *l = r->line;
        if (r->len < 3 || l[0] < '2' || l[0] > '5' || l[1] < '0' || l[1] > '9' || l[2] < '0' ||
            l[2] > '9' || (r->len > 3 && l[3] != ' ' && l[3] != '-')) {
            *used = off;
            return BENCH_REPLY_ERROR;
        }
        int code = (l[0] - '0') * 100 + (l[1] - '0') * 10 + (l[2] - '0');
        if (r->code != 0 && code != r->code) {
            *used = off;
            return BENCH_REPLY_ERROR;
        }
        /* RFC 5321 4.1.1.1: an EHLO reply's first line is the domain and a
         * greeting; keywords are on the lines after it. */
        bool first_line = r->code == 0;
        r->code = code;
        if (!first_line && r->len > 4)
            r->ext |= reply_keyword(l + 4, r->len - 4);
        bool last = r->len == 3 || l[3] == ' ';
        r->len = 0;
        if (last) {
            r->done = true;
            *used = off;
            return BENCH_REPLY_DONE;
        }
    }
    *used = off;
    return BENCH_REPLY_AGAIN;
}
