/*
 * spool - the append side of the durable store: record layout in mapped
 * segments, body chunk reservation, sealing, rollover and group commit
 * bookkeeping. The on-disk layout is documented in spool.h.
 *
 * Threads: a struct spool and its spool_msgs belong to one worker thread.
 * Segment reference counts are atomic (readers on other threads); every
 * other segment field is written by the owner only.
 *
 * Invariants:
 * - Nothing is ever stored past seg->size (the fallocated size): every
 *   record is placed only where its whole span fits, so a store into the
 *   mapping never SIGBUSes on a full disk.
 * - A record's span never changes once another record follows it. Only the
 *   tail record of the current segment may shrink (seal) or vanish (abort),
 *   and the octets given back are zeroed first, so the free part of a
 *   segment stays zeros and recovery never mistakes it for damage.
 * - dirty_gen grows with each record touching a segment; a ticket waits for
 *   sync_gen >= its generation. An fsync covers what was committed when it
 *   was submitted (spool_sync_started), never more.
 * - A failed fsync is final (RELIABILITY "fsyncgate"): the segment is
 *   sealed, its unsynced tickets answer -EIO, and nothing new goes there.
 *
 * Hazards: stores are plain memcpy into the mapping, or pwrite through the
 * store function io/ may set (spool_set_store); ordering on disk comes
 * only from io/'s fdatasync. A record header rewritten in place (RESERVED ->
 * BODY) can tear on a crash before that sync: the header CRC catches it.
 */
#include "spool.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "crc32c.h"
#include "le.h"

/* A chunk is shortened to fit the rest of a segment only when at least this
 * much body fits; otherwise the message rolls to the spare. */
#define SPOOL_CHUNK_SMALL 4096u

/* A finished message whose COMMIT its segment's owner is to retire. */
struct spool_retire {
    struct spool_retire *next;
    struct spool_holdset holds;
    uint64_t qid;
    uint64_t gen;               /* the commit generation holding the rewrite */
};

/* Stores that land back to back in one segment, gathered to go out as one
 * (a message's ENVELOPE, its first chunk's header and first body octets:
 * with a store function, one pwrite instead of three). */
struct spool_run {
    struct spool_segment *seg;
    size_t off, len;
    uint8_t buf[8192];
};

/* A small chunk is stored again whole with its header (read back from the
 * mapping) rather than its header alone, up to this size. */
#define SPOOL_SEAL_GATHER_MAX 4096u

struct spool {
    uint32_t worker;
    size_t segment_size;
    uint64_t next_seq;
    bool nosync;
    spool_store_fn *store;      /* NULL: memcpy into the mapping */
    spool_spare_fn *spare_source;   /* a late spare, made at once */
    void *spare_source_arg;
    uint64_t attached_top;      /* 1 + the highest seq attached; 0: none yet */
    bool cur_failed;            /* current failed, no spare took over yet */
    struct spool_segment *cur;
    struct spool_segment *spare;
    struct spool_segment **all; /* every attached segment; one ref each */
    size_t nall, capall;
    struct spool_segment **pending; /* may have sync work */
    size_t npending, cappending;
    _Atomic(struct spool_retire *) retire_inbox;   /* pushed by any thread */
    struct spool_retire *retire_wait;   /* rewritten, waiting for their fsync */
    /* spool_set_batching: records appended at the tail are gathered here
     * across calls and stored when the run breaks, when a store or a read
     * of the mapping overlaps them, and before any fsync is chosen. */
    bool batching;
    struct spool_run batch;
};

/* A sealed chunk of a message still being received. */
struct spool_sealed {
    struct spool_segment *seg;
    size_t off;
    uint32_t len;               /* body octets */
};

struct spool_msg {
    struct spool *sp;
    uint64_t qid;
    uint8_t flags;              /* SPOOL_BODY_* */
    uint64_t length;            /* body octets stored */
    uint32_t nchunks;           /* chunks reserved so far */
    uint32_t next_cap;          /* body capacity wanted for the next chunk */
    bool hinted;                /* the first chunk was sized from a size hint */
    bool has_chunk;             /* a RESERVED chunk is open */
    struct spool_segment *cseg;
    size_t coff;                /* record offset of the open chunk */
    uint32_t cspan, ccap, cused;
    uint32_t chi;               /* highest octet count ever written (unwrite) */
    struct spool_sealed *sealed; /* chunks already sealed, for unwrite */
    uint32_t nsealed, capsealed;
    unsigned nsegs;             /* segments touched; one ref each */
    struct spool_segment *segs[SPOOL_TICKET_SEGS];
};

static spool_unmap_fn *_Atomic spool_unmap_cb;

/* --- little-endian helpers --- */

static size_t
spool_align8(size_t n)
{
    return (n + 7) & ~(size_t)7;
}

/* --- layout helpers shared with recovery --- */

/* Record header CRC: the salt first, so body octets that happen to look like
 * a header from another segment never validate here. */
uint32_t
spool_record_header_crc(uint64_t salt, const uint8_t *hdr)
{
    uint8_t s[8];
    le_put_u64(s, salt);
    return crc32c(crc32c(0, s, 8), hdr, SPOOL_RECORD_HEADER_SIZE - 4);
}

/* Checks and reads a segment header. */
int
spool_segment_header_read(const uint8_t *base, size_t size, uint32_t *worker,
                          uint64_t *seq, uint64_t *salt)
{
    if (base == NULL || size < SPOOL_SEGMENT_HEADER_SIZE)
        return -EINVAL;
    if (memcmp(base, SPOOL_SEGMENT_MAGIC, 8) != 0
        || le_get_u32(base + 8) != SPOOL_SEGMENT_VERSION
        || le_get_u32(base + 60) != crc32c(0, base, 60))
        return -EINVAL;
    if (worker)
        *worker = le_get_u32(base + 12);
    if (seq)
        *seq = le_get_u64(base + 16);
    if (salt)
        *salt = le_get_u64(base + 24);
    return 0;
}

int
spool_segment_path(char *buf, size_t size, const char *dir, uint32_t worker,
                   uint64_t seq)
{
    return snprintf(buf, size, "%s/seg/w%" PRIu32 "-%016" PRIx64 ".seg", dir, worker,
                    seq);
}

