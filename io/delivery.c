/*
 * delivery - outbound connections of one worker (see delivery.h).
 *
 * Per-worker: only the worker's thread touches any of this. An outbound
 * connection (struct outconn) goes RESOLVE -> CONNECT -> SMTP -> CLOSE:
 *   - the next hop comes from the scheduler's destination (relayhost,
 *     transport_map or MX); names are resolved through io/dns on the ring;
 *   - connect is an IORING_OP_CONNECT linked to a timeout, trying each
 *     address in MX order;
 *   - the SMTP dialogue is core/smtp_client; replies arrive by recv into the
 *     connection's own small buffer (outbound connections are few);
 *   - the body is sent straight from the spool mapping, extent by extent
 *     (one send in flight per connection, a SENDMSG that also carries the
 *     commands before and after it); a DATA-form body with stuffed lines
 *     to a peer with CHUNKING goes by BDAT as the runs between its stuffing
 *     dots (body_unstuff, up to OUT_UNSTUFF_MAX); a BDAT-received body to a
 *     peer without CHUNKING is dot-stuffed through body_xform.
 *
 * Durability of outcomes: when a transaction ends, each recipient's outcome
 * is appended as a RCPT_STATUS record; the job waits on the worker's
 * outcome list until the fsync covering those records completes, and only
 * then is the scheduler told (retry, drop). A crash between the remote 250
 * and that fsync means one more delivery later, never a loss.
 *
 * TLS (STARTTLS, RFC 3207): smtp_tls_security_level (main.cf, overridable
 * per destination) says none, may (when offered), encrypt (defer without
 * it) or verify (also a certificate for the next hop's name from the CA
 * store). The stream is io/tls over memory BIOs: ciphertext is received
 * into rbuf and decrypted into the worker's scratch buffer for the client
 * session; plaintext to send (commands, body pieces straight from the
 * mapping) is encrypted into tls_ct and that is what the ring sends. A
 * plaintext piece counts as sent once all of its ciphertext is. Sessions
 * are cached per destination for resumption; an opportunistic handshake
 * that fails makes the next connections to that destination plaintext for
 * an hour (out_tls_cache), as the TLS would have been optional anyway.
 *
 * user_data: every SQE of an outbound connection points at one of its
 * embedded struct out_op (16-byte aligned) tagged OP_OUT; the op's kind says
 * which completion it is. The connection is freed only after its close
 * completes, and close is submitted only when nothing else is in flight.
 */
#include "delivery.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "alloc.h"
#include "body_xform.h"
#include "dns.h"
#include "dsn.h"
#include "log.h"
#include "scheduler.h"
#include "smtp_client.h"
#include "smtp_params.h"
#include "smtp_reply.h"
#include "tls.h"
#include "worker.h"

#define OUT_RBUF 4096
#define OUT_STUFF_BUF 16384
#define OUT_MAX_ADDRS 16
#define OUT_TLS_PIECE (64u << 10)       /* plaintext encrypted per send */
#define OUT_TX_IOV 32                   /* pieces per SENDMSG */
/* A DATA-form body with stuffed lines goes unstuffed by BDAT up to this
 * size: for small messages the 354 round trip it saves is much of the
 * transaction; above, the transfer dominates, and the body keeps going
 * verbatim by DATA (one piece, SEND_ZC on a real NIC, no scan). */
#define OUT_UNSTUFF_MAX (64u << 10)
#define OUT_TLS_CACHE 256               /* destinations with a TLS memory */
#define OUT_TLS_PLAINTEXT_HOLD_MS (3600u * 1000)

enum out_kind { OUT_CONNECT = 1, OUT_LINK_TIMEOUT, OUT_RECV, OUT_SEND, OUT_CLOSE };

struct outconn;

struct out_op {
    _Alignas(16) struct outconn *oc;
    uint8_t kind;
};

enum out_phase { OUT_RESOLVING = 0, OUT_CONNECTING, OUT_SMTP, OUT_CLOSING };

struct outconn {
    struct out_op op_connect, op_timeout, op_recv, op_send, op_close;
    struct worker *w;
    struct scheduler_dest *dest;
    enum out_phase phase;
    int fd;
    unsigned inflight;
    bool recv_armed;
    bool send_armed;
    bool close_submitted;
    bool conn_ok_reported;
    bool retry_next_addr;       /* closing to try the next address of this hop */
    bool session_failed;        /* a session failure was fed to AIMD this attempt */
    bool last_is_session;       /* last_error/last_enh: an SMTP/TLS failure, not a connect one */
    char last_enh[12];
    bool sending_body;
    bool send_zc;               /* bodies by SEND_ZC on this connection */
    bool zc_in_flight;          /* the send in flight is a SEND_ZC */
    /* where to connect */
    struct netaddr addrs[OUT_MAX_ADDRS];
    char names[OUT_MAX_ADDRS][64];
    unsigned naddrs, next_addr;
    uint16_t port;
    char peer[96];              /* "mx.example[192.0.2.1]:25" for logs */
    struct sockaddr_storage sa;
    struct __kernel_timespec connect_ts;
    char last_error[400];
    /* the SMTP session */
    struct smtp_client smtp;
    bool smtp_inited;
    uint8_t rbuf[OUT_RBUF];
    /* The send in flight: pieces in order (commands, the body's pieces,
     * the commands that follow it, e.g. DATA's "."), so that a whole
     * pipelined transaction, or a body and its terminator, is one SENDMSG.
     * The body is one piece, or the runs between its stuffing dots when
     * it goes unstuffed. A short send resumes where it stopped. */
    struct smtp_outbuf sending;        /* commands before the body piece */
    struct smtp_outbuf sending_after;  /* commands after it */
    struct iovec tx_iov[OUT_TX_IOV];
    struct msghdr tx_msg;
    unsigned tx_first, tx_niov;        /* pieces left: tx_iov[tx_first..tx_niov) */
    size_t tx_left;                    /* octets not yet sent */
    bool tx_body;                      /* carries body octets */
    bool tx_zc;                        /* the body piece goes by SEND_ZC, alone */
    /* the job in flight */
    struct scheduler_job *job;
    struct smtpc_msg msg;
    const char **rcpt_ptrs;
    uint64_t job_started_ms;
    /* body streaming */
    uint32_t body_ext;          /* extent being sent */
    uint64_t body_off;          /* octets of the body already handed to send */
    uint64_t body_sent_total;
    struct body_xform xf;
    struct body_unstuff unstuff;
    uint8_t *stuff;             /* OUT_STUFF_BUF when stuffing */
    bool stuff_finished;
    unsigned messages;
    uint64_t idle_since_ms;
    /* TLS: once tls_on, everything on the socket is TLS */
    bool tls_on;
    bool tls_ctl;               /* the send in flight carries no plaintext */
    bool tls_failed;            /* no session worth keeping */
    bool tls_fell_back;         /* this attempt already retried an address in plaintext */
    unsigned tls_level;         /* enum tls_level for this connection */
    struct tls_stream tls;
    struct smtp_outbuf tls_ct;  /* ciphertext being sent */
    size_t tls_ct_sent;
    struct outconn *next;
};

/* What a worker remembers per destination about TLS: a session to resume,
 * and, after an opportunistic handshake failed, until when to skip TLS. */
struct out_tls_memory {
    char key[128];
    SSL_SESSION *session;
    uint64_t plaintext_until_ms;
};

/* A finished transaction waiting for its RCPT_STATUS records (and the
 * bounce it made, if any) to be durable. */
struct outcome {
    struct scheduler_job *job;
    struct spool_ticket ticket;
    bool ticket_failed;
    struct queue_msg *bounce;       /* queued once durable */
    struct spool_ticket bounce_ticket;
    struct outcome *next;
};

struct delivery {
    struct scheduler *sched;
    struct dns *dns;
    struct outconn *conns;
    struct outcome *waiting;
    unsigned nconns;
    struct out_tls_memory tls_memory[OUT_TLS_CACHE];
};

static void out_close(struct worker *w, struct outconn *oc);
static void out_flush(struct worker *w, struct outconn *oc);
static void out_job_finished(struct worker *w, struct outconn *oc);

static struct io_uring_sqe *
delivery_get_sqe(void *arg)
{
    return worker_sqe(arg);
}

