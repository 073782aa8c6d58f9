/*
 * spool_recovery - rebuilds the queue from mapped segments after a restart
 * (and for ringmta-ctl's read-only listing).
 *
 * Pure: reads mappings handed in, does no I/O, any single thread. One
 * struct spool_recovery is used by one thread from init to free.
 *
 * How a segment is read: from the 64-byte header, record by record. A record
 * is trusted only if its magic, salt-seeded header CRC and span (multiple of
 * 8, inside the segment) check out; its payload only if the payload CRC
 * matches. A record that fails is damage: for a bad header the scan
 * resynchronises by trying every following 8-byte boundary until a header
 * validates (the salt makes body octets that look like a record fail); for a
 * bad payload the span, trusted with the header, is skipped. RESERVED
 * records (chunks still being received at the crash) are skipped by span.
 *
 * Invariants: a message is returned only with an intact ENVELOPE, COMMIT and
 * every chunk 0..n-1, never in part (RELIABILITY rows 39, 41). An ABORT
 * always wins. A committed but incomplete message that is not DONE is
 * reported as damage (all its surviving records), so it gets quarantined.
 * max_qid covers every qid in a valid header, whatever became of it.
 *
 * Hazards: extents point into the mappings, so they live as long as the
 * references taken in add_segment (put in spool_recovery_free). Memory is
 * O(records), about 100 bytes per message while adding.
 */
#include "spool.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "crc32c.h"
#include "le.h"

enum {
    REC_KIND_CONTENT = 1,  /* ENVELOPE, BODY, RESERVED, COMMIT, unknown */
    REC_KIND_STATUS = 2,   /* RCPT_STATUS */
    REC_KIND_TERMINAL = 4, /* DONE, ABORT: cancels content elsewhere */
};

struct rec_seg {
    struct spool_segment *seg;
    const uint8_t *base;
    size_t size;
    uint32_t worker;
    uint64_t seq;
};

struct rec_loc {
    uint32_t seg;   /* index into rec_priv.segs */
    uint32_t off;   /* record offset */
    uint32_t span;
};

struct rec_chunk {
    struct rec_loc loc;
    uint32_t index;
    uint32_t len;   /* body octets, after the chunk prefix */
};

struct rec_status {
    uint64_t seq;
    uint32_t worker;
    uint32_t off;
    uint32_t rcpt;
    uint8_t state;
    uint8_t flags;              /* SPOOL_RCPT_* */
    uint64_t next_attempt_ms;
};

struct rec_segref {
    uint32_t seg;
    uint8_t kinds;
};

struct rec_msg {
    uint64_t qid;
    bool has_env, has_commit, has_content, done, aborted, damaged, retired;
    bool done_beside;           /* a DONE in the COMMIT's own segment */
    uint32_t done_seg;
    struct rec_loc env, commit;
    uint32_t env_len;
    uint64_t body_len;
    uint32_t nchunks, flags;
    struct rec_chunk *chunks;
    uint32_t nch, capch;
    struct rec_status *st;
    uint32_t nst, capst;
    struct rec_segref *segs;
    uint32_t nsegs, capsegs;
};

struct rec_priv {
    struct rec_seg *segs;
    size_t nsegs, capsegs;
    struct rec_msg *msgs;
    size_t nmsgs, capmsgs;
    uint32_t *table;   /* open addressing: index into msgs, UINT32_MAX empty */
    size_t tcap;       /* power of two */
    size_t capdamage;
    size_t capout;
    bool finished;
};

#define REC_EMPTY UINT32_MAX
#define REC_BODY_OFF (SPOOL_RECORD_HEADER_SIZE + SPOOL_CHUNK_PREFIX)

/* Grows *arr (element size sz) so that one more element fits. */
static void *
spool_recovery_grow(void *arr, size_t n, size_t *cap, size_t sz)
{
    if (n < *cap)
        return arr;
    *cap = *cap ? *cap * 2 : 8;
    return xrealloc(arr, *cap * sz);
}

static void *
spool_recovery_grow32(void *arr, uint32_t n, uint32_t *cap, size_t sz)
{
    size_t c = *cap;
    arr = spool_recovery_grow(arr, n, &c, sz);
    *cap = (uint32_t)c;
    return arr;
}

void
spool_recovery_init(struct spool_recovery *r)
{
    memset(r, 0, sizeof *r);
    r->priv = xcalloc(1, sizeof(struct rec_priv));
}

/* --- the qid table --- */