/* --- the spool --- */

struct spool *
spool_new(uint32_t worker, size_t segment_size)
{
    struct spool *sp = xcalloc(1, sizeof *sp);
    sp->worker = worker;
    sp->segment_size = segment_size;
    sp->next_seq = 1;
    return sp;
}

static void spool_batch_flush(struct spool *sp);

/* Puts the spool's reference on every segment it attached. Returns NULL. */
struct spool *
spool_free(struct spool *sp)
{
    if (sp == NULL)
        return NULL;
    spool_batch_flush(sp);
    /* Retirements not made durable: their holds just go (the DONE records
     * stay on disk for the next start). */
    struct spool_retire *r = atomic_exchange(&sp->retire_inbox, NULL);
    while (r != NULL || sp->retire_wait != NULL) {
        if (r == NULL) {
            r = sp->retire_wait;
            sp->retire_wait = NULL;
        }
        struct spool_retire *next = r->next;
        spool_holdset_release(&r->holds);
        xfree(r);
        r = next;
    }
    for (size_t i = 0; i < sp->nall; i++) {
        sp->all[i]->owner = NULL;
        spool_segment_put(sp->all[i]);
    }
    xfree(sp->all);
    xfree(sp->pending);
    xfree(sp);
    return NULL;
}

uint64_t
spool_next_segment_seq(struct spool *sp)
{
    return sp->next_seq++;
}

void
spool_set_next_segment_seq(struct spool *sp, uint64_t seq)
{
    if (seq > sp->next_seq)
        sp->next_seq = seq;
}

bool
spool_wants_segment(const struct spool *sp)
{
    if (sp->cur == NULL)
        return sp->spare == NULL;
    return sp->spare == NULL && sp->cur->tail > sp->cur->size / 4;
}

/* Writes the segment header and makes seg current, or the spare. */
/* The spool's list of its segments (one reference each). */
static void
spool_all_add(struct spool *sp, struct spool_segment *seg)
{
    if (sp->nall == sp->capall) {
        sp->capall = sp->capall ? sp->capall * 2 : 8;
        sp->all = xrealloc(sp->all, sp->capall * sizeof *sp->all);
    }
    sp->all[sp->nall++] = seg;
}

/* Every append-side store into a segment goes through here: a memcpy into
 * the mapping, or the owner's store function when it has one. A failed store
 * fails the segment as a failed fsync does: nothing in it is claimed again. */
static void spool_segment_fail(struct spool *sp, struct spool_segment *seg);

static void
spool_store_raw(struct spool_segment *seg, size_t off, const void *src, size_t n)
{
    struct spool *sp = seg->owner;
    if (n == 0)
        return;
    if (sp == NULL || sp->store == NULL) {
        memcpy(seg->base + off, src, n);
        return;
    }
    if (!seg->failed && sp->store(seg, off, src, n) < 0)
        spool_segment_fail(sp, seg);
}

static void
spool_batch_flush(struct spool *sp)
{
    struct spool_run *b = &sp->batch;
    if (b->len == 0)
        return;
    size_t len = b->len;
    b->len = 0;
    spool_store_raw(b->seg, b->off, b->buf, len);
}

/* Before [off, off + n) of seg is read through the mapping: the batch goes
 * first if it holds any of it, so the read sees it. */
static void
spool_settle(const struct spool_segment *seg, size_t off, size_t n)
{
    struct spool *sp = seg->owner;
    if (sp == NULL || sp->batch.len == 0 || sp->batch.seg != seg)
        return;
    if (off < sp->batch.off + sp->batch.len && sp->batch.off < off + n)
        spool_batch_flush(sp);
}

/* A store that overlaps the batch or lands after its start sends the batch
 * first: stores land in order, and the file never holds a record after a
 * range the batch has yet to fill (recovery would call that hole damage). */
static void
spool_store(struct spool_segment *seg, size_t off, const void *src, size_t n)
{
    if (n == 0)
        return;
    struct spool *sp = seg->owner;
    if (sp != NULL && sp->batch.len > 0 && sp->batch.seg == seg && off + n > sp->batch.off)
        spool_batch_flush(sp);
    spool_store_raw(seg, off, src, n);
}

static void
spool_store_zeros(struct spool_segment *seg, size_t off, size_t n)
{
    static const uint8_t zeros[512];
    while (n > 0) {
        size_t k = n < sizeof zeros ? n : sizeof zeros;
        spool_store(seg, off, zeros, k);
        off += k;
        n -= k;
    }
}

static void
spool_run_flush(struct spool_run *run)
{
    if (run->len == 0)
        return;
    struct spool *sp = run->seg->owner;
    if (sp != NULL && run == &sp->batch) {
        spool_batch_flush(sp);
        return;
    }
    spool_store(run->seg, run->off, run->buf, run->len);
    run->len = 0;
}

/* Like spool_store, through run when one is given. */
static void
spool_store_via(struct spool_run *run, struct spool_segment *seg, size_t off, const void *src,
                size_t n)
{
    if (n == 0)
        return;
    if (run == NULL) {
        spool_store(seg, off, src, n);
        return;
    }
    if (run->len > 0
        && (seg != run->seg || off != run->off + run->len || n > sizeof run->buf - run->len))
        spool_run_flush(run);
    if (n > sizeof run->buf) {
        spool_store(seg, off, src, n);
        return;
    }
    if (run->len == 0) {
        run->seg = seg;
        run->off = off;
    }
    memcpy(run->buf + run->len, src, n);
    run->len += n;
}

