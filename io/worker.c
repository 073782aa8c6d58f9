/*
 * worker - the per-core event loop: one thread, one io_uring.
 *
 * Owns: the ring, the provided-buffer ring for command-phase receives, this
 * worker's listening sockets, its connections, its spool append side (and the
 * asynchronous preparation of its next segment), its share of the queue, and
 * its hand-off inbox. Only this thread touches them, except worker_wake() and
 * handoff pushes, which any thread may do.
 *
 * Ordering (the durability promise): a message's 250 is sent only after an
 * fdatasync that was *submitted after* its COMMIT record was stored has
 * completed. Stores into the mapping are plain CPU writes done before the
 * fsync SQE is even prepared, so no io_uring link is needed between them;
 * the spool tracks which commit generation each in-flight fsync covers
 * (group commit: one fsync per segment per loop turn covers every message
 * that finished in that turn, and later ones wait for the next).
 */
#include "worker.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "clientlimit.h"
#include "delivery.h"
#include "log.h"
#include "logsink.h"
#include "segfile.h"
#include "smtp_reply.h"
#include "uring_compat.h"

#define WORKER_SQ_ENTRIES 4096
#define WORKER_BUF_COUNT 1024
#define WORKER_BUF_SIZE 4096
#define WORKER_BODY_BUF_COUNT 64
#define WORKER_BODY_BUF_SIZE (64u << 10)
#define WORKER_TICK_MS 100

uint64_t
worker_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/*
 * The event loop's clock, in milliseconds: a worker reads both clocks once
 * per wakeup (as nginx caches ngx_current_msec) instead of a few dozen
 * times per message; everything a batch of completions does sees the
 * time it woke up at. Other threads (main, recovery) read the clocks.
 */
static _Thread_local struct {
    bool cached;
    uint64_t mono_ms, unix_ms;
} worker_clock;

static uint64_t
worker_read_unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void
worker_clock_update(void)
{
    worker_clock.mono_ms = worker_mono_us() / 1000;
    worker_clock.unix_ms = worker_read_unix_ms();
    worker_clock.cached = true;
}

uint64_t
worker_mono_ms(void)
{
    return worker_clock.cached ? worker_clock.mono_ms : worker_mono_us() / 1000;
}

uint64_t
worker_unix_ms(void)
{
    return worker_clock.cached ? worker_clock.unix_ms : worker_read_unix_ms();
}

/*
 * Queue ids: [unix seconds:34][sequence:24][worker:6]. Unique across workers
 * (the low bits), increasing within a worker, and above every id recovered
 * from the spool (qid_floor), so a restart in the same second never reuses one.
 */
uint64_t
worker_next_qid(struct worker *w, uint64_t unix_ms)
{
    uint64_t base = ((unix_ms / 1000) << 30) | w->id;
    uint64_t next = w->last_qid + 64;
    w->last_qid = next > base ? next : base;
    return w->last_qid;
}

struct io_uring_sqe *
worker_sqe(struct worker *w)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&w->ring);
    if (sqe == NULL) {
        /* SQ full: push what we have to the kernel and take a fresh slot. */
        io_uring_submit(&w->ring);
        sqe = io_uring_get_sqe(&w->ring);
        if (sqe == NULL) {
            log_error("worker %u: submission queue exhausted", w->id);
            abort();
        }
    }
    return sqe;
}

/* --- provided buffers --------------------------------------------------- */

static int
buf_pool_setup(struct io_uring *ring, struct buf_pool *bp, unsigned group, unsigned count,
               unsigned size)
{
    int r = 0;
    bp->br = uring_compat_setup_buf_ring(ring, count, (int)group, &r);
    if (bp->br == NULL)
        return r;
    bp->group = group;
    bp->count = count;
    bp->size = size;
    bp->base = xmalloc((size_t)count * size);
    int mask = io_uring_buf_ring_mask(count);
    for (unsigned i = 0; i < count; i++)
        io_uring_buf_ring_add(bp->br, bp->base + (size_t)i * size, size, (unsigned short)i,
                              mask, (int)i);
    io_uring_buf_ring_advance(bp->br, (int)count);
    return 0;
}

