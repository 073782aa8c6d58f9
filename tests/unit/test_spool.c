/*
 * test_spool - the append side: records, chunk reservation and growth,
 * sealing and tail shrinking, rollover, abort, group-commit bookkeeping.
 * Segments are anonymous mappings standing in for fallocated files.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "alloc.h"
#include "crc32c.h"
#include "spool.h"

static int test_unmaps;

static void
test_unmap(struct spool_segment *seg)
{
    munmap(seg->base, seg->size);
    test_unmaps++;
}

static void
test_setup(void)
{
    test_unmaps = 0;
    spool_set_unmap(test_unmap);
}

TestSuite(spool, .init = test_setup);

static struct spool_segment *
test_attach(struct spool *sp, size_t size)
{
    uint8_t *base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                         -1, 0);
    cr_assert_neq(base, MAP_FAILED);
    uint64_t seq = spool_next_segment_seq(sp);
    struct spool_segment *seg = spool_segment_attach(sp, seq, -1, base, size,
                                                     0x5a17c0ffee000000ull + seq);
    if (seg == NULL)
        munmap(base, size);
    return seg;
}

static uint32_t
test_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16
           | (uint32_t)p[3] << 24;
}

static uint64_t
test_u64(const uint8_t *p)
{
    return (uint64_t)test_u32(p) | (uint64_t)test_u32(p + 4) << 32;
}

struct test_rec {
    size_t off;
    uint8_t type, flags;
    uint32_t span, len;
    uint64_t qid;
};

/* Walks a segment's records (header CRC checked) up to the first zero. */
static size_t
test_walk(const struct spool_segment *seg, struct test_rec *out, size_t max)
{
    size_t n = 0, off = SPOOL_SEGMENT_HEADER_SIZE;
    while (off + SPOOL_RECORD_HEADER_SIZE <= seg->size) {
        const uint8_t *h = seg->base + off;
        if (test_u32(h) == 0)
            break;
        cr_assert_eq(test_u32(h), SPOOL_RECORD_MAGIC, "magic at %zu", off);
        cr_assert_eq(test_u32(h + 28), spool_record_header_crc(seg->salt, h));
        struct test_rec r = { off, h[4], h[5], test_u32(h + 8), test_u32(h + 12),
                              test_u64(h + 16) };
        cr_assert_eq(r.span % 8, 0);
        cr_assert_eq(off % 8, 0);
        cr_assert_leq(off + r.span, seg->size);
        cr_assert_leq(r.len, r.span - SPOOL_RECORD_HEADER_SIZE);
        if (r.type != SPOOL_REC_RESERVED)
            cr_assert_eq(test_u32(h + 24),
                         crc32c(0, h + SPOOL_RECORD_HEADER_SIZE, r.len));
        if (n < max)
            out[n] = r;
        n++;
        off += r.span;
    }
    return n;
}

static struct envelope_rcpt test_rcpt = { .addr = "rcpt@example.org" };

static struct envelope
test_env(void)
{
    return (struct envelope){ .sender = "s@example.com", .rcpts = &test_rcpt, .nrcpt = 1,
                              .client_addr = "192.0.2.1", .client_helo = "h" };
}

static void
test_fill(uint8_t *p, size_t n, uint64_t seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)((seed * 131 + i * 7 + (i >> 9)) & 0xff);
}

/* Streams n body octets through space/wrote, at most step per call. */
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
        cr_assert_gt(avail, 0);
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

/* Concatenates a recovered message's body. */
static uint8_t *
test_body(const struct spool_recovered_msg *rm)
{
    uint8_t *b = xmalloc(rm->body_len ? rm->body_len : 1);
    size_t at = 0;
    for (uint32_t i = 0; i < rm->nchunks; i++) {
        memcpy(b + at, rm->chunks[i].seg->base + rm->chunks[i].off, rm->chunks[i].len);
        at += rm->chunks[i].len;
    }
    cr_assert_eq(at, rm->body_len);
    return b;
}

static void
test_assert_body(const struct spool_recovered_msg *rm, size_t n, uint64_t seed)
{
    cr_assert_eq(rm->body_len, n);
    uint8_t *want = xmalloc(n ? n : 1);
    test_fill(want, n, seed);
    uint8_t *got = test_body(rm);
    cr_assert_eq(memcmp(want, got, n), 0, "body of qid %llu differs",
                 (unsigned long long)rm->qid);
    free(want);
    free(got);
}

static void
test_recover(struct spool_recovery *r, struct spool_segment **segs, size_t n)
{
    spool_recovery_init(r);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(spool_recovery_add_segment(r, segs[i], segs[i]->base, segs[i]->size), 0);
    spool_recovery_finish(r);
}

Test(spool, attach_writes_a_readable_segment_header)
{
    struct spool *sp = spool_new(3, 65536);
    struct spool_segment *seg = test_attach(sp, 65536);
    cr_assert_not_null(seg);
    uint32_t w;
    uint64_t seq, salt;
    cr_assert_eq(spool_segment_header_read(seg->base, seg->size, &w, &seq, &salt), 0);
    cr_assert_eq(w, 3);
    cr_assert_eq(seq, seg->seq);
    cr_assert_eq(salt, seg->salt);
    cr_assert_eq(memcmp(seg->base, "RINGSEG1", 8), 0);
    seg->base[20] ^= 1;
    cr_assert_eq(spool_segment_header_read(seg->base, seg->size, NULL, NULL, NULL), -EINVAL);
    spool_free(sp);
    cr_assert_eq(test_unmaps, 1);
}

Test(spool, attach_keeps_one_current_and_one_spare)
{
    struct spool *sp = spool_new(0, 65536);
    cr_assert(spool_wants_segment(sp));
    cr_assert_not_null(test_attach(sp, 65536));
    cr_assert_not(spool_wants_segment(sp));
    cr_assert_not_null(test_attach(sp, 65536));
    cr_assert_null(test_attach(sp, 65536));
    cr_assert_null(test_attach(sp, 100)); /* too small */
    spool_free(sp);
}

Test(spool, segment_numbers_only_grow)
{
    struct spool *sp = spool_new(0, 65536);
    uint64_t a = spool_next_segment_seq(sp);
    uint64_t b = spool_next_segment_seq(sp);
    cr_assert_gt(b, a);
    spool_set_next_segment_seq(sp, 100);
    cr_assert_eq(spool_next_segment_seq(sp), 100);
    spool_set_next_segment_seq(sp, 50);
    cr_assert_eq(spool_next_segment_seq(sp), 101);
    spool_free(sp);
}

Test(spool, segment_path_is_worker_and_hex_seq)
{
    char buf[128];
    int n = spool_segment_path(buf, sizeof buf, "/var/spool/ringmta", 2, 0x1f);
    cr_assert_str_eq(buf, "/var/spool/ringmta/seg/w2-000000000000001f.seg");
    cr_assert_eq(n, (int)strlen(buf));
}

Test(spool, begin_space_wrote_commit_writes_envelope_body_commit)
{
    struct spool *sp = spool_new(0, 1 << 20);
    struct spool_segment *seg = test_attach(sp, 1 << 20);
    struct envelope env = test_env();
    struct spool_msg *m;
    cr_assert_eq(spool_msg_begin(sp, 42, &env, 0, false, &m), 0);
    cr_assert_eq(test_write_body(m, 1500, 1, 777), 0);
    cr_assert_eq(spool_msg_length(m), 1500);
    struct spool_ticket t;
    cr_assert_eq(spool_msg_commit(m, &t), 0);

    struct test_rec rec[8];
    size_t n = test_walk(seg, rec, 8);
    cr_assert_eq(n, 3);
    cr_assert_eq(rec[0].type, SPOOL_REC_ENVELOPE);
    cr_assert_eq(rec[1].type, SPOOL_REC_BODY);
    cr_assert_eq(rec[1].len, SPOOL_CHUNK_PREFIX + 1500);
    cr_assert_eq(test_u32(seg->base + rec[1].off + SPOOL_RECORD_HEADER_SIZE), 0);
    cr_assert_eq(rec[2].type, SPOOL_REC_COMMIT);
    cr_assert_eq(rec[2].len, 16);
    const uint8_t *cp = seg->base + rec[2].off + SPOOL_RECORD_HEADER_SIZE;
    cr_assert_eq(test_u64(cp), 1500);
    cr_assert_eq(test_u32(cp + 8), 1);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(rec[i].qid, 42);
    /* The envelope decodes back. */
    struct envelope out;
    cr_assert_eq(envelope_decode(seg->base + rec[0].off + SPOOL_RECORD_HEADER_SIZE,
                                 rec[0].len, &out), 0);
    cr_assert_str_eq(out.sender, "s@example.com");
    envelope_free(&out);

    cr_assert_eq(t.n, 1);
    cr_assert_eq(t.seg[0], seg);
    cr_assert_eq(t.gen[0], 1);
    cr_assert_eq(atomic_load(&seg->holds), 0);   /* no holdset was asked for */
    spool_free(sp);
}

Test(spool, raw_flag_is_carried_on_chunks_and_commit)
{
    struct spool *sp = spool_new(0, 1 << 20);
    struct spool_segment *seg = test_attach(sp, 1 << 20);
    struct envelope env = test_env();
    struct spool_msg *m;
    cr_assert_eq(spool_msg_begin(sp, 1, &env, 0, true, &m), 0);
    cr_assert_eq(test_write_body(m, 100, 1, 100), 0);
    struct spool_ticket t;
    cr_assert_eq(spool_msg_commit(m, &t), 0);
    struct test_rec rec[4];
    cr_assert_eq(test_walk(seg, rec, 4), 3);
    cr_assert_eq(rec[1].flags, SPOOL_BODY_RAW);
    cr_assert_eq(test_u32(seg->base + rec[2].off + SPOOL_RECORD_HEADER_SIZE + 12),
                 SPOOL_BODY_RAW);
    spool_free(sp);
}

