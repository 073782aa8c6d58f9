/*
 * smtp_server - the inbound ESMTP session as a sans-I/O state machine.
 *
 * Per-connection, used only by the worker thread that owns the connection.
 * No fds, no clocks: io/ feeds it octets and events with the current time and
 * executes what it asks for (send the output buffer, store the body in the
 * spool, commit, close). Replies are appended to s->out; io/ takes the buffer
 * with smtp_server_take_output() before sending, so the session never writes
 * into memory the kernel is reading.
 *
 * The life of a message, as io/ sees it:
 *   smtp_server_input("MAIL...RCPT...DATA") -> action SMTP_ACT_BEGIN_BODY
 *   io: spool_msg_begin(); smtp_server_format_received() into the spool;
 *       smtp_server_body_started()                 -> "354" in s->out
 *   io: receive into the spool; smtp_server_body() for each read
 *       -> SMTP_BODY_MORE ... SMTP_BODY_COMMIT
 *   io: spool_msg_commit(); fdatasync; smtp_server_committed()  -> "250"
 * The 250 is produced only by smtp_server_committed(): the session cannot
 * acknowledge a message io/ did not declare durable.
 */
#ifndef RINGMTA_CORE_SMTP_SERVER_H
#define RINGMTA_CORE_SMTP_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "address.h"
#include "config.h"
#include "data_scan.h"
#include "netaddr.h"
#include "sasl.h"
#include "smtp_params.h"

enum smtp_state {
    SMTP_ST_GREETING = 0,  /* connected, banner not yet sent (greet pause) */
    SMTP_ST_CONNECTED,     /* banner sent, no EHLO/HELO yet */
    SMTP_ST_READY,         /* greeted, no transaction */
    SMTP_ST_MAIL,          /* MAIL accepted */
    SMTP_ST_RCPT,          /* at least one RCPT accepted */
    SMTP_ST_BODY,          /* receiving DATA or a BDAT chunk */
    SMTP_ST_COMMIT,        /* end of data seen, waiting for the spool sync */
    SMTP_ST_CLOSING,       /* final reply queued; close after it is sent */
};

struct smtp_outbuf {
    char *data;
    size_t len;
    size_t cap;
};

/* One recipient accepted in this transaction. */
struct smtp_rcpt {
    struct mailbox box;
    struct rcpt_params params;
};

/* MAIL .. end of data. Owned by the session; reset by RSET/HELO/end. */
struct smtp_txn {
    struct mailbox sender;
    struct mail_params params;
    struct smtp_rcpt *rcpts;
    uint32_t nrcpt;
    uint32_t rcpt_cap;
    uint32_t rcpt_rejected;
    bool bdat;                  /* body arrives by BDAT (not DATA) */
    bool bdat_last;             /* the current chunk is the LAST one */
    bool discarding;            /* body rejected midway: read and drop */
    uint64_t chunk_left;        /* BDAT octets still expected in this chunk */
    uint64_t body_size;         /* client octets stored (terminator excluded) */
    struct data_scan scan;
    const char *reject_code;    /* set when discarding: full reply line */
    uint64_t qid;               /* assigned by io/ at body start */
};

/* Actions io/ must carry out after a call; more than one may be set. */
enum {
    SMTP_ACT_SEND = 1u << 0,        /* s->out has octets */
    SMTP_ACT_BEGIN_BODY = 1u << 1,  /* start storing a message body */
    SMTP_ACT_CLOSE = 1u << 2,       /* close once the output is sent */
    SMTP_ACT_HOLD = 1u << 3,        /* tarpit: do not send before hold_until */
    SMTP_ACT_ABORT_BODY = 1u << 4,  /* drop the spool message being received */
    SMTP_ACT_STARTTLS = 1u << 5,    /* send s->out (the 220) in plaintext, then run
                                       the TLS handshake; nothing more is read as
                                       plaintext (smtp_server_tls_started follows) */
    SMTP_ACT_AUTH_CHECK = 1u << 6,  /* credentials to verify: take them with
                                       smtp_server_take_credentials, then
                                       smtp_server_auth_result */
};
/* io/ clears the bits it has acted on (s->actions &= ~bit). With
 * SMTP_ACT_BEGIN_BODY and s->txn.discarding set, the body is read and dropped:
 * io/ starts no spool message and feeds smtp_server_body() from any buffer. */

