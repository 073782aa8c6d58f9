/*
 * spool - the durable store: append-only, mmap'd segment files of typed,
 * length-prefixed, checksummed records.
 *
 * Ownership and threads: a struct spool is one worker's append side and is
 * used only by that worker's thread. Segments are shared read-only with other
 * workers after their records are committed (delivery reads bodies from any
 * worker's mapping); their lifetime is a reference count (atomic).
 *
 * The spool owns layout, not system calls: io/ creates, fallocates (so stores
 * into the mapping can never SIGBUS on a full disk), maps and fsyncs segment
 * files, and tells the spool about them. The spool says which segments hold
 * unsynced commits and when a message is durable.
 *
 * On-disk layout of a segment (all integers little-endian):
 *   [segment header, 64 bytes][record][record]...[zeros to the end]
 * Every record starts on an 8-byte boundary with a 32-byte header:
 *   u32 magic 'RMR1' | u8 type | u8 flags | u16 zero | u32 span | u32 len |
 *   u64 qid | u32 payload_crc | u32 header_crc
 * span is the bytes the record occupies (header included, multiple of 8);
 * len <= span - 32 is the payload length; payload_crc is CRC-32C of the
 * payload; header_crc is CRC-32C of the first 28 header bytes seeded with the
 * segment's random salt, so bytes inside a message body can never pass for a
 * header when recovery resynchronises after damage.
 *
 * The segment header (64 bytes):
 *   "RINGSEG1" | u32 version (1) | u32 worker | u64 seq | u64 salt |
 *   28 zero bytes | u32 header_crc (CRC-32C of bytes 0..59)
 * The record header CRC is crc32c(crc32c(0, salt as 8 LE octets), hdr, 28).
 * Records of an unknown type with a valid header are skipped by span.
 *
 * Payloads:
 *   ENVELOPE     the envelope encoding (envelope.h)
 *   RESERVED     len 0, payload_crc 0; the span is what the chunk will use.
 *                The chunk prefix below is already written.
 *   BODY         u32 chunk index | u32 zero (SPOOL_CHUNK_PREFIX octets),
 *                then the body octets; payload_crc covers prefix and body.
 *                The chunk sequence number lives here, not in the header.
 *   COMMIT       u64 body_len | u32 nchunks | u32 flags   (16 octets)
 *   RCPT_STATUS  u32 rcpt_index | u8 state | u8 flags | 2 zero
 *                | u64 next_attempt_ms   (flags: SPOOL_RCPT_*)
 *   DONE, ABORT  empty
 *
 * A message is:  ENVELOPE, BODY chunk 0..n-1, COMMIT  (all with its qid).
 * Body chunks are reserved at the tail as RESERVED records, received into
 * directly from the socket, then sealed as BODY. Chunks of concurrent messages
 * interleave. A message exists after recovery only if its COMMIT record and
 * every chunk it names are intact: a torn or uncommitted message is dropped,
 * never delivered in part. Later per-recipient outcomes are appended as
 * RCPT_STATUS records, and DONE when nothing is left to do.
 */
#ifndef RINGMTA_QUEUE_SPOOL_H
#define RINGMTA_QUEUE_SPOOL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "envelope.h"

#define SPOOL_SEGMENT_HEADER_SIZE 64
#define SPOOL_RECORD_HEADER_SIZE 32
#define SPOOL_RECORD_MAGIC 0x31524d52u /* "RMR1" */
#define SPOOL_SEGMENT_MAGIC "RINGSEG1"
#define SPOOL_SEGMENT_VERSION 1u
#define SPOOL_CHUNK_PREFIX 8        /* u32 chunk index, u32 zero */
/* The first chunk: size_hint + size_hint / SLACK_DIV + SLACK (capped at
 * MAX), or MIN without a hint. The hint is SIZE= plus the octets io/ adds
 * (Received:); the slack covers doubled dots, the terminator and a command
 * pipelined behind it. Chunks interleave across sessions and unused room is
 * given back only at the tail, so every octet of slack spreads messages over
 * more pages, which each group commit writes back (and write-protects)
 * again. When a hinted first chunk overflows, the rest is what the hint
 * missed: the next chunk starts at MIN again. Otherwise chunks double. */
