/*
 * test_spool_recovery - rebuilding the queue from segments: only whole,
 * committed messages come back, whatever was cut, flipped or zeroed.
 * Segments are written by the real append side into anonymous mappings.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "alloc.h"
#include "spool.h"

static void
test_unmap(struct spool_segment *seg)
{
    munmap(seg->base, seg->size);
}

static void
test_setup(void)
{
    spool_set_unmap(test_unmap);
}

TestSuite(spool_recovery, .init = test_setup);

static struct spool_segment *
test_attach(struct spool *sp, size_t size)
{
    uint8_t *base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                         -1, 0);
    cr_assert_neq(base, MAP_FAILED);
    uint64_t seq = spool_next_segment_seq(sp);
    struct spool_segment *seg = spool_segment_attach(sp, seq, -1, base, size,
                                                     0x0123456789abcdefull * (seq + 1));
    cr_assert_not_null(seg);
    return seg;
}

static uint32_t
test_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16
           | (uint32_t)p[3] << 24;
}

static void
test_fill(uint8_t *p, size_t n, uint64_t seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)((seed * 131 + i * 7 + (i >> 9)) & 0xff);
}

static char test_names[64][32];
static struct envelope_rcpt test_rcpts[64][3];

/* Envelope number i: distinct sender, 1..3 recipients. */
static struct envelope
test_env(unsigned i)
{
    i %= 64;
    snprintf(test_names[i], sizeof test_names[i], "sender%u@example.com", i);
    for (unsigned k = 0; k < 3; k++)
        test_rcpts[i][k] = (struct envelope_rcpt){ .addr = k == 0 ? "a@x" : k == 1 ? "b@y"
                                                                             : "c@z" };
    return (struct envelope){ .sender = test_names[i], .rcpts = test_rcpts[i],
                              .nrcpt = 1 + i % 3, .arrival_ms = 1000 + i };
}

static int
test_write_body(struct spool_msg *m, size_t n, uint64_t seed, size_t step)
{
    uint8_t *src = xmalloc(n ? n : 1);
    test_fill(src, n, seed);
    size_t done = 0;
    while (done < n) {
        uint8_t *p;
        size_t avail;
        int rc = spool_msg_space(m, &p, &avail);
        if (rc < 0) {
            free(src);
            return rc;
        }
        size_t k = n - done < avail ? n - done : avail;
        if (k > step)
            k = step;
        memcpy(p, src + done, k);
        spool_msg_wrote(m, k);
        done += k;
    }
    free(src);
    return 0;
}

/* Writes one whole message; returns the segment tail after its COMMIT. */
static size_t
test_message(struct spool *sp, uint64_t qid, size_t n)
{
    struct envelope env = test_env((unsigned)qid);
    struct spool_msg *m;
    cr_assert_eq(spool_msg_begin(sp, qid, &env, 0, false, &m), 0);
    cr_assert_eq(test_write_body(m, n, qid, 1500), 0);
    struct spool_ticket t;
    cr_assert_eq(spool_msg_commit(m, &t), 0);
    return t.seg[t.n - 1]->tail;
}

/* Compares a recovered message with what test_message wrote. base is used
 * for extents whose seg is NULL (copies of a segment). */
static void
test_check(const struct spool_recovered_msg *rm, const uint8_t *base, size_t n)
{
    cr_assert_eq(rm->body_len, n, "qid %llu length", (unsigned long long)rm->qid);
    uint8_t *want = xmalloc(n ? n : 1);
    test_fill(want, n, rm->qid);
    size_t at = 0;
    for (uint32_t i = 0; i < rm->nchunks; i++) {
        const uint8_t *b = rm->chunks[i].seg ? rm->chunks[i].seg->base : base;
        cr_assert_leq(at + rm->chunks[i].len, n);
        cr_assert_eq(memcmp(b + rm->chunks[i].off, want + at, rm->chunks[i].len), 0,
                     "qid %llu chunk %u", (unsigned long long)rm->qid, i);
        at += rm->chunks[i].len;
    }
    cr_assert_eq(at, n);
    struct envelope env = test_env((unsigned)rm->qid);
    cr_assert_str_eq(rm->env.sender, env.sender);
    cr_assert_eq(rm->env.nrcpt, env.nrcpt);
    cr_assert_eq(rm->env.arrival_ms, env.arrival_ms);
    free(want);
}

static int
test_recover(struct spool_recovery *r, struct spool_segment **segs, size_t n)
{
    spool_recovery_init(r);
    for (size_t i = 0; i < n; i++) {
        int rc = spool_recovery_add_segment(r, segs[i], segs[i]->base, segs[i]->size);
        if (rc < 0)
            return rc;
    }
    spool_recovery_finish(r);
    return 0;
}

static const struct spool_recovered_msg *
test_find(const struct spool_recovery *r, uint64_t qid)
{
    for (size_t i = 0; i < r->nmsgs; i++)
        if (r->msgs[i].qid == qid)
            return &r->msgs[i];
    return NULL;
}

/* Offsets of the records of one qid, by walking with valid headers. */
static size_t
test_records(const struct spool_segment *seg, uint64_t qid, uint8_t type, size_t *offs,
             size_t max)
{
    size_t n = 0, off = SPOOL_SEGMENT_HEADER_SIZE;
    while (off + SPOOL_RECORD_HEADER_SIZE <= seg->tail) {
        const uint8_t *h = seg->base + off;
        uint64_t q = test_u32(h + 16) | (uint64_t)test_u32(h + 20) << 32;
        if (q == qid && h[4] == type && n < max)
            offs[n++] = off;
        off += test_u32(h + 8);
    }
    return n;
}

