/*
 * bench_reply - the load generator's resumable SMTP reply reader.
 *
 * Per session, never shared. Collects reply lines across reads of any size,
 * joins multi-line replies ("250-..." ... "250 ..."), and notes the EHLO
 * keywords the generator cares about. Hard limit: lines longer than
 * BENCH_REPLY_LINE_MAX are an error (RFC 5321 4.5.3.1.5: 512 octets).
 */
#ifndef RINGMTA_BENCH_REPLY_H
#define RINGMTA_BENCH_REPLY_H

#include <stdbool.h>
#include <stddef.h>

#define BENCH_REPLY_LINE_MAX 1024

/* EHLO keywords seen in the reply just completed (lines after the first). */
#define BENCH_REPLY_EXT_PIPELINING 0x1
#define BENCH_REPLY_EXT_CHUNKING   0x2
#define BENCH_REPLY_EXT_8BITMIME   0x4
#define BENCH_REPLY_EXT_SIZE       0x8
#define BENCH_REPLY_EXT_STARTTLS   0x10

enum bench_reply_event {
    BENCH_REPLY_AGAIN, /* input used up: feed more */
    BENCH_REPLY_DONE,  /* r->code and r->ext describe one complete reply */
    BENCH_REPLY_ERROR, /* malformed or overlong reply: drop the connection */
};

struct bench_reply {
    int code;      /* valid after DONE */
    unsigned ext;  /* valid after DONE */
    bool done;     /* the previous feed completed a reply; the next starts fresh */
    size_t len;
    char line[BENCH_REPLY_LINE_MAX + 1]; /* the line being read; after DONE its last line */
};

void bench_reply_init(struct bench_reply *r);
/* Consumes input up to and including the next complete reply; *used says how much. */
enum bench_reply_event bench_reply_feed(struct bench_reply *r, const char *in, size_t len,
                                        size_t *used);

#endif
