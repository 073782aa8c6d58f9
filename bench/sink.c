/*
 * sink - ringmta-sink, an io_uring SMTP sink for measuring relays.
 *
 * One thread, one ring; nothing blocks but the open()/write() of --keep files
 * and sidecars (a test aid). Accepts with multishot accept, speaks ESMTP with
 * PIPELINING and CHUNKING, counts and discards; optionally stores (--keep) and
 * fsyncs (--fsync) each accepted message before its 250, delays end-of-data
 * replies (--latency, an io_uring timeout) and mixes in 421/4xx/5xx replies.
 * With --tls-cert/--tls-key it offers STARTTLS (RFC 3207) and runs TLS over
 * memory BIOs (bench_tls): the ring still does every read and write, the
 * handshake is CPU on this thread and never waits.
 *
 * Invariants:
 * - Replies leave in command order: while a message waits for its store/fsync
 *   or --latency the connection is paused; input keeps arriving and is parsed
 *   only after the reply is queued (RFC 2920 3.1: replies in command order).
 * - One recv and one send in flight per connection at most; replies produced
 *   while a send is in flight wait in the second buffer (q), never in the one
 *   the kernel is reading.
 * - A connection is freed only when no SQE for it is in flight; sink_close
 *   marks it and the last completion frees it.
 * - Reply-mix decisions are a pure function of (--seed, kind, n-th decision of
 *   that kind), so the number of each reply is the same on every run.
 * - TLS: replies are queued as plaintext in q and encrypted into tq when they
 *   are flushed; with TLS on, tq (not q) is what swaps with out. Input after
 *   STARTTLS that was already read is discarded (RFC 3207 4.2 / CVE-2011-0411);
 *   what arrives later is ciphertext, decrypted into in and parsed as before.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <unistd.h>

#include "alloc.h"
#include "bench_histogram.h"
#include "bench_net.h"
#include "bench_ring.h"
#include "bench_tls.h"
#include "sink_parse.h"

#define SINK_IN_MIN       8192
#define SINK_IN_MAX       (256 * 1024)
#define SINK_RECV_MIN     4096
#define SINK_TLS_RECV     (16 * 1024 + 512) /* one TLS record and change */
#define SINK_BACKLOG_MAX  (1024 * 1024)   /* unparsed input before recv pauses */
#define SINK_OUT_MAX      (256 * 1024)    /* unsent replies before recv pauses */
#define SINK_FSYNC_WRAP   (64u * 1024 * 1024)
#define SINK_TICK_US      250000
#define SINK_LINGER_US    5000000
#define SINK_EXIT_GRACE_US 2000000

enum sink_op {
    OP_IGNORE,
    OP_ACCEPT,
    OP_ACCEPT_RETRY,
    OP_RECV,
    OP_SEND,
    OP_WRITE,
    OP_FSYNC,
    OP_LATENCY,
    OP_SIGNAL,
    OP_REPORT,
    OP_TICK,
};

/* Which reply-mix decision is being rolled. */
enum sink_roll_kind {
    ROLL_CONNECT = 1,
    ROLL_RCPT = 2,
    ROLL_DATA = 3,
};

struct sink_cfg {
    struct sockaddr_storage addr;
    socklen_t addrlen;
    const char *hostname;
    bool fsync;
    const char *fsync_dir;
    const char *keep;
    double connect_421;
    double rcpt_4xx;
    double rcpt_5xx;
    double data_4xx;
    double data_5xx;
    uint64_t seed;
    unsigned latency_ms;
    double report_every;
    uint64_t exit_after;
    uint64_t max_size;
    bool json;
    int verbose;
    const char *tls_cert;
    const char *tls_key;
};

struct sink_stats {
    uint64_t connections;
    uint64_t connections_open;
    uint64_t messages;          /* accepted with 250 */
    uint64_t messages_rejected; /* end of data answered 4xx/5xx */
    uint64_t recipients;        /* accepted */
    uint64_t recipients_rejected;
    uint64_t bytes;             /* un-stuffed message bytes, all ended messages */
    uint64_t wire_bytes;        /* everything read from sockets */
    uint64_t bdat_chunks;
    uint64_t replies[6];        /* by class, index = first digit */
    uint64_t connect_421;
    uint64_t rcpt_4xx;
    uint64_t rcpt_5xx;
    uint64_t data_4xx;
    uint64_t data_5xx;
    uint64_t store_errors;
    uint64_t protocol_errors;   /* 500/501/503 and overlong lines */
    uint64_t starttls;          /* STARTTLS answered 220 */
    uint64_t tls_handshakes;    /* completed */
    uint64_t tls_resumed;       /* of those, resumed sessions */
    uint64_t tls_failures;      /* handshakes that failed, or TLS errors later */
    uint64_t messages_tls;      /* of the accepted messages, those received over TLS */
    struct bench_histogram msgs_per_conn;
};

struct sink_conn {
    uint32_t slot;
    uint32_t gen;
    int fd;
    unsigned inflight;
    bool in_use;
    bool recv_armed;
    bool send_armed;
    bool latency_armed;
    bool closing;
    bool quit;        /* QUIT or 421: close once the replies are out */
    bool lingering;   /* our FIN is out: reading until the peer closes */
    bool paused;      /* an end-of-data reply is pending */
    uint64_t linger_since;

    char *in;
    size_t in_cap, in_start, in_end;
    char *out;        /* being sent */
    size_t out_cap, out_len, out_sent;
    char *q;          /* queued replies */
    size_t q_cap, q_len;

    struct bench_tls tls; /* tls.ssl non-NULL: STARTTLS answered, TLS on */
    char *cin;        /* ciphertext recv buffer (TLS on) */
    char *recv_buf;   /* where the recv in flight reads to */
    char *tq;         /* ciphertext queued for the wire (TLS on) */
    size_t tq_cap, tq_len;
    bool need_ehlo;   /* RFC 3207 4.2: after the handshake, EHLO again first */

    struct sink_parse parse;
    char helo[256];
    bool have_mail;
    bool bdat;        /* a BDAT transaction has begun */
    bool bdat_last;
    bool keep_body;
    unsigned rcpt_ok;
    uint64_t msg_bytes;
    char *env;
    size_t env_len, env_cap;
    char *body;
    size_t body_len, body_cap;
    uint64_t msgs;

    unsigned persist_pending;
    bool persist_failed;
    int keep_fd;
    size_t persist_len;
    int reply_code;
    char reply[160];
    struct __kernel_timespec ts;
};

struct sink {
    const struct sink_cfg *cfg;
    SSL_CTX *tls_ctx;           /* NULL: STARTTLS not offered */
    struct io_uring ring;
    int lfd;
    int sigfd;
    int fsync_fd;
    uint64_t fsync_off;
    struct sink_conn **conns;
    uint32_t nconns, cap;
    uint32_t *free_slots;
    uint32_t nfree;
    unsigned sending;
    struct sink_stats st;
    uint64_t rolls[4];
    uint64_t keep_no;
    uint64_t queue_id;
    uint64_t t0;
    uint64_t t_first_conn;      /* first accept: start of the active period */
    uint64_t t_last_msg;        /* last 250 at end of data: its end */
    uint64_t last_report_t;
    uint64_t last_report_msgs;
    bool exiting;
    uint64_t exit_deadline;
    bool done;
    struct signalfd_siginfo siginfo;
    struct __kernel_timespec report_ts, tick_ts, accept_ts;
};