int
delivery_init(struct worker *w, char *err, size_t errsize)
{
    struct daemon *d = w->d;
    struct delivery *dl = xcalloc(1, sizeof *dl);
    dl->sched = scheduler_new(d->cfg, d->transport, d->relayhost_set ? &d->relayhost : NULL,
                              d->policy, worker_unix_ms() ^ ((uint64_t)w->id << 48));
    dl->dns = dns_new(delivery_get_sqe, w, d->cfg->dns_servers, err, errsize);
    if (dl->dns == NULL) {
        scheduler_free(dl->sched);
        xfree(dl);
        return -1;
    }
    dns_seed(dl->dns, worker_unix_ms() ^ w->id);
    w->delivery = dl;
    return 0;
}

void
delivery_free(struct worker *w)
{
    struct delivery *dl = w->delivery;
    if (dl == NULL)
        return;
    scheduler_free(dl->sched);
    dns_free(dl->dns);
    for (size_t i = 0; i < OUT_TLS_CACHE; i++)
        tls_session_free(dl->tls_memory[i].session);
    xfree(dl);
    w->delivery = NULL;
}

void
delivery_add(struct worker *w, struct queue_entry *e, uint64_t due_ms)
{
    scheduler_add_entry(w->delivery->sched, e, due_ms, 0, worker_unix_ms());
}

/* --- logging ---------------------------------------------------------------- */

static const char *
out_class_word(uint8_t outcome)
{
    switch (outcome) {
    case SCHEDULER_DELIVERED:
        return "sent";
    case SCHEDULER_FAILED:
        return "bounced";
    default:
        return "deferred";
    }
}

/* Postfix-style: one line per recipient per attempt. */
static void
out_log_result(struct outconn *oc, struct scheduler_job *job, uint32_t i, uint64_t now)
{
    if (log_get_level() < LOG_INFO)
        return;   /* not logged: skip the escaping too */
    const struct queue_msg *m = job->entry->msg;
    const struct scheduler_result *r = &job->results[i];
    char id[17], to[300], text[300];
    smtp_qid_format(m->qid, id);
    const char *addr = m->env.rcpts[job->entry->rcpt[i]].addr;
    log_escape(to, sizeof to, addr, strlen(addr));
    log_escape(text, sizeof text, r->text, strlen(r->text));
    uint64_t delay = now > m->env.arrival_ms ? now - m->env.arrival_ms : 0;
    log_info("%s: to=<%s>, relay=%s, delay=%llu.%03llu, attempt=%u, dsn=%s, status=%s (%s)",
             id, to, oc != NULL && oc->peer[0] ? oc->peer : "none", (unsigned long long)(delay / 1000),
             (unsigned long long)(delay % 1000), job->attempt + 1,
             r->status[0] ? r->status : "4.0.0", out_class_word(r->outcome), text);
}

/* --- outcomes: record, wait for the fsync, then act -------------------------- */

static uint8_t
out_rcpt_state(uint8_t outcome)
{
    switch (outcome) {
    case SCHEDULER_DELIVERED:
        return RCPT_DELIVERED;
    case SCHEDULER_FAILED:
        return RCPT_FAILED;
    default:
        return RCPT_DEFERRED;
    }
}

static const char *
out_kind_word(const struct dsn_rcpt *r, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        if (r[i].action == DSN_ACTION_FAILED)
            return "non-delivery";
    for (uint32_t i = 0; i < n; i++)
        if (r[i].action == DSN_ACTION_DELAYED)
            return "delay";
    return "delivery status";
}

/*
 * The bounce (RFC 3464) for the job's FAILED recipients, written to the spool
 * as a new message from <> to the original sender. It is appended before the
 * failures are recorded, so one fsync covers both and a crash can never keep
 * the failure and lose the bounce (RELIABILITY row 44). Returns 0 (with
 * *bounce NULL when no notice is due: null sender, NOTIFY=NEVER...) or
 * -errno: then nothing is recorded and the recipients are tried again.
 */
static int
delivery_bounce(struct worker *w, struct outconn *oc, struct scheduler_job *job,
                struct queue_msg **bounce, struct spool_ticket *ticket)
{
    struct queue_entry *e = job->entry;
    struct queue_msg *m = e->msg;
    uint64_t now = worker_unix_ms();
    *bounce = NULL;
    struct dsn_rcpt *dr = xcalloc(e->nrcpt ? e->nrcpt : 1, sizeof *dr);
    uint32_t n = 0;
    for (uint32_t i = 0; i < e->nrcpt; i++) {
        const struct scheduler_result *r = &job->results[i];
        const struct envelope_rcpt *er = &m->env.rcpts[e->rcpt[i]];
        /* Failures by default; success notices only when NOTIFY=SUCCESS
         * asked for them (RFC 3461 §4.1). */
        enum dsn_action action;
        uint64_t retry_until = 0;
        if (r->outcome == SCHEDULER_FAILED)
            action = DSN_ACTION_FAILED;
        else if (r->outcome == SCHEDULER_DELIVERED)
            action = DSN_ACTION_DELIVERED;
        else if (r->outcome == SCHEDULER_DEFERRED && r->delay_notice) {
            action = DSN_ACTION_DELAYED;   /* chosen by delivery_record */
            retry_until = m->env.arrival_ms + w->d->cfg->max_queue_lifetime_ms;
        } else
            continue;
        if (!dsn_should_notify(m->env.sender, er->notify, action))
            continue;
        dr[n++] = (struct dsn_rcpt){
            .addr = er->addr,
            .orcpt = er->orcpt,
            .action = action,
            .status = r->status,
            .remote_mta = oc != NULL && oc->peer[0] ? oc->dest->hop.host : NULL,
            .diag_type = r->code ? "smtp" : "x-ringmta",
            .diag = r->text,
            .diag_len = strlen(r->text),
            .last_attempt_ms = now,
            .retry_until_ms = retry_until,
        };
    }
    if (n == 0) {
        xfree(dr);
        return 0;
    }
    struct dsn_segment *segs = xcalloc(m->nbody ? m->nbody : 1, sizeof *segs);
    uint64_t left = m->body_len;
    size_t nseg = 0;
    for (uint32_t k = 0; k < m->nbody && left > 0; k++) {
        size_t len = m->body[k].len < left ? m->body[k].len : (size_t)left;
        segs[nseg++] = (struct dsn_segment){ m->body[k].seg->base + m->body[k].off, len };
        left -= len;
    }
    struct dsn_report rep = {
        .reporting_mta = w->d->hostname,
        .sender = m->env.sender,
        .envid = m->env.envid,
        .ret = (enum mail_ret)m->env.ret,
        .smtputf8 = m->env.smtputf8,
        .arrival_ms = m->env.arrival_ms,
        .qid = m->qid,
        .rcpts = dr,
        .nrcpt = n,
        .segs = segs,
        .nseg = nseg,
        .form = (m->body_flags & SPOOL_BODY_RAW) ? DSN_CONTENT_RAW : DSN_CONTENT_DATA,
    };
    struct dsn_output out;
    int rc = dsn_build(&rep, now, &out);
    xfree(segs);
    xfree(dr);
    if (rc != 0)
        return rc;

    struct envelope env;
    memset(&env, 0, sizeof env);
    env.sender = xstrdup(DSN_ENVELOPE_SENDER);
    env.nrcpt = 1;
    env.rcpts = xcalloc(1, sizeof *env.rcpts);
    env.rcpts[0].addr = xstrdup(m->env.sender);
    env.rcpts[0].notify = NOTIFY_NEVER;   /* a bounce never bounces */
    env.client_addr = xstrdup("127.0.0.1");
    env.client_helo = xstrdup(w->d->hostname);
    env.arrival_ms = now;
    env.size_hint = out.len;
    env.body_type = out.eightbit ? MAIL_BODY_8BITMIME : MAIL_BODY_7BIT;
    env.smtputf8 = out.smtputf8;
    uint64_t qid = worker_next_qid(w, now);
    struct spool_msg *sm;
    rc = spool_msg_begin(w->spool, qid, &env, out.len, false, &sm);
    if (rc == 0 && (rc = spool_msg_append(sm, out.data, out.len)) != 0)
        spool_msg_abort(sm);
    struct spool_extent *ext = NULL;
    uint32_t next = 0;
    struct spool_holdset holds = { 0 };
    if (rc == 0)
        rc = spool_msg_commit_extents(sm, ticket, &ext, &next, &holds);
    uint64_t len = out.len;
    dsn_output_free(&out);
    if (rc != 0) {
        envelope_free(&env);
        return rc;
    }
    char id[17], bid[17];
    smtp_qid_format(m->qid, id);
    smtp_qid_format(qid, bid);
    log_info("%s: sender %s notification: %s", id,
             out_kind_word(rep.rcpts, rep.nrcpt), bid);
    *bounce = queue_msg_new(qid, &env, len, 0, ext, next, &holds);
    return 0;
}

