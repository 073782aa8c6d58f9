/*
 * segfile - spool segment files: create (fallocate, fsync, map), list, map,
 * quarantine, remove, and full recovery of a spool directory.
 *
 * Blocking system calls only: start-up, helper threads and ringmta-ctl,
 * never a worker loop. Any thread; no shared state.
 *
 * Invariants: a segment is allocated on disk before it is mapped (a store
 * into a hole of a full disk would SIGBUS); a created or removed directory
 * entry is fsynced before we rely on it; a damaged range is fsynced in
 * corrupt/ before the segment holding it may be removed; readonly recovery
 * never writes, renames or removes anything.
 *
 * Hazards: unlink of a mapped segment is fine (the mapping lives on until
 * the last spool_segment_put). Truncating one would SIGBUS its readers:
 * nothing here ever truncates.
 */
#include "segfile.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "log.h"

/* "<a>/<b>" into buf, or -ENAMETOOLONG. */
static int
segfile_join(char *buf, size_t size, const char *a, const char *b)
{
    int n = snprintf(buf, size, "%s/%s", a, b);
    return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

static int
segfile_fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = fsync(fd) < 0 ? -errno : 0;
    close(fd);
    return rc;
}

/* mkdir -p; a directory made here is fsynced into its parent. */
static int
segfile_mkdirs(const char *path)
{
    char buf[PATH_MAX];
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof buf)
        return -ENAMETOOLONG;
    memcpy(buf, path, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        char c = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0700) == 0) {
            char *slash = strrchr(buf, '/');
            int rc;
            if (slash == NULL) {
                rc = segfile_fsync_dir(".");
            } else if (slash == buf) {
                rc = segfile_fsync_dir("/");
            } else {
                *slash = '\0';
                rc = segfile_fsync_dir(buf);
                *slash = '/';
            }
            if (rc < 0)
                return rc;
        } else if (errno != EEXIST) {
            return -errno;
        } else {
            struct stat st;
            if (stat(buf, &st) < 0)
                return -errno;
            if (!S_ISDIR(st.st_mode))
                return -ENOTDIR;
        }
        buf[i] = c;
    }
    return 0;
}

int
segfile_prepare_dir(const char *spool_dir)
{
    char p[PATH_MAX];
    int rc = segfile_join(p, sizeof p, spool_dir, "seg");
    if (rc == 0)
        rc = segfile_mkdirs(p);
    if (rc == 0)
        rc = segfile_join(p, sizeof p, spool_dir, "corrupt");
    if (rc == 0)
        rc = segfile_mkdirs(p);
    return rc;
}