static bool
test_deletable(const struct spool_recovery *r, const struct spool_segment *seg)
{
    for (size_t i = 0; i < r->ndeletable; i++)
        if (r->deletable[i] == seg)
            return true;
    return false;
}

Test(spool_recovery, round_trip_of_many_messages)
{
    struct spool *sp = spool_new(0, 32 << 20);
    struct spool_segment *seg = test_attach(sp, 32 << 20);
    enum { N = 200 };
    size_t sizes[N + 1];
    for (uint64_t q = 1; q <= N; q++) {
        sizes[q] = (q * 7919) % 60000;
        test_message(sp, q, sizes[q]);
    }
    struct spool_recovery r;
    cr_assert_eq(test_recover(&r, &seg, 1), 0);
    cr_assert_eq(r.nmsgs, N);
    cr_assert_eq(r.ndamage, 0);
    cr_assert_eq(r.dropped_uncommitted, 0);
    cr_assert_eq(r.max_qid, N);
    cr_assert_eq(r.next_segment_seq, seg->seq + 1);
    for (size_t i = 0; i < N; i++) {
        cr_assert_eq(r.msgs[i].qid, i + 1); /* sorted */
        cr_assert_not(r.msgs[i].done);
        test_check(&r.msgs[i], NULL, sizes[i + 1]);
        for (uint32_t k = 0; k < r.msgs[i].env.nrcpt; k++)
            cr_assert_eq(r.msgs[i].env.rcpts[k].state, RCPT_PENDING);
    }
    cr_assert_not(test_deletable(&r, seg));
    spool_recovery_free(&r);
    spool_free(sp);
}

/* Writes a segment of interleaved messages plus one still in flight; ends[q]
 * is the tail right after q's COMMIT. */
enum { CUT_N = 8 };

static struct spool_segment *
test_cut_segment(struct spool *sp, size_t *ends, size_t *sizes, struct spool_msg **open)
{
    struct spool_segment *seg = test_attach(sp, 128 << 10);
    struct envelope env = test_env(99);
    cr_assert_eq(spool_msg_begin(sp, 99, &env, 0, false, open), 0);
    cr_assert_eq(test_write_body(*open, 3000, 99, 3000), 0);
    for (uint64_t q = 1; q <= CUT_N; q += 2) {
        /* Two at a time, interleaved chunk by chunk. */
        struct envelope e1 = test_env((unsigned)q), e2 = test_env((unsigned)q + 1);
        struct spool_msg *a, *b;
        sizes[q] = q * 1100;
        sizes[q + 1] = q == 1 ? 0 : 9000 + q;
        cr_assert_eq(spool_msg_begin(sp, q, &e1, 0, false, &a), 0);
        cr_assert_eq(spool_msg_begin(sp, q + 1, &e2, 0, false, &b), 0);
        cr_assert_eq(test_write_body(a, sizes[q], q, 100000), 0);
        cr_assert_eq(test_write_body(b, sizes[q + 1], q + 1, 100000), 0);
        struct spool_ticket t;
        cr_assert_eq(spool_msg_commit(b, &t), 0);
        ends[q + 1] = seg->tail;
        cr_assert_eq(spool_msg_commit(a, &t), 0);
        ends[q] = seg->tail;
    }
    return seg; /* *open stays RESERVED: in flight at the "crash" */
}

static void
test_expect_cut(const struct spool_recovery *r, const uint8_t *copy, size_t t,
                const size_t *ends, const size_t *sizes)
{
    for (uint64_t q = 1; q <= CUT_N; q++) {
        const struct spool_recovered_msg *rm = test_find(r, q);
        if (ends[q] <= t) {
            cr_assert_not_null(rm, "cut at %zu lost qid %llu", t, (unsigned long long)q);
            test_check(rm, copy, sizes[q]);
        } else {
            cr_assert_null(rm, "cut at %zu returned partial qid %llu", t,
                           (unsigned long long)q);
        }
    }
    cr_assert_null(test_find(r, 99));
}

Test(spool_recovery, truncation_at_every_8_byte_boundary_yields_only_whole_messages)
{
    struct spool *sp = spool_new(0, 128 << 10);
    size_t ends[CUT_N + 1], sizes[CUT_N + 1];
    struct spool_msg *open;
    struct spool_segment *seg = test_cut_segment(sp, ends, sizes, &open);
    for (size_t t = 0; t <= seg->tail; t += 8) {
        uint8_t *copy = xmemdup(seg->base, t ? t : 1);
        struct spool_recovery r;
        spool_recovery_init(&r);
        int rc = spool_recovery_add_segment(&r, NULL, copy, t);
        if (t < SPOOL_SEGMENT_HEADER_SIZE) {
            cr_assert_eq(rc, -EINVAL);
        } else {
            cr_assert_eq(rc, 0);
            spool_recovery_finish(&r);
            test_expect_cut(&r, copy, t, ends, sizes);
        }
        spool_recovery_free(&r);
        free(copy);
    }
    spool_msg_abort(open);
    spool_free(sp);
}

