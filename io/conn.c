/*
 * conn - one inbound SMTP connection on a worker's ring.
 *
 * Per-worker: a conn is touched only by its worker's thread. It runs the
 * sans-I/O session (core/smtp_server) and carries out its actions:
 *   - command phase: one receive in flight at a time, into a provided buffer
 *     picked by the kernel when data arrives (idle sessions hold no buffer);
 *     the octets are handed to the session and the buffer recycled at once;
 *   - body phase: the receive targets the message's place in the spool
 *     mapping directly (no intermediate copy); the session scans the octets
 *     where they landed;
 *   - one send in flight at a time, from a buffer the session no longer
 *     touches (smtp_server_take_output swaps buffers).
 *
 * TLS (STARTTLS, or implicit on a submissions listener): ciphertext still
 * arrives in provided buffers and is fed to the connection's tls_stream;
 * plaintext is decrypted into the worker's scratch buffer in command phase
 * and straight into the message's spool chunk in body phase, so the body
 * is still written once. Plaintext is read out of the stream only while the
 * session can take it (not while it waits for a commit or sits in a
 * tarpit), exactly like receives are armed only then without TLS; what is
 * left in the stream is read before the next receive is armed.
 *
 * Lifetime: a conn is freed only when no SQE for it is in flight (inflight
 * == 0) and it no longer waits for a commit. Closing marks it; the last
 * completion frees it. A final reply is followed by shutdown(SHUT_WR) and a
 * short linger that drains input, so the reply is not destroyed by a RST
 * caused by unread data.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "alloc.h"
#include "clientlimit.h"
#include "smtp_reply.h"
#include "log.h"
#include "segfile.h"
#include "worker.h"

#define CONN_LINGER_MS 2000
#define CONN_RECEIVED_MAX 2048

static void conn_handle_actions(struct worker *w, struct conn *c);
static void conn_drop_pending_env(struct conn *c);
static void conn_close(struct worker *w, struct conn *c);
static void conn_tls_begin(struct worker *w, struct conn *c);
static void conn_tls_input(struct worker *w, struct conn *c);
static void conn_auth_submit(struct worker *w, struct conn *c);

void
conn_mark_dirty(struct worker *w, struct conn *c)
{
    if (c->in_dirty)
        return;
    c->in_dirty = true;
    c->next_dirty = w->dirty;
    w->dirty = c;
}

/*
 * True while a receive into the message's spool chunk is in flight: the
 * kernel may still store into that chunk, so the message must not be aborted
 * yet (an abort at the segment's tail gives the space back, and the next
 * records, maybe an already acknowledged message, would be placed where the
 * late octets land). Such an abort waits for the receive's completion
 * (conn_on_body_recv). body_ptr is set only while that receive is armed.
 */
static bool
conn_body_recv_in_flight(const struct conn *c)
{
    return c->recv_armed && c->body_ptr != NULL;
}

void
conn_accepted(struct worker *w, struct listener *l, int fd)
{
    struct daemon *d = w->d;
    struct conn *c = xcalloc(1, sizeof *c);
    c->w = w;
    c->fd = fd;
    c->next_all = w->all;
    if (w->all != NULL)
        w->all->prev_all = c;
    w->all = c;
    w->nconns++;

    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    struct netaddr client;
    memset(&client, 0, sizeof client);
    client.family = AF_INET;
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0)
        netaddr_from_sockaddr(&client, (struct sockaddr *)&ss);
    smtp_server_init(&c->smtp, d->cfg, &d->relay, d->hostname, &client, w->now_ms);
    c->listener = l;
    smtp_server_set_listener(&c->smtp, l->kind, l->tls != NULL, l->tls_required);
    smtp_server_set_auth(&c->smtp, d->auth != NULL);

    c->limit_exempt = cidr_list_match(&d->limit_exceptions, &client);
    enum clientlimit_verdict v =
        clientlimit_acquire(d->limits, &client, worker_unix_ms(), c->limit_exempt);
    char line[512];
    switch (v) {
    case CLIENTLIMIT_OK:
        c->limit_held = true;
        break;
    case CLIENTLIMIT_TOO_MANY_FROM_CLIENT:
        snprintf(line, sizeof line, "421 4.7.0 %s Error: too many connections from %s",
                 d->hostname, c->smtp.client_text);
        break;
    case CLIENTLIMIT_TOO_FAST:
        snprintf(line, sizeof line, "421 4.7.0 %s Error: too many connections from %s per minute",
                 d->hostname, c->smtp.client_text);
        break;
    case CLIENTLIMIT_TOO_MANY_TOTAL:
        snprintf(line, sizeof line, "421 4.3.2 %s Error: too many connections; try again later",
                 d->hostname);
        break;
    }
    if (v != CLIENTLIMIT_OK) {
        log_info("refused connection from %s: %s", c->smtp.client_text, line + 10);
        smtp_server_refuse(&c->smtp, line);
        if (l->kind == LISTENER_SUBMISSIONS) {
            /* A TLS port: a plaintext 421 would be garbage to the client,
             * and a handshake is what an overloaded server cannot afford. */
            conn_close(w, c);
            return;
        }
    } else if (l->kind == LISTENER_SUBMISSIONS) {
        conn_tls_begin(w, c);   /* RFC 8314: TLS first, the greeting inside it */
    } else if (d->cfg->smtpd_greet_pause_ms > 0) {
        c->greet_at_ms = w->now_ms + d->cfg->smtpd_greet_pause_ms;
    } else {
        smtp_server_greet(&c->smtp, w->now_ms);
    }
    log_debug("connect from %s", c->smtp.client_text);
    conn_mark_dirty(w, c);
}