static void
buf_pool_free(struct buf_pool *bp)
{
    if (bp->br != NULL)
        munmap(bp->br, bp->count * sizeof(struct io_uring_buf));
    xfree(bp->base);
}

uint8_t *
buf_pool_data(const struct buf_pool *bp, unsigned bid)
{
    return bp->base + (size_t)bid * bp->size;
}

void
buf_pool_recycle(struct buf_pool *bp, unsigned bid)
{
    io_uring_buf_ring_add(bp->br, buf_pool_data(bp, bid), bp->size, (unsigned short)bid,
                          io_uring_buf_ring_mask(bp->count), 0);
    io_uring_buf_ring_advance(bp->br, 1);
}

/* Command-phase receives take 4 KiB buffers. With spool_receive=buffered,
 * body receives take larger ones from their own group: each is written to
 * the segment and handed back as soon as its completion is handled, so a
 * few dozen serve every session of the worker. */
static int
worker_setup_buffers(struct worker *w)
{
    int r = buf_pool_setup(&w->ring, &w->cmd_bufs, 0, WORKER_BUF_COUNT, WORKER_BUF_SIZE);
    if (r == 0 && w->d->cfg->spool_receive == SPOOL_RECEIVE_BUFFERED)
        r = buf_pool_setup(&w->ring, &w->body_bufs, 1, WORKER_BODY_BUF_COUNT,
                           WORKER_BODY_BUF_SIZE);
    return r;
}

/* --- segments ----------------------------------------------------------- */

/* Maps a created, fallocated file and gives it to the spool. */
static int
worker_attach_segment(struct worker *w, int fd, uint64_t seq)
{
    size_t size = w->d->cfg->spool_segment_size;
    void *base = segfile_map_append(fd, size);
    if (base == MAP_FAILED) {
        int e = errno;
        close(fd);
        return -e;
    }
    if (spool_segment_attach(w->spool, seq, fd, base, size, segfile_salt()) == NULL) {
        munmap(base, size);
        close(fd);
        return -EINVAL;
    }
    return 0;
}

/*
 * Finished segments: once nothing holds a sealed segment (every message
 * with a record in it is retired), its file is unlinked through the ring,
 * the directory fsynced, and the spool forgets it. Looked for once a
 * second, and at once again after a full batch.
 */
#define WORKER_REMOVAL_INTERVAL_MS 1000

static void
worker_remove_segments(struct worker *w)
{
    struct seg_removal *rm = &w->removal;
    if (rm->busy || w->now_ms < rm->next_ms || atomic_load(&w->d->stopping))
        return;
    struct spool_segment *segs[SEG_REMOVAL_BATCH];
    rm->n = spool_removable(w->spool, segs, SEG_REMOVAL_BATCH);
    rm->next_ms = w->now_ms + (rm->n == SEG_REMOVAL_BATCH ? 0 : WORKER_REMOVAL_INTERVAL_MS);
    if (rm->n == 0)
        return;
    rm->busy = true;
    rm->inflight = (unsigned)rm->n;
    for (size_t i = 0; i < rm->n; i++) {
        struct seg_removal_slot *sl = &rm->slot[i];
        sl->seg = segs[i];
        spool_segment_path(sl->path, sizeof sl->path, w->d->cfg->spool_dir, sl->seg->worker,
                           sl->seg->seq);
        struct io_uring_sqe *sqe = worker_sqe(w);
        io_uring_prep_unlinkat(sqe, AT_FDCWD, sl->path, 0);
        io_uring_sqe_set_data64(sqe, ud_pack(OP_SEG_OPEN, sl));
    }
}

/* An unlink completed (OP_SEG_OPEN, its slot) or the directory's fsync
 * after them (OP_SEG_DIRSYNC). */
