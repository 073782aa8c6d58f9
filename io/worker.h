/*
 * worker - one thread, one io_uring, its listeners, its connections, its
 * spool append side and its share of the queue.
 *
 * Everything in struct worker is touched only by its own thread, except the
 * handoff inbox (any thread pushes) and the wake eventfd. Loop functions take
 * the worker they run on: there are no hidden globals.
 *
 * user_data of every SQE is a pointer with the operation in its low 4 bits
 * (objects are 16-byte aligned): see ud_pack()/ud_op()/ud_ptr().
 */
#ifndef RINGMTA_IO_WORKER_H
#define RINGMTA_IO_WORKER_H

#include <limits.h>
#include <liburing.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "address.h"
#include "route.h"
#include "config.h"
#include "handoff.h"
#include "queue.h"
#include "smtp_server.h"
#include "spool.h"
#include "authpool.h"
#include "tls.h"

struct clientlimit;

enum io_op {
    OP_ACCEPT = 1,      /* ptr: struct listener */
    OP_RECV,            /* ptr: struct conn (command phase, provided buffer) */
    OP_BODY_RECV,       /* ptr: struct conn (into the spool mapping) */
    OP_SEND,            /* ptr: struct conn */
    OP_CLOSE,           /* ptr: struct conn */
    OP_FSYNC,           /* ptr: struct spool_segment */
    OP_TICK,            /* ptr: struct worker */
    OP_WAKE,            /* ptr: struct worker (eventfd read) */
    OP_SEG_OPEN,        /* ptr: struct seg_prep; or struct seg_removal_slot: an unlink */
    OP_SEG_FALLOC,      /* ptr: struct seg_prep */
    OP_SEG_DIRSYNC,     /* ptr: struct seg_prep or struct seg_removal */
    OP_IGNORE,          /* completions nobody waits for */
    OP_DNS,             /* ptr: owned by io/dns.c, which dispatches it (dns_on_cqe) */
    OP_OUT,             /* ptr: struct out_op of an outbound connection (delivery.c) */
};

_Static_assert(OP_OUT <= 15, "operations must fit in the low 4 bits of user_data");

static inline uint64_t
ud_pack(enum io_op op, const void *p)
{
    return (uint64_t)(uintptr_t)p | (uint64_t)op;
}
static inline enum io_op
ud_op(uint64_t ud)
{
    return (enum io_op)(ud & 0xf);
}
static inline void *
ud_ptr(uint64_t ud)
{
    return (void *)(uintptr_t)(ud & ~(uint64_t)0xf);
}

/* Shared, immutable after start: what every worker reads. */
struct daemon {
    const struct config *cfg;
    struct relay_policy relay;
    char hostname[256];
    unsigned nworkers;
    struct worker **workers;
    struct clientlimit *limits;
    struct cidr_list limit_exceptions;  /* smtpd_client_event_limit_exceptions */
    atomic_bool stopping;
    uint64_t qid_floor;         /* highest qid recovered */
    uint64_t next_segment_seq;  /* first segment number not used in the spool */
    /* delivery routing, immutable after start */
    struct route_table *transport;
    struct route_policy *policy;
    struct route_credentials *smtp_credentials;  /* smtp_sasl_password_file */
    struct route_hop relayhost;
    bool relayhost_set;
    /* TLS: one server context per listen endpoint (NULL = no TLS there);
     * reloaded in place on SIGHUP */
    struct tls_server **listen_tls;
    struct tls_client *smtp_tls;        /* outbound STARTTLS, NULL = none */
    /* SMTP AUTH: password verification threads; NULL = AUTH not offered */
    struct authpool *auth;
};

struct listener {
    _Alignas(16) int fd;
    struct worker *w;
    enum listener_kind kind;
    struct tls_server *tls;     /* STARTTLS / implicit TLS context, or NULL */
    bool tls_required;          /* smtpd_tls_security_level = encrypt */
    bool armed;
};

struct seg_prep {
    _Alignas(16) int fd;
    uint64_t seq;
    bool busy;
    uint64_t retry_ms;          /* after a failure: not before this */
    char path[PATH_MAX];        /* read by the in-flight OPENAT */
};

/* Finished segments being removed: UNLINKAT each, then one FSYNC of the
 * directory, then the spool forgets them. One batch at a time. */
#define SEG_REMOVAL_BATCH 8
struct seg_removal_slot {
    _Alignas(16) struct spool_segment *seg;
    int res;                    /* the unlink's result */
    char path[PATH_MAX];        /* read by the in-flight UNLINKAT */
};
struct seg_removal {
    struct seg_removal_slot slot[SEG_REMOVAL_BATCH];
    size_t n;
    unsigned inflight;          /* unlinks not completed */
    bool busy;
    uint64_t next_ms;           /* next look for removable segments */
};

enum conn_phase {
    CONN_OPEN = 0,
    CONN_LINGER,        /* final reply sent, write side shut, draining input */
    CONN_CLOSING,       /* close submitted */
};

