/*
 * smtp_params - ESMTP parameters of MAIL and RCPT (RFC 5321 §4.1.2, 1870,
 * 6152, 6531, 3461, 4954), and xtext (RFC 3461 §4).
 *
 * Any thread, no state. Parsing is strict and bounded: a keyword appears at
 * most once, values are checked before anything is stored, numbers never
 * wrap, xtext never decodes to CR, LF or NUL.
 */
#ifndef RINGMTA_CORE_SMTP_PARAMS_H
#define RINGMTA_CORE_SMTP_PARAMS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A rejection: the full reply is "<code> <enh> <text>". text is static. */
struct smtp_reject {
    uint16_t code;
    const char *enh;
    const char *text;
};

enum mail_body { MAIL_BODY_UNSPEC = 0, MAIL_BODY_7BIT, MAIL_BODY_8BITMIME };
enum mail_ret { MAIL_RET_UNSPEC = 0, MAIL_RET_FULL, MAIL_RET_HDRS };

#define SMTP_ENVID_MAX 100     /* RFC 3461 §4.4 */
#define SMTP_ORCPT_MAX 500     /* RFC 3461 §4.2: 500 octets of xtext */
#define SMTP_AUTH_PARAM_MAX 500

struct mail_params {
    bool has_size;
    uint64_t size;
    enum mail_body body;
    bool smtputf8;
    enum mail_ret ret;
    bool has_envid;
    char envid[SMTP_ENVID_MAX + 1];     /* decoded xtext, printable ASCII only */
    bool has_auth;
    char auth[SMTP_AUTH_PARAM_MAX + 1]; /* decoded xtext; "<>" kept as "<>" */
};

enum { NOTIFY_NEVER = 1, NOTIFY_SUCCESS = 2, NOTIFY_FAILURE = 4, NOTIFY_DELAY = 8 };

struct rcpt_params {
    uint8_t notify;                      /* 0 = not given */
    bool has_orcpt;
    char orcpt_type[32];                 /* addr-type, e.g. "rfc822" */
    char orcpt[SMTP_ORCPT_MAX + 1];      /* decoded xtext */
};

/* What the server offers, so parameters it did not advertise are refused. */
struct smtp_param_caps {
    bool dsn;        /* RET, ENVID, NOTIFY, ORCPT */
    bool smtputf8;
    bool auth;       /* AUTH= on MAIL */
};

/*
 * Parses the parameters after the path: p points at the first octet after
 * '>', normally " KEY=VALUE KEY ..." (one or more SP between params). Returns
 * 0 with out filled, or -1 with *rej set:
 *   501 5.5.4 for syntax (X=, =, duplicates, bad numbers, bad xtext, SIZE=,
 *   SIZE=-1, SIZE=18446744073709551616), 555 5.5.4 for unknown keywords or
 *   ones not advertised.
 * Does not apply the size limit: callers compare params.size themselves.
 */
int smtp_parse_mail_params(const char *p, size_t len, const struct smtp_param_caps *caps,
                           struct mail_params *out, struct smtp_reject *rej);
int smtp_parse_rcpt_params(const char *p, size_t len, const struct smtp_param_caps *caps,
                           struct rcpt_params *out, struct smtp_reject *rej);

/*
 * Decodes xtext into out (outsize includes the NUL). Rejects "+zz", a
 * trailing "+", lowercase hex, "+" followed by anything but two uppercase hex
 * digits, octets outside 33..126, '=' unencoded, and any decoded octet
 * outside 0x20..0x7e (so no CR, LF, NUL). Returns decoded length or -1.
 */
int xtext_decode(const char *in, size_t inlen, char *out, size_t outsize);
/* Encodes in as xtext; returns the length or -1 if out is too small. */
int xtext_encode(const char *in, size_t inlen, char *out, size_t outsize);

#endif
