/*
 * data_scan - the message-content scanner run over every body octet as it
 * lands in the spool: finds the end of DATA, enforces the content policy,
 * counts Received: headers.
 *
 * Per-session state, no allocation, resumable at any octet boundary (a
 * terminator or a header name may straddle two reads).
 *
 * Content policy (the same for DATA and BDAT, documented in README):
 *   - Lines end with CRLF. A bare LF or bare CR anywhere in the content marks
 *     the message for rejection (554 5.6.0 at the end). A bare LF never starts
 *     a new line for the end-of-data test, so "\n.\n", "\n.\r\n", "\r\n.\n" and
 *     "\r.\r" never end DATA: the only terminator is CRLF "." CRLF. This is
 *     what defeats SMTP smuggling (CVE-2023-51764/5/6).
 *   - A line longer than body_line_limit octets (CRLF and a stuffing dot not
 *     counted) marks the message for rejection (RFC 5322 §2.1.1: 998).
 *   - A header section larger than header_size_limit marks it too.
 * Stored octets are the wire form (dot-stuffed for DATA), so delivery can send
 * them unchanged.
 */
#ifndef RINGMTA_CORE_DATA_SCAN_H
#define RINGMTA_CORE_DATA_SCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum data_scan_mode { DATA_SCAN_DOT = 0, DATA_SCAN_RAW = 1 };

enum {
    DATA_SCAN_BARE_LF = 1u << 0,
    DATA_SCAN_BARE_CR = 1u << 1,
    DATA_SCAN_LONG_LINE = 1u << 2,
    DATA_SCAN_BIG_HEADER = 1u << 3,
};

struct data_scan {
    uint8_t mode;
    uint8_t state;              /* terminator/line state */
    uint8_t hdr_match;          /* octets of "received:" matched at line start */
    bool in_header;             /* still in the header section */
    bool line_dot;              /* current line began with '.' (DATA) */
    uint32_t line_len;
    uint32_t received;          /* Received: header lines seen */
    uint32_t dot_lines;         /* DATA: lines stuffed with a leading '.' (the
                                   terminator not counted). 0: the stored octets
                                   are also the unstuffed message (BDAT form) */
    uint32_t flags;             /* DATA_SCAN_* violations */
    uint32_t body_line_limit;
    uint64_t header_size_limit;
    uint64_t header_bytes;
    uint64_t total;             /* octets scanned, terminator included */
};

void data_scan_init(struct data_scan *s, enum data_scan_mode mode,
                    uint32_t body_line_limit, uint64_t header_size_limit);
/*
 * Scans p[0..n). Returns the octets consumed: n, or (DATA mode) fewer when
 * the terminator CRLF.CRLF was completed, in which case *end is set and the
 * return value counts up to and including the terminator's LF. In RAW mode
 * the caller bounds n by the BDAT chunk size and *end is never set.
 */
size_t data_scan_feed(struct data_scan *s, const uint8_t *p, size_t n, bool *end);
/* End of a RAW (BDAT) message, at LAST: a CR left waiting for its LF was a
 * bare CR. (A last line without any line end is fine; RFC 3030 leaves it to
 * the sender, and delivery by DATA adds the CRLF.) */
void data_scan_finish(struct data_scan *s);

#endif
