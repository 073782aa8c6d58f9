/*
 * smtp_client - outbound ESMTP session as an explicit state machine (see
 * smtp_client.h for the contract with io/).
 *
 * Per-connection, owned by one worker thread; no I/O, no clock reads, no
 * logging. The state is the reply the client waits for; smtpc_states[] gives
 * each state its name, its timeout (RFC 5321 §4.5.3.2) and its reply
 * handler. Every state change goes through smtpc_enter_state(), which also
 * arms the deadline.
 *
 * Invariants:
 *   - a recipient is DELIVERED only by a 2xx reply to the end of its body
 *     (DATA's "." or BDAT LAST) after a 2xx to its RCPT;
 *   - once a message is given, every recipient gets exactly one final class
 *     before RESULTS is set, whatever the peer does;
 *   - reply lines are at most SMTPC_LINE_MAX octets and replies at most
 *     SMTPC_REPLY_LINES_MAX lines; beyond that, or on any malformed line, the
 *     connection fails as a protocol error (RELIABILITY row 14): memory stays
 *     flat whatever the peer sends;
 *   - a reply is matched to a command only if that command was taken by io/
 *     (sent) before the reply's first octet arrived: a peer answering ahead
 *     can never make us take its reply for a later command;
 *   - no octet below 0x20 ever goes into a command line we write.
 */
#include "smtp_client.h"

#include "base64.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "address.h"
#include "alloc.h"
#include "smtp_reply.h"

#define SMTPC_NO_TIMEOUT SIZE_MAX

/* Per-recipient bookkeeping (txn.rstate). */
enum {
    RS_SENT = 1u << 0,       /* RCPT written */
    RS_REPLIED = 1u << 1,    /* its reply consumed */
    RS_ACCEPTED = 1u << 2,   /* its reply was 2xx */
};

static void on_banner(struct smtp_client *c, const struct smtpc_reply *r);
static void on_ehlo(struct smtp_client *c, const struct smtpc_reply *r);
static void on_helo(struct smtp_client *c, const struct smtpc_reply *r);
static void on_starttls(struct smtp_client *c, const struct smtpc_reply *r);
static void on_auth(struct smtp_client *c, const struct smtpc_reply *r);
static void on_mail(struct smtp_client *c, const struct smtpc_reply *r);
static void on_rcpt(struct smtp_client *c, const struct smtpc_reply *r);
static void on_data(struct smtp_client *c, const struct smtpc_reply *r);
static void on_dot(struct smtp_client *c, const struct smtpc_reply *r);
static void on_rset(struct smtp_client *c, const struct smtpc_reply *r);
static void on_quit(struct smtp_client *c, const struct smtpc_reply *r);

struct smtpc_state_info {
    const char *name;
    const char *context;    /* for failure texts: "... after RCPT TO" */
    size_t timeout;         /* offsetof(struct config, ..._ms) or SMTPC_NO_TIMEOUT */
    /* The reply this state waits for arrived; NULL: no reply is expected
     * (a reply here is a protocol error, or a 421 closing notice). */
    void (*on_reply)(struct smtp_client *c, const struct smtpc_reply *r);
};

#define TMO(field) offsetof(struct config, field)

/*
 * RFC 5321 §4.5.3.2: "An SMTP client MUST provide a timeout mechanism. It
 * MUST use per-command timeouts rather than somehow trying to time the
 * entire mail transaction." The defaults in core/config.c are its values
 * (initial 220 and MAIL/RCPT 5 min, DATA initiation 2 min, data block 3 min,
 * DATA termination 10 min).
 */
static const struct smtpc_state_info smtpc_states[] = {
    [SMTPC_ST_BANNER] = { "banner", "while receiving the initial greeting",
                          TMO(smtp_helo_timeout_ms), on_banner },
    [SMTPC_ST_EHLO] = { "ehlo", "after EHLO", TMO(smtp_helo_timeout_ms), on_ehlo },
    [SMTPC_ST_HELO] = { "helo", "after HELO", TMO(smtp_helo_timeout_ms), on_helo },
    [SMTPC_ST_STARTTLS] = { "starttls", "after STARTTLS", TMO(smtp_helo_timeout_ms),
                            on_starttls },
    [SMTPC_ST_TLS] = { "tls", "during the TLS handshake", TMO(smtp_helo_timeout_ms), NULL },
    [SMTPC_ST_AUTH] = { "auth", "after AUTH", TMO(smtp_helo_timeout_ms), on_auth },
    [SMTPC_ST_READY] = { "ready", "while idle", SMTPC_NO_TIMEOUT, NULL },
    [SMTPC_ST_MAIL] = { "mail", "after MAIL FROM", TMO(smtp_mail_timeout_ms), on_mail },
    [SMTPC_ST_RCPT] = { "rcpt", "after RCPT TO", TMO(smtp_mail_timeout_ms), on_rcpt },
    [SMTPC_ST_DATA] = { "data", "after DATA", TMO(smtp_data_init_timeout_ms), on_data },
    [SMTPC_ST_BODY] = { "body", "while sending the message body",
                        TMO(smtp_data_xfer_timeout_ms), NULL },
    [SMTPC_ST_DOT] = { "dot", "after end of data", TMO(smtp_data_done_timeout_ms), on_dot },
    [SMTPC_ST_RSET] = { "rset", "after RSET", TMO(smtp_mail_timeout_ms), on_rset },
    [SMTPC_ST_QUIT] = { "quit", "after QUIT", TMO(smtp_mail_timeout_ms), on_quit },
    [SMTPC_ST_CLOSED] = { "closed", "after the session ended", SMTPC_NO_TIMEOUT, NULL },
};

#define SMTPC_NSTATES (sizeof smtpc_states / sizeof *smtpc_states)

const char *
smtp_client_state_name(enum smtpc_state st)
{
    return (unsigned)st < SMTPC_NSTATES ? smtpc_states[st].name : "?";
}

const char *
smtp_client_state_context(enum smtpc_state st)
{
    return (unsigned)st < SMTPC_NSTATES ? smtpc_states[st].context : "?";
}

/* The one place a state changes. Arms the state's deadline from now, so
 * every reply restarts the timer of the next one (pipelined replies too). */
static void
smtpc_enter_state(struct smtp_client *c, enum smtpc_state st)
{
    if (c->state != st)
        c->prev_state = c->state;
    c->state = st;
    size_t off = smtpc_states[st].timeout;
    if (off == SMTPC_NO_TIMEOUT) {
        c->deadline_ms = UINT64_MAX;
    } else {
        uint64_t t;
        memcpy(&t, (const char *)c->cfg + off, sizeof t);
        c->deadline_ms = c->now_ms + t;
    }
}