/*
 * A deferred recipient is reported to its sender as delayed once, when the
 * message has waited delay_warning_time (Postfix's delay_warning_time; 0
 * turns notices off) and NOTIFY allows it. The notice rides in the same
 * report as this job's failures; the recipient's RCPT_STATUS record carries
 * SPOOL_RCPT_DELAY_WARNED so no restart sends it again.
 */
static bool
delivery_delay_notice_due(const struct worker *w, const struct queue_msg *m,
                          const struct envelope_rcpt *er, uint64_t now)
{
    uint64_t after = w->d->cfg->delay_warning_time_ms;
    return after > 0 && !er->delay_warned && now >= m->env.arrival_ms + after
           && dsn_should_notify(m->env.sender, er->notify, DSN_ACTION_DELAYED);
}

/*
 * The transaction is over and job->results is filled. Expired deferrals
 * become failures (5.4.7); deferrals old enough get a delay notice. Every
 * tried recipient gets a RCPT_STATUS record; the job then waits for the
 * fsync that covers them.
 */
static void
delivery_record(struct worker *w, struct outconn *oc, struct scheduler_job *job)
{
    struct delivery *dl = w->delivery;
    uint64_t now = worker_unix_ms();
    struct queue_entry *e = job->entry;
    bool expired = scheduler_job_expired(dl->sched, job, now);
    struct outcome *o = xcalloc(1, sizeof *o);
    o->job = job;
    for (uint32_t i = 0; i < e->nrcpt; i++) {
        struct scheduler_result *r = &job->results[i];
        if (r->outcome == SCHEDULER_DEFERRED && expired) {
            r->outcome = SCHEDULER_FAILED;
            snprintf(r->status, sizeof r->status, "5.4.7");
            char why[sizeof r->text];
            snprintf(why, sizeof why, "message expired after max_queue_lifetime; last: %.190s",
                     r->text);
            snprintf(r->text, sizeof r->text, "%s", why);
        }
        r->delay_notice = r->outcome == SCHEDULER_DEFERRED
                          && delivery_delay_notice_due(w, e->msg,
                                                       &e->msg->env.rcpts[e->rcpt[i]], now);
    }
    if (delivery_bounce(w, oc, job, &o->bounce, &o->bounce_ticket) != 0) {
        /* No bounce, no failure: they are tried again later (and the
         * delay notice with them). */
        for (uint32_t i = 0; i < e->nrcpt; i++) {
            job->results[i].delay_notice = false;
            if (job->results[i].outcome == SCHEDULER_FAILED) {
                job->results[i].outcome = SCHEDULER_DEFERRED;
                snprintf(job->results[i].status, sizeof job->results[i].status, "4.3.0");
            }
        }
    }
    for (uint32_t i = 0; i < e->nrcpt; i++) {
        struct scheduler_result *r = &job->results[i];
        if (r->outcome == SCHEDULER_PENDING)
            continue;
        out_log_result(oc, job, i, now);
        struct spool_ticket t;
        /* A deferral carries its next attempt, so a restart keeps the backoff. */
        uint64_t next = r->outcome == SCHEDULER_DEFERRED
                            ? scheduler_job_retry_at(dl->sched, job, now) : 0;
        uint8_t flags = r->delay_notice || e->msg->env.rcpts[e->rcpt[i]].delay_warned
                            ? SPOOL_RCPT_DELAY_WARNED : 0;
        int rc = spool_append_rcpt_status(w->spool, e->msg->qid, e->rcpt[i],
                                          out_rcpt_state(r->outcome), flags, next,
                                          &e->msg->holds, &t);
        if (rc < 0) {
            o->ticket_failed = true;
            continue;
        }
        /* One segment per worker is current: the last ticket covers all. */
        o->ticket = t;
    }
    o->next = dl->waiting;
    dl->waiting = o;
}

/* Records became durable (or could not be written): act on the outcome. */
static void
delivery_act(struct worker *w, struct outcome *o, int res)
{
    struct delivery *dl = w->delivery;
    struct scheduler_job *job = o->job;
    struct queue_entry *e = job->entry;
    struct queue_msg *m = e->msg;
    uint64_t now = worker_unix_ms();
    if (res < 0 || o->ticket_failed) {
        /* Not recorded: try them again later rather than claim anything
         * (a delivered recipient may be delivered twice; never lost). */
        for (uint32_t i = 0; i < e->nrcpt; i++)
            if (job->results[i].outcome == SCHEDULER_DELIVERED
                || job->results[i].outcome == SCHEDULER_FAILED)
                job->results[i].outcome = SCHEDULER_DEFERRED;
    }
    for (uint32_t i = 0; i < e->nrcpt; i++) {
        uint8_t oc = job->results[i].outcome;
        if (res == 0 && !o->ticket_failed && job->results[i].delay_notice)
            m->env.rcpts[e->rcpt[i]].delay_warned = true;
        if (oc == SCHEDULER_DELIVERED || oc == SCHEDULER_FAILED) {
            m->env.rcpts[e->rcpt[i]].state = out_rcpt_state(oc);
            if (atomic_fetch_sub(&m->open_rcpts, 1) == 1) {
                char id[17];
                smtp_qid_format(m->qid, id);
                log_info("%s: removed", id);
                /* Every final status is durable: the COMMIT can be retired
                 * and, with it, what holds the message's segments. No DONE
                 * record: until the RETIRED rewrite is durable, recovery
                 * finds every recipient final and retires it then. */
                spool_retire(&m->holds, m->qid);
            }
        }
    }
    scheduler_job_done(dl->sched, job, now);
}

static void
delivery_settle(struct worker *w)
{
    struct delivery *dl = w->delivery;
    struct outcome **pp = &dl->waiting;
    while (*pp != NULL) {
        struct outcome *o = *pp;
        int st = o->ticket.n == 0 ? 1 : spool_ticket_state(&o->ticket);
        int bst = o->bounce == NULL || o->bounce_ticket.n == 0
                      ? 1
                      : spool_ticket_state(&o->bounce_ticket);
        if (st == 0 || bst == 0) {
            pp = &o->next;
            continue;
        }
        *pp = o->next;
        if (st == 1 && bst == 1 && o->bounce != NULL) {
            worker_message_accepted(w, o->bounce);   /* takes our reference */
        } else if (o->bounce != NULL) {
            queue_msg_put(o->bounce);
            if (st == 1)
                st = -1;   /* failures recorded without their bounce: retry */
        }
        delivery_act(w, o, st == 1 ? 0 : -EIO);
        xfree(o);
    }
}

/* Every recipient of a job gets the same outcome (DNS or connect failure). */
static void
out_fail_job(struct scheduler_job *job, uint8_t outcome, const char *status,
             const char *text)
{
    for (uint32_t i = 0; i < job->entry->nrcpt; i++) {
        struct scheduler_result *r = &job->results[i];
        r->outcome = outcome;
        r->code = 0;
        snprintf(r->status, sizeof r->status, "%s", status);
        snprintf(r->text, sizeof r->text, "%s", text);
    }
}

/* The destination cannot be reached now: the ready jobs of this connection's
 * destination (as many as it would have taken) share the outcome. */
static void
out_fail_destination(struct worker *w, struct outconn *oc, uint8_t outcome,
                     const char *status, const char *text)
{
    struct delivery *dl = w->delivery;
    uint64_t now = worker_unix_ms();
    struct scheduler_job *job;
    unsigned n = 0;
    while (n < 64 && (job = scheduler_next_job(dl->sched, oc->dest, now)) != NULL) {
        out_fail_job(job, outcome, status, text);
        delivery_record(w, oc, job);
        n++;
    }
}

/* --- connections -------------------------------------------------------------- */

static void
out_arm_recv(struct worker *w, struct outconn *oc)
{
    if (oc->recv_armed || oc->phase != OUT_SMTP)
        return;
    struct io_uring_sqe *sqe = worker_sqe(w);
    io_uring_prep_recv(sqe, oc->fd, oc->rbuf, sizeof oc->rbuf, 0);
    io_uring_sqe_set_data64(sqe, ud_pack(OP_OUT, &oc->op_recv));
    oc->recv_armed = true;
    oc->inflight++;
}

