/*
 * guarded - test input placed against an inaccessible page, so a parser that
 * reads one octet past len crashes the test instead of passing by luck.
 * Header-only, for the unit tests; each Criterion test runs in its own
 * process, so the mappings are never unmapped.
 */
#ifndef RINGMTA_TESTS_GUARDED_H
#define RINGMTA_TESTS_GUARDED_H

#include <criterion/criterion.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* Copies s[0..n) so that its last octet is the last readable one. */
static inline const void *
guarded(const void *s, size_t n)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t span = (n + page - 1) / page * page + page;
    char *m = mmap(NULL, span + page, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(m, MAP_FAILED);
    cr_assert_eq(mprotect(m + span, page, PROT_NONE), 0);
    memcpy(m + span - n, s, n);
    return m + span - n;
}

#endif