#define SPOOL_CHUNK_MIN (2u << 10)
#define SPOOL_CHUNK_SLACK 256u
#define SPOOL_CHUNK_SLACK_DIV 64u
#define SPOOL_CHUNK_MAX (1u << 20)  /* chunks double up to this */
#define SPOOL_SEGMENT_MIN_SIZE 4096
#define SPOOL_SEGMENT_MAX_SIZE 0xfffff000u /* offsets are u32 */

enum spool_record_type {
    SPOOL_REC_NONE = 0,        /* zeros: end of the written part */
    SPOOL_REC_RESERVED = 1,    /* a body chunk still being received */
    SPOOL_REC_ENVELOPE = 2,
    SPOOL_REC_BODY = 3,        /* flags: SPOOL_BODY_RAW for BDAT bytes */
    SPOOL_REC_COMMIT = 4,      /* payload: struct spool_commit_payload */
    SPOOL_REC_RCPT_STATUS = 5, /* per-recipient outcome (delivery) */
    SPOOL_REC_DONE = 6,        /* message finished: all recipients final */
    SPOOL_REC_ABORT = 7,       /* reception abandoned; ignore the qid */
    SPOOL_REC_RETIRED = 8,     /* a COMMIT rewritten in place: the message is
                                  finished, its records are dead */
};

enum {
    SPOOL_BODY_RAW = 1,          /* chunk holds BDAT octets, not dot-stuffed DATA */
    SPOOL_BODY_NO_DOT_LINES = 2, /* DATA form in which no line begins with '.':
                                    the octets are also the unstuffed message, so
                                    delivery may send them by BDAT as they are.
                                    Only in COMMIT (set once the end is seen). */
};

struct spool_commit_payload {
    uint64_t body_len;          /* octets of body over all chunks, in order */
    uint32_t nchunks;
    uint32_t flags;             /* SPOOL_BODY_RAW if the message came by BDAT,
                                   SPOOL_BODY_NO_DOT_LINES */
};

/* One mapped segment file. Fields are read-only for everyone but the owner. */
struct spool_segment {
    uint32_t worker;
    uint64_t seq;
    int fd;                     /* kept open for fdatasync; io/ closes it */
    uint8_t *base;
    size_t size;
    uint64_t salt;
    size_t tail;                /* next free offset (owner only) */
    atomic_uint refs;           /* mapping lifetime; last put unmaps */
    /* group commit bookkeeping (owner thread only) */
    uint64_t dirty_gen;         /* bumped by each record written into this segment */
    uint64_t sync_gen;          /* highest generation made durable */
    uint64_t sync_inflight_gen; /* generation an in-flight fsync covers, or 0 */
    uint64_t awaited_gen;       /* highest generation of a commit a client waits for */
    bool failed;                /* fsync failed: never claim these bytes */
    bool sealed;                /* no more appends */
    bool removing;              /* the file is being unlinked (owner only) */
    struct spool *owner;        /* whose append side fsyncs and removes it; NULL:
                                   nobody's (tests, segments recovery removes) */
    atomic_uint holds;          /* messages (and messages being received) with
                                   records here that a restart still needs */
};

/* Where a message's bytes are: a list of chunk extents, in order. */
struct spool_extent {
    struct spool_segment *seg;
    uint32_t off;               /* payload offset in seg */
    uint32_t len;
};

/* A message being received. Owned by the session; freed by commit/abort. */
struct spool_msg;

/* What a commit must wait for: each segment the message touched, up to a
 * generation. Small fixed array: a message touches at most 4 segments
 * (larger messages relocate to a fresh segment rather than span more). */
#define SPOOL_TICKET_SEGS 4
struct spool_ticket {
    unsigned n;
    struct spool_segment *seg[SPOOL_TICKET_SEGS];
    uint64_t gen[SPOOL_TICKET_SEGS];
};

struct spool;

