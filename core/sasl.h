/*
 * sasl - the server side of an SMTP AUTH exchange (RFC 4954) for the PLAIN
 * (RFC 4616) and LOGIN mechanisms, as a sans-I/O state machine.
 *
 * Per-connection, used only by the thread that owns the session. The session
 * calls sasl_server_start with what follows "AUTH ", sends "334 <challenge>"
 * while the status is SASL_CHALLENGE, passes every following line (CRLF
 * removed) to sasl_server_step, and on SASL_CHECK verifies s->user and s->pass
 * (io/authpool), then calls sasl_server_reset. No credential is checked here.
 *
 * Invariants: any status but SASL_CHALLENGE ends the exchange; every status
 * but SASL_CHALLENGE and SASL_CHECK has already wiped the state, so the next
 * AUTH starts fresh. On SASL_CHECK, user and pass are NUL-terminated, 1..255
 * octets, NUL-free, and the user name is valid UTF-8 without control
 * characters (sasl_user_valid). Secrets never outlive the exchange: decoded
 * responses are wiped before a call returns, user and pass by
 * sasl_server_reset (explicit_bzero). Input is read only within [line,
 * line + len), whatever its length; the session's line limit is not relied on.
 */
#ifndef RINGMTA_CORE_SASL_H
#define RINGMTA_CORE_SASL_H

#include <stdbool.h>
#include <stddef.h>

/* RFC 4616 §2: the server "MUST be capable of accepting authzid, authcid,
 * and passwd of up to and including 255 octets". Longer is refused. */
#define SASL_USER_MAX 255
#define SASL_PASS_MAX 255
/* Room for any challenge sasl_server_start or _step writes, NUL included. */
#define SASL_CHALLENGE_SIZE 16

enum sasl_mech { SASL_MECH_NONE = 0, SASL_MECH_PLAIN, SASL_MECH_LOGIN };

enum sasl_status {
    SASL_CHALLENGE,         /* send "334 <challenge>" (base64, may be ""), then
                             * pass the client's next line to sasl_server_step */
    SASL_CHECK,             /* credentials complete: verify user and pass, then
                             * sasl_server_reset; 235 2.7.0 or 535 5.7.8 */
    SASL_BAD_MECH,          /* 504 5.5.4: mechanism not supported */
    SASL_BAD_SYNTAX,        /* 501 5.5.2: not base64, malformed, too long, or
                             * no exchange in progress */
    SASL_CANCELLED,         /* the client sent "*": 501 5.7.0 */
    SASL_BAD_CREDS_FORMAT,  /* well-formed but unusable: empty user or password,
                             * NUL inside one, a PLAIN authzid other than the
                             * authcid, a user name that is not clean UTF-8:
                             * 535 5.7.8 */
};

/* Where the exchange stands: which response the next line is. */
enum sasl_step {
    SASL_STEP_IDLE = 0,          /* no exchange */
    SASL_STEP_PLAIN_RESPONSE,    /* PLAIN: authzid NUL authcid NUL passwd */
    SASL_STEP_LOGIN_USER,        /* LOGIN: answer to "Username:" */
    SASL_STEP_LOGIN_PASS,        /* LOGIN: answer to "Password:" */
    SASL_STEP_DONE,              /* SASL_CHECK returned; user and pass are set */
};

struct sasl_server {
    enum sasl_mech mech;         /* SASL_MECH_NONE when idle */
    enum sasl_step step;
    char user[SASL_USER_MAX + 1];
    char pass[SASL_PASS_MAX + 1];
    size_t user_len, pass_len;
};

/* An idle exchange (all zero). */
void sasl_server_init(struct sasl_server *s);

/*
 * "AUTH <mech> [initial-response]": args is what follows "AUTH ", e.g.
 * "PLAIN", "login dXNlcg==", "PLAIN =" ("=" is an empty initial response,
 * RFC 4954 §4; "*" cancels as in a later step). Mechanism names are
 * case-insensitive; trailing spaces are ignored; anything else around the
 * one SP is SASL_BAD_SYNTAX. Always starts a new exchange, wiping any
 * earlier one. The challenge is written to challenge[0..cap) with a NUL;
 * cap >= SASL_CHALLENGE_SIZE (a smaller cap is a caller bug and ends the
 * exchange with SASL_BAD_SYNTAX).
 */
enum sasl_status sasl_server_start(struct sasl_server *s, const char *args, size_t len,
                                   char *challenge, size_t cap);

/* One client line (CRLF removed) answering a challenge: base64, possibly
 * empty, or "*" to cancel. Same challenge buffer rules as sasl_server_start. */
enum sasl_status sasl_server_step(struct sasl_server *s, const char *line, size_t len,
                                  char *challenge, size_t cap);

/* Ends the exchange: wipes user and pass (explicit_bzero), back to idle. */
void sasl_server_reset(struct sasl_server *s);

/* "PLAIN LOGIN": the mechanisms, for the EHLO "250-AUTH" line. */
const char *sasl_mech_list(void);

/* The reply line (no CRLF) for a status that ends an exchange without a
 * credential check, e.g. "504 5.5.4 Unrecognized authentication type";
 * NULL for SASL_CHALLENGE and SASL_CHECK. Static text. */
const char *sasl_status_reply(enum sasl_status st);

/* A user name SASL can deliver: 1..SASL_USER_MAX octets of UTF-8 (RFC 3629)
 * with no C0 or C1 control character and no DEL. For the password file too. */
bool sasl_user_valid(const char *p, size_t len);

#endif