/* Body capacities of a committed message's chunks, in order. */
static size_t
test_chunk_caps(struct spool_segment *seg, size_t *caps, size_t max)
{
    struct test_rec rec[64];
    size_t n = test_walk(seg, rec, 64), k = 0;
    for (size_t i = 0; i < n && k < max; i++)
        if (rec[i].type == SPOOL_REC_BODY)
            caps[k++] = rec[i].span - SPOOL_RECORD_HEADER_SIZE - SPOOL_CHUNK_PREFIX;
    return k;
}

Test(spool, chunks_after_a_short_hint_start_small_and_unhinted_ones_double)
{
    struct {
        uint64_t hint;
        size_t body;
        size_t ncaps;
        size_t caps[6];
    } cases[] = {
        /* The hint fits: one chunk. */
        { 100000, 101000, 1, { 101824 } },
        /* Short by a little (doubled dots): the rest goes in a small chunk,
         * not in one twice the first. */
        { 100000, 102000, 2, { 101824, SPOOL_CHUNK_MIN } },
        /* Far too short: small chunks that double from there. */
        { 1, 10000, 4, { 264, 2048, 4096, 8192 } },
        /* No hint: doubling from the minimum. */
        { 0, 10000, 3, { 2048, 4096, 8192 } },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct spool *sp = spool_new(0, 4 << 20);
        struct spool_segment *seg = test_attach(sp, 4 << 20);
        struct envelope env = test_env();
        struct spool_msg *m;
        cr_assert_eq(spool_msg_begin(sp, 1, &env, cases[i].hint, false, &m), 0);
        cr_assert_eq(test_write_body(m, cases[i].body, 7, 4096), 0);
        struct spool_ticket t;
        cr_assert_eq(spool_msg_commit(m, &t), 0);
        size_t caps[8];
        size_t n = test_chunk_caps(seg, caps, 8);
        cr_assert_eq(n, cases[i].ncaps, "case %zu: %zu chunks", i, n);
        for (size_t k = 0; k < n - 1; k++)
            cr_assert_eq(caps[k], cases[i].caps[k], "case %zu chunk %zu: %zu", i, k, caps[k]);
        /* The last chunk was sealed: its span shrank to what it holds. */
        cr_assert_leq(caps[n - 1], cases[i].caps[n - 1]);
        spool_free(sp);
    }
}

Test(spool, first_chunk_is_sized_from_the_size_hint)
{
    struct {
        uint64_t hint;
        size_t cap;
    } cases[] = {
        { 0, SPOOL_CHUNK_MIN },
        { 1, 264 },              /* 257 rounded up to 8 */
        { 500, 768 },            /* 500 + 7 + 256 */
        { 7000, 7368 },
        { 100000, 101824 },
        { 5u << 20, 1u << 20 },
        { UINT64_MAX, 1u << 20 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct spool *sp = spool_new(0, 4 << 20);
        test_attach(sp, 4 << 20);
        struct envelope env = test_env();
        struct spool_msg *m;
        cr_assert_eq(spool_msg_begin(sp, 1, &env, cases[i].hint, false, &m), 0);
        uint8_t *p;
        size_t avail;
        cr_assert_eq(spool_msg_space(m, &p, &avail), 0);
        cr_assert_eq(avail, cases[i].cap, "hint %llu: %zu", (unsigned long long)cases[i].hint,
                     avail);
        cr_assert_eq((uintptr_t)p % 8, 0);
        spool_msg_abort(m);
        spool_free(sp);
    }
}

Test(spool, chunks_double_up_to_one_mib)
{
    struct spool *sp = spool_new(0, 16 << 20);
    struct spool_segment *seg = test_attach(sp, 16 << 20);
    struct envelope env = test_env();
    struct spool_msg *m;
    cr_assert_eq(spool_msg_begin(sp, 9, &env, 0, false, &m), 0);
    size_t want[] = { 2048, 4096, 8192, 16384, 32768, 65536, 131072, 262144, 524288,
                      1048576, 1048576, 1048576 };
    size_t total = 0;
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        uint8_t *p;
        size_t avail;
        cr_assert_eq(spool_msg_space(m, &p, &avail), 0);
        cr_assert_eq(avail, want[i], "chunk %zu: %zu", i, avail);
        test_fill(p, avail, i);
        spool_msg_wrote(m, avail);
        total += avail;
    }
    cr_assert_eq(spool_msg_length(m), total);
    struct spool_ticket t;
    cr_assert_eq(spool_msg_commit(m, &t), 0);
    struct test_rec rec[16];
    size_t n = test_walk(seg, rec, 16);
    cr_assert_eq(n, 14);
    for (size_t i = 0; i < 12; i++) {
        cr_assert_eq(rec[1 + i].type, SPOOL_REC_BODY);
        cr_assert_eq(test_u32(seg->base + rec[1 + i].off + SPOOL_RECORD_HEADER_SIZE), i,
                     "chunk index");
    }
    spool_free(sp);
}

Test(spool, concurrent_messages_interleave_and_recover_intact)
{
    struct spool *sp = spool_new(0, 8 << 20);
    struct spool_segment *seg = test_attach(sp, 8 << 20);
    struct envelope env = test_env();
    enum { N = 5 };
    struct spool_msg *m[N];
    size_t sizes[N] = { 0, 1, 9000, 40000, 300000 };
    size_t done[N] = { 0 };
    uint8_t *src[N];
    for (int i = 0; i < N; i++) {
        cr_assert_eq(spool_msg_begin(sp, 100 + i, &env, 0, i % 2, &m[i]), 0);
        src[i] = xmalloc(sizes[i] + 1);
        test_fill(src[i], sizes[i], 100 + i);
    }
    /* Round robin, 1000 octets at a time. */
    bool more = true;
    while (more) {
        more = false;
        for (int i = 0; i < N; i++) {
            if (done[i] == sizes[i])
                continue;
            uint8_t *p;
            size_t avail;
            cr_assert_eq(spool_msg_space(m[i], &p, &avail), 0);
            size_t k = sizes[i] - done[i];
            if (k > avail)
                k = avail;
            if (k > 1000)
                k = 1000;
            memcpy(p, src[i] + done[i], k);
            spool_msg_wrote(m[i], k);
            done[i] += k;
            more = true;
        }
    }
    struct spool_ticket t[N];
    for (int i = N - 1; i >= 0; i--)
        cr_assert_eq(spool_msg_commit(m[i], &t[i]), 0);
    cr_assert_eq(t[0].gen[0], N);

    struct spool_recovery r;
    test_recover(&r, &seg, 1);
    cr_assert_eq(r.nmsgs, N);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(r.msgs[i].qid, (uint64_t)(100 + i));
        cr_assert_eq(r.msgs[i].flags, i % 2 ? SPOOL_BODY_RAW : 0);
        test_assert_body(&r.msgs[i], sizes[i], 100 + i);
        free(src[i]);
    }
    cr_assert_eq(r.ndamage, 0);
    spool_recovery_free(&r);
    spool_free(sp);
}

Test(spool, sealing_the_tail_chunk_gives_space_back)
{
    struct spool *sp = spool_new(0, 1 << 20);
    struct spool_segment *seg = test_attach(sp, 1 << 20);
    struct envelope env = test_env();
    struct spool_msg *m;
    cr_assert_eq(spool_msg_begin(sp, 1, &env, 0, false, &m), 0);
    cr_assert_eq(test_write_body(m, 13, 1, 13), 0);
    struct spool_ticket t;
    cr_assert_eq(spool_msg_commit(m, &t), 0);
    struct test_rec rec[4];
    cr_assert_eq(test_walk(seg, rec, 4), 3);
    cr_assert_eq(rec[1].span, 56); /* 32 + 8 + 13 -> 53 -> 56 */
    cr_assert_eq(rec[2].off, rec[1].off + 56);
    cr_assert_eq(seg->tail, rec[2].off + rec[2].span);
    /* Everything after the tail is still zero. */
    for (size_t i = seg->tail; i < seg->tail + 9000; i++)
        cr_assert_eq(seg->base[i], 0);
    spool_free(sp);
}

Test(spool, chunk_followed_by_another_record_keeps_its_span)
{
    struct spool *sp = spool_new(0, 1 << 20);
    struct spool_segment *seg = test_attach(sp, 1 << 20);
    struct envelope env = test_env();
    struct spool_msg *a, *b;
    cr_assert_eq(spool_msg_begin(sp, 1, &env, 0, false, &a), 0);
    cr_assert_eq(test_write_body(a, 10, 1, 10), 0);
    cr_assert_eq(spool_msg_begin(sp, 2, &env, 0, false, &b), 0);
    struct spool_ticket t;
    cr_assert_eq(spool_msg_commit(a, &t), 0);
    struct test_rec rec[8];
    size_t n = test_walk(seg, rec, 8);
    cr_assert_eq(rec[1].type, SPOOL_REC_BODY);
    cr_assert_eq(rec[1].span, SPOOL_RECORD_HEADER_SIZE + SPOOL_CHUNK_PREFIX + SPOOL_CHUNK_MIN);
    cr_assert_eq(rec[2].type, SPOOL_REC_ENVELOPE);
    cr_assert_eq(rec[2].qid, 2);
    cr_assert_eq(rec[3].type, SPOOL_REC_RESERVED);
    cr_assert_eq(rec[n - 1].type, SPOOL_REC_COMMIT);
    spool_msg_abort(b);
    spool_free(sp);
}

Test(spool, append_copies_across_chunks)
{
    /* A 1-octet hint gives a 264-octet first chunk: 10 000 octets appended
     * in pieces of 1, 263, 1000 and the rest span several chunks and come
     * back from recovery exactly. */
    struct spool *sp = spool_new(0, 1 << 20);
    struct spool_segment *seg = test_attach(sp, 1 << 20);
    struct envelope env = test_env();
    struct spool_msg *m;
    cr_assert_eq(spool_msg_begin(sp, 9, &env, 1, false, &m), 0);
    uint8_t *src = xmalloc(10000);
    test_fill(src, 10000, 9);
    size_t pieces[] = { 1, 263, 1000, 10000 - 1264 }, at = 0;
    for (size_t i = 0; i < 4; i++) {
        cr_assert_eq(spool_msg_append(m, src + at, pieces[i]), 0);
        at += pieces[i];
        cr_assert_eq(spool_msg_length(m), at);
    }
    cr_assert_eq(spool_msg_append(m, src, 0), 0);
    struct spool_ticket t;
    cr_assert_eq(spool_msg_commit(m, &t), 0);
    struct spool_recovery r;
    test_recover(&r, &seg, 1);
    cr_assert_eq(r.nmsgs, 1);
    cr_assert_gt(r.msgs[0].nchunks, 1);
    test_assert_body(&r.msgs[0], 10000, 9);
    spool_recovery_free(&r);
    free(src);
    spool_free(sp);
}