struct spool_segment *
spool_segment_attach(struct spool *sp, uint64_t seq, int fd, uint8_t *base, size_t size,
                     uint64_t salt)
{
    if (sp->spare != NULL || seq < sp->attached_top || size < SPOOL_SEGMENT_MIN_SIZE
        || size > SPOOL_SEGMENT_MAX_SIZE)
        return NULL;

    struct spool_segment *seg = xcalloc(1, sizeof *seg);
    seg->worker = sp->worker;
    seg->seq = seq;
    seg->fd = fd;
    seg->base = base;
    seg->size = size;
    seg->salt = salt;
    seg->tail = SPOOL_SEGMENT_HEADER_SIZE;
    seg->owner = sp;
    atomic_init(&seg->refs, 1);

    uint8_t h[SPOOL_SEGMENT_HEADER_SIZE];
    memset(h, 0, sizeof h);
    memcpy(h, SPOOL_SEGMENT_MAGIC, 8);
    le_put_u32(h + 8, SPOOL_SEGMENT_VERSION);
    le_put_u32(h + 12, sp->worker);
    le_put_u64(h + 16, seq);
    le_put_u64(h + 24, salt);
    le_put_u32(h + 60, crc32c(0, h, 60));
    spool_store(seg, 0, h, sizeof h);
    if (seg->failed) {
        /* Not installed: the caller unmaps and closes it, as on any refusal. */
        xfree(seg);
        return NULL;
    }

    spool_all_add(sp, seg);
    sp->attached_top = seq + 1;
    if (seq >= sp->next_seq)
        sp->next_seq = seq + 1;

    if (sp->cur == NULL) {
        sp->cur = seg;
        sp->cur_failed = false;
    } else {
        sp->spare = seg;
    }
    return seg;
}

void
spool_segment_get(struct spool_segment *seg)
{
    atomic_fetch_add_explicit(&seg->refs, 1, memory_order_relaxed);
}

/* Last put: io/'s callback unmaps and closes, then the struct is freed. */
void
spool_segment_put(struct spool_segment *seg)
{
    if (seg == NULL)
        return;
    if (atomic_fetch_sub_explicit(&seg->refs, 1, memory_order_acq_rel) != 1)
        return;
    spool_unmap_fn *fn = atomic_load(&spool_unmap_cb);
    if (fn)
        fn(seg);
    xfree(seg);
}

void
spool_set_spare_source(struct spool *sp, spool_spare_fn *fn, void *arg)
{
    sp->spare_source = fn;
    sp->spare_source_arg = arg;
}

void
spool_set_unmap(spool_unmap_fn *fn)
{
    atomic_store(&spool_unmap_cb, fn);
}

/* --- record placement --- */

/* Moves to the spare: the current segment takes no more appends. */
static int
spool_roll(struct spool *sp)
{
    if (sp->spare == NULL && sp->spare_source != NULL)
        (void)sp->spare_source(sp, sp->spare_source_arg);
    if (sp->spare == NULL)
        return -ENOSPC;
    struct spool_segment *cur = sp->cur;
    spool_batch_flush(sp);
    if (sp->cur != cur)
        return 0;   /* the flush failed cur: the spare took over already */
    if (sp->cur)
        sp->cur->sealed = true;
    sp->cur = sp->spare;
    sp->spare = NULL;
    return 0;
}

/* Records that seg is part of message m (a ticket slot); -ENOSPC past the
 * ticket's capacity. */
static int
spool_msg_touch(struct spool_msg *m, struct spool_segment *seg)
{
    for (unsigned i = 0; i < m->nsegs; i++)
        if (m->segs[i] == seg)
            return 0;
    /* XXX a message over SPOOL_TICKET_SEGS segments is refused (452), not
     * relocated; with segments far larger than the size limit it can't
     * happen. */
    if (m->nsegs == SPOOL_TICKET_SEGS)
        return -ENOSPC;
    spool_segment_get(seg);
    atomic_fetch_add(&seg->holds, 1);   /* a message being received */
    m->segs[m->nsegs++] = seg;
    return 0;
}

/*
 * Finds room for a record of want octets at the tail of the current
 * segment, rolling to the spare when it does not fit. A body chunk passes
 * min < want: it may be shortened to what is left of the segment when that
 * is still a useful chunk, or when there is no spare to roll to.
 */
static int
spool_place(struct spool *sp, struct spool_msg *m, size_t min, size_t want,
            struct spool_segment **segp, size_t *offp, size_t *spanp)
{
    for (;;) {
        struct spool_segment *seg = sp->cur;
        if (seg == NULL)
            return sp->cur_failed ? -EIO : -ENOSPC;
        size_t room = seg->tail < seg->size ? (seg->size - seg->tail) & ~(size_t)7 : 0;
        size_t span = 0;
        if (room >= want)
            span = want;
        else if (min < want && room >= min
                 && (room - SPOOL_RECORD_HEADER_SIZE - SPOOL_CHUNK_PREFIX
                         >= SPOOL_CHUNK_SMALL
                     || sp->spare == NULL))
            span = room;
        if (span == 0) {
            int rc = spool_roll(sp);
            if (rc < 0)
                return rc;
            continue;
        }
        if (m) {
            int rc = spool_msg_touch(m, seg);
            if (rc < 0)
                return rc;
        }
        *segp = seg;
        *offp = seg->tail;
        *spanp = span;
        seg->tail += span;
        return 0;
    }
}

static void
spool_format_header(uint8_t h[SPOOL_RECORD_HEADER_SIZE], const struct spool_segment *seg,
                    uint8_t type, uint8_t flags, size_t span, size_t len, uint64_t qid,
                    uint32_t payload_crc)
{
    le_put_u32(h, SPOOL_RECORD_MAGIC);
    h[4] = type;
    h[5] = flags;
    le_put_u16(h + 6, 0);
    le_put_u32(h + 8, (uint32_t)span);
    le_put_u32(h + 12, (uint32_t)len);
    le_put_u64(h + 16, qid);
    le_put_u32(h + 24, payload_crc);
    le_put_u32(h + 28, spool_record_header_crc(seg->salt, h));
}

static void
spool_write_header(struct spool_segment *seg, size_t off, uint8_t type, uint8_t flags,
                   size_t span, size_t len, uint64_t qid, uint32_t payload_crc)
{
    uint8_t h[SPOOL_RECORD_HEADER_SIZE];
    spool_format_header(h, seg, type, flags, span, len, qid, payload_crc);
    spool_store(seg, off, h, sizeof h);
}

/* Appends a whole record (payload copied), stored through run if given.
 * m, if given, owns the record. */