/* The same, as a torn write: the file is whole but zeros (or junk) follow. */
Test(spool_recovery, torn_tail_zeroed_or_junk_yields_only_whole_messages)
{
    struct spool *sp = spool_new(0, 128 << 10);
    size_t ends[CUT_N + 1], sizes[CUT_N + 1];
    struct spool_msg *open;
    struct spool_segment *seg = test_cut_segment(sp, ends, sizes, &open);
    for (int junk = 0; junk < 2; junk++) {
        for (size_t t = SPOOL_SEGMENT_HEADER_SIZE; t <= seg->tail; t += 8) {
            uint8_t *copy = xmemdup(seg->base, seg->size);
            memset(copy + t, junk ? 0xab : 0, seg->size - t);
            struct spool_recovery r;
            spool_recovery_init(&r);
            cr_assert_eq(spool_recovery_add_segment(&r, NULL, copy, seg->size), 0);
            spool_recovery_finish(&r);
            test_expect_cut(&r, copy, t, ends, sizes);
            spool_recovery_free(&r);
            free(copy);
        }
    }
    spool_msg_abort(open);
    spool_free(sp);
}

Test(spool_recovery, flipped_bit_in_a_body_chunk_quarantines_only_that_message)
{
    struct spool *sp = spool_new(0, 4 << 20);
    struct spool_segment *seg = test_attach(sp, 4 << 20);
    test_message(sp, 1, 5000);
    test_message(sp, 2, 60000); /* chunks of 8 KiB, 16 KiB, 32 KiB, ... */
    test_message(sp, 3, 7000);
    size_t offs[8];
    size_t n = test_records(seg, 2, SPOOL_REC_BODY, offs, 8);
    cr_assert_geq(n, 3);
    seg->base[offs[1] + SPOOL_RECORD_HEADER_SIZE + SPOOL_CHUNK_PREFIX + 4321] ^= 0x10;

    struct spool_recovery r;
    cr_assert_eq(test_recover(&r, &seg, 1), 0);
    cr_assert_eq(r.nmsgs, 2);
    test_check(test_find(&r, 1), NULL, 5000);
    test_check(test_find(&r, 3), NULL, 7000);
    cr_assert_null(test_find(&r, 2));
    bool chunk_damaged = false, commit_quarantined = false, env_quarantined = false;
    size_t env_off, commit_off;
    cr_assert_eq(test_records(seg, 2, SPOOL_REC_ENVELOPE, &env_off, 1), 1);
    cr_assert_eq(test_records(seg, 2, SPOOL_REC_COMMIT, &commit_off, 1), 1);
    for (size_t i = 0; i < r.ndamage; i++) {
        cr_assert_eq(r.damage[i].qid, 2, "damage outside the message");
        cr_assert_eq(r.damage[i].seg, seg);
        chunk_damaged |= r.damage[i].off == offs[1];
        commit_quarantined |= r.damage[i].off == commit_off;
        env_quarantined |= r.damage[i].off == env_off;
    }
    cr_assert(chunk_damaged && commit_quarantined && env_quarantined);
    spool_recovery_free(&r);
    spool_free(sp);
}

Test(spool_recovery, flipped_bit_in_a_record_header_resynchronises)
{
    struct spool *sp = spool_new(0, 4 << 20);
    struct spool_segment *seg = test_attach(sp, 4 << 20);
    test_message(sp, 1, 5000);
    test_message(sp, 2, 20000);
    test_message(sp, 3, 7000);
    test_message(sp, 4, 100);
    size_t env2, body3[4];
    cr_assert_eq(test_records(seg, 2, SPOOL_REC_ENVELOPE, &env2, 1), 1);
    cr_assert_geq(test_records(seg, 3, SPOOL_REC_BODY, body3, 4), 1);
    uint32_t env2_span = test_u32(seg->base + env2 + 8);
    seg->base[env2 + 17] ^= 0x01;      /* qid: would move it to another message */
    seg->base[body3[0] + 9] ^= 0x40;   /* span: would skip the rest */

    struct spool_recovery r;
    cr_assert_eq(test_recover(&r, &seg, 1), 0);
    cr_assert_eq(r.nmsgs, 2);
    test_check(test_find(&r, 1), NULL, 5000);
    test_check(test_find(&r, 4), NULL, 100);
    bool env_damage = false, body_damage = false;
    for (size_t i = 0; i < r.ndamage; i++) {
        if (r.damage[i].off == env2 && r.damage[i].qid == 0) {
            cr_assert_eq(r.damage[i].len, env2_span); /* resync at the next record */
            cr_assert_str_eq(r.damage[i].why, "bad record header");
            env_damage = true;
        }
        if (r.damage[i].off == body3[0] && r.damage[i].qid == 0)
            body_damage = true;
    }
    cr_assert(env_damage && body_damage);
    /* The two broken messages are quarantined, never returned. */
    bool q2 = false, q3 = false;
    for (size_t i = 0; i < r.ndamage; i++) {
        q2 |= r.damage[i].qid == 2;
        q3 |= r.damage[i].qid == 3;
    }
    cr_assert(q2 && q3);
    spool_recovery_free(&r);
    spool_free(sp);
}