Test(spool, unwrite_gives_back_octets_and_zeroes_them)
{
    struct spool *sp = spool_new(0, 1 << 20);
    struct spool_segment *seg = test_attach(sp, 1 << 20);
    struct envelope env = test_env();
    struct spool_msg *m;
    cr_assert_eq(spool_msg_begin(sp, 1, &env, 0, false, &m), 0);
    uint8_t *p;
    size_t avail;
    cr_assert_eq(spool_msg_space(m, &p, &avail), 0);
    memcpy(p, "body\r\n.\r\nQUIT\r\n", 15);
    spool_msg_wrote(m, 15);
    spool_msg_unwrite(m, 6);
    cr_assert_eq(spool_msg_length(m), 9);
    struct spool_ticket t;
    cr_assert_eq(spool_msg_commit(m, &t), 0);
    struct test_rec rec[4];
    cr_assert_eq(test_walk(seg, rec, 4), 3);
    cr_assert_eq(rec[1].len, SPOOL_CHUNK_PREFIX + 9);
    /* "QUIT\r\n" is gone from the mapping. */
    cr_assert_null(memmem(seg->base, seg->size, "QUIT", 4));
    spool_free(sp);
}

/* ".\r\n" split over two chunks: the "." is in the sealed one. */
Test(spool, unwrite_reaches_back_into_a_sealed_chunk)
{
    struct spool *sp = spool_new(0, 1 << 20);
    struct spool_segment *seg = test_attach(sp, 1 << 20);
    struct envelope env = test_env();
    struct spool_msg *m;
    cr_assert_eq(spool_msg_begin(sp, 1, &env, 0, false, &m), 0);
    uint8_t *p;
    size_t avail;
    cr_assert_eq(spool_msg_space(m, &p, &avail), 0);
    cr_assert_eq(avail, SPOOL_CHUNK_MIN);
    test_fill(p, avail - 1, 3);
    p[avail - 1] = '.';
    spool_msg_wrote(m, avail);
    cr_assert_eq(spool_msg_space(m, &p, &avail), 0); /* seals chunk 0 */
    memcpy(p, "\r\nQUIT\r\n", 8);
    spool_msg_wrote(m, 8);
    spool_msg_unwrite(m, 9);
    cr_assert_eq(spool_msg_length(m), SPOOL_CHUNK_MIN - 1);
    struct spool_ticket t;
    cr_assert_eq(spool_msg_commit(m, &t), 0);

    struct spool_recovery r;
    test_recover(&r, &seg, 1);
    cr_assert_eq(r.nmsgs, 1);
    cr_assert_eq(r.ndamage, 0);
    test_assert_body(&r.msgs[0], SPOOL_CHUNK_MIN - 1, 3);
    cr_assert_eq(r.msgs[0].nchunks, 2);
    cr_assert_eq(r.msgs[0].chunks[1].len, 0);
    spool_recovery_free(&r);
    cr_assert_null(memmem(seg->base, seg->size, "QUIT", 4));
    spool_free(sp);
}

Test(spool, abort_writes_abort_and_returns_the_tail)
{
    struct spool *sp = spool_new(0, 1 << 20);
    struct spool_segment *seg = test_attach(sp, 1 << 20);
    struct envelope env = test_env();
    struct spool_msg *m;
    cr_assert_eq(spool_msg_begin(sp, 77, &env, 0, false, &m), 0);
    cr_assert_eq(test_write_body(m, 1500, 1, 1500), 0);
    spool_msg_abort(m);
    struct test_rec rec[4];
    size_t n = test_walk(seg, rec, 4);
    cr_assert_eq(n, 2);
    cr_assert_eq(rec[0].type, SPOOL_REC_ENVELOPE);
    cr_assert_eq(rec[1].type, SPOOL_REC_ABORT);
    cr_assert_eq(rec[1].qid, 77);
    cr_assert_eq(seg->tail, rec[1].off + rec[1].span);
    for (size_t i = seg->tail; i < seg->tail + 8192; i++)
        cr_assert_eq(seg->base[i], 0, "junk at %zu", i);
    spool_free(sp);
}

Test(spool, abort_of_a_non_tail_chunk_leaves_it_reserved)
{
    struct spool *sp = spool_new(0, 1 << 20);
    struct spool_segment *seg = test_attach(sp, 1 << 20);
    struct envelope env = test_env();
    struct spool_msg *a, *b;
    cr_assert_eq(spool_msg_begin(sp, 1, &env, 0, false, &a), 0);
    cr_assert_eq(spool_msg_begin(sp, 2, &env, 0, false, &b), 0);
    spool_msg_abort(a);
    struct test_rec rec[8];
    size_t n = test_walk(seg, rec, 8);
    cr_assert_eq(n, 5);
    cr_assert_eq(rec[1].type, SPOOL_REC_RESERVED);
    cr_assert_eq(rec[1].qid, 1);
    cr_assert_eq(rec[4].type, SPOOL_REC_ABORT);
    spool_msg_abort(b);
    spool_free(sp);
}

Test(spool, space_never_extends_past_the_segment)
{
    size_t size = 64 << 10;
    struct spool *sp = spool_new(0, size);
    struct spool_segment *seg = test_attach(sp, size);
    struct envelope env = test_env();
    int rc = 0;
    uint64_t qid = 1;
    while (rc == 0) {
        struct spool_msg *m;
        rc = spool_msg_begin(sp, qid++, &env, 20000, false, &m);
        if (rc < 0)
            break;
        for (int i = 0; i < 20 && rc == 0; i++) {
            uint8_t *p;
            size_t avail;
            rc = spool_msg_space(m, &p, &avail);
            if (rc < 0)
                break;
            cr_assert_geq(p, seg->base + SPOOL_SEGMENT_HEADER_SIZE);
            cr_assert_leq(p + avail, seg->base + seg->size);
            memset(p, 'x', avail);
            spool_msg_wrote(m, avail);
        }
        cr_assert_leq(seg->tail, seg->size);
        if (rc < 0) {
            spool_msg_abort(m);
            break;
        }
        struct spool_ticket t;
        rc = spool_msg_commit(m, &t);
    }
    cr_assert_eq(rc, -ENOSPC);
    cr_assert_leq(seg->tail, seg->size);
    cr_assert(spool_wants_segment(sp));
    spool_free(sp);
}

Test(spool, no_segment_means_enospc)
{
    struct spool *sp = spool_new(0, 65536);
    struct envelope env = test_env();
    struct spool_msg *m = (void *)1;
    cr_assert_eq(spool_msg_begin(sp, 1, &env, 0, false, &m), -ENOSPC);
    cr_assert_null(m);
    spool_free(sp);
}

Test(spool, wants_a_spare_once_past_a_quarter_full)
{
    struct spool *sp = spool_new(0, 65536);
    test_attach(sp, 65536);
    struct envelope env = test_env();
    struct spool_msg *m;
    cr_assert_eq(spool_msg_begin(sp, 1, &env, 0, false, &m), 0);
    cr_assert_not(spool_wants_segment(sp));
    cr_assert_eq(test_write_body(m, 12000, 1, 12000), 0);
    cr_assert_not(spool_wants_segment(sp));
    cr_assert_eq(test_write_body(m, 6000, 2, 6000), 0);
    cr_assert(spool_wants_segment(sp));
    test_attach(sp, 65536);
    cr_assert_not(spool_wants_segment(sp));
    spool_msg_abort(m);
    spool_free(sp);
}

struct test_spare_source {
    size_t size;
    unsigned calls;
    bool fail;
};

static int
test_spare_now(struct spool *sp, void *arg)
{
    struct test_spare_source *src = arg;
    src->calls++;
    if (src->fail)
        return -EIO;
    return test_attach(sp, src->size) ? 0 : -EINVAL;
}

/* io/'s ring was late with the spare: the spool asks its spare source for
 * one at the moment it needs it, and the message is stored, not refused. */
Test(spool, late_spare_comes_from_the_spare_source_and_the_message_is_stored)
{
    size_t size = 16 << 10;
    struct spool *sp = spool_new(0, size);
    struct spool_segment *s1 = test_attach(sp, size);
    struct test_spare_source src = { .size = size };
    spool_set_spare_source(sp, test_spare_now, &src);
    struct envelope env = test_env();
    struct spool_msg *m;
    cr_assert_eq(spool_msg_begin(sp, 7, &env, 0, false, &m), 0);
    cr_assert_eq(test_write_body(m, 36000, 7, 4096), 0);
    struct spool_ticket t;
    cr_assert_eq(spool_msg_commit(m, &t), 0);
    cr_assert_eq(src.calls, 2, "one spare per rollover, asked for only when needed");
    cr_assert_eq(t.n, 3);
    cr_assert_eq(t.seg[0], s1);
    cr_assert(t.seg[1]->seq > s1->seq && t.seg[2]->seq > t.seg[1]->seq);

    struct spool_segment *segs[3] = { t.seg[2], t.seg[0], t.seg[1] };
    struct spool_recovery r;
    test_recover(&r, segs, 3);
    cr_assert_eq(r.nmsgs, 1);
    test_assert_body(&r.msgs[0], 36000, 7);
    cr_assert_eq(r.ndamage, 0);
    spool_recovery_free(&r);
    spool_free(sp);
}