/*
 * SEND_ZC pins the pages of the mapping instead of copying them into the
 * socket buffer; it pays for large pieces on a real NIC. Two completions:
 * the result (IORING_CQE_F_MORE set), then a notification (F_NOTIF) once the
 * kernel no longer needs the pages. The connection lives until both are in
 * (inflight); the pages themselves stay valid while pinned even if the
 * segment is unmapped or removed meanwhile.
 */
#define OUT_ZC_MIN (64u << 10)
static atomic_bool out_zc_unsupported;   /* the kernel said EINVAL/EOPNOTSUPP */

static bool
out_zc_wanted(const struct worker *w, const struct sockaddr_storage *sa)
{
    switch (w->d->cfg->smtp_send_zerocopy) {
    case SEND_ZEROCOPY_NO:
        return false;
    case SEND_ZEROCOPY_YES:
        return !atomic_load(&out_zc_unsupported);
    case SEND_ZEROCOPY_AUTO:
        break;
    }
    if (atomic_load(&out_zc_unsupported))
        return false;
    /* Loopback copies in any case (and then SEND_ZC only adds work). */
    if (sa->ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
        return (ntohl(sin->sin_addr.s_addr) >> 24) != 127;
    }
    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
    return !IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr) && !IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr);
}

static void
out_send_raw(struct worker *w, struct outconn *oc, const void *p, size_t n)
{
    struct io_uring_sqe *sqe = worker_sqe(w);
    io_uring_prep_send(sqe, oc->fd, p, n, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, ud_pack(OP_OUT, &oc->op_send));
    oc->send_armed = true;
    oc->inflight++;
}

/* Sends the TLS records the stream has ready. control: they carry no
 * plaintext of ours (handshake messages, alerts). */
static void
out_send_tls_records(struct worker *w, struct outconn *oc, bool control)
{
    oc->tls_ctl = control;
    oc->tls_ct.len = 0;
    oc->tls_ct_sent = 0;
    tls_stream_take_output(&oc->tls, &oc->tls_ct);
    out_send_raw(w, oc, oc->tls_ct.data, oc->tls_ct.len);
}

static void
out_tx_begin(struct outconn *oc)
{
    oc->tx_first = 0;
    oc->tx_niov = 0;
    oc->tx_left = 0;
    oc->tx_body = false;
    oc->tx_zc = false;
}

static void
out_tx_add(struct outconn *oc, const void *p, size_t n)
{
    if (n == 0)
        return;
    oc->tx_iov[oc->tx_niov++] = (struct iovec){ .iov_base = (void *)p, .iov_len = n };
    oc->tx_left += n;
}

/* Submits what is left of the send: one SEND (or SEND_ZC) for one piece,
 * SENDMSG for more. */
static void
out_tx_send_plain(struct worker *w, struct outconn *oc)
{
    struct iovec *iov = &oc->tx_iov[oc->tx_first];
    unsigned n = oc->tx_niov - oc->tx_first;
    struct io_uring_sqe *sqe = worker_sqe(w);
    if (n == 1 && oc->tx_zc && oc->send_zc) {
        io_uring_prep_send_zc(sqe, oc->fd, iov->iov_base, iov->iov_len, MSG_NOSIGNAL, 0);
        oc->zc_in_flight = true;
    } else if (n == 1) {
        io_uring_prep_send(sqe, oc->fd, iov->iov_base, iov->iov_len, MSG_NOSIGNAL);
    } else {
        memset(&oc->tx_msg, 0, sizeof oc->tx_msg);
        oc->tx_msg.msg_iov = iov;
        oc->tx_msg.msg_iovlen = n;
        io_uring_prep_sendmsg(sqe, oc->fd, &oc->tx_msg, MSG_NOSIGNAL);
    }
    io_uring_sqe_set_data64(sqe, ud_pack(OP_OUT, &oc->op_send));
    oc->send_armed = true;
    oc->inflight++;
}

/* Sends the pieces gathered: as they are, or encrypted together (with
 * whatever else the stream has queued) when TLS is on. */
static void
out_tx_submit(struct worker *w, struct outconn *oc)
{
    if (!oc->tls_on) {
        out_tx_send_plain(w, oc);
        return;
    }
    for (unsigned i = 0; i < oc->tx_niov; i++) {
        if (tls_stream_write(&oc->tls, oc->tx_iov[i].iov_base, oc->tx_iov[i].iov_len) < 0) {
            log_info("TLS write to %s failed: %s", oc->peer, oc->tls.error);
            break;
        }
    }
    out_send_tls_records(w, oc, false);
}

/* n octets of the plaintext send went out; true when all of it has. */
static bool
out_tx_sent(struct outconn *oc, size_t n)
{
    oc->tx_left -= n < oc->tx_left ? n : oc->tx_left;
    while (n > 0 && oc->tx_first < oc->tx_niov) {
        struct iovec *iov = &oc->tx_iov[oc->tx_first];
        if (n < iov->iov_len) {
            iov->iov_base = (uint8_t *)iov->iov_base + n;
            iov->iov_len -= n;
            break;
        }
        n -= iov->iov_len;
        oc->tx_first++;
    }
    return oc->tx_left == 0;
}

/* --- TLS ---------------------------------------------------------------------- */

static struct out_tls_memory *
out_tls_memory(struct worker *w, const char *key)
{
    uint32_t h = 2166136261u;
    for (const char *p = key; *p; p++)
        h = (h ^ (uint8_t)*p) * 16777619u;
    struct out_tls_memory *m = &w->delivery->tls_memory[h % OUT_TLS_CACHE];
    if (strncmp(m->key, key, sizeof m->key) != 0) {
        /* Another destination had this slot: forget it. */
        tls_session_free(m->session);
        memset(m, 0, sizeof *m);
        snprintf(m->key, sizeof m->key, "%s", key);
    }
    return m;
}

/* The TLS level of a new connection, and the client session's part in it. */
static void
out_tls_configure(struct worker *w, struct outconn *oc)
{
    oc->tls_level = oc->dest->limits.smtp_tls_security_level;
    if (w->d->smtp_tls == NULL)
        oc->tls_level = TLS_LEVEL_NONE;
    if (oc->tls_level == TLS_LEVEL_MAY) {
        const struct out_tls_memory *m = out_tls_memory(w, oc->dest->key);
        if (worker_unix_ms() < m->plaintext_until_ms)
            oc->tls_level = TLS_LEVEL_NONE;
    }
    const char *user, *pass;
    if (route_credentials_lookup(w->d->smtp_credentials, &oc->dest->hop,
                                 (uint16_t)w->d->cfg->smtp_port, &user, &pass)) {
        /* Postfix's smtp_sasl_tls_security_options: no password in the clear. */
        if (w->d->cfg->smtp_tls_auth_only && oc->tls_level < TLS_LEVEL_ENCRYPT)
            oc->tls_level = TLS_LEVEL_ENCRYPT;
        smtp_client_set_auth(&oc->smtp, user, pass);
    }
    if (oc->tls_level >= TLS_LEVEL_ENCRYPT)
        smtp_client_require_tls(&oc->smtp, true);
    else
        smtp_client_set_starttls(&oc->smtp, oc->tls_level == TLS_LEVEL_MAY);
}

/* The name the certificate must carry: the MX (or relayhost) name we
 * connected to. */
static const char *
out_peer_name(const struct outconn *oc)
{
    unsigned i = oc->next_addr ? oc->next_addr - 1 : 0;
    return oc->names[i];
}

/* 220 to STARTTLS: the plaintext is behind us (the client dropped what
 * followed the 220); the handshake starts with our ClientHello. */
static void
out_tls_start(struct worker *w, struct outconn *oc)
{
    const char *name = out_peer_name(oc);
    struct out_tls_memory *m = out_tls_memory(w, oc->dest->key);
    if (tls_stream_client(&oc->tls, w->d->smtp_tls, name,
                          oc->tls_level == TLS_LEVEL_VERIFY ? name : NULL, m->session)
        < 0) {
        smtp_client_tls_done(&oc->smtp, -1, oc->tls.error, worker_mono_ms());
        return;
    }
    oc->tls_on = true;
    tls_stream_handshake(&oc->tls);   /* TLS_AGAIN: the hello is queued */
}

/* The handshake could not finish. For opportunistic TLS the destination is
 * tried in plaintext next (Postfix does the same for "may"). */
