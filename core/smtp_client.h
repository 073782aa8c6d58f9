/*
 * smtp_client - the outbound ESMTP session (delivery) as a sans-I/O state
 * machine: RFC 5321, 1869, 2920 (PIPELINING), 1870 (SIZE), 6152 (8BITMIME),
 * 6531 (SMTPUTF8), 3030 (CHUNKING), 2034 (ENHANCEDSTATUSCODES), 3207
 * (STARTTLS, the command step only).
 *
 * Per-connection, used only by the worker thread that owns the connection.
 * No fds, no clocks, no logging: io/ feeds it the peer's octets and events
 * with the current time (ms, any monotonic base), executes the actions it
 * returns, and logs from the state it exposes (state name, last reply,
 * per-recipient results, failure).
 *
 * The life of a connection, as io/ sees it:
 *   smtp_client_init()                        waits for the 220 greeting
 *   smtp_client_input(peer octets)            -> "EHLO" (SEND) ... -> IDLE
 *   smtp_client_send(msg)                     -> "MAIL...RCPT...[DATA]" (SEND)
 *   smtp_client_input(replies)                -> SEND_BODY (+ SEND for BDAT)
 *   io: stream the body (below); smtp_client_body_progress() per write;
 *       smtp_client_body_sent()               -> ".\r\n" (SEND, DATA only)
 *   smtp_client_input(final reply)            -> RESULTS | IDLE
 *   io: read smtp_client_result(c, i) for each recipient, record them;
 *       then smtp_client_send(next msg) or smtp_client_quit()
 *   smtp_client_tick(now) whenever now >= smtp_client_deadline(c).
 * A failure at any point (timeout, protocol error, 421, peer closed) sets
 * c->failed and c->failure, decides every recipient still open as DEFERRED,
 * and asks to CLOSE (RESULTS too when a message was in flight). Before any
 * message (greeting, EHLO/HELO) there are no results: c->failure.code tells
 * io/ what the host said (4xx, or 5xx such as a 554 greeting: "no service
 * here"; RFC 5321 §3.1) and the scheduler decides (next MX, defer, or
 * bounce when every host refuses). failure.code 0 means no reply: a timeout
 * or lost connection (enh 4.4.2), a protocol error (4.5.0), TLS (4.7.0).
 *
 * What io/ sends for the body when SEND_BODY is set (c->txn.body_mode), always
 * after the octets of the output buffer taken with the same actions:
 *   SMTPC_BODY_VERBATIM  the body_len octets exactly as stored, nothing added.
 *                        Used for STORED_DATA by DATA (the stored form is
 *                        already dot-stuffed CRLF lines ending in CRLF, or
 *                        empty), and for STORED_RAW by "BDAT <body_len> LAST"
 *                        (the client has put that command line in the output
 *                        just before).
 *   SMTPC_BODY_STUFF     STORED_RAW to a peer without CHUNKING, by DATA: the
 *                        body through body_xform_stuff() (core/body_xform.h),
 *                        then body_xform_finish() (a final CRLF if missing).
 *   SMTPC_BODY_UNSTUFF   STORED_DATA with msg->unstuffed_len known, by
 *                        "BDAT <unstuffed_len> LAST": the body less its
 *                        stuffing dots (body_unstuff_run(), same header).
 * Then io/ calls smtp_client_body_sent(); for DATA the client adds ".\r\n"
 * to its output. The body never passes through this module: io/ sends it
 * from the spool mapping.
 */
#ifndef RINGMTA_CORE_SMTP_CLIENT_H
#define RINGMTA_CORE_SMTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "smtp_server.h"   /* struct smtp_outbuf */

/* Reply parser limits (RELIABILITY row 14). RFC 5321 §4.5.3.1.5 allows 512
 * octets per reply line; we tolerate four times that, then give up. */
#define SMTPC_LINE_MAX 2048        /* octets per reply line, line end included */
#define SMTPC_REPLY_LINES_MAX 100  /* lines per reply */
#define SMTPC_TEXT_MAX 256         /* stored reply text, NUL included */
#define SMTPC_ENH_MAX 12           /* "5.123.123" plus NUL */
#define SMTPC_AUTH_FIELD_MAX 255   /* user name, password (RFC 4616 limits) */