Test(spool, failing_spare_source_leaves_the_append_refused_with_enospc)
{
    size_t size = 16 << 10;
    struct spool *sp = spool_new(0, size);
    test_attach(sp, size);
    struct test_spare_source src = { .size = size, .fail = true };
    spool_set_spare_source(sp, test_spare_now, &src);
    struct envelope env = test_env();
    struct spool_msg *m;
    cr_assert_eq(spool_msg_begin(sp, 5, &env, 0, false, &m), 0);
    cr_assert_eq(test_write_body(m, 1 << 20, 5, 8192), -ENOSPC);
    cr_assert_geq(src.calls, 1);
    spool_msg_abort(m);
    spool_free(sp);
}

/* A preparation that was overtaken (a later number attached meanwhile) is
 * refused: segments are used in number order, which recovery relies on to
 * order status records. */
Test(spool, attach_refuses_a_number_behind_one_attached)
{
    size_t size = 16 << 10;
    struct spool *sp = spool_new(0, size);
    uint64_t early = spool_next_segment_seq(sp);
    struct spool_segment *late = test_attach(sp, size);
    cr_assert_not_null(late);
    cr_assert_gt(late->seq, early);
    uint8_t *base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(base, MAP_FAILED);
    cr_assert_null(spool_segment_attach(sp, early, -1, base, size, 1));
    cr_assert_null(spool_segment_attach(sp, late->seq, -1, base, size, 1));
    munmap(base, size);
    cr_assert_not_null(test_attach(sp, size), "the next number is taken as the spare");
    spool_free(sp);
}

Test(spool, message_rolls_over_into_the_spare_and_spans_both)
{
    size_t size = 64 << 10;
    struct spool *sp = spool_new(0, size);
    struct spool_segment *s1 = test_attach(sp, size);
    struct spool_segment *s2 = test_attach(sp, size);
    struct envelope env = test_env();
    struct spool_msg *m;
    cr_assert_eq(spool_msg_begin(sp, 5, &env, 0, false, &m), 0);
    cr_assert_eq(test_write_body(m, 100000, 5, 4096), 0);
    struct spool_ticket t;
    cr_assert_eq(spool_msg_commit(m, &t), 0);
    cr_assert(s1->sealed);
    cr_assert_not(s2->sealed);
    cr_assert_eq(t.n, 2);
    cr_assert_eq(t.seg[0], s1);
    cr_assert_eq(t.seg[1], s2);
    cr_assert_eq(t.gen[0], 1);
    cr_assert_eq(t.gen[1], 1);

    struct spool_segment *segs[2] = { s2, s1 }; /* any order */
    struct spool_recovery r;
    test_recover(&r, segs, 2);
    cr_assert_eq(r.nmsgs, 1);
    test_assert_body(&r.msgs[0], 100000, 5);
    bool in1 = false, in2 = false;
    for (uint32_t i = 0; i < r.msgs[0].nchunks; i++) {
        in1 |= r.msgs[0].chunks[i].seg == s1;
        in2 |= r.msgs[0].chunks[i].seg == s2;
    }
    cr_assert(in1 && in2);
    spool_recovery_free(&r);
    spool_free(sp);
}

Test(spool, commit_that_does_not_fit_rolls_over)
{
    size_t size = 4096;
    struct spool *sp = spool_new(0, size);
    struct spool_segment *s1 = test_attach(sp, size);
    struct envelope env = test_env();
    struct spool_msg *m;
    /* Without a spare the first chunk (asked for 9 KiB by the hint) is
     * shortened to the end of s1. */
    cr_assert_eq(spool_msg_begin(sp, 5, &env, 8192, false, &m), 0);
    uint8_t *p;
    size_t avail;
    cr_assert_eq(spool_msg_space(m, &p, &avail), 0);
    cr_assert_eq(p + avail, s1->base + size);
    memset(p, 'a', avail);
    spool_msg_wrote(m, avail);
    struct spool_segment *s2 = test_attach(sp, size);
    struct spool_ticket t;
    cr_assert_eq(spool_msg_commit(m, &t), 0);
    cr_assert_eq(t.n, 2);
    struct test_rec rec[4];
    cr_assert_eq(test_walk(s2, rec, 4), 1);
    cr_assert_eq(rec[0].type, SPOOL_REC_COMMIT);
    spool_free(sp);
}

Test(spool, without_a_spare_a_full_segment_refuses_with_enospc)
{
    size_t size = 16 << 10;
    struct spool *sp = spool_new(0, size);
    test_attach(sp, size);
    struct envelope env = test_env();
    struct spool_msg *m;
    cr_assert_eq(spool_msg_begin(sp, 5, &env, 0, false, &m), 0);
    cr_assert_eq(test_write_body(m, 1 << 20, 5, 8192), -ENOSPC);
    spool_msg_abort(m);
    /* Attaching a spare lets new messages in again. */
    test_attach(sp, size);
    cr_assert_eq(spool_msg_begin(sp, 6, &env, 0, false, &m), 0);
    struct spool_ticket t;
    cr_assert_eq(spool_msg_commit(m, &t), 0);
    spool_free(sp);
}

Test(spool, message_over_four_segments_is_refused)
{
    size_t size = 8192;
    struct spool *sp = spool_new(0, size);
    test_attach(sp, size);
    struct envelope env = test_env();
    struct spool_msg *m;
    cr_assert_eq(spool_msg_begin(sp, 5, &env, 0, false, &m), 0);
    int rc = 0;
    for (int i = 0; i < 100 && rc == 0; i++) {
        if (spool_wants_segment(sp))
            test_attach(sp, size);
        rc = test_write_body(m, 4096, i, 4096);
    }
    cr_assert_eq(rc, -ENOSPC);
    spool_msg_abort(m);
    spool_free(sp);
}

Test(spool, ticket_waits_for_the_fsync_that_covers_it)
{
    struct spool *sp = spool_new(0, 1 << 20);
    struct spool_segment *seg = test_attach(sp, 1 << 20);
    struct envelope env = test_env();
    struct spool_segment *want[4];
    struct spool_msg *m;
    struct spool_ticket t1, t2;

    cr_assert_eq(spool_sync_wanted(sp, want, 4), 0);
    cr_assert_eq(spool_msg_begin(sp, 1, &env, 0, false, &m), 0);
    cr_assert_eq(spool_sync_wanted(sp, want, 4), 0); /* nothing committed yet */
    cr_assert_eq(spool_msg_commit(m, &t1), 0);
    cr_assert_eq(spool_ticket_state(&t1), 0);
    cr_assert_eq(spool_sync_wanted(sp, want, 4), 1);
    cr_assert_eq(want[0], seg);
    spool_sync_started(seg);
    cr_assert_eq(seg->sync_inflight_gen, 1);

    /* A commit while the fsync is in flight waits for the next one. */
    cr_assert_eq(spool_msg_begin(sp, 2, &env, 0, false, &m), 0);
    cr_assert_eq(spool_msg_commit(m, &t2), 0);
    cr_assert_eq(spool_sync_wanted(sp, want, 4), 0);
    spool_sync_done(sp, seg, 0);
    cr_assert_eq(spool_ticket_state(&t1), 1);
    cr_assert_eq(spool_ticket_state(&t2), 0);
    cr_assert_eq(spool_sync_wanted(sp, want, 4), 1);
    spool_sync_started(seg);
    spool_sync_done(sp, seg, 0);
    cr_assert_eq(spool_ticket_state(&t2), 1);
    cr_assert_eq(spool_sync_wanted(sp, want, 4), 0);
    spool_free(sp);
}

Test(spool, status_records_ride_the_next_fsync_instead_of_asking_for_one)
{
    struct spool *sp = spool_new(0, 1 << 20);
    struct spool_segment *seg = test_attach(sp, 1 << 20);
    struct envelope env = test_env();
    struct spool_segment *want[4];
    struct spool_msg *m;
    struct spool_ticket tc, ts, td;

    cr_assert_eq(spool_msg_begin(sp, 1, &env, 0, false, &m), 0);
    cr_assert_eq(spool_msg_commit(m, &tc), 0);
    spool_sync_started(seg);
    spool_sync_done(sp, seg, 0);
    cr_assert_eq(spool_ticket_state(&tc), 1);

    /* Delivery records: nobody waits for them at once, so no fsync is
     * awaited for them; the tick's full pass still picks them up. */
    cr_assert_eq(spool_append_rcpt_status(sp, 1, 0, RCPT_DELIVERED, 0, 0, NULL, &ts), 0);
    cr_assert_eq(spool_append_done(sp, 1, NULL, &td), 0);
    cr_assert_eq(spool_sync_awaited(sp, want, 4), 0);
    cr_assert_eq(spool_ticket_state(&ts), 0);
    cr_assert_eq(spool_sync_wanted(sp, want, 4), 1);
    cr_assert_eq(want[0], seg);

    /* A commit a client waits for asks for the fsync, and it covers the
     * status records written before it. */
    cr_assert_eq(spool_msg_begin(sp, 2, &env, 0, false, &m), 0);
    cr_assert_eq(spool_msg_commit(m, &tc), 0);
    cr_assert_eq(spool_sync_awaited(sp, want, 4), 1);
    cr_assert_eq(want[0], seg);
    spool_sync_started(seg);
    spool_sync_done(sp, seg, 0);
    cr_assert_eq(spool_ticket_state(&tc), 1);
    cr_assert_eq(spool_ticket_state(&ts), 1);
    cr_assert_eq(spool_ticket_state(&td), 1);
    cr_assert_eq(spool_sync_awaited(sp, want, 4), 0);
    cr_assert_eq(spool_sync_wanted(sp, want, 4), 0);
    spool_free(sp);
}

Test(spool, one_fsync_covers_a_batch_of_commits)
{
    struct spool *sp = spool_new(0, 1 << 20);
    struct spool_segment *seg = test_attach(sp, 1 << 20);
    struct envelope env = test_env();
    struct spool_ticket t[10];
    for (int i = 0; i < 10; i++) {
        struct spool_msg *m;
        cr_assert_eq(spool_msg_begin(sp, i + 1, &env, 0, false, &m), 0);
        cr_assert_eq(spool_msg_commit(m, &t[i]), 0);
    }
    struct spool_segment *want[4];
    cr_assert_eq(spool_sync_wanted(sp, want, 4), 1);
    spool_sync_started(seg);
    spool_sync_done(sp, seg, 0);
    for (int i = 0; i < 10; i++)
        cr_assert_eq(spool_ticket_state(&t[i]), 1);
    spool_free(sp);
}