/*
 * Holds: why a segment file must stay. A message holds every segment with a
 * record of it that a restart would need (content, recipient status, DONE),
 * from the moment the record is placed until the message is finished and
 * its COMMIT has been retired durably; then a restart cannot bring it back
 * whatever else is removed. A sealed segment with no holds is removed by
 * its owner (spool_removable). The set is push-only and lock-free: workers
 * delivering different domains of one message add to it concurrently.
 */
struct spool_hold {
    struct spool_segment *seg;  /* one hold and one reference */
    struct spool_hold *next;
};
struct spool_holdset {
    _Atomic(struct spool_hold *) head;
    struct spool_segment *commit_seg;   /* where its COMMIT is (also in the set) */
    uint32_t commit_off;                /* record offset of the COMMIT */
};
/* Adds a hold on seg unless the set has one (any thread). */
void spool_holdset_add(struct spool_holdset *hs, struct spool_segment *seg);
/* Drops every hold of the set and empties it. */
void spool_holdset_release(struct spool_holdset *hs);
/* Moves src's holds into *dst (which must be empty); src is left empty. */
void spool_holdset_move(struct spool_holdset *dst, struct spool_holdset *src);
/*
 * The message qid is finished: every recipient's final status is durable.
 * Takes hs (left empty): the owner of hs->commit_seg rewrites the COMMIT as
 * RETIRED (spool_retire_pump) and, once that is durable, drops the holds.
 * Any thread. Without a commit segment or an owner, the holds go at once.
 */
void spool_retire(struct spool_holdset *hs, uint64_t qid);
/* Owner thread: writes the retirements pushed to this spool, and releases
 * those made durable. Call before spool_sync_wanted (the writes ride the
 * same fsync as the commits). */
void spool_retire_pump(struct spool *sp);
/* Owner thread: sealed segments of this spool that nothing holds (not the
 * current or spare, not failed, no fsync in flight), up to max; each is
 * marked removing. io/ unlinks them, fsyncs the directory, then calls
 * spool_segment_removed. */
size_t spool_removable(struct spool *sp, struct spool_segment **segs, size_t max);
/* The segment's file is gone: the spool forgets it (and puts its reference). */
void spool_segment_removed(struct spool *sp, struct spool_segment *seg);
/* A segment recovery kept joins this spool, sealed: it is fsynced (for
 * retirements) and removed here once nothing holds it. Takes a reference. */
void spool_adopt_segment(struct spool *sp, struct spool_segment *seg);

/* One worker's append side. segment_size is the size of new segments.
 * spool_free puts the spool's reference on every segment it attached;
 * commit or abort every message first. */
struct spool *spool_new(uint32_t worker, size_t segment_size);
struct spool *spool_free(struct spool *sp);

/* Path of segment seq of this worker under dir: "<dir>/seg/w<W>-<seq hex>.seg".
 * Returns the length written (snprintf semantics). */
int spool_segment_path(char *buf, size_t size, const char *dir, uint32_t worker,
                       uint64_t seq);

/* The next segment number to create; io/ opens, fallocates, maps it, then
 * calls spool_segment_attach. Segment numbers only grow: each call reserves
 * a new number, so a failed create never makes two files share one. */
uint64_t spool_next_segment_seq(struct spool *sp);
/* After recovery: numbers below seq are taken (spool_recovery.next_segment_seq). */
void spool_set_next_segment_seq(struct spool *sp, uint64_t seq);
/* True when io/ should prepare a spare segment now (the current one is past
 * a quarter full, or there is none), so rollover need not wait on the disk. */
bool spool_wants_segment(const struct spool *sp);
/* Takes a freshly created, zeroed, fallocated mapping and writes its header.
 * The spool keeps one current and at most one spare segment. Returns the new
 * segment (the spool holds one reference until spool_free), or NULL when a
 * spare is already attached, when a segment numbered seq or higher was
 * attached already (segments are used in number order: recovery orders
 * status records by it), when size is outside SPOOL_SEGMENT_MIN_SIZE..
 * SPOOL_SEGMENT_MAX_SIZE, or when the header store fails (the mapping then
 * stays the caller's). */
struct spool_segment *spool_segment_attach(struct spool *sp, uint64_t seq, int fd,
                                           uint8_t *base, size_t size, uint64_t salt);