Test(spool_recovery, zeroed_range_does_not_hide_later_commits)
{
    struct spool *sp = spool_new(0, 4 << 20);
    struct spool_segment *seg = test_attach(sp, 4 << 20);
    test_message(sp, 1, 5000);
    size_t start = seg->tail;
    test_message(sp, 2, 20000);
    size_t end = seg->tail;
    test_message(sp, 3, 7000);
    memset(seg->base + start, 0, end - start); /* a lost run of sectors */

    struct spool_recovery r;
    cr_assert_eq(test_recover(&r, &seg, 1), 0);
    cr_assert_eq(r.nmsgs, 2);
    test_check(test_find(&r, 1), NULL, 5000);
    test_check(test_find(&r, 3), NULL, 7000);
    cr_assert_eq(r.ndamage, 1);
    cr_assert_eq(r.damage[0].off, start);
    cr_assert_eq(r.damage[0].len, end - start);
    spool_recovery_free(&r);
    spool_free(sp);
}

Test(spool_recovery, bad_segment_header_is_refused)
{
    struct spool *sp = spool_new(0, 65536);
    struct spool_segment *seg = test_attach(sp, 65536);
    test_message(sp, 1, 10);
    seg->base[30] ^= 4; /* salt */
    struct spool_recovery r;
    spool_recovery_init(&r);
    cr_assert_eq(spool_recovery_add_segment(&r, seg, seg->base, seg->size), -EINVAL);
    spool_recovery_finish(&r);
    cr_assert_eq(r.nmsgs, 0);
    spool_recovery_free(&r);
    spool_free(sp);
}

Test(spool_recovery, reserved_in_flight_chunks_are_skipped)
{
    struct spool *sp = spool_new(0, 4 << 20);
    struct spool_segment *seg = test_attach(sp, 4 << 20);
    struct envelope e = test_env(10);
    struct spool_msg *a, *c;
    cr_assert_eq(spool_msg_begin(sp, 10, &e, 0, false, &a), 0);
    cr_assert_eq(test_write_body(a, 5000, 10, 5000), 0);
    test_message(sp, 11, 20000);
    cr_assert_eq(spool_msg_begin(sp, 12, &e, 50000, false, &c), 0);
    cr_assert_eq(test_write_body(c, 30000, 12, 5000), 0);

    struct spool_recovery r;
    cr_assert_eq(test_recover(&r, &seg, 1), 0);
    cr_assert_eq(r.nmsgs, 1);
    test_check(&r.msgs[0], NULL, 20000);
    cr_assert_eq(r.dropped_uncommitted, 2);
    cr_assert_eq(r.max_qid, 12);
    cr_assert_eq(r.ndamage, 0);
    /* Nothing in it is worth keeping. */
    spool_recovery_free(&r);
    spool_msg_abort(a);
    spool_msg_abort(c);
    spool_free(sp);
}

Test(spool_recovery, abort_drops_the_qid_even_after_its_commit)
{
    struct spool *sp = spool_new(0, 4 << 20);
    struct spool_segment *seg = test_attach(sp, 4 << 20);
    test_message(sp, 1, 3000);
    cr_assert_eq(spool_append_abort(sp, 1, NULL), 0);
    struct envelope e = test_env(2);
    struct spool_msg *m, *other;
    cr_assert_eq(spool_msg_begin(sp, 2, &e, 0, false, &m), 0);
    cr_assert_eq(spool_msg_begin(sp, 3, &e, 0, false, &other), 0);
    cr_assert_eq(test_write_body(m, 100, 2, 100), 0);
    spool_msg_abort(m); /* not the tail: its chunk stays RESERVED */
    test_message(sp, 4, 10);
    spool_msg_abort(other);

    struct spool_recovery r;
    cr_assert_eq(test_recover(&r, &seg, 1), 0);
    cr_assert_eq(r.nmsgs, 1);
    cr_assert_eq(r.msgs[0].qid, 4);
    cr_assert_eq(r.ndamage, 0);
    cr_assert_eq(r.dropped_uncommitted, 0);
    cr_assert_eq(r.max_qid, 4);
    spool_recovery_free(&r);
    spool_free(sp);
}

Test(spool_recovery, done_messages_come_back_marked_done)
{
    /* A DONE in another segment than the COMMIT: the message comes back
     * marked done (the caller retires it). */
    struct spool *sp = spool_new(0, 4 << 20);
    struct spool_segment *s1 = test_attach(sp, 4 << 20);
    struct spool_segment *s2 = test_attach(sp, 4 << 20);
    test_message(sp, 1, 3000);
    test_message(sp, 2, 3000);
    s1->tail = s1->size;   /* next appends go to s2 */
    cr_assert_eq(spool_append_done(sp, 1, NULL, NULL), 0);
    struct spool_segment *segs[2] = { s1, s2 };
    struct spool_recovery r;
    cr_assert_eq(test_recover(&r, segs, 2), 0);
    cr_assert_eq(r.nmsgs, 2);
    cr_assert(test_find(&r, 1)->done);
    cr_assert_not(test_find(&r, 2)->done);
    cr_assert_not(test_deletable(&r, s1));
    spool_recovery_free(&r);
    spool_free(sp);
}

