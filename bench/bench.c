/*
 * bench - ringmta-bench, the io_uring SMTP load generator.
 *
 * Threads: main parses options and builds the read-only run (addresses,
 * header template, one body filler per size class), then starts --threads
 * workers. Each worker owns one ring and its share of the sessions; workers
 * share only the run's atomics (message sequence, interrupt flag) and are
 * merged after they are joined.
 *
 * Invariants: one recv is armed per connected session and at most one send
 * (the client always waits for a reply before it writes again); a session's fd
 * is closed only once no SQE for it is in flight; every claimed message ends in
 * exactly one outcome (accepted, rejected, or lost to an I/O error).
 *
 * --starttls: after EHLO the session sends STARTTLS, runs the handshake over
 * memory BIOs (bench_tls: OpenSSL never touches the socket, the ring does the
 * I/O, a handshake is CPU on this thread and never waits), says EHLO again
 * and runs its transactions encrypted. Once TLS is on, plaintext goes out
 * only through the stream: records are appended to txq and sent from tx, the
 * two swapping when a send completes, so the buffer the kernel reads is never
 * written. Whatever arrived after the 220 to STARTTLS in the same read is
 * dropped (the reply injection of CVE-2021-38371). --tls-resume keeps the
 * sessions (tickets) each thread's connections got in a per-thread pool;
 * TLS 1.3 tickets are single use, so a connection takes one and puts back the
 * one it got.
 *
 * Hazards: --dump writes files synchronously from the worker (a test aid, not
 * for measuring). Latency end-of-data -> reply starts when the kernel has taken
 * the last byte of the message, so it includes nothing of our own send path.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "bench_histogram.h"
#include "bench_msg.h"
#include "bench_net.h"
#include "bench_reply.h"
#include "bench_ring.h"
#include "bench_tls.h"

#define BENCH_MAX_SIZES  16
#define BENCH_CODES      600   /* reply codes 0..599; 0 stands for "not a reply" */
#define BENCH_RBUF       4096
#define BENCH_TICK_US    100000
#define BENCH_BACKOFF_US 100000
#define BENCH_MAX_CONNECT_FAILURES 10

/* Where in the session a reply or an I/O error happened. */
enum bench_stage {
    STAGE_CONNECT,
    STAGE_BANNER,
    STAGE_EHLO,
    STAGE_STARTTLS,
    STAGE_TLS,
    STAGE_MAIL,
    STAGE_RCPT,
    STAGE_DATA,
    STAGE_EOD,
    STAGE_RSET,
    STAGE_QUIT,
    STAGE_COUNT,
};

static const char *const bench_stage_names[STAGE_COUNT] = {
    "connect", "banner", "ehlo", "starttls", "tls", "mail", "rcpt", "data", "eod", "rset", "quit",
};

/* Session states. The reply-waiting states map to the stage the reply answers. */
enum bench_state {
    S_IDLE,
    S_BACKOFF,    /* timer armed, then connect */
    S_CONNECTING,
    S_BANNER,
    S_EHLO,
    S_STARTTLS,   /* waiting for the 220 to STARTTLS */
    S_TLS,        /* handshake in progress */
    S_MAIL,
    S_RCPT,
    S_DATA,
    S_EOD,        /* message sent (or being sent), waiting for the final reply */
    S_RSET,
    S_QUIT,
    S_QUIT_EOF,   /* 221 seen, waiting for the server to close first */
    S_WAIT_RATE,  /* --rate: timer armed until this session's slot */
    S_CLOSING,
    S_DONE,
};

static const char *const bench_state_names[] = {
    "idle", "backoff", "connecting", "banner", "ehlo", "starttls", "tls", "mail", "rcpt", "data",
    "eod", "rset", "quit", "quit-eof", "wait-rate", "closing", "done",
};

enum bench_op {
    OP_IGNORE, /* cancellations: nothing to do when they complete */
    OP_CONNECT,
    OP_RECV,
    OP_SEND,
    OP_TIMER,
    OP_TICK,
};

enum bench_after_close {
    AFTER_RECONNECT,
    AFTER_BACKOFF,
    AFTER_DONE,
};

struct bench_size {
    size_t size;
    unsigned weight;
    struct bench_msg_filler filler;
};

/* The run: immutable once the workers start, except the atomics. */
struct bench_run {
    struct sockaddr_storage addr;
    socklen_t addrlen;
    const char *target;
    unsigned sessions;
    unsigned threads;
    uint64_t messages;       /* 0 with --duration */
    double duration;         /* seconds, 0 with --messages */
    struct bench_size sizes[BENCH_MAX_SIZES];
    unsigned nsizes;
    unsigned weight_total;
    unsigned rcpts;
    const char *domain;
    const char *helo;
    char from[320];
    bool pipelining;
    bool reuse;
    double rate;             /* messages per second over all threads, 0 = no cap */
    bool json;
    const char *dump;
    bool starttls;
    bool tls_resume;
    SSL_CTX *tls_ctx;        /* --starttls: shared by the workers (OpenSSL locks it) */
    unsigned io_timeout_s;
    int verbose;
    struct bench_msg_header header;
    uint64_t t0;
    _Atomic uint64_t next_seq;
    _Atomic bool interrupted;
};

struct bench_stats {
    uint64_t attempted;
    uint64_t accepted;
    uint64_t rejected;
    uint64_t io_failed;
    uint64_t bytes;          /* raw message bytes of accepted messages */
    uint64_t connects;
    uint64_t tls_handshakes;   /* completed */
    uint64_t tls_resumed;      /* of those, resumed */
    uint64_t tls_failures;     /* handshakes that failed */
    uint64_t starttls_missing; /* EHLO replies without STARTTLS (--starttls) */
    uint64_t io_errors[STAGE_COUNT];
    uint64_t replies[STAGE_COUNT][BENCH_CODES];
    struct bench_histogram banner_us;
    struct bench_histogram eod_us;
    struct bench_histogram tls_us;       /* connect -> TLS established */
    struct bench_histogram handshake_us; /* ClientHello -> TLS established */
};

struct bench_worker;

struct bench_session {
    struct bench_worker *w;
    uint32_t idx;
    uint32_t gen;
    int fd;
    enum bench_state state;
    unsigned inflight;
    bool connect_armed;
    bool recv_armed;
    bool send_armed;
    bool timer_armed;
    bool closing;
    enum bench_after_close after_close;
    bool pipelining;         /* asked for and advertised */
    bool size_ext;
    bool rate_slot;          /* a --rate slot has been waited for */
    bool in_msg;
    bool mail_ok;
    bool have_seq;           /* --reuse off: the message was claimed at connect */
    uint64_t seq;
    unsigned size_idx;
    unsigned rcpt_replies;
    unsigned rcpt_ok;
    unsigned msgs_on_conn;
    unsigned connect_failures;
    unsigned tls_failures;   /* refused STARTTLS and failed handshakes in a row */
    bool tls_saved;          /* --tls-resume: this connection's session is pooled */
    struct bench_tls tls;    /* tls.ssl non-NULL from the 220 to STARTTLS on */
    char *tx;                /* ciphertext being sent */
    size_t tx_cap;
    char *txq;               /* ciphertext waiting for the send in flight */
    size_t txq_cap, txq_len;
    uint64_t t_tls_start;
    uint64_t t_connect;
    uint64_t t_eod;
    uint64_t t_io;           /* last completion, for --io-timeout */
    struct bench_reply reply;
    char *cmd;
    size_t cmd_cap;
    char *hdr;
    struct iovec iov[4];
    struct msghdr msg;
    size_t send_left;
    struct __kernel_timespec ts;
    char rbuf[BENCH_RBUF];
};