static void
worker_on_removal(struct worker *w, enum io_op op, void *p, int res)
{
    struct seg_removal *rm = &w->removal;
    if (op == OP_SEG_OPEN) {
        struct seg_removal_slot *sl = p;
        sl->res = res == -ENOENT ? 0 : res;
        if (--rm->inflight > 0)
            return;
        struct io_uring_sqe *sqe = worker_sqe(w);
        io_uring_prep_fsync(sqe, w->seg_dir_fd, 0);
        io_uring_sqe_set_data64(sqe, ud_pack(OP_SEG_DIRSYNC, rm));
        return;
    }
    for (size_t i = 0; i < rm->n; i++) {
        struct seg_removal_slot *sl = &rm->slot[i];
        const char *name = strrchr(sl->path, '/') ? strrchr(sl->path, '/') + 1 : sl->path;
        int err = sl->res < 0 ? sl->res : res;
        if (err < 0) {
            /* Kept, and marked removing so it is not tried again: the next
             * start removes what is finished. */
            log_error("worker %u: removing finished spool segment %s: %s", w->id, name,
                      strerror(-err));
            continue;
        }
        log_debug("spool: removed finished segment %s", name);
        w->segments_removed++;
        spool_segment_removed(w->spool, sl->seg);
        sl->seg = NULL;
    }
    rm->n = 0;
    rm->busy = false;
}

/* Made at once, blocking: the first segment, before the loop runs, and a
 * spare the ring did not deliver in time (worker_spare_now). */
static int
worker_create_segment_sync(struct worker *w)
{
    uint64_t seq = spool_next_segment_seq(w->spool);
    int fd;
    uint8_t *base;
    int r = segfile_create(w->d->cfg->spool_dir, w->id, seq, w->d->cfg->spool_segment_size,
                           &fd, &base);
    if (r < 0)
        return r;
    if (spool_segment_attach(w->spool, seq, fd, base, w->d->cfg->spool_segment_size,
                             segfile_salt())
        == NULL) {
        munmap(base, w->d->cfg->spool_segment_size);
        close(fd);
        return -EINVAL;
    }
    return 0;
}

/*
 * The spool's spare source (spool_set_spare_source): the ring's spare was
 * not ready when the current segment filled, so one is made here, blocking
 * this loop for an open, fallocate and two fsyncs, rather than answering 452
 * to a message we can store. A preparation still in flight on the ring is
 * dropped when it completes (its number is lower than this one's).
 */
static int
worker_spare_now(struct spool *sp, void *arg)
{
    struct worker *w = arg;
    (void)sp;
    int r = worker_create_segment_sync(w);
    if (r < 0) {
        log_error("worker %u: spare spool segment not ready, and creating one failed: %s",
                  w->id, strerror(-r));
        return r;
    }
    w->segments_made_late++;
    if (w->now_ms >= w->spare_late_warned_ms + 1000) {
        log_warn("worker %u: spare spool segment not ready when the current one filled; "
                 "made one at once (%llu so far; a larger spool_segment_size gives the "
                 "preparation more time; warned once a second)",
                 w->id, (unsigned long long)w->segments_made_late);
        w->spare_late_warned_ms = w->now_ms;
    }
    return 0;
}

/*
 * Loop path: prepares the spare segment through the ring, so rollover need
 * not block: OPENAT -> FALLOCATE (space is reserved, stores into the mapping
 * can never SIGBUS) -> FSYNC of the directory (the new name is durable before
 * any commit in the file is acknowledged) -> mmap and attach.
 */