/* --- replies and results ------------------------------------------------- */

/* Printable ASCII only: everything else becomes '?'. */
static size_t
smtpc_sanitize(char *out, size_t cap, const char *in, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n && k + 1 < cap; i++) {
        unsigned char ch = (unsigned char)in[i];
        out[k++] = (ch >= 0x20 && ch < 0x7f) ? (char)ch : '?';
    }
    out[k] = '\0';
    return k;
}

static void
smtpc_enh_derived(char enh[SMTPC_ENH_MAX], unsigned code)
{
    unsigned cls = code / 100;
    snprintf(enh, SMTPC_ENH_MAX, "%u.0.0", cls >= 2 && cls <= 5 ? cls : 4);
}

/* 1*3DIGIT at s[*i]; advances *i. */
static bool
smtpc_enh_number(const char *s, size_t len, size_t *i)
{
    size_t start = *i;
    while (*i < len && *i - start < 4 && s[*i] >= '0' && s[*i] <= '9')
        (*i)++;
    return *i > start && *i - start <= 3;
}

/*
 * RFC 3463 status code at the start of a reply text: class "." subject "."
 * detail, class matching the reply code's first digit, followed by SP or the
 * end. Copies it to enh and returns true when valid.
 */
static bool
smtpc_enh_parse(const char *s, size_t len, unsigned code, char enh[SMTPC_ENH_MAX])
{
    size_t i = 0;
    if (len < 5 || s[0] != (char)('0' + code / 100) || s[1] != '.')
        return false;
    i = 2;
    if (!smtpc_enh_number(s, len, &i) || i >= len || s[i] != '.')
        return false;
    i++;
    if (!smtpc_enh_number(s, len, &i))
        return false;
    if (i < len && s[i] != ' ')
        return false;
    memcpy(enh, s, i);
    enh[i] = '\0';
    return true;
}

/* A reply decided here (no reply from the peer, code 0). */
static void
smtpc_reply_local(struct smtpc_reply *r, uint16_t code, const char *enh, const char *fmt,
                  va_list ap)
{
    char text[SMTPC_TEXT_MAX];
    vsnprintf(text, sizeof text, fmt, ap);
    r->code = code;
    snprintf(r->enh, sizeof r->enh, "%s", enh);
    smtpc_sanitize(r->text, sizeof r->text, text, strlen(text));
}