/* --- submissions --------------------------------------------------------- */

static void
conn_arm_command_recv(struct worker *w, struct conn *c)
{
    struct io_uring_sqe *sqe = worker_sqe(w);
    io_uring_prep_recv(sqe, c->fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = (uint16_t)w->cmd_bufs.group;
    io_uring_sqe_set_data64(sqe, ud_pack(OP_RECV, c));
    c->recv_armed = true;
    c->inflight++;
}

/* spool_receive=buffered: bodies are received into the worker's body
 * buffers and written into the spool chunk with pwrite, not stored through
 * the mapping (ARCHITECTURE.md, "The spool"). */
static bool
conn_body_buffered(const struct worker *w)
{
    return w->body_bufs.br != NULL;
}

/* The spool could not give room for more body: read the rest and drop it,
 * then answer 452/451 (the session decides the words). */
static void
conn_body_storage_failed(struct worker *w, struct conn *c, int err)
{
    if (c->msg != NULL) {
        spool_msg_abort(c->msg);
        c->msg = NULL;
    }
    smtp_server_body_storage_failed(&c->smtp, err);
    conn_drop_pending_env(c);
    (void)w;
}

/*
 * n octets arrived for the body at src, whose place in the chunk is dst:
 * stores them and feeds them to the session. Buffered, the session reads
 * them first, so what follows the end of the body (the terminator ".\r\n",
 * pipelined commands) is never stored and the seal has nothing to zero. At
 * the end of the body its last octets are left to the commit, which stores
 * them with the sealed chunk (and the COMMIT, when it follows): for a small
 * body, one pwrite where there were three. In place (mapped), they are
 * stored already.
 */
static enum smtp_body_result
conn_body_take(struct worker *w, struct conn *c, uint8_t *dst, const uint8_t *src, size_t n,
               size_t *consumed)
{
    if (src == dst) {
        spool_msg_wrote(c->msg, n);
        return smtp_server_body(&c->smtp, src, n, consumed, w->now_ms);
    }
    const struct smtp_txn *t = &c->smtp.txn;
    if (t->bdat && !(t->bdat_last && n >= t->chunk_left)) {
        /* A BDAT chunk's octets are all body (the receive stops at its
         * end), and its reply says whether they were stored: store first. */
        int e = spool_msg_put(c->msg, src, n);
        if (e < 0)
            conn_body_storage_failed(w, c, e);
        return smtp_server_body(&c->smtp, src, n, consumed, w->now_ms);
    }
    enum smtp_body_result r = smtp_server_body(&c->smtp, src, n, consumed, w->now_ms);
    if (r == SMTP_BODY_COMMIT) {
        /* Only the body's octets, left to conn_commit, which runs before the
         * buffer goes back. */
        uint64_t body = c->received_len + smtp_server_body_length(&c->smtp);
        uint64_t stored = spool_msg_length(c->msg);
        c->last_body = src;
        c->nlast_body = body <= stored ? 0 : body - stored < n ? (size_t)(body - stored) : n;
    } else if (r != SMTP_BODY_DISCARD && r != SMTP_BODY_REJECTED) {
        int e = spool_msg_put(c->msg, src, n);   /* not when the message is given up */
        if (e < 0)
            conn_body_storage_failed(w, c, e);   /* the session discards the rest */
    }
    return r;
}

static void
conn_arm_body_recv(struct worker *w, struct conn *c)
{
    uint8_t *p;
    size_t avail;
    int r = spool_msg_space(c->msg, &p, &avail);
    if (r < 0) {
        conn_body_storage_failed(w, c, r);
        conn_arm_command_recv(w, c);
        return;
    }
    if (c->smtp.txn.bdat && avail > c->smtp.txn.chunk_left)
        avail = (size_t)c->smtp.txn.chunk_left;
    struct io_uring_sqe *sqe = worker_sqe(w);
    if (conn_body_buffered(w)) {
        if (avail > w->body_bufs.size)
            avail = w->body_bufs.size;
        io_uring_prep_recv(sqe, c->fd, NULL, avail, 0);
        sqe->flags |= IOSQE_BUFFER_SELECT;
        sqe->buf_group = (uint16_t)w->body_bufs.group;
    } else {
        io_uring_prep_recv(sqe, c->fd, p, avail, 0);
    }
    io_uring_sqe_set_data64(sqe, ud_pack(OP_BODY_RECV, c));
    c->body_ptr = p;
    c->recv_armed = true;
    c->inflight++;
}

static void
conn_arm_send(struct worker *w, struct conn *c)
{
    struct io_uring_sqe *sqe = worker_sqe(w);
    io_uring_prep_send(sqe, c->fd, c->sending.data + c->sent, c->sending.len - c->sent,
                       MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, ud_pack(OP_SEND, c));
    c->send_armed = true;
    c->inflight++;
}

/* True while the session can take more input now: not waiting for a
 * commit, not closing, not in a tarpit pause, not between STARTTLS and the
 * start of the handshake. */
static bool
conn_takes_input(const struct conn *c)
{
    const struct smtp_server *s = &c->smtp;
    if (c->phase != CONN_OPEN || c->tls_start_pending)
        return false;
    if (s->actions & SMTP_ACT_HOLD)
        return false;   /* tarpit: let the client wait, read nothing */
    return s->state != SMTP_ST_COMMIT && s->state != SMTP_ST_CLOSING;
}

/* Which receive the connection needs now, if any. */
static void
conn_arm_recv(struct worker *w, struct conn *c)
{
    if (c->recv_armed || c->phase == CONN_CLOSING)
        return;
    if (c->phase == CONN_LINGER) {
        conn_arm_command_recv(w, c);
        return;
    }
    if (!conn_takes_input(c))
        return;
    const struct smtp_server *s = &c->smtp;
    if (c->tls_on) {
        /* Plaintext already in the stream first (it stayed there while the
         * session could not take it); then ciphertext into a buffer. */
        if (c->tls.handshake_done && tls_stream_has_input(&c->tls)) {
            conn_tls_input(w, c);
            if (c->recv_armed || !conn_takes_input(c))
                return;
        }
        conn_arm_command_recv(w, c);
        return;
    }
    switch (s->state) {
    case SMTP_ST_BODY:
        if (c->msg != NULL && !s->txn.discarding)
            conn_arm_body_recv(w, c);
        else
            conn_arm_command_recv(w, c);
        return;
    default:
        conn_arm_command_recv(w, c);
        return;
    }
}

/* TLS output: session replies go through SSL_write once the handshake is
 * done (held back in a tarpit like plaintext ones), then every record the
 * stream produced goes out in one send. */
static void
conn_tls_flush(struct worker *w, struct conn *c, unsigned a)
{
    if (c->tls.handshake_done && !(a & SMTP_ACT_HOLD) && c->smtp.out.len > 0) {
        w->tls_plain.len = 0;
        smtp_server_take_output(&c->smtp, &w->tls_plain);
        if (tls_stream_write(&c->tls, w->tls_plain.data, w->tls_plain.len) < 0) {
            log_info("TLS write to %s failed: %s", c->smtp.client_text, c->tls.error);
            conn_close(w, c);
            return;
        }
        w->tls_plain.len = 0;
    }
    if ((a & SMTP_ACT_CLOSE) && c->phase == CONN_OPEN && c->smtp.out.len == 0)
        tls_stream_shutdown(&c->tls);   /* close_notify after the final reply */
    if (tls_stream_output_pending(&c->tls) > 0) {
        c->sending.len = 0;
        tls_stream_take_output(&c->tls, &c->sending);
        c->sent = 0;
        conn_arm_send(w, c);
    }
}

void
conn_flush(struct worker *w, struct conn *c)
{
    if (c->phase == CONN_CLOSING) {
        conn_close(w, c);
        return;
    }
    unsigned a = c->smtp.actions;
    if (c->tls_on && !c->tls.handshake_done && (a & SMTP_ACT_CLOSE)) {
        conn_close(w, c);   /* a final reply cannot go out before the handshake */
        return;
    }
    if (!c->send_armed && c->tls_on) {
        conn_tls_flush(w, c, a);
        if (c->phase == CONN_CLOSING)
            return;
    } else if (!c->send_armed && !(a & SMTP_ACT_HOLD) && c->smtp.out.len > 0) {
        c->sending.len = 0;
        smtp_server_take_output(&c->smtp, &c->sending);
        c->sent = 0;
        conn_arm_send(w, c);
    }
    if (c->tls_start_pending && c->smtp.out.len == 0) {
        /* The 220 is handed to the kernel in plaintext: from here on every
         * octet is TLS, and nothing received before was kept (row 7). */
        c->tls_start_pending = false;
        conn_tls_begin(w, c);
        if (c->phase == CONN_CLOSING)
            return;
    }
    if (c->phase == CONN_OPEN && (a & SMTP_ACT_CLOSE) && !c->send_armed
        && c->smtp.out.len == 0 && (!c->tls_on || tls_stream_output_pending(&c->tls) == 0)) {
        /* Final reply is out: half-close, then drain until EOF or timeout.
         * shutdown(2) of a TCP socket only queues the FIN and never blocks;
         * as an SQE the kernel would always hand it to an io-wq thread, a
         * thread hop per connection. */
        (void)shutdown(c->fd, SHUT_WR);
        c->phase = CONN_LINGER;
        c->linger_until_ms = w->now_ms + CONN_LINGER_MS;
    }
    conn_arm_recv(w, c);
}

/* --- the message --------------------------------------------------------- */

/* The envelope the spool stores, from the session's transaction. */
static struct envelope *
conn_build_envelope(struct conn *c, uint64_t unix_ms)
{
    const struct smtp_txn *t = &c->smtp.txn;
    struct envelope *env = xcalloc(1, sizeof *env);
    env->sender = xstrdup(t->sender.addr);
    env->nrcpt = t->nrcpt;
    env->rcpts = xcalloc(t->nrcpt ? t->nrcpt : 1, sizeof *env->rcpts);
    for (uint32_t i = 0; i < t->nrcpt; i++) {
        env->rcpts[i].addr = xstrdup(t->rcpts[i].box.addr);
        env->rcpts[i].notify = t->rcpts[i].params.notify;
        if (t->rcpts[i].params.has_orcpt)
            env->rcpts[i].orcpt = xstrdup(t->rcpts[i].params.orcpt);
    }
    env->client_addr = xstrdup(c->smtp.client_text);
    env->client_helo = xstrdup(c->smtp.helo);
    if (t->params.has_envid)
        env->envid = xstrdup(t->params.envid);
    env->arrival_ms = unix_ms;
    env->size_hint = t->params.has_size ? t->params.size : 0;
    env->body_type = (uint8_t)t->params.body;
    env->ret = (uint8_t)t->params.ret;
    env->smtputf8 = t->params.smtputf8;
    return env;
}

static void
conn_drop_pending_env(struct conn *c)
{
    if (c->pending_env != NULL) {
        envelope_free(c->pending_env);
        c->pending_env = xfree(c->pending_env);
    }
    if (c->pending_body != NULL) {
        spool_extents_release(c->pending_body, c->pending_nbody);
        c->pending_body = NULL;
        c->pending_nbody = 0;
    }
    spool_holdset_release(&c->pending_holds);
}

/* Starts the spool message: ENVELOPE record, then our Received: header as
 * the first body octets, then 354. */
static void
conn_begin_message(struct worker *w, struct conn *c)
{
    uint64_t unix_ms = worker_unix_ms();
    uint64_t qid = worker_next_qid(w, unix_ms);
    struct envelope *env = conn_build_envelope(c, unix_ms);
    struct smtp_txn *t = &c->smtp.txn;
    char received[CONN_RECEIVED_MAX];
    size_t rlen = smtp_server_format_received(&c->smtp, qid, received, sizeof received,
                                              unix_ms);
    /* The first chunk is sized for SIZE= plus our header; without SIZE= it
     * is the spool's default. */
    uint64_t hint = t->params.has_size ? t->params.size + rlen : 0;
    int r = rlen == 0 ? -ENOSPC
                      : spool_msg_begin_with(w->spool, qid, env, hint, t->bdat, received, rlen,
                                             &c->msg);
    if (r == 0)
        c->received_len = rlen;
    if (r != 0) {
        envelope_free(env);
        xfree(env);
        log_warn("spool refused a message from %s: %s", c->smtp.client_text, strerror(-r));
        smtp_server_body_refused(&c->smtp, r);
        return;
    }
    conn_drop_pending_env(c);
    c->pending_env = env;
    c->pending_qid = qid;
    c->pending_flags = t->bdat ? SPOOL_BODY_RAW : 0;
    smtp_server_body_started(&c->smtp);
}

/* End of a message the session accepts: seal, commit, wait for the fsync. */
static void
conn_commit(struct worker *w, struct conn *c, size_t trailing)
{
    /* Octets after the end of the body (the DATA terminator ".\r\n" and any
     * pipelined command) are not part of the message. */
    uint64_t body = c->received_len + smtp_server_body_length(&c->smtp);
    uint64_t stored = spool_msg_length(c->msg) + c->nlast_body;
    (void)trailing;
    if (stored > body)
        spool_msg_unwrite(c->msg, (size_t)(stored - body));
    if (smtp_server_body_has_no_dot_lines(&c->smtp)) {
        spool_msg_add_flags(c->msg, SPOOL_BODY_NO_DOT_LINES);
        c->pending_flags |= SPOOL_BODY_NO_DOT_LINES;
    }
    int r = spool_msg_commit_last(c->msg, c->last_body, c->nlast_body, &c->ticket,
                                  &c->pending_body, &c->pending_nbody, &c->pending_holds);
    c->last_body = NULL;
    c->nlast_body = 0;
    c->msg = NULL;
    c->pending_body_len = body;
    if (r < 0) {
        conn_committed(w, c, r);
        return;
    }
    /* Before the group commit's fdatasync writes these pages back. With
     * durability=none nothing writes them back soon (the segment is often
     * gone first), and delivery's read faults would be pure cost: 100 KiB
     * bodies went from 2187 to 1326 msg/s. */
    if (w->d->cfg->durability == DURABILITY_FSYNC && !conn_body_buffered(w))
        for (size_t i = 0; i < c->pending_nbody; i++)
            segfile_release_pages(c->pending_body[i].seg->base + c->pending_body[i].off,
                                  c->pending_body[i].len);
    c->in_commit_wait = true;
    c->next_commit = w->commit_wait;
    w->commit_wait = c;
}

void
conn_committed(struct worker *w, struct conn *c, int res)
{
    char id[17];
    smtp_qid_format(c->pending_qid, id);
    if (res == 0 && c->pending_env != NULL) {
        if (log_get_level() >= LOG_INFO) {   /* else skip the escaping too */
            char from[300];
            log_escape(from, sizeof from, c->pending_env->sender, strlen(c->pending_env->sender));
            log_info("%s: from=<%s>, size=%llu, nrcpt=%u, client=[%s], helo=%s", id, from,
                     (unsigned long long)c->pending_body_len, c->pending_env->nrcpt,
                     c->smtp.client_text, c->smtp.helo);
        }
        struct queue_msg *m =
            queue_msg_new(c->pending_qid, c->pending_env, c->pending_body_len, c->pending_flags,
                          c->pending_body, c->pending_nbody, &c->pending_holds);
        c->pending_env = xfree(c->pending_env);
        c->pending_body = NULL;
        c->pending_nbody = 0;
        worker_message_accepted(w, m);
    } else {
        if (res != 0)
            log_warn("%s: not acknowledged: %s", id, strerror(-res));
        conn_drop_pending_env(c);
    }
    if (c->phase == CONN_OPEN) {
        smtp_server_committed(&c->smtp, res, w->now_ms);
        conn_handle_actions(w, c);
    }
    conn_mark_dirty(w, c);
}

/* What the session said about the body octets just fed to it. Does not run
 * the session's follow-up actions (the caller does), so a client sending
 * thousands of tiny pipelined BDAT chunks never deepens the stack. */
static void
conn_body_outcome(struct worker *w, struct conn *c, enum smtp_body_result r,
                  const uint8_t *rest, size_t nrest)
{
    switch (r) {
    case SMTP_BODY_MORE:
        break;
    case SMTP_BODY_DISCARD:
    case SMTP_BODY_REJECTED:
        if (c->msg != NULL) {
            spool_msg_abort(c->msg);
            c->msg = NULL;
        }
        c->smtp.actions &= ~SMTP_ACT_ABORT_BODY;
        if (r == SMTP_BODY_REJECTED)
            conn_drop_pending_env(c);
        break;
    case SMTP_BODY_CHUNK_DONE:
        if (c->smtp.txn.discarding && c->msg != NULL) {
            spool_msg_abort(c->msg);
            c->msg = NULL;
        }
        break;
    case SMTP_BODY_COMMIT:
        /* Pipelined commands after the end go to the session first (they
         * wait there, in order, until the 250 is out). */
        smtp_server_input(&c->smtp, rest, nrest, w->now_ms);
        conn_commit(w, c, nrest);
        return;
    }
    if (nrest > 0 || r == SMTP_BODY_CHUNK_DONE)
        smtp_server_input(&c->smtp, rest, nrest, w->now_ms);
}

static void
conn_body_result(struct worker *w, struct conn *c, enum smtp_body_result r,
                 const uint8_t *rest, size_t nrest)
{
    conn_body_outcome(w, c, r, rest, nrest);
    conn_handle_actions(w, c);
}

/* BDAT octets that arrived with the command line: copy them to the spool
 * (a small copy: the rest of the chunk is received in place). */
static void
conn_feed_body_prefix(struct worker *w, struct conn *c)
{
    struct smtp_server *s = &c->smtp;
    while (s->state == SMTP_ST_BODY) {
        const uint8_t *p;
        size_t n = smtp_server_take_body_prefix(s, &p);
        size_t want = s->txn.chunk_left < n ? (size_t)s->txn.chunk_left : n;
        if (want == 0 && s->txn.chunk_left > 0)
            return;   /* the rest comes from the socket */
        size_t consumed = 0;
        enum smtp_body_result r;
        if (c->msg != NULL && !s->txn.discarding && want > 0) {
            uint8_t *dst;
            size_t avail;
            int e = spool_msg_space(c->msg, &dst, &avail);
            if (e < 0) {
                conn_body_storage_failed(w, c, e);
                continue;
            }
            if (want > avail)
                want = avail;
            e = spool_msg_put(c->msg, p, want);   /* a copy into the chunk at dst */
            if (e < 0) {
                conn_body_storage_failed(w, c, e);
                continue;
            }
            smtp_server_drop_body_prefix(s, want);   /* p may move: scan the stored copy */
            r = smtp_server_body(s, dst, want, &consumed, w->now_ms);
        } else {
            uint8_t tmp[4096];
            if (want > sizeof tmp)
                want = sizeof tmp;
            if (want > 0)
                memcpy(tmp, p, want);
            smtp_server_drop_body_prefix(s, want);
            r = smtp_server_body(s, tmp, want, &consumed, w->now_ms);
        }
        if (r != SMTP_BODY_MORE) {
            conn_body_outcome(w, c, r, NULL, 0);
            return;
        }
    }
}

static void
conn_handle_actions(struct worker *w, struct conn *c)
{
    struct smtp_server *s = &c->smtp;
    /* Each round consumes a BEGIN_BODY and input behind it, so this ends. */
    for (;;) {
        if (s->actions & SMTP_ACT_ABORT_BODY) {
            s->actions &= ~SMTP_ACT_ABORT_BODY;
            if (c->msg != NULL && !conn_body_recv_in_flight(c)) {
                spool_msg_abort(c->msg);
                c->msg = NULL;
            }
            /* A message waiting for its fsync is on its way to the disk:
             * it is queued when the fsync completes, 250 or not. */
            if (!c->in_commit_wait)
                conn_drop_pending_env(c);
        }
        if (s->actions & SMTP_ACT_STARTTLS) {
            s->actions &= ~SMTP_ACT_STARTTLS;
            c->tls_start_pending = true;
        }
        if (s->actions & SMTP_ACT_AUTH_CHECK) {
            s->actions &= ~SMTP_ACT_AUTH_CHECK;
            conn_auth_submit(w, c);
        }
        if (!(s->actions & SMTP_ACT_BEGIN_BODY))
            break;
        s->actions &= ~SMTP_ACT_BEGIN_BODY;
        if (!s->txn.discarding && c->msg == NULL)
            conn_begin_message(w, c);
        else
            smtp_server_body_started(s);
        if (s->state == SMTP_ST_BODY && (s->txn.bdat || s->txn.discarding))
            conn_feed_body_prefix(w, c);
    }
    conn_mark_dirty(w, c);
}

/* --- TLS ------------------------------------------------------------------ */

static void
conn_tls_begin(struct worker *w, struct conn *c)
{
    if (tls_stream_server(&c->tls, c->listener->tls) < 0) {
        log_warn("TLS for %s: %s", c->smtp.client_text, c->tls.error);
        conn_close(w, c);
        return;
    }
    c->tls_on = true;
    c->tls_deadline_ms = w->now_ms + w->d->cfg->smtpd_starttls_timeout_ms;
    conn_mark_dirty(w, c);   /* arm the receive for the client's hello */
}

/* Drives the handshake with what was fed. True once it is done. */
static bool
conn_tls_handshake(struct worker *w, struct conn *c)
{
    if (c->tls.handshake_done)
        return true;
    enum tls_result r = tls_stream_handshake(&c->tls);
    if (r == TLS_AGAIN)
        return false;
    if (r != TLS_DONE) {
        log_info("TLS handshake with %s failed: %s", c->smtp.client_text,
                 r == TLS_CLOSED ? "closed by the client" : c->tls.error);
        conn_close(w, c);
        return false;
    }
    const char *version = tls_stream_version(&c->tls);
    const char *cipher = tls_stream_cipher(&c->tls);
    int bits = tls_stream_cipher_bits(&c->tls);
    log_info("TLS from %s: %s with cipher %s (%d bits)%s", c->smtp.client_text, version,
             cipher, bits, tls_stream_resumed(&c->tls) ? ", resumed" : "");
    bool implicit = c->smtp.state == SMTP_ST_GREETING;
    smtp_server_tls_started(&c->smtp, version, cipher, bits, w->now_ms);
    if (implicit) {
        if (w->d->cfg->smtpd_greet_pause_ms > 0)
            c->greet_at_ms = w->now_ms + w->d->cfg->smtpd_greet_pause_ms;
        else
            smtp_server_greet(&c->smtp, w->now_ms);
    }
    conn_mark_dirty(w, c);
    return true;
}

static void
conn_tls_failed(struct worker *w, struct conn *c, long r)
{
    if (r == TLS_CLOSED)
        log_debug("TLS close_notify from %s", c->smtp.client_text);
    else
        log_info("TLS error from %s: %s", c->smtp.client_text, c->tls.error);
    if (c->smtp.state == SMTP_ST_BODY && c->msg != NULL)
        log_info("lost connection from %s in the middle of a message", c->smtp.client_text);
    conn_close(w, c);
}

/*
 * Reads plaintext out of the stream while the session takes it: into the
 * spool chunk when a body is being stored, else into the worker's scratch
 * buffer for the session. Stops when the stream needs more ciphertext.
 */
static void
conn_tls_input(struct worker *w, struct conn *c)
{
    struct smtp_server *s = &c->smtp;
    while (conn_takes_input(c)) {
        size_t consumed = 0;
        if (s->state == SMTP_ST_BODY && c->msg != NULL && !s->txn.discarding) {
            uint8_t *p;
            size_t avail;
            int e = spool_msg_space(c->msg, &p, &avail);
            if (e < 0) {
                conn_body_storage_failed(w, c, e);
                continue;
            }
            if (s->txn.bdat && avail > s->txn.chunk_left)
                avail = (size_t)s->txn.chunk_left;
            if (avail == 0)
                return;
            /* Buffered: the plaintext goes through the scratch buffer. */
            uint8_t *into = p;
            if (conn_body_buffered(w)) {
                into = w->tls_scratch;
                if (avail > WORKER_TLS_SCRATCH)
                    avail = WORKER_TLS_SCRATCH;
            }
            long n = tls_stream_read(&c->tls, into, avail);
            if (n <= 0) {
                if (n < 0)
                    conn_tls_failed(w, c, n);
                return;
            }
            enum smtp_body_result r = conn_body_take(w, c, p, into, (size_t)n, &consumed);
            conn_body_result(w, c, r, into + consumed, (size_t)n - consumed);
            continue;
        }
        long n = tls_stream_read(&c->tls, w->tls_scratch, WORKER_TLS_SCRATCH);
        if (n <= 0) {
            if (n < 0)
                conn_tls_failed(w, c, n);
            return;
        }
        const uint8_t *data = w->tls_scratch;
        if (s->state == SMTP_ST_BODY) {
            /* A body being read without storing it (rejected midway). */
            enum smtp_body_result r = smtp_server_body(s, data, (size_t)n, &consumed,
                                                       w->now_ms);
            conn_body_result(w, c, r, data + consumed, (size_t)n - consumed);
        } else {
            smtp_server_input(s, data, (size_t)n, w->now_ms);
            conn_handle_actions(w, c);
        }
    }
}

/* --- AUTH ----------------------------------------------------------------- */

/* Pool thread: the verification is done; hand it to the worker. */
static void
conn_auth_finished(struct auth_request *req)
{
    struct conn *c = req->arg;
    struct worker *w = c->w;
    if (auth_inbox_push(&w->auth_inbox, req))
        worker_wake(w);
}

/* RELIABILITY row 25: a client over smtpd_client_auth_failure_limit. */
static void
conn_refuse_auth(struct worker *w, struct conn *c)
{
    char line[400];
    snprintf(line, sizeof line, "421 4.7.0 %s Error: too many failed authentications",
             w->d->hostname);
    smtp_server_refuse(&c->smtp, line);
}

/* The session has credentials: to the pool, unless this client already
 * failed too often (RELIABILITY row 25: 421 and close, nothing checked). */
static void
conn_auth_submit(struct worker *w, struct conn *c)
{
    struct daemon *d = w->d;
    if (!clientlimit_auth_allowed(d->limits, &c->smtp.client, worker_unix_ms())) {
        log_info("AUTH from %s refused: too many failures", c->smtp.client_text);
        conn_refuse_auth(w, c);
        return;
    }
    struct auth_request *req = xcalloc(1, sizeof *req);
    if (!smtp_server_take_credentials(&c->smtp, req->user, sizeof req->user, req->pass,
                                      sizeof req->pass)) {
        xfree(req);
        smtp_server_auth_result(&c->smtp, false, w->now_ms);
        return;
    }
    req->done = conn_auth_finished;
    req->arg = c;
    c->auth_req = req;
    authpool_submit(d->auth, req);
}

void
conn_auth_done(struct worker *w, struct conn *c, struct auth_request *req)
{
    bool ok = req->ok;
    char user[sizeof req->user * 4];
    log_escape(user, sizeof user, req->user, strlen(req->user));
    explicit_bzero(req, sizeof *req);
    xfree(req);
    c->auth_req = NULL;
    if (c->phase != CONN_OPEN) {
        conn_close(w, c);   /* it waited for this */
        return;
    }
    if (ok) {
        log_info("AUTH from %s: user=%s", c->smtp.client_text, user);
    } else {
        log_info("AUTH from %s failed: user=%s", c->smtp.client_text, user);
        if (clientlimit_auth_failed(w->d->limits, &c->smtp.client, worker_unix_ms())) {
            smtp_server_auth_result(&c->smtp, false, w->now_ms);
            conn_refuse_auth(w, c);
            conn_handle_actions(w, c);
            return;
        }
    }
    smtp_server_auth_result(&c->smtp, ok, w->now_ms);
    conn_handle_actions(w, c);
}

/* --- completions --------------------------------------------------------- */

static void
conn_on_recv(struct worker *w, struct conn *c, struct io_uring_cqe *cqe)
{
    int res = cqe->res;
    c->recv_armed = false;
    if (res == -ENOBUFS) {
        conn_mark_dirty(w, c);   /* no buffer free right now: re-arm after the batch */
        return;
    }
    if (res <= 0) {
        if (res < 0 && res != -ECONNRESET && res != -ECANCELED)
            log_debug("recv from %s: %s", c->smtp.client_text, strerror(-res));
        if (c->phase == CONN_OPEN)
            log_debug("disconnect from %s", c->smtp.client_text);
        conn_close(w, c);
        return;
    }
    unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
    const uint8_t *data = buf_pool_data(&w->cmd_bufs, bid);
    size_t n = (size_t)res;
    if (c->tls_on) {
        if (c->phase == CONN_OPEN)
            tls_stream_feed(&c->tls, data, n);   /* copied: the buffer goes back now */
        buf_pool_recycle(&w->cmd_bufs, bid);
        if (c->phase == CONN_OPEN && conn_tls_handshake(w, c))
            conn_tls_input(w, c);
        conn_mark_dirty(w, c);
        return;
    }
    if (c->phase == CONN_OPEN) {
        struct smtp_server *s = &c->smtp;
        if (s->state == SMTP_ST_BODY) {
            /* A body being read without storing it (rejected midway). */
            size_t consumed = 0;
            enum smtp_body_result r = smtp_server_body(s, data, n, &consumed, w->now_ms);
            conn_body_result(w, c, r, data + consumed, n - consumed);
        } else {
            smtp_server_input(s, data, n, w->now_ms);
            conn_handle_actions(w, c);
        }
    }
    buf_pool_recycle(&w->cmd_bufs, bid);
    conn_mark_dirty(w, c);
}

/* A body receive completed: res octets at src, which belong at dst in the
 * spool chunk (src == dst when received in place). */
static void
conn_body_received(struct worker *w, struct conn *c, int res, uint8_t *dst,
                   const uint8_t *src)
{
    if (c->msg != NULL && (c->phase != CONN_OPEN || c->smtp.state != SMTP_ST_BODY)) {
        /* The message was given up while this receive was in flight
         * (deadline, shutdown, close): only now may its chunk go back. */
        spool_msg_abort(c->msg);
        c->msg = NULL;
        if (c->phase != CONN_CLOSING && (res > 0 || res == -ECANCELED || res == -ENOBUFS)) {
            conn_mark_dirty(w, c);   /* carry on: final reply, then linger */
            return;
        }
    }
    if (res == -ENOBUFS && c->phase == CONN_OPEN) {
        conn_mark_dirty(w, c);   /* no body buffer free right now: re-arm after the batch */
        return;
    }
    if (res <= 0 || c->phase != CONN_OPEN) {
        /* Peer gone mid-body (RELIABILITY row 50): the message never got a
         * 250 and its records are dropped. */
        if (c->phase == CONN_OPEN)
            log_info("lost connection from %s in the middle of a message",
                     c->smtp.client_text);
        conn_close(w, c);
        return;
    }
    size_t n = (size_t)res;
    size_t consumed = 0;
    /* The scanner reads where the octets came in (the buffer when buffered:
     * the same octets, and no read fault on the mapping). */
    enum smtp_body_result r = conn_body_take(w, c, dst, src, n, &consumed);
    conn_body_result(w, c, r, src + consumed, n - consumed);
    conn_mark_dirty(w, c);
}

static void
conn_on_body_recv(struct worker *w, struct conn *c, struct io_uring_cqe *cqe)
{
    uint8_t *dst = c->body_ptr;
    c->recv_armed = false;
    c->body_ptr = NULL;
    if (!(cqe->flags & IORING_CQE_F_BUFFER)) {
        conn_body_received(w, c, cqe->res, dst, dst);
        return;
    }
    unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
    conn_body_received(w, c, cqe->res, dst, buf_pool_data(&w->body_bufs, bid));
    buf_pool_recycle(&w->body_bufs, bid);
}

static void
conn_on_send(struct worker *w, struct conn *c, int res)
{
    c->send_armed = false;
    if (res < 0) {
        conn_close(w, c);
        return;
    }
    c->sent += (size_t)res;
    if (c->sent < c->sending.len && c->phase != CONN_CLOSING) {
        conn_arm_send(w, c);   /* short send: the rest */
        return;
    }
    c->sending.len = 0;
    c->sent = 0;
    conn_mark_dirty(w, c);
}

void
conn_on_cqe(struct worker *w, enum io_op op, struct conn *c, struct io_uring_cqe *cqe)
{
    if (op != OP_CLOSE)
        c->inflight--;
    switch (op) {
    case OP_RECV:
        conn_on_recv(w, c, cqe);
        break;
    case OP_BODY_RECV:
        conn_on_body_recv(w, c, cqe);
        break;
    case OP_SEND:
        conn_on_send(w, c, cqe->res);
        break;
    case OP_CLOSE: {
        /* The last completion: nothing refers to c any more. */
        if (c->limit_held)
            clientlimit_release(w->d->limits, &c->smtp.client, c->limit_exempt);
        if (c->prev_all != NULL)
            c->prev_all->next_all = c->next_all;
        else
            w->all = c->next_all;
        if (c->next_all != NULL)
            c->next_all->prev_all = c->prev_all;
        w->nconns--;
        if (c->msg != NULL)
            spool_msg_abort(c->msg);
        smtp_server_free(&c->smtp);
        if (c->tls_on)
            tls_stream_free(&c->tls);
        outbuf_free(&c->sending);
        conn_drop_pending_env(c);
        xfree(c);
        return;
    }
    default:
        break;
    }
    if (c->phase == CONN_CLOSING)
        conn_close(w, c);
}

/* Marks c closing; once nothing is in flight, submits the close. */
static void
conn_close(struct worker *w, struct conn *c)
{
    if (c->phase != CONN_CLOSING) {
        c->phase = CONN_CLOSING;
        if (c->msg != NULL && !conn_body_recv_in_flight(c)) {
            spool_msg_abort(c->msg);   /* else when the receive completes */
            c->msg = NULL;
        }
        smtp_server_abort(&c->smtp);
        c->smtp.actions = 0;
        if (c->recv_armed || c->send_armed) {
            struct io_uring_sqe *sqe = worker_sqe(w);
            io_uring_prep_cancel_fd(sqe, c->fd, IORING_ASYNC_CANCEL_ALL);
            io_uring_sqe_set_data64(sqe, ud_pack(OP_IGNORE, NULL));
        }
    }
    if (c->inflight > 0 || c->in_commit_wait || c->auth_req != NULL || c->close_submitted)
        return;
    c->close_submitted = true;
    struct io_uring_sqe *sqe = worker_sqe(w);
    io_uring_prep_close(sqe, c->fd);
    io_uring_sqe_set_data64(sqe, ud_pack(OP_CLOSE, c));
}

void
conn_tick(struct worker *w, struct conn *c)
{
    switch (c->phase) {
    case CONN_LINGER:
        if (w->now_ms >= c->linger_until_ms)
            conn_close(w, c);
        return;
    case CONN_CLOSING:
        return;
    case CONN_OPEN:
        break;
    }
    if (c->tls_on && !c->tls.handshake_done && w->now_ms >= c->tls_deadline_ms) {
        log_info("TLS handshake timeout from %s", c->smtp.client_text);
        conn_close(w, c);
        return;
    }
    unsigned before = c->smtp.actions;
    if (c->greet_at_ms != 0) {
        if (w->now_ms < c->greet_at_ms)
            return;
        c->greet_at_ms = 0;
        smtp_server_greet(&c->smtp, w->now_ms);
        conn_mark_dirty(w, c);
        return;
    }
    smtp_server_tick(&c->smtp, w->now_ms);
    if (c->smtp.actions != before || (c->smtp.actions & SMTP_ACT_SEND)) {
        if ((c->smtp.actions & SMTP_ACT_CLOSE) && c->smtp.state == SMTP_ST_CLOSING
            && !(before & SMTP_ACT_CLOSE))
            log_info("timeout or limit: closing connection from %s", c->smtp.client_text);
        conn_handle_actions(w, c);
    }
}

void
conn_shutdown_all(struct worker *w)
{
    for (struct conn *c = w->all, *next; c != NULL; c = next) {
        next = c->next_all;
        if (c->phase == CONN_OPEN && c->smtp.state != SMTP_ST_COMMIT
            && c->smtp.state != SMTP_ST_CLOSING) {
            char line[300];
            snprintf(line, sizeof line, "421 4.3.2 %s Service shutting down", w->d->hostname);
            smtp_server_refuse(&c->smtp, line);
            conn_mark_dirty(w, c);
        }
    }
}