struct bench_worker {
    struct bench_run *run;
    unsigned id;
    struct io_uring ring;
    struct bench_session *sess;
    unsigned nsess;
    unsigned active;
    bool stopping;
    uint64_t deadline;
    double rate_next;        /* us, next --rate slot of this worker */
    double rate_interval;    /* us */
    uint64_t rng;
    SSL_SESSION **tls_pool;  /* --tls-resume: sessions to resume, newest last */
    unsigned tls_pool_n;
    uint64_t t_last_done;
    struct __kernel_timespec tick_ts;
    struct bench_stats st;
    pthread_t tid;
};

static volatile sig_atomic_t bench_signalled;

static void
bench_on_signal(int sig)
{
    (void)sig;
    bench_signalled = 1;
}

/* Title: splitmix64, the per-worker PRNG for size classes. */
static uint64_t
bench_rand(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static enum bench_stage
bench_stage_of(enum bench_state st)
{
    switch (st) {
    case S_BANNER: return STAGE_BANNER;
    case S_EHLO: return STAGE_EHLO;
    case S_STARTTLS: return STAGE_STARTTLS;
    case S_TLS: return STAGE_TLS;
    case S_MAIL: return STAGE_MAIL;
    case S_RCPT: return STAGE_RCPT;
    case S_DATA: return STAGE_DATA;
    case S_EOD: return STAGE_EOD;
    case S_RSET: return STAGE_RSET;
    case S_QUIT:
    case S_QUIT_EOF: return STAGE_QUIT;
    default: return STAGE_CONNECT;
    }
}

/* Title: the one place a session changes state (traced with -vv). */
static void
bench_enter(struct bench_session *s, enum bench_state next)
{
    if (s->w->run->verbose > 1)
        fprintf(stderr, "bench: w%u s%u %s -> %s\n", s->w->id, s->idx,
                bench_state_names[s->state], bench_state_names[next]);
    s->state = next;
}

static struct io_uring_sqe *
bench_sqe(struct bench_session *s, enum bench_op op)
{
    struct io_uring_sqe *sqe = bench_ring_sqe(&s->w->ring);
    io_uring_sqe_set_data64(sqe, bench_ring_udata(op, s->idx, s->gen));
    s->inflight++;
    return sqe;
}

static void bench_close(struct bench_session *s, enum bench_after_close after);
static void bench_io_error(struct bench_session *s, enum bench_stage stage, int err);
static void bench_next_message(struct bench_session *s);
static void bench_connect(struct bench_session *s);

static void
bench_arm_recv(struct bench_session *s)
{
    if (s->recv_armed || s->closing || s->fd < 0)
        return;
    struct io_uring_sqe *sqe = bench_sqe(s, OP_RECV);
    io_uring_prep_recv(sqe, s->fd, s->rbuf, sizeof(s->rbuf), 0);
    s->recv_armed = true;
}

static void
bench_submit_send(struct bench_session *s)
{
    struct io_uring_sqe *sqe = bench_sqe(s, OP_SEND);
    io_uring_prep_sendmsg(sqe, s->fd, &s->msg, MSG_NOSIGNAL);
    s->send_armed = true;
}

/* Title: TLS on: send the queued records unless a send is in flight. */
static void
bench_tls_flush(struct bench_session *s)
{
    if (s->send_armed || s->closing || s->fd < 0 || s->txq_len == 0)
        return;
    char *t = s->tx;
    size_t tc = s->tx_cap;
    s->tx = s->txq;
    s->tx_cap = s->txq_cap;
    s->txq = t;
    s->txq_cap = tc;
    s->iov[0].iov_base = s->tx;
    s->iov[0].iov_len = s->txq_len;
    s->send_left = s->txq_len;
    s->txq_len = 0;
    memset(&s->msg, 0, sizeof(s->msg));
    s->msg.msg_iov = s->iov;
    s->msg.msg_iovlen = 1;
    bench_submit_send(s);
}

/* Title: TLS on: queue whatever records the stream produced, and send them. */
static void
bench_tls_pump(struct bench_session *s)
{
    bench_tls_take(&s->tls, &s->txq, &s->txq_cap, &s->txq_len);
    bench_tls_flush(s);
}

/*
 * Title: send up to 3 pieces as one sendmsg; the pieces must stay valid until
 * done. With TLS on they are encrypted at once and need not stay.
 */
static void
bench_send(struct bench_session *s, const void *a, size_t alen, const void *b, size_t blen,
           const void *c, size_t clen)
{
    unsigned n = 0;
    const void *p[3] = {a, b, c};
    size_t l[3] = {alen, blen, clen};
    if (s->tls.done) {
        for (unsigned i = 0; i < 3; i++) {
            if (l[i] > 0 && bench_tls_write(&s->tls, p[i], l[i]) < 0) {
                bench_io_error(s, bench_stage_of(s->state), EPROTO);
                return;
            }
        }
        bench_tls_pump(s);
        return;
    }
    s->send_left = 0;
    for (unsigned i = 0; i < 3; i++) {
        if (l[i] == 0)
            continue;
        s->iov[n].iov_base = (void *)p[i];
        s->iov[n].iov_len = l[i];
        s->send_left += l[i];
        n++;
    }
    memset(&s->msg, 0, sizeof(s->msg));
    s->msg.msg_iov = s->iov;
    s->msg.msg_iovlen = n;
    bench_submit_send(s);
}

static void
bench_send_cmd(struct bench_session *s, size_t len)
{
    bench_send(s, s->cmd, len, NULL, 0, NULL, 0);
}

static void
bench_arm_timer(struct bench_session *s, uint64_t us)
{
    bench_ring_timespec(&s->ts, us);
    struct io_uring_sqe *sqe = bench_sqe(s, OP_TIMER);
    io_uring_prep_timeout(sqe, &s->ts, 0, 0);
    s->timer_armed = true;
}

/* Title: the message's one outcome. */
static void
bench_finish_msg(struct bench_session *s, int outcome)
{
    struct bench_worker *w = s->w;
    if (!s->in_msg)
        return;
    s->in_msg = false;
    if (outcome > 0) {
        w->st.accepted++;
        w->st.bytes += w->run->header.len + w->run->sizes[s->size_idx].filler.raw_len;
    } else if (outcome == 0) {
        w->st.rejected++;
    } else {
        w->st.io_failed++;
    }
    w->t_last_done = bench_ring_now_us();
}

static void
bench_io_error(struct bench_session *s, enum bench_stage stage, int err)
{
    s->w->st.io_errors[stage]++;
    if (s->w->run->verbose)
        fprintf(stderr, "bench: w%u s%u: %s: %s\n", s->w->id, s->idx, bench_stage_names[stage],
                strerror(err));
    bench_finish_msg(s, -1);
    bench_close(s, ++s->connect_failures > 2 ? AFTER_BACKOFF : AFTER_RECONNECT);
}

/* Title: --dump: the message as the recipient should see it, and its envelope. */
static void
bench_dump(struct bench_session *s)
{
    const struct bench_run *run = s->w->run;
    char path[4096];
    const struct bench_msg_filler *f = &run->sizes[s->size_idx].filler;

    snprintf(path, sizeof(path), "%s/%016" PRIx64 ".eml", run->dump, s->seq);
    FILE *fp = fopen(path, "we");
    if (fp == NULL) {
        fprintf(stderr, "bench: --dump %s: %s\n", path, strerror(errno));
        return;
    }
    fwrite(s->hdr, 1, run->header.len, fp);
    fwrite(f->raw, 1, f->raw_len, fp);
    fclose(fp);
    snprintf(path, sizeof(path), "%s/%016" PRIx64 ".env", run->dump, s->seq);
    fp = fopen(path, "we");
    if (fp == NULL)
        return;
    fprintf(fp, "mail-from <%s>\n", run->from);
    for (unsigned i = 1; i <= run->rcpts; i++)
        fprintf(fp, "rcpt <rcpt%u@%s>\n", i, run->domain);
    fclose(fp);
}

static size_t
bench_fmt_rcpt(struct bench_session *s, size_t off, unsigned i)
{
    return off + (size_t)snprintf(s->cmd + off, s->cmd_cap - off, "RCPT TO:<rcpt%u@%s>\r\n", i,
                                  s->w->run->domain);
}

/*
 * Title: MAIL (and with PIPELINING all of RCPT and DATA) for message seq.
 * RFC 2920 3.1: the client may send the whole group and must then wait, DATA
 * being the last command of a group.
 */
static void
bench_start_msg(struct bench_session *s, uint64_t seq)
{
    struct bench_worker *w = s->w;
    const struct bench_run *run = w->run;

    s->in_msg = true;
    s->seq = seq;
    s->mail_ok = false;
    s->rcpt_replies = s->rcpt_ok = 0;
    s->size_idx = 0;
    if (run->nsizes > 1) {
        unsigned pick = (unsigned)(bench_rand(&w->rng) % run->weight_total);
        while (pick >= run->sizes[s->size_idx].weight) {
            pick -= run->sizes[s->size_idx].weight;
            s->size_idx++;
        }
    }
    w->st.attempted++;
    s->msgs_on_conn++; /* --reuse off: one transaction per connection, whatever its fate */
    bench_msg_header_fill(&run->header, s->hdr, seq);
    if (run->dump != NULL)
        bench_dump(s);

    size_t n = (size_t)snprintf(s->cmd, s->cmd_cap, "MAIL FROM:<%s>", run->from);
    if (s->size_ext)
        n += (size_t)snprintf(s->cmd + n, s->cmd_cap - n, " SIZE=%zu",
                              run->header.len + run->sizes[s->size_idx].filler.raw_len);
    n += (size_t)snprintf(s->cmd + n, s->cmd_cap - n, "\r\n");
    if (s->pipelining) {
        for (unsigned i = 1; i <= run->rcpts; i++)
            n = bench_fmt_rcpt(s, n, i);
        n += (size_t)snprintf(s->cmd + n, s->cmd_cap - n, "DATA\r\n");
    }
    bench_enter(s, S_MAIL);
    bench_send_cmd(s, n);
}

static void
bench_send_quit(struct bench_session *s)
{
    size_t n = (size_t)snprintf(s->cmd, s->cmd_cap, "QUIT\r\n");
    bench_enter(s, S_QUIT);
    bench_send_cmd(s, n);
}

static bool
bench_budget_left(const struct bench_run *run)
{
    return run->messages == 0 || atomic_load(&run->next_seq) < run->messages;
}

/* Title: what a session does once it is free: wait for a rate slot, send, or quit. */
static void
bench_next_message(struct bench_session *s)
{
    struct bench_worker *w = s->w;
    struct bench_run *run = w->run;

    if (s->closing)
        return;
    if ((w->stopping && !s->have_seq) || atomic_load(&run->interrupted) ||
        (!run->reuse && s->msgs_on_conn > 0)) {
        bench_send_quit(s);
        return;
    }
    if (run->rate > 0 && !s->rate_slot) {
        double now = (double)bench_ring_now_us();
        /* Do not bank more than a second of slots after a stall. */
        if (w->rate_next < now - 1e6)
            w->rate_next = now;
        double slot = w->rate_next;
        w->rate_next += w->rate_interval;
        s->rate_slot = true;
        if (slot > now + 20) {
            bench_enter(s, S_WAIT_RATE);
            bench_arm_timer(s, (uint64_t)(slot - now));
            return;
        }
    }
    s->rate_slot = false;
    uint64_t seq = s->seq;
    if (s->have_seq) {
        s->have_seq = false;
    } else {
        seq = atomic_fetch_add(&run->next_seq, 1);
        if (run->messages > 0 && seq >= run->messages) {
            bench_send_quit(s); /* the budget is spent */
            return;
        }
    }
    bench_start_msg(s, seq);
}

/* Title: --tls-resume: keep a session for a later connection of this thread. */
static void
bench_tls_pool_put(struct bench_worker *w, SSL_SESSION *sess)
{
    if (sess == NULL)
        return;
    if (w->tls_pool_n == w->nsess) {
        /* Full: drop the oldest. */
        bench_tls_session_free(w->tls_pool[0]);
        memmove(w->tls_pool, w->tls_pool + 1, (w->nsess - 1) * sizeof(*w->tls_pool));
        w->tls_pool_n--;
    }
    w->tls_pool[w->tls_pool_n++] = sess;
}

/* Title: the newest pooled session (the caller frees it), or NULL. */
static SSL_SESSION *
bench_tls_pool_take(struct bench_worker *w)
{
    return w->tls_pool_n > 0 ? w->tls_pool[--w->tls_pool_n] : NULL;
}

/*
 * Title: the 220 to STARTTLS is in: start the handshake (the ClientHello).
 * Anything after the 220 in the same read is dropped by bench_feed.
 */
static void
bench_start_tls(struct bench_session *s)
{
    struct bench_worker *w = s->w;
    SSL_SESSION *resume = w->run->tls_resume ? bench_tls_pool_take(w) : NULL;
    int r = bench_tls_client(&s->tls, w->run->tls_ctx, resume);
    bench_tls_session_free(resume); /* the SSL holds its own reference */
    bench_enter(s, S_TLS);
    s->t_tls_start = bench_ring_now_us();
    if (r < 0 || bench_tls_handshake(&s->tls) == BENCH_TLS_ERROR) {
        w->st.tls_failures++;
        s->tls_failures++;
        if (w->run->verbose)
            fprintf(stderr, "bench: w%u s%u: TLS: %s\n", w->id, s->idx, s->tls.error);
        bench_io_error(s, STAGE_TLS, EPROTO);
        return;
    }
    bench_tls_pump(s);
}

/* Title: the handshake is done: count it, then EHLO again (RFC 3207 4.2). */
static void
bench_tls_established(struct bench_session *s)
{
    struct bench_worker *w = s->w;
    uint64_t now = bench_ring_now_us();
    w->st.tls_handshakes++;
    if (bench_tls_resumed(&s->tls))
        w->st.tls_resumed++;
    bench_histogram_record(&w->st.tls_us, now - s->t_connect);
    bench_histogram_record(&w->st.handshake_us, now - s->t_tls_start);
    s->tls_failures = 0;
    s->tls_saved = false;
    if (w->run->verbose > 1)
        fprintf(stderr, "bench: w%u s%u: %s%s\n", w->id, s->idx, bench_tls_version(&s->tls),
                bench_tls_resumed(&s->tls) ? ", resumed" : "");
    bench_enter(s, S_EHLO);
    bench_send_cmd(s, (size_t)snprintf(s->cmd, s->cmd_cap, "EHLO %s\r\n", w->run->helo));
}

static void
bench_count_reply(struct bench_session *s, int code)
{
    s->w->st.replies[bench_stage_of(s->state)][code < BENCH_CODES ? code : 0]++;
}

/* Title: one complete reply, interpreted by the state that expects it. */
static void
bench_on_reply(struct bench_session *s, int code)
{
    struct bench_worker *w = s->w;
    const struct bench_run *run = w->run;
    bool ok = code / 100 == 2;
    uint64_t now = bench_ring_now_us();
    size_t n;

    bench_count_reply(s, code);
    /* RFC 5321 3.8: 421 may come at any time; the server then closes. */
    if (code == 421 && s->state != S_QUIT && s->state != S_QUIT_EOF) {
        if (s->state == S_BANNER)
            bench_histogram_record(&w->st.banner_us, now - s->t_connect);
        bench_finish_msg(s, 0);
        bench_close(s, AFTER_RECONNECT);
        return;
    }
    switch (s->state) {
    case S_BANNER:
        bench_histogram_record(&w->st.banner_us, now - s->t_connect);
        if (!ok) {
            bench_close(s, AFTER_BACKOFF);
            return;
        }
        s->connect_failures = 0;
        n = (size_t)snprintf(s->cmd, s->cmd_cap, "EHLO %s\r\n", run->helo);
        bench_enter(s, S_EHLO);
        bench_send_cmd(s, n);
        return;
    case S_EHLO:
        if (!ok) {
            bench_close(s, AFTER_BACKOFF);
            return;
        }
        if (run->starttls && s->tls.ssl == NULL) {
            if (!(s->reply.ext & BENCH_REPLY_EXT_STARTTLS)) {
                /* Asked for TLS, not offered: an error, and this session ends. */
                w->st.io_errors[STAGE_STARTTLS]++;
                w->st.starttls_missing++;
                if (run->verbose)
                    fprintf(stderr, "bench: w%u s%u: %s does not offer STARTTLS\n", w->id,
                            s->idx, run->target);
                bench_close(s, AFTER_DONE);
                return;
            }
            bench_enter(s, S_STARTTLS);
            bench_send_cmd(s, (size_t)snprintf(s->cmd, s->cmd_cap, "STARTTLS\r\n"));
            return;
        }
        if (s->tls.done && run->tls_resume && !s->tls_saved) {
            /* TLS 1.3: the ticket came after the handshake, before this reply. */
            bench_tls_pool_put(w, bench_tls_session(&s->tls));
            s->tls_saved = true;
        }
        s->pipelining = run->pipelining && (s->reply.ext & BENCH_REPLY_EXT_PIPELINING);
        s->size_ext = (s->reply.ext & BENCH_REPLY_EXT_SIZE) != 0;
        bench_next_message(s);
        return;
    case S_STARTTLS:
        if (code != 220) {
            /* 454 and the like: counted with the replies; try again later. */
            s->tls_failures++;
            bench_close(s, AFTER_BACKOFF);
            return;
        }
        bench_start_tls(s);
        return;
    case S_MAIL:
        s->mail_ok = ok;
        if (!ok && !s->pipelining) {
            bench_finish_msg(s, 0);
            bench_next_message(s);
            return;
        }
        bench_enter(s, S_RCPT);
        if (!s->pipelining)
            bench_send_cmd(s, bench_fmt_rcpt(s, 0, 1));
        return;
    case S_RCPT:
        s->rcpt_replies++;
        if (ok)
            s->rcpt_ok++;
        if (s->rcpt_replies < run->rcpts) {
            if (!s->pipelining)
                bench_send_cmd(s, bench_fmt_rcpt(s, 0, s->rcpt_replies + 1));
            return;
        }
        if (s->pipelining) {
            bench_enter(s, S_DATA);
        } else if (s->rcpt_ok > 0) {
            bench_enter(s, S_DATA);
            bench_send_cmd(s, (size_t)snprintf(s->cmd, s->cmd_cap, "DATA\r\n"));
        } else {
            bench_finish_msg(s, 0);
            bench_enter(s, S_RSET);
            bench_send_cmd(s, (size_t)snprintf(s->cmd, s->cmd_cap, "RSET\r\n"));
        }
        return;
    case S_DATA:
        if (code == 354) {
            const struct bench_msg_filler *f = &run->sizes[s->size_idx].filler;
            bench_enter(s, S_EOD);
            s->t_eod = now; /* refined when the send completes */
            bench_send(s, s->hdr, run->header.len, f->stuffed, f->stuffed_len, ".\r\n", 3);
            return;
        }
        bench_finish_msg(s, 0);
        if (s->mail_ok) {
            /* The transaction may still be open on the server side. */
            bench_enter(s, S_RSET);
            bench_send_cmd(s, (size_t)snprintf(s->cmd, s->cmd_cap, "RSET\r\n"));
        } else {
            bench_next_message(s);
        }
        return;
    case S_EOD:
        bench_histogram_record(&w->st.eod_us, now - s->t_eod);
        bench_finish_msg(s, ok ? 1 : 0);
        bench_next_message(s);
        return;
    case S_RSET:
        bench_next_message(s);
        return;
    case S_QUIT:
        bench_enter(s, S_QUIT_EOF);
        return;
    default:
        /* A reply nobody asked for: the peer is out of step. */
        bench_io_error(s, bench_stage_of(s->state), EPROTO);
        return;
    }
}

/*
 * Title: plaintext replies, from the socket or decrypted. Stops at the 220 to
 * STARTTLS: what followed it in plaintext is dropped, not read as a reply.
 */
static void
bench_feed(struct bench_session *s, const char *buf, size_t len)
{
    size_t off = 0;
    while (off < len && !s->closing && s->state != S_TLS) {
        size_t used;
        enum bench_reply_event ev = bench_reply_feed(&s->reply, buf + off, len - off, &used);
        off += used;
        if (ev == BENCH_REPLY_AGAIN)
            break;
        if (ev == BENCH_REPLY_ERROR) {
            bench_count_reply(s, 0);
            bench_io_error(s, bench_stage_of(s->state), EPROTO);
            return;
        }
        bench_on_reply(s, s->reply.code);
    }
}

/*
 * Title: TLS on: n octets of ciphertext in rbuf. Advances the handshake, then
 * decrypts into rbuf (its ciphertext is in the stream by then) and reads the
 * replies.
 */
static void
bench_tls_input(struct bench_session *s, size_t n)
{
    bench_tls_feed(&s->tls, s->rbuf, n);
    if (!s->tls.done) {
        enum bench_tls_result r = bench_tls_handshake(&s->tls);
        bench_tls_pump(s);
        if (r == BENCH_TLS_AGAIN)
            return;
        if (r != BENCH_TLS_DONE) {
            s->w->st.tls_failures++;
            s->tls_failures++;
            if (s->w->run->verbose)
                fprintf(stderr, "bench: w%u s%u: TLS handshake: %s\n", s->w->id, s->idx,
                        s->tls.error);
            bench_io_error(s, STAGE_TLS, EPROTO);
            return;
        }
        bench_tls_established(s);
    }
    while (!s->closing) {
        long got = bench_tls_read(&s->tls, s->rbuf, sizeof(s->rbuf));
        if (got > 0) {
            bench_feed(s, s->rbuf, (size_t)got);
            continue;
        }
        if (got == BENCH_TLS_CLOSED && (s->state == S_QUIT_EOF || s->state == S_QUIT)) {
            bench_close(s, AFTER_RECONNECT); /* close_notify after the 221 */
            return;
        }
        if (got < 0) {
            if (s->w->run->verbose)
                fprintf(stderr, "bench: w%u s%u: TLS read: %s\n", s->w->id, s->idx,
                        got == BENCH_TLS_CLOSED ? "close_notify" : s->tls.error);
            bench_io_error(s, bench_stage_of(s->state),
                           got == BENCH_TLS_CLOSED ? ECONNRESET : EPROTO);
            return;
        }
        break;
    }
    if (!s->closing)
        bench_tls_pump(s); /* what reading produced (nothing, usually) */
}

static void
bench_on_recv(struct bench_session *s, int res)
{
    s->recv_armed = false;
    if (s->closing)
        return;
    if (res <= 0) {
        if (res == 0 && (s->state == S_QUIT_EOF || s->state == S_QUIT)) {
            bench_close(s, AFTER_RECONNECT);
            return;
        }
        bench_io_error(s, bench_stage_of(s->state), res == 0 ? ECONNRESET : -res);
        return;
    }
    if (s->tls.ssl != NULL)
        bench_tls_input(s, (size_t)res);
    else
        bench_feed(s, s->rbuf, (size_t)res);
    bench_arm_recv(s);
}

static void
bench_on_send(struct bench_session *s, int res)
{
    s->send_armed = false;
    if (s->closing)
        return;
    if (res <= 0) {
        bench_io_error(s, bench_stage_of(s->state), res == 0 ? EPIPE : -res);
        return;
    }
    size_t done = (size_t)res;
    s->send_left -= done;
    if (s->send_left == 0) {
        if (s->tls.ssl != NULL)
            bench_tls_flush(s);
        /* The message is out once nothing of it is left to send. */
        if (s->state == S_EOD && !s->send_armed)
            s->t_eod = bench_ring_now_us();
        return;
    }
    /* Short send: drop what went out and send the rest. */
    while (done > 0) {
        struct iovec *v = s->msg.msg_iov;
        if (done >= v->iov_len) {
            done -= v->iov_len;
            s->msg.msg_iov++;
            s->msg.msg_iovlen--;
        } else {
            v->iov_base = (char *)v->iov_base + done;
            v->iov_len -= done;
            done = 0;
        }
    }
    bench_submit_send(s);
}

static void
bench_connect(struct bench_session *s)
{
    struct bench_worker *w = s->w;
    struct bench_run *run = w->run;

    /*
     * --reuse off with --messages: claim the message before connecting, or
     * sessions racing for the last messages open connections they cannot use.
     */
    if (!run->reuse && run->messages > 0 && !s->have_seq && !w->stopping) {
        s->seq = atomic_fetch_add(&run->next_seq, 1);
        s->have_seq = s->seq < run->messages;
    }
    if ((w->stopping && !s->have_seq) || !(bench_budget_left(run) || s->have_seq) ||
        atomic_load(&run->interrupted)) {
        bench_enter(s, S_DONE);
        w->active--;
        return;
    }
    s->fd = socket(run->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s->fd < 0) {
        w->st.io_errors[STAGE_CONNECT]++;
        s->connect_failures++;
        bench_enter(s, S_BACKOFF);
        bench_arm_timer(s, BENCH_BACKOFF_US);
        return;
    }
    bench_net_nodelay(s->fd);
    s->gen++;
    s->msgs_on_conn = 0;
    s->txq_len = 0;
    s->tls_saved = false;
    s->pipelining = false;
    s->size_ext = false;
    bench_reply_init(&s->reply);
    s->t_connect = s->t_io = bench_ring_now_us();
    w->st.connects++;
    bench_enter(s, S_CONNECTING);
    struct io_uring_sqe *sqe = bench_sqe(s, OP_CONNECT);
    io_uring_prep_connect(sqe, s->fd, (const struct sockaddr *)&run->addr, run->addrlen);
    s->connect_armed = true;
}

/* Title: finish a close once nothing is in flight, then do what was asked. */
static void
bench_close_done(struct bench_session *s)
{
    struct bench_worker *w = s->w;
    if (!s->closing || s->inflight > 0)
        return;
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
    bench_tls_free(&s->tls);
    s->closing = false;
    s->connect_armed = s->recv_armed = s->send_armed = s->timer_armed = false;
    enum bench_after_close after = s->after_close;
    if (s->connect_failures >= BENCH_MAX_CONNECT_FAILURES) {
        fprintf(stderr, "bench: w%u s%u: giving up after %u failed connections\n", w->id, s->idx,
                s->connect_failures);
        after = AFTER_DONE;
    } else if (s->tls_failures >= BENCH_MAX_CONNECT_FAILURES) {
        fprintf(stderr, "bench: w%u s%u: giving up after %u failed STARTTLS/handshakes\n", w->id,
                s->idx, s->tls_failures);
        after = AFTER_DONE;
    }
    if (after == AFTER_DONE || (w->stopping && !s->have_seq) ||
        atomic_load(&w->run->interrupted)) {
        bench_enter(s, S_DONE);
        w->active--;
    } else if (after == AFTER_BACKOFF) {
        bench_enter(s, S_BACKOFF);
        unsigned k = s->connect_failures < 10 ? s->connect_failures : 10;
        bench_arm_timer(s, BENCH_BACKOFF_US * (k ? k : 1));
    } else {
        bench_connect(s);
    }
}

/*
 * Title: start closing. shutdown() makes the armed recv complete; anything
 * else on the fd and the timer are cancelled. The fd is closed by
 * bench_close_done once the last completion is in; callers run it after the
 * handler that closed returns, so no handler sees its session reconnect
 * under it.
 */
static void
bench_close(struct bench_session *s, enum bench_after_close after)
{
    if (s->closing)
        return;
    bench_enter(s, S_CLOSING);
    s->closing = true;
    s->after_close = after;
    if (s->fd >= 0)
        shutdown(s->fd, SHUT_RDWR);
    struct io_uring *ring = &s->w->ring;
    uint64_t ignore = bench_ring_udata(OP_IGNORE, s->idx, s->gen);
    if (s->connect_armed)
        bench_ring_cancel(ring, bench_ring_udata(OP_CONNECT, s->idx, s->gen), ignore);
    if (s->recv_armed)
        bench_ring_cancel(ring, bench_ring_udata(OP_RECV, s->idx, s->gen), ignore);
    if (s->send_armed)
        bench_ring_cancel(ring, bench_ring_udata(OP_SEND, s->idx, s->gen), ignore);
    if (s->timer_armed)
        bench_ring_cancel(ring, bench_ring_udata(OP_TIMER, s->idx, s->gen), ignore);
}

static void
bench_on_timer(struct bench_session *s)
{
    s->timer_armed = false;
    if (s->closing)
        return;
    if (s->state == S_BACKOFF)
        bench_connect(s);
    else if (s->state == S_WAIT_RATE)
        bench_next_message(s);
}

/* Title: the worker tick: --duration deadline, interrupt, stuck sessions. */
static void
bench_on_tick(struct bench_worker *w)
{
    uint64_t now = bench_ring_now_us();
    const struct bench_run *run = w->run;

    if ((w->deadline && now >= w->deadline) || atomic_load(&run->interrupted))
        w->stopping = true;
    for (unsigned i = 0; i < w->nsess; i++) {
        struct bench_session *s = &w->sess[i];
        if (s->state == S_DONE || s->closing)
            continue;
        if (s->state == S_BACKOFF || s->state == S_WAIT_RATE)
            continue; /* the timer brings it back */
        if (run->io_timeout_s && now - s->t_io > (uint64_t)run->io_timeout_s * 1000000u)
            bench_io_error(s, bench_stage_of(s->state), ETIMEDOUT);
        else if (atomic_load(&run->interrupted) && s->state != S_QUIT && s->state != S_QUIT_EOF)
            bench_close(s, AFTER_DONE); /* Ctrl-C: do not wait for replies */
        if (s->closing)
            bench_close_done(s);
    }
    if (w->active > 0) {
        bench_ring_timespec(&w->tick_ts, BENCH_TICK_US);
        struct io_uring_sqe *sqe = bench_ring_sqe(&w->ring);
        io_uring_prep_timeout(sqe, &w->tick_ts, 0, 0);
        io_uring_sqe_set_data64(sqe, bench_ring_udata(OP_TICK, 0, 0));
    }
}

static void
bench_on_cqe(struct bench_worker *w, struct io_uring_cqe *cqe)
{
    uint64_t ud = io_uring_cqe_get_data64(cqe);
    unsigned op = bench_ring_udata_op(ud);

    if (op == OP_IGNORE)
        return;
    if (op == OP_TICK) {
        bench_on_tick(w);
        return;
    }
    struct bench_session *s = &w->sess[bench_ring_udata_slot(ud)];
    if (bench_ring_udata_gen(ud) != (s->gen & 0xffffff)) {
        fprintf(stderr, "bench: stale completion op %u slot %u\n", op, s->idx);
        return;
    }
    s->inflight--;
    if (op != OP_TIMER)
        s->t_io = bench_ring_now_us();
    switch (op) {
    case OP_CONNECT:
        s->connect_armed = false;
        if (s->closing)
            break;
        if (cqe->res < 0) {
            s->connect_failures++;
            w->st.io_errors[STAGE_CONNECT]++;
            if (w->run->verbose)
                fprintf(stderr, "bench: connect %s: %s\n", w->run->target, strerror(-cqe->res));
            bench_close(s, AFTER_BACKOFF);
            break;
        }
        bench_enter(s, S_BANNER);
        bench_arm_recv(s);
        break;
    case OP_RECV:
        bench_on_recv(s, cqe->res);
        break;
    case OP_SEND:
        bench_on_send(s, cqe->res);
        break;
    case OP_TIMER:
        bench_on_timer(s);
        break;
    default:
        break;
    }
    if (s->closing)
        bench_close_done(s);
}

static void *
bench_worker_main(void *arg)
{
    struct bench_worker *w = arg;
    struct bench_run *run = w->run;

    /* SINGLE_ISSUER: the ring belongs to the thread that submits first. */
    int ret = bench_ring_init(&w->ring, 2 * w->nsess + 64 < 4096 ? 2 * w->nsess + 64 : 4096);
    if (ret < 0) {
        fprintf(stderr, "bench: io_uring setup: %s\n", strerror(-ret));
        exit(1);
    }
    if (run->duration > 0)
        w->deadline = run->t0 + (uint64_t)(run->duration * 1e6);
    if (run->rate > 0) {
        double share = run->rate * w->nsess / run->sessions;
        w->rate_interval = 1e6 / share;
        w->rate_next = (double)run->t0;
    }
    w->active = w->nsess;
    for (unsigned i = 0; i < w->nsess; i++)
        bench_connect(&w->sess[i]);
    bench_on_tick(w);

    while (w->active > 0) {
        ret = io_uring_submit_and_wait(&w->ring, 1);
        if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY) {
            fprintf(stderr, "bench: io_uring_submit_and_wait: %s\n", strerror(-ret));
            exit(1);
        }
        struct io_uring_cqe *cqe;
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&w->ring, head, cqe) {
            bench_on_cqe(w, cqe);
            seen++;
        }
        io_uring_cq_advance(&w->ring, seen);
        if (bench_signalled)
            atomic_store(&run->interrupted, true);
    }
    io_uring_queue_exit(&w->ring);
    return NULL;
}