enum smtpc_state {
    SMTPC_ST_BANNER = 0,   /* connected, waiting for the 220 greeting */
    SMTPC_ST_EHLO,         /* EHLO sent */
    SMTPC_ST_HELO,         /* HELO sent (EHLO got 5xx) */
    SMTPC_ST_STARTTLS,     /* STARTTLS sent, waiting for 220 */
    SMTPC_ST_TLS,          /* 220 to STARTTLS: io/ runs the TLS handshake */
    SMTPC_ST_AUTH,         /* AUTH sent (RFC 4954), waiting for 334 or 235 */
    SMTPC_ST_READY,        /* idle: takes a message or QUIT */
    SMTPC_ST_MAIL,         /* waiting for the reply to MAIL */
    SMTPC_ST_RCPT,         /* waiting for RCPT replies */
    SMTPC_ST_DATA,         /* waiting for the reply to DATA (354) */
    SMTPC_ST_BODY,         /* io/ streams the body */
    SMTPC_ST_DOT,          /* waiting for the final reply (after "." or BDAT LAST) */
    SMTPC_ST_RSET,         /* waiting for the reply to RSET */
    SMTPC_ST_QUIT,         /* waiting for the reply to QUIT */
    SMTPC_ST_CLOSED,       /* finished; io/ closes */
};

/* Actions io/ must carry out after a call; more than one may be set. io/
 * clears the bits it has acted on (c->actions &= ~bit), like smtp_server. */
enum {
    SMTPC_ACT_SEND = 1u << 0,       /* c->out has octets: take_output() and send */
    SMTPC_ACT_SEND_BODY = 1u << 1,  /* after the output: stream the body (above) */
    SMTPC_ACT_START_TLS = 1u << 2,  /* run the TLS handshake, then smtp_client_tls_done() */
    SMTPC_ACT_RESULTS = 1u << 3,    /* the transaction ended: read the results */
    SMTPC_ACT_IDLE = 1u << 4,       /* ready for smtp_client_send() or quit() */
    SMTPC_ACT_CLOSE = 1u << 5,      /* close once the output is sent */
};

/* How the stored body was received (queue/spool.h SPOOL_BODY_RAW). */
enum smtpc_body_form {
    SMTPC_STORED_DATA = 0,  /* dot-stuffed CRLF wire form ending in CRLF, or empty */
    SMTPC_STORED_RAW,       /* BDAT octets, not stuffed, may lack a final CRLF */
    SMTPC_STORED_DATA_NO_DOT_LINES, /* DATA form in which no line begins with
                                       '.': also the unstuffed message, so
                                       it goes by DATA or BDAT as it is */
};

/* What io/ sends for the body (the client decides, see above). */
enum smtpc_body_mode {
    SMTPC_BODY_VERBATIM = 0,
    SMTPC_BODY_STUFF,
    SMTPC_BODY_UNSTUFF,
};

/*
 * One message for one destination. Nothing here is copied: the strings and
 * the array must stay valid until the transaction ends (RESULTS) or the
 * session is freed. Addresses are NUL-terminated, without angle brackets;
 * sender "" is the null reverse-path <>.
 */
struct smtpc_msg {
    const char *sender;
    const char *const *rcpts;
    uint32_t nrcpt;
    uint64_t body_len;          /* octets stored in the spool */
    uint64_t size;              /* SIZE= (RFC 1870); 0 = body_len */
    enum smtpc_body_form body_form;
    /* STORED_DATA only: io/ offers to send the body unstuffed, which is
     * unstuffed_len octets (body_unstuff_count()); it then goes by BDAT to
     * a peer with CHUNKING. Without the offer such a body goes by DATA. */
    bool unstuffed_offered;
    uint64_t unstuffed_len;
    bool needs_smtputf8;        /* the envelope or headers need SMTPUTF8 */
    bool body_8bit;             /* octets >= 0x80 in the body (or BODY=8BITMIME) */
};

enum smtpc_class {
    SMTPC_PENDING = 0,          /* not decided yet (never after RESULTS) */
    SMTPC_DELIVERED,            /* the peer took responsibility (250 after the body) */
    SMTPC_DEFERRED,             /* try again later: 4xx, or a connection failure */
    SMTPC_FAILED,               /* permanent: 5xx, or a refusal decided here */
};

/*
 * A reply, or a decision made here. code is the peer's reply code, or 0 when
 * the client decided without a reply (timeout, protocol error, lost
 * connection, SMTPUTF8/8BITMIME/SIZE refusal). enh is the RFC 3463 code: from
 * the reply when it carries a valid one of the same class (advertised or
 * not, like Postfix), else derived ("2.0.0", "4.0.0", "5.0.0").
 * text is the reply's lines as received (code and separator included) joined
 * by one space, truncated to SMTPC_TEXT_MAX - 1; octets outside 0x20..0x7e
 * are stored as '?', so it is printable ASCII (still escape '\' for logs).
 */