static size_t
spool_recovery_hash(uint64_t qid, size_t cap)
{
    return (size_t)((qid * 0x9e3779b97f4a7c15ull) >> 17) & (cap - 1);
}

static void
spool_recovery_rehash(struct rec_priv *pv)
{
    size_t cap = pv->tcap ? pv->tcap * 2 : 1024;
    uint32_t *t = xmalloc(cap * sizeof *t);
    for (size_t i = 0; i < cap; i++)
        t[i] = REC_EMPTY;
    for (size_t m = 0; m < pv->nmsgs; m++) {
        size_t h = spool_recovery_hash(pv->msgs[m].qid, cap);
        while (t[h] != REC_EMPTY)
            h = (h + 1) & (cap - 1);
        t[h] = (uint32_t)m;
    }
    xfree(pv->table);
    pv->table = t;
    pv->tcap = cap;
}

static struct rec_msg *
spool_recovery_msg(struct rec_priv *pv, uint64_t qid)
{
    if (pv->nmsgs * 2 >= pv->tcap)
        spool_recovery_rehash(pv);
    size_t h = spool_recovery_hash(qid, pv->tcap);
    while (pv->table[h] != REC_EMPTY) {
        if (pv->msgs[pv->table[h]].qid == qid)
            return &pv->msgs[pv->table[h]];
        h = (h + 1) & (pv->tcap - 1);
    }
    pv->msgs = spool_recovery_grow(pv->msgs, pv->nmsgs, &pv->capmsgs, sizeof *pv->msgs);
    struct rec_msg *m = &pv->msgs[pv->nmsgs];
    memset(m, 0, sizeof *m);
    m->qid = qid;
    pv->table[h] = (uint32_t)pv->nmsgs++;
    return m;
}

/* --- damage --- */

static void
spool_recovery_damage(struct spool_recovery *r, struct spool_segment *seg, size_t off,
                      size_t len, const char *why, uint64_t qid)
{
    struct rec_priv *pv = r->priv;
    r->damage = spool_recovery_grow(r->damage, r->ndamage, &pv->capdamage,
                                    sizeof *r->damage);
    r->damage[r->ndamage++] = (struct spool_damage){
        .seg = seg, .off = (uint32_t)off, .len = (uint32_t)len, .why = why, .qid = qid
    };
}

/* --- scanning one segment --- */

/* True when a trustworthy record header starts at off; h receives a copy.
 * Only the copy is used afterwards: ringmta-ctl reads segments the daemon
 * is writing, and a header read twice could change in between. */
static bool
spool_recovery_header_ok(const uint8_t *base, size_t size, size_t off, uint64_t salt,
                         uint8_t *h)
{
    if (off + SPOOL_RECORD_HEADER_SIZE > size)
        return false;
    if (le_get_u32(base + off) != SPOOL_RECORD_MAGIC)
        return false;
    memcpy(h, base + off, SPOOL_RECORD_HEADER_SIZE);
    if (le_get_u32(h) != SPOOL_RECORD_MAGIC
        || le_get_u32(h + 28) != spool_record_header_crc(salt, h))
        return false;
    uint32_t span = le_get_u32(h + 8);
    uint32_t len = le_get_u32(h + 12);
    return span >= SPOOL_RECORD_HEADER_SIZE && span % 8 == 0 && span <= size - off
           && len <= span - SPOOL_RECORD_HEADER_SIZE && h[6] == 0 && h[7] == 0;
}

static void
spool_recovery_segref(struct rec_msg *m, uint32_t seg, uint8_t kind)
{
    /* One segment is scanned at a time, so its entries are adjacent. */
    if (m->nsegs && m->segs[m->nsegs - 1].seg == seg) {
        m->segs[m->nsegs - 1].kinds |= kind;
        return;
    }
    m->segs = spool_recovery_grow32(m->segs, m->nsegs, &m->capsegs, sizeof *m->segs);
    m->segs[m->nsegs++] = (struct rec_segref){ .seg = seg, .kinds = kind };
}

