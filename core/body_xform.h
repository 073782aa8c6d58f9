/*
 * body_xform - body form conversion for delivery: a BDAT (raw) body sent by
 * DATA gets dot-stuffed on the fly, and a CRLF when it does not end in one;
 * a stored DATA-form body sent by BDAT loses its stuffing dots
 * (body_unstuff, below).
 *
 * Per-delivery state, no allocation, no I/O; owned by whoever streams the
 * body (io/, one worker thread). Resumable at any octet boundary of the
 * input and of the output: io/ feeds the body chunk by chunk, straight from
 * the spool mapping, into a send buffer of any size.
 *
 * The transform (RELIABILITY rows 1, 3, 4): the output is the input with
 *   - one '.' added before every '.' that starts the body or follows a CR or
 *     an LF octet, and
 *   - CRLF appended when the body is not empty and does not end in CRLF
 *     (body_xform_finish()).
 * For a body with CRLF-only line ends (the only kind the inbound session
 * accepts) this is exactly RFC 5321 §4.5.2 transparency. Doubling a dot after
 * a *bare* CR or LF too is defence in depth: no octet sequence <CR|LF> "."
 * <CR|LF> can then appear in the output, so not even a lenient next hop can
 * find an end of data inside the content (SMTP smuggling). A "\r\n.\r\n"
 * inside BDAT content (row 4) is data and comes out as "\r\n..\r\n".
 * The octets sent this way are the body only; the DATA terminator ".\r\n"
 * is the SMTP client's (core/smtp_client.h).
 */
#ifndef RINGMTA_CORE_BODY_XFORM_H
#define RINGMTA_CORE_BODY_XFORM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Most octets body_xform_finish() writes: an owed '.' and CRLF. */
#define BODY_XFORM_FINISH_MAX 3

struct body_xform {
    bool line_start;            /* the next input octet starts a line */
    bool dot_owed;              /* the output ran out between the two dots */
    uint8_t ntail;              /* valid octets in tail (0..2) */
    uint8_t tail[2];            /* the last two input octets consumed */
    uint64_t in_total;          /* input octets consumed */
    uint64_t out_total;         /* output octets produced (finish included) */
};

void body_xform_init(struct body_xform *x);

/*
 * Dot-stuffs in[0..n) into out[0..cap). Returns the octets written; *in_used
 * is set to the input octets consumed. Stops when the input is used up or
 * the output is full; call again with the rest (and more room). An input
 * octet is consumed only when its output fits, except a stuffed dot, whose
 * second '.' may be owed to the next call (cap 1 always makes progress).
 */
size_t body_xform_stuff(struct body_xform *x, const uint8_t *in, size_t n, size_t *in_used,
                        uint8_t *out, size_t cap);

/*
 * After the last input octet: writes what is still owed (a '.') and the
 * final CRLF when the body is not empty and does not end in CRLF. cap must
 * be at least BODY_XFORM_FINISH_MAX. Returns the octets written (0..3).
 */
size_t body_xform_finish(struct body_xform *x, uint8_t *out, size_t cap);

/*
 * Whether a raw body needs a final CRLF to be sent by DATA: true when it is
 * not empty and does not end in CRLF (RFC 3030 lets a BDAT body end
 * anywhere). body is the whole body, len its length.
 */
bool body_xform_needs_final_crlf(const uint8_t *body, size_t len);

/* The same question while streaming: after the whole body went through
 * body_xform_stuff(), whether body_xform_finish() will add a CRLF. */
bool body_xform_pending_crlf(const struct body_xform *x);

/*
 * body_unstuff - the other way: a body stored in DATA wire form (dot-stuffed,
 * queue/spool.h) sent by BDAT, which carries the message itself. The
 * stuffing dot is the one the inbound scanner (core/data_scan.c) counted:
 * a '.' that starts the body or follows CRLF; the receiver of DATA drops it
 * (RFC 5321 §4.5.2), so we drop it. Nothing is copied: the body goes out as
 * the runs between stuffing dots, straight from the spool mapping.
 * Resumable at any octet boundary (the body spans extents).
 */
struct body_unstuff {
    bool line_start;            /* the next octet starts a line */
    bool cr;                    /* the last octet was CR */
};

void body_unstuff_init(struct body_unstuff *u);

/*
 * The next run of in[0..n) that goes out as it is: returns its length k.
 * When *drop is set, in[k] is a stuffing dot: the caller skips it (k + 1
 * octets consumed); otherwise all n are consumed. Call again with the rest.
 */
size_t body_unstuff_run(struct body_unstuff *u, const uint8_t *in, size_t n, bool *drop);

/* The stuffing dots in in[0..n), continuing from u: the unstuffed length of
 * a body is its stored length minus the dots of all its pieces. */
uint64_t body_unstuff_count(struct body_unstuff *u, const uint8_t *in, size_t n);

#endif
