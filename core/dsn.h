/*
 * dsn - delivery status notifications (RFC 3464): bounces, delay warnings
 * and success reports, as complete messages ready for the queue.
 *
 * Any thread, no state, no I/O, no clocks: the caller passes the time, the
 * facts of the original message and a way to read its content, and gets a
 * heap buffer back. The envelope of the notification is the caller's job:
 * its sender is always the null path (DSN_ENVELOPE_SENDER), so a
 * notification never causes another one, and its only recipient is the
 * original sender, after dsn_should_notify() said yes.
 *
 * Invariants of every message dsn_build() returns:
 *   - DATA wire form: CRLF line ends only (no bare CR or LF), dot-stuffed,
 *     no line over 998 octets on the wire (a stuffing dot included), and no
 *     final ".\r\n" (the caller's transport adds it);
 *   - multipart/report; report-type=delivery-status with three parts:
 *     text/plain, message/delivery-status, then the original message
 *     (message/rfc822) or its header (text/rfc822-headers). The third part
 *     is left out when the caller has no content to give;
 *   - the multipart boundary occurs nowhere in any part;
 *   - attacker text (remote replies, addresses, ENVID, ORCPT) is reduced to
 *     printable ASCII (UTF-8 addresses under SMTPUTF8, see below), bounded
 *     and folded before it reaches a header-like line.
 *
 * The original content is un-stuffed and normalised (a bare CR or LF becomes
 * CRLF) on the way in, and re-stuffed on the way out, so "." lines and
 * "\r\n.\r\n" inside the original survive the round trip. A content line
 * longer than 998 octets is split (XXX: the returned copy then differs from
 * the original; the spool's line limit normally prevents such lines).
 *
 * SMTPUTF8 originals (RFC 6533): the report uses message/global-delivery-status
 * and returns message/global or message/global-headers; a non-ASCII
 * recipient is reported with the "utf-8" address type. Diagnostic text stays
 * ASCII even then (8-bit octets become '?'). The result says whether it needs
 * SMTPUTF8 or 8BITMIME to be sent.
 */
#ifndef RINGMTA_CORE_DSN_H
#define RINGMTA_CORE_DSN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "smtp_params.h"

/* The envelope sender of every notification: the null reverse-path. */
#define DSN_ENVELOPE_SENDER ""

/* RET=FULL above this many octets of original content: headers only. */
#define DSN_FULL_LIMIT_DEFAULT (10u * 1024 * 1024)
/* Diagnostic text is cut to this many octets (after sanitising). */
#define DSN_DIAG_MAX 1000

/* Action field values (RFC 3464 §2.3.3). */
enum dsn_action {
    DSN_ACTION_FAILED = 0,
    DSN_ACTION_DELAYED,
    DSN_ACTION_DELIVERED,
    DSN_ACTION_RELAYED,     /* handed to a peer that does not do DSN */
    DSN_ACTION_EXPANDED,    /* delivered to an alias or list and expanded */
};

/* What the whole report is, from the recipients it lists: any failure makes
 * it a bounce, else any delay a warning, else a success report. */
enum dsn_kind {
    DSN_KIND_FAILURE = 0,   /* "Undelivered Mail Returned to Sender" */
    DSN_KIND_DELAY,         /* "Delayed Mail (still being retried)" */
    DSN_KIND_SUCCESS,       /* "Successful Mail Delivery Report" */
};

/* One recipient of the report. Nothing is copied or freed by dsn_build(). */
struct dsn_rcpt {
    const char *addr;           /* final recipient, without <>; required */
    const char *orcpt_type;     /* ORCPT addr-type, NULL = "rfc822" */
    const char *orcpt;          /* ORCPT value, xtext-decoded; NULL = none */
    enum dsn_action action;
    const char *status;         /* enhanced code "5.1.1"; NULL or malformed:
                                   5.0.0 / 4.0.0 / 2.0.0 by action */
    const char *remote_mta;     /* host name "mx.example" (reported as
                                   "dns; mx.example"); NULL = none */
    const char *diag_type;      /* diagnostic-type, NULL = "smtp" */
    const char *diag;           /* remote reply or local reason, any octets
                                   (attacker-controlled); NULL = none */
    size_t diag_len;
    uint64_t last_attempt_ms;   /* unix ms; 0 = no Last-Attempt-Date */
    uint64_t retry_until_ms;    /* delayed only: unix ms; 0 = none */
};

/* One piece of the original content, in order. */
struct dsn_segment {
    const void *p;
    size_t len;
};

/*
 * Reads the next octets of the original content into buf (at most cap).
 * Returns the count, 0 at the end, or a negative error (-errno) that
 * dsn_build() returns unchanged.
 */
typedef long (*dsn_read_fn)(void *arg, void *buf, size_t cap);

enum dsn_content_form {
    DSN_CONTENT_DATA = 0,   /* dot-stuffed CRLF lines, as DATA stores them */
    DSN_CONTENT_RAW,        /* not stuffed, as BDAT stores it */
};

/* The report to build. Nothing is copied or freed by dsn_build(). */
struct dsn_report {
    const char *reporting_mta;  /* our host name; required */
    const char *sender;         /* original envelope sender (the To:), "" = <> */
    const char *envid;          /* ENVID, xtext-decoded; NULL = none */
    enum mail_ret ret;          /* RET; UNSPEC returns the full message */
    bool smtputf8;              /* the original came with SMTPUTF8 */
    uint64_t arrival_ms;        /* unix ms the original was accepted */
    uint64_t qid;               /* the original's queue id */
    const struct dsn_rcpt *rcpts;
    uint32_t nrcpt;             /* at least 1 */
    /* Original content: segs (if nseg > 0), else read (if non-NULL), else
     * none (the report then has no third part). */
    const struct dsn_segment *segs;
    size_t nseg;
    dsn_read_fn read;
    void *read_arg;
    enum dsn_content_form form;
    uint64_t full_limit;        /* 0 = DSN_FULL_LIMIT_DEFAULT */
};

/* A built notification. data is owned by the caller: dsn_output_free(). */
struct dsn_output {
    char *data;                 /* DATA wire form, without the final ".\r\n" */
    size_t len;
    enum dsn_kind kind;
    bool eightbit;              /* has 8-bit octets: send with BODY=8BITMIME */
    bool smtputf8;              /* needs SMTPUTF8 (UTF-8 in a header) */
    bool headers_only;          /* the third part is the header only */
    bool truncated;             /* headers only because of full_limit */
};

/*
 * Builds the notification for r at time now_ms (unix ms: Date, Message-ID).
 * Returns 0 with *out filled, or the negative value r->read returned (then
 * *out holds nothing to free; calling again with no content still gives a
 * two-part report). Allocation failure is fatal, as everywhere.
 */
int dsn_build(const struct dsn_report *r, uint64_t now_ms, struct dsn_output *out);
/* Frees out->data and zeroes *out. */
void dsn_output_free(struct dsn_output *out);

/*
 * Whether a notification with this action may go to sender for a recipient
 * with these NOTIFY_* bits (core/smtp_params.h, 0 = NOTIFY not given).
 * Never to the null sender ("" or "<>"; RELIABILITY row 45: log only).
 * NEVER: no. failed: unless NOTIFY was given without FAILURE. delayed: only
 * with DELAY (our default without NOTIFY is no). delivered, relayed,
 * expanded: only with SUCCESS.
 */
bool dsn_should_notify(const char *sender, uint8_t notify, enum dsn_action action);

/* "failed", "delayed", ... as in the Action field. */
const char *dsn_action_name(enum dsn_action action);

#endif