Test(spool_recovery, a_done_beside_its_commit_ends_the_message)
{
    struct spool *sp = spool_new(0, 4 << 20);
    struct spool_segment *seg = test_attach(sp, 4 << 20);
    test_message(sp, 1, 3000);
    test_message(sp, 2, 3000);
    cr_assert_eq(spool_append_done(sp, 1, NULL, NULL), 0);
    struct spool_recovery r;
    cr_assert_eq(test_recover(&r, &seg, 1), 0);
    cr_assert_eq(r.nmsgs, 1);
    cr_assert_eq(r.msgs[0].qid, 2);
    cr_assert_not(test_deletable(&r, seg));
    spool_recovery_free(&r);

    cr_assert_eq(spool_append_done(sp, 2, NULL, NULL), 0);
    cr_assert_eq(test_recover(&r, &seg, 1), 0);
    cr_assert_eq(r.nmsgs, 0);
    cr_assert(test_deletable(&r, seg));
    spool_recovery_free(&r);
    spool_free(sp);
}

Test(spool_recovery, recipient_status_last_wins_and_final_states_stick)
{
    struct spool *sp = spool_new(0, 1 << 20);
    struct spool_segment *s1 = test_attach(sp, 1 << 20);
    struct spool_segment *s2 = test_attach(sp, 1 << 20);
    test_message(sp, 5, 100); /* test_env(5): 3 recipients */
    cr_assert_eq(spool_append_rcpt_status(sp, 5, 0, RCPT_DEFERRED, 0, 500, NULL, NULL), 0);
    cr_assert_eq(spool_append_rcpt_status(sp, 5, 0, RCPT_DELIVERED, 0, 0, NULL, NULL), 0);
    cr_assert_eq(spool_append_rcpt_status(sp, 5, 1, RCPT_DEFERRED, 0, 1000, NULL, NULL), 0);
    cr_assert_eq(spool_append_rcpt_status(sp, 5, 2, RCPT_FAILED, 0, 0, NULL, NULL), 0);
    cr_assert_eq(spool_append_rcpt_status(sp, 5, 2, RCPT_DEFERRED, 0, 50, NULL, NULL), 0);
    cr_assert_eq(spool_append_rcpt_status(sp, 5, 9, RCPT_DELIVERED, 0, 0, NULL, NULL), 0);
    /* A later segment: its record is newer, whatever the order of adding. */
    s1->tail = s1->size; /* force the next append into s2 */
    cr_assert_eq(spool_append_rcpt_status(sp, 5, 1, RCPT_DEFERRED, 0, 2000, NULL, NULL), 0);
    cr_assert_eq(s2->dirty_gen, 1);

    struct spool_segment *segs[2] = { s2, s1 };
    struct spool_recovery r;
    cr_assert_eq(test_recover(&r, segs, 2), 0);
    cr_assert_eq(r.nmsgs, 1);
    const struct envelope *env = &r.msgs[0].env;
    cr_assert_eq(env->nrcpt, 3);
    cr_assert_eq(env->rcpts[0].state, RCPT_DELIVERED);
    cr_assert_eq(env->rcpts[1].state, RCPT_DEFERRED);
    cr_assert_eq(env->rcpts[2].state, RCPT_FAILED);
    cr_assert_eq(r.msgs[0].next_attempt_ms, 2000);
    spool_recovery_free(&r);
    spool_free(sp);
}

/* A delay notice is sent once: the flag survives later records without it,
 * so a restart does not warn the sender again. */
Test(spool_recovery, delay_warned_flag_is_sticky_across_later_records)
{
    struct spool *sp = spool_new(0, 1 << 20);
    struct spool_segment *s1 = test_attach(sp, 1 << 20);
    test_message(sp, 5, 100); /* 3 recipients */
    cr_assert_eq(spool_append_rcpt_status(sp, 5, 1, RCPT_DEFERRED, SPOOL_RCPT_DELAY_WARNED,
                                          1000, NULL, NULL), 0);
    cr_assert_eq(spool_append_rcpt_status(sp, 5, 1, RCPT_DEFERRED, 0, 3000, NULL, NULL), 0);
    cr_assert_eq(spool_append_rcpt_status(sp, 5, 2, RCPT_DEFERRED, 0, 2000, NULL, NULL), 0);

    struct spool_segment *segs[1] = { s1 };
    struct spool_recovery r;
    cr_assert_eq(test_recover(&r, segs, 1), 0);
    cr_assert_eq(r.nmsgs, 1);
    const struct envelope *env = &r.msgs[0].env;
    cr_assert(!env->rcpts[0].delay_warned);
    cr_assert(env->rcpts[1].delay_warned);
    cr_assert(!env->rcpts[2].delay_warned);
    cr_assert_eq(env->rcpts[1].state, RCPT_DEFERRED);
    cr_assert_eq(r.msgs[0].next_attempt_ms, 2000);
    spool_recovery_free(&r);
    spool_free(sp);
}