/* Title: deterministic reply-mix roll in [0, 100). */
static double
sink_roll(struct sink *s, enum sink_roll_kind kind)
{
    uint64_t n = s->rolls[kind]++;
    uint64_t z = s->cfg->seed ^ ((uint64_t)kind << 56) ^ (n * 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (double)(z >> 11) * 0x1.0p-53 * 100.0;
}

static struct io_uring_sqe *
sink_sqe(struct sink *s, struct sink_conn *c, enum sink_op op)
{
    struct io_uring_sqe *sqe = bench_ring_sqe(&s->ring);
    io_uring_sqe_set_data64(sqe, bench_ring_udata(op, c->slot, c->gen));
    c->inflight++;
    return sqe;
}

static void
sink_grow(char **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return;
    size_t n = *cap ? *cap : 256;
    while (n < need)
        n *= 2;
    *buf = xrealloc(*buf, n);
    *cap = n;
}

/* Title: queue one reply line (or a pre-built multi-line reply) and count it. */
static void
sink_reply_raw(struct sink *s, struct sink_conn *c, int code, const char *text, size_t len)
{
    sink_grow(&c->q, &c->q_cap, c->q_len + len);
    memcpy(c->q + c->q_len, text, len);
    c->q_len += len;
    s->st.replies[code / 100 < 6 ? code / 100 : 0]++;
}

static void
sink_reply(struct sink *s, struct sink_conn *c, int code, const char *text)
{
    char line[256];
    int n = snprintf(line, sizeof(line), "%d %s\r\n", code, text);
    sink_reply_raw(s, c, code, line, (size_t)n);
}

static void
sink_body(void *ctx, const char *bytes, size_t n)
{
    struct sink_conn *c = ctx;
    if (!c->keep_body)
        return;
    sink_grow(&c->body, &c->body_cap, c->body_len + n);
    memcpy(c->body + c->body_len, bytes, n);
    c->body_len += n;
}

static void
sink_reset_txn(struct sink_conn *c)
{
    c->have_mail = false;
    c->bdat = false;
    c->bdat_last = false;
    c->rcpt_ok = 0;
    c->msg_bytes = 0;
    c->env_len = 0;
    c->body_len = 0;
    c->keep_body = false;
}

static void
sink_env_add(struct sink_conn *c, const char *tag, const char *v, size_t n)
{
    size_t tl = strlen(tag);
    sink_grow(&c->env, &c->env_cap, c->env_len + tl + n + 4);
    memcpy(c->env + c->env_len, tag, tl);
    c->env_len += tl;
    c->env[c->env_len++] = ' ';
    c->env[c->env_len++] = '<';
    memcpy(c->env + c->env_len, v, n);
    c->env_len += n;
    c->env[c->env_len++] = '>';
    c->env[c->env_len++] = '\n';
}

static void sink_close(struct sink *s, struct sink_conn *c);
static void sink_finish_message(struct sink *s, struct sink_conn *c);
static void sink_tls_input(struct sink *s, struct sink_conn *c);

/* Title: the reply after store/fsync: wait --latency first if asked. */
static void
sink_after_store(struct sink *s, struct sink_conn *c)
{
    if (s->cfg->latency_ms > 0) {
        bench_ring_timespec(&c->ts, (uint64_t)s->cfg->latency_ms * 1000u);
        struct io_uring_sqe *sqe = sink_sqe(s, c, OP_LATENCY);
        io_uring_prep_timeout(sqe, &c->ts, 0, 0);
        c->latency_armed = true;
        return;
    }
    sink_finish_message(s, c);
}

/*
 * Title: store an accepted message before its 250.
 * --keep: DIR/<n>.eml holds the un-stuffed body, DIR/<n>.env the envelope.
 * --fsync alone: the body goes to a private scratch file (wrapping at 64 MiB)
 * and is fdatasync'ed. Write and fsync are linked; the reply waits for both.
 */
static void
sink_store(struct sink *s, struct sink_conn *c)
{
    const struct sink_cfg *cfg = s->cfg;
    int fd;
    uint64_t off = 0;

    c->paused = true;
    c->persist_failed = false;
    c->persist_len = c->body_len;
    if (cfg->keep != NULL) {
        char path[4096];
        uint64_t n = ++s->keep_no;
        snprintf(path, sizeof(path), "%s/%" PRIu64 ".env", cfg->keep, n);
        int efd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (efd >= 0) {
            dprintf(efd, "helo %s\n", c->helo);
            if (write(efd, c->env, c->env_len) != (ssize_t)c->env_len)
                c->persist_failed = true;
            close(efd);
        } else {
            c->persist_failed = true;
        }
        snprintf(path, sizeof(path), "%s/%" PRIu64 ".eml", cfg->keep, n);
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0) {
            fprintf(stderr, "sink: %s: %s\n", path, strerror(errno));
            c->persist_failed = true;
            sink_after_store(s, c);
            return;
        }
        c->keep_fd = fd;
    } else {
        fd = s->fsync_fd;
        if (s->fsync_off + c->body_len > SINK_FSYNC_WRAP)
            s->fsync_off = 0;
        off = s->fsync_off;
        s->fsync_off += c->body_len;
    }
    struct io_uring_sqe *sqe = sink_sqe(s, c, OP_WRITE);
    io_uring_prep_write(sqe, fd, c->body, (unsigned)c->body_len, off);
    c->persist_pending = 1;
    if (cfg->fsync) {
        sqe->flags |= IOSQE_IO_LINK;
        sqe = sink_sqe(s, c, OP_FSYNC);
        io_uring_prep_fsync(sqe, fd, cfg->keep ? 0 : IORING_FSYNC_DATASYNC);
        c->persist_pending = 2;
    }
}

static void
sink_check_exit(struct sink *s)
{
    if (s->cfg->exit_after && !s->exiting && s->st.messages >= s->cfg->exit_after) {
        s->exiting = true;
        s->exit_deadline = bench_ring_now_us() + SINK_EXIT_GRACE_US;
    }
}

/* Title: queue the end-of-data reply decided earlier and resume the connection. */
static void
sink_finish_message(struct sink *s, struct sink_conn *c)
{
    if (c->persist_failed && c->reply_code == 250) {
        s->st.store_errors++;
        c->reply_code = 451;
        snprintf(c->reply, sizeof(c->reply), "4.3.0 Sink could not store the message");
    }
    sink_reply(s, c, c->reply_code, c->reply);
    if (c->reply_code / 100 == 2) {
        s->st.messages++;
        if (c->tls.done)
            s->st.messages_tls++;
        s->t_last_msg = bench_ring_now_us();
    } else
        s->st.messages_rejected++;
    c->msgs++;
    c->paused = false;
    sink_reset_txn(c);
    sink_check_exit(s);
}

/*
 * Title: end of a message (DATA's final dot or BDAT LAST): decide the reply,
 * then store / wait / reply.
 */