static int
spool_append_via(struct spool_run *run, struct spool *sp, struct spool_msg *m, uint8_t type,
                 uint8_t flags, uint64_t qid, const void *payload, size_t len,
                 struct spool_segment **segp, size_t *offp)
{
    struct spool_segment *seg;
    size_t off, span;
    size_t want = spool_align8(SPOOL_RECORD_HEADER_SIZE + len);
    if (len > UINT32_MAX - 64)
        return -ENOSPC;
    int rc = spool_place(sp, m, want, want, &seg, &off, &span);
    if (rc < 0)
        return rc;
    /* Formatted whole (header, payload, zero padding), then one store. */
    uint8_t small[512];
    uint8_t *rec = span <= sizeof small ? small : xmalloc(span);
    spool_format_header(rec, seg, type, flags, span, len, qid, crc32c(0, payload, len));
    if (len)
        memcpy(rec + SPOOL_RECORD_HEADER_SIZE, payload, len);
    memset(rec + SPOOL_RECORD_HEADER_SIZE + len, 0, span - SPOOL_RECORD_HEADER_SIZE - len);
    spool_store_via(run, seg, off, rec, span);
    if (rec != small)
        xfree(rec);
    if (segp)
        *segp = seg;
    if (offp)
        *offp = off;
    return 0;
}

static int
spool_append(struct spool *sp, struct spool_msg *m, uint8_t type, uint8_t flags,
             uint64_t qid, const void *payload, size_t len,
             struct spool_segment **segp, size_t *offp)
{
    return spool_append_via(sp->batching ? &sp->batch : NULL, sp, m, type, flags, qid, payload,
                            len, segp, offp);
}

/* --- group commit bookkeeping --- */

static void
spool_pending_add(struct spool *sp, struct spool_segment *seg)
{
    for (size_t i = 0; i < sp->npending; i++)
        if (sp->pending[i] == seg)
            return;
    if (sp->npending == sp->cappending) {
        sp->cappending = sp->cappending ? sp->cappending * 2 : 4;
        sp->pending = xrealloc(sp->pending, sp->cappending * sizeof *sp->pending);
    }
    sp->pending[sp->npending++] = seg;
}

/* A record went into seg: returns the generation its waiter needs. awaited:
 * a client waits for it (a message commit), so it wants an fsync now. */
static uint64_t
spool_dirty(struct spool *sp, struct spool_segment *seg, bool awaited)
{
    seg->dirty_gen++;
    if (awaited)
        seg->awaited_gen = seg->dirty_gen;
    if (sp->nosync)
        seg->sync_gen = seg->dirty_gen;
    else
        spool_pending_add(sp, seg);
    return seg->dirty_gen;
}

static size_t
spool_sync_select(struct spool *sp, struct spool_segment **segs, size_t max, bool awaited_only)
{
    size_t n = 0, keep = 0;
    spool_batch_flush(sp);   /* every record in the file before its fsync */
    for (size_t i = 0; i < sp->npending; i++) {
        struct spool_segment *seg = sp->pending[i];
        bool dirty = seg->dirty_gen > seg->sync_gen;
        if (seg->failed || (!dirty && seg->sync_inflight_gen == 0))
            continue; /* drop: re-added on the next commit */
        sp->pending[keep++] = seg;
        bool wanted = awaited_only ? seg->awaited_gen > seg->sync_gen : dirty;
        if (wanted && seg->sync_inflight_gen == 0 && n < max)
            segs[n++] = seg;
    }
    sp->npending = keep;
    return n;
}

size_t
spool_sync_wanted(struct spool *sp, struct spool_segment **segs, size_t max)
{
    return spool_sync_select(sp, segs, max, false);
}

size_t
spool_sync_awaited(struct spool *sp, struct spool_segment **segs, size_t max)
{
    return spool_sync_select(sp, segs, max, true);
}

void
spool_sync_started(struct spool_segment *seg)
{
    seg->sync_inflight_gen = seg->dirty_gen;
}

/* On error: never retry, never claim (a second fsync may lie). */
void
spool_sync_done(struct spool *sp, struct spool_segment *seg, int res)
{
    uint64_t gen = seg->sync_inflight_gen;
    seg->sync_inflight_gen = 0;
    if (res >= 0) {
        if (gen > seg->sync_gen)
            seg->sync_gen = gen;
        return;
    }
    spool_segment_fail(sp, seg);
}

/* Never written again, its bytes never claimed (RELIABILITY "fsyncgate"). */
static void
spool_segment_fail(struct spool *sp, struct spool_segment *seg)
{
    seg->failed = true;
    seg->sealed = true;
    if (seg == sp->spare)
        sp->spare = NULL;
    if (seg == sp->cur) {
        sp->cur = sp->spare;
        sp->spare = NULL;
        sp->cur_failed = sp->cur == NULL;
    }
}

void
spool_set_store(struct spool *sp, spool_store_fn *store)
{
    sp->store = store;
}

void
spool_set_batching(struct spool *sp, bool on)
{
    if (!on)
        spool_batch_flush(sp);
    sp->batching = on && sp->store != NULL && !sp->nosync;
}

int
spool_ticket_state(const struct spool_ticket *t)
{
    int state = 1;
    for (unsigned i = 0; i < t->n; i++) {
        const struct spool_segment *seg = t->seg[i];
        if (seg->sync_gen >= t->gen[i])
            continue;
        if (seg->failed)
            return -EIO;
        state = 0;
    }
    return state;
}

void
spool_set_nosync(struct spool *sp, bool nosync)
{
    sp->nosync = nosync;
    if (!nosync)
        return;
    spool_batch_flush(sp);
    sp->batching = false;   /* durable at once: read for delivery at once */
    for (size_t i = 0; i < sp->nall; i++)
        if (!sp->all[i]->failed)
            sp->all[i]->sync_gen = sp->all[i]->dirty_gen;
    sp->npending = 0;
}

/* --- messages --- */

static uint32_t
spool_first_chunk(uint64_t size_hint)
{
    if (size_hint == 0)
        return SPOOL_CHUNK_MIN;
    uint64_t c = size_hint > SPOOL_CHUNK_MAX
                     ? SPOOL_CHUNK_MAX
                     : size_hint + size_hint / SPOOL_CHUNK_SLACK_DIV + SPOOL_CHUNK_SLACK;
    if (c > SPOOL_CHUNK_MAX)
        c = SPOOL_CHUNK_MAX;
    return (uint32_t)spool_align8(c);
}

