/*
 * body_xform - resumable dot-stuffing of a raw (BDAT) body for DATA, the
 * final-CRLF rule, and unstuffing of a DATA-form body for BDAT. See
 * body_xform.h for the exact transforms.
 *
 * Per-delivery state owned by one thread; no allocation. Invariants: every
 * input octet is consumed exactly once; the output never holds <CR|LF> "."
 * followed by anything but a second '.'; line_start survives chunk and output
 * boundaries, so where the caller splits the body never changes the output.
 */
#include "body_xform.h"

#include <string.h>

void
body_xform_init(struct body_xform *x)
{
    memset(x, 0, sizeof *x);
    x->line_start = true;   /* the body's first octet starts a line */
}

/* Remembers the last two input octets of a consumed run in[0..n). */
static void
body_xform_keep_tail(struct body_xform *x, const uint8_t *in, size_t n)
{
    if (n >= 2) {
        x->tail[0] = in[n - 2];
        x->tail[1] = in[n - 1];
        x->ntail = 2;
    } else if (n == 1) {
        x->tail[0] = x->tail[1];
        x->tail[1] = in[0];
        x->ntail = x->ntail < 2 ? (uint8_t)(x->ntail + 1) : 2;
    }
}

/* Dot-stuffs one run of input into the output. */
size_t
body_xform_stuff(struct body_xform *x, const uint8_t *in, size_t n, size_t *in_used,
                 uint8_t *out, size_t cap)
{
    size_t i = 0, o = 0;
    if (x->dot_owed && cap > 0) {
        out[o++] = '.';
        x->dot_owed = false;
    }
    while (i < n && o < cap && !x->dot_owed) {
        if (x->line_start && in[i] == '.') {
            /* RFC 5321 §4.5.2: "Before sending a line of mail text, the
             * SMTP client checks the first character of the line. If it
             * is a period, one additional period is inserted at the
             * beginning of the line." */
            out[o++] = '.';
            if (o < cap)
                out[o++] = '.';
            else
                x->dot_owed = true;
            x->line_start = false;
            i++;
            continue;
        }
        /* Copy up to and including the next line end (CR or LF, bare or
         * not: after either, a '.' is stuffed). */
        size_t room = cap - o, avail = n - i;
        size_t run = avail < room ? avail : room;
        size_t k = 0;
        while (k < run && in[i + k] != '\r' && in[i + k] != '\n')
            k++;
        if (k < run) {
            k++;   /* the line end itself */
            x->line_start = true;
        } else {
            x->line_start = false;
        }
        memcpy(out + o, in + i, k);
        o += k;
        i += k;
    }
    body_xform_keep_tail(x, in, i);
    x->in_total += i;
    x->out_total += o;
    *in_used = i;
    return o;
}

bool
body_xform_pending_crlf(const struct body_xform *x)
{
    if (x->in_total == 0)
        return false;
    return !(x->ntail == 2 && x->tail[0] == '\r' && x->tail[1] == '\n');
}

size_t
body_xform_finish(struct body_xform *x, uint8_t *out, size_t cap)
{
    size_t o = 0;
    if (cap < BODY_XFORM_FINISH_MAX)
        return 0;
    if (x->dot_owed) {
        out[o++] = '.';
        x->dot_owed = false;
    }
    if (body_xform_pending_crlf(x)) {
        /* RFC 3030 lets a BDAT body end without a line end; DATA cannot
         * (the terminator is CRLF "." CRLF), so the line is completed. */
        out[o++] = '\r';
        out[o++] = '\n';
        x->tail[0] = '\r';
        x->tail[1] = '\n';
        x->ntail = 2;
        x->line_start = true;
    }
    x->out_total += o;
    return o;
}

bool
body_xform_needs_final_crlf(const uint8_t *body, size_t len)
{
    if (len == 0)
        return false;
    return !(len >= 2 && body[len - 2] == '\r' && body[len - 1] == '\n');
}

void
body_unstuff_init(struct body_unstuff *u)
{
    u->line_start = true;   /* a '.' first in the body was stuffed */
    u->cr = false;
}

size_t
body_unstuff_run(struct body_unstuff *u, const uint8_t *in, size_t n, bool *drop)
{
    *drop = false;
    if (n == 0)
        return 0;
    if (u->line_start && in[0] == '.') {
        *drop = true;
        u->line_start = false;
        u->cr = false;
        return 0;
    }
    /* Lines end at LF; the line after one opens with a stuffing dot only
     * when CR came before it (a bare LF ends no line for the scanner). */
    size_t i = 0;
    const uint8_t *lf;
    while ((lf = memchr(in + i, '\n', n - i)) != NULL) {
        size_t k = (size_t)(lf - in);
        bool crlf = k > 0 ? in[k - 1] == '\r' : u->cr;
        i = k + 1;
        if (!crlf)
            continue;
        if (i == n) {
            u->line_start = true;
            u->cr = false;
            return n;
        }
        if (in[i] == '.') {
            *drop = true;
            u->line_start = false;
            u->cr = false;
            return i;
        }
    }
    u->line_start = false;
    u->cr = in[n - 1] == '\r';
    return n;
}

uint64_t
body_unstuff_count(struct body_unstuff *u, const uint8_t *in, size_t n)
{
    uint64_t dots = 0;
    while (n > 0) {
        bool drop;
        size_t k = body_unstuff_run(u, in, n, &drop);
        if (drop) {
            dots++;
            k++;
        }
        in += k;
        n -= k;
    }
    return dots;
}