static void
sink_end_message(struct sink *s, struct sink_conn *c)
{
    const struct sink_cfg *cfg = s->cfg;

    s->st.bytes += c->msg_bytes;
    if (cfg->max_size && c->msg_bytes > cfg->max_size) {
        sink_reply(s, c, 552, "5.3.4 Message too big");
        s->st.messages_rejected++;
        c->msgs++;
        sink_reset_txn(c);
        return;
    }
    double r = sink_roll(s, ROLL_DATA);
    if (r < cfg->data_4xx) {
        s->st.data_4xx++;
        c->reply_code = 451;
        snprintf(c->reply, sizeof(c->reply), "4.3.0 Message deferred (sink reply mix)");
    } else if (r < cfg->data_4xx + cfg->data_5xx) {
        s->st.data_5xx++;
        c->reply_code = 554;
        snprintf(c->reply, sizeof(c->reply), "5.6.0 Message rejected (sink reply mix)");
    } else {
        c->reply_code = 250;
        snprintf(c->reply, sizeof(c->reply), "2.0.0 Ok: queued as %" PRIx64, ++s->queue_id);
    }
    c->persist_failed = false;
    if (c->reply_code == 250 && (cfg->keep || cfg->fsync)) {
        sink_store(s, c);
        return;
    }
    if (cfg->latency_ms > 0) {
        c->paused = true;
        sink_after_store(s, c);
        return;
    }
    sink_finish_message(s, c);
}

/* Title: a BDAT chunk has been read in full (RFC 3030 2: one reply per chunk). */
static void
sink_chunk_end(struct sink *s, struct sink_conn *c)
{
    s->st.bdat_chunks++;
    c->msg_bytes += c->parse.body_bytes;
    if (!c->have_mail) {
        s->st.protocol_errors++;
        sink_reply(s, c, 503, "5.5.1 MAIL first");
        sink_reset_txn(c);
        return;
    }
    if (c->rcpt_ok == 0) {
        sink_reply(s, c, 554, "5.5.1 No valid recipients");
        sink_reset_txn(c);
        return;
    }
    if (c->bdat_last) {
        sink_end_message(s, c);
        return;
    }
    char text[64];
    snprintf(text, sizeof(text), "2.0.0 %" PRIu64 " octets received", c->parse.body_bytes);
    sink_reply(s, c, 250, text);
}

static void
sink_ehlo(struct sink *s, struct sink_conn *c)
{
    char buf[512];
    /* RFC 3207 4.2: STARTTLS is not offered again once TLS is on. */
    bool offer_tls = s->tls_ctx != NULL && c->tls.ssl == NULL;
    int n = snprintf(buf, sizeof(buf),
                     "250-%s greets %s\r\n"
                     "250-PIPELINING\r\n"
                     "250-SIZE %" PRIu64 "\r\n"
                     "250-8BITMIME\r\n"
                     "250-CHUNKING\r\n"
                     "%s"
                     "250-ENHANCEDSTATUSCODES\r\n"
                     "250 SMTPUTF8\r\n",
                     s->cfg->hostname, c->helo, s->cfg->max_size,
                     offer_tls ? "250-STARTTLS\r\n" : "");
    sink_reply_raw(s, c, 250, buf, (size_t)n);
}

/*
 * Title: STARTTLS accepted: 220 in plaintext, then TLS.
 * RFC 3207 4.2: the server forgets what it knew from the client (the EHLO
 * name, a transaction) and the client must EHLO again. Anything the client
 * pipelined behind STARTTLS is discarded, not run as if it had come over TLS
 * (CVE-2011-0411): a client must wait for the 220 before its ClientHello.
 */
static void
sink_starttls(struct sink *s, struct sink_conn *c)
{
    if (bench_tls_server(&c->tls, s->tls_ctx) < 0) {
        fprintf(stderr, "sink: c%u STARTTLS: %s\n", c->slot, c->tls.error);
        s->st.tls_failures++;
        sink_reply(s, c, 454, "4.7.0 TLS not available due to temporary reason");
        return;
    }
    sink_reply(s, c, 220, "2.0.0 Ready to start TLS");
    s->st.starttls++;
    /* The replies so far (the 220 last) leave in plaintext, ahead of any TLS record. */
    sink_grow(&c->tq, &c->tq_cap, c->tq_len + c->q_len);
    memcpy(c->tq + c->tq_len, c->q, c->q_len);
    c->tq_len += c->q_len;
    c->q_len = 0;
    c->in_start = c->in_end;
    sink_parse_init(&c->parse, sink_body, c);
    sink_reset_txn(c);
    c->helo[0] = '\0';
    c->need_ehlo = true;
    if (c->cin == NULL)
        c->cin = xmalloc(SINK_TLS_RECV);
}

/* Title: one command line. */
static void
sink_command(struct sink *s, struct sink_conn *c, const char *line, size_t len)
{
    const struct sink_cfg *cfg = s->cfg;
    struct sink_cmd cmd;
    enum sink_cmd_result r = sink_parse_command(line, len, &cmd);

    if (cfg->verbose > 1)
        fprintf(stderr, "sink: c%u <- %.*s\n", c->slot, (int)len, line);
    if (r == SINK_CMD_UNKNOWN) {
        s->st.protocol_errors++;
        sink_reply(s, c, 500, "5.5.2 Command unrecognized");
        return;
    }
    if (r == SINK_CMD_SYNTAX) {
        s->st.protocol_errors++;
        sink_reply(s, c, 501, "5.5.4 Syntax error in parameters or arguments");
        return;
    }
    switch (cmd.verb) {
    case SINK_VERB_EHLO:
    case SINK_VERB_HELO:
        /* RFC 5321 4.1.4: EHLO resets the state as if RSET. */
        sink_reset_txn(c);
        c->need_ehlo = false;
        snprintf(c->helo, sizeof(c->helo), "%.*s", (int)cmd.arg_len, cmd.arg);
        if (cmd.verb == SINK_VERB_EHLO)
            sink_ehlo(s, c);
        else
            sink_reply(s, c, 250, cfg->hostname);
        return;
    case SINK_VERB_MAIL:
        if (c->need_ehlo) {
            /* RCPT, DATA and BDAT then fail for want of MAIL. */
            s->st.protocol_errors++;
            sink_reply(s, c, 503, "5.5.1 EHLO first after STARTTLS");
            return;
        }
        if (c->have_mail) {
            s->st.protocol_errors++;
            sink_reply(s, c, 503, "5.5.1 Nested MAIL command");
            return;
        }
        if (cfg->max_size && cmd.mail_size > cfg->max_size) {
            sink_reply(s, c, 552, "5.3.4 Message size exceeds fixed limit");
            return;
        }
        sink_reset_txn(c);
        c->have_mail = true;
        sink_env_add(c, "mail-from", cmd.path, cmd.path_len);
        sink_reply(s, c, 250, "2.1.0 Ok");
        return;
    case SINK_VERB_RCPT: {
        if (!c->have_mail) {
            s->st.protocol_errors++;
            sink_reply(s, c, 503, "5.5.1 Need MAIL before RCPT");
            return;
        }
        double roll = sink_roll(s, ROLL_RCPT);
        if (roll < cfg->rcpt_4xx) {
            s->st.rcpt_4xx++;
            s->st.recipients_rejected++;
            sink_reply(s, c, 451, "4.3.0 Recipient deferred (sink reply mix)");
        } else if (roll < cfg->rcpt_4xx + cfg->rcpt_5xx) {
            s->st.rcpt_5xx++;
            s->st.recipients_rejected++;
            sink_reply(s, c, 550, "5.1.1 Recipient rejected (sink reply mix)");
        } else {
            s->st.recipients++;
            c->rcpt_ok++;
            sink_env_add(c, "rcpt", cmd.path, cmd.path_len);
            sink_reply(s, c, 250, "2.1.5 Ok");
        }
        return;
    }
    case SINK_VERB_DATA:
        if (!c->have_mail || c->bdat) {
            s->st.protocol_errors++;
            sink_reply(s, c, 503, "5.5.1 Bad sequence of commands");
            return;
        }
        /* RFC 2920 3.1: with no valid recipient, DATA must fail (not 354). */
        if (c->rcpt_ok == 0) {
            sink_reply(s, c, 554, "5.5.1 No valid recipients");
            return;
        }
        sink_reply(s, c, 354, "End data with <CR><LF>.<CR><LF>");
        c->keep_body = cfg->keep || cfg->fsync;
        c->body_len = 0;
        sink_parse_start_data(&c->parse);
        return;
    case SINK_VERB_BDAT:
        /* RFC 3030 2: the chunk is read even when it will be refused. */
        if (!c->bdat) {
            c->body_len = 0;
            c->msg_bytes = 0;
        }
        c->bdat = true;
        c->bdat_last = cmd.bdat_last;
        c->keep_body = c->have_mail && (cfg->keep || cfg->fsync);
        sink_parse_start_bdat(&c->parse, cmd.bdat_size);
        return;
    case SINK_VERB_RSET:
        sink_reset_txn(c);
        sink_reply(s, c, 250, "2.0.0 Ok");
        return;
    case SINK_VERB_NOOP:
        sink_reply(s, c, 250, "2.0.0 Ok");
        return;
    case SINK_VERB_QUIT:
        sink_reply(s, c, 221, "2.0.0 Bye");
        c->quit = true;
        return;
    case SINK_VERB_VRFY:
        sink_reply(s, c, 252, "2.5.0 Cannot VRFY user");
        return;
    case SINK_VERB_HELP:
        sink_reply(s, c, 214, "2.0.0 ringmta-sink: see RFC 5321");
        return;
    case SINK_VERB_STARTTLS:
        if (s->tls_ctx == NULL)
            break;
        if (c->tls.ssl != NULL) {
            s->st.protocol_errors++;
            sink_reply(s, c, 503, "5.5.1 TLS already active");
            return;
        }
        sink_starttls(s, c);
        return;
    default:
        break;
    }
    sink_reply(s, c, 502, "5.5.1 Command not implemented");
}