/* One record whose header (h, a private copy) validated. */
static void
spool_recovery_record(struct spool_recovery *r, uint32_t si, size_t off, const uint8_t *h)
{
    struct rec_priv *pv = r->priv;
    struct rec_seg *rs = &pv->segs[si];
    uint8_t type = h[4];
    uint32_t span = le_get_u32(h + 8);
    uint32_t len = le_get_u32(h + 12);
    uint64_t qid = le_get_u64(h + 16);
    const uint8_t *pl = rs->base + off + SPOOL_RECORD_HEADER_SIZE;
    struct rec_loc loc = { si, (uint32_t)off, span };

    if (qid > r->max_qid)
        r->max_qid = qid;
    struct rec_msg *m = spool_recovery_msg(pv, qid);

    switch (type) {
    case SPOOL_REC_DONE:
    case SPOOL_REC_ABORT:
        spool_recovery_segref(m, si, REC_KIND_TERMINAL);
        break;
    case SPOOL_REC_RCPT_STATUS:
        spool_recovery_segref(m, si, REC_KIND_STATUS);
        break;
    default:
        spool_recovery_segref(m, si, REC_KIND_CONTENT);
        break;
    }
    if (type == SPOOL_REC_RESERVED) {
        m->has_content = true; /* in flight at the crash: skipped by span */
        return;
    }
    if (type == SPOOL_REC_NONE || type > SPOOL_REC_RETIRED)
        return; /* unknown (newer) type: skipped by span */

    if (le_get_u32(h + 24) != crc32c(0, pl, len)) {
        spool_recovery_damage(r, rs->seg, off, span, "payload checksum mismatch", qid);
        if (type == SPOOL_REC_ENVELOPE || type == SPOOL_REC_BODY
            || type == SPOOL_REC_COMMIT) {
            m->damaged = true;
            m->has_content = true;
        }
        return;
    }

    switch (type) {
    case SPOOL_REC_ENVELOPE:
        m->has_content = true;
        if (m->has_env)
            m->damaged = true; /* two envelopes for one qid: trust neither */
        m->has_env = true;
        m->env = loc;
        m->env_len = len;
        break;
    case SPOOL_REC_BODY:
        m->has_content = true;
        if (len < SPOOL_CHUNK_PREFIX) {
            spool_recovery_damage(r, rs->seg, off, span, "body chunk too short", qid);
            m->damaged = true;
            break;
        }
        m->chunks = spool_recovery_grow32(m->chunks, m->nch, &m->capch, sizeof *m->chunks);
        m->chunks[m->nch++] = (struct rec_chunk){
            .loc = loc, .index = le_get_u32(pl), .len = len - SPOOL_CHUNK_PREFIX
        };
        break;
    case SPOOL_REC_COMMIT:
        m->has_content = true;
        if (len != 16 || m->has_commit) {
            spool_recovery_damage(r, rs->seg, off, span, "malformed commit record", qid);
            m->damaged = true;
            break;
        }
        m->has_commit = true;
        m->commit = loc;
        if (m->done && m->done_seg == si)
            m->done_beside = true;
        m->body_len = le_get_u64(pl);
        m->nchunks = le_get_u32(pl + 8);
        m->flags = le_get_u32(pl + 12);
        break;
    case SPOOL_REC_RCPT_STATUS:
        if (len != 16)
            break; /* ignored: a lost status only means a duplicate delivery */
        m->st = spool_recovery_grow32(m->st, m->nst, &m->capst, sizeof *m->st);
        m->st[m->nst++] = (struct rec_status){
            .seq = rs->seq, .worker = rs->worker, .off = (uint32_t)off,
            .rcpt = le_get_u32(pl), .state = pl[4], .flags = pl[5],
            .next_attempt_ms = le_get_u64(pl + 8),
        };
        break;
    case SPOOL_REC_DONE:
        m->done = true;
        m->done_seg = si;
        if (m->has_commit && m->commit.seg == si)
            m->done_beside = true;
        break;
    case SPOOL_REC_ABORT:
        m->aborted = true;
        break;
    case SPOOL_REC_RETIRED:
        /* The finished message's COMMIT, rewritten: nothing of it lives. */
        m->has_content = true;
        m->retired = true;
        break;
    default:
        break;
    }
}

/* First 8-aligned offset >= off (and <= size) whose 8 octets are not all
 * zero. A segment is mostly zeros past its written part; word-at-a-time
 * makes the resync scan over them cheap. */
static size_t
spool_recovery_skip_zeros(const uint8_t *base, size_t off, size_t size)
{
    while (off + 64 <= size) {
        uint64_t w[8];
        memcpy(w, base + off, sizeof w);
        if ((w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7]) != 0)
            break;
        off += 64;
    }
    while (off + 8 <= size) {
        uint64_t x;
        memcpy(&x, base + off, 8);
        if (x != 0)
            break;
        off += 8;
    }
    return off;
}