static void
worker_prepare_segment(struct worker *w)
{
    if (w->prep.busy || !spool_wants_segment(w->spool))
        return;
    w->prep.busy = true;
    w->prep.seq = spool_next_segment_seq(w->spool);
    spool_segment_path(w->prep.path, sizeof w->prep.path,
                       w->d->cfg->spool_dir, w->id, w->prep.seq);
    struct io_uring_sqe *sqe = worker_sqe(w);
    io_uring_prep_openat(sqe, AT_FDCWD, w->prep.path,
                         O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    io_uring_sqe_set_data64(sqe, ud_pack(OP_SEG_OPEN, &w->prep));
}

static void
worker_prep_failed(struct worker *w, const char *step, int res)
{
    log_error("worker %u: preparing spool segment %llu: %s: %s", w->id,
              (unsigned long long)w->prep.seq, step, strerror(-res));
    if (w->prep.fd >= 0) {
        close(w->prep.fd);
        unlink(w->prep.path);
    }
    w->prep.fd = -1;
    w->prep.busy = false;   /* retried at the next tick */
    w->prep.retry_ms = w->now_ms + WORKER_TICK_MS;
}

static void
worker_on_prep(struct worker *w, enum io_op op, int res)
{
    struct io_uring_sqe *sqe;
    switch (op) {
    case OP_SEG_OPEN:
        if (res < 0) {
            w->prep.fd = -1;
            worker_prep_failed(w, "open", res);
            return;
        }
        w->prep.fd = res;
        sqe = worker_sqe(w);
        io_uring_prep_fallocate(sqe, res, 0, 0, (off_t)w->d->cfg->spool_segment_size);
        io_uring_sqe_set_data64(sqe, ud_pack(OP_SEG_FALLOC, &w->prep));
        return;
    case OP_SEG_FALLOC:
        if (res < 0) {
            worker_prep_failed(w, "fallocate", res);
            return;
        }
        sqe = worker_sqe(w);
        io_uring_prep_fsync(sqe, w->seg_dir_fd, 0);
        io_uring_sqe_set_data64(sqe, ud_pack(OP_SEG_DIRSYNC, &w->prep));
        return;
    case OP_SEG_DIRSYNC:
        if (res < 0) {
            worker_prep_failed(w, "fsync directory", res);
            return;
        }
        if (!spool_wants_segment(w->spool)) {
            /* worker_spare_now made a later one meanwhile: this number is
             * behind it, and segments are used in number order. */
            close(w->prep.fd);
            unlink(w->prep.path);
            res = 0;
        } else
            res = worker_attach_segment(w, w->prep.fd, w->prep.seq);
        w->prep.fd = -1;
        w->prep.busy = false;
        if (res < 0) {
            log_error("worker %u: mapping spool segment: %s", w->id, strerror(-res));
            unlink(w->prep.path);
        }
        return;
    default:
        return;
    }
}

/* --- group commit ------------------------------------------------------- */

/*
 * One fdatasync per segment with unsynced records and none in flight. After
 * each batch only where a client waits for its 250 (all: false); on the tick,
 * and while draining, every unsynced record (all: true), so the delivery
 * records nobody waits for at once are durable within a tick at the latest.
 */
static void
worker_submit_syncs(struct worker *w, bool all)
{
    struct spool_segment *segs[8];
    size_t n = all ? spool_sync_wanted(w->spool, segs, 8) : spool_sync_awaited(w->spool, segs, 8);
    for (size_t i = 0; i < n; i++) {
        struct io_uring_sqe *sqe = worker_sqe(w);
        io_uring_prep_fsync(sqe, segs[i]->fd, IORING_FSYNC_DATASYNC);
        io_uring_sqe_set_data64(sqe, ud_pack(OP_FSYNC, segs[i]));
        spool_sync_started(segs[i]);
        w->fsyncs++;
        w->fsync_submit_us = worker_mono_us();
    }
}

/* Acknowledges every waiting message whose ticket is now settled. */
static void
worker_settle_commits(struct worker *w)
{
    struct conn **pp = &w->commit_wait;
    while (*pp != NULL) {
        struct conn *c = *pp;
        int st = spool_ticket_state(&c->ticket);
        if (st == 0) {
            pp = &c->next_commit;
            continue;
        }
        *pp = c->next_commit;
        c->next_commit = NULL;
        c->in_commit_wait = false;
        conn_committed(w, c, st == 1 ? 0 : -EIO);
    }
}

static void
worker_on_fsync(struct worker *w, struct spool_segment *seg, int res)
{
    w->fsync_us_total += worker_mono_us() - w->fsync_submit_us;
    if (res < 0)
        log_error("worker %u: fdatasync of segment %llu failed: %s; segment retired",
                  w->id, (unsigned long long)seg->seq, strerror(-res));
    spool_sync_done(w->spool, seg, res);
    worker_settle_commits(w);
}

/* --- accepted messages and the hand-off ---------------------------------- */

struct worker_split_ctx {
    struct worker *w;
};

/* Same key as the scheduler's destination (scheduler_dest_for): a
 * destination lives on one worker only, or its max_connections and rates
 * would be per worker. */
unsigned
worker_owner(const struct daemon *d, const char *domain)
{
    struct route_hop hop;
    if (route_resolve(d->transport, d->relayhost_set ? &d->relayhost : NULL, domain, &hop) == 0
        && !hop.mx_lookup) {
        char key[ROUTE_HOST_MAX + 32];
        snprintf(key, sizeof key, "[%s]:%u", hop.host,
                 hop.port ? hop.port : d->cfg->smtp_port);
        return queue_domain_owner(key, d->nworkers);
    }
    return queue_domain_owner(domain, d->nworkers);
}

static void
worker_route_entry(void *arg, struct queue_entry *e)
{
    struct worker_split_ctx *ctx = arg;
    struct daemon *d = ctx->w->d;
    unsigned owner = worker_owner(d, e->domain);
    struct worker *dst = d->workers[owner];
    if (dst == ctx->w) {
        delivery_add(dst, e, worker_unix_ms());
        return;
    }
    if (handoff_push(dst->inbox, e) != 0) {
        /* Full: the owner is far behind. Deliver it from here rather than
         * wait; the destination's limits are then shared by two workers
         * for this message (XXX: a bounded overflow list would keep them
         * exact). */
        delivery_add(ctx->w, e, worker_unix_ms());
        return;
    }
    /* Always: the owner clears wake_pending before it drains, so a push it
     * may have missed sets the flag again and writes the eventfd. Waking only
     * when the ring "was empty" lost wake-ups (a push landing just after the
     * owner's drain loop waited for the next one, which might never come). */
    worker_wake(dst);
}

void
worker_message_accepted(struct worker *w, struct queue_msg *m)
{
    struct worker_split_ctx ctx = { w };
    w->accepted_msgs++;
    queue_msg_split(m, worker_route_entry, &ctx);
    queue_msg_put(m);
}

/* Verifications the pool finished for this worker's connections. */
static void
worker_drain_auth(struct worker *w)
{
    struct auth_request *req = auth_inbox_take_all(&w->auth_inbox);
    while (req != NULL) {
        struct auth_request *next = req->next;
        conn_auth_done(w, req->arg, req);
        req = next;
    }
}

static void
worker_drain_inbox(struct worker *w)
{
    worker_drain_auth(w);
    struct queue_entry *e;
    uint64_t now = worker_unix_ms();
    while ((e = handoff_pop(w->inbox)) != NULL) {
        if (w->delivery != NULL)
            delivery_add(w, e, now);
        else
            queue_entry_free(e);   /* shutting down: it is in the spool */
    }
}

void
worker_wake(struct worker *w)
{
    if (atomic_exchange(&w->wake_pending, true))
        return;
    uint64_t one = 1;
    ssize_t r = write(w->wake_fd, &one, sizeof one);
    (void)r;
}

static void
worker_arm_wake(struct worker *w)
{
    struct io_uring_sqe *sqe = worker_sqe(w);
    io_uring_prep_read(sqe, w->wake_fd, &w->wake_buf, sizeof w->wake_buf, 0);
    io_uring_sqe_set_data64(sqe, ud_pack(OP_WAKE, w));
}

/* --- the loop ----------------------------------------------------------- */

static void
worker_arm_accept(struct worker *w, struct listener *l)
{
    struct io_uring_sqe *sqe = worker_sqe(w);
    io_uring_prep_multishot_accept(sqe, l->fd, NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, ud_pack(OP_ACCEPT, l));
    l->armed = true;
}

static void
worker_arm_tick(struct worker *w)
{
    w->tick_ts.tv_sec = 0;
    w->tick_ts.tv_nsec = WORKER_TICK_MS * 1000000LL;
    struct io_uring_sqe *sqe = worker_sqe(w);
    io_uring_prep_timeout(sqe, &w->tick_ts, 0, 0);
    io_uring_sqe_set_data64(sqe, ud_pack(OP_TICK, w));
}

static void
worker_on_tick(struct worker *w)
{
    worker_drain_inbox(w);   /* belt and braces for the eventfd wake-up */
    for (struct conn *c = w->all, *next; c != NULL; c = next) {
        next = c->next_all;
        conn_tick(w, c);
    }
    worker_prepare_segment(w);
    worker_remove_segments(w);
    delivery_tick(w);
    worker_submit_syncs(w, true);
    /* While draining too: linger timeouts and deadlines run on the tick, and
     * without it a client that never closes would keep the daemon from
     * exiting. Sessions that were waiting for their commit when the stop
     * came get their 421 now. */
    if (atomic_load(&w->d->stopping)) {
        conn_shutdown_all(w);
        delivery_shutdown(w);
    } else
        for (size_t i = 0; i < w->nlisteners; i++)
            if (!w->listeners[i].armed && w->listeners[i].fd >= 0)
                worker_arm_accept(w, &w->listeners[i]);   /* paused on EMFILE */
    worker_arm_tick(w);
}

static void
worker_dispatch(struct worker *w, struct io_uring_cqe *cqe)
{
    uint64_t ud = io_uring_cqe_get_data64(cqe);
    enum io_op op = ud_op(ud);
    void *p = ud_ptr(ud);
    switch (op) {
    case OP_ACCEPT: {
        struct listener *l = p;
        bool pause = false;
        if (cqe->res >= 0) {
            if (atomic_load(&w->d->stopping))
                close(cqe->res);
            else
                conn_accepted(w, l, cqe->res);
        } else if (cqe->res != -ECANCELED) {
            /* Out of descriptors or memory: the connection stays in the
             * backlog, so an accept re-armed at once fails at once (a hot
             * loop flooding the log). Retry on the next tick instead. */
            pause = cqe->res == -EMFILE || cqe->res == -ENFILE || cqe->res == -ENOMEM
                    || cqe->res == -ENOBUFS;
            if (!pause || w->now_ms >= w->accept_warned_ms + 1000) {
                log_warn("worker %u: accept: %s%s", w->id, strerror(-cqe->res),
                         pause ? "; pausing accepts (warned once a second)" : "");
                w->accept_warned_ms = w->now_ms;
            }
        }
        if (!(cqe->flags & IORING_CQE_F_MORE)) {
            l->armed = false;
            if (!pause && !atomic_load(&w->d->stopping))
                worker_arm_accept(w, l);
        }
        return;
    }
    case OP_RECV:
    case OP_BODY_RECV:
    case OP_SEND:
    case OP_CLOSE:
        conn_on_cqe(w, op, p, cqe);
        return;
    case OP_FSYNC:
        worker_on_fsync(w, p, cqe->res);
        return;
    case OP_TICK:
        worker_on_tick(w);
        return;
    case OP_WAKE:
        atomic_store(&w->wake_pending, false);
        worker_drain_inbox(w);
        if (!atomic_load(&w->d->stopping))
            worker_arm_wake(w);
        return;
    case OP_SEG_OPEN:
    case OP_SEG_FALLOC:
    case OP_SEG_DIRSYNC:
        if (p == &w->prep)
            worker_on_prep(w, op, cqe->res);
        else
            worker_on_removal(w, op, p, cqe->res);
        return;
    case OP_IGNORE:
        return;
    case OP_DNS:
        delivery_on_dns_cqe(w, p, cqe);
        return;
    case OP_OUT:
        delivery_on_cqe(w, p, cqe);
        return;
    }
}

/* After a batch of completions: flush output, re-arm receives, and submit
 * one fsync per dirty segment (group commit). */
static void
worker_after_batch(struct worker *w)
{
    while (w->dirty != NULL) {
        struct conn *c = w->dirty;
        w->dirty = c->next_dirty;
        c->next_dirty = NULL;
        c->in_dirty = false;
        conn_flush(w, c);
    }
    /* Delivery may append status records, and retirements rewrite COMMITs:
     * before the syncs are submitted, so one fsync covers them all. */
    delivery_pump(w);
    spool_retire_pump(w->spool);
    worker_submit_syncs(w, atomic_load(&w->d->stopping));
    /* The spare segment as soon as the current one passes a quarter, not at the
     * next tick: under load the rest of a segment fills in less than a tick,
     * and without a spare the next message would get 452. */
    if (w->now_ms >= w->prep.retry_ms)   /* after a failure: the tick retries */
        worker_prepare_segment(w);
    /* durability=none settles at once; with fsync this is a no-op here. */
    if (w->commit_wait != NULL)
        worker_settle_commits(w);
    while (w->dirty != NULL) {
        struct conn *c = w->dirty;
        w->dirty = c->next_dirty;
        c->next_dirty = NULL;
        c->in_dirty = false;
        conn_flush(w, c);
    }
}

static void *
worker_main(void *arg)
{
    struct worker *w = arg;
    char name[16];
    snprintf(name, sizeof name, "w%u", w->id);
    logsink_set_thread_name(name);
    pthread_setname_np(pthread_self(), name);

    if (w->ring_disabled) {
        int r = uring_compat_enable_rings(&w->ring);
        if (r < 0) {
            log_error("worker %u: io_uring_enable_rings: %s", w->id, strerror(-r));
            return NULL;
        }
    }
    worker_clock_update();
    w->now_ms = worker_mono_ms();
    for (size_t i = 0; i < w->nlisteners; i++)
        worker_arm_accept(w, &w->listeners[i]);
    worker_arm_tick(w);
    worker_arm_wake(w);

    bool draining = false;
    for (;;) {
        if (atomic_load(&w->d->stopping) && !draining) {
            draining = true;
            for (size_t i = 0; i < w->nlisteners; i++) {
                close(w->listeners[i].fd);
                w->listeners[i].fd = -1;
            }
            conn_shutdown_all(w);
            delivery_shutdown(w);
            w->drain_deadline_ms = worker_mono_ms() + 10000;
        }
        /* Outbound connections in a transaction may finish (their outcome
         * is recorded); idle ones were told to QUIT. */
        if (draining && w->nconns == 0 && w->commit_wait == NULL && !w->prep.busy
            && !w->removal.busy
            && (delivery_drained(w) || worker_mono_ms() >= w->drain_deadline_ms))
            break;
        int r = io_uring_submit_and_wait(&w->ring, 1);
        if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY) {
            log_error("worker %u: io_uring_submit_and_wait: %s", w->id, strerror(-r));
            break;
        }
        worker_clock_update();
        w->now_ms = worker_mono_ms();
        struct io_uring_cqe *cqe;
        unsigned head, count = 0;
        io_uring_for_each_cqe(&w->ring, head, cqe)
        {
            worker_dispatch(w, cqe);
            count++;
        }
        io_uring_cq_advance(&w->ring, count);
        worker_after_batch(w);
    }
    io_uring_submit(&w->ring);
    log_info("worker %u: %llu messages accepted, %llu fsyncs (%.1f messages per fsync, "
             "%.2f ms per fsync), %llu finished segments removed, %llu spare segments "
             "made late",
             w->id, (unsigned long long)w->accepted_msgs, (unsigned long long)w->fsyncs,
             w->fsyncs ? (double)w->accepted_msgs / (double)w->fsyncs : 0.0,
             w->fsyncs ? (double)w->fsync_us_total / (double)w->fsyncs / 1000.0 : 0.0,
             (unsigned long long)w->segments_removed,
             (unsigned long long)w->segments_made_late);
    return NULL;
}