static void
out_tls_failed(struct worker *w, struct outconn *oc, const char *why)
{
    oc->tls_failed = true;
    log_info("TLS handshake with %s failed: %s%s", oc->peer, why,
             oc->tls_level == TLS_LEVEL_MAY ? "; next connections in plaintext" : "");
    if (oc->tls_level == TLS_LEVEL_MAY) {
        struct out_tls_memory *m = out_tls_memory(w, oc->dest->key);
        m->plaintext_until_ms = worker_unix_ms() + OUT_TLS_PLAINTEXT_HOLD_MS;
        tls_session_free(m->session);
        m->session = NULL;
    }
    smtp_client_tls_done(&oc->smtp, -1, why, worker_mono_ms());
}

/* Ciphertext arrived: the handshake first, then plaintext for the client. */
static void
out_tls_input(struct worker *w, struct outconn *oc, const uint8_t *p, size_t n)
{
    tls_stream_feed(&oc->tls, p, n);
    if (!oc->tls.handshake_done) {
        enum tls_result r = tls_stream_handshake(&oc->tls);
        if (r == TLS_AGAIN)
            return;
        if (r != TLS_DONE) {
            out_tls_failed(w, oc, r == TLS_CLOSED ? "closed by the server" : oc->tls.error);
            return;
        }
        bool verified = tls_stream_peer_verified(&oc->tls);
        log_info("TLS to %s: %s with cipher %s (%d bits), %s%s", oc->peer,
                 tls_stream_version(&oc->tls), tls_stream_cipher(&oc->tls),
                 tls_stream_cipher_bits(&oc->tls),
                 verified ? "verified" : "unverified",
                 tls_stream_resumed(&oc->tls) ? ", resumed" : "");
        smtp_client_tls_done(&oc->smtp, 0, NULL, worker_mono_ms());
    }
    for (;;) {
        long got = tls_stream_read(&oc->tls, w->tls_scratch, WORKER_TLS_SCRATCH);
        if (got == 0)
            return;
        if (got < 0) {
            if (got == TLS_ERROR) {
                oc->tls_failed = true;
                log_info("TLS error from %s: %s", oc->peer, oc->tls.error);
            }
            smtp_client_peer_closed(&oc->smtp, worker_mono_ms());
            return;
        }
        smtp_client_input(&oc->smtp, w->tls_scratch, (size_t)got, worker_mono_ms());
    }
}

/* A connection that ends: keep its session for the next one. */
static void
out_tls_finish(struct worker *w, struct outconn *oc)
{
    if (!oc->tls_on)
        return;
    if (oc->tls.handshake_done && !oc->tls_failed) {
        /* After close_notify: an SSL freed without it marks its session
         * unresumable (OpenSSL's ssl_clear_bad_session). */
        tls_stream_shutdown(&oc->tls);
        SSL_SESSION *s = tls_stream_session(&oc->tls);
        if (s != NULL) {
            struct out_tls_memory *m = out_tls_memory(w, oc->dest->key);
            tls_session_free(m->session);
            m->session = s;
        }
    }
    tls_stream_free(&oc->tls);
    oc->tls_on = false;
}

static void
out_try_connect(struct worker *w, struct outconn *oc)
{
    while (oc->next_addr < oc->naddrs) {
        const struct netaddr *a = &oc->addrs[oc->next_addr];
        const char *name = oc->names[oc->next_addr];
        oc->next_addr++;
        memset(&oc->sa, 0, sizeof oc->sa);
        socklen_t sl;
        if (a->family == AF_INET) {
            struct sockaddr_in *sin = (struct sockaddr_in *)&oc->sa;
            sin->sin_family = AF_INET;
            sin->sin_port = htons(oc->port);
            memcpy(&sin->sin_addr, a->bytes, 4);
            sl = sizeof *sin;
        } else {
            struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&oc->sa;
            sin6->sin6_family = AF_INET6;
            sin6->sin6_port = htons(oc->port);
            memcpy(&sin6->sin6_addr, a->bytes, 16);
            sl = sizeof *sin6;
        }
        /* XXX: socket(2) is a direct system call (non-blocking, no I/O);
         * IORING_OP_SOCKET needs liburing 2.4 / kernel 5.19. */
        int fd = socket(a->family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            snprintf(oc->last_error, sizeof oc->last_error, "socket: %s", strerror(errno));
            oc->last_is_session = false;
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, 1 /* TCP_NODELAY */, &one, sizeof one);
        oc->fd = fd;
        char ip[48];
        netaddr_format(a, ip, sizeof ip);
        snprintf(oc->peer, sizeof oc->peer, "%s[%s]:%u", name, ip, oc->port);
        oc->phase = OUT_CONNECTING;
        uint64_t ms = w->d->cfg->smtp_connect_timeout_ms;
        oc->connect_ts.tv_sec = (long long)(ms / 1000);
        oc->connect_ts.tv_nsec = (long long)(ms % 1000) * 1000000;
        struct io_uring_sqe *sqe = worker_sqe(w);
        io_uring_prep_connect(sqe, fd, (struct sockaddr *)&oc->sa, sl);
        sqe->flags |= IOSQE_IO_LINK;
        io_uring_sqe_set_data64(sqe, ud_pack(OP_OUT, &oc->op_connect));
        sqe = worker_sqe(w);
        io_uring_prep_link_timeout(sqe, &oc->connect_ts, 0);
        io_uring_sqe_set_data64(sqe, ud_pack(OP_OUT, &oc->op_timeout));
        oc->inflight += 2;
        return;
    }
    /* No address left: a connection-level failure for the destination. The
     * session failure that sent us here was already fed to AIMD. */
    struct delivery *dl = w->delivery;
    uint64_t now = worker_unix_ms();
    char text[600];
    if (!oc->session_failed)
        scheduler_conn_failed(dl->sched, oc->dest, now);
    /* The reason is the last server's, as Postfix reports it: its reply
     * and enhanced code after a failed session, 4.4.1 after a failed
     * connect (even when an earlier address had answered 421). */
    if (oc->last_is_session)
        snprintf(text, sizeof text, "%s", oc->last_error);
    else
        snprintf(text, sizeof text, "connect to %s: %s", oc->dest->key,
                 oc->last_error[0] ? oc->last_error : "no address");
    out_fail_destination(w, oc, SCHEDULER_DEFERRED,
                         oc->last_is_session && oc->last_enh[0] ? oc->last_enh : "4.4.1", text);
    out_close(w, oc);
}

/* DNS answer for the connection's next hop. */
static void
out_resolved(void *arg, const struct mx_result *res)
{
    struct outconn *oc = arg;
    struct worker *w = oc->w;
    if (oc->phase != OUT_RESOLVING)
        return;
    if (res->status != MX_OK) {
        uint8_t outcome = res->status == MX_PERMANENT ? SCHEDULER_FAILED : SCHEDULER_DEFERRED;
        char text[300];
        snprintf(text, sizeof text, "%s: %s", oc->dest->key, res->text);
        if (outcome == SCHEDULER_DEFERRED)
            scheduler_conn_failed(w->delivery->sched, oc->dest, worker_unix_ms());
        out_fail_destination(w, oc, outcome, res->dsn[0] ? res->dsn : "4.4.3", text);
        out_close(w, oc);
        return;
    }
    oc->naddrs = 0;
    for (size_t h = 0; h < res->nhosts && oc->naddrs < OUT_MAX_ADDRS; h++) {
        for (size_t k = 0; k < res->hosts[h].naddrs && oc->naddrs < OUT_MAX_ADDRS; k++) {
            oc->addrs[oc->naddrs] = res->hosts[h].addrs[k];
            snprintf(oc->names[oc->naddrs], sizeof oc->names[0], "%.63s", res->hosts[h].name);
            oc->naddrs++;
        }
    }
    out_try_connect(w, oc);
}