/* Offset just past the last non-zero octet of base[from..to), or from. */
static size_t
spool_recovery_last_nonzero(const uint8_t *base, size_t from, size_t to)
{
    /* Word steps down to an 8-aligned boundary, then octets. */
    while (to > from && to % 8 != 0 && base[to - 1] == 0)
        to--;
    while (to >= from + 8 && to % 8 == 0) {
        uint64_t x;
        memcpy(&x, base + to - 8, 8);
        if (x != 0)
            break;
        to -= 8;
    }
    while (to > from && base[to - 1] == 0)
        to--;
    return to;
}

static bool
spool_recovery_all_zero(const uint8_t *p, size_t n)
{
    size_t words = n & ~(size_t)7;
    if (spool_recovery_skip_zeros(p, 0, words) != words)
        return false;
    for (size_t i = words; i < n; i++)
        if (p[i] != 0)
            return false;
    return true;
}

/* Scans one mapped segment. */
int
spool_recovery_add_segment(struct spool_recovery *r, struct spool_segment *seg,
                           const uint8_t *base, size_t size)
{
    struct rec_priv *pv = r->priv;
    uint32_t worker;
    uint64_t seq, salt;

    if (size > SPOOL_SEGMENT_MAX_SIZE
        || spool_segment_header_read(base, size, &worker, &seq, &salt) < 0)
        return -EINVAL;
    if (seg)
        spool_segment_get(seg);
    pv->segs = spool_recovery_grow(pv->segs, pv->nsegs, &pv->capsegs, sizeof *pv->segs);
    uint32_t si = (uint32_t)pv->nsegs++;
    pv->segs[si] = (struct rec_seg){
        .seg = seg, .base = base, .size = size, .worker = worker, .seq = seq
    };
    if (seq + 1 > r->next_segment_seq)
        r->next_segment_seq = seq + 1;

    size_t off = SPOOL_SEGMENT_HEADER_SIZE;
    uint8_t h[SPOOL_RECORD_HEADER_SIZE];
    while (off + SPOOL_RECORD_HEADER_SIZE <= size) {
        if (spool_recovery_header_ok(base, size, off, salt, h)) {
            spool_recovery_record(r, si, off, h);
            off += le_get_u32(h + 8);
            continue;
        }
        /* Resynchronise: the next 8-byte boundary where a header validates
         * (the loop above then reads it again into h). */
        size_t next = spool_recovery_skip_zeros(base, off + 8, size);
        while (next + SPOOL_RECORD_HEADER_SIZE <= size
               && !spool_recovery_header_ok(base, size, next, salt, h))
            next = spool_recovery_skip_zeros(base, next + 8, size);
        if (next + SPOOL_RECORD_HEADER_SIZE > size) {
            /* Nothing valid follows: the end of the written part. Non-zero
             * octets here are a torn record (or a truncated file). */
            size_t end = spool_recovery_last_nonzero(base, off, size);
            if (end > off)
                spool_recovery_damage(r, seg, off, end - off,
                                      "unreadable bytes after the last record", 0);
            break;
        }
        bool zero = spool_recovery_all_zero(base + off, next - off);
        spool_recovery_damage(r, seg, off, next - off,
                              zero ? "zeroed range between records" : "bad record header",
                              0);
        off = next;
    }
    return 0;
}

/* --- resolving --- */

static int
spool_recovery_cmp_chunk(const void *a, const void *b)
{
    const struct rec_chunk *x = a, *y = b;
    return x->index < y->index ? -1 : x->index > y->index;
}

static int
spool_recovery_cmp_status(const void *a, const void *b)
{
    const struct rec_status *x = a, *y = b;
    if (x->seq != y->seq)
        return x->seq < y->seq ? -1 : 1;
    if (x->worker != y->worker)
        return x->worker < y->worker ? -1 : 1;
    return x->off < y->off ? -1 : x->off > y->off;
}

static int
spool_recovery_cmp_msg(const void *a, const void *b)
{
    const struct spool_recovered_msg *x = a, *y = b;
    return x->qid < y->qid ? -1 : x->qid > y->qid;
}

static bool
spool_recovery_final(uint8_t state)
{
    return state == RCPT_DELIVERED || state == RCPT_FAILED;
}

/* Chunks 0..nchunks-1 exactly once each, adding up to body_len. */
static bool
spool_recovery_chunks_ok(struct rec_msg *m)
{
    if (m->nch != m->nchunks)
        return false;
    qsort(m->chunks, m->nch, sizeof *m->chunks, spool_recovery_cmp_chunk);
    uint64_t total = 0;
    for (uint32_t i = 0; i < m->nch; i++) {
        if (m->chunks[i].index != i)
            return false;
        total += m->chunks[i].len;
    }
    return total == m->body_len;
}