static void
bench_usage(FILE *fp)
{
    fprintf(fp,
            "usage: ringmta-bench --target HOST:PORT [options]\n"
            "  --sessions N          concurrent SMTP sessions (default 10)\n"
            "  --threads N           worker threads, one ring each (default 1)\n"
            "  --messages N          send N messages in total (default 1000)\n"
            "  --duration SEC        or: run for SEC seconds\n"
            "  --size BYTES          message size (k/m suffixes; default 1024)\n"
            "  --size-dist LIST      sizes with weights: \"1024:70,10240:25,102400:5\"\n"
            "  --rcpts N             recipients per message: rcpt1@DOMAIN.. (default 1)\n"
            "  --domain NAME         recipient domain (default example.test)\n"
            "  --from ADDR           envelope sender (default bench@DOMAIN)\n"
            "  --helo NAME           EHLO name (default ringmta-bench.test)\n"
            "  --pipelining on|off   MAIL/RCPT/DATA in one write (default on)\n"
            "  --reuse on|off        off: a new connection per message (default on)\n"
            "  --rate MSGS_PER_SEC   cap the send rate, spread evenly (default none)\n"
            "  --io-timeout SEC      drop a session silent this long (default 30)\n"
            "  --dump DIR            save each message sent, un-stuffed, as DIR/<seq>.eml\n"
            "  --starttls            STARTTLS after EHLO (an error if not offered), EHLO again,\n"
            "                        then the transactions over TLS 1.2+; no certificate checks\n"
            "  --tls-resume          resume TLS sessions (a per-thread pool of tickets)\n"
            "  --json                machine-readable report on stdout\n"
            "  -v, --verbose         errors to stderr; twice: state transitions\n");
}

