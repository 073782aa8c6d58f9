/*
 * data_scan - end-of-data detection and content policy, one octet at a time.
 *
 * Per-session, no allocation. The state machine only ever treats CRLF as a
 * line break: a bare LF or CR is recorded as a violation and the scan stays
 * "inside a line", so no sequence built from bare line ends can complete the
 * CRLF "." CRLF terminator (SMTP smuggling). The fast path skips runs of
 * ordinary octets with memchr (scan_next_break); the slow path handles CR,
 * LF, the dot at line start and header-name matching.
 */
#include "data_scan.h"

#include <string.h>

enum scan_state {
    SCAN_BOL = 0,   /* at the start of a line (after CRLF, or at DATA start) */
    SCAN_TEXT,      /* inside a line */
    SCAN_CR,        /* inside a line, just saw CR */
    SCAN_DOT,       /* line so far is "." */
    SCAN_DOT_CR,    /* line so far is ".\r" */
};

static const char received_name[] = "received:";

void
data_scan_init(struct data_scan *s, enum data_scan_mode mode, uint32_t body_line_limit,
               uint64_t header_size_limit)
{
    memset(s, 0, sizeof *s);
    s->mode = (uint8_t)mode;
    s->state = SCAN_BOL;
    s->in_header = true;
    s->body_line_limit = body_line_limit;
    s->header_size_limit = header_size_limit;
}

/* A CRLF completed a line: apply the per-line checks and move to BOL. */
static void
scan_end_line(struct data_scan *s)
{
    uint32_t len = s->line_len - (s->line_dot ? 1 : 0);
    if (s->body_line_limit && len > s->body_line_limit)
        s->flags |= DATA_SCAN_LONG_LINE;
    if (s->in_header && s->line_len == 0)
        s->in_header = false;   /* the empty line ends the header section */
    s->line_len = 0;
    s->line_dot = false;
    s->hdr_match = 0;
    s->state = SCAN_BOL;
}

/* An ordinary octet (not CR or LF) inside a line. */
static inline void
scan_text_octet(struct data_scan *s, uint8_t c)
{
    if (s->in_header && s->hdr_match < sizeof received_name - 1
        && s->hdr_match == s->line_len) {
        uint8_t lc = (c >= 'A' && c <= 'Z') ? (uint8_t)(c + 32) : c;
        if (lc == (uint8_t)received_name[s->hdr_match]) {
            s->hdr_match++;
            if (s->hdr_match == sizeof received_name - 1)
                s->received++;
        } else {
            s->hdr_match = sizeof received_name; /* no match on this line */
        }
    }
    s->line_len++;
    s->state = SCAN_TEXT;
}

/*
 * The first CR or LF in p[i..n), or n. *lf caches the position of the next
 * LF at or after i (n when there is none; stale when below i), so a run of
 * bare CRs never scans the rest of the buffer again for the LF: both
 * searches only ever move forward, and the whole feed stays linear.
 */
static inline size_t
scan_next_break(const uint8_t *p, size_t i, size_t n, size_t *lf)
{
    if (*lf < i) {
        const uint8_t *q = memchr(p + i, '\n', n - i);
        *lf = q != NULL ? (size_t)(q - p) : n;
    }
    const uint8_t *cr = memchr(p + i, '\r', *lf - i);
    return cr != NULL ? (size_t)(cr - p) : *lf;
}

/* Adds octets of the header section and checks its limit. */
static void
scan_header_bytes(struct data_scan *s, size_t n)
{
    s->header_bytes += n;
    if (s->header_size_limit && s->header_bytes > s->header_size_limit)
        s->flags |= DATA_SCAN_BIG_HEADER;
}