/* Title: parse what has arrived, until it runs out or a message reply is pending. */
static void
sink_process(struct sink *s, struct sink_conn *c)
{
    while (!c->paused && !c->closing && !c->quit) {
        size_t used = 0;
        enum sink_parse_event ev =
            sink_parse_feed(&c->parse, c->in + c->in_start, c->in_end - c->in_start, &used);
        c->in_start += used;
        switch (ev) {
        case SINK_PARSE_AGAIN:
            return;
        case SINK_PARSE_LINE:
            sink_command(s, c, c->parse.line, c->parse.line_len);
            break;
        case SINK_PARSE_TOO_LONG:
            s->st.protocol_errors++;
            sink_reply(s, c, 500, "5.5.6 Line too long");
            break;
        case SINK_PARSE_DATA_END:
            c->msg_bytes = c->parse.body_bytes;
            sink_end_message(s, c);
            break;
        case SINK_PARSE_CHUNK_END:
            sink_chunk_end(s, c);
            break;
        }
    }
}

/* Title: TLS on: encrypt the queued replies into the wire queue. */
static void
sink_tls_protect(struct sink *s, struct sink_conn *c)
{
    if (c->q_len > 0 && c->tls.done) {
        if (bench_tls_write(&c->tls, c->q, c->q_len) < 0) {
            if (s->cfg->verbose)
                fprintf(stderr, "sink: c%u TLS write: %s\n", c->slot, c->tls.error);
            s->st.tls_failures++;
            sink_close(s, c);
            return;
        }
        c->q_len = 0;
    }
    /* After the 221 (or a 421): close_notify, so the client sees a clean end. */
    if (c->quit)
        bench_tls_shutdown(&c->tls);
    bench_tls_take(&c->tls, &c->tq, &c->tq_cap, &c->tq_len);
}

static void
sink_flush(struct sink *s, struct sink_conn *c)
{
    if (c->tls.ssl != NULL && !c->closing)
        sink_tls_protect(s, c);
    if (c->send_armed || c->closing || c->fd < 0)
        return;
    if (c->out_sent == c->out_len) {
        /* What goes on the wire: the replies, or with TLS on their records. */
        bool tls = c->tls.ssl != NULL;
        char **wq = tls ? &c->tq : &c->q;
        size_t *wq_cap = tls ? &c->tq_cap : &c->q_cap, *wq_len = tls ? &c->tq_len : &c->q_len;
        if (*wq_len == 0)
            return;
        /* Swap: the queued bytes become the buffer in flight. */
        char *t = c->out;
        size_t tc = c->out_cap;
        c->out = *wq;
        c->out_cap = *wq_cap;
        c->out_len = *wq_len;
        c->out_sent = 0;
        *wq = t;
        *wq_cap = tc;
        *wq_len = 0;
    }
    struct io_uring_sqe *sqe = sink_sqe(s, c, OP_SEND);
    io_uring_prep_send(sqe, c->fd, c->out + c->out_sent, c->out_len - c->out_sent, MSG_NOSIGNAL);
    c->send_armed = true;
    s->sending++;
}

/* Title: at least SINK_RECV_MIN free bytes at the end of in (compact first, then grow). */
static void
sink_in_reserve(struct sink_conn *c)
{
    if (c->in_start == c->in_end)
        c->in_start = c->in_end = 0;
    if (c->in_cap - c->in_end < SINK_RECV_MIN && c->in_start > 0) {
        memmove(c->in, c->in + c->in_start, c->in_end - c->in_start);
        c->in_end -= c->in_start;
        c->in_start = 0;
    }
    if (c->in_cap - c->in_end < SINK_RECV_MIN)
        sink_grow(&c->in, &c->in_cap, c->in_end + SINK_RECV_MIN);
}

/* Title: keep one recv armed, unless the peer is far ahead of us (backpressure). */
static void
sink_arm_recv(struct sink *s, struct sink_conn *c)
{
    if (c->recv_armed || c->closing || c->fd < 0 || (c->quit && !c->lingering))
        return;
    if (c->lingering)
        c->in_start = c->in_end = 0; /* discarding */
    if (c->in_end - c->in_start > SINK_BACKLOG_MAX ||
        (c->out_len - c->out_sent) + c->q_len + c->tq_len > SINK_OUT_MAX)
        return;
    if (c->tls.ssl != NULL) {
        /* Ciphertext: into its own buffer, decrypted into in afterwards. */
        struct io_uring_sqe *sqe = sink_sqe(s, c, OP_RECV);
        io_uring_prep_recv(sqe, c->fd, c->cin, SINK_TLS_RECV, 0);
        c->recv_buf = c->cin;
        c->recv_armed = true;
        return;
    }
    sink_in_reserve(c);
    struct io_uring_sqe *sqe = sink_sqe(s, c, OP_RECV);
    io_uring_prep_recv(sqe, c->fd, c->in + c->in_end, c->in_cap - c->in_end, 0);
    c->recv_buf = c->in + c->in_end;
    c->recv_armed = true;
}