/* Per recipient, in (seq, worker, offset) order: last wins, final sticks. */
static void
spool_recovery_apply_status(struct rec_msg *m, struct spool_recovered_msg *out)
{
    struct envelope *env = &out->env;
    if (m->nst == 0 || env->nrcpt == 0)
        return;
    uint64_t *next = xcalloc(env->nrcpt, sizeof *next);
    qsort(m->st, m->nst, sizeof *m->st, spool_recovery_cmp_status);
    for (uint32_t i = 0; i < m->nst; i++) {
        struct rec_status *s = &m->st[i];
        if (s->rcpt >= env->nrcpt || s->state > RCPT_FAILED)
            continue;
        struct envelope_rcpt *rc = &env->rcpts[s->rcpt];
        if (s->flags & SPOOL_RCPT_DELAY_WARNED)
            rc->delay_warned = true;
        if (spool_recovery_final(rc->state) && !spool_recovery_final(s->state))
            continue;
        rc->state = s->state;
        next[s->rcpt] = s->next_attempt_ms;
    }
    bool any = false;
    for (uint32_t i = 0; i < env->nrcpt; i++) {
        if (env->rcpts[i].state != RCPT_DEFERRED)
            continue;
        if (!any || next[i] < out->next_attempt_ms)
            out->next_attempt_ms = next[i];
        any = true;
    }
    xfree(next);
}

/* Reports every surviving record of an incomplete message as damage, so the
 * whole message is quarantined together. */
static void
spool_recovery_quarantine_msg(struct spool_recovery *r, struct rec_msg *m)
{
    struct rec_priv *pv = r->priv;
    static const char why[] = "committed message incomplete (chunk missing or damaged)";
    if (m->has_env)
        spool_recovery_damage(r, pv->segs[m->env.seg].seg, m->env.off, m->env.span, why,
                              m->qid);
    for (uint32_t i = 0; i < m->nch; i++) {
        struct rec_loc *l = &m->chunks[i].loc;
        spool_recovery_damage(r, pv->segs[l->seg].seg, l->off, l->span, why, m->qid);
    }
    spool_recovery_damage(r, pv->segs[m->commit.seg].seg, m->commit.off, m->commit.span,
                          why, m->qid);
}

/* Builds the returned message; false when it is not whole. */
static bool
spool_recovery_build(struct spool_recovery *r, struct rec_msg *m,
                     struct spool_recovered_msg *out)
{
    struct rec_priv *pv = r->priv;
    if (!m->has_env || m->damaged || !spool_recovery_chunks_ok(m))
        return false;
    struct rec_seg *es = &pv->segs[m->env.seg];
    memset(out, 0, sizeof *out);
    if (envelope_decode(es->base + m->env.off + SPOOL_RECORD_HEADER_SIZE, m->env_len,
                        &out->env) < 0)
        return false;
    out->qid = m->qid;
    out->body_len = m->body_len;
    out->flags = m->flags;
    out->done = m->done;
    out->nchunks = m->nchunks;
    if (m->nchunks)
        out->chunks = xcalloc(m->nchunks, sizeof *out->chunks);
    for (uint32_t i = 0; i < m->nchunks; i++) {
        struct rec_chunk *c = &m->chunks[i];
        out->chunks[i] = (struct spool_extent){
            .seg = pv->segs[c->loc.seg].seg, .off = c->loc.off + REC_BODY_OFF, .len = c->len
        };
    }
    spool_recovery_apply_status(m, out);
    for (uint32_t k = 0; k < m->nsegs; k++)
        if (pv->segs[m->segs[k].seg].seg != NULL)
            spool_holdset_add(&out->holds, pv->segs[m->segs[k].seg].seg);
    out->holds.commit_seg = pv->segs[m->commit.seg].seg;
    out->holds.commit_off = m->commit.off;
    return true;
}

/*
 * Which segments may go: start from those holding only dead qids, then keep
 * any whose DONE/ABORT cancels a message with bytes in a kept segment
 * (deleting it would bring that message back), until nothing changes.
 */
