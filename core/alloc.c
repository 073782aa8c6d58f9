/*
 * alloc - allocation wrappers; out of memory ends the process with a message.
 * Any thread.
 */
#include "alloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void
alloc_fail(size_t size)
{
    /* Nothing sensible can continue: a half-built session would be worse. */
    fprintf(stderr, "ringmta: fatal: out of memory allocating %zu bytes\n", size);
    abort();
}

void *
xmalloc(size_t size)
{
    void *p = malloc(size ? size : 1);
    if (p == NULL)
        alloc_fail(size);
    return p;
}

void *
xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (p == NULL)
        alloc_fail(n * size);
    return p;
}

void *
xrealloc(void *p, size_t size)
{
    void *q = realloc(p, size ? size : 1);
    if (q == NULL)
        alloc_fail(size);
    return q;
}

char *
xstrdup(const char *s)
{
    return xmemdup(s, strlen(s) + 1);
}

char *
xstrndup(const char *s, size_t n)
{
    size_t len = strnlen(s, n);
    char *d = xmalloc(len + 1);
    memcpy(d, s, len);
    d[len] = '\0';
    return d;
}

void *
xmemdup(const void *p, size_t n)
{
    void *d = xmalloc(n);
    memcpy(d, p, n);
    return d;
}

void *
xfree(void *p)
{
    free(p);
    return NULL;
}