static void
spool_msg_free(struct spool_msg *m)
{
    for (unsigned i = 0; i < m->nsegs; i++) {
        atomic_fetch_sub(&m->segs[i]->holds, 1);
        spool_segment_put(m->segs[i]);
    }
    xfree(m->sealed);
    xfree(m);
}

/* Writes a BODY header for the chunk at off holding len body octets. */
static void
spool_msg_write_body_header(struct spool_msg *m, struct spool_segment *seg, size_t off,
                            size_t span, size_t len)
{
    const uint8_t *pl = seg->base + off + SPOOL_RECORD_HEADER_SIZE;
    size_t plen = SPOOL_CHUNK_PREFIX + len;
    spool_settle(seg, off, SPOOL_RECORD_HEADER_SIZE + plen);
    spool_write_header(seg, off, SPOOL_REC_BODY, m->flags, span, plen, m->qid,
                       crc32c(0, pl, plen));
}

/* Some record of the message is in a segment whose store or fsync failed:
 * it can never be acknowledged. */
static bool
spool_msg_in_failed_segment(const struct spool_msg *m)
{
    for (unsigned i = 0; i < m->nsegs; i++)
        if (m->segs[i]->failed)
            return true;
    return false;
}

/* The open chunk ends where the current segment's next record would go:
 * its unused room can be given back. */
static bool
spool_msg_chunk_is_tail(const struct spool_msg *m)
{
    const struct spool_segment *seg = m->cseg;
    return m->has_chunk && seg == m->sp->cur && !seg->failed
           && seg->tail == m->coff + m->cspan;
}

/* Reserves the next chunk as a RESERVED record with its final span. */
static int
spool_msg_reserve_via(struct spool_run *run, struct spool_msg *m)
{
    struct spool_segment *seg;
    size_t off, span;
    size_t fixed = SPOOL_RECORD_HEADER_SIZE + SPOOL_CHUNK_PREFIX;
    int rc = spool_place(m->sp, m, fixed + 8, fixed + m->next_cap, &seg, &off, &span);
    if (rc < 0)
        return rc;
    /* Header and chunk prefix (its number, then zero) in one store. */
    uint8_t h[SPOOL_RECORD_HEADER_SIZE + SPOOL_CHUNK_PREFIX];
    _Static_assert(SPOOL_CHUNK_PREFIX == 8, "chunk prefix: number, then zero");
    spool_format_header(h, seg, SPOOL_REC_RESERVED, m->flags, span, 0, m->qid, 0);
    le_put_u32(h + SPOOL_RECORD_HEADER_SIZE, m->nchunks);
    le_put_u32(h + SPOOL_RECORD_HEADER_SIZE + 4, 0);
    spool_store_via(run, seg, off, h, sizeof h);
    m->has_chunk = true;
    m->cseg = seg;
    m->coff = off;
    m->cspan = (uint32_t)span;
    m->ccap = (uint32_t)(span - fixed);
    m->cused = 0;
    m->chi = 0;
    m->nchunks++;
    if (m->nchunks == 1 && m->hinted && m->next_cap < SPOOL_CHUNK_MAX) {
        /* A second chunk means the hint was short (what is left is small)
         * or the first one was cut at the segment's end (the rest of the
         * hint is left). */
        uint32_t rest = m->next_cap - m->ccap;
        m->next_cap = spool_align8(rest > SPOOL_CHUNK_MIN ? rest + SPOOL_CHUNK_SLACK
                                                          : SPOOL_CHUNK_MIN);
    } else
        m->next_cap = m->next_cap * 2 > SPOOL_CHUNK_MAX ? SPOOL_CHUNK_MAX : m->next_cap * 2;
    return 0;
}

static int
spool_msg_reserve(struct spool_msg *m)
{
    return spool_msg_reserve_via(m->sp->batching ? &m->sp->batch : NULL, m);
}

/* Turns the open chunk into BODY; gives unused space back when it is the
 * segment's tail. last: the body's last n octets, not stored yet. Through
 * run, the header, a small chunk's stored octets (read back from the
 * mapping, unchanged) and the last octets become one store; at the tail the
 * COMMIT that follows joins it. The span of a chunk that is not the tail
 * never changes, so a torn store cannot hide the records after it. */
static void
spool_msg_seal_via(struct spool_run *run, struct spool_msg *m, const void *last, size_t n)
{
    struct spool_segment *seg = m->cseg;
    size_t pl = m->coff + SPOOL_RECORD_HEADER_SIZE;
    size_t stored = SPOOL_CHUNK_PREFIX + m->cused;
    spool_settle(seg, m->coff, SPOOL_RECORD_HEADER_SIZE + stored);
    uint32_t crc = crc32c(0, seg->base + pl, stored);
    if (n > 0)
        crc = crc32c(crc, last, n);
    spool_msg_wrote(m, n);
    size_t len = SPOOL_CHUNK_PREFIX + m->cused;
    size_t span = m->cspan;

    /* Octets written then given back (unwrite) must not linger as junk. */
    if (m->chi > m->cused)
        spool_store_zeros(seg, pl + len, m->chi - m->cused);
    bool tail = spool_msg_chunk_is_tail(m);
    if (tail) {
        span = spool_align8(SPOOL_RECORD_HEADER_SIZE + len);
        seg->tail = m->coff + span;
    }
    uint8_t h[SPOOL_RECORD_HEADER_SIZE];
    spool_format_header(h, seg, SPOOL_REC_BODY, m->flags, span, len, m->qid, crc);
    size_t whole = SPOOL_RECORD_HEADER_SIZE + len;
    if (n > 0 && run != NULL && whole <= SPOOL_SEAL_GATHER_MAX) {
        spool_store_via(run, seg, m->coff, h, sizeof h);
        spool_store_via(run, seg, pl, seg->base + pl, stored);
        spool_store_via(run, seg, pl + stored, last, n);
        if (tail) {
            static const uint8_t pad[8];
            spool_store_via(run, seg, m->coff + whole, pad, span - whole);   /* COMMIT next */
        }
    } else {
        /* The last octets before the header that claims them: a header in
         * the file never waits for its payload in a run. */
        spool_store(seg, pl + stored, last, n);
        spool_store(seg, m->coff, h, sizeof h);
    }
    m->has_chunk = false;
    if (m->nsealed == m->capsealed) {
        m->capsealed = m->capsealed ? m->capsealed * 2 : 4;
        m->sealed = xrealloc(m->sealed, m->capsealed * sizeof *m->sealed);
    }
    m->sealed[m->nsealed++] = (struct spool_sealed){ seg, m->coff, m->cused };
}