Test(spool_recovery, message_spanning_two_segments_is_recovered)
{
    size_t size = 64 << 10;
    struct spool *sp = spool_new(0, size);
    struct spool_segment *s1 = test_attach(sp, size);
    struct spool_segment *s2 = test_attach(sp, size);
    test_message(sp, 1, 20000);
    test_message(sp, 2, 70000); /* does not fit in what is left of s1 */
    test_message(sp, 3, 100);
    cr_assert(s1->sealed);

    struct spool_segment *segs[2] = { s2, s1 };
    struct spool_recovery r;
    cr_assert_eq(test_recover(&r, segs, 2), 0);
    cr_assert_eq(r.nmsgs, 3);
    for (uint64_t q = 1; q <= 3; q++)
        test_check(test_find(&r, q), NULL, q == 1 ? 20000 : q == 2 ? 70000 : 100);
    const struct spool_recovered_msg *m2 = test_find(&r, 2);
    cr_assert_eq(m2->chunks[0].seg, s1);
    cr_assert_eq(m2->chunks[m2->nchunks - 1].seg, s2);
    cr_assert_eq(r.next_segment_seq, s2->seq + 1);
    spool_recovery_free(&r);

    /* Without its second segment the committed message is incomplete:
     * nothing is returned for it. Its COMMIT sits in s2, so from s1 alone
     * it is just uncommitted. */
    cr_assert_eq(test_recover(&r, &s1, 1), 0);
    cr_assert_null(test_find(&r, 2));
    cr_assert_not_null(test_find(&r, 1));
    spool_recovery_free(&r);
    /* From s2 alone: COMMIT without its first chunks -> quarantined. */
    cr_assert_eq(test_recover(&r, &s2, 1), 0);
    cr_assert_null(test_find(&r, 2));
    cr_assert_not_null(test_find(&r, 3));
    bool q2 = false;
    for (size_t i = 0; i < r.ndamage; i++)
        q2 |= r.damage[i].qid == 2;
    cr_assert(q2);
    spool_recovery_free(&r);
    spool_free(sp);
}

Test(spool_recovery, unknown_record_types_are_skipped)
{
    struct spool *sp = spool_new(0, 1 << 20);
    struct spool_segment *seg = test_attach(sp, 1 << 20);
    test_message(sp, 1, 100);
    /* A record type from a later version, written by hand. */
    uint8_t *h = seg->base + seg->tail;
    memset(h, 0, 48);
    h[0] = 'R', h[1] = 'M', h[2] = 'R', h[3] = '1';
    h[4] = 42;
    h[8] = 48;
    h[12] = 16;
    h[16] = 1;
    uint32_t crc = spool_record_header_crc(seg->salt, h);
    for (int i = 0; i < 4; i++)
        h[28 + i] = (uint8_t)(crc >> (8 * i));
    seg->tail += 48;
    test_message(sp, 2, 100);
    struct spool_recovery r;
    cr_assert_eq(test_recover(&r, &seg, 1), 0);
    cr_assert_eq(r.nmsgs, 2);
    cr_assert_eq(r.ndamage, 0);
    spool_recovery_free(&r);
    spool_free(sp);
}

Test(spool_recovery, max_qid_counts_every_qid_seen)
{
    struct spool *sp = spool_new(0, 1 << 20);
    struct spool_segment *seg = test_attach(sp, 1 << 20);
    test_message(sp, 3, 10);
    struct envelope e = test_env(1);
    struct spool_msg *m;
    cr_assert_eq(spool_msg_begin(sp, 900, &e, 0, false, &m), 0);
    spool_msg_abort(m);
    cr_assert_eq(spool_append_done(sp, 700, NULL, NULL), 0);
    struct spool_recovery r;
    cr_assert_eq(test_recover(&r, &seg, 1), 0);
    cr_assert_eq(r.max_qid, 900);
    spool_recovery_free(&r);
    spool_free(sp);
}

Test(spool_recovery, empty_segment_is_deletable)
{
    struct spool *sp = spool_new(0, 65536);
    struct spool_segment *seg = test_attach(sp, 65536);
    struct spool_recovery r;
    cr_assert_eq(test_recover(&r, &seg, 1), 0);
    cr_assert_eq(r.nmsgs, 0);
    cr_assert_eq(r.ndamage, 0);
    cr_assert(test_deletable(&r, seg));
    spool_recovery_free(&r);
    spool_free(sp);
}

/* Removing a segment must never bring a finished message back. */
Test(spool_recovery, done_record_is_kept_while_its_message_bytes_are_kept)
{
    size_t size = 64 << 10;
    struct spool *sp = spool_new(0, size);
    struct spool_segment *s1 = test_attach(sp, size);
    test_message(sp, 1, 100);
    test_message(sp, 2, 100);  /* live: keeps s1 */
    s1->tail = s1->size;       /* what follows goes to s2 */
    struct spool_segment *s2 = test_attach(sp, size);
    cr_assert_eq(spool_append_done(sp, 1, NULL, NULL), 0);
    struct spool_segment *segs[2] = { s1, s2 };
    struct spool_recovery r;
    cr_assert_eq(test_recover(&r, segs, 2), 0);
    cr_assert(test_find(&r, 1)->done);
    cr_assert_not(test_deletable(&r, s1));
    cr_assert_not(test_deletable(&r, s2)); /* its DONE cancels message 1 in s1 */
    spool_recovery_free(&r);

    /* Once message 2 is done too, both can go. */
    cr_assert_eq(spool_append_done(sp, 2, NULL, NULL), 0);
    cr_assert_eq(test_recover(&r, segs, 2), 0);
    cr_assert(test_deletable(&r, s1));
    cr_assert(test_deletable(&r, s2));
    spool_recovery_free(&r);
    spool_free(sp);
}

