/*
 * bench_msg - the messages the load generator sends: a realistic header block
 * and a body of short lines, some starting with '.', plus the dot-stuffing
 * that puts them on the wire (RFC 5321 4.5.2).
 *
 * Built once before the worker threads start, then read-only and shared by
 * all of them; per message only the header copy is written (the sequence
 * number appears in Subject and Message-ID at fixed offsets, fixed width, so
 * every header of a run has the same length and every size class one filler).
 */
#ifndef RINGMTA_BENCH_MSG_H
#define RINGMTA_BENCH_MSG_H

#include <stddef.h>
#include <stdint.h>

/* Longest body line the generator writes, CRLF excluded (RFC 5322 2.1.1: 78). */
#define BENCH_MSG_LINE_MAX 78

struct bench_msg_header {
    char *text;         /* the header block including the empty line; owned */
    size_t len;
    size_t seq_off[2];  /* where the 16 hex digits of the sequence go */
};

struct bench_msg_filler {
    char *raw;          /* body lines as the recipient should see them; owned */
    size_t raw_len;
    char *stuffed;      /* the same, dot-stuffed for DATA; owned */
    size_t stuffed_len;
};

/*
 * Builds the header template. from is the envelope sender; rcpts addresses are
 * rcpt1@domain .. rcptN@domain; run_id makes Message-IDs unique across runs.
 * date is an RFC 5322 date-time of fixed width.
 */
void bench_msg_header_build(struct bench_msg_header *h, const char *from, unsigned rcpts,
                            const char *domain, const char *msgid_host, uint32_t run_id,
                            const char *date);
/* Writes a header for message seq into dst (h->len bytes). */
void bench_msg_header_fill(const struct bench_msg_header *h, char *dst, uint64_t seq);
void bench_msg_header_free(struct bench_msg_header *h);

/*
 * Builds a filler of exactly len raw bytes (len == 1 gives 0: a line needs its
 * CRLF): lines of at most BENCH_MSG_LINE_MAX characters, each ending in CRLF,
 * some starting with '.' and one being just ".".
 */
void bench_msg_filler_build(struct bench_msg_filler *f, size_t len);
void bench_msg_filler_free(struct bench_msg_filler *f);

/*
 * Dot-stuffs len bytes that start at the beginning of a line into dst, which
 * must hold bench_msg_stuffed_max(len) bytes. Returns the stuffed length.
 */
size_t bench_msg_stuff(const char *src, size_t len, char *dst);
size_t bench_msg_stuffed_max(size_t len);

#endif
