/*
 * alloc - allocation wrappers. Out of memory is fatal: callers never test for NULL.
 *
 * Any thread. The programs link jemalloc as the malloc implementation
 * (meson option allocator=jemalloc, the default), so these are thin wrappers.
 */
#ifndef RINGMTA_CORE_ALLOC_H
#define RINGMTA_CORE_ALLOC_H

#include <stddef.h>

void *xmalloc(size_t size);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t size);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
void *xmemdup(const void *p, size_t n);
/* Frees p; returns NULL so callers can write p = xfree(p). */
void *xfree(void *p);

#endif