/* Title: after any event on a connection: parse, send, read, or finish closing. */
static void
sink_kick(struct sink *s, struct sink_conn *c)
{
    if (!c->closing) {
        sink_process(s, c);
        sink_flush(s, c);
        if (c->quit && !c->lingering && !c->send_armed && c->q_len == 0 && c->tq_len == 0) {
            /*
             * All replies are out. Half-close and read until the peer closes,
             * so that unread input never turns our FIN into a RST that could
             * destroy the final reply in flight.
             */
            shutdown(c->fd, SHUT_WR);
            c->lingering = true;
            c->linger_since = bench_ring_now_us();
        }
        sink_arm_recv(s, c);
    }
    if (c->closing && c->inflight == 0) {
        close(c->fd);
        c->fd = -1;
        if (c->keep_fd >= 0) {
            close(c->keep_fd);
            c->keep_fd = -1;
        }
        bench_tls_free(&c->tls);
        bench_histogram_record(&s->st.msgs_per_conn, c->msgs);
        s->st.connections_open--;
        c->in_use = false;
        c->gen++;
        s->free_slots[s->nfree++] = c->slot;
    }
}

static void
sink_close(struct sink *s, struct sink_conn *c)
{
    if (c->closing)
        return;
    c->closing = true;
    shutdown(c->fd, SHUT_RDWR);
    /* shutdown() ends the recv and a blocked send; cancel in case it did not. */
    uint64_t ignore = bench_ring_udata(OP_IGNORE, c->slot, c->gen);
    if (c->recv_armed)
        bench_ring_cancel(&s->ring, bench_ring_udata(OP_RECV, c->slot, c->gen), ignore);
    if (c->send_armed)
        bench_ring_cancel(&s->ring, bench_ring_udata(OP_SEND, c->slot, c->gen), ignore);
    if (c->latency_armed)
        bench_ring_cancel(&s->ring, bench_ring_udata(OP_LATENCY, c->slot, c->gen), ignore);
}

static struct sink_conn *
sink_conn_new(struct sink *s, int fd)
{
    struct sink_conn *c;
    if (s->nfree > 0) {
        c = s->conns[s->free_slots[--s->nfree]];
    } else {
        if (s->nconns == s->cap) {
            s->cap = s->cap ? s->cap * 2 : 256;
            s->conns = xrealloc(s->conns, s->cap * sizeof(*s->conns));
            s->free_slots = xrealloc(s->free_slots, s->cap * sizeof(*s->free_slots));
        }
        c = xcalloc(1, sizeof(*c));
        c->slot = s->nconns;
        s->conns[s->nconns++] = c;
        c->in_cap = SINK_IN_MIN;
        c->in = xmalloc(c->in_cap);
    }
    c->fd = fd;
    c->in_use = true;
    c->inflight = 0;
    c->recv_armed = c->send_armed = c->latency_armed = false;
    c->closing = c->quit = c->lingering = c->paused = false;
    c->in_start = c->in_end = 0;
    c->out_len = c->out_sent = c->q_len = c->tq_len = 0;
    c->need_ehlo = false;
    memset(&c->tls, 0, sizeof(c->tls));
    c->helo[0] = '\0';
    c->msgs = 0;
    c->keep_fd = -1;
    c->persist_pending = 0;
    sink_reset_txn(c);
    sink_parse_init(&c->parse, sink_body, c);
    return c;
}

static void
sink_arm_accept(struct sink *s)
{
    struct io_uring_sqe *sqe = bench_ring_sqe(&s->ring);
    io_uring_prep_multishot_accept(sqe, s->lfd, NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, bench_ring_udata(OP_ACCEPT, 0, 0));
}

static void
sink_on_accept(struct sink *s, struct io_uring_cqe *cqe)
{
    if (!(cqe->flags & IORING_CQE_F_MORE)) {
        if (cqe->res >= 0 || cqe->res == -ECANCELED) {
            sink_arm_accept(s);
        } else {
            /* EMFILE and friends: try again shortly rather than spin. */
            if (s->cfg->verbose)
                fprintf(stderr, "sink: accept: %s\n", strerror(-cqe->res));
            bench_ring_timespec(&s->accept_ts, 10000);
            struct io_uring_sqe *sqe = bench_ring_sqe(&s->ring);
            io_uring_prep_timeout(sqe, &s->accept_ts, 0, 0);
            io_uring_sqe_set_data64(sqe, bench_ring_udata(OP_ACCEPT_RETRY, 0, 0));
        }
    }
    if (cqe->res < 0)
        return;
    int fd = cqe->res;
    if (s->exiting) {
        close(fd);
        return;
    }
    bench_net_nodelay(fd);
    if (s->t_first_conn == 0)
        s->t_first_conn = bench_ring_now_us();
    struct sink_conn *c = sink_conn_new(s, fd);
    s->st.connections++;
    s->st.connections_open++;
    if (sink_roll(s, ROLL_CONNECT) < s->cfg->connect_421) {
        s->st.connect_421++;
        sink_reply(s, c, 421, "4.3.2 Service not available, closing channel (sink reply mix)");
        c->quit = true;
    } else {
        char banner[300];
        snprintf(banner, sizeof(banner), "%s ESMTP ringmta-sink", s->cfg->hostname);
        sink_reply(s, c, 220, banner);
    }
    sink_kick(s, c);
}

static void
sink_on_recv(struct sink *s, struct sink_conn *c, int res)
{
    c->recv_armed = false;
    if (c->closing)
        return;
    if (res <= 0) {
        if (res < 0 && res != -ECONNRESET && res != -ECANCELED && s->cfg->verbose)
            fprintf(stderr, "sink: c%u recv: %s\n", c->slot, strerror(-res));
        sink_close(s, c);
        return;
    }
    s->st.wire_bytes += (uint64_t)res;
    if (c->lingering)
        return; /* discarded; sink_arm_recv resets the buffer */
    if (c->tls.ssl != NULL) {
        /*
         * Ciphertext, also when the recv was armed into in before STARTTLS
         * was processed: it completed after the 220 was queued, and what was
         * pipelined before that has been discarded with in's backlog.
         */
        bench_tls_feed(&c->tls, c->recv_buf, (size_t)res);
        sink_tls_input(s, c);
        return;
    }
    /* Room to grow for big messages: a full recv asks for a bigger one. */
    bool full = c->in_end + (size_t)res == c->in_cap;
    c->in_end += (size_t)res;
    if (full && c->in_cap < SINK_IN_MAX && c->in_start == 0)
        sink_grow(&c->in, &c->in_cap, c->in_cap * 2);
}

/*
 * Title: TLS on: advance the handshake, then decrypt everything the stream
 * holds into in (growing it: one recv's worth at most), for sink_process.
 */