static bool
bench_parse_size(const char *s, size_t *out)
{
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s)
        return false;
    if (*end == 'k' || *end == 'K') {
        v *= 1024;
        end++;
    } else if (*end == 'm' || *end == 'M') {
        v *= 1024 * 1024;
        end++;
    }
    if (*end != '\0' || v > (1ull << 31))
        return false;
    *out = (size_t)v;
    return true;
}

static bool
bench_parse_onoff(const char *s, bool *out)
{
    if (strcmp(s, "on") == 0 || strcmp(s, "yes") == 0 || strcmp(s, "1") == 0)
        *out = true;
    else if (strcmp(s, "off") == 0 || strcmp(s, "no") == 0 || strcmp(s, "0") == 0)
        *out = false;
    else
        return false;
    return true;
}

/* Title: "SIZE:WEIGHT,SIZE:WEIGHT,..." into run->sizes. */
static bool
bench_parse_dist(struct bench_run *run, const char *text)
{
    char *copy = xstrdup(text), *save = NULL;
    run->nsizes = 0;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *colon = strchr(tok, ':');
        if (colon == NULL || run->nsizes == BENCH_MAX_SIZES) {
            xfree(copy);
            return false;
        }
        *colon = '\0';
        size_t size;
        char *end;
        unsigned long w = strtoul(colon + 1, &end, 10);
        if (!bench_parse_size(tok, &size) || *end != '\0' || w == 0 || w > 1000000) {
            xfree(copy);
            return false;
        }
        run->sizes[run->nsizes].size = size;
        run->sizes[run->nsizes].weight = (unsigned)w;
        run->nsizes++;
    }
    xfree(copy);
    return run->nsizes > 0;
}