Test(spool, message_across_segments_waits_for_both_fsyncs)
{
    size_t size = 64 << 10;
    struct spool *sp = spool_new(0, size);
    struct spool_segment *s1 = test_attach(sp, size);
    struct spool_segment *s2 = test_attach(sp, size);
    struct envelope env = test_env();
    struct spool_msg *m;
    cr_assert_eq(spool_msg_begin(sp, 5, &env, 0, false, &m), 0);
    cr_assert_eq(test_write_body(m, 100000, 5, 4096), 0);
    struct spool_ticket t;
    cr_assert_eq(spool_msg_commit(m, &t), 0);
    struct spool_segment *want[4];
    cr_assert_eq(spool_sync_wanted(sp, want, 4), 2);
    spool_sync_started(s1);
    spool_sync_started(s2);
    spool_sync_done(sp, s2, 0);
    cr_assert_eq(spool_ticket_state(&t), 0);
    spool_sync_done(sp, s1, 0);
    cr_assert_eq(spool_ticket_state(&t), 1);
    spool_free(sp);
}

Test(spool, fsync_failure_fails_waiters_and_retires_the_segment)
{
    struct spool *sp = spool_new(0, 1 << 20);
    struct spool_segment *seg = test_attach(sp, 1 << 20);
    struct envelope env = test_env();
    struct spool_msg *m, *open;
    struct spool_ticket t1, t2;

    cr_assert_eq(spool_msg_begin(sp, 1, &env, 0, false, &m), 0);
    cr_assert_eq(spool_msg_commit(m, &t1), 0);
    struct spool_segment *want[4];
    cr_assert_eq(spool_sync_wanted(sp, want, 4), 1);
    spool_sync_started(seg);
    spool_sync_done(sp, seg, 0);
    cr_assert_eq(spool_ticket_state(&t1), 1);

    cr_assert_eq(spool_msg_begin(sp, 2, &env, 0, false, &m), 0);
    cr_assert_eq(spool_msg_begin(sp, 3, &env, 0, false, &open), 0);
    cr_assert_eq(spool_msg_commit(m, &t2), 0);
    cr_assert_eq(spool_sync_wanted(sp, want, 4), 1);
    spool_sync_started(seg);
    spool_sync_done(sp, seg, -EIO);

    cr_assert(seg->failed);
    cr_assert(seg->sealed);
    cr_assert_eq(spool_ticket_state(&t2), -EIO);
    cr_assert_eq(spool_ticket_state(&t1), 1); /* synced before: still durable */
    /* Never retried. */
    cr_assert_eq(spool_sync_wanted(sp, want, 4), 0);
    /* A message receiving into the failed segment fails... */
    uint8_t *p;
    size_t avail;
    cr_assert_eq(spool_msg_space(open, &p, &avail), -EIO);
    struct spool_ticket t3;
    cr_assert_eq(spool_msg_commit(open, &t3), -EIO);
    /* ...and with no spare, new messages get -EIO (451). */
    cr_assert_eq(spool_msg_begin(sp, 4, &env, 0, false, &m), -EIO);
    cr_assert(spool_wants_segment(sp));
    /* A fresh segment takes over. */
    struct spool_segment *s2 = test_attach(sp, 1 << 20);
    cr_assert_eq(spool_msg_begin(sp, 5, &env, 0, false, &m), 0);
    struct spool_ticket t4;
    cr_assert_eq(spool_msg_commit(m, &t4), 0);
    cr_assert_eq(t4.n, 1);
    cr_assert_eq(t4.seg[0], s2);
    spool_free(sp);
}

Test(spool, fsync_failure_moves_new_messages_to_the_spare)
{
    struct spool *sp = spool_new(0, 1 << 20);
    struct spool_segment *s1 = test_attach(sp, 1 << 20);
    struct spool_segment *s2 = test_attach(sp, 1 << 20);
    struct envelope env = test_env();
    struct spool_msg *m;
    struct spool_ticket t;
    cr_assert_eq(spool_msg_begin(sp, 1, &env, 0, false, &m), 0);
    cr_assert_eq(spool_msg_commit(m, &t), 0);
    spool_sync_started(s1);
    spool_sync_done(sp, s1, -EIO);
    cr_assert_eq(spool_msg_begin(sp, 2, &env, 0, false, &m), 0);
    cr_assert_eq(spool_msg_commit(m, &t), 0);
    cr_assert_eq(t.seg[0], s2);
    cr_assert_eq(spool_ticket_state(&t), 0);
    spool_free(sp);
}

Test(spool, nosync_commits_are_durable_at_once)
{
    struct spool *sp = spool_new(0, 1 << 20);
    test_attach(sp, 1 << 20);
    spool_set_nosync(sp, true);
    struct envelope env = test_env();
    struct spool_msg *m;
    struct spool_ticket t;
    cr_assert_eq(spool_msg_begin(sp, 1, &env, 0, false, &m), 0);
    cr_assert_eq(spool_msg_commit(m, &t), 0);
    cr_assert_eq(spool_ticket_state(&t), 1);
    struct spool_segment *want[4];
    cr_assert_eq(spool_sync_wanted(sp, want, 4), 0);
    cr_assert_eq(spool_append_done(sp, 1, NULL, &t), 0);
    cr_assert_eq(spool_ticket_state(&t), 1);
    spool_free(sp);
}

Test(spool, status_and_done_records_are_appended_with_tickets)
{
    struct spool *sp = spool_new(0, 1 << 20);
    struct spool_segment *seg = test_attach(sp, 1 << 20);
    struct spool_ticket t;
    cr_assert_eq(spool_append_rcpt_status(sp, 7, 2, RCPT_DEFERRED, SPOOL_RCPT_DELAY_WARNED, 123456789, NULL, &t), 0);
    cr_assert_eq(t.n, 1);
    cr_assert_eq(spool_ticket_state(&t), 0);
    cr_assert_eq(spool_append_done(sp, 7, NULL, &t), 0);
    cr_assert_eq(spool_append_abort(sp, 8, NULL), 0);
    struct test_rec rec[4];
    cr_assert_eq(test_walk(seg, rec, 4), 3);
    cr_assert_eq(rec[0].type, SPOOL_REC_RCPT_STATUS);
    const uint8_t *pl = seg->base + rec[0].off + SPOOL_RECORD_HEADER_SIZE;
    cr_assert_eq(test_u32(pl), 2);
    cr_assert_eq(pl[4], RCPT_DEFERRED);
    cr_assert_eq(pl[5], SPOOL_RCPT_DELAY_WARNED);
    cr_assert_eq(pl[6] | pl[7], 0);
    cr_assert_eq(test_u64(pl + 8), 123456789);
    cr_assert_eq(rec[1].type, SPOOL_REC_DONE);
    cr_assert_eq(rec[1].len, 0);
    cr_assert_eq(rec[2].type, SPOOL_REC_ABORT);
    cr_assert_eq(rec[2].qid, 8);
    spool_free(sp);
}

Test(spool, last_reference_unmaps_once)
{
    struct spool *sp = spool_new(0, 65536);
    struct spool_segment *seg = test_attach(sp, 65536);
    spool_segment_get(seg);
    spool_free(sp);
    cr_assert_eq(test_unmaps, 0);
    spool_segment_put(seg);
    cr_assert_eq(test_unmaps, 1);
}

/* Delivery reads bodies through the extents a commit hands out: they must be
 * the ones recovery would find, in order, with the chunk prefix skipped. */
Test(spool, commit_extents_match_what_recovery_finds)
{
    struct spool *sp = spool_new(0, 1 << 20);
    struct spool_segment *seg = test_attach(sp, 1 << 20);
    struct envelope env = test_env();
    struct spool_msg *m;
    cr_assert_eq(spool_msg_begin(sp, 11, &env, 0, false, &m), 0);
    cr_assert_eq(test_write_body(m, 20000, 9, 3000), 0);
    struct spool_ticket t;
    struct spool_extent *ext;
    uint32_t n;
    cr_assert_eq(spool_msg_commit_extents(m, &t, &ext, &n, NULL), 0);
    cr_assert_gt(n, 1, "20000 octets span several chunks");
    uint64_t total = 0;
    for (uint32_t i = 0; i < n; i++)
        total += ext[i].len;
    cr_assert_eq(total, 20000);

    struct spool_recovery r;
    test_recover(&r, &seg, 1);
    cr_assert_eq(r.nmsgs, 1);
    uint32_t k = 0;
    for (uint32_t i = 0; i < r.msgs[0].nchunks; i++) {
        if (r.msgs[0].chunks[i].len == 0)
            continue;
        cr_assert_eq(r.msgs[0].chunks[i].off, ext[k].off, "chunk %u", i);
        cr_assert_eq(r.msgs[0].chunks[i].len, ext[k].len, "chunk %u", i);
        k++;
    }
    cr_assert_eq(k, n);
    spool_recovery_free(&r);
    spool_extents_release(ext, n);
    spool_free(sp);
}

/* --- a store function (spool_receive=buffered) ---------------------------- */

/* Our Received: header, as io/ stores it at the start of a body. */
static const char test_received[] = "Received: from h (192.0.2.1)\r\n\tby us; now\r\n";

/* The segment is a memfd mapped read-only: a store through the mapping would
 * fault and kill the test; the store function writes the file with pwrite,
 * which the mapping then shows. */
static int test_store_calls, test_store_fail_after = -1;

static int
test_pwrite_store(const struct spool_segment *seg, size_t off, const void *src, size_t n)
{
    if (test_store_fail_after >= 0 && test_store_calls >= test_store_fail_after)
        return -EIO;
    test_store_calls++;
    cr_assert_eq(pwrite(seg->fd, src, n, (off_t)off), (ssize_t)n);
    return 0;
}