static void
spool_msg_seal(struct spool_msg *m)
{
    spool_msg_seal_via(NULL, m, NULL, 0);
}

int
spool_msg_begin(struct spool *sp, uint64_t qid, const struct envelope *env,
                uint64_t size_hint, bool raw, struct spool_msg **out)
{
    return spool_msg_begin_with(sp, qid, env, size_hint, raw, NULL, 0, out);
}

int
spool_msg_begin_with(struct spool *sp, uint64_t qid, const struct envelope *env,
                     uint64_t size_hint, bool raw, const void *first, size_t nfirst,
                     struct spool_msg **out)
{
    struct spool_msg *m = xcalloc(1, sizeof *m);
    m->sp = sp;
    m->qid = qid;
    m->flags = raw ? SPOOL_BODY_RAW : 0;
    m->next_cap = spool_first_chunk(size_hint);
    m->hinted = size_hint != 0;

    size_t elen = envelope_encoded_size(env);
    uint8_t *enc = xmalloc(elen);
    envelope_encode(env, enc);
    struct spool_run local = { .len = 0 };
    struct spool_run *run = sp->batching ? &sp->batch : &local;
    int rc = spool_append_via(run, sp, m, SPOOL_REC_ENVELOPE, 0, qid, enc, elen, NULL, NULL);
    xfree(enc);
    if (rc == 0)
        rc = spool_msg_reserve_via(run, m);
    size_t k = 0;
    if (rc == 0) {
        k = nfirst < m->ccap ? nfirst : m->ccap;
        spool_store_via(run, m->cseg,
                        m->coff + SPOOL_RECORD_HEADER_SIZE + SPOOL_CHUNK_PREFIX, first, k);
    }
    spool_run_flush(&local);   /* before anything else stores or reads */
    if (rc == 0 && m->cseg->failed)
        rc = -EIO;
    if (rc == 0) {
        spool_msg_wrote(m, k);
        if (k < nfirst)
            rc = spool_msg_append(m, (const uint8_t *)first + k, nfirst - k);
    }
    if (rc < 0) {
        spool_msg_abort(m);
        *out = NULL;
        return rc;
    }
    *out = m;
    return 0;
}

int
spool_msg_space(struct spool_msg *m, uint8_t **p, size_t *avail)
{
    if (m->has_chunk && m->cseg->failed)
        return -EIO;
    if (!m->has_chunk || m->cused == m->ccap) {
        if (m->has_chunk)
            spool_msg_seal(m);
        int rc = spool_msg_reserve(m);
        if (rc < 0)
            return rc;
    }
    *p = m->cseg->base + m->coff + SPOOL_RECORD_HEADER_SIZE + SPOOL_CHUNK_PREFIX
         + m->cused;
    *avail = m->ccap - m->cused;
    return 0;
}

int
spool_msg_put(struct spool_msg *m, const void *src, size_t n)
{
    if (!m->has_chunk || n > m->ccap - m->cused)
        return -EINVAL;
    struct spool_segment *seg = m->cseg;
    spool_store(seg, m->coff + SPOOL_RECORD_HEADER_SIZE + SPOOL_CHUNK_PREFIX + m->cused, src,
                n);
    if (seg->failed)
        return -EIO;
    spool_msg_wrote(m, n);
    return 0;
}

int
spool_msg_append(struct spool_msg *m, const void *src, size_t n)
{
    const uint8_t *s = src;
    while (n > 0) {
        uint8_t *p;
        size_t avail;
        int rc = spool_msg_space(m, &p, &avail);
        if (rc < 0)
            return rc;
        size_t k = n < avail ? n : avail;
        rc = spool_msg_put(m, s, k);
        if (rc < 0)
            return rc;
        s += k;
        n -= k;
    }
    return 0;
}

void
spool_msg_wrote(struct spool_msg *m, size_t n)
{
    if (!m->has_chunk)
        return;
    if (n > m->ccap - m->cused)
        n = m->ccap - m->cused; /* caller bug; never past the chunk */
    m->cused += (uint32_t)n;
    m->length += n;
    if (m->cused > m->chi)
        m->chi = m->cused;
}

/*
 * Gives back the last n octets. Usually they lie in the open chunk, but the
 * end-of-data mark can straddle a chunk boundary, so sealed chunks are
 * shortened too (new len and CRC, zeroed octets; their span stays, as other
 * records may follow them).
 */
void
spool_msg_unwrite(struct spool_msg *m, size_t n)
{
    if (n > m->length)
        n = m->length;
    m->length -= n;
    if (m->has_chunk) {
        size_t k = n < m->cused ? n : m->cused;
        m->cused -= (uint32_t)k;
        n -= k;
    }
    for (uint32_t i = m->nsealed; n > 0 && i-- > 0;) {
        struct spool_sealed *c = &m->sealed[i];
        size_t k = n < c->len ? n : c->len;
        if (k == 0)
            continue;
        c->len -= (uint32_t)k;
        spool_store_zeros(c->seg, c->off + SPOOL_RECORD_HEADER_SIZE + SPOOL_CHUNK_PREFIX + c->len,
                          k);
        spool_settle(c->seg, c->off, SPOOL_RECORD_HEADER_SIZE);
        size_t span = le_get_u32(c->seg->base + c->off + 8);
        spool_msg_write_body_header(m, c->seg, c->off, span, c->len);
        n -= k;
    }
}

uint64_t
spool_msg_length(const struct spool_msg *m)
{
    return m->length;
}

void
spool_msg_add_flags(struct spool_msg *m, uint32_t flags)
{
    m->flags |= (uint8_t)flags;
}

