/*
 * segfile - spool segment files on disk, with plain blocking system calls.
 *
 * For start-up (before the worker loops run), a helper thread, and
 * ringmta-ctl; never on a worker loop, where the same steps go through the
 * ring. Any thread; no shared state.
 *
 * Layout under the spool directory:
 *   <spool_dir>/seg/w<W>-<seq, 16 hex>.seg     segments (spool_segment_path)
 *   <spool_dir>/corrupt/<segfile>-<off hex>.bin  quarantined damaged ranges
 *   <spool_dir>/corrupt/<segfile>                whole segments whose header
 *                                                is unreadable
 *
 * Invariants: a new segment is fully allocated (fallocate) before it is
 * mapped, so stores into the mapping can never SIGBUS on a full disk, and
 * its directory entry is fsynced before anything in it is acknowledged.
 * Functions return 0 (or a count) or -errno.
 */
#ifndef RINGMTA_IO_SEGFILE_H
#define RINGMTA_IO_SEGFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "spool.h"

/* mkdir -p of <spool_dir>/seg and <spool_dir>/corrupt (mode 0700), fsyncing
 * each parent a directory was created in. */
int segfile_prepare_dir(const char *spool_dir);

/* A random segment salt (getrandom). */
uint64_t segfile_salt(void);

/*
 * Creates segment seq of worker: O_CREAT|O_EXCL, fallocate to size (-ENOSPC
 * when the disk is short; the file is then removed), fsync of the file and
 * the directory, then mmap MAP_SHARED read-write. On success *fd and *base
 * are for spool_segment_attach; the mapping is zero. size must lie within
 * SPOOL_SEGMENT_MIN_SIZE..SPOOL_SEGMENT_MAX_SIZE (-EINVAL otherwise).
 */
int segfile_create(const char *spool_dir, uint32_t worker, uint64_t seq, size_t size,
                   int *fd, uint8_t **base);

/*
 * Maps a new (fallocated) segment read-write for appending: MAP_SHARED, and
 * MADV_RANDOM so that page faults put single 4 KiB pages in the page cache.
 * Without it, fault readahead builds large folios (up to 2 MiB on ext4 since
 * Linux 6.16). A folio is written back whole, so each group commit's
 * fdatasync wrote megabytes for the few KiB appended since the last one.
 * Returns MAP_FAILED with errno set on failure, like mmap.
 */
void *segfile_map_append(int fd, size_t size);

/* One segment file found in <spool_dir>/seg. */
struct segfile_entry {
    char name[64];          /* "w0-000000000000002a.seg" */
    uint32_t worker;
    uint64_t seq;
};

/*
 * Drops the page-table entries of the whole pages inside [p, p + len) of a
 * segment mapping, when there are at least SEGFILE_RELEASE_MIN_PAGES of them.
 * The page cache is untouched (the octets stay, still dirty). Writeback
 * write-protects every page still mapped writable, with one TLB flush, an
 * interrupt to each other CPU running this process, per page; dropping the
 * entries first costs one flush for the whole range. Later reads (delivery)
 * fault the pages back read-only, many per fault (fault-around), and
 * read-only entries cost writeback nothing.
 */
#define SEGFILE_RELEASE_MIN_PAGES 4
void segfile_release_pages(uint8_t *p, size_t len);

/*
 * The spool_store_fn of spool_receive=buffered: stores n octets at off in
 * seg's file with pwrite(2). The page cache gets them without any page-table
 * work (no write fault, no write-protect flush at writeback), and the
 * mapping sees them (one page cache). It does not wait for the disk: the
 * blocks are fallocated. 0 or -errno.
 */
int segfile_store(const struct spool_segment *seg, size_t off, const void *src, size_t n);

/* Parses "w<W>-<seq hex>.seg"; 0 or -EINVAL. */
int segfile_parse_name(const char *name, uint32_t *worker, uint64_t *seq);

/* Segment files of every worker, sorted by (worker, seq); other names are
 * ignored. *out is owned by the caller (xfree). -ENOENT when there is no
 * seg directory. */
int segfile_list(const char *spool_dir, struct segfile_entry **out, size_t *n);

/*
 * Maps an existing segment, read-write (daemon) or read-only (ctl), as a
 * struct spool_segment with one reference, sealed, worker and seq from the
 * file name and salt from its header (0 if the header is unreadable: the
 * caller checks it with spool_segment_header_read or recovery). Read-write,
 * the fd stays open (the adopting worker rewrites COMMITs as RETIRED there
 * and fdatasyncs them; segfile_unmap closes it); read-only, it is closed
 * once mapped and fd = -1.
 * -EINVAL when the file is shorter than a segment header or too big.
 */
int segfile_map(const char *spool_dir, const struct segfile_entry *e, bool readonly,
                struct spool_segment **out);

/* The spool_unmap_fn for segments made here and by segfile_create: munmap,
 * then close the fd if it is open. Install with spool_set_unmap. */
void segfile_unmap(struct spool_segment *seg);

/* Copies a damaged range to <spool_dir>/corrupt/<segfile>-<off hex>.bin and
 * fsyncs it (d->seg must not be NULL). Idempotent: a later start-up rewrites
 * the same file. */
int segfile_quarantine(const char *spool_dir, const struct spool_damage *d);

/* Moves a whole segment file to <spool_dir>/corrupt/ (unreadable header). */
int segfile_quarantine_file(const char *spool_dir, const char *name);

/* Unlinks <spool_dir>/seg/<name> and fsyncs the directory. */
int segfile_remove(const char *spool_dir, const char *name);

/*
 * Full recovery of a spool directory: maps every segment of every worker
 * and runs spool_recovery over them into *out (initialised here; free with
 * spool_recovery_free, which also unmaps). Unless readonly, damage is
 * quarantined, segments with unreadable headers are moved to corrupt/ (or
 * removed when entirely zero), and segments in out->deletable are removed
 * once their damage is safely quarantined; what was done is logged. Removed
 * segments stay mapped until spool_recovery_free, so every extent in *out
 * stays readable. readonly never changes anything on disk (ringmta-ctl).
 * Returns 0, or -errno with a message in err (errsize >= 1; *out is then
 * empty) when the directory or a segment cannot be read: a partial view
 * could remove what an unread segment still needs.
 * Never run it without readonly while a daemon uses the spool (main holds
 * the spool lock). Install the unmap callback (spool_set_unmap) first.
 */
int segfile_recover_dir(const char *spool_dir, bool readonly, struct spool_recovery *out,
                        char *err, size_t errsize);

#endif