static struct spool_segment *
test_attach_readonly_file(struct spool *sp, size_t size)
{
    int fd = memfd_create("test-spool", 0);
    cr_assert_geq(fd, 0);
    cr_assert_eq(ftruncate(fd, (off_t)size), 0);
    uint8_t *base = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
    cr_assert_neq(base, MAP_FAILED);
    uint64_t seq = spool_next_segment_seq(sp);
    struct spool_segment *seg = spool_segment_attach(sp, seq, fd, base, size,
                                                     0x5a17c0ffee000000ull + seq);
    cr_assert_not_null(seg);
    return seg;
}

/* A spool with the store function and one read-only file segment. */
static struct spool *
test_store_spool(struct spool_segment **segp)
{
    test_store_calls = 0;
    test_store_fail_after = -1;
    struct spool *sp = spool_new(0, 8 << 20);
    spool_set_store(sp, test_pwrite_store);
    *segp = test_attach_readonly_file(sp, 8 << 20);
    return sp;
}

Test(spool, with_a_store_function_nothing_is_stored_through_the_mapping)
{
    struct spool_segment *seg;
    struct spool *sp = test_store_spool(&seg);
    struct envelope env = test_env();
    enum { N = 4 };
    size_t sizes[N] = { 0, 700, 9000, 300000 };
    struct spool_msg *m[N];
    uint8_t *src[N];
    size_t done[N] = { 0 };
    for (int i = 0; i < N; i++) {
        cr_assert_eq(spool_msg_begin(sp, 200 + i, &env, 0, i % 2, &m[i]), 0);
        src[i] = xmalloc(sizes[i] + 16);
        test_fill(src[i], sizes[i], 200 + i);
        memcpy(src[i] + sizes[i], "\r\nQUIT\r\n", 8);   /* given back below */
    }
    /* Interleaved, 1000 octets at a time, each message's 8 extra octets too. */
    bool more = true;
    while (more) {
        more = false;
        for (int i = 0; i < N; i++) {
            if (done[i] == sizes[i] + 8)
                continue;
            uint8_t *p;
            size_t avail;
            cr_assert_eq(spool_msg_space(m[i], &p, &avail), 0);
            size_t k = sizes[i] + 8 - done[i];
            if (k > avail)
                k = avail;
            if (k > 1000)
                k = 1000;
            cr_assert_eq(spool_msg_put(m[i], src[i] + done[i], k), 0);
            done[i] += k;
            more = true;
        }
    }
    struct spool_msg *aborted;
    cr_assert_eq(spool_msg_begin(sp, 299, &env, 0, false, &aborted), 0);
    cr_assert_eq(spool_msg_append(aborted, "never committed", 15), 0);
    spool_msg_abort(aborted);
    struct spool_ticket t[N];
    for (int i = 0; i < N; i++) {
        spool_msg_unwrite(m[i], 8);
        cr_assert_eq(spool_msg_commit(m[i], &t[i]), 0);
        cr_assert_eq(spool_ticket_state(&t[i]), 0);   /* not durable before the fsync */
    }
    cr_assert_gt(test_store_calls, 4 * N);

    struct spool_recovery r;
    test_recover(&r, &seg, 1);
    cr_assert_eq(r.ndamage, 0);
    cr_assert_eq(r.nmsgs, N);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(r.msgs[i].qid, (uint64_t)(200 + i));
        test_assert_body(&r.msgs[i], sizes[i], 200 + i);
        free(src[i]);
    }
    spool_recovery_free(&r);
    cr_assert_null(memmem(seg->base, seg->size, "QUIT", 4));
    cr_assert_null(memmem(seg->base, seg->size, "never committed", 15));
    spool_free(sp);
}

Test(spool, a_failed_store_fails_the_segment_and_the_commit)
{
    struct spool_segment *seg;
    struct spool *sp = test_store_spool(&seg);
    struct envelope env = test_env();
    struct spool_msg *m;
    cr_assert_eq(spool_msg_begin(sp, 300, &env, 0, false, &m), 0);
    uint8_t *p;
    size_t avail;
    cr_assert_eq(spool_msg_space(m, &p, &avail), 0);
    test_store_fail_after = test_store_calls;   /* the disk goes bad now */
    cr_assert_eq(spool_msg_put(m, "body\r\n", 6), -EIO);
    cr_assert(seg->failed);
    cr_assert_eq(spool_msg_length(m), 0);
    struct spool_ticket t;
    cr_assert_eq(spool_msg_commit(m, &t), -EIO);
    /* The next message finds no usable segment: 451, not a 250. */
    struct spool_msg *m2;
    cr_assert_lt(spool_msg_begin(sp, 301, &env, 0, false, &m2), 0);
    test_store_fail_after = -1;
    spool_free(sp);
}

Test(spool, a_segment_whose_header_store_fails_is_not_installed)
{
    struct spool_segment *seg;
    struct spool *sp = test_store_spool(&seg);
    test_store_fail_after = test_store_calls;   /* the spare's header fails */
    int fd = memfd_create("test-spool", 0);
    cr_assert_geq(fd, 0);
    cr_assert_eq(ftruncate(fd, 8 << 20), 0);
    uint8_t *base = mmap(NULL, 8 << 20, PROT_READ, MAP_SHARED, fd, 0);
    cr_assert_neq(base, MAP_FAILED);
    cr_assert_null(spool_segment_attach(sp, spool_next_segment_seq(sp), fd, base, 8 << 20, 7));
    munmap(base, 8 << 20);
    close(fd);
    test_store_fail_after = -1;
    /* The current segment is untouched and still takes mail. */
    cr_assert_not(seg->failed);
    struct envelope env = test_env();
    struct spool_msg *m;
    cr_assert_eq(spool_msg_begin(sp, 310, &env, 0, false, &m), 0);
    cr_assert_eq(spool_msg_append(m, "body\r\n", 6), 0);
    struct spool_ticket t;
    cr_assert_eq(spool_msg_commit(m, &t), 0);
    spool_free(sp);
}

Test(spool, with_durability_none_a_store_failing_at_commit_refuses_the_message)
{
    struct spool_segment *seg;
    struct spool *sp = test_store_spool(&seg);
    struct spool_segment *spare = test_attach_readonly_file(sp, 8 << 20);
    spool_set_nosync(sp, true);
    struct envelope env = test_env();
    struct spool_msg *m;
    cr_assert_eq(spool_msg_begin(sp, 320, &env, 0, false, &m), 0);
    cr_assert_eq(spool_msg_append(m, "body\r\n", 6), 0);
    test_store_fail_after = test_store_calls;   /* the seal and the COMMIT fail */
    struct spool_ticket t;
    cr_assert_eq(spool_msg_commit(m, &t), -EIO, "no fsync would catch it: refused now");
    cr_assert(seg->failed);
    cr_assert(spare->failed);
    test_store_fail_after = -1;
    spool_free(sp);
}

Test(spool, begin_with_first_octets_is_one_store_and_recovers_them_as_body_start)
{
    struct spool_segment *seg;
    struct spool *sp = test_store_spool(&seg);
    struct envelope env = test_env();
    const char *received = test_received;
    size_t rlen = sizeof test_received - 1;
    int before = test_store_calls;
    struct spool_msg *m;
    cr_assert_eq(spool_msg_begin_with(sp, 400, &env, 0, false, received, rlen, &m), 0);
    cr_assert_eq(test_store_calls - before, 1, "ENVELOPE, chunk header and octets in one");
    cr_assert_eq(spool_msg_length(m), rlen);
    cr_assert_eq(spool_msg_append(m, "Subject: x\r\n\r\nhi\r\n", 18), 0);
    struct spool_ticket t;
    cr_assert_eq(spool_msg_commit(m, &t), 0);
    /* More first octets than the first chunk holds: the rest follows. */
    uint8_t big[9000];
    test_fill(big, sizeof big, 401);
    cr_assert_eq(spool_msg_begin_with(sp, 401, &env, 100, false, big, sizeof big, &m), 0);
    cr_assert_eq(spool_msg_length(m), sizeof big);
    cr_assert_eq(spool_msg_commit(m, &t), 0);

    struct spool_recovery r;
    test_recover(&r, &seg, 1);
    cr_assert_eq(r.ndamage, 0);
    cr_assert_eq(r.nmsgs, 2);
    uint8_t *b = test_body(&r.msgs[0]);
    cr_assert_eq(r.msgs[0].body_len, rlen + 18);
    cr_assert_eq(memcmp(b, received, rlen), 0);
    cr_assert_eq(memcmp(b + rlen, "Subject: x\r\n\r\nhi\r\n", 18), 0);
    free(b);
    test_assert_body(&r.msgs[1], sizeof big, 401);
    cr_assert_gt(r.msgs[1].nchunks, 1);
    spool_recovery_free(&r);
    spool_free(sp);
}

/* rm is message qid, its body our Received: header, then body. */
static void
test_assert_received_then(const struct spool_recovered_msg *rm, uint64_t qid,
                          const char *received, size_t rlen, const uint8_t *body, size_t n)
{
    cr_assert_eq(rm->qid, qid);
    cr_assert_eq(rm->body_len, rlen + n);
    uint8_t *b = test_body(rm);
    cr_assert_eq(memcmp(b, received, rlen), 0);
    cr_assert_eq(memcmp(b + rlen, body, n), 0);
    free(b);
}

/* The body's last octets given to the commit: a small chunk at the tail goes
 * out with its header and the COMMIT in one store; a chunk that others
 * follow in two (itself, then the COMMIT at the tail), its span unchanged;
 * a big one as before. All recover byte for byte. */