struct smtpc_reply {
    uint16_t code;
    char enh[SMTPC_ENH_MAX];
    char text[SMTPC_TEXT_MAX];
};

struct smtpc_result {
    enum smtpc_class cls;
    struct smtpc_reply reply;
};

/* What the peer's EHLO reply offered (all false after HELO). */
struct smtpc_caps {
    bool pipelining;
    bool size;                  /* SIZE advertised */
    uint64_t size_max;          /* its value; 0 = no fixed maximum */
    bool eightbitmime;
    bool smtputf8;
    bool chunking;
    bool enhancedstatuscodes;
    bool dsn;
    bool starttls;
    bool auth;                  /* AUTH advertised ... */
    bool auth_plain;            /* ... with PLAIN */
    bool auth_login;            /* ... with LOGIN */
};

/* The transaction of the message in flight. Owned by the session. */
struct smtpc_txn {
    const struct smtpc_msg *msg;   /* NULL once the results are out */
    struct smtpc_result *results;  /* nres entries, one per msg->rcpts[i] */
    uint8_t *rstate;               /* per recipient: RCPT sent/replied/accepted */
    uint32_t cap;                  /* allocated entries */
    uint32_t nres;                 /* entries valid (msg->nrcpt) */
    uint32_t next_send;            /* next recipient to consider for RCPT */
    uint32_t next_reply;           /* first recipient whose RCPT reply may be due */
    uint32_t accepted;             /* RCPT 2xx so far */
    bool mail_ok;                  /* MAIL got 2xx */
    bool smtputf8;                 /* MAIL carries SMTPUTF8 */
    bool bdat;                     /* the body goes by BDAT */
    uint64_t bdat_len;             /* its chunk size: what io/ sends in body_mode */
    bool data_sent;                /* DATA is part of the pipelined group */
    bool bdat_sent;                /* BDAT LAST and its chunk are part of the pipelined group */
    bool body_streaming;           /* io/ is handing the body over (SEND_BODY to body_sent) */
    bool empty_dot;                /* 354 with nobody accepted: a lone "." went out */
    enum smtpc_body_mode body_mode;
};

/* Reply assembly: a resumable line machine with hard limits. */
struct smtpc_parser {
    char line[SMTPC_LINE_MAX];
    uint32_t len;               /* octets of the current line so far */
    uint32_t lines;             /* complete lines of the current reply */
    uint32_t tlen;              /* octets in cur.text */
    bool unsolicited;           /* the reply began with no command outstanding */
    struct smtpc_reply cur;     /* the reply being assembled */
};

struct smtp_client {
    enum smtpc_state state;
    enum smtpc_state prev_state;   /* for debugging: the last transition */
    const struct config *cfg;
    const char *helo_name;         /* not copied */
    unsigned actions;              /* pending SMTPC_ACT_* for io/ */
    uint64_t now_ms;
    uint64_t deadline_ms;          /* UINT64_MAX: none */
    bool esmtp;                    /* EHLO accepted */
    bool want_starttls;            /* smtp_client_set_starttls() */
    bool require_tls;              /* smtp_client_require_tls() */
    const char *auth_user;         /* smtp_client_set_auth(), not copied */
    const char *auth_pass;
    bool authenticated;            /* 235 to our AUTH */
    unsigned auth_step;            /* LOGIN: challenges answered */
    bool tls_active;               /* handshake completed */
    bool tls_refused;              /* STARTTLS offered but refused */
    uint32_t discarded;            /* octets dropped after 220 to STARTTLS */
    uint32_t queued;               /* commands in c->out, not yet taken by io/ */
    uint32_t inflight;             /* commands taken by io/ whose reply is due */
    uint32_t messages;             /* transactions finished on this connection */
    struct smtpc_caps caps;
    struct smtpc_caps ehlo_caps;   /* being parsed from an EHLO reply */
    struct smtpc_reply last;       /* the last complete reply */
    bool failed;                   /* connection-level failure (see failure) */
    enum smtpc_state fail_state;   /* state in which it failed */
    struct smtpc_reply failure;    /* why: the peer's reply or our text */
    struct smtp_outbuf out;
    struct smtpc_parser parser;
    struct smtpc_txn txn;
};

/* Starts a session on a connected socket; waits for the greeting with the
 * smtp_helo_timeout. cfg and helo_name are not copied. */
void smtp_client_init(struct smtp_client *c, const struct config *cfg, const char *helo_name,
                      uint64_t now_ms);
void smtp_client_free(struct smtp_client *c);