int
spool_msg_commit(struct spool_msg *m, struct spool_ticket *ticket)
{
    return spool_msg_commit_extents(m, ticket, NULL, NULL, NULL);
}

int
spool_msg_commit_extents(struct spool_msg *m, struct spool_ticket *ticket,
                         struct spool_extent **extents, uint32_t *nextents,
                         struct spool_holdset *holds)
{
    return spool_msg_commit_last(m, NULL, 0, ticket, extents, nextents, holds);
}

int
spool_msg_commit_last(struct spool_msg *m, const void *last, size_t n,
                      struct spool_ticket *ticket, struct spool_extent **extents,
                      uint32_t *nextents, struct spool_holdset *holds)
{
    struct spool *sp = m->sp;
    uint8_t pl[16];
    int rc;

    ticket->n = 0;
    if (spool_msg_in_failed_segment(m)) {
        spool_msg_abort(m);
        return -EIO;
    }
    if (n > 0 && (!m->has_chunk || n > m->ccap - m->cused)) {
        spool_msg_abort(m);
        return -EINVAL;
    }
    /* The COMMIT goes where records go (the batch, when batching). A chunk
     * at the tail goes with it; one that other records follow goes out on
     * its own, so the batch keeps gathering at the tail. */
    struct spool_run local = { .len = 0 };
    struct spool_run *crun = sp->batching ? &sp->batch : &local;
    struct spool_run *run = &local;
    if (spool_msg_chunk_is_tail(m))
        run = crun;
    if (m->has_chunk)
        spool_msg_seal_via(run, m, last, n);
    if (run != crun)
        spool_run_flush(run);
    le_put_u64(pl, m->length);
    le_put_u32(pl + 8, m->nchunks);
    le_put_u32(pl + 12, m->flags);
    struct spool_segment *cseg;
    size_t coff;
    rc = spool_append_via(crun, sp, m, SPOOL_REC_COMMIT, m->flags, m->qid, pl, sizeof pl,
                          &cseg, &coff);
    spool_run_flush(&local);
    if (rc < 0) {
        spool_msg_abort(m);
        return rc;
    }
    /* The seal or the COMMIT itself may have failed its store. With
     * durability=none no fsync would ever look at the segment again, so the
     * refusal has to happen here. */
    if (spool_msg_in_failed_segment(m)) {
        spool_msg_abort(m);
        return -EIO;
    }
    for (unsigned i = 0; i < m->nsegs; i++) {
        ticket->seg[i] = m->segs[i];
        ticket->gen[i] = spool_dirty(sp, m->segs[i], true);
        if (holds != NULL)
            spool_holdset_add(holds, m->segs[i]);
    }
    ticket->n = m->nsegs;
    if (holds != NULL) {
        holds->commit_seg = cseg;
        holds->commit_off = (uint32_t)coff;
    }
    if (extents != NULL) {
        /* Same form as recovery's: body octets only, chunk prefix skipped;
         * zero-length chunks (emptied by unwrite) are left out. */
        struct spool_extent *e = xcalloc(m->nsealed ? m->nsealed : 1, sizeof *e);
        uint32_t ne = 0;
        for (uint32_t i = 0; i < m->nsealed; i++) {
            if (m->sealed[i].len == 0)
                continue;
            spool_segment_get(m->sealed[i].seg);
            e[ne++] = (struct spool_extent){
                .seg = m->sealed[i].seg,
                .off = (uint32_t)(m->sealed[i].off + SPOOL_RECORD_HEADER_SIZE
                                  + SPOOL_CHUNK_PREFIX),
                .len = m->sealed[i].len,
            };
        }
        *extents = e;
        *nextents = ne;
    }
    spool_msg_free(m);
    return 0;
}

void
spool_extents_release(struct spool_extent *e, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        spool_segment_put(e[i].seg);
    xfree(e);
}

void
spool_msg_abort(struct spool_msg *m)
{
    struct spool *sp = m->sp;
    if (m->has_chunk) {
        struct spool_segment *seg = m->cseg;
        if (spool_msg_chunk_is_tail(m)) {
            /* Tail: give the whole chunk back, zeroed. */
            spool_store_zeros(seg, m->coff,
                              SPOOL_RECORD_HEADER_SIZE + SPOOL_CHUNK_PREFIX + m->chi);
            seg->tail = m->coff;
        }
        /* Otherwise it stays RESERVED, which recovery skips by span. */
        m->has_chunk = false;
    }
    /* Best effort: without it the qid has no COMMIT and is dropped anyway. */
    (void)spool_append(sp, NULL, SPOOL_REC_ABORT, 0, m->qid, NULL, 0, NULL, NULL);
    spool_msg_free(m);
}

/* --- records about committed messages --- */

static int
spool_append_ticketed(struct spool *sp, uint8_t type, uint64_t qid, const void *pl,
                      size_t len, struct spool_holdset *hs, struct spool_ticket *t)
{
    struct spool_segment *seg;
    if (t)
        t->n = 0;
    int rc = spool_append(sp, NULL, type, 0, qid, pl, len, &seg, NULL);
    if (rc < 0)
        return rc;
    if (hs != NULL)
        spool_holdset_add(hs, seg);   /* a restart needs this record */
    uint64_t gen = spool_dirty(sp, seg, false);
    if (t) {
        t->n = 1;
        t->seg[0] = seg;
        t->gen[0] = gen;
    }
    return 0;
}

int
spool_append_rcpt_status(struct spool *sp, uint64_t qid, uint32_t rcpt_index,
                         uint8_t state, uint8_t flags, uint64_t next_attempt_ms,
                         struct spool_holdset *hs, struct spool_ticket *t)
{
    uint8_t pl[16];
    le_put_u32(pl, rcpt_index);
    pl[4] = state;
    pl[5] = flags;
    pl[6] = pl[7] = 0;
    le_put_u64(pl + 8, next_attempt_ms);
    return spool_append_ticketed(sp, SPOOL_REC_RCPT_STATUS, qid, pl, sizeof pl, hs, t);
}

int
spool_append_done(struct spool *sp, uint64_t qid, struct spool_holdset *hs,
                  struct spool_ticket *t)
{
    return spool_append_ticketed(sp, SPOOL_REC_DONE, qid, NULL, 0, hs, t);
}