Test(spool_recovery, segment_with_only_finished_content_is_deletable)
{
    size_t size = 64 << 10;
    struct spool *sp = spool_new(0, size);
    struct spool_segment *s1 = test_attach(sp, size);
    test_message(sp, 1, 100);
    s1->tail = s1->size;
    struct spool_segment *s2 = test_attach(sp, size);
    test_message(sp, 2, 100);          /* live, in s2 */
    cr_assert_eq(spool_append_done(sp, 1, NULL, NULL), 0); /* DONE for s1's message, in s2 */
    struct spool_segment *segs[2] = { s1, s2 };
    struct spool_recovery r;
    cr_assert_eq(test_recover(&r, segs, 2), 0);
    cr_assert(test_deletable(&r, s1));
    cr_assert_not(test_deletable(&r, s2));
    spool_recovery_free(&r);
    spool_free(sp);
}

Test(spool_recovery, recovery_holds_segment_references_until_free)
{
    static int unmaps;
    unmaps = 0;
    struct spool *sp = spool_new(0, 65536);
    struct spool_segment *seg = test_attach(sp, 65536);
    test_message(sp, 1, 100);
    struct spool_recovery r;
    cr_assert_eq(test_recover(&r, &seg, 1), 0);
    spool_free(sp); /* the spool's reference */
    /* The mapping is still there for the extents. */
    test_check(&r.msgs[0], NULL, 100);
    /* Recovery's reference, and the recovered message's hold on it. */
    cr_assert_eq(atomic_load(&seg->refs), 2);
    cr_assert_eq(atomic_load(&seg->holds), 1);
    cr_assert_eq(r.msgs[0].holds.commit_seg, seg);
    spool_recovery_free(&r);
    (void)unmaps;
}

/* A message held by a holdset: like test_message, but the holds are kept. */
static void
test_held_message(struct spool *sp, uint64_t qid, size_t n, struct spool_holdset *hs)
{
    struct envelope env = test_env((unsigned)qid);
    struct spool_msg *m;
    cr_assert_eq(spool_msg_begin(sp, qid, &env, 0, false, &m), 0);
    cr_assert_eq(test_write_body(m, n, qid, 1500), 0);
    struct spool_ticket t;
    struct spool_extent *ext;
    uint32_t next;
    cr_assert_eq(spool_msg_commit_extents(m, &t, &ext, &next, hs), 0);
    spool_extents_release(ext, next);
}

static size_t
test_removable(struct spool *sp, struct spool_segment **out, size_t max)
{
    size_t n = spool_removable(sp, out, max);
    for (size_t i = 0; i < n; i++)
        out[i]->removing = false;   /* only looking */
    return n;
}

/*
 * The life of a segment: a message holds the segments with its records
 * (content in s1, a status in s2, DONE in s3); nothing is removable while
 * it lives; once finished and retired, the COMMIT in s1 is rewritten as
 * RETIRED and, after the fsync that covers it, s1 and s2 are removable (s3
 * is current). Recovery of s1 alone then brings nothing back.
 */
Test(spool_recovery, retired_message_releases_its_segments_after_the_fsync)
{
    struct spool *sp = spool_new(0, 1 << 20);
    struct spool_segment *s1 = test_attach(sp, 1 << 20);
    struct spool_segment *s2 = test_attach(sp, 1 << 20);
    struct spool_holdset hs = { 0 };
    test_held_message(sp, 5, 3000, &hs);
    cr_assert_eq(hs.commit_seg, s1);
    cr_assert_eq(atomic_load(&s1->holds), 1);
    test_message(sp, 6, 100);               /* unheld: 6 is "finished" */

    s1->tail = s1->size;                    /* next appends go to s2 */
    cr_assert_eq(spool_append_rcpt_status(sp, 5, 0, RCPT_DELIVERED, 0, 0, &hs, NULL), 0);
    cr_assert_eq(atomic_load(&s2->holds), 1);
    struct spool_segment *s3 = test_attach(sp, 1 << 20);   /* the spare */
    s2->tail = s2->size;
    cr_assert_eq(spool_append_done(sp, 5, &hs, NULL), 0);
    cr_assert_eq(atomic_load(&s3->holds), 1);

    struct spool_segment *out[4];
    cr_assert_eq(test_removable(sp, out, 4), 0, "held or current");

    spool_retire(&hs, 5);
    cr_assert_null(atomic_load(&hs.head));
    cr_assert_eq(atomic_load(&s1->holds), 1, "held until the rewrite is durable");
    spool_retire_pump(sp);
    struct spool_segment *want[4];
    cr_assert_eq(spool_sync_wanted(sp, want, 4), 3);   /* s1 (rewrite), s2, s3 */
    cr_assert_eq(atomic_load(&s1->holds), 1);
    for (int i = 0; i < 3; i++) {
        spool_sync_started(want[i]);
        spool_sync_done(sp, want[i], 0);
    }
    spool_retire_pump(sp);
    cr_assert_eq(atomic_load(&s1->holds), 0);
    cr_assert_eq(atomic_load(&s2->holds), 0);
    cr_assert_eq(atomic_load(&s3->holds), 0);
    size_t n = test_removable(sp, out, 4);
    cr_assert_eq(n, 2);
    cr_assert((out[0] == s1 && out[1] == s2) || (out[0] == s2 && out[1] == s1));

    /* s1 alone (as if s2 and s3 were gone): 5 is retired, 6 has no DONE. */
    struct spool_recovery r;
    cr_assert_eq(test_recover(&r, &s1, 1), 0);
    cr_assert_eq(r.nmsgs, 1);
    cr_assert_eq(r.msgs[0].qid, 6);
    cr_assert_eq(r.dropped_uncommitted, 0, "a retired message is not an uncommitted one");
    spool_recovery_free(&r);

    /* Removal: the spool forgets it; a second look does not offer it. */
    cr_assert_eq(spool_removable(sp, out, 4), 2);
    spool_segment_removed(sp, out[0]);
    spool_segment_removed(sp, out[1]);
    cr_assert_eq(spool_removable(sp, out, 4), 0);
    spool_free(sp);
}

