/*
 * auth_table - password file parsing, lookup and crypt(3) verification.
 *
 * Built by one thread, then read-only: verification touches no shared
 * mutable state (libcrypt's crypt_rn keeps everything in the caller's
 * struct crypt_data). The table owns one copy of the file text; its lines
 * are cut in place (NUL after the user and after the hash), and an open
 * addressing hash table (linear probing, at most half full) points into it,
 * so a file of many users costs two allocations and lookups stay O(1).
 * Everything is wiped when the table is freed: hashes are not passwords,
 * but they are what an offline attack starts from.
 */
#include "auth_table.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "log.h"
#include "sasl.h"
#include "settings.h"

struct auth_entry {
    const char *user;            /* NULL: empty slot */
    size_t ulen;
    const char *hash;            /* crypt(3) string, NUL-terminated */
    uint64_t h;
    unsigned line;               /* for "duplicate user" errors */
};

struct auth_table {
    char *text;                  /* the file's text, cut into fields */
    size_t textlen;
    struct auth_entry *slots;
    size_t mask;                 /* capacity - 1, a power of two minus one */
    size_t count;
    char dummy[CRYPT_OUTPUT_SIZE];   /* setting hashed for unknown users */
};

/* Random-looking but fixed: the dummy salt of a table without users. */
static const char auth_table_dummy_rbytes[16] = "ringmta-no-user";

/* FNV-1a, 64 bits. Lookups only probe the file's own keys, so a client
 * choosing names cannot lengthen the chains. */
static uint64_t
auth_table_hash(const char *s, size_t n)
{
    uint64_t h = 14695981039346656037u;

    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211u;
    }
    return h;
}

static struct auth_entry *
auth_table_find(const struct auth_table *t, const char *user, size_t ulen)
{
    uint64_t h = auth_table_hash(user, ulen);

    for (size_t i = h & t->mask;; i = (i + 1) & t->mask) {
        struct auth_entry *e = &t->slots[i];
        if (e->user == NULL)
            return NULL;
        if (e->h == h && e->ulen == ulen && memcmp(e->user, user, ulen) == 0)
            return e;
    }
}

/* Puts e into a slot of t, which has room (count < capacity / 2). */
static void
auth_table_insert(struct auth_table *t, const struct auth_entry *e)
{
    size_t i = e->h & t->mask;

    while (t->slots[i].user != NULL)
        i = (i + 1) & t->mask;
    t->slots[i] = *e;
    t->count++;
}

/* Doubles the capacity before one more entry would fill it past half. */
static void
auth_table_reserve(struct auth_table *t)
{
    size_t cap = t->mask + 1;

    if ((t->count + 1) * 2 <= cap)
        return;
    struct auth_entry *old = t->slots;
    t->slots = xcalloc(cap * 2, sizeof *t->slots);
    t->mask = cap * 2 - 1;
    t->count = 0;
    for (size_t i = 0; i < cap; i++)
        if (old[i].user != NULL)
            auth_table_insert(t, &old[i]);
    xfree(old);
}

static bool
auth_table_is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r';
}

/*
 * Checks and adds one "user:hash" line (NUL-terminated, trimmed, non-empty).
 * Returns 0, or -1 with why filled.
 */
static int
auth_table_line(struct auth_table *t, char *line, size_t n, unsigned lineno, char *why,
                size_t whysize)
{
    char *colon = memchr(line, ':', n), shown[96];

    if (colon == NULL) {
        snprintf(why, whysize, "expected 'user:hash'");
        return -1;
    }
    char *user = line, *hash = colon + 1;
    size_t ulen = (size_t)(colon - line), hlen = n - ulen - 1;
    log_escape(shown, sizeof shown, user, ulen);
    if ((ulen > 0 && auth_table_is_blank(user[ulen - 1]))
        || (hlen > 0 && auth_table_is_blank(hash[0]))) {
        snprintf(why, whysize, "white space around ':'");
        return -1;
    }
    if (!sasl_user_valid(user, ulen)) {
        snprintf(why, whysize, "bad user name '%s' (1 to %d octets of UTF-8, no control "
                 "characters)", shown, SASL_USER_MAX);
        return -1;
    }
    if (memchr(hash, ':', hlen) != NULL) {
        snprintf(why, whysize, "user '%s': more than one ':' (expected 'user:hash')", shown);
        return -1;
    }
    if (hlen == 0 || hlen >= CRYPT_OUTPUT_SIZE) {
        snprintf(why, whysize, "user '%s': %s hash", shown, hlen == 0 ? "empty" : "too long");
        return -1;
    }
    *colon = '\0';
    /* Only modular crypt strings: DES crypt, and a password written in clear
     * (which DES would take as a hash), do not start with '$'. A setting
     * alone ("$6$salt$") would make a user no password matches. */
    int cs = crypt_checksalt(hash);
    if (hash[0] != '$' || hash[hlen - 1] == '$' || cs == CRYPT_SALT_INVALID) {
        snprintf(why, whysize, "user '%s': not a crypt(3) password hash", shown);
        return -1;
    }
    if (cs == CRYPT_SALT_METHOD_LEGACY) {
        snprintf(why, whysize, "user '%s': legacy hash method; use yescrypt ($y$) or "
                 "SHA-512 ($6$)", shown);
        return -1;
    }
    if (cs != CRYPT_SALT_OK) {
        snprintf(why, whysize, "user '%s': hash method disabled, or its cost too low, in "
                 "libcrypt", shown);
        return -1;
    }
    struct auth_entry e = { .user = user, .ulen = ulen, .hash = hash, .line = lineno,
                            .h = auth_table_hash(user, ulen) };
    const struct auth_entry *dup = auth_table_find(t, user, ulen);
    if (dup != NULL) {
        snprintf(why, whysize, "duplicate user '%s' (first on line %u)", shown, dup->line);
        return -1;
    }
    auth_table_reserve(t);
    auth_table_insert(t, &e);
    if (t->dummy[0] == '\0')
        snprintf(t->dummy, sizeof t->dummy, "%s", hash);
    return 0;
}