static void
bench_print_hist_json(const char *name, const struct bench_histogram *h, bool comma)
{
    printf("\"%s\":{\"count\":%" PRIu64 ",\"min\":%" PRIu64 ",\"mean\":%.1f,\"p50\":%" PRIu64
           ",\"p90\":%" PRIu64 ",\"p99\":%" PRIu64 ",\"p99_9\":%" PRIu64 ",\"max\":%" PRIu64 "}%s",
           name, h->total, h->total ? h->min : 0, bench_histogram_mean(h),
           bench_histogram_percentile(h, 50), bench_histogram_percentile(h, 90),
           bench_histogram_percentile(h, 99), bench_histogram_percentile(h, 99.9), h->max,
           comma ? "," : "");
}

static void
bench_print_hist_text(const char *name, const struct bench_histogram *h)
{
    printf("  %-22s n=%" PRIu64 " p50=%" PRIu64 " p90=%" PRIu64 " p99=%" PRIu64
           " p99.9=%" PRIu64 " max=%" PRIu64 " us\n",
           name, h->total, bench_histogram_percentile(h, 50), bench_histogram_percentile(h, 90),
           bench_histogram_percentile(h, 99), bench_histogram_percentile(h, 99.9), h->max);
}

static void
bench_report(const struct bench_run *run, const struct bench_stats *st, double elapsed)
{
    double mps = elapsed > 0 ? (double)st->accepted / elapsed : 0;
    double mbps = elapsed > 0 ? (double)st->bytes / elapsed / 1e6 : 0;
    double hps = elapsed > 0 ? (double)st->tls_handshakes / elapsed : 0;
    /* Errors: 4xx/5xx and malformed replies at any stage, plus I/O errors. */
    uint64_t errors = 0, io_total = 0;
    for (unsigned g = 0; g < STAGE_COUNT; g++) {
        io_total += st->io_errors[g];
        for (unsigned c = 0; c < BENCH_CODES; c++)
            if (c == 0 || c >= 400)
                errors += st->replies[g][c];
    }
    errors += io_total;

    if (run->json) {
        printf("{\"target\":\"%s\",\"sessions\":%u,\"threads\":%u,\"pipelining\":%s,"
               "\"reuse\":%s,\"rcpts\":%u,\"rate\":%.1f,\"elapsed_s\":%.3f,",
               run->target, run->sessions, run->threads, run->pipelining ? "true" : "false",
               run->reuse ? "true" : "false", run->rcpts, run->rate, elapsed);
        printf("\"messages\":{\"attempted\":%" PRIu64 ",\"accepted\":%" PRIu64
               ",\"rejected\":%" PRIu64 ",\"io_failed\":%" PRIu64 "},",
               st->attempted, st->accepted, st->rejected, st->io_failed);
        printf("\"connections\":%" PRIu64 ",\"bytes\":%" PRIu64
               ",\"msg_per_s\":%.1f,\"mb_per_s\":%.3f,\"errors\":%" PRIu64 ",",
               st->connects, st->bytes, mps, mbps, errors);
        printf("\"starttls\":%s,\"tls_resume\":%s,\"tls_handshakes\":%" PRIu64
               ",\"tls_resumed\":%" PRIu64 ",\"tls_failures\":%" PRIu64
               ",\"starttls_missing\":%" PRIu64 ",\"handshakes_per_s\":%.1f,",
               run->starttls ? "true" : "false", run->tls_resume ? "true" : "false",
               st->tls_handshakes, st->tls_resumed, st->tls_failures, st->starttls_missing, hps);
        for (int pass = 0; pass < 2; pass++) {
            printf("\"%s\":{", pass == 0 ? "replies" : "error_replies");
            bool first_stage = true;
            for (unsigned g = 0; g < STAGE_COUNT; g++) {
                bool any = false;
                for (unsigned c = 0; c < BENCH_CODES; c++) {
                    if (st->replies[g][c] == 0 || (pass == 1 && c != 0 && c < 400))
                        continue;
                    if (!any)
                        printf("%s\"%s\":{", first_stage ? "" : ",", bench_stage_names[g]);
                    printf("%s\"%u\":%" PRIu64, any ? "," : "", c, st->replies[g][c]);
                    any = true;
                    first_stage = false;
                }
                if (any)
                    printf("}");
            }
            printf("},");
        }
        printf("\"io_errors\":{");
        for (unsigned g = 0; g < STAGE_COUNT; g++)
            printf("%s\"%s\":%" PRIu64, g ? "," : "", bench_stage_names[g], st->io_errors[g]);
        printf("},\"latency_us\":{");
        bench_print_hist_json("connect_banner", &st->banner_us, true);
        bench_print_hist_json("connect_tls", &st->tls_us, true);
        bench_print_hist_json("tls_handshake", &st->handshake_us, true);
        bench_print_hist_json("eod_reply", &st->eod_us, false);
        printf("}}\n");
        return;
    }

    printf("ringmta-bench: %s, %u sessions, %u thread%s, pipelining %s, reuse %s, %u rcpt%s%s\n",
           run->target, run->sessions, run->threads, run->threads == 1 ? "" : "s",
           run->pipelining ? "on" : "off", run->reuse ? "on" : "off", run->rcpts,
           run->rcpts == 1 ? "" : "s",
           run->starttls ? (run->tls_resume ? ", STARTTLS with resumption" : ", STARTTLS") : "");
    printf("  messages: %" PRIu64 " attempted, %" PRIu64 " accepted, %" PRIu64 " rejected, %" PRIu64
           " lost to I/O errors, in %.3f s over %" PRIu64 " connections\n",
           st->attempted, st->accepted, st->rejected, st->io_failed, elapsed, st->connects);
    printf("  throughput: %.1f msg/s, %.2f MB/s\n", mps, mbps);
    if (run->starttls)
        printf("  tls: %" PRIu64 " handshakes (%" PRIu64 " resumed%s), %.1f handshakes/s; %" PRIu64
               " failed, %" PRIu64 " EHLO replies without STARTTLS\n",
               st->tls_handshakes, st->tls_resumed, run->tls_resume ? "" : ", --tls-resume off",
               hps, st->tls_failures, st->starttls_missing);
    printf("  replies by stage:\n");
    for (unsigned g = 0; g < STAGE_COUNT; g++) {
        bool any = false;
        for (unsigned c = 0; c < BENCH_CODES; c++) {
            if (st->replies[g][c] == 0)
                continue;
            if (!any)
                printf("    %-8s", bench_stage_names[g]);
            printf(" %u%s:%" PRIu64, c, c == 0 ? "(malformed)" : "", st->replies[g][c]);
            any = true;
        }
        if (any)
            printf("\n");
    }
    if (io_total) {
        printf("  I/O errors by stage:");
        for (unsigned g = 0; g < STAGE_COUNT; g++)
            if (st->io_errors[g])
                printf(" %s:%" PRIu64, bench_stage_names[g], st->io_errors[g]);
        printf("\n");
    }
    printf("  errors: %" PRIu64 " (4xx/5xx/malformed replies and I/O errors)\n", errors);
    printf("  latency:\n");
    bench_print_hist_text("connect -> banner", &st->banner_us);
    if (run->starttls) {
        bench_print_hist_text("connect -> TLS up", &st->tls_us);
        bench_print_hist_text("TLS handshake", &st->handshake_us);
    }
    bench_print_hist_text("end of data -> reply", &st->eod_us);
}