static void
spool_recovery_deletable(struct spool_recovery *r, const bool *live)
{
    struct rec_priv *pv = r->priv;
    bool *ok = xcalloc(pv->nsegs ? pv->nsegs : 1, sizeof *ok);
    for (size_t s = 0; s < pv->nsegs; s++)
        ok[s] = pv->segs[s].seg != NULL;
    for (size_t i = 0; i < pv->nmsgs; i++)
        if (live[i])
            for (uint32_t k = 0; k < pv->msgs[i].nsegs; k++)
                ok[pv->msgs[i].segs[k].seg] = false;
    bool changed = true;
    while (changed) {
        changed = false;
        for (size_t i = 0; i < pv->nmsgs; i++) {
            struct rec_msg *m = &pv->msgs[i];
            if (m->retired || m->done_beside)
                continue;   /* cancelled where it lies: no other DONE needed */
            bool content_kept = false;
            for (uint32_t k = 0; k < m->nsegs; k++)
                if ((m->segs[k].kinds & REC_KIND_CONTENT) && !ok[m->segs[k].seg])
                    content_kept = true;
            if (!content_kept)
                continue;
            for (uint32_t k = 0; k < m->nsegs; k++) {
                if ((m->segs[k].kinds & REC_KIND_TERMINAL) && ok[m->segs[k].seg]) {
                    ok[m->segs[k].seg] = false;
                    changed = true;
                }
            }
        }
    }
    for (size_t s = 0; s < pv->nsegs; s++) {
        if (pv->segs[s].seg == NULL)
            continue;
        if (!ok[s]) {
            r->kept = xrealloc(r->kept, (r->nkept + 1) * sizeof *r->kept);
            r->kept[r->nkept++] = pv->segs[s].seg;
            continue;
        }
        r->deletable = xrealloc(r->deletable, (r->ndeletable + 1) * sizeof *r->deletable);
        r->deletable[r->ndeletable++] = pv->segs[s].seg;
    }
    xfree(ok);
}

void
spool_recovery_finish(struct spool_recovery *r)
{
    struct rec_priv *pv = r->priv;
    if (pv->finished)
        return;
    pv->finished = true;
    bool *live = xcalloc(pv->nmsgs ? pv->nmsgs : 1, sizeof *live);

    for (size_t i = 0; i < pv->nmsgs; i++) {
        struct rec_msg *m = &pv->msgs[i];
        /* A DONE beside the COMMIT retires the message where it lies, as a
         * RETIRED rewrite does: nothing of it is needed, nor kept for it. */
        if (m->aborted || m->retired || m->done_beside)
            continue;
        if (!m->has_commit) {
            if (m->has_content)
                r->dropped_uncommitted++;
            continue;
        }
        r->msgs = spool_recovery_grow(r->msgs, r->nmsgs, &pv->capout, sizeof *r->msgs);
        if (spool_recovery_build(r, m, &r->msgs[r->nmsgs])) {
            live[i] = !m->done;
            r->nmsgs++;
        } else if (!m->done) {
            spool_recovery_quarantine_msg(r, m);
        }
        /* done and incomplete: its bytes were already removed; nothing to do */
    }
    if (r->nmsgs > 1)
        qsort(r->msgs, r->nmsgs, sizeof *r->msgs, spool_recovery_cmp_msg);
    spool_recovery_deletable(r, live);
    xfree(live);

    for (size_t i = 0; i < pv->nmsgs; i++) {
        xfree(pv->msgs[i].chunks);
        xfree(pv->msgs[i].st);
        xfree(pv->msgs[i].segs);
    }
    pv->msgs = xfree(pv->msgs);
    pv->nmsgs = 0;
    pv->table = xfree(pv->table);
    pv->tcap = 0;
}

void
spool_recovery_free(struct spool_recovery *r)
{
    struct rec_priv *pv = r->priv;
    if (pv) {
        if (!pv->finished) {
            for (size_t i = 0; i < pv->nmsgs; i++) {
                xfree(pv->msgs[i].chunks);
                xfree(pv->msgs[i].st);
                xfree(pv->msgs[i].segs);
            }
            xfree(pv->msgs);
            xfree(pv->table);
        }
        for (size_t s = 0; s < pv->nsegs; s++)
            spool_segment_put(pv->segs[s].seg);
        xfree(pv->segs);
        xfree(pv);
    }
    for (size_t i = 0; i < r->nmsgs; i++) {
        envelope_free(&r->msgs[i].env);
        xfree(r->msgs[i].chunks);
        spool_holdset_release(&r->msgs[i].holds);
    }
    xfree(r->msgs);
    xfree(r->damage);
    xfree(r->deletable);
    xfree(r->kept);
    memset(r, 0, sizeof *r);
}