static void
smtpc_local(struct smtpc_reply *r, const char *enh, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
smtpc_local(struct smtpc_reply *r, const char *enh, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    smtpc_reply_local(r, 0, enh, fmt, ap);
    va_end(ap);
}

static void
smtpc_decide(struct smtp_client *c, uint32_t i, enum smtpc_class cls,
             const struct smtpc_reply *r)
{
    struct smtpc_result *res = &c->txn.results[i];
    if (res->cls != SMTPC_PENDING)
        return;
    res->cls = cls;
    res->reply = *r;
}

static enum smtpc_class
smtpc_class_of(unsigned code)
{
    return code / 100 == 2 ? SMTPC_DELIVERED
         : code / 100 == 5 ? SMTPC_FAILED
                           : SMTPC_DEFERRED;
}

/* Every recipient still undecided gets cls with r (accepted_only: only those
 * whose RCPT was accepted, for a reply to the body or to DATA). */
static void
smtpc_decide_open(struct smtp_client *c, bool accepted_only, enum smtpc_class cls,
                  const struct smtpc_reply *r)
{
    struct smtpc_txn *t = &c->txn;
    for (uint32_t i = 0; i < t->nres; i++) {
        if (accepted_only && !(t->rstate[i] & RS_ACCEPTED))
            continue;
        smtpc_decide(c, i, cls, r);
    }
}

static void
smtpc_decide_all_local(struct smtp_client *c, enum smtpc_class cls, const char *enh,
                       const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void
smtpc_decide_all_local(struct smtp_client *c, enum smtpc_class cls, const char *enh,
                       const char *fmt, ...)
{
    struct smtpc_reply r;
    va_list ap;
    va_start(ap, fmt);
    smtpc_reply_local(&r, 0, enh, fmt, ap);
    va_end(ap);
    smtpc_decide_open(c, false, cls, &r);
}

/* All recipients are decided: the results go to io/. The message's strings
 * are not touched after this. */
static void
smtpc_txn_results(struct smtp_client *c)
{
    if (c->txn.msg == NULL)
        return;
    c->txn.msg = NULL;
    c->actions |= SMTPC_ACT_RESULTS;
}

static void
smtpc_ready(struct smtp_client *c)
{
    smtpc_enter_state(c, SMTPC_ST_READY);
    c->actions |= SMTPC_ACT_IDLE;
}

/* --- output ------------------------------------------------------------- */

static void
smtpc_command(struct smtp_client *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
smtpc_command(struct smtp_client *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    outbuf_vprintf_line(&c->out, fmt, ap);
    va_end(ap);
    c->queued++;
    c->actions |= SMTPC_ACT_SEND;
}

void
smtp_client_take_output(struct smtp_client *c, struct smtp_outbuf *buf)
{
    struct smtp_outbuf tmp = *buf;
    *buf = c->out;
    tmp.len = 0;
    c->out = tmp;
    c->inflight += c->queued;
    c->queued = 0;
    c->actions &= ~SMTPC_ACT_SEND;
}

/* --- failures ----------------------------------------------------------- */

/*
 * The connection failed: every recipient still open is deferred with the
 * reason, and the session ends. With quit, the peer is still in sync and is
 * told QUIT first (RFC 5321 §3.1: a server greeting with 554 "MUST still
 * wait for the client to send a QUIT"); otherwise unsent commands are
 * dropped and io/ closes at once.
 */
static void
smtpc_fail_reply(struct smtp_client *c, const struct smtpc_reply *why, bool quit)
{
    if (c->state == SMTPC_ST_CLOSED)
        return;
    if (c->failed || c->state == SMTPC_ST_QUIT) {
        /* Trouble while saying goodbye: just close; the first reason (if
         * any) stays the one reported. */
        smtpc_enter_state(c, SMTPC_ST_CLOSED);
        c->actions |= SMTPC_ACT_CLOSE;
        return;
    }
    c->failed = true;
    c->fail_state = c->state;
    c->failure = *why;
    if (c->txn.msg != NULL) {
        /* After the final dot too: the peer may have taken the message and
         * we will send it again (duplicates, never loss: RFC 5321 §6.1). */
        smtpc_decide_open(c, false, SMTPC_DEFERRED, why);
        smtpc_txn_results(c);
    }
    c->actions &= ~(SMTPC_ACT_SEND_BODY | SMTPC_ACT_IDLE | SMTPC_ACT_START_TLS);
    c->txn.body_streaming = false;   /* io/ stops sending the body */
    c->out.len = 0;
    c->queued = 0;
    c->actions &= ~SMTPC_ACT_SEND;
    if (quit) {
        smtpc_command(c, "QUIT");
        smtpc_enter_state(c, SMTPC_ST_QUIT);
        return;
    }
    smtpc_enter_state(c, SMTPC_ST_CLOSED);
    c->actions |= SMTPC_ACT_CLOSE;
}

static void
smtpc_fail(struct smtp_client *c, const char *enh, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
smtpc_fail(struct smtp_client *c, const char *enh, const char *fmt, ...)
{
    struct smtpc_reply r;
    va_list ap;
    va_start(ap, fmt);
    smtpc_reply_local(&r, 0, enh, fmt, ap);
    va_end(ap);
    smtpc_fail_reply(c, &r, false);
}

/* The peer broke the protocol: the stream cannot be trusted any more, so no
 * QUIT either. RFC 3463 X.5.0: other or undefined protocol status. */
static void
smtpc_protocol_error(struct smtp_client *c, const char *what, const char *line, size_t len)
{
    char shown[72];
    smtpc_sanitize(shown, sizeof shown, line, len);
    smtpc_fail(c, "4.5.0", "protocol error %s: %s%s%s%s",
               smtp_client_state_context(c->state), what, len ? " \"" : "", shown,
               len ? "\"" : "");
}

/* --- session start ------------------------------------------------------- */

void
smtp_client_init(struct smtp_client *c, const struct config *cfg, const char *helo_name,
                 uint64_t now_ms)
{
    memset(c, 0, sizeof *c);
    c->cfg = cfg;
    c->helo_name = helo_name;
    c->now_ms = now_ms;
    /* The greeting is due without a command: count it as one in flight. */
    c->inflight = 1;
    c->state = SMTPC_ST_BANNER;
    c->prev_state = SMTPC_ST_BANNER;
    smtpc_enter_state(c, SMTPC_ST_BANNER);
}

void
smtp_client_free(struct smtp_client *c)
{
    outbuf_free(&c->out);
    c->txn.results = xfree(c->txn.results);
    c->txn.rstate = xfree(c->txn.rstate);
    c->txn.cap = 0;
    c->txn.nres = 0;
}

void
smtp_client_set_starttls(struct smtp_client *c, bool enable)
{
    c->want_starttls = enable;
}

void
smtp_client_require_tls(struct smtp_client *c, bool require)
{
    c->require_tls = require;
    if (require)
        c->want_starttls = true;
}

/* TLS is required and cannot be had from this host: defer politely (QUIT),
 * like Postfix's "TLS is required, but was not offered by host". */
static void
smtpc_tls_required_fail(struct smtp_client *c, const char *why)
{
    struct smtpc_reply r;
    memset(&r, 0, sizeof r);
    snprintf(r.enh, sizeof r.enh, "4.7.4");
    snprintf(r.text, sizeof r.text, "TLS is required, but %s", why);
    smtpc_fail_reply(c, &r, true);
}

static void
smtpc_send_ehlo(struct smtp_client *c)
{
    memset(&c->ehlo_caps, 0, sizeof c->ehlo_caps);
    smtpc_command(c, "EHLO %s", c->helo_name);
    smtpc_enter_state(c, SMTPC_ST_EHLO);
}

static void
on_banner(struct smtp_client *c, const struct smtpc_reply *r)
{
    if (r->code == 220) {
        smtpc_send_ehlo(c);
        return;
    }
    /* RFC 5321 §3.1: "a 554 response MAY be given in the initial connection
     * opening message instead of the 220." The reply goes to io/ as a
     * connection failure; whether to try the next MX or give up is the
     * scheduler's decision (4xx and 554 both mean "not this host, now"). */
    if (r->code / 100 == 4 || r->code / 100 == 5) {
        smtpc_fail_reply(c, r, true);
        return;
    }
    smtpc_protocol_error(c, "greeting is not 220", r->text, strlen(r->text));
}

/* --- EHLO and its extensions --------------------------------------------- */

static void
ext_size(struct smtpc_caps *caps, const char *arg, size_t len)
{
    uint64_t v = 0;
    size_t i = 0;
    caps->size = true;
    while (i < len && arg[i] >= '0' && arg[i] <= '9') {
        unsigned d = (unsigned)(arg[i] - '0');
        if (v > (UINT64_MAX - d) / 10) {
            v = 0;   /* absurd: treat as no fixed maximum */
            break;
        }
        v = v * 10 + d;
        i++;
    }
    /* RFC 1870: a value of zero means no fixed maximum; a missing or
     * malformed value tells us nothing, so no limit either. */
    caps->size_max = (i == len) ? v : 0;
}

/* "AUTH PLAIN LOGIN CRAM-MD5": the mechanisms we can use. */
static void
ext_auth(struct smtpc_caps *caps, const char *arg, size_t len)
{
    size_t i = 0;
    while (i < len) {
        while (i < len && arg[i] == ' ')
            i++;
        size_t w = i;
        while (i < len && arg[i] != ' ')
            i++;
        if (i - w == 5 && strncasecmp(arg + w, "PLAIN", 5) == 0)
            caps->auth_plain = true;
        else if (i - w == 5 && strncasecmp(arg + w, "LOGIN", 5) == 0)
            caps->auth_login = true;
    }
}

struct smtpc_ext {
    const char *keyword;
    size_t flag;            /* offsetof(struct smtpc_caps, bool) */
    void (*param)(struct smtpc_caps *caps, const char *arg, size_t len);
};

static const struct smtpc_ext smtpc_extensions[] = {
    { "PIPELINING", offsetof(struct smtpc_caps, pipelining), NULL },
    { "SIZE", offsetof(struct smtpc_caps, size), ext_size },
    { "8BITMIME", offsetof(struct smtpc_caps, eightbitmime), NULL },
    { "SMTPUTF8", offsetof(struct smtpc_caps, smtputf8), NULL },
    { "CHUNKING", offsetof(struct smtpc_caps, chunking), NULL },
    { "ENHANCEDSTATUSCODES", offsetof(struct smtpc_caps, enhancedstatuscodes), NULL },
    { "DSN", offsetof(struct smtpc_caps, dsn), NULL },
    { "STARTTLS", offsetof(struct smtpc_caps, starttls), NULL },
    { "AUTH", offsetof(struct smtpc_caps, auth), ext_auth },
};

/* One EHLO reply line after the first: "KEYWORD [params]" (RFC 5321 §4.1.1.1,
 * ehlo-line). Unknown keywords are ignored. */
static void
smtpc_ehlo_line(struct smtp_client *c, const char *s, size_t len)
{
    size_t kl = 0;
    while (kl < len && s[kl] != ' ')
        kl++;
    for (size_t i = 0; i < sizeof smtpc_extensions / sizeof *smtpc_extensions; i++) {
        const struct smtpc_ext *e = &smtpc_extensions[i];
        if (strlen(e->keyword) != kl || strncasecmp(e->keyword, s, kl) != 0)
            continue;
        bool yes = true;
        memcpy((char *)&c->ehlo_caps + e->flag, &yes, sizeof yes);
        if (e->param != NULL) {
            size_t a = kl < len ? kl + 1 : len;
            e->param(&c->ehlo_caps, s + a, len - a);
        }
        return;
    }
}

/* base64 of p[0..n) as a command line of its own (a SASL response). */
static void
smtpc_command_base64(struct smtp_client *c, const char *prefix, const void *p, size_t n)
{
    char b64[BASE64_ENCODED_SIZE(2 * SMTPC_AUTH_FIELD_MAX + 2)];
    base64_encode(p, n, b64, sizeof b64);
    smtpc_command(c, "%s%s", prefix, b64);
    explicit_bzero(b64, sizeof b64);
}

/* RFC 4954 §4 with an initial response for PLAIN (RFC 4616: "" NUL user
 * NUL password); LOGIN answers two challenges. */
static void
smtpc_send_auth(struct smtp_client *c)
{
    c->auth_step = 0;
    if (c->caps.auth_plain) {
        char msg[2 * SMTPC_AUTH_FIELD_MAX + 2];
        size_t ul = strnlen(c->auth_user, SMTPC_AUTH_FIELD_MAX);
        size_t pl = strnlen(c->auth_pass, SMTPC_AUTH_FIELD_MAX);
        msg[0] = '\0';
        memcpy(msg + 1, c->auth_user, ul);
        msg[1 + ul] = '\0';
        memcpy(msg + 2 + ul, c->auth_pass, pl);
        smtpc_command_base64(c, "AUTH PLAIN ", msg, 2 + ul + pl);
        explicit_bzero(msg, sizeof msg);
    } else {
        smtpc_command(c, "AUTH LOGIN");
    }
    smtpc_enter_state(c, SMTPC_ST_AUTH);
}

static void
on_auth(struct smtp_client *c, const struct smtpc_reply *r)
{
    if (r->code == 235) {
        c->authenticated = true;
        smtpc_ready(c);
        return;
    }
    if (r->code == 334 && !c->caps.auth_plain && c->auth_step < 2) {
        const char *field = c->auth_step == 0 ? c->auth_user : c->auth_pass;
        c->auth_step++;
        /* A response line: like a command, it gets exactly one reply. */
        smtpc_command_base64(c, "", field, strnlen(field, SMTPC_AUTH_FIELD_MAX));
        return;
    }
    if (r->code / 100 == 4 || r->code / 100 == 5) {
        smtpc_fail_reply(c, r, true);
        return;
    }
    smtpc_protocol_error(c, "unexpected reply", r->text, strlen(r->text));
}

void
smtp_client_set_auth(struct smtp_client *c, const char *user, const char *pass)
{
    c->auth_user = user;
    c->auth_pass = pass;
}

static void
smtpc_send_starttls_or_ready(struct smtp_client *c)
{
    if (c->want_starttls && c->caps.starttls && !c->tls_active) {
        smtpc_command(c, "STARTTLS");
        smtpc_enter_state(c, SMTPC_ST_STARTTLS);
        return;
    }
    if (c->require_tls && !c->tls_active) {
        smtpc_tls_required_fail(c, c->esmtp ? "was not offered by the host"
                                             : "the host does not speak ESMTP");
        return;
    }
    if (c->auth_user != NULL && !c->authenticated && (c->caps.auth_plain || c->caps.auth_login)) {
        smtpc_send_auth(c);
        return;
    }
    smtpc_ready(c);
}

static void
on_ehlo(struct smtp_client *c, const struct smtpc_reply *r)
{
    if (r->code / 100 == 2) {
        c->caps = c->ehlo_caps;
        c->esmtp = true;
        smtpc_send_starttls_or_ready(c);
        return;
    }
    if (r->code / 100 == 5) {
        /* RFC 5321: "If the EHLO command is not acceptable to the SMTP
         * server, 501, 500, 502, or 550 failure replies MUST be returned as
         * appropriate." An old server then gets HELO (as Postfix does). */
        smtpc_command(c, "HELO %s", c->helo_name);
        smtpc_enter_state(c, SMTPC_ST_HELO);
        return;
    }
    if (r->code / 100 == 4) {
        smtpc_fail_reply(c, r, true);
        return;
    }
    smtpc_protocol_error(c, "unexpected reply", r->text, strlen(r->text));
}

static void
on_helo(struct smtp_client *c, const struct smtpc_reply *r)
{
    if (r->code / 100 == 2) {
        memset(&c->caps, 0, sizeof c->caps);
        c->esmtp = false;
        if (c->require_tls && !c->tls_active) {
            smtpc_tls_required_fail(c, "the host does not speak ESMTP");
            return;
        }
        smtpc_ready(c);
        return;
    }
    if (r->code / 100 == 4 || r->code / 100 == 5) {
        smtpc_fail_reply(c, r, true);
        return;
    }
    smtpc_protocol_error(c, "unexpected reply", r->text, strlen(r->text));
}

static void
on_starttls(struct smtp_client *c, const struct smtpc_reply *r)
{
    if (r->code == 220) {
        /* CVE-2021-38371 (RELIABILITY row 8): anything the peer sent after
         * this reply was sent before the handshake, in plaintext, and must
         * never be read as if it came through TLS. smtp_client_input() drops
         * the rest of its buffer in this state. */
        c->parser.len = 0;
        c->parser.lines = 0;
        smtpc_enter_state(c, SMTPC_ST_TLS);
        c->actions |= SMTPC_ACT_START_TLS;
        return;
    }
    if (r->code / 100 == 4 || r->code / 100 == 5) {
        c->tls_refused = true;
        if (c->require_tls) {
            smtpc_fail_reply(c, r, true);
            return;
        }
        smtpc_ready(c);   /* opportunistic: go on in plaintext */
        return;
    }
    smtpc_protocol_error(c, "unexpected reply", r->text, strlen(r->text));
}

unsigned
smtp_client_tls_done(struct smtp_client *c, int res, const char *why, uint64_t now_ms)
{
    c->now_ms = now_ms;
    if (c->state != SMTPC_ST_TLS)
        return c->actions;
    c->actions &= ~SMTPC_ACT_START_TLS;
    if (res < 0) {
        smtpc_fail(c, "4.7.5", "TLS handshake failed%s%s", why && why[0] ? ": " : "",
                   why ? why : "");
        return c->actions;
    }
    /* RFC 3207 §4.2: "The client MUST discard any knowledge obtained from
     * the server, such as the list of SMTP service extensions, which was
     * not obtained from the TLS negotiation itself. The client SHOULD send
     * an EHLO command as the first command after a successful TLS
     * negotiation." */
    c->tls_active = true;
    c->authenticated = false;
    memset(&c->caps, 0, sizeof c->caps);
    c->esmtp = false;
    smtpc_send_ehlo(c);
    return c->actions;
}

/* --- the transaction ------------------------------------------------------ */

bool
smtp_client_idle(const struct smtp_client *c)
{
    return c->state == SMTPC_ST_READY && c->txn.msg == NULL;
}

/* An address we may put in a command line: bounded, no control octets (no
 * CR/LF injection, ever). Sets *utf8 when it has octets >= 0x80. */
static bool
smtpc_addr_ok(const char *a, bool *utf8)
{
    size_t n = 0;
    for (; a[n] != '\0'; n++) {
        unsigned char ch = (unsigned char)a[n];
        if (n >= ADDRESS_PATH_MAX || ch < 0x20 || ch == 0x7f)
            return false;
        if (ch >= 0x80)
            *utf8 = true;
    }
    return true;
}

static void
smtpc_txn_reset(struct smtp_client *c, const struct smtpc_msg *msg)
{
    struct smtpc_txn *t = &c->txn;
    if (msg->nrcpt > t->cap) {
        t->results = xrealloc(t->results, (size_t)msg->nrcpt * sizeof *t->results);
        t->rstate = xrealloc(t->rstate, msg->nrcpt);
        t->cap = msg->nrcpt;
    }
    struct smtpc_result *results = t->results;
    uint8_t *rstate = t->rstate;
    uint32_t cap = t->cap;
    memset(t, 0, sizeof *t);
    t->results = results;
    t->rstate = rstate;
    t->cap = cap;
    t->msg = msg;
    t->nres = msg->nrcpt;
    if (msg->nrcpt > 0) {
        memset(t->results, 0, (size_t)msg->nrcpt * sizeof *t->results);
        memset(t->rstate, 0, msg->nrcpt);
    }
}

/*
 * Refusals that need no word with the peer ("never downgrade silently",
 * issue 3). Returns false when nobody is left to send to.
 */
static bool
smtpc_precheck(struct smtp_client *c, const struct smtpc_msg *msg)
{
    struct smtpc_txn *t = &c->txn;
    struct smtpc_reply r;
    bool utf8 = msg->needs_smtputf8;
    unsigned limit = c->cfg->max_rcpt_per_transaction;
    uint32_t sendable = 0;

    if (!smtpc_addr_ok(msg->sender, &utf8)) {
        smtpc_decide_all_local(c, SMTPC_FAILED, "5.1.7", "bad sender address syntax");
        return false;
    }
    for (uint32_t i = 0; i < msg->nrcpt; i++) {
        if (!smtpc_addr_ok(msg->rcpts[i], &utf8)) {
            smtpc_local(&r, "5.1.3", "bad recipient address syntax");
            smtpc_decide(c, i, SMTPC_FAILED, &r);
        } else if (limit && sendable >= limit) {
            /* The scheduler splits transactions at this limit; past it, the
             * rest waits for another transaction rather than overflow. */
            smtpc_local(&r, "4.5.3", "too many recipients for one transaction");
            smtpc_decide(c, i, SMTPC_DEFERRED, &r);
        } else {
            sendable++;
        }
    }
    /* RFC 6531: a message that needs SMTPUTF8 goes only to a server that
     * offers it; there is no downgrade here (issue 3). Status X.6.7, "Non-
     * ASCII addresses not permitted for that sender/recipient". No MAIL is
     * sent. */
    if (utf8 && !c->caps.smtputf8) {
        smtpc_decide_all_local(c, SMTPC_FAILED, "5.6.7",
                               "SMTPUTF8 is required, but was not offered by the host");
        return false;
    }
    /* RFC 6152: 8-bit content goes only to a server that offers 8BITMIME.
     * Our policy is no conversion (no 7-bit downgrade): 5.6.3. */
    if (msg->body_8bit && !c->caps.eightbitmime) {
        smtpc_decide_all_local(c, SMTPC_FAILED, "5.6.3",
                               "8-bit message body, but 8BITMIME was not offered by the host");
        return false;
    }
    uint64_t size = msg->size ? msg->size : msg->body_len;
    /* RFC 1870: a client should not send a message larger than the SIZE
     * the server declared; it would only be refused after the transfer. */
    if (c->caps.size && c->caps.size_max && size > c->caps.size_max) {
        smtpc_decide_all_local(c, SMTPC_FAILED, "5.3.4",
                               "message size %llu exceeds the size limit %llu of the host",
                               (unsigned long long)size, (unsigned long long)c->caps.size_max);
        return false;
    }
    t->smtputf8 = utf8;
    return sendable > 0;
}

/* Writes RCPT for the next undecided recipient. Returns false when none is
 * left. */
static bool
smtpc_send_next_rcpt(struct smtp_client *c)
{
    struct smtpc_txn *t = &c->txn;
    while (t->next_send < t->nres && t->results[t->next_send].cls != SMTPC_PENDING)
        t->next_send++;
    if (t->next_send >= t->nres)
        return false;
    uint32_t i = t->next_send++;
    smtpc_command(c, "RCPT TO:<%s>", t->msg->rcpts[i]);
    t->rstate[i] |= RS_SENT;
    return true;
}

/* The first recipient whose RCPT was written and whose reply is still due,
 * or nres. RCPTs go out in index order, so below next_send every recipient
 * is either sent or was decided without sending; at and above it nothing
 * was sent yet. */
static uint32_t
smtpc_reply_due(struct smtp_client *c)
{
    struct smtpc_txn *t = &c->txn;
    while (t->next_reply < t->next_send
           && (t->rstate[t->next_reply] & (RS_SENT | RS_REPLIED)) != RS_SENT)
        t->next_reply++;
    return t->next_reply < t->next_send ? t->next_reply : t->nres;
}

unsigned
smtp_client_send(struct smtp_client *c, const struct smtpc_msg *msg, uint64_t now_ms)
{
    c->now_ms = now_ms;
    if (!smtp_client_idle(c))
        return c->actions;
    smtpc_txn_reset(c, msg);
    struct smtpc_txn *t = &c->txn;
    if (!smtpc_precheck(c, msg)) {
        /* Every recipient is decided; nothing was said to the peer. */
        smtpc_txn_results(c);
        c->actions |= SMTPC_ACT_IDLE;
        return c->actions;
    }
    c->actions &= ~SMTPC_ACT_IDLE;

    /* The transfer: by BDAT when the peer has CHUNKING and io/ can send
     * the message as BDAT carries it (the raw form, a DATA form in which no
     * line was stuffed, or a DATA form io/ unstuffs): no 354 round trip,
     * and with PIPELINING the whole transaction goes in one write.
     * Otherwise by DATA: the stored DATA form unchanged, the raw form
     * dot-stuffed on the fly (RELIABILITY row 4). */
    bool unstuff = msg->body_form == SMTPC_STORED_DATA && msg->unstuffed_offered;
    t->bdat = c->caps.chunking && (msg->body_form != SMTPC_STORED_DATA || unstuff);
    if (t->bdat)
        t->body_mode = unstuff ? SMTPC_BODY_UNSTUFF : SMTPC_BODY_VERBATIM;
    else
        t->body_mode = msg->body_form == SMTPC_STORED_RAW ? SMTPC_BODY_STUFF : SMTPC_BODY_VERBATIM;
    t->bdat_len = unstuff ? msg->unstuffed_len : msg->body_len;

    char params[96] = "";
    size_t pl = 0;
    uint64_t size = msg->size ? msg->size : msg->body_len;
    if (c->caps.size)
        pl += (size_t)snprintf(params + pl, sizeof params - pl, " SIZE=%llu",
                               (unsigned long long)size);
    if (msg->body_8bit)
        pl += (size_t)snprintf(params + pl, sizeof params - pl, " BODY=8BITMIME");
    if (t->smtputf8)
        snprintf(params + pl, sizeof params - pl, " SMTPUTF8");
    smtpc_command(c, "MAIL FROM:<%s>%s", msg->sender, params);

    if (c->caps.pipelining) {
        /* RFC 2920 §3.1: "the commands RSET, MAIL FROM, SEND FROM, SOML
         * FROM, SAML FROM, and RCPT TO can all appear anywhere in a
         * pipelined command group. The EHLO, DATA, VRFY, EXPN, TURN, QUIT,
         * and NOOP commands can only appear as the last command in a
         * group". So: MAIL, every RCPT and DATA in one write; or MAIL,
         * every RCPT, "BDAT <size> LAST" and the chunk itself, as in the
         * pipelined example of RFC 3030 §4.2. A server reads a chunk
         * whatever it said to MAIL and RCPT (RFC 3030 §2: the octets are
         * part of the BDAT command) and refuses the BDAT when nobody was
         * accepted; the chunk is then wasted, which is rare, while every
         * other message saves a round trip. */
        while (smtpc_send_next_rcpt(c))
            ;
        if (t->bdat) {
            smtpc_command(c, "BDAT %llu LAST", (unsigned long long)t->bdat_len);
            t->bdat_sent = true;
            t->body_streaming = true;
            c->actions |= SMTPC_ACT_SEND_BODY;
        } else {
            smtpc_command(c, "DATA");
            t->data_sent = true;
        }
    }
    smtpc_enter_state(c, SMTPC_ST_MAIL);
    return c->actions;
}

/* All RCPT replies are in and nobody is accepted, or the transaction is
 * over: back to idle, through RSET when the peer may still hold a MAIL. */
static void
smtpc_txn_close(struct smtp_client *c, bool rset)
{
    smtpc_txn_results(c);
    if (rset) {
        smtpc_command(c, "RSET");
        smtpc_enter_state(c, SMTPC_ST_RSET);
        return;
    }
    c->messages++;
    smtpc_ready(c);
}

/* After the reply to MAIL or to an RCPT: the next step. */
static void
smtpc_after_rcpt(struct smtp_client *c)
{
    struct smtpc_txn *t = &c->txn;
    if (smtpc_reply_due(c) < t->nres) {
        smtpc_enter_state(c, SMTPC_ST_RCPT);   /* more pipelined replies due */
        return;
    }
    if (!c->caps.pipelining && t->mail_ok && smtpc_send_next_rcpt(c)) {
        smtpc_enter_state(c, SMTPC_ST_RCPT);
        return;
    }
    if (t->data_sent) {
        smtpc_enter_state(c, SMTPC_ST_DATA);   /* its reply is due */
        return;
    }
    if (t->bdat_sent) {
        /* The BDAT reply is due (after the chunk: smtp_client_body_sent). */
        smtpc_enter_state(c, SMTPC_ST_DOT);
        return;
    }
    if (t->accepted == 0) {
        /* Nobody to send to: RSET instead of DATA (a MAIL is open). Every
         * recipient is decided here: each RCPT got its reply. */
        smtpc_txn_close(c, t->mail_ok);
        return;
    }
    if (t->bdat) {
        /* RFC 3030 §2: "The BDAT verb takes two arguments. The first
         * argument indicates the length, in octets, of the binary data
         * chunk. The second optional argument indicates that the data
         * chunk is the last." One chunk: the whole stored body. */
        smtpc_command(c, "BDAT %llu LAST", (unsigned long long)t->bdat_len);
        t->body_streaming = true;
        c->actions |= SMTPC_ACT_SEND_BODY;
        smtpc_enter_state(c, SMTPC_ST_BODY);
        return;
    }
    smtpc_command(c, "DATA");
    smtpc_enter_state(c, SMTPC_ST_DATA);
}

static void
on_mail(struct smtp_client *c, const struct smtpc_reply *r)
{
    struct smtpc_txn *t = &c->txn;
    unsigned cls = r->code / 100;
    if (cls == 2) {
        t->mail_ok = true;
    } else if (cls == 4 || cls == 5) {
        /* The sender is refused: so is every recipient, with this reply.
         * Pipelined RCPT and DATA replies still arrive and are consumed. */
        smtpc_decide_open(c, false, smtpc_class_of(r->code), r);
        if (!c->caps.pipelining) {
            smtpc_txn_close(c, false);   /* no transaction is open */
            return;
        }
    } else {
        smtpc_protocol_error(c, "unexpected reply", r->text, strlen(r->text));
        return;
    }
    smtpc_after_rcpt(c);
}

static void
on_rcpt(struct smtp_client *c, const struct smtpc_reply *r)
{
    struct smtpc_txn *t = &c->txn;
    uint32_t i = smtpc_reply_due(c);
    unsigned cls = r->code / 100;
    if (i >= t->nres || (cls != 2 && cls != 4 && cls != 5)) {
        smtpc_protocol_error(c, "unexpected reply", r->text, strlen(r->text));
        return;
    }
    t->rstate[i] |= RS_REPLIED;
    if (t->results[i].cls == SMTPC_PENDING) {   /* not already refused with MAIL */
        if (cls == 2) {
            t->rstate[i] |= RS_ACCEPTED;
            t->accepted++;
            t->results[i].reply = *r;   /* replaced by the final reply */
        } else {
            smtpc_decide(c, i, smtpc_class_of(r->code), r);
        }
    }
    smtpc_after_rcpt(c);
}

static void
on_data(struct smtp_client *c, const struct smtpc_reply *r)
{
    struct smtpc_txn *t = &c->txn;
    unsigned cls = r->code / 100;
    if (cls == 3) {
        if (t->accepted == 0) {
            /* RFC 2920 §3.1: "the client cannot assume that the DATA command
             * will be rejected just because none of the RCPT TO commands
             * were accepted. If the DATA command was properly rejected the
             * client SMTP can just issue RSET, but if the DATA command was
             * accepted the client SMTP should send a single dot." */
            t->empty_dot = true;
            smtpc_command(c, ".");
            smtpc_enter_state(c, SMTPC_ST_DOT);
            return;
        }
        t->body_streaming = true;
        c->actions |= SMTPC_ACT_SEND_BODY;
        smtpc_enter_state(c, SMTPC_ST_BODY);
        return;
    }
    if (cls == 4 || cls == 5) {
        smtpc_decide_open(c, true, smtpc_class_of(r->code), r);
        smtpc_txn_close(c, t->mail_ok);
        return;
    }
    smtpc_protocol_error(c, "unexpected reply", r->text, strlen(r->text));
}

void
smtp_client_body_progress(struct smtp_client *c, uint64_t now_ms)
{
    c->now_ms = now_ms;
    /* Re-arms the data block timer; in a pipelined BDAT group, the timer
     * of the reply awaited, which cannot come while we are still sending. */
    if (c->txn.body_streaming && c->state != SMTPC_ST_CLOSED && c->state != SMTPC_ST_QUIT)
        smtpc_enter_state(c, c->state);
}

unsigned
smtp_client_body_sent(struct smtp_client *c, uint64_t now_ms)
{
    c->now_ms = now_ms;
    struct smtpc_txn *t = &c->txn;
    if (!t->body_streaming || (c->state != SMTPC_ST_BODY && !t->bdat_sent))
        return c->actions;
    t->body_streaming = false;
    c->actions &= ~SMTPC_ACT_SEND_BODY;
    if (c->state != SMTPC_ST_BODY) {
        /* Pipelined BDAT: MAIL/RCPT replies may be in or still due. */
        if (c->state == SMTPC_ST_DOT)
            smtpc_enter_state(c, SMTPC_ST_DOT);   /* its timer starts now */
        return c->actions;
    }
    /* RFC 5321 §4.1.1.4: "The mail data are terminated by a line
     * containing only a period". The body io/ sent ends in CRLF or is
     * empty (STORED_DATA by construction, STUFF by body_xform_finish()). */
    if (!t->bdat)
        smtpc_command(c, ".");
    smtpc_enter_state(c, SMTPC_ST_DOT);
    return c->actions;
}

static void
on_dot(struct smtp_client *c, const struct smtpc_reply *r)
{
    struct smtpc_txn *t = &c->txn;
    unsigned cls = r->code / 100;
    if (t->body_streaming) {
        /* The BDAT reply before io/ even handed over the whole chunk. */
        smtpc_protocol_error(c, "reply before the end of the chunk", r->text, strlen(r->text));
        return;
    }
    if (cls != 2 && cls != 4 && cls != 5) {
        smtpc_protocol_error(c, "unexpected reply", r->text, strlen(r->text));
        return;
    }
    if (!t->empty_dot)
        smtpc_decide_open(c, true, smtpc_class_of(r->code), r);
    /* A failed BDAT leaves the server's state undefined (RFC 3030 §2 and
     * RFC 1830: "A RSET command must be issued to clear the transaction");
     * the end of DATA always ends the transaction. */
    smtpc_txn_close(c, t->bdat && cls != 2);
}

static void
on_rset(struct smtp_client *c, const struct smtpc_reply *r)
{
    if (r->code / 100 != 2) {
        smtpc_fail_reply(c, r, false);
        return;
    }
    c->messages++;
    smtpc_ready(c);
}

unsigned
smtp_client_quit(struct smtp_client *c, uint64_t now_ms)
{
    c->now_ms = now_ms;
    if (!smtp_client_idle(c))
        return c->actions;
    c->actions &= ~SMTPC_ACT_IDLE;
    smtpc_command(c, "QUIT");
    smtpc_enter_state(c, SMTPC_ST_QUIT);
    return c->actions;
}

static void
on_quit(struct smtp_client *c, const struct smtpc_reply *r)
{
    (void)r;
    smtpc_enter_state(c, SMTPC_ST_CLOSED);
    c->actions |= SMTPC_ACT_CLOSE;
}

const struct smtpc_result *
smtp_client_result(const struct smtp_client *c, uint32_t i)
{
    return i < c->txn.nres ? &c->txn.results[i] : NULL;
}

/* --- reply parser -------------------------------------------------------- */

/* A complete reply: checks it belongs to a command, then dispatches. */
static void
smtpc_reply_done(struct smtp_client *c)
{
    struct smtpc_parser *ps = &c->parser;
    struct smtpc_reply *r = &ps->cur;
    /* RFC 2034: the enhanced code leads the text of each line. Like
     * Postfix, take a valid one of the reply's class even from a server that
     * did not advertise ENHANCEDSTATUSCODES (many send them anyway), so a
     * bounce says 5.1.1 rather than 5.0.0. */
    size_t tl = strlen(r->text);
    if (!(tl > 4 && smtpc_enh_parse(r->text + 4, tl - 4, r->code, r->enh)))
        smtpc_enh_derived(r->enh, r->code);
    c->last = *r;
    bool unsolicited = ps->unsolicited;
    ps->lines = 0;
    ps->tlen = 0;
    ps->unsolicited = false;

    if (c->state == SMTPC_ST_QUIT) {
        on_quit(c, &c->last);   /* whatever it says, we are done */
        return;
    }
    /* RFC 5321 §3.8: 421 is the server closing the channel, at any point
     * (also unsolicited, e.g. an idle connection timing out). */
    if (c->last.code == 421) {
        smtpc_fail_reply(c, &c->last, false);
        return;
    }
    if (unsolicited || c->inflight == 0) {
        smtpc_protocol_error(c, "reply without a command", c->last.text,
                             strlen(c->last.text));
        return;
    }
    c->inflight--;
    const struct smtpc_state_info *si = &smtpc_states[c->state];
    if (si->on_reply == NULL) {
        smtpc_protocol_error(c, "unexpected reply", c->last.text, strlen(c->last.text));
        return;
    }
    si->on_reply(c, &c->last);
}

/*
 * One complete reply line in c->parser.line (line end included). RFC 5321
 * §4.2.1: "every line, except the last, begin with the reply code, followed
 * immediately by a hyphen, "-" (also known as minus), followed by text. The
 * last line will begin with the reply code, followed immediately by <SP>,
 * optionally some text, and <CRLF>."
 */
static void
smtpc_line(struct smtp_client *c)
{
    struct smtpc_parser *ps = &c->parser;
    const char *s = ps->line;
    size_t len = ps->len;
    ps->len = 0;
    /* Line end: LF, with the CR before it if any. A bare LF is accepted
     * (see smtp_client.h); a CR elsewhere is just a bad octet ('?'). */
    len--;
    if (len > 0 && s[len - 1] == '\r')
        len--;
    if (len < 3 || s[0] < '2' || s[0] > '5' || s[1] < '0' || s[1] > '9' || s[2] < '0'
        || s[2] > '9') {
        smtpc_protocol_error(c, "malformed reply line", s, len);
        return;
    }
    uint16_t code = (uint16_t)((s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0'));
    char sep = len == 3 ? ' ' : s[3];
    if (sep != ' ' && sep != '-') {
        smtpc_protocol_error(c, "malformed reply line", s, len);
        return;
    }
    if (ps->lines > 0 && code != ps->cur.code) {
        smtpc_protocol_error(c, "reply code changes inside a reply", s, len);
        return;
    }
    if (ps->lines >= SMTPC_REPLY_LINES_MAX) {
        smtpc_protocol_error(c, "reply has too many lines", s, len > 16 ? 16 : len);
        return;
    }
    ps->lines++;
    if (ps->lines == 1) {
        memset(&ps->cur, 0, sizeof ps->cur);
        ps->cur.code = code;
        ps->tlen = 0;
    }
    /* Text: the lines as received, joined by one space, bounded. */
    if (ps->tlen > 0 && ps->tlen + 1 < SMTPC_TEXT_MAX)
        ps->cur.text[ps->tlen++] = ' ';
    if (ps->tlen + 1 < SMTPC_TEXT_MAX)
        ps->tlen += (uint32_t)smtpc_sanitize(ps->cur.text + ps->tlen,
                                             SMTPC_TEXT_MAX - ps->tlen, s, len);
    ps->cur.text[ps->tlen] = '\0';
    if (c->state == SMTPC_ST_EHLO && ps->lines > 1 && len > 4)
        smtpc_ehlo_line(c, s + 4, len - 4);
    if (sep == ' ')
        smtpc_reply_done(c);
}

unsigned
smtp_client_input(struct smtp_client *c, const uint8_t *p, size_t n, uint64_t now_ms)
{
    struct smtpc_parser *ps = &c->parser;
    size_t i = 0;
    c->now_ms = now_ms;
    while (i < n) {
        if (c->state == SMTPC_ST_CLOSED)
            break;
        if (c->state == SMTPC_ST_TLS) {
            /* Plaintext after "220" to STARTTLS: dropped, never parsed. */
            c->discarded += (uint32_t)(n - i);
            break;
        }
        /* While io/ sends the body nothing is due: a 421 notice is parsed
         * and honoured, anything else is a protocol error (reply_done). */
        if (ps->len == 0 && ps->lines == 0)
            ps->unsolicited = (c->inflight == 0);
        const uint8_t *lf = memchr(p + i, '\n', n - i);
        size_t seg = lf ? (size_t)(lf - (p + i)) + 1 : n - i;
        if (ps->len + seg > SMTPC_LINE_MAX) {
            smtpc_protocol_error(c, "reply line too long", ps->line, ps->len > 16 ? 16 : ps->len);
            break;
        }
        memcpy(ps->line + ps->len, p + i, seg);
        ps->len += (uint32_t)seg;
        i += seg;
        if (lf != NULL)
            smtpc_line(c);
    }
    return c->actions;
}

/* --- events -------------------------------------------------------------- */

uint64_t
smtp_client_deadline(const struct smtp_client *c)
{
    return c->deadline_ms;
}

unsigned
smtp_client_tick(struct smtp_client *c, uint64_t now_ms)
{
    c->now_ms = now_ms;
    if (c->state == SMTPC_ST_CLOSED || now_ms < c->deadline_ms)
        return c->actions;
    if (c->state == SMTPC_ST_QUIT) {
        smtpc_enter_state(c, SMTPC_ST_CLOSED);
        c->actions |= SMTPC_ACT_CLOSE;
        return c->actions;
    }
    /* RFC 3463 X.4.2: bad connection. */
    smtpc_fail(c, "4.4.2", "conversation timed out %s",
               smtp_client_state_context(c->state));
    return c->actions;
}

unsigned
smtp_client_peer_closed(struct smtp_client *c, uint64_t now_ms)
{
    c->now_ms = now_ms;
    if (c->state == SMTPC_ST_CLOSED)
        return c->actions;
    if (c->state == SMTPC_ST_QUIT) {
        smtpc_enter_state(c, SMTPC_ST_CLOSED);
        c->actions |= SMTPC_ACT_CLOSE;
        return c->actions;
    }
    smtpc_fail(c, "4.4.2", "lost connection %s", smtp_client_state_context(c->state));
    return c->actions;
}