static void
sink_tls_input(struct sink *s, struct sink_conn *c)
{
    if (!c->tls.done) {
        enum bench_tls_result r = bench_tls_handshake(&c->tls);
        if (r == BENCH_TLS_ERROR || r == BENCH_TLS_CLOSED) {
            if (s->cfg->verbose)
                fprintf(stderr, "sink: c%u TLS handshake: %s\n", c->slot, c->tls.error);
            s->st.tls_failures++;
            sink_close(s, c);
            return;
        }
        if (r == BENCH_TLS_AGAIN)
            return; /* sink_flush sends what the handshake produced */
        s->st.tls_handshakes++;
        if (bench_tls_resumed(&c->tls))
            s->st.tls_resumed++;
    }
    for (;;) {
        sink_in_reserve(c);
        long n = bench_tls_read(&c->tls, c->in + c->in_end, c->in_cap - c->in_end);
        if (n > 0) {
            c->in_end += (size_t)n;
            continue;
        }
        if (n < 0) {
            /* close_notify: the client is done; an error: drop it. */
            if (n == BENCH_TLS_ERROR) {
                if (s->cfg->verbose)
                    fprintf(stderr, "sink: c%u TLS read: %s\n", c->slot, c->tls.error);
                s->st.tls_failures++;
            }
            sink_close(s, c);
        }
        return;
    }
}

static void
sink_on_send(struct sink *s, struct sink_conn *c, int res)
{
    c->send_armed = false;
    s->sending--;
    if (c->closing)
        return;
    if (res < 0) {
        sink_close(s, c);
        return;
    }
    c->out_sent += (size_t)res;
    if (c->out_sent == c->out_len)
        c->out_sent = c->out_len = 0;
}

static void
sink_on_store(struct sink *s, struct sink_conn *c, unsigned op, int res)
{
    if ((op == OP_WRITE && res != (int)c->persist_len) || (op == OP_FSYNC && res < 0))
        c->persist_failed = true;
    if (--c->persist_pending > 0)
        return;
    if (c->keep_fd >= 0) {
        close(c->keep_fd);
        c->keep_fd = -1;
    }
    if (c->closing)
        return;
    sink_after_store(s, c);
}

static void
sink_print_report(struct sink *s, bool final)
{
    const struct sink_stats *st = &s->st;
    uint64_t now = bench_ring_now_us();
    double elapsed = (double)(now - s->t0) / 1e6;
    double interval = (double)(now - s->last_report_t) / 1e6;
    double rate = interval > 0 ? (double)(st->messages - s->last_report_msgs) / interval : 0;
    /* First connection to last accepted message: what a relay run delivered. */
    double active = 0;
    if (s->t_last_msg > s->t_first_conn)
        active = (double)(s->t_last_msg - s->t_first_conn) / 1e6;
    double active_rate = active > 0 ? (double)st->messages / active : 0;

    /* Messages per connection, open connections included as they stand. */
    struct bench_histogram *h = xmalloc(sizeof(*h));
    *h = st->msgs_per_conn;
    for (uint32_t i = 0; i < s->nconns; i++)
        if (s->conns[i]->in_use)
            bench_histogram_record(h, s->conns[i]->msgs);
    /* Fold into power-of-two ranges: 0, 1, 2-3, 4-7, ... */
    uint64_t pow2[66] = {0};
    for (size_t b = 0; b < BENCH_HISTOGRAM_BUCKETS; b++) {
        if (h->counts[b] == 0)
            continue;
        uint64_t low = bench_histogram_bucket_low(b);
        unsigned k = low == 0 ? 0 : 64u - (unsigned)__builtin_clzll(low);
        pow2[k] += h->counts[b];
    }

    if (s->cfg->json) {
        printf("{\"final\":%s,\"elapsed_s\":%.3f,\"connections\":%" PRIu64
               ",\"connections_open\":%" PRIu64 ",\"messages\":%" PRIu64
               ",\"messages_rejected\":%" PRIu64 ",\"recipients\":%" PRIu64
               ",\"recipients_rejected\":%" PRIu64 ",\"bytes\":%" PRIu64 ",\"wire_bytes\":%" PRIu64
               ",\"bdat_chunks\":%" PRIu64 ",\"interval_msg_per_s\":%.1f,\"active_s\":%.6f,"
               "\"active_msg_per_s\":%.1f,",
               final ? "true" : "false", elapsed, st->connections, st->connections_open,
               st->messages, st->messages_rejected, st->recipients, st->recipients_rejected,
               st->bytes, st->wire_bytes, st->bdat_chunks, rate, active, active_rate);
        printf("\"replies\":{\"2xx\":%" PRIu64 ",\"3xx\":%" PRIu64 ",\"4xx\":%" PRIu64
               ",\"5xx\":%" PRIu64 "},",
               st->replies[2], st->replies[3], st->replies[4], st->replies[5]);
        printf("\"mix\":{\"connect_421\":%" PRIu64 ",\"rcpt_4xx\":%" PRIu64 ",\"rcpt_5xx\":%" PRIu64
               ",\"data_4xx\":%" PRIu64 ",\"data_5xx\":%" PRIu64 "},\"store_errors\":%" PRIu64
               ",\"protocol_errors\":%" PRIu64 ",",
               st->connect_421, st->rcpt_4xx, st->rcpt_5xx, st->data_4xx, st->data_5xx,
               st->store_errors, st->protocol_errors);
        printf("\"tls\":%s,\"starttls\":%" PRIu64 ",\"tls_handshakes\":%" PRIu64
               ",\"tls_resumed\":%" PRIu64 ",\"tls_failures\":%" PRIu64
               ",\"messages_tls\":%" PRIu64 ",",
               s->tls_ctx ? "true" : "false", st->starttls, st->tls_handshakes, st->tls_resumed,
               st->tls_failures, st->messages_tls);
        printf("\"msgs_per_conn\":{\"count\":%" PRIu64 ",\"mean\":%.2f,\"p50\":%" PRIu64
               ",\"p90\":%" PRIu64 ",\"p99\":%" PRIu64 ",\"max\":%" PRIu64 ",\"ranges\":{",
               h->total, bench_histogram_mean(h), bench_histogram_percentile(h, 50),
               bench_histogram_percentile(h, 90), bench_histogram_percentile(h, 99), h->max);
        bool first = true;
        for (unsigned k = 0; k < 66; k++) {
            if (pow2[k] == 0)
                continue;
            uint64_t lo = k == 0 ? 0 : 1ull << (k - 1), hi = k == 0 ? 0 : (2ull << (k - 1)) - 1;
            if (lo == hi)
                printf("%s\"%" PRIu64 "\":%" PRIu64, first ? "" : ",", lo, pow2[k]);
            else
                printf("%s\"%" PRIu64 "-%" PRIu64 "\":%" PRIu64, first ? "" : ",", lo, hi, pow2[k]);
            first = false;
        }
        printf("}}}\n");
    } else {
        printf("ringmta-sink: %s after %.1f s: %" PRIu64 " connections (%" PRIu64 " open), %" PRIu64
               " messages, %" PRIu64 " rejected, %" PRIu64 " recipients (%" PRIu64
               " rejected), %" PRIu64 " bytes\n",
               final ? "final" : "report", elapsed, st->connections, st->connections_open,
               st->messages, st->messages_rejected, st->recipients, st->recipients_rejected,
               st->bytes);
        printf("  rate: %.1f msg/s since the last report, %.1f msg/s over the active %.3f s"
               " (first connection to last 250)\n",
               rate, active_rate, active);
        printf("  replies: 2xx %" PRIu64 ", 3xx %" PRIu64 ", 4xx %" PRIu64 ", 5xx %" PRIu64
               "; mix: connect-421 %" PRIu64 ", rcpt-4xx %" PRIu64 ", rcpt-5xx %" PRIu64
               ", data-4xx %" PRIu64 ", data-5xx %" PRIu64 "; store errors %" PRIu64
               ", protocol errors %" PRIu64 "\n",
               st->replies[2], st->replies[3], st->replies[4], st->replies[5], st->connect_421,
               st->rcpt_4xx, st->rcpt_5xx, st->data_4xx, st->data_5xx, st->store_errors,
               st->protocol_errors);
        if (s->tls_ctx)
            printf("  tls: %" PRIu64 " STARTTLS, %" PRIu64 " handshakes (%" PRIu64
                   " resumed), %" PRIu64 " failed; %" PRIu64 " of the messages over TLS\n",
                   st->starttls, st->tls_handshakes, st->tls_resumed, st->tls_failures,
                   st->messages_tls);
        printf("  messages per connection: n=%" PRIu64 " mean=%.2f p50=%" PRIu64 " p90=%" PRIu64
               " max=%" PRIu64 "\n   ",
               h->total, bench_histogram_mean(h), bench_histogram_percentile(h, 50),
               bench_histogram_percentile(h, 90), h->max);
        for (unsigned k = 0; k < 66; k++) {
            if (pow2[k] == 0)
                continue;
            uint64_t lo = k == 0 ? 0 : 1ull << (k - 1), hi = k == 0 ? 0 : (2ull << (k - 1)) - 1;
            if (lo == hi)
                printf(" [%" PRIu64 "]:%" PRIu64, lo, pow2[k]);
            else
                printf(" [%" PRIu64 "-%" PRIu64 "]:%" PRIu64, lo, hi, pow2[k]);
        }
        printf("\n");
    }
    fflush(stdout);
    xfree(h);
    s->last_report_t = now;
    s->last_report_msgs = st->messages;
}