static void
out_open(struct worker *w, struct scheduler_dest *d)
{
    struct delivery *dl = w->delivery;
    struct outconn *oc = xcalloc(1, sizeof *oc);
    oc->op_connect = (struct out_op){ oc, OUT_CONNECT };
    oc->op_timeout = (struct out_op){ oc, OUT_LINK_TIMEOUT };
    oc->op_recv = (struct out_op){ oc, OUT_RECV };
    oc->op_send = (struct out_op){ oc, OUT_SEND };
    oc->op_close = (struct out_op){ oc, OUT_CLOSE };
    oc->w = w;
    oc->dest = d;
    oc->fd = -1;
    oc->port = d->hop.port ? d->hop.port : (uint16_t)w->d->cfg->smtp_port;
    oc->next = dl->conns;
    dl->conns = oc;
    dl->nconns++;
    oc->phase = OUT_RESOLVING;
    if (d->hop.is_address) {
        if (netaddr_parse(&oc->addrs[0], d->hop.host) == 0) {
            snprintf(oc->names[0], sizeof oc->names[0], "%.63s", d->hop.host);
            oc->naddrs = 1;
        }
        out_try_connect(w, oc);
        return;
    }
    if (d->hop.mx_lookup)
        dns_resolve_mx(dl->dns, d->hop.host, worker_mono_ms(), out_resolved, oc);
    else
        dns_resolve_host(dl->dns, d->hop.host, worker_mono_ms(), out_resolved, oc);
}

/* --- the SMTP session ----------------------------------------------------------- */

/* The stuffing dots of a stored DATA-form body: its length less these is
 * what BDAT carries. */
static uint64_t
out_body_stuffing_dots(const struct queue_msg *m)
{
    struct body_unstuff u;
    uint64_t left = m->body_len, dots = 0;
    body_unstuff_init(&u);
    for (uint32_t i = 0; i < m->nbody && left > 0; i++) {
        const struct spool_extent *x = &m->body[i];
        size_t n = x->len < left ? (size_t)x->len : (size_t)left;
        dots += body_unstuff_count(&u, x->seg->base + x->off, n);
        left -= n;
    }
    return dots;
}

static bool
out_take_job(struct worker *w, struct outconn *oc)
{
    struct delivery *dl = w->delivery;
    const struct route_limits *lim = &oc->dest->limits;
    if (lim->max_messages_per_connection && oc->messages >= lim->max_messages_per_connection)
        return false;
    uint64_t now = worker_unix_ms();
    struct scheduler_job *job = scheduler_next_job(dl->sched, oc->dest, now);
    if (job == NULL)
        return false;
    struct queue_entry *e = job->entry;
    struct queue_msg *m = e->msg;
    oc->job = job;
    oc->job_started_ms = now;
    oc->rcpt_ptrs = xrealloc(oc->rcpt_ptrs, (e->nrcpt ? e->nrcpt : 1) * sizeof *oc->rcpt_ptrs);
    for (uint32_t i = 0; i < e->nrcpt; i++)
        oc->rcpt_ptrs[i] = m->env.rcpts[e->rcpt[i]].addr;
    memset(&oc->msg, 0, sizeof oc->msg);
    oc->msg.sender = m->env.sender;
    oc->msg.rcpts = oc->rcpt_ptrs;
    oc->msg.nrcpt = e->nrcpt;
    oc->msg.body_len = m->body_len;
    oc->msg.size = m->body_len;
    oc->msg.body_form = (m->body_flags & SPOOL_BODY_RAW)            ? SMTPC_STORED_RAW
                        : (m->body_flags & SPOOL_BODY_NO_DOT_LINES) ? SMTPC_STORED_DATA_NO_DOT_LINES
                                                                    : SMTPC_STORED_DATA;
    if (oc->msg.body_form == SMTPC_STORED_DATA && oc->smtp.caps.chunking
        && m->body_len <= OUT_UNSTUFF_MAX) {
        oc->msg.unstuffed_offered = true;
        oc->msg.unstuffed_len = m->body_len - out_body_stuffing_dots(m);
    }
    body_unstuff_init(&oc->unstuff);
    oc->msg.needs_smtputf8 = m->env.smtputf8;
    oc->msg.body_8bit = m->env.body_type == MAIL_BODY_8BITMIME;
    oc->body_ext = 0;
    oc->body_off = 0;
    oc->body_sent_total = 0;
    oc->sending_body = false;
    oc->messages++;
    smtp_client_send(&oc->smtp, &oc->msg, worker_mono_ms());
    return true;
}

/* Copies the client's results into the job and records them. */
static void
out_job_finished(struct worker *w, struct outconn *oc)
{
    struct scheduler_job *job = oc->job;
    if (job == NULL)
        return;
    for (uint32_t i = 0; i < job->entry->nrcpt; i++) {
        const struct smtpc_result *r = smtp_client_result(&oc->smtp, i);
        struct scheduler_result *out = &job->results[i];
        if (r == NULL)
            continue;
        switch (r->cls) {
        case SMTPC_DELIVERED:
            out->outcome = SCHEDULER_DELIVERED;
            break;
        case SMTPC_FAILED:
            out->outcome = SCHEDULER_FAILED;
            break;
        case SMTPC_DEFERRED:
            out->outcome = SCHEDULER_DEFERRED;
            break;
        default:
            out->outcome = SCHEDULER_PENDING;
            break;
        }
        out->code = r->reply.code;
        snprintf(out->status, sizeof out->status, "%s", r->reply.enh);
        snprintf(out->text, sizeof out->text, "%s", r->reply.text);
    }
    oc->job = NULL;
    bool tried = false;
    for (uint32_t i = 0; i < job->entry->nrcpt; i++)
        tried |= job->results[i].outcome != SCHEDULER_PENDING;
    if (!tried) {
        scheduler_job_done(w->delivery->sched, job, worker_unix_ms());
        return;
    }
    delivery_record(w, oc, job);
}

/* Where the body goes on: *p and the octets left in that extent (within
 * the body), 0 when all of it has been handed over. */
static uint64_t
out_body_next(struct outconn *oc, const struct queue_msg *m, const uint8_t **p)
{
    while (oc->body_ext < m->nbody) {
        const struct spool_extent *x = &m->body[oc->body_ext];
        uint64_t left_in_body = m->body_len - oc->body_sent_total;
        uint64_t left = x->len - oc->body_off;
        if (left > left_in_body)
            left = left_in_body;
        if (left > 0) {
            *p = x->seg->base + x->off + oc->body_off;
            return left;
        }
        oc->body_ext++;
        oc->body_off = 0;
    }
    return 0;
}

/* Adds the runs of the body between its stuffing dots, from the mapping,
 * while pieces are left (one stays free for what follows the body) and
 * the send is not too big; the rest goes with the next send. */
static void
out_body_runs(struct outconn *oc, const struct queue_msg *m)
{
    size_t budget = oc->tls_on ? OUT_TLS_PIECE : (1u << 20);
    const uint8_t *p;
    uint64_t left;
    while (oc->tx_niov + 1 < OUT_TX_IOV && budget > 0 && (left = out_body_next(oc, m, &p)) > 0) {
        size_t n = left < budget ? (size_t)left : budget;
        bool drop;
        size_t k = body_unstuff_run(&oc->unstuff, p, n, &drop);
        if (k > 0) {
            oc->tx_body = true;
            out_tx_add(oc, p, k);
            budget -= k;
        }
        oc->body_off += k + drop;
        oc->body_sent_total += k + drop;
    }
}

/* Adds the next piece of the body to the send being gathered: from the
 * mapping as stored (no copy in user space: the kernel copies once into
 * the socket buffer, or not at all with SEND_ZC), unstuffed (the runs
 * between the stuffing dots, from the mapping), or stuffed into
 * oc->stuff. A SEND_ZC piece goes alone (the pages of a commands buffer
 * could not be reused before the kernel's notification): when commands
 * are already gathered it waits for the next send. */