int
main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"target", required_argument, NULL, 't'},
        {"sessions", required_argument, NULL, 's'},
        {"threads", required_argument, NULL, 'T'},
        {"messages", required_argument, NULL, 'n'},
        {"duration", required_argument, NULL, 'd'},
        {"size", required_argument, NULL, 'S'},
        {"size-dist", required_argument, NULL, 'D'},
        {"rcpts", required_argument, NULL, 'r'},
        {"domain", required_argument, NULL, 'o'},
        {"from", required_argument, NULL, 'f'},
        {"helo", required_argument, NULL, 'H'},
        {"pipelining", required_argument, NULL, 'p'},
        {"reuse", required_argument, NULL, 'u'},
        {"rate", required_argument, NULL, 'R'},
        {"io-timeout", required_argument, NULL, 'I'},
        {"dump", required_argument, NULL, 'w'},
        {"starttls", no_argument, NULL, 'X'},
        {"tls-resume", no_argument, NULL, 'Z'},
        {"json", no_argument, NULL, 'j'},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct bench_run *run = xcalloc(1, sizeof(*run));
    const char *from = NULL;
    bool bad = false;
    int opt;

    run->sessions = 10;
    run->threads = 1;
    run->messages = 1000;
    run->nsizes = 1;
    run->sizes[0].size = 1024;
    run->sizes[0].weight = 1;
    run->rcpts = 1;
    run->domain = "example.test";
    run->helo = "ringmta-bench.test";
    run->pipelining = true;
    run->reuse = true;
    run->io_timeout_s = 30;

    while ((opt = getopt_long(argc, argv, "vh", longopts, NULL)) != -1) {
        char *end = NULL;
        switch (opt) {
        case 't': run->target = optarg; break;
        case 's': run->sessions = (unsigned)strtoul(optarg, &end, 10); break;
        case 'T': run->threads = (unsigned)strtoul(optarg, &end, 10); break;
        case 'n':
            run->messages = strtoull(optarg, &end, 10);
            run->duration = 0;
            break;
        case 'd':
            run->duration = strtod(optarg, &end);
            run->messages = 0;
            break;
        case 'S':
            run->nsizes = 1;
            run->sizes[0].weight = 1;
            bad |= !bench_parse_size(optarg, &run->sizes[0].size);
            break;
        case 'D': bad |= !bench_parse_dist(run, optarg); break;
        case 'r': run->rcpts = (unsigned)strtoul(optarg, &end, 10); break;
        case 'o': run->domain = optarg; break;
        case 'f': from = optarg; break;
        case 'H': run->helo = optarg; break;
        case 'p': bad |= !bench_parse_onoff(optarg, &run->pipelining); break;
        case 'u': bad |= !bench_parse_onoff(optarg, &run->reuse); break;
        case 'R': run->rate = strtod(optarg, &end); break;
        case 'I': run->io_timeout_s = (unsigned)strtoul(optarg, &end, 10); break;
        case 'w': run->dump = optarg; break;
        case 'X': run->starttls = true; break;
        case 'Z': run->tls_resume = true; break;
        case 'j': run->json = true; break;
        case 'v': run->verbose++; break;
        case 'h': bench_usage(stdout); return 0;
        default: bench_usage(stderr); return 2;
        }
        if (end != NULL && (*end != '\0' || end == optarg))
            bad = true;
    }
    if (bad || optind != argc || run->target == NULL || run->sessions == 0 || run->threads == 0 ||
        run->rcpts == 0 || run->rcpts > 10000 || (run->messages == 0 && run->duration <= 0) ||
        run->rate < 0 || (run->tls_resume && !run->starttls)) {
        bench_usage(stderr);
        return 2;
    }
    if (run->starttls) {
        char err[256];
        run->tls_ctx = bench_tls_client_ctx(err, sizeof(err));
        if (run->tls_ctx == NULL) {
            fprintf(stderr, "bench: TLS: %s\n", err);
            return 1;
        }
    }
    if (bench_net_parse(run->target, &run->addr, &run->addrlen) < 0) {
        fprintf(stderr, "bench: --target %s: want a numeric HOST:PORT\n", run->target);
        return 2;
    }
    if (run->threads > run->sessions)
        run->threads = run->sessions;
    if (run->dump != NULL && mkdir(run->dump, 0755) < 0 && errno != EEXIST) {
        fprintf(stderr, "bench: --dump %s: %s\n", run->dump, strerror(errno));
        return 2;
    }
    snprintf(run->from, sizeof(run->from), "%s", from ? from : "");
    if (from == NULL)
        snprintf(run->from, sizeof(run->from), "bench@%s", run->domain);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, bench_on_signal);
    signal(SIGTERM, bench_on_signal);

    /* The message templates: one header layout, one filler per size class. */
    char date[64];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);
    uint32_t run_id = (uint32_t)getpid() ^ (uint32_t)now << 8;
    bench_msg_header_build(&run->header, run->from, run->rcpts, run->domain, run->helo, run_id,
                           date);
    for (unsigned i = 0; i < run->nsizes; i++) {
        size_t want = run->sizes[i].size;
        size_t body = want > run->header.len ? want - run->header.len : 0;
        bench_msg_filler_build(&run->sizes[i].filler, body);
        run->weight_total += run->sizes[i].weight;
    }

    struct bench_worker *workers = xcalloc(run->threads, sizeof(*workers));
    size_t cmd_cap = 256 + strlen(run->from) + (size_t)run->rcpts * (strlen(run->domain) + 32);
    for (unsigned t = 0; t < run->threads; t++) {
        struct bench_worker *w = &workers[t];
        w->run = run;
        w->id = t;
        w->nsess = run->sessions / run->threads + (t < run->sessions % run->threads);
        w->sess = xcalloc(w->nsess, sizeof(*w->sess));
        w->rng = 0x5eed0000u + t;
        w->tls_pool = xcalloc(w->nsess, sizeof(*w->tls_pool));
        bench_histogram_init(&w->st.banner_us);
        bench_histogram_init(&w->st.eod_us);
        bench_histogram_init(&w->st.tls_us);
        bench_histogram_init(&w->st.handshake_us);
        for (unsigned i = 0; i < w->nsess; i++) {
            struct bench_session *s = &w->sess[i];
            s->w = w;
            s->idx = i;
            s->fd = -1;
            s->cmd_cap = cmd_cap;
            s->cmd = xmalloc(cmd_cap);
            s->hdr = xmalloc(run->header.len);
        }
    }

    run->t0 = bench_ring_now_us();
    for (unsigned t = 0; t < run->threads; t++) {
        if (pthread_create(&workers[t].tid, NULL, bench_worker_main, &workers[t]) != 0) {
            fprintf(stderr, "bench: pthread_create failed\n");
            return 1;
        }
    }
    struct bench_stats *total = xcalloc(1, sizeof(*total));
    bench_histogram_init(&total->banner_us);
    bench_histogram_init(&total->eod_us);
    bench_histogram_init(&total->tls_us);
    bench_histogram_init(&total->handshake_us);
    uint64_t t_end = run->t0;
    for (unsigned t = 0; t < run->threads; t++) {
        struct bench_worker *w = &workers[t];
        pthread_join(w->tid, NULL);
        const struct bench_stats *st = &w->st;
        total->attempted += st->attempted;
        total->accepted += st->accepted;
        total->rejected += st->rejected;
        total->io_failed += st->io_failed;
        total->bytes += st->bytes;
        total->connects += st->connects;
        total->tls_handshakes += st->tls_handshakes;
        total->tls_resumed += st->tls_resumed;
        total->tls_failures += st->tls_failures;
        total->starttls_missing += st->starttls_missing;
        for (unsigned g = 0; g < STAGE_COUNT; g++) {
            total->io_errors[g] += st->io_errors[g];
            for (unsigned c = 0; c < BENCH_CODES; c++)
                total->replies[g][c] += st->replies[g][c];
        }
        bench_histogram_merge(&total->banner_us, &st->banner_us);
        bench_histogram_merge(&total->eod_us, &st->eod_us);
        bench_histogram_merge(&total->tls_us, &st->tls_us);
        bench_histogram_merge(&total->handshake_us, &st->handshake_us);
        if (w->t_last_done > t_end)
            t_end = w->t_last_done;
    }
    if (t_end == run->t0)
        t_end = bench_ring_now_us();
    bench_report(run, total, (double)(t_end - run->t0) / 1e6);
    uint64_t total_done = total->accepted + total->rejected + total->io_failed;

    for (unsigned t = 0; t < run->threads; t++) {
        for (unsigned i = 0; i < workers[t].nsess; i++) {
            bench_tls_free(&workers[t].sess[i].tls);
            xfree(workers[t].sess[i].cmd);
            xfree(workers[t].sess[i].hdr);
            xfree(workers[t].sess[i].tx);
            xfree(workers[t].sess[i].txq);
        }
        while (workers[t].tls_pool_n > 0)
            bench_tls_session_free(workers[t].tls_pool[--workers[t].tls_pool_n]);
        xfree(workers[t].tls_pool);
        xfree(workers[t].sess);
    }
    for (unsigned i = 0; i < run->nsizes; i++)
        bench_msg_filler_free(&run->sizes[i].filler);
    bench_msg_header_free(&run->header);
    bench_tls_ctx_free(run->tls_ctx);
    xfree(workers);
    xfree(total);
    /* Not every message could be tried (target down, sessions gave up): fail. */
    int rc = atomic_load(&run->interrupted) ? 130
             : run->messages > 0 && total_done < run->messages ? 1
                                                               : 0;
    xfree(run);
    return rc;
}