enum smtp_body_result {
    SMTP_BODY_MORE = 0,     /* keep receiving into the same place */
    SMTP_BODY_DISCARD,      /* stop storing (abort the spool message), keep feeding */
    SMTP_BODY_CHUNK_DONE,   /* BDAT chunk complete, not LAST: back to commands */
    SMTP_BODY_COMMIT,       /* complete and acceptable: commit, then committed() */
    SMTP_BODY_REJECTED,     /* complete but rejected; reply queued; abort the spool */
};

struct smtp_server {
    enum smtp_state state;
    const struct config *cfg;
    const struct relay_policy *relay;
    const char *hostname;
    struct netaddr client;
    char client_text[48];       /* client address as text */
    char helo[256];             /* last EHLO/HELO argument, sanitised */
    bool esmtp;                 /* greeted with EHLO: PIPELINING offered */
    bool authenticated;         /* SMTP AUTH succeeded (RFC 4954) */
    bool auth_available;        /* a password file is configured */
    bool auth_checking;         /* credentials handed to io/, no reply yet */
    struct sasl_server *sasl;   /* the exchange in progress, or NULL */
    char auth_user[256];        /* the authenticated identity, printable */
    enum listener_kind kind;    /* which kind of listener accepted the client */
    bool tls_available;         /* a certificate is configured: STARTTLS offered */
    bool tls_required;          /* MAIL only under TLS (smtpd_tls_security_level=encrypt) */
    bool tls_active;            /* the session runs over TLS */
    bool starttls_wait;         /* 220 for STARTTLS queued: input is discarded
                                   until the handshake is done */
    char tls_info[128];         /* "TLSv1.3 with cipher ..." for Received: */
    bool trusted;               /* client in relay_networks */
    uint32_t errors;            /* error replies so far (tarpit, hard limit) */
    uint32_t junk;              /* junk commands so far */
    uint32_t messages;          /* messages accepted on this connection */
    unsigned actions;           /* pending SMTP_ACT_* for io/ */
    uint64_t now_ms;
    uint64_t hold_until_ms;     /* tarpit: no output before this */
    uint64_t deadline_ms;       /* command or data deadline */
    struct smtp_outbuf out;
    /* command-line assembly and input waiting behind a pause */
    char *line;                 /* partial command line, cap = command_line_limit */
    uint32_t line_len;
    uint32_t line_cap;          /* allocated size of line */
    bool line_overflow;         /* discarding the rest of an over-long line */
    bool line_has_nul;
    uint8_t *pending;           /* octets received while the session can't take them */
    size_t pending_len;
    size_t pending_cap;
    struct smtp_txn txn;
};

void smtp_server_init(struct smtp_server *s, const struct config *cfg,
                      const struct relay_policy *relay, const char *hostname,
                      const struct netaddr *client, uint64_t now_ms);
void smtp_server_free(struct smtp_server *s);
/* What the listener offers; called after init, before greet. tls_available:
 * a certificate is configured (STARTTLS is offered on smtp and submission
 * listeners; a submissions listener is TLS from the first octet). */
void smtp_server_set_listener(struct smtp_server *s, enum listener_kind kind,
                              bool tls_available, bool tls_required);
/* AUTH PLAIN/LOGIN is offered (with smtpd_tls_auth_only: under TLS only). */
void smtp_server_set_auth(struct smtp_server *s, bool available);
/* After SMTP_ACT_AUTH_CHECK: copies the user name and password (NUL-
 * terminated) and wipes the session's copy. False when there is none. */
bool smtp_server_take_credentials(struct smtp_server *s, char *user, size_t usize,
                                  char *pass, size_t psize);
/* The verification's verdict: 235 2.7.0 and the client may relay, or
 * 535 5.7.8 (an error: counts toward the error limits). Resumes input. */
unsigned smtp_server_auth_result(struct smtp_server *s, bool ok, uint64_t now_ms);

/*
 * The TLS handshake completed (after STARTTLS, or at connect on an implicit
 * TLS listener, before the greeting). RFC 3207 §4.2: everything learnt
 * before is forgotten: the client must send EHLO again, and no earlier
 * transaction or authentication survives. proto and cipher are for
 * Received: and the logs.
 */