Test(spool, commit_last_stores_a_small_chunk_and_its_commit_at_once)
{
    struct spool_segment *seg;
    struct spool *sp = test_store_spool(&seg);
    struct envelope env = test_env();
    const char *received = test_received;
    size_t rlen = sizeof test_received - 1;
    uint8_t body[1031], big[70000];
    test_fill(body, sizeof body, 500);
    test_fill(big, sizeof big, 502);
    struct spool_ticket t;
    uint8_t *p;
    size_t avail;

    /* At the tail. */
    struct spool_msg *m;
    cr_assert_eq(spool_msg_begin_with(sp, 500, &env, 0, false, received, rlen, &m), 0);
    cr_assert_eq(spool_msg_space(m, &p, &avail), 0);
    int before = test_store_calls;
    cr_assert_eq(spool_msg_commit_last(m, body, sizeof body, &t, NULL, NULL, NULL), 0);
    cr_assert_eq(test_store_calls - before, 1, "chunk, its header and the COMMIT in one");

    /* Followed by another message's records: the chunk, then the COMMIT. */
    struct spool_msg *m1, *m2;
    cr_assert_eq(spool_msg_begin_with(sp, 501, &env, 0, false, received, rlen, &m1), 0);
    cr_assert_eq(spool_msg_begin_with(sp, 509, &env, 0, false, received, rlen, &m2), 0);
    cr_assert_eq(spool_msg_space(m1, &p, &avail), 0);
    before = test_store_calls;
    cr_assert_eq(spool_msg_commit_last(m1, body, sizeof body, &t, NULL, NULL, NULL), 0);
    cr_assert_eq(test_store_calls - before, 2);
    spool_msg_abort(m2);

    /* Bigger than a store gathers: earlier octets stay where they are. */
    cr_assert_eq(spool_msg_begin(sp, 502, &env, sizeof big, false, &m), 0);
    cr_assert_eq(spool_msg_append(m, big, sizeof big - 5000), 0);
    cr_assert_eq(spool_msg_space(m, &p, &avail), 0);
    cr_assert_geq(avail, 5000);
    cr_assert_eq(spool_msg_commit_last(m, big + sizeof big - 5000, 5000, &t, NULL, NULL, NULL),
                 0);

    /* More than the open chunk holds is refused, and the message with it. */
    cr_assert_eq(spool_msg_begin(sp, 503, &env, 0, false, &m), 0);
    cr_assert_eq(spool_msg_space(m, &p, &avail), 0);
    uint8_t *huge = xcalloc(1, avail + 1);
    cr_assert_eq(spool_msg_commit_last(m, huge, avail + 1, &t, NULL, NULL, NULL), -EINVAL);
    free(huge);

    struct spool_recovery r;
    test_recover(&r, &seg, 1);
    cr_assert_eq(r.ndamage, 0);
    cr_assert_eq(r.nmsgs, 3);
    for (int i = 0; i < 2; i++)
        test_assert_received_then(&r.msgs[i], 500 + i, received, rlen, body, sizeof body);
    cr_assert_eq(r.msgs[2].qid, 502u);
    test_assert_body(&r.msgs[2], sizeof big, 502);
    spool_recovery_free(&r);
    spool_free(sp);
}

/* spool_set_batching: records at the tail wait in memory until an fsync is
 * chosen; whatever overlaps them (a chunk's store, an abort's zeroes, a read
 * of the mapping) sends them first, so every store lands in order. */
Test(spool, batching_gathers_tail_records_until_an_fsync_is_chosen)
{
    struct spool_segment *seg;
    struct spool *sp = test_store_spool(&seg);
    spool_set_batching(sp, true);
    struct envelope env = test_env();
    const char *received = test_received;
    size_t rlen = sizeof test_received - 1;
    uint8_t body[1031];
    test_fill(body, sizeof body, 600);
    uint8_t *p;
    size_t avail;
    struct spool_ticket t1, t2, ts;
    struct spool_segment *want[4];

    int before = test_store_calls;
    struct spool_msg *m1, *m2, *m3;
    cr_assert_eq(spool_msg_begin_with(sp, 600, &env, 0, false, received, rlen, &m1), 0);
    cr_assert_eq(spool_msg_begin_with(sp, 601, &env, 0, false, received, rlen, &m2), 0);
    /* m1's chunk keeps its room between the two: m1's records go. */
    cr_assert_eq(test_store_calls - before, 1);
    cr_assert_eq(spool_msg_space(m1, &p, &avail), 0);
    cr_assert_eq(spool_msg_commit_last(m1, body, sizeof body, &t1, NULL, NULL, NULL), 0);
    cr_assert_eq(test_store_calls - before, 3, "m1's chunk; m2's records (the COMMIT is past them)");
    cr_assert_eq(spool_msg_space(m2, &p, &avail), 0);
    cr_assert_eq(spool_msg_commit_last(m2, body, sizeof body, &t2, NULL, NULL, NULL), 0);
    cr_assert_eq(spool_append_rcpt_status(sp, 600, 0, RCPT_DELIVERED, 0, 0, NULL, &ts), 0);
    cr_assert_eq(test_store_calls - before, 4, "m2's chunk; both COMMITs and the status wait");
    struct spool_recovery r;
    test_recover(&r, &seg, 1);
    cr_assert_eq(r.nmsgs, 0, "no COMMIT in the file before the fsync is chosen");
    spool_recovery_free(&r);
    /* Begun in the batch and given up: the zeroes send the batch first. */
    cr_assert_eq(spool_msg_begin_with(sp, 602, &env, 0, false, received, rlen, &m3), 0);
    cr_assert_eq(test_store_calls - before, 4, "m3's records join the batch");
    spool_msg_abort(m3);

    cr_assert_eq(spool_sync_wanted(sp, want, 4), 1);
    cr_assert_eq(spool_ticket_state(&t1), 0);
    spool_sync_started(want[0]);
    spool_sync_done(sp, want[0], 0);
    cr_assert_eq(spool_ticket_state(&t1), 1);
    cr_assert_eq(spool_ticket_state(&t2), 1);
    test_recover(&r, &seg, 1);
    cr_assert_eq(r.ndamage, 0);
    cr_assert_eq(r.nmsgs, 2);
    for (int i = 0; i < 2; i++)
        test_assert_received_then(&r.msgs[i], 600 + i, received, rlen, body, sizeof body);
    cr_assert_eq(r.msgs[0].env.rcpts[0].state, RCPT_DELIVERED);
    cr_assert_eq(r.dropped_uncommitted, 0, "m3, given up in the batch, left an ABORT");
    spool_recovery_free(&r);

    /* The batch's store fails when the fsync is chosen: that segment is
     * failed, and the commit in it is refused, never acknowledged. */
    struct spool_msg *m4;
    struct spool_ticket t4;
    cr_assert_eq(spool_msg_begin_with(sp, 603, &env, 0, false, received, rlen, &m4), 0);
    cr_assert_eq(spool_msg_space(m4, &p, &avail), 0);
    cr_assert_eq(spool_msg_commit_last(m4, body, sizeof body, &t4, NULL, NULL, NULL), 0);
    test_store_fail_after = test_store_calls;
    cr_assert_eq(spool_sync_wanted(sp, want, 4), 0);
    cr_assert(seg->failed);
    cr_assert_eq(spool_ticket_state(&t4), -EIO);
    test_store_fail_after = -1;
    spool_free(sp);
}

Test(spool, batching_is_off_with_durability_none)
{
    for (int order = 0; order < 2; order++) {
        struct spool_segment *seg;
        struct spool *sp = test_store_spool(&seg);
        if (order == 0) {
            spool_set_nosync(sp, true);
            spool_set_batching(sp, true);
        } else {
            spool_set_batching(sp, true);
            spool_set_nosync(sp, true);
        }
        struct envelope env = test_env();
        struct spool_msg *m;
        int before = test_store_calls;
        cr_assert_eq(spool_msg_begin(sp, 610, &env, 0, false, &m), 0);
        cr_assert_gt(test_store_calls, before, "stored at once: read for delivery at once");
        spool_msg_abort(m);
        spool_free(sp);
    }
}

/* The usual case: a small message begun and committed at the tail while its
 * first records still wait in the batch. */
Test(spool, batching_a_tail_chunk_whose_header_waits_in_the_batch)
{
    struct spool_segment *seg;
    struct spool *sp = test_store_spool(&seg);
    spool_set_batching(sp, true);
    struct envelope env = test_env();
    const char *received = test_received;
    size_t rlen = sizeof test_received - 1;
    uint8_t body[700];
    test_fill(body, sizeof body, 620);
    struct spool_msg *m;
    struct spool_ticket t;
    uint8_t *p;
    size_t avail;
    int before = test_store_calls;
    cr_assert_eq(spool_msg_begin_with(sp, 620, &env, 0, false, received, rlen, &m), 0);
    cr_assert_eq(spool_msg_space(m, &p, &avail), 0);
    cr_assert_eq(spool_msg_commit_last(m, body, sizeof body, &t, NULL, NULL, NULL), 0);
    cr_assert_eq(test_store_calls - before, 1, "the batch goes before the chunk is read back");
    struct spool_segment *want[4];
    cr_assert_eq(spool_sync_wanted(sp, want, 4), 1);
    cr_assert_eq(test_store_calls - before, 2, "chunk and COMMIT: one store");
    spool_sync_started(want[0]);
    spool_sync_done(sp, want[0], 0);
    cr_assert_eq(spool_ticket_state(&t), 1);
    struct spool_recovery r;
    test_recover(&r, &seg, 1);
    cr_assert_eq(r.ndamage, 0);
    cr_assert_eq(r.nmsgs, 1);
    test_assert_received_then(&r.msgs[0], 620, received, rlen, body, sizeof body);
    spool_recovery_free(&r);
    spool_free(sp);
}

/* The batch's store fails when the segment rolls: the spare takes over as
 * for any failed segment, and the record that wanted the roll goes there. */