uint64_t
segfile_salt(void)
{
    uint64_t salt;
    ssize_t n;
    do
        n = getrandom(&salt, sizeof salt, 0);
    while (n < 0 && errno == EINTR);
    if (n != (ssize_t)sizeof salt) {
        /* XXX no getrandom: a weaker salt still separates segments. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        salt = ((uint64_t)ts.tv_sec * 1000000007ull) ^ (uint64_t)ts.tv_nsec
               ^ ((uint64_t)getpid() << 32);
    }
    return salt;
}

/* Allocates [0, size) on disk; never a sparse file. */
static int
segfile_allocate(int fd, size_t size)
{
    if (fallocate(fd, 0, 0, (off_t)size) == 0)
        return 0;
    if (errno != EOPNOTSUPP)
        return -errno;
    /* Filesystems without fallocate: glibc writes the blocks instead. */
    int rc = posix_fallocate(fd, 0, (off_t)size);
    return rc ? -rc : 0;
}

void *
segfile_map_append(int fd, size_t size)
{
    void *base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base != MAP_FAILED)
        (void)madvise(base, size, MADV_RANDOM); /* only a hint: it cannot fail here */
    return base;
}

int
segfile_create(const char *spool_dir, uint32_t worker, uint64_t seq, size_t size,
               int *fdp, uint8_t **basep)
{
    char path[PATH_MAX], dir[PATH_MAX];
    int rc, n;

    if (size < SPOOL_SEGMENT_MIN_SIZE || size > SPOOL_SEGMENT_MAX_SIZE)
        return -EINVAL;
    rc = segfile_prepare_dir(spool_dir);
    if (rc < 0)
        return rc;
    n = spool_segment_path(path, sizeof path, spool_dir, worker, seq);
    if (n < 0 || (size_t)n >= sizeof path)
        return -ENAMETOOLONG;
    rc = segfile_join(dir, sizeof dir, spool_dir, "seg");
    if (rc < 0)
        return rc;

    int fd = open(path, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    rc = segfile_allocate(fd, size);
    if (rc == 0 && fdatasync(fd) < 0)
        rc = -errno;
    if (rc == 0)
        rc = segfile_fsync_dir(dir);
    uint8_t *base = MAP_FAILED;
    if (rc == 0) {
        base = segfile_map_append(fd, size);
        if (base == MAP_FAILED)
            rc = -errno;
    }
    if (rc < 0) {
        close(fd);
        unlink(path);
        return rc;
    }
    *fdp = fd;
    *basep = base;
    return 0;
}

void
segfile_release_pages(uint8_t *p, size_t len)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    uintptr_t start = ((uintptr_t)p + page - 1) & ~(uintptr_t)(page - 1);
    uintptr_t end = ((uintptr_t)p + len) & ~(uintptr_t)(page - 1);
    if (end <= start || (end - start) / page < SEGFILE_RELEASE_MIN_PAGES)
        return;
    /* Only a hint: on a shared file mapping it cannot lose data. */
    (void)madvise((void *)start, end - start, MADV_DONTNEED);
}

/* All n octets at off, through short writes and EINTR. 0 or -errno. */
static int
segfile_pwrite_all(int fd, const uint8_t *p, size_t n, size_t off)
{
    while (n > 0) {
        ssize_t k = pwrite(fd, p, n, (off_t)off);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (k == 0)
            return -EIO;
        p += k;
        off += (size_t)k;
        n -= (size_t)k;
    }
    return 0;
}

int
segfile_store(const struct spool_segment *seg, size_t off, const void *src, size_t n)
{
    if (n > seg->size || off > seg->size - n)
        return -EINVAL;
    return segfile_pwrite_all(seg->fd, src, n, off);
}

int
segfile_parse_name(const char *name, uint32_t *worker, uint64_t *seq)
{
    const char *p = name;
    uint64_t w = 0, s = 0;
    int digits = 0;

    if (*p++ != 'w')
        return -EINVAL;
    for (; *p >= '0' && *p <= '9'; p++, digits++) {
        w = w * 10 + (uint64_t)(*p - '0');
        if (w > UINT32_MAX)
            return -EINVAL;
    }
    if (digits == 0 || *p++ != '-')
        return -EINVAL;
    for (digits = 0;; p++, digits++) {
        int v;
        if (*p >= '0' && *p <= '9')
            v = *p - '0';
        else if (*p >= 'a' && *p <= 'f')
            v = *p - 'a' + 10;
        else
            break;
        if (digits == 16)
            return -EINVAL;
        s = s << 4 | (uint64_t)v;
    }
    if (digits == 0 || strcmp(p, ".seg") != 0)
        return -EINVAL;
    *worker = (uint32_t)w;
    *seq = s;
    return 0;
}

static int
segfile_cmp_entry(const void *a, const void *b)
{
    const struct segfile_entry *x = a, *y = b;
    if (x->worker != y->worker)
        return x->worker < y->worker ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

int
segfile_list(const char *spool_dir, struct segfile_entry **out, size_t *np)
{
    char dir[PATH_MAX];
    int rc = segfile_join(dir, sizeof dir, spool_dir, "seg");
    if (rc < 0)
        return rc;
    DIR *d = opendir(dir);
    if (d == NULL)
        return -errno;
    struct segfile_entry *v = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    errno = 0;
    while ((de = readdir(d)) != NULL) {
        struct segfile_entry e;
        if (strlen(de->d_name) >= sizeof e.name
            || segfile_parse_name(de->d_name, &e.worker, &e.seq) < 0)
            continue;
        strcpy(e.name, de->d_name);
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            v = xrealloc(v, cap * sizeof *v);
        }
        v[n++] = e;
        errno = 0;
    }
    rc = errno ? -errno : 0;
    closedir(d);
    if (rc < 0) {
        xfree(v);
        return rc;
    }
    if (n > 1)
        qsort(v, n, sizeof *v, segfile_cmp_entry);
    *out = v;
    *np = n;
    return 0;
}

int
segfile_map(const char *spool_dir, const struct segfile_entry *e, bool readonly,
            struct spool_segment **out)
{
    char dir[PATH_MAX], path[PATH_MAX];
    int rc = segfile_join(dir, sizeof dir, spool_dir, "seg");
    if (rc == 0)
        rc = segfile_join(path, sizeof path, dir, e->name);
    if (rc < 0)
        return rc;

    *out = NULL;
    int fd = open(path, (readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -errno;
    struct stat st;
    if (fstat(fd, &st) < 0) {
        rc = -errno;
        close(fd);
        return rc;
    }
    if (!S_ISREG(st.st_mode) || st.st_size < SPOOL_SEGMENT_HEADER_SIZE
        || (uint64_t)st.st_size > SPOOL_SEGMENT_MAX_SIZE) {
        close(fd);
        return -EINVAL;
    }
    size_t size = (size_t)st.st_size;
    uint8_t *base = mmap(NULL, size, PROT_READ | (readonly ? 0 : PROT_WRITE), MAP_SHARED,
                         fd, 0);
    rc = base == MAP_FAILED ? -errno : 0;
    /* A writable segment keeps its descriptor: the worker that adopts it
     * rewrites COMMITs as RETIRED there and fdatasyncs them. */
    if (rc < 0 || readonly)
        close(fd);
    if (rc < 0)
        return rc;

    struct spool_segment *seg = xcalloc(1, sizeof *seg);
    seg->worker = e->worker;
    seg->seq = e->seq;
    seg->fd = readonly ? -1 : fd;
    seg->base = base;
    seg->size = size;
    seg->tail = size;
    seg->sealed = true;
    atomic_init(&seg->refs, 1);
    if (spool_segment_header_read(base, size, NULL, NULL, &seg->salt) < 0)
        seg->salt = 0;
    *out = seg;
    return 0;
}

void
segfile_unmap(struct spool_segment *seg)
{
    if (seg->base)
        munmap(seg->base, seg->size);
    if (seg->fd >= 0)
        close(seg->fd);
    seg->base = NULL;
    seg->fd = -1;
}

/* Writes all of p[0..n) to a new file and fsyncs it. */
static int
segfile_write_file(const char *path, const uint8_t *p, size_t n)
{
    int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return -errno;
    int rc = segfile_pwrite_all(fd, p, n, 0);
    if (rc == 0 && fsync(fd) < 0)
        rc = -errno;
    if (close(fd) < 0 && rc == 0)
        rc = -errno;
    return rc;
}

int
segfile_quarantine(const char *spool_dir, const struct spool_damage *d)
{
    char dir[PATH_MAX], path[PATH_MAX];
    if (d->seg == NULL || (size_t)d->off + d->len > d->seg->size)
        return -EINVAL;
    int rc = segfile_join(dir, sizeof dir, spool_dir, "corrupt");
    if (rc < 0)
        return rc;
    int n = snprintf(path, sizeof path, "%s/w%" PRIu32 "-%016" PRIx64 ".seg-%08" PRIx32
                     ".bin", dir, d->seg->worker, d->seg->seq, d->off);
    if (n < 0 || (size_t)n >= sizeof path)
        return -ENAMETOOLONG;
    rc = segfile_write_file(path, d->seg->base + d->off, d->len);
    if (rc == 0)
        rc = segfile_fsync_dir(dir);
    return rc;
}

int
segfile_quarantine_file(const char *spool_dir, const char *name)
{
    char seg[PATH_MAX], cor[PATH_MAX], from[PATH_MAX], to[PATH_MAX];
    int rc = segfile_join(seg, sizeof seg, spool_dir, "seg");
    if (rc == 0)
        rc = segfile_join(cor, sizeof cor, spool_dir, "corrupt");
    if (rc == 0)
        rc = segfile_join(from, sizeof from, seg, name);
    if (rc == 0)
        rc = segfile_join(to, sizeof to, cor, name);
    if (rc < 0)
        return rc;
    if (rename(from, to) < 0)
        return -errno;
    rc = segfile_fsync_dir(cor);
    if (rc == 0)
        rc = segfile_fsync_dir(seg);
    return rc;
}

int
segfile_remove(const char *spool_dir, const char *name)
{
    char dir[PATH_MAX], path[PATH_MAX];
    int rc = segfile_join(dir, sizeof dir, spool_dir, "seg");
    if (rc == 0)
        rc = segfile_join(path, sizeof path, dir, name);
    if (rc < 0)
        return rc;
    if (unlink(path) < 0)
        return -errno;
    return segfile_fsync_dir(dir);
}

static bool
segfile_all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

/* What a recovery run did, for its log line. */
struct segfile_report {
    size_t segments;        /* segment files read */
    size_t bad_segments;    /* header unreadable (quarantined or removed if zero) */
    size_t quarantined;     /* damaged ranges copied to corrupt/ */
    size_t removed;         /* segments deleted: nothing in them is needed */
    size_t errors;          /* quarantine or remove steps that failed */
};

/* A segment whose header cannot be read: nothing in it can be trusted. An
 * entirely zero file (created, never written) is simply removed. */
static void
segfile_bad_segment(const char *spool_dir, const struct segfile_entry *e,
                    const struct spool_segment *seg, bool readonly,
                    struct segfile_report *rep)
{
    rep->bad_segments++;
    if (readonly) {
        log_warn("spool: segment %s has no readable header", e->name);
        return;
    }
    bool zero = seg && segfile_all_zero(seg->base, seg->size);
    int rc = zero ? segfile_remove(spool_dir, e->name)
                  : segfile_quarantine_file(spool_dir, e->name);
    if (rc < 0) {
        rep->errors++;
        log_error("spool: segment %s has no readable header; %s failed: %s", e->name,
                  zero ? "removing it" : "moving it to corrupt/", strerror(-rc));
    } else if (zero) {
        rep->removed++;
        log_info("spool: removed never-written segment %s", e->name);
    } else {
        log_warn("spool: segment %s has no readable header; moved to corrupt/", e->name);
    }
}

static int
segfile_cmp_ptr(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t) * (void *const *)a, y = (uintptr_t) * (void *const *)b;
    return x < y ? -1 : x > y;
}

/* Quarantines damage, then removes what is deletable and fully quarantined. */
static void
segfile_clean(const char *spool_dir, struct spool_recovery *r, struct segfile_report *rep)
{
    /* Segments whose damage could not be saved are kept. */
    struct spool_segment **keep = xcalloc(r->ndamage + 1, sizeof *keep);
    size_t nkeep = 0;
    for (size_t i = 0; i < r->ndamage; i++) {
        const struct spool_damage *d = &r->damage[i];
        if (d->seg == NULL)
            continue;
        log_warn("spool: damage in w%" PRIu32 "-%016" PRIx64 ".seg at %" PRIu32
                 " (%" PRIu32 " octets, qid %016" PRIx64 "): %s",
                 d->seg->worker, d->seg->seq, d->off, d->len, d->qid, d->why);
        int rc = segfile_quarantine(spool_dir, d);
        if (rc < 0) {
            rep->errors++;
            keep[nkeep++] = d->seg;
            log_error("spool: quarantine of w%" PRIu32 "-%016" PRIx64 ".seg at %" PRIu32
                      " failed: %s", d->seg->worker, d->seg->seq, d->off, strerror(-rc));
        } else {
            rep->quarantined++;
        }
    }
    if (nkeep > 1)
        qsort(keep, nkeep, sizeof *keep, segfile_cmp_ptr);
    for (size_t i = 0; i < r->ndeletable; i++) {
        struct spool_segment *seg = r->deletable[i];
        if (nkeep && bsearch(&seg, keep, nkeep, sizeof *keep, segfile_cmp_ptr))
            continue;
        char name[64];
        snprintf(name, sizeof name, "w%" PRIu32 "-%016" PRIx64 ".seg", seg->worker,
                 seg->seq);
        int rc = segfile_remove(spool_dir, name);
        if (rc < 0) {
            rep->errors++;
            log_error("spool: removing %s failed: %s", name, strerror(-rc));
        } else {
            rep->removed++;
            log_debug("spool: removed finished segment %s", name);
        }
    }
    xfree(keep);
}

int
segfile_recover_dir(const char *spool_dir, bool readonly, struct spool_recovery *out,
                    char *err, size_t errsize)
{
    struct segfile_report report = { 0 }, *rep = &report;
    struct segfile_entry *ents = NULL;
    size_t n = 0;
    struct stat st;
    uint64_t name_next = 0;
    int rc;

    spool_recovery_init(out);
    if (stat(spool_dir, &st) < 0) {
        rc = -errno;
        snprintf(err, errsize, "%s: %s", spool_dir, strerror(-rc));
        goto fail;
    }
    if (!S_ISDIR(st.st_mode)) {
        rc = -ENOTDIR;
        snprintf(err, errsize, "%s: %s", spool_dir, strerror(-rc));
        goto fail;
    }
    if (!readonly) {
        rc = segfile_prepare_dir(spool_dir);
        if (rc < 0) {
            snprintf(err, errsize, "preparing %s: %s", spool_dir, strerror(-rc));
            goto fail;
        }
    }
    rc = segfile_list(spool_dir, &ents, &n);
    if (rc == -ENOENT && readonly) {
        spool_recovery_finish(out); /* never started: an empty queue */
        return 0;
    }
    if (rc < 0) {
        snprintf(err, errsize, "listing %s/seg: %s", spool_dir, strerror(-rc));
        goto fail;
    }

    for (size_t i = 0; i < n; i++) {
        struct spool_segment *seg;
        /* Even a file that turns out unreadable keeps its number taken. */
        if (ents[i].seq + 1 > name_next)
            name_next = ents[i].seq + 1;
        rc = segfile_map(spool_dir, &ents[i], readonly, &seg);
        if (rc == -EINVAL) {
            segfile_bad_segment(spool_dir, &ents[i], NULL, readonly, rep);
            continue;
        }
        if (rc == -ENOENT && readonly)
            continue; /* removed by the daemon since the listing */
        if (rc < 0) {
            snprintf(err, errsize, "mapping segment %s/seg/%s: %s", spool_dir,
                     ents[i].name, strerror(-rc));
            goto fail;
        }
        rep->segments++;
        if (spool_recovery_add_segment(out, seg, seg->base, seg->size) < 0)
            segfile_bad_segment(spool_dir, &ents[i], seg, readonly, rep);
        spool_segment_put(seg); /* recovery holds its own reference */
    }
    spool_recovery_finish(out);
    if (name_next > out->next_segment_seq)
        out->next_segment_seq = name_next;
    if (!readonly) {
        segfile_clean(spool_dir, out, rep);
        log_info("spool %s: read %zu segment%s; %zu unreadable, %zu damaged range%s "
                 "quarantined, %zu segment%s removed, %zu error%s",
                 spool_dir, rep->segments, rep->segments == 1 ? "" : "s",
                 rep->bad_segments, rep->quarantined, rep->quarantined == 1 ? "" : "s",
                 rep->removed, rep->removed == 1 ? "" : "s", rep->errors,
                 rep->errors == 1 ? "" : "s");
    }
    xfree(ents);
    return 0;

fail:
    xfree(ents);
    spool_recovery_free(out);
    return rc;
}