struct worker *
worker_new(struct daemon *d, unsigned id, char *err, size_t errsize)
{
    struct worker *w = xcalloc(1, sizeof *w);
    w->id = id;
    w->d = d;
    w->prep.fd = -1;
    w->seg_dir_fd = -1;
    w->last_qid = (d->qid_floor & ~(uint64_t)63) | id;

    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    /* SINGLE_ISSUER binds the ring to the task that enables it: create it
     * disabled here (main thread) and enable it in the worker thread. */
    p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN
              | IORING_SETUP_SUBMIT_ALL | IORING_SETUP_CQSIZE | IORING_SETUP_R_DISABLED;
    p.cq_entries = WORKER_SQ_ENTRIES * 4;
    int r = io_uring_queue_init_params(WORKER_SQ_ENTRIES, &w->ring, &p);
    w->ring_disabled = (r == 0);
    if (r == -EINVAL) {
        /* Older kernels: no DEFER_TASKRUN / SINGLE_ISSUER. */
        memset(&p, 0, sizeof p);
        p.flags = IORING_SETUP_CQSIZE;
        p.cq_entries = WORKER_SQ_ENTRIES * 4;
        r = io_uring_queue_init_params(WORKER_SQ_ENTRIES, &w->ring, &p);
    }
    if (r < 0) {
        snprintf(err, errsize, "io_uring_queue_init: %s", strerror(-r));
        goto fail;
    }
    r = worker_setup_buffers(w);
    if (r < 0) {
        snprintf(err, errsize, "provided buffer ring: %s", strerror(-r));
        goto fail;
    }

    w->tls_scratch = xmalloc(WORKER_TLS_SCRATCH);
    auth_inbox_init(&w->auth_inbox);
    w->listeners = xcalloc(d->cfg->nlisten ? d->cfg->nlisten : 1, sizeof *w->listeners);
    for (size_t i = 0; i < d->cfg->nlisten; i++) {
        int fd = listener_open(&d->cfg->listen[i], err, errsize);
        if (fd < 0)
            goto fail;
        w->listeners[i].fd = fd;
        w->listeners[i].w = w;
        w->listeners[i].kind = d->cfg->listen[i].kind;
        w->listeners[i].tls = d->listen_tls != NULL ? d->listen_tls[i] : NULL;
        w->listeners[i].tls_required = d->cfg->smtpd_tls_security_level == TLS_LEVEL_ENCRYPT;
        w->nlisteners++;
    }

    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/seg", d->cfg->spool_dir);
    w->seg_dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (w->seg_dir_fd < 0) {
        snprintf(err, errsize, "open %s: %s", dir, strerror(errno));
        goto fail;
    }
    w->spool = spool_new(id, d->cfg->spool_segment_size);
    spool_set_next_segment_seq(w->spool, d->next_segment_seq);
    spool_set_nosync(w->spool, d->cfg->durability == DURABILITY_NONE);
    if (d->cfg->spool_receive == SPOOL_RECEIVE_BUFFERED) {
        spool_set_store(w->spool, segfile_store);   /* no store through the mapping */
        spool_set_batching(w->spool, true);   /* no-op with durability=none */
    }
    r = worker_create_segment_sync(w);
    if (r < 0) {
        snprintf(err, errsize, "creating spool segment in %s: %s", dir, strerror(-r));
        goto fail;
    }
    spool_set_spare_source(w->spool, worker_spare_now, w);
    if (delivery_init(w, err, errsize) != 0)
        goto fail;
    w->inbox = handoff_new(65536);
    w->wake_fd = eventfd(0, EFD_CLOEXEC);
    if (w->wake_fd < 0) {
        snprintf(err, errsize, "eventfd: %s", strerror(errno));
        goto fail;
    }
    return w;
fail:
    worker_free(w);
    return NULL;
}