Test(spool, batching_a_failed_store_at_a_roll_keeps_the_spare)
{
    struct spool_segment *seg;
    struct spool *sp = test_store_spool(&seg);
    struct spool_segment *spare = test_attach_readonly_file(sp, 8 << 20);
    spool_set_batching(sp, true);
    struct envelope env = test_env();
    struct spool_msg *m;
    cr_assert_eq(spool_msg_begin(sp, 630, &env, 0, false, &m), 0);   /* in the batch */
    test_store_fail_after = test_store_calls;
    seg->tail = seg->size;   /* the next record rolls */
    struct spool_ticket t;
    cr_assert_eq(spool_append_rcpt_status(sp, 630, 0, RCPT_DELIVERED, 0, 0, NULL, &t), 0);
    test_store_fail_after = -1;
    cr_assert(seg->failed);
    cr_assert_not(spare->failed);
    cr_assert_not(spare->sealed, "the spare is the current segment, not thrown away");
    cr_assert_eq(t.n, 1);
    cr_assert_eq(t.seg[0], spare);
    spool_msg_abort(m);
    spool_free(sp);
}

/* --- a random model of the buffered spool, crashed at random moments ---- */

struct model_msg {
    uint64_t qid;
    struct spool_msg *m;        /* open, else NULL */
    uint8_t *want;              /* Received: header, then the body */
    size_t len;
    bool committed, acked;
    bool retiring;              /* spool_retire called */
    uint64_t retired_at;        /* the group commit after which it is gone */
    struct spool_ticket t;
    struct spool_holdset holds;
};

static uint64_t
model_rand(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* A recovery of base (the live file, or a copy of it) finds every
 * acknowledged message whole, and nothing that was not committed. Retired
 * messages are gone once a group commit covered their DONE; in the file as
 * written, one being retired may already be gone. */
static bool
model_required(const struct model_msg *mm, uint64_t syncs, bool written)
{
    if (!mm->acked || (mm->retired_at && mm->retired_at <= syncs))
        return false;
    return !(written && mm->retiring);
}

static void
model_check(struct spool_segment *seg, const uint8_t *base, struct model_msg *msgs, size_t n,
            uint64_t syncs, const char *what)
{
    struct spool_segment *view = seg;
    if (base != seg->base) {
        view = xcalloc(1, sizeof *view);
        view->worker = seg->worker;
        view->seq = seg->seq;
        view->salt = seg->salt;
        view->size = seg->size;
        view->base = (uint8_t *)base;
        view->fd = -1;
        atomic_init(&view->refs, 1);
    }
    struct spool_recovery r;
    test_recover(&r, &view, 1);
    cr_assert_eq(r.ndamage, 0, "%s: damage at %u (%s, qid %llu)", what,
                 r.ndamage ? r.damage[0].off : 0, r.ndamage ? r.damage[0].why : "",
                 r.ndamage ? (unsigned long long)r.damage[0].qid : 0ull);
    size_t acked = 0, found = 0;
    /* A retirement made durable by a group commit stays: the message is gone. */
    bool written = base == seg->base;
    for (size_t i = 0; i < n; i++)
        acked += model_required(&msgs[i], syncs, written);
    for (size_t k = 0; k < r.nmsgs; k++) {
        struct model_msg *mm = NULL;
        for (size_t i = 0; i < n; i++)
            if (msgs[i].qid == r.msgs[k].qid)
                mm = &msgs[i];
        cr_assert_not_null(mm, "%s: unknown qid", what);
        cr_assert(mm->committed, "%s: qid %llu recovered but never committed", what,
                  (unsigned long long)mm->qid);
        cr_assert(!(mm->retired_at && mm->retired_at <= syncs),
                  "%s: qid %llu recovered after its retirement was durable", what,
                  (unsigned long long)mm->qid);
        cr_assert_eq(r.msgs[k].body_len, mm->len, "%s: qid %llu length", what,
                     (unsigned long long)mm->qid);
        uint8_t *b = test_body(&r.msgs[k]);
        cr_assert_eq(memcmp(b, mm->want, mm->len), 0, "%s: qid %llu body", what,
                     (unsigned long long)mm->qid);
        free(b);
        found += model_required(mm, syncs, written);
    }
    cr_assert_eq(found, acked, "%s: %zu of %zu acknowledged messages recovered", what, found,
                 acked);
    spool_recovery_free(&r);
    if (view != seg)
        xfree(view);
}

Test(spool, batching_random_model_recovers_every_acknowledged_message)
{
    enum { STEPS = 600, MAXMSGS = 400, SEGSIZE = 8 << 20 };
    uint64_t seeds = getenv("SPOOL_MODEL_SEEDS") ? strtoull(getenv("SPOOL_MODEL_SEEDS"), NULL, 10)
                                                 : 12;
    for (uint64_t seed = 1; seed <= seeds; seed++) {
        uint64_t rng = seed * 0x9e3779b97f4a7c15ull;
        test_store_calls = 0;
        test_store_fail_after = -1;
        struct spool *sp = spool_new(0, SEGSIZE);
        spool_set_store(sp, test_pwrite_store);
        spool_set_batching(sp, true);
        struct spool_segment *seg = test_attach_readonly_file(sp, SEGSIZE);
        struct envelope env = test_env();
        struct model_msg *msgs = xcalloc(MAXMSGS, sizeof *msgs);
        size_t n = 0;
        uint8_t *synced = xcalloc(1, SEGSIZE);   /* the file at the last fsync */
        uint64_t syncs = 0, synced_syncs = 0;
        cr_assert_eq(pread(seg->fd, synced, SEGSIZE, 0), (ssize_t)SEGSIZE);
        uint8_t chunk[3000];
        for (int step = 0; step < STEPS && n < MAXMSGS; step++) {
            uint64_t op = model_rand(&rng) % 10;
            size_t open[MAXMSGS], nopen = 0, done[MAXMSGS], ndone = 0;
            for (size_t i = 0; i < n; i++) {
                if (msgs[i].m)
                    open[nopen++] = i;
                else if (msgs[i].committed)
                    done[ndone++] = i;
            }
            if (op == 0 || nopen == 0) {
                if (nopen >= 5)
                    continue;
                struct model_msg *mm = &msgs[n];
                mm->qid = 1000 * seed + n;
                if (spool_msg_begin_with(sp, mm->qid, &env, 0, model_rand(&rng) % 4 == 0,
                                         test_received, sizeof test_received - 1, &mm->m)
                    != 0)
                    break;   /* full */
                mm->want = xmalloc(sizeof test_received + 16384 + 1500);   /* body, then the end */
                memcpy(mm->want, test_received, sizeof test_received - 1);
                mm->len = sizeof test_received - 1;
                n++;
                continue;
            }
            struct model_msg *mm = &msgs[open[model_rand(&rng) % nopen]];
            uint8_t *p;
            size_t avail;
            if (op == 1 && mm->len > sizeof test_received + 16) {   /* given back */
                size_t k = 1 + model_rand(&rng) % 12;
                spool_msg_unwrite(mm->m, k);
                mm->len -= k;
            } else if (op <= 4) {                /* more body */
                size_t k = 1 + model_rand(&rng) % sizeof chunk;
                if (mm->len + k > 16384 || spool_msg_space(mm->m, &p, &avail) != 0)
                    continue;
                k = k < avail ? k : avail;
                test_fill(chunk, k, mm->qid + mm->len);
                cr_assert_eq(spool_msg_put(mm->m, chunk, k), 0);
                memcpy(mm->want + mm->len, chunk, k);
                mm->len += k;
            } else if (op <= 6) {                /* the end of the body, committed */
                cr_assert_eq(spool_msg_space(mm->m, &p, &avail), 0);
                size_t k = model_rand(&rng) % 1500;
                k = k < avail ? k : avail;
                test_fill(chunk, k, mm->qid + mm->len);
                memcpy(mm->want + mm->len, chunk, k);
                mm->len += k;
                struct spool_extent *ext;
                uint32_t next;
                cr_assert_eq(spool_msg_commit_last(mm->m, chunk, k, &mm->t, &ext, &next,
                                                   &mm->holds), 0);
                spool_extents_release(ext, next);
                mm->m = NULL;
                mm->committed = true;
            } else if (op == 7) {                /* given up */
                spool_msg_abort(mm->m);
                mm->m = NULL;
            } else if (op == 8 && ndone > 0) {   /* delivered: status, then retired */
                struct model_msg *d = &msgs[done[model_rand(&rng) % ndone]];
                if (!d->acked || d->retiring)
                    continue;
                struct spool_ticket t;
                cr_assert_eq(spool_append_rcpt_status(sp, d->qid, 0, RCPT_DELIVERED, 0, 0,
                                                      &d->holds, &t), 0);
                if (model_rand(&rng) % 2) {
                    spool_retire(&d->holds, d->qid);
                    spool_retire_pump(sp);
                    d->retiring = true;
                }
            } else {                             /* group commit */
                struct spool_segment *want[4];
                size_t ns = spool_sync_wanted(sp, want, 4);
                for (size_t i = 0; i < ns; i++) {
                    spool_sync_started(want[i]);
                    spool_sync_done(sp, want[i], 0);
                }
                syncs++;
                for (size_t i = 0; i < n; i++) {
                    if (msgs[i].committed && spool_ticket_state(&msgs[i].t) == 1)
                        msgs[i].acked = true;
                    if (msgs[i].retiring && !msgs[i].retired_at)
                        msgs[i].retired_at = syncs;   /* its DONE went with this fsync */
                }
                spool_retire_pump(sp);   /* holds go once it is durable */
                cr_assert_eq(pread(seg->fd, synced, SEGSIZE, 0), (ssize_t)SEGSIZE);
                synced_syncs = syncs;
            }
            if (step % 100 == 99) {
                /* kill -9 now: the file as written so far (what waits in the
                 * batch is lost), and as it was at the last fsync. */
                model_check(seg, seg->base, msgs, n, syncs, "as written");
                model_check(seg, synced, msgs, n, synced_syncs, "as of the last fsync");
            }
        }
        model_check(seg, seg->base, msgs, n, syncs, "at the end");
        cr_assert_gt(test_store_calls, 0);
        for (size_t i = 0; i < n; i++) {
            if (msgs[i].m)
                spool_msg_abort(msgs[i].m);
            if (!msgs[i].retiring)
                spool_holdset_release(&msgs[i].holds);
            free(msgs[i].want);
        }
        free(msgs);
        free(synced);
        spool_free(sp);
    }
}