/* Reference counting for readers (delivery, other workers). The last put
 * calls the unmap callback (munmap and close live in io/), then frees the
 * struct: whoever makes a struct spool_segment outside spool_segment_attach
 * allocates it with xcalloc and starts refs at 1. */
void spool_segment_get(struct spool_segment *seg);
void spool_segment_put(struct spool_segment *seg);
typedef void spool_unmap_fn(struct spool_segment *seg);
/*
 * How the append side stores into its segments. Without one (the default)
 * every record and body octet is a memcpy into the mapping; with one, every
 * store the spool makes goes through it (io/: pwrite at off, so no page of
 * the mapping is written; spool_receive=buffered). 0 or -errno; a failure
 * fails the segment like a failed fsync. Set before any segment is attached.
 */
typedef int spool_store_fn(const struct spool_segment *seg, size_t off, const void *src,
                           size_t n);
void spool_set_store(struct spool *sp, spool_store_fn *store);
/* With a store function and fsync durability: records appended at the tail
 * are gathered across calls and stored as one (a pwrite), at the latest
 * when spool_sync_wanted/awaited choose what to fsync. Until then the file
 * (and the mapping) may lack them: only what an fsync covered is read
 * outside the spool. Off (the default) stores each call's records before it
 * returns. */
void spool_set_batching(struct spool *sp, bool on);
void spool_set_unmap(spool_unmap_fn *fn);
/*
 * Where a spare comes from when it is late: a record does not fit in the
 * current segment and io/'s ring has not delivered the spare yet (a disk
 * slower than the segment fills). The function creates a segment now and
 * attaches it (spool_segment_attach), so a slow disk delays that one append
 * instead of refusing the message with 452. 0 or -errno; without one, or
 * when it fails, the append gets -ENOSPC.
 */
typedef int spool_spare_fn(struct spool *sp, void *arg);
void spool_set_spare_source(struct spool *sp, spool_spare_fn *fn, void *arg);
/* Checks a segment header (magic, version, CRC) and reads its fields.
 * Returns 0 or -EINVAL. Any out pointer may be NULL. */
int spool_segment_header_read(const uint8_t *base, size_t size, uint32_t *worker,
                              uint64_t *seq, uint64_t *salt);
/* header_crc of a record header (its first 28 octets) in a segment with this
 * salt; shared by the append side, recovery and tests. */
uint32_t spool_record_header_crc(uint64_t salt, const uint8_t *hdr);

/*
 * Starts a message: writes its ENVELOPE record and reserves the first body
 * chunk (sized from size_hint, the SIZE= parameter or 0). Returns 0, or
 * -ENOSPC when no segment has room (answer 452 4.3.1), or -EIO when the
 * current segment failed and no spare is ready (451 4.3.0).
 */
int spool_msg_begin(struct spool *sp, uint64_t qid, const struct envelope *env,
                    uint64_t size_hint, bool raw, struct spool_msg **out);
/* The same, with the first nfirst body octets (our Received: header) stored
 * at once: ENVELOPE, the first chunk's header and these go out in one store
 * when they lie back to back. */
int spool_msg_begin_with(struct spool *sp, uint64_t qid, const struct envelope *env,
                         uint64_t size_hint, bool raw, const void *first, size_t nfirst,
                         struct spool_msg **out);
/*
 * Writable space for the next body octets: at least 1 octet at *p, *avail
 * octets long. When the current chunk is full it is sealed and a bigger one
 * reserved (chunks double up to 1 MiB). Returns 0 or -ENOSPC / -EIO.
 */
int spool_msg_space(struct spool_msg *m, uint8_t **p, size_t *avail);
/* Stores n octets (at most the last space's *avail) at the last space and
 * counts them written; through the spool's store function if it has one.
 * 0, or -EIO when the store failed (the segment is failed; abort). */
int spool_msg_put(struct spool_msg *m, const void *src, size_t n);
/* Copies n octets in, across chunks as needed (space, copy, wrote).
 * Returns 0 or -ENOSPC / -EIO; on failure the message must be aborted. */
