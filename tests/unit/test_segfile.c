/*
 * io/segfile: segment mappings. segfile_release_pages drops page-table
 * entries only: the octets stay in the page cache (dirty), readable through
 * the mapping and the file, and an fdatasync still writes them.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "segfile.h"

#define TEST_SIZE (1u << 20)

static int
test_segment(uint8_t **base)
{
    char path[] = "/var/tmp/ringmta-test-segfile-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    unlink(path);
    cr_assert_eq(fallocate(fd, 0, 0, TEST_SIZE), 0);
    *base = segfile_map_append(fd, TEST_SIZE);
    cr_assert_neq(*base, MAP_FAILED);
    return fd;
}

static void
test_fill(uint8_t *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(i * 31 + seed + (i >> 9));
}

/* Pages of [p, p + n) in the page cache (mincore of a file mapping). */
static size_t
test_resident(uint8_t *p, size_t n)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t np = n / page;
    unsigned char *v = calloc(np, 1);
    cr_assert_eq(mincore(p, n, v), 0);
    size_t r = 0;
    for (size_t i = 0; i < np; i++)
        r += v[i] & 1;
    free(v);
    return r;
}

/* Whether our page table maps the page at p (/proc/self/pagemap bit 63). */
static bool
test_mapped(const uint8_t *p)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    int fd = open("/proc/self/pagemap", O_RDONLY);
    cr_assert_geq(fd, 0);
    uint64_t e = 0;
    off_t at = (off_t)((uintptr_t)p / page * sizeof e);
    cr_assert_eq(pread(fd, &e, sizeof e, at), (ssize_t)sizeof e);
    close(fd);
    return (e >> 63) & 1;
}

Test(segfile, released_pages_keep_their_octets)
{
    uint8_t *base;
    int fd = test_segment(&base);
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    /* A body from the middle of one page to the middle of another, 20
     * pages apart, and octets on both sides that belong to others. */
    size_t off = 3 * page + 100, len = 20 * page;
    uint8_t *want = malloc(TEST_SIZE);
    test_fill(want, TEST_SIZE, 7);
    memcpy(base, want, off + len + page);
    segfile_release_pages(base + off, len);
    /* The whole pages inside lost their entries; the two partly shared
     * pages at the ends kept theirs. */
    cr_assert(test_mapped(base + 3 * page), "first, shared page");
    for (size_t i = 4; i < 23; i++)
        cr_assert(!test_mapped(base + i * page), "interior page %zu", i);
    cr_assert(test_mapped(base + 23 * page), "last, shared page");
    cr_assert_eq(memcmp(base, want, off + len + page), 0, "through the mapping");
    uint8_t *got = malloc(off + len + page);
    cr_assert_eq(pread(fd, got, off + len + page, 0), (ssize_t)(off + len + page));
    cr_assert_eq(memcmp(got, want, off + len + page), 0, "through the file");
    /* Still in the page cache: the release dropped no data. */
    cr_assert_eq(test_resident(base, off + len + page), (off + len + page) / page);
    /* Written again after the release (the mapping faults back in), then
     * synced and dropped from the cache: the file has the newest octets. */
    base[off + 5 * page] ^= 0xff;
    want[off + 5 * page] ^= 0xff;
    cr_assert_eq(fdatasync(fd), 0);
    cr_assert_eq(munmap(base, TEST_SIZE), 0);
    cr_assert_eq(posix_fadvise(fd, 0, TEST_SIZE, POSIX_FADV_DONTNEED), 0);
    cr_assert_eq(pread(fd, got, off + len + page, 0), (ssize_t)(off + len + page));
    cr_assert_eq(memcmp(got, want, off + len + page), 0, "on disk after fdatasync");
    free(got);
    free(want);
    close(fd);
}

Test(segfile, small_ranges_are_left_alone)
{
    uint8_t *base;
    int fd = test_segment(&base);
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    memset(base, 'x', 16 * page);
    /* Fewer whole pages than SEGFILE_RELEASE_MIN_PAGES, an empty range and
     * one inside a single page: no call may touch anything. */
    segfile_release_pages(base + 10, (SEGFILE_RELEASE_MIN_PAGES) * page);
    segfile_release_pages(base + page, 0);
    segfile_release_pages(base + 2 * page + 1, 100);
    for (size_t i = 0; i < 16; i++)
        cr_assert(test_mapped(base + i * page), "page %zu", i);
    for (size_t i = 0; i < 16 * page; i++)
        cr_assert_eq(base[i], 'x');
    munmap(base, TEST_SIZE);
    close(fd);
}
