/*
 * smtp_server - inbound ESMTP session (RFC 5321, 1869, 2920, 1870, 6152,
 * 2034, 6531, 3030) as an explicit state machine.
 *
 * Per-connection, owned by one worker thread; no I/O, no clock reads (time is
 * passed in). Commands dispatch from smtp_commands[], whose flags encode the
 * RFC rules. Every state change goes through smtp_enter_state().
 *
 * Invariants:
 *   - a 250 for a message is produced only by smtp_server_committed();
 *   - the command line buffer never grows past smtpd_command_line_limit, and
 *     octets waiting behind a pause never exceed SMTP_PENDING_MAX (then the
 *     client is out of protocol and is disconnected);
 *   - nothing the client sends is interpreted twice or expanded: addresses
 *     are opaque strings once parsed.
 */
#include "smtp_server.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "log.h"
#include "smtp_reply.h"
#include "utf8.h"

/* Octets a client may send ahead while we wait for the disk or tarpit it:
 * plenty for honest pipelining, bounded for the rest. */
#define SMTP_PENDING_MAX (256 * 1024)
/* RFC 4954 §4: "the AUTH command ... line length limit of 12288 octets";
 * plus the CRLF. Applies to AUTH lines and SASL responses only. */
#define SMTP_AUTH_LINE_MAX (12288 + 2)

enum {
    /* Allowed before EHLO/HELO. */
    CMD_BEFORE_HELO = 1u << 0,
    /* RFC 2920 §3.1: "EHLO, DATA, VRFY, EXPN, TURN, QUIT, and NOOP can only
     * appear as the last command in a group since their success or failure
     * produces a change of state which the client SMTP must accommodate."
     * Input already waiting behind such a command is a protocol violation. */
    CMD_ENDS_GROUP = 1u << 1,
    /* Counts toward smtpd_junk_command_limit (Postfix: NOOP, VRFY, RSET...). */
    CMD_JUNK = 1u << 2,
};

struct smtp_command {
    const char *verb;
    unsigned flags;
    void (*handler)(struct smtp_server *s, const char *args, size_t len);
};

static void cmd_ehlo(struct smtp_server *s, const char *args, size_t len);
static void cmd_helo(struct smtp_server *s, const char *args, size_t len);
static void cmd_mail(struct smtp_server *s, const char *args, size_t len);
static void cmd_rcpt(struct smtp_server *s, const char *args, size_t len);
static void cmd_data(struct smtp_server *s, const char *args, size_t len);
static void cmd_bdat(struct smtp_server *s, const char *args, size_t len);
static void cmd_rset(struct smtp_server *s, const char *args, size_t len);
static void cmd_noop(struct smtp_server *s, const char *args, size_t len);
static void cmd_quit(struct smtp_server *s, const char *args, size_t len);
static void cmd_vrfy(struct smtp_server *s, const char *args, size_t len);
static void cmd_expn(struct smtp_server *s, const char *args, size_t len);
static void cmd_help(struct smtp_server *s, const char *args, size_t len);
static void cmd_starttls(struct smtp_server *s, const char *args, size_t len);
static void cmd_auth(struct smtp_server *s, const char *args, size_t len);
static void smtp_abort_body_if_any(struct smtp_server *s);
static void smtp_auth_response(struct smtp_server *s, const char *line, size_t len);
static bool smtp_auth_offered(const struct smtp_server *s);

static const struct smtp_command smtp_commands[] = {
    { "EHLO", CMD_BEFORE_HELO | CMD_ENDS_GROUP, cmd_ehlo },
    { "HELO", CMD_BEFORE_HELO | CMD_ENDS_GROUP, cmd_helo },
    { "MAIL", 0, cmd_mail },
    { "RCPT", 0, cmd_rcpt },
    { "DATA", CMD_ENDS_GROUP, cmd_data },
    /* RFC 3030 §2: BDAT may be pipelined; its chunk follows the line.
     * Fix: allowed before HELO so cmd_bdat reads (and drops) the chunk
     * with its 503; otherwise the chunk octets ran as commands. */
    { "BDAT", CMD_BEFORE_HELO, cmd_bdat },
    { "RSET", CMD_BEFORE_HELO | CMD_JUNK, cmd_rset },
    { "NOOP", CMD_BEFORE_HELO | CMD_ENDS_GROUP | CMD_JUNK, cmd_noop },
    { "QUIT", CMD_BEFORE_HELO | CMD_ENDS_GROUP, cmd_quit },
    { "VRFY", CMD_BEFORE_HELO | CMD_ENDS_GROUP | CMD_JUNK, cmd_vrfy },
    { "EXPN", CMD_BEFORE_HELO | CMD_ENDS_GROUP | CMD_JUNK, cmd_expn },
    { "HELP", CMD_BEFORE_HELO | CMD_JUNK, cmd_help },
    { "STARTTLS", CMD_BEFORE_HELO | CMD_ENDS_GROUP, cmd_starttls },
    { "AUTH", CMD_ENDS_GROUP, cmd_auth },
};

/* Verbs that show the peer is not an SMTP client at all (an HTTP client
 * pointed at us, or a cross-protocol attack): reply once and hang up. */
static const char *const smtp_foreign_verbs[] = {
    "GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "CONNECT", "TRACE", "PATCH",
};

static const char *const smtp_state_names[] = {
    [SMTP_ST_GREETING] = "greeting", [SMTP_ST_CONNECTED] = "connected",
    [SMTP_ST_READY] = "ready",       [SMTP_ST_MAIL] = "mail",
    [SMTP_ST_RCPT] = "rcpt",         [SMTP_ST_BODY] = "body",
    [SMTP_ST_COMMIT] = "commit",     [SMTP_ST_CLOSING] = "closing",
};

const char *
smtp_state_name(enum smtp_state st)
{
    return (unsigned)st < sizeof smtp_state_names / sizeof *smtp_state_names
               ? smtp_state_names[st]
               : "?";
}

void
smtp_qid_format(uint64_t qid, char out[17])
{
    static const char hex[] = "0123456789abcdef";
    for (int i = 15; i >= 0; i--) {
        out[i] = hex[qid & 0xf];
        qid >>= 4;
    }
    out[16] = '\0';
}

/* The one place a state changes, so a debug log shows every transition. */
static void
smtp_enter_state(struct smtp_server *s, enum smtp_state st)
{
    if (s->state == st)
        return;
    log_debug("smtp %s: %s -> %s", s->client_text, smtp_state_name(s->state),
              smtp_state_name(st));
    s->state = st;
}