static void
sink_arm_report(struct sink *s)
{
    bench_ring_timespec(&s->report_ts, (uint64_t)(s->cfg->report_every * 1e6));
    struct io_uring_sqe *sqe = bench_ring_sqe(&s->ring);
    io_uring_prep_timeout(sqe, &s->report_ts, 0, 0);
    io_uring_sqe_set_data64(sqe, bench_ring_udata(OP_REPORT, 0, 0));
}

static void
sink_arm_signal(struct sink *s)
{
    struct io_uring_sqe *sqe = bench_ring_sqe(&s->ring);
    io_uring_prep_read(sqe, s->sigfd, &s->siginfo, sizeof(s->siginfo), 0);
    io_uring_sqe_set_data64(sqe, bench_ring_udata(OP_SIGNAL, 0, 0));
}

/* Title: housekeeping: linger timeouts and the --exit-after grace period. */
static void
sink_on_tick(struct sink *s)
{
    uint64_t now = bench_ring_now_us();
    for (uint32_t i = 0; i < s->nconns; i++) {
        struct sink_conn *c = s->conns[i];
        if (c->in_use && c->lingering && !c->closing && now - c->linger_since > SINK_LINGER_US) {
            sink_close(s, c);
            sink_kick(s, c);
        }
    }
    bench_ring_timespec(&s->tick_ts, SINK_TICK_US);
    struct io_uring_sqe *sqe = bench_ring_sqe(&s->ring);
    io_uring_prep_timeout(sqe, &s->tick_ts, 0, 0);
    io_uring_sqe_set_data64(sqe, bench_ring_udata(OP_TICK, 0, 0));
}

static void
sink_on_cqe(struct sink *s, struct io_uring_cqe *cqe)
{
    uint64_t ud = io_uring_cqe_get_data64(cqe);
    unsigned op = bench_ring_udata_op(ud);

    switch (op) {
    case OP_IGNORE:
        return;
    case OP_ACCEPT:
        sink_on_accept(s, cqe);
        return;
    case OP_ACCEPT_RETRY:
        sink_arm_accept(s);
        return;
    case OP_SIGNAL:
        s->done = true;
        return;
    case OP_REPORT:
        sink_print_report(s, false);
        sink_arm_report(s);
        return;
    case OP_TICK:
        sink_on_tick(s);
        return;
    default:
        break;
    }
    uint32_t slot = bench_ring_udata_slot(ud);
    struct sink_conn *c = slot < s->nconns ? s->conns[slot] : NULL;
    if (c == NULL || !c->in_use || bench_ring_udata_gen(ud) != (c->gen & 0xffffff)) {
        fprintf(stderr, "sink: stale completion op %u slot %u\n", op, slot);
        return;
    }
    c->inflight--;
    switch (op) {
    case OP_RECV:
        sink_on_recv(s, c, cqe->res);
        break;
    case OP_SEND:
        sink_on_send(s, c, cqe->res);
        break;
    case OP_WRITE:
    case OP_FSYNC:
        sink_on_store(s, c, op, cqe->res);
        break;
    case OP_LATENCY:
        c->latency_armed = false;
        if (!c->closing)
            sink_finish_message(s, c);
        break;
    default:
        break;
    }
    sink_kick(s, c);
}

static void
sink_usage(FILE *fp)
{
    fprintf(fp,
            "usage: ringmta-sink --listen HOST:PORT [options]\n"
            "  --hostname NAME       name in the banner and EHLO reply (default sink.test)\n"
            "  --fsync               store and fsync each message before its 250\n"
            "  --fsync-dir DIR       directory of the --fsync scratch file\n"
            "                        (default $TMPDIR, else /var/tmp)\n"
            "  --keep DIR            write each message as DIR/<n>.eml (+ envelope DIR/<n>.env)\n"
            "  --connect-421 PCT     share of connections greeted with 421\n"
            "  --rcpt-4xx PCT        share of RCPT answered 451\n"
            "  --rcpt-5xx PCT        share of RCPT answered 550\n"
            "  --data-4xx PCT        share of messages answered 451 at end of data\n"
            "  --data-5xx PCT        share of messages answered 554 at end of data\n"
            "  --seed N              reply-mix seed (default 1)\n"
            "  --latency MS          delay every end-of-data reply by MS\n"
            "  --max-size BYTES      SIZE limit (default 67108864)\n"
            "  --report-every SEC    print a report every SEC seconds\n"
            "  --exit-after N        exit once N messages were accepted and answered\n"
            "  --tls-cert FILE       offer STARTTLS with this PEM certificate (chain)\n"
            "  --tls-key FILE        its private key (default: in the --tls-cert file)\n"
            "  --json                reports as JSON lines\n"
            "  -v, --verbose         errors to stderr; twice: every command\n"
            "Reports on SIGINT/SIGTERM and at exit. Port 0 picks a free port; the\n"
            "address is printed on stderr as \"ringmta-sink: listening on HOST:PORT\".\n");
}

static bool
sink_parse_pct(const char *text, double *out)
{
    char *end;
    double v = strtod(text, &end);
    if (*end != '\0' || end == text || v < 0 || v > 100)
        return false;
    *out = v;
    return true;
}