static void *
worker_thread_entry(void *arg)
{
    return worker_main(arg);
}

int
worker_start(struct worker *w)
{
    int r = pthread_create(&w->thread, NULL, worker_thread_entry, w);
    if (r != 0)
        return -r;
    /* Pin to a core: the ring, its buffers and the sessions stay cache-hot. */
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    if (ncpu > 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(w->id % (unsigned)ncpu, &set);
        pthread_setaffinity_np(w->thread, sizeof set, &set);
    }
    return 0;
}

void
worker_join(struct worker *w)
{
    pthread_join(w->thread, NULL);
}

struct worker *
worker_free(struct worker *w)
{
    if (w == NULL)
        return NULL;
    for (size_t i = 0; i < w->nlisteners; i++)
        if (w->listeners[i].fd >= 0)
            close(w->listeners[i].fd);
    xfree(w->listeners);
    if (w->inbox != NULL)
        worker_drain_inbox(w);
    handoff_free(w->inbox);
    delivery_free(w);
    if (w->spool != NULL)
        spool_free(w->spool);
    if (w->seg_dir_fd >= 0)
        close(w->seg_dir_fd);
    if (w->wake_fd > 0)
        close(w->wake_fd);
    if (w->ring.ring_fd > 0)
        io_uring_queue_exit(&w->ring);
    buf_pool_free(&w->cmd_bufs);
    buf_pool_free(&w->body_bufs);
    xfree(w->tls_scratch);
    outbuf_free(&w->tls_plain);
    xfree(w);
    return NULL;
}