/* Before the EHLO reply arrives: issue STARTTLS when the peer offers it.
 * On 220 the client discards every octet already received after that reply
 * (CVE-2021-38371, RELIABILITY row 8) and sets START_TLS; io/ must also
 * drop any plaintext it holds, run the handshake and call
 * smtp_client_tls_done(). A refused STARTTLS continues in plaintext
 * (c->tls_refused) unless TLS is required. */
void smtp_client_set_starttls(struct smtp_client *c, bool enable);
/* TLS is required (smtp_tls_security_level encrypt or verify): a host that
 * does not offer STARTTLS, or refuses it, fails the connection with 4.7.4
 * after a QUIT (every recipient deferred). Implies set_starttls(true). */
void smtp_client_require_tls(struct smtp_client *c, bool require);
/* Credentials for a smarthost (smtp_sasl_password_file): after EHLO (after
 * TLS when STARTTLS runs), AUTH PLAIN, or LOGIN when only that is offered.
 * 235 goes on; any other reply fails the connection (every recipient
 * deferred, like Postfix's smtp_sasl_auth_soft_bounce). A host that offers
 * no AUTH gets the mail without it. user and pass are not copied. */
void smtp_client_set_auth(struct smtp_client *c, const char *user, const char *pass);
/* The handshake finished: res 0 sends EHLO again with everything learnt
 * before forgotten (RFC 3207 §4.2); res < 0 fails the connection (4.7.5,
 * why says what went wrong, may be NULL). */
unsigned smtp_client_tls_done(struct smtp_client *c, int res, const char *why, uint64_t now_ms);

/*
 * Octets from the peer, in order, any split. Complete replies are acted on;
 * a partial line is kept (at most SMTPC_LINE_MAX octets). Input while io/
 * streams the body, or after the session closed, is a protocol error or
 * ignored respectively. Bare LF is accepted as a reply line end (as
 * Postfix's client does): replies carry no content we relay, and refusing
 * them only defers mail to sloppy servers. Returns actions.
 */
unsigned smtp_client_input(struct smtp_client *c, const uint8_t *p, size_t n, uint64_t now_ms);

/*
 * Starts the transaction of msg when the session is idle (state READY);
 * otherwise does nothing (check smtp_client_idle()). Refusals decided
 * without talking to the peer (SMTPUTF8, 8BITMIME, SIZE, recipients with
 * octets no command line may carry) set RESULTS at once; the session stays
 * idle. Returns actions.
 */
unsigned smtp_client_send(struct smtp_client *c, const struct smtpc_msg *msg, uint64_t now_ms);
bool smtp_client_idle(const struct smtp_client *c);

/* io/ wrote some body octets: the smtp_data_xfer_timeout starts again. */
void smtp_client_body_progress(struct smtp_client *c, uint64_t now_ms);
/* io/ sent the whole body (SEND_BODY): DATA gets its terminator, then the
 * client waits for the final reply (smtp_data_done_timeout). */
unsigned smtp_client_body_sent(struct smtp_client *c, uint64_t now_ms);

/* Ends an idle session politely with QUIT; CLOSE follows its reply. */
unsigned smtp_client_quit(struct smtp_client *c, uint64_t now_ms);
/* The peer closed, reset, or a send failed. After the final dot (or BDAT
 * LAST) this defers the recipients: the peer may have the message
 * (duplicate risk accepted, RFC 5321 §6.1: duplicates, never loss). */
unsigned smtp_client_peer_closed(struct smtp_client *c, uint64_t now_ms);

/* The next deadline (UINT64_MAX: none); tick() at or after it fails the
 * connection with a timeout (RFC 5321 §4.5.3.2). */
uint64_t smtp_client_deadline(const struct smtp_client *c);
unsigned smtp_client_tick(struct smtp_client *c, uint64_t now_ms);

/* Output for io/: swaps the session's buffer with *buf (its allocation is
 * reused); the commands in it now count as sent (their replies are due). */
void smtp_client_take_output(struct smtp_client *c, struct smtp_outbuf *buf);

/* Result of recipient i (index into msg->rcpts) of the current or just
 * finished message, NULL past nrcpt; valid until the next
 * smtp_client_send() or free. */
const struct smtpc_result *smtp_client_result(const struct smtp_client *c, uint32_t i);

const char *smtp_client_state_name(enum smtpc_state st);
/* Where a failure happened, for log lines: "while receiving the initial
 * greeting", "after RCPT TO", "after end of data"... */
const char *smtp_client_state_context(enum smtpc_state st);

#endif