int spool_msg_append(struct spool_msg *m, const void *src, size_t n);
/* n octets were stored at the last space. */
void spool_msg_wrote(struct spool_msg *m, size_t n);
/* Gives back the last n octets written (e.g. bytes that followed the
 * end-of-data mark and belong to the next command). They may reach back
 * into chunks already sealed (a mark straddling a chunk boundary). */
void spool_msg_unwrite(struct spool_msg *m, size_t n);
/* Octets stored so far. */
uint64_t spool_msg_length(const struct spool_msg *m);
/* SPOOL_BODY_* facts learnt while receiving, written with the COMMIT. */
void spool_msg_add_flags(struct spool_msg *m, uint32_t flags);
/*
 * Seals the last chunk and appends COMMIT. Fills *ticket with what must be
 * synced before the message may be acknowledged. Frees m. Returns 0 or
 * -ENOSPC/-EIO (then m is aborted and freed too).
 */
int spool_msg_commit(struct spool_msg *m, struct spool_ticket *ticket);
/* spool_msg_commit that also says where the body lies: *extents (in body
 * order; body octets only, the chunk prefix skipped) is allocated for the
 * caller, and each extent holds a reference on its segment; release both
 * with spool_extents_release. Extents of an unacknowledged commit (fsync
 * failed) must not be read for delivery. *holds (empty on entry) receives
 * the message's holds on every segment it touched and its COMMIT's place;
 * NULL drops them (tests). */
int spool_msg_commit_extents(struct spool_msg *m, struct spool_ticket *ticket,
                             struct spool_extent **extents, uint32_t *nextents,
                             struct spool_holdset *holds);
/* spool_msg_commit_extents, given the body's last n octets (at most the
 * last space's *avail), not stored yet: they, the sealed chunk and the
 * COMMIT go out in as few stores as their places allow (one for a small
 * body whose chunk is the segment's tail). -EINVAL if they do not fit. */
int spool_msg_commit_last(struct spool_msg *m, const void *last, size_t n,
                          struct spool_ticket *ticket, struct spool_extent **extents,
                          uint32_t *nextents, struct spool_holdset *holds);
void spool_extents_release(struct spool_extent *e, uint32_t n);
/* Abandons the message (client gone, message rejected). Frees m. */
void spool_msg_abort(struct spool_msg *m);

/* Segments with records not yet covered by an fsync. Fills up to max, returns
 * the count; io/ submits one fdatasync for each and reports back. */
size_t spool_sync_wanted(struct spool *sp, struct spool_segment **segs, size_t max);
/*
 * The same, limited to segments holding a message commit that a client waits
 * for (its 250). Records nobody waits for at once (RCPT_STATUS, DONE, ABORT,
 * RETIRED) ride the next fsync of their segment, or the next call of
 * spool_sync_wanted (io/ does one per tick), so they cost no fsync of their
 * own under load; a commit waits behind one only when it arrives during the
 * tick's fsync.
 */
size_t spool_sync_awaited(struct spool *sp, struct spool_segment **segs, size_t max);
/* io/ submitted an fsync for seg covering everything committed so far. */
void spool_sync_started(struct spool_segment *seg);
/* The fsync completed with res (0 or -errno). On error the segment is marked
 * failed and sealed: waiters on it must answer 451. */
void spool_sync_done(struct spool *sp, struct spool_segment *seg, int res);
/* 1 when every segment of the ticket is durable, 0 while waiting, -EIO when
 * one failed. */
int spool_ticket_state(const struct spool_ticket *t);
/* With durability=none: treat everything written as synced. */
void spool_set_nosync(struct spool *sp, bool nosync);

/*
 * Later records about a committed message, appended at the tail of the
 * current segment. Each fills *t (may be NULL) like a commit: the record is
 * durable when spool_ticket_state(t) is 1. Return 0, -ENOSPC or -EIO.
 * Recovery applies RCPT_STATUS per recipient in (segment seq, worker,
 * offset) order, last one wins, except that a final state (DELIVERED,
 * FAILED) is never replaced by a non-final one. Flags are sticky: once a
 * record carries one, the recipient keeps it.
 */