static void
out_body_piece(struct worker *w, struct outconn *oc)
{
    const struct queue_msg *m = oc->job->entry->msg;
    bool stuff = oc->smtp.txn.body_mode == SMTPC_BODY_STUFF;
    (void)w;
    if (oc->smtp.txn.body_mode == SMTPC_BODY_UNSTUFF) {
        out_body_runs(oc, m);
        return;
    }
    const uint8_t *p;
    uint64_t left;
    while ((left = out_body_next(oc, m, &p)) > 0) {
        if (!stuff) {
            size_t piece = oc->tls_on ? OUT_TLS_PIECE : (1u << 20);
            size_t n = left > piece ? piece : (size_t)left;
            bool zc = !oc->tls_on && oc->send_zc && n >= OUT_ZC_MIN;
            if (zc && oc->tx_niov > 0)
                return;
            oc->tx_zc = zc;
            oc->body_off += n;
            oc->body_sent_total += n;
            oc->tx_body = true;
            out_tx_add(oc, p, n);
            return;
        }
        if (oc->stuff == NULL) {
            oc->stuff = xmalloc(OUT_STUFF_BUF);
            body_xform_init(&oc->xf);
        }
        size_t used = 0;
        size_t n = body_xform_stuff(&oc->xf, p, (size_t)left, &used, oc->stuff, OUT_STUFF_BUF);
        oc->body_off += used;
        oc->body_sent_total += used;
        if (oc->body_sent_total >= m->body_len && OUT_STUFF_BUF - n >= BODY_XFORM_FINISH_MAX) {
            /* All of it is in: the final CRLF, if one is missing, too. */
            n += body_xform_finish(&oc->xf, oc->stuff + n, OUT_STUFF_BUF - n);
            oc->stuff_finished = true;
        }
        if (n > 0) {
            oc->tx_body = true;
            out_tx_add(oc, oc->stuff, n);
            return;
        }
    }
    if (stuff && !oc->stuff_finished) {
        oc->stuff_finished = true;
        if (oc->stuff == NULL) {
            oc->stuff = xmalloc(OUT_STUFF_BUF);
            body_xform_init(&oc->xf);
        }
        size_t n = body_xform_finish(&oc->xf, oc->stuff, OUT_STUFF_BUF);
        oc->tx_body = n > 0;
        out_tx_add(oc, oc->stuff, n);
    }
}

/* Every body octet has been handed to a send (in order). */
static bool
out_body_handed_over(const struct outconn *oc)
{
    const struct queue_msg *m = oc->job->entry->msg;
    if (oc->body_sent_total < m->body_len && oc->body_ext < m->nbody)
        return false;
    return oc->smtp.txn.body_mode != SMTPC_BODY_STUFF || oc->stuff_finished;
}

/* Carries out the client's actions: results, output, body, close, reuse. */
static void
out_flush(struct worker *w, struct outconn *oc)
{
    if (oc->phase == OUT_CLOSING) {
        out_close(w, oc);
        return;
    }
    if (oc->phase != OUT_SMTP)
        return;
    struct smtp_client *c = &oc->smtp;
    struct delivery *dl = w->delivery;
    uint64_t now = worker_unix_ms();
    if (c->actions & SMTPC_ACT_RESULTS) {
        c->actions &= ~SMTPC_ACT_RESULTS;
        out_job_finished(w, oc);
    }
    if (!oc->conn_ok_reported && (c->actions & SMTPC_ACT_IDLE)) {
        oc->conn_ok_reported = true;
        scheduler_conn_ok(dl->sched, oc->dest, now);
    }
    if (c->failed && !oc->conn_ok_reported) {
        /* A 421 greeting, no banner, EHLO or TLS trouble: AIMD backs off,
         * and the next address of the hop is tried in this same attempt
         * (Postfix does so for 4xx and, smtp_skip_5xx_greeting, 5xx
         * greetings); when none is left the ready jobs are deferred with
         * this reason (out_try_connect). */
        oc->conn_ok_reported = true;
        scheduler_conn_failed(dl->sched, oc->dest, now);
        oc->session_failed = true;
        oc->last_is_session = true;
        oc->retry_next_addr = !atomic_load(&w->d->stopping);
        if (oc->tls_failed && oc->tls_level == TLS_LEVEL_MAY && !oc->tls_fell_back
            && oc->next_addr > 0) {
            oc->tls_fell_back = true;   /* the same address again, in plaintext */
            oc->next_addr--;
        }
        snprintf(oc->last_enh, sizeof oc->last_enh, "%s", c->failure.enh);
        snprintf(oc->last_error, sizeof oc->last_error, "%s said %s: %s", oc->peer,
                 smtp_client_state_context(c->fail_state), c->failure.text);
        log_info("%s: session failed %s: %s", oc->peer,
                 smtp_client_state_context(c->fail_state), c->failure.text);
    }
    if (c->actions & SMTPC_ACT_START_TLS) {
        c->actions &= ~SMTPC_ACT_START_TLS;
        out_tls_start(w, oc);
    }
    if (oc->send_armed)
        return;
    if (oc->tls_on && tls_stream_output_pending(&oc->tls) > 0 && c->out.len == 0) {
        out_send_tls_records(w, oc, true);   /* handshake messages, alerts */
        return;
    }
    if (c->actions & SMTPC_ACT_SEND_BODY) {
        c->actions &= ~SMTPC_ACT_SEND_BODY;
        oc->sending_body = true;
    }
    if (oc->sending_body && !c->txn.body_streaming)
        oc->sending_body = false;   /* the session failed: no more of it */
    if (c->out.len > 0 || oc->sending_body) {
        out_tx_begin(oc);
        /* Commands go before the body, never into the middle of it (the
         * client queues none while the body is out). */
        if (c->out.len > 0 && (!oc->sending_body || oc->body_sent_total == 0)) {
            oc->sending.len = 0;
            smtp_client_take_output(c, &oc->sending);
            out_tx_add(oc, oc->sending.data, oc->sending.len);
        }
        if (oc->sending_body) {
            out_body_piece(w, oc);
            if (out_body_handed_over(oc)) {
                /* The terminator (DATA's ".") rides with the last piece. */
                oc->sending_body = false;
                oc->stuff_finished = false;
                smtp_client_body_sent(c, worker_mono_ms());
                if (c->out.len > 0 && !oc->tx_zc) {
                    oc->sending_after.len = 0;
                    smtp_client_take_output(c, &oc->sending_after);
                    out_tx_add(oc, oc->sending_after.data, oc->sending_after.len);
                }
            }
        }
        if (oc->tx_niov > 0) {
            out_tx_submit(w, oc);
            return;
        }
        if (c->out.len > 0 || oc->sending_body) {
            out_flush(w, oc);
            return;
        }
    }
    if (c->actions & SMTPC_ACT_CLOSE) {
        out_close(w, oc);
        return;
    }
    if ((c->actions & SMTPC_ACT_IDLE) && oc->job == NULL && smtp_client_idle(c)) {
        if (out_take_job(w, oc)) {
            out_flush(w, oc);
            return;
        }
        if (oc->idle_since_ms == 0)
            oc->idle_since_ms = now;
        const struct route_limits *lim = &oc->dest->limits;
        bool used_up = lim->max_messages_per_connection
                       && oc->messages >= lim->max_messages_per_connection;
        if (used_up || atomic_load(&w->d->stopping)) {
            smtp_client_quit(c, worker_mono_ms());
            out_flush(w, oc);
            return;
        }
    }
    out_arm_recv(w, oc);
}

static void
out_close(struct worker *w, struct outconn *oc)
{
    struct delivery *dl = w->delivery;
    if (oc->phase != OUT_CLOSING) {
        if (oc->job != NULL) {
            if (oc->smtp_inited) {
                smtp_client_peer_closed(&oc->smtp, worker_mono_ms());
                out_job_finished(w, oc);
            } else {
                scheduler_job_done(dl->sched, oc->job, worker_unix_ms());
                oc->job = NULL;
            }
        }
        oc->phase = OUT_CLOSING;
        if (oc->fd >= 0 && (oc->recv_armed || oc->send_armed)) {
            struct io_uring_sqe *sqe = worker_sqe(w);
            io_uring_prep_cancel_fd(sqe, oc->fd, IORING_ASYNC_CANCEL_ALL);
            io_uring_sqe_set_data64(sqe, ud_pack(OP_IGNORE, NULL));
        }
    }
    if (oc->inflight > 0 || oc->close_submitted)
        return;
    oc->close_submitted = true;
    if (oc->fd >= 0) {
        struct io_uring_sqe *sqe = worker_sqe(w);
        io_uring_prep_close(sqe, oc->fd);
        io_uring_sqe_set_data64(sqe, ud_pack(OP_OUT, &oc->op_close));
        oc->inflight++;
        return;
    }
    /* Never connected: nothing to close. Freed at the next pump (it may be
     * inside a DNS callback now). */
}

/* After a failed session, the same connection object goes on with the
 * next address: everything of the closed socket's session is dropped. */
static void
out_reset_for_next_addr(struct worker *w, struct outconn *oc)
{
    out_tls_finish(w, oc);
    if (oc->smtp_inited)
        smtp_client_free(&oc->smtp);
    oc->smtp_inited = false;
    oc->fd = -1;
    oc->phase = OUT_RESOLVING;
    oc->close_submitted = false;
    oc->recv_armed = false;
    oc->send_armed = false;
    oc->conn_ok_reported = false;
    oc->retry_next_addr = false;
    oc->sending_body = false;
    oc->sending.len = 0;
    oc->sending_after.len = 0;
    out_tx_begin(oc);
    oc->idle_since_ms = 0;
    oc->messages = 0;
}