struct auth_table *
auth_table_parse(const char *text, size_t len, const char *origin, char *err, size_t errsize)
{
    struct auth_table *t = xcalloc(1, sizeof *t);
    char why[384];
    unsigned lineno = 0;

    t->text = xmalloc(len + 1);
    memcpy(t->text, text, len);
    t->text[len] = '\0';
    t->textlen = len;
    t->slots = xcalloc(64, sizeof *t->slots);
    t->mask = 63;
    for (char *p = t->text, *end = t->text + len, *next; p < end; p = next) {
        char *nl = memchr(p, '\n', (size_t)(end - p)), *eol = nl != NULL ? nl : end;

        next = nl != NULL ? nl + 1 : end;
        lineno++;
        if (memchr(p, '\0', (size_t)(eol - p)) != NULL) {
            snprintf(why, sizeof why, "NUL byte in the line");
            goto fail;
        }
        while (p < eol && auth_table_is_blank(*p))
            p++;
        while (eol > p && auth_table_is_blank(eol[-1]))
            eol--;
        if (p == eol || *p == '#')
            continue;
        *eol = '\0';
        if (auth_table_line(t, p, (size_t)(eol - p), lineno, why, sizeof why) < 0)
            goto fail;
    }
    if (t->dummy[0] == '\0'
        && crypt_gensalt_rn(NULL, 0, auth_table_dummy_rbytes, sizeof auth_table_dummy_rbytes,
                            t->dummy, sizeof t->dummy) == NULL)
        t->dummy[0] = '\0';     /* libcrypt without its preferred method: no users anyway */
    return t;
fail:
    snprintf(err, errsize, "%s:%u: %s", origin, lineno, why);
    auth_table_free(t);
    return NULL;
}

struct auth_table *
auth_table_load(const char *path, char *err, size_t errsize)
{
    size_t len = 0;
    char *text = settings_read_file(path, &len);

    if (text == NULL) {
        snprintf(err, errsize, "cannot read %s: %s", path, strerror(errno));
        return NULL;
    }
    struct auth_table *t = auth_table_parse(text, len, path, err, errsize);
    explicit_bzero(text, len);
    xfree(text);
    return t;
}

struct auth_table *
auth_table_free(struct auth_table *t)
{
    if (t == NULL)
        return NULL;
    explicit_bzero(t->text, t->textlen + 1);
    xfree(t->text);
    xfree(t->slots);
    explicit_bzero(t, sizeof *t);
    return xfree(t);
}

size_t
auth_table_count(const struct auth_table *t)
{
    return t->count;
}

/* Constant-time string equality: the time depends on the lengths only. */
static bool
auth_table_equal(const char *a, const char *b)
{
    size_t n = strlen(a);
    const volatile unsigned char *x = (const unsigned char *)a, *y = (const unsigned char *)b;
    unsigned char d = 0;

    if (n != strlen(b))
        return false;
    for (size_t i = 0; i < n; i++)
        d |= x[i] ^ y[i];
    return d == 0;
}

bool
auth_table_verify(const struct auth_table *t, const char *user, const char *pass,
                  struct crypt_data *scratch)
{
    const struct auth_entry *e = auth_table_find(t, user, strlen(user));
    /* Unknown users pay for a hash too: same method, same cost. */
    const char *out = crypt_rn(pass, e != NULL ? e->hash : t->dummy, scratch,
                               (int)sizeof *scratch);
    bool ok = out != NULL && e != NULL && auth_table_equal(out, e->hash);

    explicit_bzero(scratch->output, sizeof scratch->output);
    return ok;
}