unsigned smtp_server_tls_started(struct smtp_server *s, const char *proto,
                                 const char *cipher, int bits, uint64_t now_ms);

/* Sends the 220 banner (after the greet pause, if any). */
unsigned smtp_server_greet(struct smtp_server *s, uint64_t now_ms);
/* Refuses the connection with one reply (e.g. "421 4.7.0 ... too many
 * connections") and asks to close. */
unsigned smtp_server_refuse(struct smtp_server *s, const char *reply_line);

/*
 * Octets received in command phase. The session consumes them all: complete
 * commands are executed, a partial line is kept, and octets that arrive while
 * it waits (for the spool, or in a tarpit pause) are kept in order for later.
 * Returns actions. When SMTP_ACT_BEGIN_BODY is set, io/ must call
 * smtp_server_take_body_prefix() to get octets that already arrived after a
 * BDAT command line; they belong to the chunk.
 */
unsigned smtp_server_input(struct smtp_server *s, const uint8_t *p, size_t n,
                           uint64_t now_ms);

/* After BEGIN_BODY: the queue id is assigned; writes the Received: header
 * for this message into buf (cap octets). Returns its length, or 0 if it
 * does not fit. Time of day comes from now_ms (unix milliseconds). */
size_t smtp_server_format_received(struct smtp_server *s, uint64_t qid, char *buf,
                                   size_t cap, uint64_t unix_ms);
/* The spool accepted the message start: sends 354 (DATA) or starts reading
 * the chunk (BDAT). */
unsigned smtp_server_body_started(struct smtp_server *s);
/* The spool ran out of room mid-body (err -ENOSPC or -EIO): the rest is
 * read and dropped, then 452 4.3.1 / 451 4.3.0. */
void smtp_server_body_storage_failed(struct smtp_server *s, int err);
/* The spool could not start the message: err is -ENOSPC (452 4.3.1) or
 * anything else (451 4.3.0). */
unsigned smtp_server_body_refused(struct smtp_server *s, int err);

/*
 * Body octets, already stored by io/ at their place in the spool. *consumed
 * is how many belong to the message (including the DATA terminator); the rest
 * belong to the command stream and must be given to smtp_server_input().
 * For BDAT, pending chunk octets handed over by take_body_prefix go through
 * here too.
 */
enum smtp_body_result smtp_server_body(struct smtp_server *s, const uint8_t *p, size_t n,
                                       size_t *consumed, uint64_t now_ms);
/* Octets of the stored body (client octets, terminator excluded): what the
 * COMMIT record must say, plus the Received header io/ wrote first. */
uint64_t smtp_server_body_length(const struct smtp_server *s);
/* The message just received came by DATA and no line of it began with '.':
 * its stored (wire) form is also its unstuffed form (spool
 * SPOOL_BODY_NO_DOT_LINES). Valid from the end of data until the next MAIL. */
bool smtp_server_body_has_no_dot_lines(const struct smtp_server *s);
/* The spool reported the message durable (res 0) or failed (-errno). Sends
 * 250 with the queue id, or 451/452. Resumes pending input. */
unsigned smtp_server_committed(struct smtp_server *s, int res, uint64_t now_ms);

/* Octets received after a BDAT command line in the same read: they are the
 * beginning of the chunk. Returns how many are available at *p (they stay
 * valid until the next call into the session). */
size_t smtp_server_take_body_prefix(struct smtp_server *s, const uint8_t **p);
void smtp_server_drop_body_prefix(struct smtp_server *s, size_t n);

/* Periodic check: deadlines (421 4.4.2) and the end of a tarpit pause. */
unsigned smtp_server_tick(struct smtp_server *s, uint64_t now_ms);
/* The peer went away or io/ gave up: drop the transaction. */
void smtp_server_abort(struct smtp_server *s);

/* Output for io/: swaps the session's buffer with *buf (which must be empty,
 * its allocation is reused). */
void smtp_server_take_output(struct smtp_server *s, struct smtp_outbuf *buf);

const char *smtp_state_name(enum smtp_state st);
/* Queue id as 16 lowercase hex digits plus NUL. */
void smtp_qid_format(uint64_t qid, char out[17]);

#endif