static void
out_free(struct worker *w, struct outconn *oc)
{
    struct delivery *dl = w->delivery;
    for (struct outconn **pp = &dl->conns; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == oc) {
            *pp = oc->next;
            break;
        }
    }
    dl->nconns--;
    scheduler_conn_closed(dl->sched, oc->dest);
    out_tls_finish(w, oc);
    if (oc->smtp_inited)
        smtp_client_free(&oc->smtp);
    outbuf_free(&oc->sending);
    outbuf_free(&oc->sending_after);
    outbuf_free(&oc->tls_ct);
    xfree(oc->rcpt_ptrs);
    xfree(oc->stuff);
    xfree(oc);
}

void
delivery_on_cqe(struct worker *w, void *ptr, struct io_uring_cqe *cqe)
{
    struct out_op *op = ptr;
    struct outconn *oc = op->oc;
    int res = cqe->res;
    oc->inflight--;
    switch (op->kind) {
    case OUT_LINK_TIMEOUT:
        break;
    case OUT_CONNECT:
        if (oc->phase != OUT_CONNECTING)
            break;
        if (res < 0) {
            snprintf(oc->last_error, sizeof oc->last_error, "%s: %s", oc->peer,
                     res == -ECANCELED ? "connection timed out" : strerror(-res));
            oc->last_is_session = false;
            log_info("connect to %s failed: %s", oc->peer,
                     res == -ECANCELED ? "timed out" : strerror(-res));
            close(oc->fd);
            oc->fd = -1;
            if (oc->inflight > 0) {
                /* the link timeout's CQE is still to come; retry after it */
                oc->phase = OUT_RESOLVING;
            }
            out_try_connect(w, oc);
            break;
        }
        oc->phase = OUT_SMTP;
        oc->send_zc = out_zc_wanted(w, &oc->sa);
        smtp_client_init(&oc->smtp, w->d->cfg, w->d->hostname, worker_mono_ms());
        oc->smtp_inited = true;
        out_tls_configure(w, oc);
        break;
    case OUT_RECV:
        oc->recv_armed = false;
        if (oc->phase != OUT_SMTP)
            break;
        if (res <= 0) {
            if (oc->tls_on && !oc->tls.handshake_done)
                out_tls_failed(w, oc, "connection closed during the handshake");
            else
                smtp_client_peer_closed(&oc->smtp, worker_mono_ms());
        } else if (oc->tls_on) {
            oc->idle_since_ms = 0;
            out_tls_input(w, oc, oc->rbuf, (size_t)res);
        } else {
            oc->idle_since_ms = 0;
            smtp_client_input(&oc->smtp, oc->rbuf, (size_t)res, worker_mono_ms());
        }
        break;
    case OUT_SEND:
        if (cqe->flags & IORING_CQE_F_NOTIF)
            break;              /* SEND_ZC: the kernel let go of the pages */
        if (cqe->flags & IORING_CQE_F_MORE)
            oc->inflight++;     /* ...and that notification is still to come */
        oc->send_armed = false;
        if (oc->zc_in_flight) {
            oc->zc_in_flight = false;
            if (res == -EOPNOTSUPP || res == -EINVAL) {
                /* No SEND_ZC here: the piece goes again by plain send. */
                atomic_store(&out_zc_unsupported, true);
                oc->send_zc = false;
                log_info("%s: zero-copy send not supported (%s): plain sends", oc->peer,
                         strerror(-res));
                res = 0;
            }
        }
        if (oc->phase != OUT_SMTP)
            break;
        if (res < 0) {
            smtp_client_peer_closed(&oc->smtp, worker_mono_ms());
            oc->sending_body = false;
            break;
        }
        if (oc->tls_on) {
            /* Ciphertext: all of it, then the plaintext it carries counts. */
            oc->tls_ct_sent += (size_t)res;
            if (oc->tls_ct_sent < oc->tls_ct.len) {
                out_send_raw(w, oc, oc->tls_ct.data + oc->tls_ct_sent,
                             oc->tls_ct.len - oc->tls_ct_sent);
                return;
            }
            if (oc->tls_ctl) {
                oc->tls_ctl = false;
                break;
            }
            oc->tx_first = oc->tx_niov;
            oc->tx_left = 0;
        } else if (!out_tx_sent(oc, (size_t)res)) {
            out_tx_send_plain(w, oc);   /* a short send: the rest goes next */
            return;
        }
        if (oc->tx_body)
            smtp_client_body_progress(&oc->smtp, worker_mono_ms());
        oc->sending.len = 0;
        oc->sending_after.len = 0;
        out_tx_begin(oc);
        break;
    case OUT_CLOSE:
        if (oc->retry_next_addr) {
            out_reset_for_next_addr(w, oc);
            out_try_connect(w, oc);
            return;
        }
        out_free(w, oc);
        return;
    }
    out_flush(w, oc);
}

void
delivery_on_dns_cqe(struct worker *w, void *ptr, struct io_uring_cqe *cqe)
{
    dns_on_cqe(w->delivery->dns, ptr, cqe);
}

void
delivery_pump(struct worker *w)
{
    struct delivery *dl = w->delivery;
    if (dl == NULL)
        return;
    uint64_t now = worker_unix_ms();
    delivery_settle(w);
    scheduler_run_timers(dl->sched, now);
    /* Free connections that never got an fd (DNS or connect failures). */
    for (struct outconn *oc = dl->conns, *next; oc != NULL; oc = next) {
        next = oc->next;
        if (oc->phase == OUT_CLOSING && oc->fd < 0 && oc->inflight == 0)
            out_free(w, oc);
    }
    if (!atomic_load(&w->d->stopping)) {
        struct scheduler_dest *d;
        while ((d = scheduler_want_connection(dl->sched, now)) != NULL) {
            /* An idle connection to the same destination takes the work
             * first; scheduler_want_connection already counted a new one, so
             * give that back when an idle one exists. */
            struct outconn *idle = NULL;
            for (struct outconn *oc = dl->conns; oc != NULL; oc = oc->next)
                if (oc->dest == d && oc->phase == OUT_SMTP && oc->job == NULL
                    && smtp_client_idle(&oc->smtp)) {
                    idle = oc;
                    break;
                }
            if (idle != NULL) {
                scheduler_conn_closed(dl->sched, d);
                out_flush(w, idle);
                if (idle->job == NULL)
                    break;   /* the rate says wait */
                continue;
            }
            out_open(w, d);
        }
    }
    for (struct outconn *oc = dl->conns; oc != NULL; oc = oc->next)
        if (oc->phase == OUT_SMTP && oc->job == NULL && !oc->send_armed)
            out_flush(w, oc);
}

void
delivery_tick(struct worker *w)
{
    struct delivery *dl = w->delivery;
    if (dl == NULL)
        return;
    uint64_t mono = worker_mono_ms();
    uint64_t now = worker_unix_ms();
    for (struct outconn *oc = dl->conns, *next; oc != NULL; oc = next) {
        next = oc->next;
        if (oc->phase != OUT_SMTP)
            continue;
        if (mono >= smtp_client_deadline(&oc->smtp)) {
            smtp_client_tick(&oc->smtp, mono);
            out_flush(w, oc);
            continue;
        }
        if (oc->job == NULL && oc->idle_since_ms != 0 && smtp_client_idle(&oc->smtp)
            && now - oc->idle_since_ms >= w->d->cfg->smtp_connection_reuse_time_ms) {
            smtp_client_quit(&oc->smtp, mono);
            out_flush(w, oc);
        }
    }
    delivery_pump(w);
}

void
delivery_shutdown(struct worker *w)
{
    struct delivery *dl = w->delivery;
    if (dl == NULL)
        return;
    for (struct outconn *oc = dl->conns; oc != NULL; oc = oc->next)
        if (oc->phase == OUT_SMTP && oc->job == NULL && smtp_client_idle(&oc->smtp)) {
            smtp_client_quit(&oc->smtp, worker_mono_ms());
            out_flush(w, oc);
        }
}

int
delivery_drained(struct worker *w)
{
    struct delivery *dl = w->delivery;
    return dl == NULL || (dl->conns == NULL && dl->waiting == NULL);
}