struct conn {
    _Alignas(16) struct worker *w;
    int fd;
    enum conn_phase phase;
    unsigned inflight;          /* SQEs not yet completed */
    bool recv_armed;
    bool send_armed;
    bool limit_held;            /* clientlimit_release at close */
    bool limit_exempt;          /* client in smtpd_client_event_limit_exceptions */
    bool in_commit_wait;
    bool in_dirty;
    bool close_submitted;
    /* TLS: once tls_on, every octet in and out goes through tls */
    bool tls_on;
    bool tls_start_pending;     /* STARTTLS: send the plaintext 220, then start */
    uint64_t tls_deadline_ms;   /* handshake must finish by then */
    struct tls_stream tls;
    struct listener *listener;
    uint64_t greet_at_ms;       /* greet pause: banner time, 0 = greeted */
    struct auth_request *auth_req;  /* a verification in the pool: the conn
                                       is not freed before it comes back */
    uint64_t linger_until_ms;
    struct smtp_outbuf sending; /* owned by the kernel while send_armed */
    size_t sent;
    struct spool_msg *msg;      /* message being received, or NULL */
    uint8_t *body_ptr;          /* where the armed body recv writes */
    struct spool_ticket ticket;
    struct envelope *pending_env; /* envelope of the message waiting for commit */
    uint64_t pending_qid;
    struct spool_extent *pending_body;  /* body extents of the message in commit */
    uint32_t pending_nbody;
    struct spool_holdset pending_holds; /* its segments, until queue_msg_new */
    uint32_t pending_flags;
    uint64_t pending_body_len;
    size_t received_len;        /* our Received: header at the body's start */
    const uint8_t *last_body;   /* the body's last octets, stored with the commit */
    size_t nlast_body;
    struct conn *next_commit;   /* worker's commit-wait list */
    struct conn *next_dirty;    /* worker's "has output / needs recv" list */
    struct conn *prev_all, *next_all;
    struct smtp_server smtp;
};

/* Provided buffers (a buffer ring): the kernel picks one only when data
 * arrives, so idle sessions hold none. */
struct buf_pool {
    struct io_uring_buf_ring *br;
    uint8_t *base;
    unsigned count;             /* a power of two */
    unsigned size;
    unsigned group;
};

struct worker {
    _Alignas(16) unsigned id;
    struct daemon *d;
    pthread_t thread;
    struct io_uring ring;
    bool ring_disabled;         /* created R_DISABLED; the thread enables it */
    struct buf_pool cmd_bufs;   /* command-phase receives (group 0) */
    struct buf_pool body_bufs;  /* body receives with spool_receive=buffered
                                   (group 1); unset otherwise */
    /* listeners (one SO_REUSEPORT socket per endpoint per worker) */
    struct listener *listeners;
    size_t nlisteners;
    /* connections */
    struct conn *all;
    size_t nconns;
    struct conn *dirty;
    struct conn *commit_wait;
    /* spool append side and segment preparation */
    struct spool *spool;
    struct seg_prep prep;
    struct seg_removal removal;
    uint64_t segments_removed;
    uint64_t segments_made_late;    /* spare made in the loop (worker_spare_now) */
    uint64_t spare_late_warned_ms;
    int seg_dir_fd;             /* "<spool_dir>/seg", fsync'd after creates */
    uint64_t last_qid;
    /* delivery (io/delivery.c) and the cross-worker hand-off */
    struct delivery *delivery;
    struct handoff *inbox;
    int wake_fd;
    uint64_t wake_buf;
    atomic_bool wake_pending;
    /* TLS: plaintext decrypted in command phase, and session output on its
     * way into SSL_write (bodies decrypt straight into the spool) */
    struct auth_inbox auth_inbox;   /* finished verifications (pool threads push) */
    uint8_t *tls_scratch;
    struct smtp_outbuf tls_plain;
    /* timers */
    struct __kernel_timespec tick_ts;
    uint64_t now_ms;            /* monotonic */
    uint64_t drain_deadline_ms; /* stop: give outbound transactions this long */
    uint64_t accept_warned_ms;  /* last "out of descriptors" warning */
    /* counters */
    uint64_t accepted_msgs;
    uint64_t fsyncs;
    uint64_t fsync_us_total;    /* submit -> completion, summed */
    uint64_t fsync_submit_us;   /* when the last fsync was submitted */
};

struct worker *worker_new(struct daemon *d, unsigned id, char *err, size_t errsize);
int worker_start(struct worker *w);
void worker_join(struct worker *w);
void worker_wake(struct worker *w);
struct worker *worker_free(struct worker *w);

/* conn.c */
void conn_accepted(struct worker *w, struct listener *l, int fd);
void conn_on_cqe(struct worker *w, enum io_op op, struct conn *c, struct io_uring_cqe *cqe);
void conn_flush(struct worker *w, struct conn *c);
void conn_mark_dirty(struct worker *w, struct conn *c);
void conn_tick(struct worker *w, struct conn *c);
void conn_committed(struct worker *w, struct conn *c, int res);
void conn_shutdown_all(struct worker *w);
void conn_auth_done(struct worker *w, struct conn *c, struct auth_request *req);

/* worker.c helpers used by conn.c */
struct io_uring_sqe *worker_sqe(struct worker *w);
uint64_t worker_next_qid(struct worker *w, uint64_t unix_ms);
/* Milliseconds: on a worker thread, the time of the event loop's last
 * wakeup (read once per batch); elsewhere, the clock itself. */
uint64_t worker_unix_ms(void);
uint64_t worker_mono_ms(void);
uint64_t worker_mono_us(void);   /* always the clock (fsync latency) */
void worker_message_accepted(struct worker *w, struct queue_msg *m);
/* The worker that delivers mail for a recipient domain: the owner of its
 * next hop when a relayhost or transport_map hop applies (so that hop's
 * limits hold daemon-wide), else of the domain. */
unsigned worker_owner(const struct daemon *d, const char *domain);
/* Where provided buffer bid's octets are; and handing it back once they
 * are consumed. */
uint8_t *buf_pool_data(const struct buf_pool *bp, unsigned bid);
void buf_pool_recycle(struct buf_pool *bp, unsigned bid);
#define WORKER_TLS_SCRATCH 16384   /* one TLS record of plaintext */


/* listener.c */
int listener_open(const struct listen_endpoint *ep, char *err, size_t errsize);

#endif