int
spool_append_abort(struct spool *sp, uint64_t qid, struct spool_ticket *t)
{
    return spool_append_ticketed(sp, SPOOL_REC_ABORT, qid, NULL, 0, NULL, t);
}

/* --- holds, retirement, removal --- */

void
spool_holdset_add(struct spool_holdset *hs, struct spool_segment *seg)
{
    struct spool_hold *head = atomic_load(&hs->head);
    for (struct spool_hold *h = head; h != NULL; h = h->next)
        if (h->seg == seg)
            return;
    /* Pushed by any thread; nodes are never unlinked while others may
     * push, so a racing duplicate is only a second hold. */
    struct spool_hold *n = xmalloc(sizeof *n);
    n->seg = seg;
    spool_segment_get(seg);
    atomic_fetch_add(&seg->holds, 1);
    n->next = head;
    while (!atomic_compare_exchange_weak(&hs->head, &n->next, n))
        ;
}

void
spool_holdset_release(struct spool_holdset *hs)
{
    struct spool_hold *h = atomic_exchange(&hs->head, NULL);
    while (h != NULL) {
        struct spool_hold *next = h->next;
        atomic_fetch_sub(&h->seg->holds, 1);
        spool_segment_put(h->seg);
        xfree(h);
        h = next;
    }
    hs->commit_seg = NULL;
    hs->commit_off = 0;
}

void
spool_holdset_move(struct spool_holdset *dst, struct spool_holdset *src)
{
    atomic_store(&dst->head, atomic_exchange(&src->head, NULL));
    dst->commit_seg = src->commit_seg;
    dst->commit_off = src->commit_off;
    src->commit_seg = NULL;
    src->commit_off = 0;
}

void
spool_retire(struct spool_holdset *hs, uint64_t qid)
{
    struct spool_segment *seg = hs->commit_seg;
    struct spool *owner = seg != NULL ? seg->owner : NULL;
    if (owner == NULL) {
        spool_holdset_release(hs);
        return;
    }
    struct spool_retire *r = xcalloc(1, sizeof *r);
    spool_holdset_move(&r->holds, hs);
    r->qid = qid;
    r->next = atomic_load(&owner->retire_inbox);
    while (!atomic_compare_exchange_weak(&owner->retire_inbox, &r->next, r))
        ;
}

/* COMMIT -> RETIRED in place: one record header, its CRC recomputed. A torn
 * write leaves a bad header, which recovery treats as damage: the message
 * is then not delivered, which is right for a finished one. */
static bool
spool_retire_write(struct spool_segment *seg, uint32_t off, uint64_t qid)
{
    if ((size_t)off + SPOOL_RECORD_HEADER_SIZE > seg->size)
        return false;
    uint8_t h[SPOOL_RECORD_HEADER_SIZE];
    spool_settle(seg, off, sizeof h);
    memcpy(h, seg->base + off, sizeof h);
    if (le_get_u32(h) != SPOOL_RECORD_MAGIC || h[4] != SPOOL_REC_COMMIT
        || le_get_u64(h + 16) != qid)
        return false;
    h[4] = SPOOL_REC_RETIRED;
    le_put_u32(h + 28, spool_record_header_crc(seg->salt, h));
    spool_store(seg, off, h, sizeof h);
    return !seg->failed;
}

void
spool_retire_pump(struct spool *sp)
{
    struct spool_retire *in = NULL;
    if (atomic_load_explicit(&sp->retire_inbox, memory_order_relaxed) != NULL)
        in = atomic_exchange(&sp->retire_inbox, NULL);
    while (in != NULL) {
        struct spool_retire *r = in;
        in = r->next;
        struct spool_segment *seg = r->holds.commit_seg;
        struct spool_segment *dseg = NULL;
        if (!seg->failed && seg == sp->cur && seg->tail + SPOOL_RECORD_HEADER_SIZE <= seg->size
            && spool_append(sp, NULL, SPOOL_REC_DONE, 0, r->qid, NULL, 0, &dseg, NULL) == 0
            && dseg == seg) {
            /* The COMMIT's segment is still the one appended to: a DONE
             * beside it retires the message where it lies, appended at the
             * tail with the other records (one store for many), where a
             * rewrite would dirty an old page for the next fsync to seek to. */
            r->gen = spool_dirty(sp, seg, false);
        } else if (seg->failed || !spool_retire_write(seg, r->holds.commit_off, r->qid)) {
            /* Not retired: every segment the message touched stays until a
             * restart finds its final statuses. */
            r->gen = UINT64_MAX;
        } else {
            r->gen = spool_dirty(sp, seg, false);
        }
        r->next = sp->retire_wait;
        sp->retire_wait = r;
    }
    struct spool_retire **pp = &sp->retire_wait;
    while (*pp != NULL) {
        struct spool_retire *r = *pp;
        if (r->holds.commit_seg->sync_gen < r->gen) {
            pp = &r->next;
            continue;
        }
        *pp = r->next;
        spool_holdset_release(&r->holds);
        xfree(r);
    }
}

size_t
spool_removable(struct spool *sp, struct spool_segment **segs, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < sp->nall && n < max; i++) {
        struct spool_segment *seg = sp->all[i];
        if (seg == sp->cur || seg == sp->spare || !seg->sealed || seg->failed
            || seg->removing || seg->sync_inflight_gen != 0
            || atomic_load(&seg->holds) != 0)
            continue;
        seg->removing = true;
        segs[n++] = seg;
    }
    return n;
}

void
spool_segment_removed(struct spool *sp, struct spool_segment *seg)
{
    for (size_t i = 0; i < sp->nall; i++) {
        if (sp->all[i] != seg)
            continue;
        sp->all[i] = sp->all[--sp->nall];
        for (size_t k = 0; k < sp->npending; k++)
            if (sp->pending[k] == seg)
                sp->pending[k--] = sp->pending[--sp->npending];
        seg->owner = NULL;
        spool_segment_put(seg);
        return;
    }
}

void
spool_adopt_segment(struct spool *sp, struct spool_segment *seg)
{
    spool_segment_get(seg);
    seg->sealed = true;
    seg->owner = sp;
    spool_all_add(sp, seg);
}