enum {
    SPOOL_RCPT_DELAY_WARNED = 0x01,   /* a delay notice went to the sender */
};
int spool_append_rcpt_status(struct spool *sp, uint64_t qid, uint32_t rcpt_index,
                             uint8_t state, uint8_t flags, uint64_t next_attempt_ms,
                             struct spool_holdset *hs, struct spool_ticket *t);
int spool_append_done(struct spool *sp, uint64_t qid, struct spool_holdset *hs,
                      struct spool_ticket *t);
/* ABORT for a qid whose spool_msg is gone, e.g. its commit's fsync failed
 * and the client got 451: if those bytes surface after all, recovery still
 * drops the message. Best effort, like every ABORT. */
int spool_append_abort(struct spool *sp, uint64_t qid, struct spool_ticket *t);

/* --- recovery (pure: runs over a mapped segment, does no I/O) --- */

struct spool_recovered_msg {
    uint64_t qid;
    struct envelope env;        /* decoded; free with envelope_free */
    uint64_t body_len;
    uint32_t flags;             /* SPOOL_BODY_RAW */
    struct spool_extent *chunks;
    uint32_t nchunks;
    bool done;                  /* a DONE record was found */
    struct spool_holdset holds; /* on every segment with a record of it that
                                   is kept; move it out to keep the message */
    uint64_t next_attempt_ms;   /* earliest next_attempt_ms of the recipients
                                   left DEFERRED, 0 if none */
};

struct spool_damage {
    struct spool_segment *seg;
    uint32_t off;               /* offset of the damaged range in the segment */
    uint32_t len;
    const char *why;            /* static text */
    uint64_t qid;               /* message the range belonged to, 0 = unknown */
};

struct spool_recovery {
    struct spool_recovered_msg *msgs;
    size_t nmsgs;
    struct spool_damage *damage;   /* ranges to copy to corrupt/ */
    size_t ndamage;
    size_t dropped_uncommitted;    /* messages without COMMIT (never acknowledged) */
    uint64_t max_qid;              /* highest qid seen, committed or not */
    uint64_t next_segment_seq;     /* one past the highest segment seq seen */
    /* Segments (non-NULL ones passed to add_segment) that hold nothing a
     * later recovery needs: every qid in them is done, retired, aborted, damaged or
     * uncommitted, and no DONE/ABORT in them cancels a message whose bytes
     * lie in a segment that is kept. Damage in them must be quarantined
     * before they are removed. Filled by finish. */
    struct spool_segment **deletable;
    size_t ndeletable;
    /* The others: they stay, and io/ gives each to a worker to own. */
    struct spool_segment **kept;
    size_t nkept;
    void *priv;                    /* working state between add and finish */
};

/*
 * Recovery runs over every segment of a spool directory, in any order, then
 * resolves: a message's chunks may lie in several segments of its worker.
 * spool_recovery_add_segment scans one mapping; damaged records (bad header
 * CRC, bad payload CRC) go to damage and the scan resynchronises at the next
 * valid header. Returns 0, or -EINVAL when the segment header itself is
 * unreadable (the caller quarantines the whole file). seg is recorded in each
 * extent (may be NULL in tests) and in each damage entry.
 * spool_recovery_finish keeps the committed, intact messages in msgs (sorted
 * by qid); a COMMIT whose chunks are missing or damaged becomes damage too.
 *
 * Recovery takes a reference on every non-NULL segment added and puts them
 * in spool_recovery_free: extents stay valid until then, so whoever keeps a
 * message beyond that gets its own references first. A message with an
 * ABORT is dropped even if its COMMIT is intact. A DONE message is kept with
 * done set when intact, silently skipped when its bytes are gone (a segment
 * already removed). An intact segment header with a bad record after it is
 * never an error: the record becomes damage. A zero header is the end of the
 * written part only if no valid header follows; otherwise the zeros are
 * damage (a lost sector), so later commits are not lost with it.
 */
void spool_recovery_init(struct spool_recovery *r);
int spool_recovery_add_segment(struct spool_recovery *r, struct spool_segment *seg,
                               const uint8_t *base, size_t size);
void spool_recovery_finish(struct spool_recovery *r);
void spool_recovery_free(struct spool_recovery *r);

#endif