static void
smtp_reply(struct smtp_server *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
smtp_reply(struct smtp_server *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    outbuf_vprintf_line(&s->out, fmt, ap);
    va_end(ap);
    s->actions |= SMTP_ACT_SEND;
}

static void
smtp_close_with(struct smtp_server *s, const char *line)
{
    smtp_reply(s, "%s", line);
    s->actions |= SMTP_ACT_CLOSE;
    /* Fix: the final reply goes out now. A tarpit HOLD left set here was
     * never released (tick() ignores a closing session), so the reply was
     * never sent and the connection never closed. */
    s->actions &= ~SMTP_ACT_HOLD;
    if (s->txn.qid || s->state == SMTP_ST_BODY)
        smtp_server_abort(s);
    smtp_enter_state(s, SMTP_ST_CLOSING);
}

/*
 * An error reply: counts toward the error limits. Past the soft limit the
 * reply (and all further input) is held back for smtpd_error_sleep_time;
 * at the hard limit the session ends with 421 (Postfix smtpd behaviour).
 */
static void
smtp_error(struct smtp_server *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
smtp_error(struct smtp_server *s, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    s->errors++;
    if (s->cfg->smtpd_hard_error_limit && s->errors >= s->cfg->smtpd_hard_error_limit) {
        smtp_reply(s, "%s", line);
        char bye[300];
        snprintf(bye, sizeof bye, "421 4.7.0 %s Error: too many errors", s->hostname);
        smtp_close_with(s, bye);
        return;
    }
    smtp_reply(s, "%s", line);
    if (s->errors > s->cfg->smtpd_soft_error_limit && s->cfg->smtpd_error_sleep_time_ms) {
        s->hold_until_ms = s->now_ms + s->cfg->smtpd_error_sleep_time_ms;
        s->actions |= SMTP_ACT_HOLD;
    }
}

static void
smtp_set_command_deadline(struct smtp_server *s)
{
    s->deadline_ms = s->now_ms + s->cfg->smtpd_timeout_ms;
}

static void
smtp_txn_reset(struct smtp_server *s)
{
    struct smtp_txn *t = &s->txn;
    struct smtp_rcpt *rcpts = t->rcpts;
    uint32_t cap = t->rcpt_cap;
    memset(t, 0, sizeof *t);
    t->rcpts = rcpts;   /* keep the allocation for the next transaction */
    t->rcpt_cap = cap;
}

void
smtp_server_init(struct smtp_server *s, const struct config *cfg,
                 const struct relay_policy *relay, const char *hostname,
                 const struct netaddr *client, uint64_t now_ms)
{
    memset(s, 0, sizeof *s);
    s->cfg = cfg;
    s->relay = relay;
    s->hostname = hostname;
    s->client = *client;
    netaddr_format(client, s->client_text, sizeof s->client_text);
    s->trusted = relay_client_trusted(relay, client);
    s->now_ms = now_ms;
    s->state = SMTP_ST_GREETING;
    smtp_set_command_deadline(s);
}

/* STARTTLS is offered on a plaintext session of a listener with a
 * certificate; a submissions listener is TLS from the start. */
static bool
smtp_starttls_offered(const struct smtp_server *s)
{
    return s->tls_available && !s->tls_active && s->kind != LISTENER_SUBMISSIONS;
}

void
smtp_server_set_listener(struct smtp_server *s, enum listener_kind kind, bool tls_available,
                         bool tls_required)
{
    s->kind = kind;
    s->tls_available = tls_available;
    s->tls_required = tls_required;
}

unsigned
smtp_server_tls_started(struct smtp_server *s, const char *proto, const char *cipher,
                        int bits, uint64_t now_ms)
{
    s->now_ms = now_ms;
    s->tls_active = true;
    s->starttls_wait = false;
    /* Printable only: these end up in Received: and the logs. */
    char raw[sizeof s->tls_info];
    snprintf(raw, sizeof raw, "%s with cipher %s (%d/%d bits)", proto ? proto : "TLS",
             cipher ? cipher : "unknown", bits, bits);
    size_t k = 0;
    for (size_t i = 0; raw[i] != '\0' && k < sizeof s->tls_info - 1; i++) {
        unsigned char c = (unsigned char)raw[i];
        s->tls_info[k++] = (c >= 0x20 && c < 0x7f && c != '\\') ? (char)c : '_';
    }
    s->tls_info[k] = '\0';
    /* RFC 3207 §4.2: "the server MUST discard any knowledge obtained from
     * the client, such as the argument to the EHLO command". */
    smtp_abort_body_if_any(s);
    smtp_txn_reset(s);
    s->helo[0] = '\0';
    s->esmtp = false;
    s->authenticated = false;
    s->auth_user[0] = '\0';
    if (s->sasl != NULL) {
        sasl_server_reset(s->sasl);
        s->sasl = xfree(s->sasl);
    }
    s->pending_len = 0;
    s->line_len = 0;
    s->line_overflow = false;
    s->line_has_nul = false;
    if (s->state != SMTP_ST_GREETING && s->state != SMTP_ST_CLOSING)
        smtp_enter_state(s, SMTP_ST_CONNECTED);
    smtp_set_command_deadline(s);
    return s->actions;
}

void
smtp_server_free(struct smtp_server *s)
{
    outbuf_free(&s->out);
    s->line = xfree(s->line);
    s->pending = xfree(s->pending);
    s->txn.rcpts = xfree(s->txn.rcpts);
    if (s->sasl != NULL) {
        sasl_server_reset(s->sasl);
        s->sasl = xfree(s->sasl);
    }
}

void
smtp_server_take_output(struct smtp_server *s, struct smtp_outbuf *buf)
{
    struct smtp_outbuf tmp = *buf;
    *buf = s->out;
    tmp.len = 0;
    s->out = tmp;
    s->actions &= ~SMTP_ACT_SEND;
}

unsigned
smtp_server_greet(struct smtp_server *s, uint64_t now_ms)
{
    s->now_ms = now_ms;
    if (s->state != SMTP_ST_GREETING)
        return s->actions;
    smtp_reply(s, "220 %s %s", s->hostname, s->cfg->smtpd_banner);
    smtp_enter_state(s, SMTP_ST_CONNECTED);
    smtp_set_command_deadline(s);
    return s->actions;
}

unsigned
smtp_server_refuse(struct smtp_server *s, const char *reply_line)
{
    smtp_close_with(s, reply_line);
    return s->actions;
}

/* --- pending input ------------------------------------------------------ */

static bool
smtp_pending_append(struct smtp_server *s, const uint8_t *p, size_t n)
{
    if (n == 0)
        return true;
    if (s->pending_len + n > SMTP_PENDING_MAX)
        return false;
    if (s->pending_len + n > s->pending_cap) {
        size_t cap = s->pending_cap ? s->pending_cap : 1024;
        while (cap < s->pending_len + n)
            cap *= 2;
        s->pending = xrealloc(s->pending, cap);
        s->pending_cap = cap;
    }
    memcpy(s->pending + s->pending_len, p, n);
    s->pending_len += n;
    return true;
}

static void
smtp_pending_consume(struct smtp_server *s, size_t n)
{
    if (n == 0)
        return;   /* fix: memmove(NULL, NULL, 0) is UB (BDAT 0: no prefix) */
    memmove(s->pending, s->pending + n, s->pending_len - n);
    s->pending_len -= n;
    if (s->pending_len == 0 && s->pending_cap > 64 * 1024) {
        s->pending = xfree(s->pending);
        s->pending_cap = 0;
    }
}

/* True while commands may be executed now (not waiting for the disk, not in
 * a body, not tarpitted, not closing). */
static bool
smtp_can_execute(const struct smtp_server *s)
{
    switch (s->state) {
    case SMTP_ST_CONNECTED:
    case SMTP_ST_READY:
    case SMTP_ST_MAIL:
    case SMTP_ST_RCPT:
        return !(s->actions & SMTP_ACT_HOLD) && !(s->actions & SMTP_ACT_BEGIN_BODY)
               && !s->starttls_wait && !s->auth_checking;
    default:
        return false;
    }
}

/* --- command dispatch --------------------------------------------------- */

static const struct smtp_command *
smtp_command_lookup(const char *verb, size_t len)
{
    for (size_t i = 0; i < sizeof smtp_commands / sizeof *smtp_commands; i++) {
        const char *v = smtp_commands[i].verb;
        if (strlen(v) != len)
            continue;
        size_t k = 0;
        while (k < len && (verb[k] & ~0x20) == v[k])
            k++;
        if (k == len)
            return &smtp_commands[i];
    }
    return NULL;
}

static bool
smtp_is_foreign_verb(const char *verb, size_t len)
{
    if (len > 0 && verb[len - 1] == ':')
        return true;   /* "Subject:", "From:": a message header sent as a command */
    for (size_t i = 0; i < sizeof smtp_foreign_verbs / sizeof *smtp_foreign_verbs; i++) {
        const char *v = smtp_foreign_verbs[i];
        if (strlen(v) == len && strncasecmp(v, verb, len) == 0)
            return true;
    }
    return false;
}

/*
 * Executes one complete command line (CRLF removed). more_input tells whether
 * octets already follow it, for the pipelining rules.
 */
static void
smtp_execute_line(struct smtp_server *s, const char *line, size_t len, bool more_input)
{
    if (s->sasl != NULL) {
        smtp_auth_response(s, line, len);   /* not a command: the SASL exchange */
        return;
    }
    size_t vlen = 0;
    while (vlen < len && line[vlen] != ' ')
        vlen++;
    const char *args = line + vlen;
    size_t alen = len - vlen;
    if (alen > 0) {   /* skip the one SP after the verb */
        args++;
        alen--;
    }

    if (smtp_is_foreign_verb(line, vlen)) {
        smtp_close_with(s, "521 5.7.0 Error: this is an SMTP server; closing connection");
        return;
    }
    const struct smtp_command *cmd = smtp_command_lookup(line, vlen);
    if (cmd == NULL) {
        s->junk++;
        smtp_error(s, "500 5.5.2 Error: command not recognized");
        goto junk_check;
    }

    /* RFC 2920: pipelining is allowed only after EHLO offered it, and never
     * past a command that must end a group. Postfix 3.9 disconnects such
     * clients (smtpd_forbid_unauth_pipelining); so do we: their later
     * commands were written without reading our replies. */
    if (more_input && (!s->esmtp || (cmd->flags & CMD_ENDS_GROUP))
        && cmd->handler != cmd_quit) {
        smtp_close_with(s, "554 5.5.0 Error: improper use of SMTP command pipelining");
        return;
    }
    if (s->state == SMTP_ST_CONNECTED && !(cmd->flags & CMD_BEFORE_HELO)) {
        smtp_error(s, "503 5.5.1 Error: send HELO/EHLO first");
        return;
    }
    if (cmd->flags & CMD_JUNK)
        s->junk++;
    cmd->handler(s, args, alen);
junk_check:
    if (s->state != SMTP_ST_CLOSING && s->cfg->smtpd_junk_command_limit
        && s->junk > s->cfg->smtpd_junk_command_limit) {
        char bye[300];
        snprintf(bye, sizeof bye, "421 4.7.0 %s Error: too many junk commands",
                 s->hostname);
        smtp_close_with(s, bye);
    }
}

/* A complete line arrived (LF seen). Applies the line rules, then executes. */
static void
smtp_line_complete(struct smtp_server *s, const char *line, size_t len, bool more_input)
{
    if (s->line_overflow) {
        s->line_overflow = false;
        s->line_has_nul = false;
        if (s->sasl != NULL) {   /* an over-long SASL response ends the exchange */
            sasl_server_reset(s->sasl);
            s->sasl = xfree(s->sasl);
        }
        smtp_error(s, "500 5.5.6 Error: line too long");
        return;
    }
    if (len == 0 || line[len - 1] != '\r') {
        /* A bare LF never ends a command: one line, one error, nothing run.
         * Fix: the octets after the LF used to run as a command of their
         * own ("RCPT TO:<x\nRSET>\r\n" ran RSET, two replies to one line).
         * We cannot know where the client thinks its next command starts,
         * so the session ends (Postfix smtpd_forbid_bare_newline=yes). */
        s->line_has_nul = false;
        smtp_close_with(s, "500 5.5.2 Error: bare <LF> received; lines must end with <CR><LF>");
        return;
    }
    len--;
    if (s->line_has_nul || memchr(line, '\0', len) != NULL) {
        s->line_has_nul = false;
        smtp_error(s, "500 5.5.2 Error: NUL character in command");
        return;
    }
    if (memchr(line, '\r', len) != NULL) {
        smtp_error(s, "500 5.5.2 Error: bare <CR> in command");
        return;
    }
    smtp_execute_line(s, line, len, more_input);
    /* A per-command deadline: partial lines do not extend it (slowloris). */
    if (s->state != SMTP_ST_BODY)
        smtp_set_command_deadline(s);
}

static bool
smtp_auth_offered(const struct smtp_server *s)
{
    return s->auth_available && (s->tls_active || !s->cfg->smtpd_tls_auth_only);
}

/*
 * The longest line allowed for the line that starts with the octets
 * assembled so far and p[0..seg): the command line limit, or RFC 4954's
 * 12288 octets for an AUTH command or a SASL response when AUTH is offered.
 */
static size_t
smtp_line_limit(const struct smtp_server *s, const uint8_t *p, size_t seg)
{
    size_t limit = s->cfg->smtpd_command_line_limit;
    if (limit >= SMTP_AUTH_LINE_MAX || !smtp_auth_offered(s))
        return limit;
    if (s->sasl != NULL)
        return SMTP_AUTH_LINE_MAX;
    char head[5];
    size_t k = 0;
    for (; k < s->line_len && k < sizeof head; k++)
        head[k] = s->line[k];
    for (size_t j = 0; k < sizeof head && j < seg; j++)
        head[k++] = (char)p[j];
    if (k == sizeof head && strncasecmp(head, "AUTH ", 5) == 0)
        return SMTP_AUTH_LINE_MAX;
    return limit;
}

/*
 * Runs commands from p[0..n) while the session can execute them. Returns the
 * octets used; the caller keeps the rest for later.
 */
static size_t
smtp_process(struct smtp_server *s, const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n && smtp_can_execute(s)) {
        const uint8_t *lf = memchr(p + i, '\n', n - i);
        size_t seg = (lf ? (size_t)(lf - (p + i)) + 1 : n - i);
        size_t limit = smtp_line_limit(s, p + i, seg);
        if (s->line_len == 0 && lf != NULL && !s->line_overflow && seg <= limit) {
            /* Fast path: the whole line is in this buffer. */
            i += seg;
            smtp_line_complete(s, (const char *)p + i - seg, seg - 1, i < n);
            continue;
        }
        /* Assemble a line across reads, within the limit. */
        if (!s->line_overflow) {
            if (s->line_len + seg > limit) {
                s->line_overflow = true;
                s->line_len = 0;
            } else {
                if (s->line_cap < limit) {
                    s->line = xrealloc(s->line, limit);
                    s->line_cap = (uint32_t)limit;
                }
                memcpy(s->line + s->line_len, p + i, seg);
                s->line_len += (uint32_t)seg;
            }
        }
        i += seg;
        if (lf != NULL) {
            uint32_t l = s->line_len;
            s->line_len = 0;
            smtp_line_complete(s, s->line, l ? l - 1 : 0, i < n);
        }
    }
    return i;
}

/* Runs what waited in pending, if the session can take it now. */
static void
smtp_resume(struct smtp_server *s)
{
    while (s->pending_len > 0 && smtp_can_execute(s)) {
        size_t used = smtp_process(s, s->pending, s->pending_len);
        if (used == 0)
            break;
        smtp_pending_consume(s, used);
    }
}

unsigned
smtp_server_input(struct smtp_server *s, const uint8_t *p, size_t n, uint64_t now_ms)
{
    s->now_ms = now_ms;
    if (s->state == SMTP_ST_CLOSING || s->starttls_wait)
        return s->actions;   /* after STARTTLS: plaintext is never run (row 7) */
    if (s->state == SMTP_ST_GREETING && n > 0) {
        /* RFC 5321 §3.1: the client waits for the greeting. Talking first
         * marks a spambot or a cross-protocol attack (postscreen "pregreet"). */
        smtp_close_with(s, "554 5.5.1 Error: client spoke before the greeting");
        return s->actions;
    }
    if (s->pending_len > 0 || !smtp_can_execute(s)) {
        if (!smtp_pending_append(s, p, n)) {
            smtp_close_with(s, "421 4.7.0 Error: too much pipelined input");
            return s->actions;
        }
        smtp_resume(s);
        return s->actions;
    }
    size_t used = smtp_process(s, p, n);
    /* Fix: after the final reply the rest is dropped, not kept (past
     * SMTP_PENDING_MAX it used to add a second final reply). Plaintext
     * behind STARTTLS is dropped too (CVE-2011-0411). */
    if (s->state == SMTP_ST_CLOSING || s->starttls_wait)
        return s->actions;
    if (used < n && !smtp_pending_append(s, p + used, n - used))
        smtp_close_with(s, "421 4.7.0 Error: too much pipelined input");
    return s->actions;
}

/* --- commands ----------------------------------------------------------- */

/* Keeps a printable, bounded copy of a HELO name for logs and Received:. */
static void
smtp_store_helo(struct smtp_server *s, const char *args, size_t len)
{
    size_t k = 0;
    for (size_t i = 0; i < len && k < sizeof s->helo - 1; i++) {
        unsigned char c = (unsigned char)args[i];
        s->helo[k++] = (c > 0x20 && c < 0x7f && c != '(' && c != ')' && c != '\\') ? (char)c
                                                                                  : '_';
    }
    s->helo[k] = '\0';
}

static bool
smtp_helo_arg_ok(struct smtp_server *s, const char *verb, const char *args, size_t len)
{
    while (len > 0 && args[len - 1] == ' ')
        len--;
    if (len == 0) {
        smtp_error(s, "501 5.5.4 Syntax: %s hostname", verb);
        return false;
    }
    if (len > 255 || memchr(args, ' ', len) != NULL) {
        smtp_error(s, "501 5.5.4 Error: invalid %s hostname", verb);
        return false;
    }
    return true;
}

static void
smtp_abort_body_if_any(struct smtp_server *s)
{
    if (s->txn.qid != 0)
        s->actions |= SMTP_ACT_ABORT_BODY;
}

static void
cmd_ehlo(struct smtp_server *s, const char *args, size_t len)
{
    if (!smtp_helo_arg_ok(s, "EHLO", args, len))
        return;
    smtp_store_helo(s, args, len);
    smtp_abort_body_if_any(s);
    smtp_txn_reset(s);
    s->esmtp = true;
    /* RFC 5321 §4.1.4: EHLO resets the state as RSET would. */
    outbuf_printf_line(&s->out, "250-%s", s->hostname);
    outbuf_printf_line(&s->out, "250-PIPELINING");
    outbuf_printf_line(&s->out, "250-SIZE %llu",
                       (unsigned long long)s->cfg->message_size_limit);
    outbuf_printf_line(&s->out, "250-ENHANCEDSTATUSCODES");
    outbuf_printf_line(&s->out, "250-8BITMIME");
    outbuf_printf_line(&s->out, "250-SMTPUTF8");
    outbuf_printf_line(&s->out, "250-DSN");
    if (smtp_starttls_offered(s))
        outbuf_printf_line(&s->out, "250-STARTTLS");
    if (smtp_auth_offered(s))
        outbuf_printf_line(&s->out, "250-AUTH %s", sasl_mech_list());
    outbuf_printf_line(&s->out, "250 CHUNKING");
    s->actions |= SMTP_ACT_SEND;
    smtp_enter_state(s, SMTP_ST_READY);
}

static void
cmd_helo(struct smtp_server *s, const char *args, size_t len)
{
    if (!smtp_helo_arg_ok(s, "HELO", args, len))
        return;
    smtp_store_helo(s, args, len);
    smtp_abort_body_if_any(s);
    smtp_txn_reset(s);
    s->esmtp = false;
    smtp_reply(s, "250 %s", s->hostname);
    smtp_enter_state(s, SMTP_ST_READY);
}

/* Matches "FROM:" / "TO:" case-insensitively; tolerates one space after the
 * colon (Postfix does, and so do many clients). */
static bool
smtp_strip_keyword(const char **args, size_t *len, const char *kw)
{
    size_t kl = strlen(kw);
    if (*len < kl || strncasecmp(*args, kw, kl) != 0)
        return false;
    *args += kl;
    *len -= kl;
    if (*len > 0 && **args == ' ') {
        (*args)++;
        (*len)--;
    }
    return true;
}

static const struct smtp_param_caps *
smtp_caps(const struct smtp_server *s)
{
    static const struct smtp_param_caps caps = { .dsn = true, .smtputf8 = true,
                                                 .auth = false };
    (void)s;
    return &caps;
}

static void
smtp_address_error(struct smtp_server *s, enum address_status st, bool sender)
{
    switch (st) {
    case ADDRESS_LOCAL_TOO_LONG:
        smtp_error(s, "553 5.1.3 Error: local part longer than 64 octets");
        break;
    case ADDRESS_DOMAIN_TOO_LONG:
        smtp_error(s, "553 5.1.3 Error: domain longer than 255 octets");
        break;
    case ADDRESS_PATH_TOO_LONG:
        smtp_error(s, "553 5.1.3 Error: address longer than 256 octets");
        break;
    case ADDRESS_NEEDS_SMTPUTF8:
        smtp_error(s, "553 5.6.7 Error: non-ASCII address requires SMTPUTF8");
        break;
    case ADDRESS_BAD_UTF8:
        smtp_error(s, "501 5.6.7 Error: address is not valid UTF-8");
        break;
    default:
        if (sender)
            smtp_error(s, "501 5.1.7 Error: bad sender address syntax");
        else
            smtp_error(s, "501 5.1.3 Error: bad recipient address syntax");
        break;
    }
}

static void
cmd_mail(struct smtp_server *s, const char *args, size_t len)
{
    if (s->state != SMTP_ST_READY) {
        smtp_error(s, "503 5.5.1 Error: nested MAIL command");
        return;
    }
    if (!smtp_strip_keyword(&args, &len, "FROM:")) {
        smtp_error(s, "501 5.5.4 Syntax: MAIL FROM:<address>");
        return;
    }
    struct smtp_txn *t = &s->txn;
    size_t used = 0;
    enum address_status st = address_parse_path(args, len, true, true, &t->sender, &used);
    if (st != ADDRESS_OK) {
        smtp_address_error(s, st, true);
        return;
    }
    struct smtp_reject rej;
    if (smtp_parse_mail_params(args + used, len - used, smtp_caps(s), &t->params, &rej) != 0) {
        smtp_error(s, "%u %s %s", rej.code, rej.enh, rej.text);
        memset(&t->params, 0, sizeof t->params);
        return;
    }
    if (s->tls_required && !s->tls_active) {
        smtp_error(s, "530 5.7.0 Must issue a STARTTLS command first");
        return;
    }
    /*
     * RFC 6409 §4.3: a submission server authenticates its clients.  With
     * no password file there is nothing to authenticate against, and the
     * listener relays for mynetworks like port 25: RFC 6409 §4.3 lets an
     * MSA authenticate by address instead (the daemon warns).
     */
    if ((s->kind == LISTENER_SUBMISSION || s->kind == LISTENER_SUBMISSIONS)
        && s->auth_available && !s->authenticated) {
        smtp_error(s, "530 5.7.0 Authentication required");
        return;
    }
    if (t->sender.utf8 && !t->params.smtputf8) {
        smtp_error(s, "553 5.6.7 Error: non-ASCII address requires SMTPUTF8");
        return;
    }
    if (t->sender.len > 0 && t->sender.at == t->sender.len) {
        smtp_error(s, "501 5.1.7 Error: sender address must have a domain");
        return;
    }
    /* Fix: message_size_limit 0 means no limit (it refused every SIZE). */
    if (t->params.has_size && s->cfg->message_size_limit
        && t->params.size > s->cfg->message_size_limit) {
        smtp_error(s, "552 5.3.4 Error: message size exceeds fixed limit");
        return;
    }
    smtp_reply(s, "250 2.1.0 Ok");
    smtp_enter_state(s, SMTP_ST_MAIL);
}

static void
cmd_rcpt(struct smtp_server *s, const char *args, size_t len)
{
    struct smtp_txn *t = &s->txn;
    if (s->state != SMTP_ST_MAIL && s->state != SMTP_ST_RCPT) {
        smtp_error(s, "503 5.5.1 Error: need MAIL command");
        return;
    }
    if (t->bdat) {
        smtp_error(s, "503 5.5.1 Error: RCPT after BDAT");
        return;
    }
    if (t->nrcpt >= s->cfg->smtpd_recipient_limit) {
        /* RFC 5321 §4.5.3.1.10: 452, and the client sends the rest in a
         * later transaction. A client doing exactly that is not in error, so
         * these replies never count toward the error limits (Postfix counts
         * them past an overshoot, disconnecting a client with 100 000
         * recipients before its DATA; RELIABILITY row 19 wants the accepted
         * ones delivered). They cost one reply each and store nothing. */
        smtp_reply(s, "452 4.5.3 Error: too many recipients");
        return;
    }
    if (!smtp_strip_keyword(&args, &len, "TO:")) {
        smtp_error(s, "501 5.5.4 Syntax: RCPT TO:<address>");
        return;
    }
    if (t->nrcpt == t->rcpt_cap) {
        t->rcpt_cap = t->rcpt_cap ? t->rcpt_cap * 2 : 4;
        t->rcpts = xrealloc(t->rcpts, (size_t)t->rcpt_cap * sizeof *t->rcpts);
    }
    struct smtp_rcpt *r = &t->rcpts[t->nrcpt];
    size_t used = 0;
    enum address_status st =
        address_parse_path(args, len, false, t->params.smtputf8, &r->box, &used);
    if (st != ADDRESS_OK) {
        t->rcpt_rejected++;
        smtp_address_error(s, st, false);
        return;
    }
    if (r->box.at == r->box.len && !address_is_postmaster(&r->box)) {
        t->rcpt_rejected++;
        smtp_error(s, "501 5.1.3 Error: recipient address must have a domain");
        return;
    }
    struct smtp_reject rej;
    if (smtp_parse_rcpt_params(args + used, len - used, smtp_caps(s), &r->params, &rej) != 0) {
        t->rcpt_rejected++;
        smtp_error(s, "%u %s %s", rej.code, rej.enh, rej.text);
        return;
    }
    if (relay_check(s->relay, &r->box, &s->client, s->authenticated) == RELAY_DENIED) {
        char esc[300];
        log_escape(esc, sizeof esc, r->box.addr, r->box.len);
        t->rcpt_rejected++;
        log_info("reject: RCPT from %s: <%s>: Relay access denied", s->client_text, esc);
        smtp_error(s, "554 5.7.1 <%s>: Relay access denied", esc);
        return;
    }
    t->nrcpt++;
    smtp_reply(s, "250 2.1.5 Ok");
    smtp_enter_state(s, SMTP_ST_RCPT);
}

/* Common checks for DATA and BDAT: a transaction with recipients. */
static bool
smtp_body_allowed(struct smtp_server *s)
{
    if (s->state == SMTP_ST_MAIL && s->txn.rcpt_rejected > 0) {
        smtp_error(s, "554 5.5.1 Error: no valid recipients");
        return false;
    }
    if (s->state != SMTP_ST_RCPT) {
        smtp_error(s, s->state == SMTP_ST_MAIL ? "503 5.5.1 Error: need RCPT command"
                                               : "503 5.5.1 Error: need MAIL command");
        return false;
    }
    return true;
}

static void
smtp_body_begin(struct smtp_server *s, enum data_scan_mode mode)
{
    data_scan_init(&s->txn.scan, mode, s->cfg->body_line_limit, s->cfg->header_size_limit);
    s->actions |= SMTP_ACT_BEGIN_BODY;
}

static void
cmd_data(struct smtp_server *s, const char *args, size_t len)
{
    if (len > 0) {
        smtp_error(s, "501 5.5.4 Syntax: DATA");
        return;
    }
    if (s->txn.bdat) {
        smtp_error(s, "503 5.5.1 Error: DATA after BDAT");
        return;
    }
    if (!smtp_body_allowed(s))
        return;
    s->txn.bdat = false;
    smtp_body_begin(s, DATA_SCAN_DOT);
}

/* Parses "BDAT <size> [LAST]". The size has no sign and must not wrap. */
static bool
smtp_parse_bdat(const char *args, size_t len, uint64_t *size, bool *last)
{
    size_t i = 0;
    uint64_t v = 0;
    if (len == 0 || args[0] < '0' || args[0] > '9')
        return false;
    while (i < len && args[i] >= '0' && args[i] <= '9') {
        unsigned d = (unsigned)(args[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
        i++;
        if (i > 20)
            return false;
    }
    *last = false;
    if (i < len) {
        if (args[i] != ' ')
            return false;
        i++;
        if (len - i != 4 || strncasecmp(args + i, "LAST", 4) != 0)
            return false;
        *last = true;
    }
    *size = v;
    return true;
}

static void
cmd_bdat(struct smtp_server *s, const char *args, size_t len)
{
    uint64_t size;
    bool last;
    struct smtp_txn *t = &s->txn;
    if (!smtp_parse_bdat(args, len, &size, &last)) {
        /* RFC 3030: without a trustworthy count we cannot find the next
         * command in the stream, so the session ends here. */
        smtp_close_with(s, "501 5.5.4 Error: bad BDAT size; closing connection");
        return;
    }
    t->chunk_left = size;
    t->bdat_last = last;
    if (!t->bdat) {
        /* First chunk: the same checks as DATA, but the chunk must still be
         * read (and dropped) when they fail, to stay in sync. */
        if (s->state != SMTP_ST_RCPT) {
            t->discarding = true;
            t->reject_code = s->state == SMTP_ST_MAIL && t->rcpt_rejected > 0
                                 ? "554 5.5.1 Error: no valid recipients"
                                 : (s->state == SMTP_ST_MAIL ? "503 5.5.1 Error: need RCPT command"
                                    : s->state == SMTP_ST_CONNECTED
                                        ? "503 5.5.1 Error: send HELO/EHLO first"
                                        : "503 5.5.1 Error: need MAIL command");
            s->actions |= SMTP_ACT_BEGIN_BODY;
            data_scan_init(&t->scan, DATA_SCAN_RAW, 0, 0);
            smtp_enter_state(s, SMTP_ST_BODY);
            return;
        }
        t->bdat = true;
        smtp_body_begin(s, DATA_SCAN_RAW);
        return;
    }
    /* A later chunk continues the same message. */
    s->actions |= SMTP_ACT_BEGIN_BODY;
    smtp_enter_state(s, SMTP_ST_BODY);
}

static void
cmd_rset(struct smtp_server *s, const char *args, size_t len)
{
    (void)args;
    (void)len;
    smtp_abort_body_if_any(s);
    smtp_txn_reset(s);
    if (s->state != SMTP_ST_CONNECTED)
        smtp_enter_state(s, SMTP_ST_READY);
    smtp_reply(s, "250 2.0.0 Ok");
}

static void
cmd_noop(struct smtp_server *s, const char *args, size_t len)
{
    (void)args;
    (void)len;
    smtp_reply(s, "250 2.0.0 Ok");
}

static void
cmd_quit(struct smtp_server *s, const char *args, size_t len)
{
    (void)args;
    (void)len;
    smtp_abort_body_if_any(s);
    smtp_txn_reset(s);
    char bye[300];
    snprintf(bye, sizeof bye, "221 2.0.0 %s Bye", s->hostname);
    smtp_close_with(s, bye);
}

static void
cmd_vrfy(struct smtp_server *s, const char *args, size_t len)
{
    (void)args;
    (void)len;
    /* RFC 5321 §3.5.3: 252 when we will accept but cannot verify. */
    smtp_reply(s, "252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery");
}

static void
cmd_expn(struct smtp_server *s, const char *args, size_t len)
{
    (void)args;
    (void)len;
    smtp_error(s, "502 5.5.1 Error: EXPN not implemented");
}

static void
cmd_help(struct smtp_server *s, const char *args, size_t len)
{
    (void)args;
    (void)len;
    smtp_reply(s, "214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP");
}

/*
 * RFC 3207 §4: "220 Ready to start TLS", then the handshake. Octets the
 * client sent behind the command are plaintext that must never run inside
 * TLS (CVE-2011-0411): STARTTLS ends a pipelining group, so a client that
 * sends more is disconnected, and anything arriving before the handshake is
 * dropped (starttls_wait).
 */
static void
cmd_starttls(struct smtp_server *s, const char *args, size_t len)
{
    (void)args;
    if (s->tls_active) {
        smtp_error(s, "503 5.5.1 Error: TLS already active");
        return;
    }
    if (!smtp_starttls_offered(s)) {
        smtp_error(s, "502 5.5.1 Error: STARTTLS not available on this listener");
        return;
    }
    if (len > 0) {
        smtp_error(s, "501 5.5.4 Syntax: STARTTLS");
        return;
    }
    if (s->state == SMTP_ST_MAIL || s->state == SMTP_ST_RCPT) {
        smtp_error(s, "503 5.5.1 Error: STARTTLS not allowed within a transaction");
        return;
    }
    smtp_reply(s, "220 2.0.0 Ready to start TLS");
    s->starttls_wait = true;
    s->pending_len = 0;
    s->line_len = 0;
    s->line_overflow = false;
    s->actions |= SMTP_ACT_STARTTLS;
}

/* A SASL status that ends the exchange without a check: its reply. A
 * malformed exchange counts as an error, like any bad command. */
static void
smtp_auth_ended(struct smtp_server *s, enum sasl_status st)
{
    s->sasl = xfree(s->sasl);
    smtp_error(s, "%s", sasl_status_reply(st));
}

static void
smtp_auth_status(struct smtp_server *s, enum sasl_status st, const char *challenge)
{
    switch (st) {
    case SASL_CHALLENGE:
        smtp_reply(s, "334 %s", challenge);
        return;
    case SASL_CHECK:
        s->auth_checking = true;
        s->actions |= SMTP_ACT_AUTH_CHECK;
        return;
    default:
        smtp_auth_ended(s, st);
        return;
    }
}

/*
 * RFC 4954. AUTH is refused before EHLO (the table), when not offered, in
 * cleartext when smtpd_tls_auth_only says so (row 24: 530 5.7.0, no
 * credential is looked at), a second time, and inside a transaction.
 */
static void
cmd_auth(struct smtp_server *s, const char *args, size_t len)
{
    if (!s->auth_available) {
        smtp_error(s, "502 5.5.1 Error: authentication not enabled");
        return;
    }
    if (!smtp_auth_offered(s)) {
        smtp_error(s, "530 5.7.0 Must issue a STARTTLS command first");
        return;
    }
    if (s->authenticated) {
        smtp_error(s, "503 5.5.1 Error: already authenticated");
        return;
    }
    if (s->state == SMTP_ST_MAIL || s->state == SMTP_ST_RCPT) {
        smtp_error(s, "503 5.5.1 Error: MAIL transaction in progress");
        return;
    }
    char challenge[SASL_CHALLENGE_SIZE];
    s->sasl = xcalloc(1, sizeof *s->sasl);
    sasl_server_init(s->sasl);
    smtp_auth_status(s, sasl_server_start(s->sasl, args, len, challenge, sizeof challenge),
                     challenge);
}

static void
smtp_auth_response(struct smtp_server *s, const char *line, size_t len)
{
    char challenge[SASL_CHALLENGE_SIZE];
    smtp_auth_status(s, sasl_server_step(s->sasl, line, len, challenge, sizeof challenge),
                     challenge);
}

void
smtp_server_set_auth(struct smtp_server *s, bool available)
{
    s->auth_available = available;
}

bool
smtp_server_take_credentials(struct smtp_server *s, char *user, size_t usize, char *pass,
                             size_t psize)
{
    if (s->sasl == NULL || !s->auth_checking || usize <= s->sasl->user_len
        || psize <= s->sasl->pass_len)
        return false;
    memcpy(user, s->sasl->user, s->sasl->user_len + 1);
    memcpy(pass, s->sasl->pass, s->sasl->pass_len + 1);
    /* The identity stays for Received: and the logs, the secret does not. */
    size_t k = 0;
    for (size_t i = 0; i < s->sasl->user_len && k < sizeof s->auth_user - 1; i++) {
        unsigned char c = (unsigned char)s->sasl->user[i];
        s->auth_user[k++] = (c > 0x20 && c < 0x7f && c != '(' && c != ')' && c != '\\')
                                ? (char)c : '?';
    }
    s->auth_user[k] = '\0';
    sasl_server_reset(s->sasl);
    return true;
}

unsigned
smtp_server_auth_result(struct smtp_server *s, bool ok, uint64_t now_ms)
{
    s->now_ms = now_ms;
    if (!s->auth_checking)
        return s->actions;
    s->auth_checking = false;
    if (s->sasl != NULL) {
        sasl_server_reset(s->sasl);
        s->sasl = xfree(s->sasl);
    }
    if (s->state == SMTP_ST_CLOSING)
        return s->actions;
    if (ok) {
        s->authenticated = true;
        smtp_reply(s, "235 2.7.0 Authentication successful");
    } else {
        s->auth_user[0] = '\0';
        smtp_error(s, "535 5.7.8 Error: authentication failed");
    }
    smtp_set_command_deadline(s);
    smtp_resume(s);
    return s->actions;
}

/* --- the body ------------------------------------------------------------ */

/* The RFC 5322 date of the time stamp line, formatted once a second per
 * thread (every message of that second on this thread shares it). */
static const char *
smtp_received_date(uint64_t unix_ms)
{
    static _Thread_local struct {
        time_t t;
        char text[40];
    } cache = { .t = -1 };
    time_t t = (time_t)(unix_ms / 1000);
    if (t != cache.t) {
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(cache.text, sizeof cache.text, "%a, %d %b %Y %H:%M:%S +0000", &tm);
        cache.t = t;
    }
    return cache.text;
}

size_t
smtp_server_format_received(struct smtp_server *s, uint64_t qid, char *buf, size_t cap,
                            uint64_t unix_ms)
{
    char id[17], rcpt[ADDRESS_PATH_MAX * 4 + 16] = "";
    s->txn.qid = qid;
    smtp_qid_format(qid, id);
    const char *date = smtp_received_date(unix_ms);
    if (s->txn.nrcpt == 1) {
        /* One recipient only: naming one of several would leak the others. */
        char esc[ADDRESS_PATH_MAX * 4 + 1];
        log_escape(esc, sizeof esc, s->txn.rcpts[0].box.addr, s->txn.rcpts[0].box.len);
        snprintf(rcpt, sizeof rcpt, "\r\n\tfor <%s>", esc);
    }
    /* RFC 5321 §4.4 time stamp line; "with" per RFC 3848 (S: TLS). */
    char with[16];
    snprintf(with, sizeof with, "%s%s%s",
             s->txn.params.smtputf8 ? "UTF8SMTP" : (s->esmtp ? "ESMTP" : "SMTP"),
             s->tls_active ? "S" : "", s->authenticated ? "A" : "");
    char tls[sizeof s->tls_info + sizeof s->auth_user + 48] = "";
    int tl = 0;
    if (s->tls_active)
        tl = snprintf(tls, sizeof tls, "\r\n\t(using %s)", s->tls_info);
    if (s->authenticated)
        snprintf(tls + tl, sizeof tls - (size_t)tl, "\r\n\t(Authenticated sender: %s)",
                 s->auth_user);
    int n = snprintf(buf, cap,
                     "Received: from %s (%s [%s])%s\r\n\tby %s (ringmta) with %s id %s%s;\r\n"
                     "\t%s\r\n",
                     s->helo[0] ? s->helo : "unknown", "unknown", s->client_text, tls,
                     s->hostname, with, id, rcpt, date);
    if (n < 0 || (size_t)n >= cap)
        return 0;
    s->txn.body_size = 0;
    return (size_t)n;
}

unsigned
smtp_server_body_started(struct smtp_server *s)
{
    smtp_enter_state(s, SMTP_ST_BODY);
    /* The data deadline starts now (Postfix smtpd_min_data_rate model). */
    s->deadline_ms = s->now_ms + s->cfg->smtpd_timeout_ms;
    if (!s->txn.bdat && !s->txn.discarding)
        smtp_reply(s, "354 End data with <CR><LF>.<CR><LF>");
    return s->actions &= ~SMTP_ACT_BEGIN_BODY, s->actions;
}

unsigned
smtp_server_body_refused(struct smtp_server *s, int err)
{
    s->actions &= ~SMTP_ACT_BEGIN_BODY;
    s->txn.qid = 0;
    if (s->txn.bdat) {
        /* The chunk is on its way: read and drop it, then answer. */
        s->txn.discarding = true;
        s->txn.reject_code = err == -ENOSPC ? "452 4.3.1 Error: insufficient system storage"
                                            : "451 4.3.0 Error: queue file write error";
        smtp_enter_state(s, SMTP_ST_BODY);
        return s->actions;
    }
    if (err == -ENOSPC)
        smtp_error(s, "452 4.3.1 Error: insufficient system storage");
    else
        smtp_error(s, "451 4.3.0 Error: queue file write error");
    smtp_txn_reset(s);
    smtp_enter_state(s, SMTP_ST_READY);
    return s->actions;
}

void
smtp_server_body_storage_failed(struct smtp_server *s, int err)
{
    s->txn.discarding = true;
    s->txn.qid = 0;
    s->txn.reject_code = err == -ENOSPC ? "452 4.3.1 Error: insufficient system storage"
                                        : "451 4.3.0 Error: queue file write error";
}

void
smtp_server_abort(struct smtp_server *s)
{
    smtp_abort_body_if_any(s);
    smtp_txn_reset(s);
}

/* Content verdict at the end of the body: NULL when acceptable. */
static const char *
smtp_body_verdict(struct smtp_server *s)
{
    const struct data_scan *sc = &s->txn.scan;
    if (sc->flags & (DATA_SCAN_BARE_LF | DATA_SCAN_BARE_CR))
        return "554 5.6.0 Error: bare <CR> or <LF> in message; lines must end with <CR><LF>";
    if (sc->flags & DATA_SCAN_LONG_LINE)
        return "554 5.6.0 Error: message has a line longer than the limit (RFC 5322 2.1.1)";
    if (sc->flags & DATA_SCAN_BIG_HEADER)
        return "552 5.3.4 Error: message header section too large";
    if (s->cfg->max_hops && sc->received > s->cfg->max_hops)
        return "554 5.4.6 Error: too many hops (mail loop?)";
    return NULL;
}

/* The body is complete and rejected: reply, reset, back to commands. */
static enum smtp_body_result
smtp_body_reject(struct smtp_server *s, const char *line)
{
    smtp_abort_body_if_any(s);
    smtp_txn_reset(s);
    /* Fix: a BDAT chunk read before EHLO/HELO must not count as greeting. */
    smtp_enter_state(s, s->helo[0] ? SMTP_ST_READY : SMTP_ST_CONNECTED);
    smtp_set_command_deadline(s);
    smtp_error(s, "%s", line);
    /* Fix: commands pipelined behind a rejected BDAT chunk are already in
     * pending; io/ passes no further octets here, so run them now (as
     * committed() does) instead of waiting for the client's next read. */
    smtp_resume(s);
    return SMTP_BODY_REJECTED;
}

enum smtp_body_result
smtp_server_body(struct smtp_server *s, const uint8_t *p, size_t n, size_t *consumed,
                 uint64_t now_ms)
{
    struct smtp_txn *t = &s->txn;
    bool was_discarding = t->discarding;
    bool end = false;
    size_t used;

    s->now_ms = now_ms;
    if (t->bdat || (t->discarding && t->scan.mode == DATA_SCAN_RAW)) {
        used = n < t->chunk_left ? n : (size_t)t->chunk_left;
        data_scan_feed(&t->scan, p, used, &end);
        t->chunk_left -= used;
        end = (t->chunk_left == 0);
    } else {
        used = data_scan_feed(&t->scan, p, n, &end);
    }
    *consumed = used;

    /* Minimum data rate: each octet buys 1/rate s of deadline, capped at
     * smtpd_timeout from now (Postfix smtpd_min_data_rate). */
    if (s->cfg->smtpd_min_data_rate) {
        uint64_t credit = (uint64_t)used * 1000 / s->cfg->smtpd_min_data_rate;
        uint64_t cap = now_ms + s->cfg->smtpd_timeout_ms;
        s->deadline_ms = s->deadline_ms + credit > cap ? cap : s->deadline_ms + credit;
    } else {
        s->deadline_ms = now_ms + s->cfg->smtpd_timeout_ms;
    }

    if (!t->discarding) {
        /* Fix: mid-DATA, up to 2 octets (".", ".\r") may be the start of
         * the terminator; counting them refused a message of exactly the
         * limit depending on how the reads were split. The exact check is
         * made at the end, when the terminator is known. */
        uint64_t tail = t->bdat ? 0 : end ? 3 : (t->scan.total < 2 ? t->scan.total : 2);
        uint64_t body = t->scan.total - tail;
        if (s->cfg->message_size_limit && body > s->cfg->message_size_limit) {
            t->discarding = true;   /* limit 0 = none (it refused every body) */
            t->reject_code = "552 5.3.4 Error: message file too big";
        }
    }
    if (!end) {
        if (t->discarding && !was_discarding) {
            smtp_abort_body_if_any(s);
            return SMTP_BODY_DISCARD;
        }
        return SMTP_BODY_MORE;
    }

    if (t->discarding) {
        /* For BDAT, a discarded non-LAST chunk still needs its reply and
         * the rest of the message stays rejected (RFC 3030 §4.2). */
        if (t->scan.mode == DATA_SCAN_RAW && !t->bdat_last) {
            const char *code = t->reject_code;
            if (t->nrcpt == 0) {
                /* Fix: a first chunk refused for the state (no MAIL/RCPT)
                 * leaves no transaction behind. Keeping txn.discarding set
                 * made a later DATA read and drop its body without a 354,
                 * and io/'s prefix loop spun on it forever. */
                smtp_txn_reset(s);
                smtp_enter_state(s, s->helo[0] ? SMTP_ST_READY : SMTP_ST_CONNECTED);
            } else {
                smtp_enter_state(s, SMTP_ST_RCPT);
            }
            smtp_error(s, "%s", code);
            return SMTP_BODY_CHUNK_DONE;
        }
        return smtp_body_reject(s, t->reject_code);
    }
    if (t->bdat && !t->bdat_last) {
        smtp_reply(s, "250 2.0.0 Ok: %llu octets received",
                   (unsigned long long)(t->scan.total));
        smtp_enter_state(s, SMTP_ST_RCPT);
        smtp_set_command_deadline(s);
        return SMTP_BODY_CHUNK_DONE;
    }
    if (t->bdat)
        data_scan_finish(&t->scan);
    const char *verdict = smtp_body_verdict(s);
    if (verdict != NULL)
        return smtp_body_reject(s, verdict);
    t->body_size = t->scan.total - (t->bdat ? 0 : 3);
    smtp_enter_state(s, SMTP_ST_COMMIT);
    return SMTP_BODY_COMMIT;
}

uint64_t
smtp_server_body_length(const struct smtp_server *s)
{
    return s->txn.body_size;
}

bool
smtp_server_body_has_no_dot_lines(const struct smtp_server *s)
{
    return !s->txn.bdat && s->txn.scan.dot_lines == 0;
}

unsigned
smtp_server_committed(struct smtp_server *s, int res, uint64_t now_ms)
{
    s->now_ms = now_ms;
    if (s->state != SMTP_ST_COMMIT)
        return s->actions;
    char id[17];
    smtp_qid_format(s->txn.qid, id);
    s->txn.qid = 0;   /* the spool owns the message now */
    smtp_txn_reset(s);
    smtp_enter_state(s, SMTP_ST_READY);
    if (res == 0) {
        s->messages++;
        s->junk = 0;
        smtp_reply(s, "250 2.0.0 Ok: queued as %s", id);
    } else if (res == -ENOSPC) {
        smtp_error(s, "452 4.3.1 Error: insufficient system storage");
    } else {
        smtp_error(s, "451 4.3.0 Error: queue file write error");
    }
    smtp_set_command_deadline(s);
    smtp_resume(s);
    return s->actions;
}

size_t
smtp_server_take_body_prefix(struct smtp_server *s, const uint8_t **p)
{
    *p = s->pending;
    return s->pending_len;
}

void
smtp_server_drop_body_prefix(struct smtp_server *s, size_t n)
{
    smtp_pending_consume(s, n);
}

unsigned
smtp_server_tick(struct smtp_server *s, uint64_t now_ms)
{
    s->now_ms = now_ms;
    if (s->state == SMTP_ST_CLOSING || s->state == SMTP_ST_GREETING
        || s->state == SMTP_ST_COMMIT)
        return s->actions;
    if ((s->actions & SMTP_ACT_HOLD) && now_ms >= s->hold_until_ms) {
        s->actions &= ~SMTP_ACT_HOLD;
        s->actions |= s->out.len ? SMTP_ACT_SEND : 0;
        smtp_set_command_deadline(s);
        smtp_resume(s);
        return s->actions;
    }
    if (!(s->actions & SMTP_ACT_HOLD) && now_ms >= s->deadline_ms) {
        char bye[300];
        snprintf(bye, sizeof bye, "421 4.4.2 %s Error: timeout exceeded", s->hostname);
        smtp_close_with(s, bye);
    }
    return s->actions;
}
