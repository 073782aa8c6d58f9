/*
 * envelope - the SMTP envelope of one message and its spool encoding.
 *
 * Any thread; an envelope is plain data owned by whoever holds it. The
 * encoding is a sequence of typed, length-prefixed fields (u16 tag, u32 len,
 * bytes), so a field can hold any octet, CR, LF and NUL included, and reading
 * back always yields the same single field (RELIABILITY row 15). Unknown tags
 * are skipped, so newer versions can add fields. Attacker bytes never go into
 * a line-based format.
 */
#ifndef RINGMTA_QUEUE_ENVELOPE_H
#define RINGMTA_QUEUE_ENVELOPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum rcpt_state {
    RCPT_PENDING = 0,
    RCPT_DELIVERED = 1,
    RCPT_DEFERRED = 2,
    RCPT_FAILED = 3,
};

struct envelope_rcpt {
    char *addr;                 /* as received, without <> */
    char *orcpt;                /* decoded ORCPT value or NULL */
    uint8_t notify;             /* NOTIFY_* bits (core/smtp_params.h), 0 = unset */
    uint8_t state;              /* enum rcpt_state (runtime, from RCPT_STATUS) */
    bool delay_warned;          /* a delay notice was sent (runtime, from RCPT_STATUS) */
};

struct envelope {
    char *sender;               /* "" for the null sender <> */
    struct envelope_rcpt *rcpts;
    uint32_t nrcpt;
    char *client_addr;          /* "192.0.2.1" */
    char *client_helo;          /* EHLO/HELO argument */
    char *auth_id;              /* authenticated identity or NULL */
    char *envid;                /* DSN ENVID or NULL */
    uint64_t arrival_ms;        /* unix time in milliseconds */
    uint64_t size_hint;         /* SIZE= or 0 */
    uint8_t body_type;          /* enum mail_body */
    uint8_t ret;                /* enum mail_ret */
    bool smtputf8;
};

/* Exact encoded size, then encoding into out[0..size). */
size_t envelope_encoded_size(const struct envelope *env);
void envelope_encode(const struct envelope *env, uint8_t *out);
/* Decodes into a fresh envelope (all strings allocated). Returns 0 or -1 for
 * truncated or malformed input; never reads past p + len. */
int envelope_decode(const uint8_t *p, size_t len, struct envelope *out);
/* Deep copy. */
void envelope_copy(struct envelope *dst, const struct envelope *src);
void envelope_free(struct envelope *env);

#endif