static int
sink_listen(struct sink *s)
{
    const struct sink_cfg *cfg = s->cfg;
    int fd = socket(cfg->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *)&cfg->addr, cfg->addrlen) < 0 || listen(fd, 4096) < 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    char host[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    getsockname(fd, (struct sockaddr *)&ss, &len);
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &in4->sin_addr, host, sizeof(host));
        port = ntohs(in4->sin_port);
        fprintf(stderr, "ringmta-sink: listening on %s:%u\n", host, port);
    } else {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        port = ntohs(in6->sin6_port);
        fprintf(stderr, "ringmta-sink: listening on [%s]:%u\n", host, port);
    }
    return fd;
}

int
main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"listen", required_argument, NULL, 'l'},
        {"hostname", required_argument, NULL, 'N'},
        {"fsync", no_argument, NULL, 'F'},
        {"fsync-dir", required_argument, NULL, 'Y'},
        {"keep", required_argument, NULL, 'k'},
        {"connect-421", required_argument, NULL, 'c'},
        {"rcpt-4xx", required_argument, NULL, 'r'},
        {"rcpt-5xx", required_argument, NULL, 'R'},
        {"data-4xx", required_argument, NULL, 'd'},
        {"data-5xx", required_argument, NULL, 'D'},
        {"seed", required_argument, NULL, 's'},
        {"latency", required_argument, NULL, 'L'},
        {"max-size", required_argument, NULL, 'm'},
        {"report-every", required_argument, NULL, 'e'},
        {"exit-after", required_argument, NULL, 'x'},
        {"tls-cert", required_argument, NULL, 'C'},
        {"tls-key", required_argument, NULL, 'K'},
        {"json", no_argument, NULL, 'j'},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct sink_cfg cfg = {0};
    const char *listen_at = NULL;
    bool bad = false;
    int opt;

    cfg.hostname = "sink.test";
    cfg.seed = 1;
    cfg.max_size = 64ull * 1024 * 1024;
    while ((opt = getopt_long(argc, argv, "vh", longopts, NULL)) != -1) {
        char *end = NULL;
        switch (opt) {
        case 'l': listen_at = optarg; break;
        case 'N': cfg.hostname = optarg; break;
        case 'F': cfg.fsync = true; break;
        case 'Y': cfg.fsync_dir = optarg; break;
        case 'k': cfg.keep = optarg; break;
        case 'c': bad |= !sink_parse_pct(optarg, &cfg.connect_421); break;
        case 'r': bad |= !sink_parse_pct(optarg, &cfg.rcpt_4xx); break;
        case 'R': bad |= !sink_parse_pct(optarg, &cfg.rcpt_5xx); break;
        case 'd': bad |= !sink_parse_pct(optarg, &cfg.data_4xx); break;
        case 'D': bad |= !sink_parse_pct(optarg, &cfg.data_5xx); break;
        case 's': cfg.seed = strtoull(optarg, &end, 0); break;
        case 'L': cfg.latency_ms = (unsigned)strtoul(optarg, &end, 10); break;
        case 'm': cfg.max_size = strtoull(optarg, &end, 10); break;
        case 'e': cfg.report_every = strtod(optarg, &end); break;
        case 'x': cfg.exit_after = strtoull(optarg, &end, 10); break;
        case 'C': cfg.tls_cert = optarg; break;
        case 'K': cfg.tls_key = optarg; break;
        case 'j': cfg.json = true; break;
        case 'v': cfg.verbose++; break;
        case 'h': sink_usage(stdout); return 0;
        default: sink_usage(stderr); return 2;
        }
        if (end != NULL && (*end != '\0' || end == optarg))
            bad = true;
    }
    if (bad || optind != argc || listen_at == NULL || cfg.report_every < 0 ||
        (cfg.tls_key != NULL && cfg.tls_cert == NULL) ||
        cfg.rcpt_4xx + cfg.rcpt_5xx > 100 || cfg.data_4xx + cfg.data_5xx > 100) {
        sink_usage(stderr);
        return 2;
    }
    if (bench_net_parse(listen_at, &cfg.addr, &cfg.addrlen) < 0) {
        fprintf(stderr, "sink: --listen %s: want a numeric HOST:PORT\n", listen_at);
        return 2;
    }
    if (cfg.keep != NULL && mkdir(cfg.keep, 0755) < 0 && errno != EEXIST) {
        fprintf(stderr, "sink: --keep %s: %s\n", cfg.keep, strerror(errno));
        return 2;
    }

    struct sink *s = xcalloc(1, sizeof(*s));
    s->cfg = &cfg;
    s->fsync_fd = -1;
    if (cfg.tls_cert != NULL) {
        char err[512];
        s->tls_ctx = bench_tls_server_ctx(cfg.tls_cert, cfg.tls_key ? cfg.tls_key : cfg.tls_cert,
                                          err, sizeof(err));
        if (s->tls_ctx == NULL) {
            fprintf(stderr, "sink: --tls-cert: %s\n", err);
            return 2;
        }
    }
    bench_histogram_init(&s->st.msgs_per_conn);
    if (cfg.fsync && cfg.keep == NULL) {
        const char *dir = cfg.fsync_dir ? cfg.fsync_dir : getenv("TMPDIR");
        if (dir == NULL)
            dir = "/var/tmp";
        /* Unnamed: the scratch data vanishes with the process. */
        s->fsync_fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
        if (s->fsync_fd < 0) {
            fprintf(stderr, "sink: --fsync scratch file in %s: %s\n", dir, strerror(errno));
            return 1;
        }
    }

    signal(SIGPIPE, SIG_IGN);
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    s->sigfd = signalfd(-1, &mask, SFD_CLOEXEC);

    s->lfd = sink_listen(s);
    if (s->lfd < 0) {
        fprintf(stderr, "sink: listen on %s: %s\n", listen_at, strerror(-s->lfd));
        return 1;
    }
    int ret = bench_ring_init(&s->ring, 4096);
    if (ret < 0) {
        fprintf(stderr, "sink: io_uring setup: %s\n", strerror(-ret));
        return 1;
    }
    s->t0 = s->last_report_t = bench_ring_now_us();
    sink_arm_accept(s);
    sink_arm_signal(s);
    sink_on_tick(s);
    if (cfg.report_every > 0)
        sink_arm_report(s);

    while (!s->done) {
        ret = io_uring_submit_and_wait(&s->ring, 1);
        if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY) {
            fprintf(stderr, "sink: io_uring_submit_and_wait: %s\n", strerror(-ret));
            return 1;
        }
        struct io_uring_cqe *cqe;
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&s->ring, head, cqe) {
            sink_on_cqe(s, cqe);
            seen++;
        }
        io_uring_cq_advance(&s->ring, seen);
        if (s->exiting && (s->sending == 0 || bench_ring_now_us() > s->exit_deadline))
            s->done = true;
    }
    sink_print_report(s, true);

    io_uring_queue_exit(&s->ring);
    for (uint32_t i = 0; i < s->nconns; i++) {
        struct sink_conn *c = s->conns[i];
        if (c->in_use && c->fd >= 0)
            close(c->fd);
        bench_tls_free(&c->tls);
        xfree(c->cin);
        xfree(c->tq);
        xfree(c->in);
        xfree(c->out);
        xfree(c->q);
        xfree(c->env);
        xfree(c->body);
        xfree(c);
    }
    xfree(s->conns);
    xfree(s->free_slots);
    close(s->lfd);
    if (s->fsync_fd >= 0)
        close(s->fsync_fd);
    bench_tls_ctx_free(s->tls_ctx);
    xfree(s);
    return 0;
}