size_t
data_scan_feed(struct data_scan *s, const uint8_t *p, size_t n, bool *end)
{
    size_t i = 0;
    /* Fix: the header octets of this feed are counted where the header
     * ends (blank line or terminator), not only when the feed ends inside
     * the header; otherwise a whole header section arriving in one read
     * was never measured. */
    bool hdr = s->in_header;
    size_t lf = 0;   /* scan_next_break's cache: stale until first used (i >= 1) */
    *end = false;
    while (i < n) {
        uint8_t c = p[i++];
        switch (s->state) {
        case SCAN_BOL:
            if (c == '.' && s->mode == DATA_SCAN_DOT) {
                s->state = SCAN_DOT;
                s->line_dot = true;
                s->dot_lines++;
                s->line_len = 1;
                s->hdr_match = sizeof received_name;
            } else if (c == '\r') {
                s->state = SCAN_CR;
            } else if (c == '\n') {
                s->flags |= DATA_SCAN_BARE_LF;
                scan_text_octet(s, c);
            } else {
                scan_text_octet(s, c);
            }
            break;
        case SCAN_TEXT:
            if (c == '\r') {
                s->state = SCAN_CR;
            } else if (c == '\n') {
                s->flags |= DATA_SCAN_BARE_LF;
                s->line_len++;
            } else {
                /* Fast path: run of ordinary octets outside header matching. */
                if (s->hdr_match >= sizeof received_name - 1 || !s->in_header) {
                    size_t j = scan_next_break(p, i, n, &lf);
                    s->line_len += (uint32_t)(j - i + 1);
                    /* Body lines in a row: CRLF and an ordinary octet end
                     * this line and start the next without a round of the
                     * state machine per octet (a dot, CR or LF takes it). */
                    while (!s->in_header && j + 2 < n && p[j] == '\r' && p[j + 1] == '\n'
                           && p[j + 2] != '.' && p[j + 2] != '\r' && p[j + 2] != '\n') {
                        scan_end_line(s);
                        size_t k = j + 3;   /* p[j + 2] opens the new line */
                        j = scan_next_break(p, k, n, &lf);
                        s->line_len = (uint32_t)(j - k + 1);
                        s->state = SCAN_TEXT;
                    }
                    i = j;
                } else {
                    scan_text_octet(s, c);
                }
            }
            break;
        case SCAN_CR:
            if (c == '\n') {
                scan_end_line(s);
            } else {
                s->flags |= DATA_SCAN_BARE_CR;
                s->line_len++;          /* the CR stays part of the line */
                if (c == '\r') {
                    s->state = SCAN_CR;
                } else {
                    scan_text_octet(s, c);
                }
            }
            break;
        case SCAN_DOT:
            if (c == '\r') {
                s->state = SCAN_DOT_CR;
            } else if (c == '\n') {
                s->flags |= DATA_SCAN_BARE_LF;
                s->line_len++;
                s->state = SCAN_TEXT;
            } else {
                s->line_len++;
                s->state = SCAN_TEXT;
            }
            break;
        case SCAN_DOT_CR:
            if (c == '\n') {
                /* CRLF "." CRLF: the end of DATA. Its dot stuffed nothing. */
                s->dot_lines--;
                s->total += i;
                if (s->in_header)
                    scan_header_bytes(s, i);
                s->state = SCAN_BOL;
                s->line_len = 0;
                s->line_dot = false;
                *end = true;
                return i;
            }
            s->flags |= DATA_SCAN_BARE_CR;
            s->line_len++;
            s->state = (c == '\r') ? SCAN_CR : SCAN_TEXT;
            if (c != '\r')
                s->line_len++;
            break;
        }
        if (s->body_line_limit && s->line_len > s->body_line_limit + 1u)
            s->flags |= DATA_SCAN_LONG_LINE;
        if (hdr && !s->in_header) {
            scan_header_bytes(s, i);   /* up to and including the blank line */
            hdr = false;
        }
    }
    s->total += n;
    if (s->in_header)
        scan_header_bytes(s, n);
    return n;
}

void
data_scan_finish(struct data_scan *s)
{
    if (s->state == SCAN_CR || s->state == SCAN_DOT_CR)
        s->flags |= DATA_SCAN_BARE_CR;
}