/* Holds of a message being received: a segment sealed under a message in
 * progress is not removable until the message is committed or aborted. */
Test(spool_recovery, message_being_received_holds_its_segments)
{
    struct spool *sp = spool_new(0, 1 << 20);
    struct spool_segment *s1 = test_attach(sp, 1 << 20);
    struct envelope env = test_env(9);
    struct spool_msg *m;
    cr_assert_eq(spool_msg_begin(sp, 9, &env, 0, false, &m), 0);
    test_attach(sp, 1 << 20);
    s1->tail = s1->size;   /* the body rolls to s2: s1 is sealed */
    cr_assert_eq(test_write_body(m, 200000, 9, 1500), 0);   /* rolls to s2 */
    struct spool_segment *out[4];
    cr_assert_eq(test_removable(sp, out, 4), 0);
    spool_msg_abort(m);
    cr_assert_eq(atomic_load(&s1->holds), 0);
    cr_assert_eq(test_removable(sp, out, 4), 1);
    cr_assert_eq(out[0], s1);
    spool_free(sp);
}

/* A finished message whose DONE lies in another segment: once its COMMIT
 * is retired, recovery no longer keeps that segment for it. */
Test(spool_recovery, retired_commit_frees_the_done_segment_at_recovery)
{
    struct spool *sp = spool_new(0, 1 << 20);
    struct spool_segment *s1 = test_attach(sp, 1 << 20);
    struct spool_segment *s2 = test_attach(sp, 1 << 20);
    struct spool_holdset hs = { 0 };
    test_held_message(sp, 1, 100, &hs);     /* finished, retired below */
    test_message(sp, 2, 100);               /* live: keeps s1 */
    s1->tail = s1->size;
    cr_assert_eq(spool_append_done(sp, 1, &hs, NULL), 0);
    struct spool_segment *segs[2] = { s1, s2 };
    struct spool_recovery r;
    cr_assert_eq(test_recover(&r, segs, 2), 0);
    cr_assert_not(test_deletable(&r, s2), "its DONE cancels a message in a kept segment");
    spool_recovery_free(&r);

    spool_retire(&hs, 1);
    spool_retire_pump(sp);
    cr_assert_eq(test_recover(&r, segs, 2), 0);
    cr_assert(test_deletable(&r, s2));
    cr_assert_not(test_deletable(&r, s1));
    cr_assert_eq(r.nkept, 1);
    cr_assert_eq(r.kept[0], s1);
    cr_assert_eq(r.nmsgs, 1);
    cr_assert_eq(r.msgs[0].qid, 2);
    spool_recovery_free(&r);
    spool_free(sp);
}

/*
 * A message finished while its COMMIT's segment is still the current one is
 * retired by a DONE appended beside it, not by rewriting the COMMIT (an old
 * page): recovery then skips it as it skips a RETIRED one, and keeps no
 * segment for it.
 */
Test(spool_recovery, retired_in_the_current_segment_by_a_done_beside_the_commit)
{
    struct spool *sp = spool_new(0, 1 << 20);
    struct spool_segment *s1 = test_attach(sp, 1 << 20);
    struct spool_holdset hs = { 0 };
    test_held_message(sp, 5, 3000, &hs);
    uint32_t commit_off = hs.commit_off;
    cr_assert_eq(hs.commit_seg, s1);
    cr_assert_eq(spool_append_rcpt_status(sp, 5, 0, RCPT_DELIVERED, 0, 0, &hs, NULL), 0);
    size_t tail = s1->tail;
    spool_retire(&hs, 5);
    spool_retire_pump(sp);
    cr_assert_eq(s1->base[commit_off + 4], SPOOL_REC_COMMIT, "not rewritten");
    cr_assert_gt(s1->tail, tail, "a DONE appended");
    cr_assert_eq(s1->base[tail + 4], SPOOL_REC_DONE);
    cr_assert_eq(atomic_load(&s1->holds), 1, "held until the DONE is durable");
    struct spool_segment *want[4];
    cr_assert_eq(spool_sync_wanted(sp, want, 4), 1);
    spool_sync_started(want[0]);
    spool_sync_done(sp, want[0], 0);
    spool_retire_pump(sp);
    cr_assert_eq(atomic_load(&s1->holds), 0);

    struct spool_recovery r;
    cr_assert_eq(test_recover(&r, &s1, 1), 0);
    cr_assert_eq(r.nmsgs, 0);
    cr_assert_eq(r.dropped_uncommitted, 0);
    cr_assert(test_deletable(&r, s1), "nothing in it lives");
    spool_recovery_free(&r);

    test_message(sp, 6, 100);   /* a live one keeps it */
    cr_assert_eq(test_recover(&r, &s1, 1), 0);
    cr_assert_eq(r.nmsgs, 1);
    cr_assert_eq(r.msgs[0].qid, 6);
    cr_assert_not(test_deletable(&r, s1));
    spool_recovery_free(&r);
    spool_free(sp);
}
