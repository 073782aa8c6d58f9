/*
 * settings - defaults, settings file, -o overrides, checks. Start-up only.
 */
#include "settings.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"

/* Reads a whole file; NULL with errno set on failure. Caller frees. */
static char *
settings_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return NULL;
    size_t cap = 4096, n = 0;
    char *buf = xmalloc(cap);
    for (;;) {
        if (n == cap) {
            cap *= 2;
            buf = xrealloc(buf, cap);
        }
        size_t k = fread(buf + n, 1, cap - n, f);
        n += k;
        if (k == 0)
            break;
    }
    int err = ferror(f) ? EIO : 0;
    fclose(f);
    if (err) {
        xfree(buf);
        errno = err;
        return NULL;
    }
    *len = n;
    return buf;
}

int
settings_load(struct config *cfg, const char *prog, const char *file,
              char *const *overrides, size_t noverrides)
{
    char err[512];
    config_init(cfg);
    if (file != NULL) {
        size_t len = 0;
        char *text = settings_read_file(file, &len);
        if (text == NULL) {
            fprintf(stderr, "%s: cannot read %s: %s\n", prog, file, strerror(errno));
            return -1;
        }
        int r = config_parse_text(cfg, text, len, file, err, sizeof err);
        xfree(text);
        if (r != 0) {
            fprintf(stderr, "%s: %s\n", prog, err);
            return -1;
        }
    }
    for (size_t i = 0; i < noverrides; i++) {
        if (config_set_assignment(cfg, overrides[i], err, sizeof err) != 0) {
            fprintf(stderr, "%s: -o %s: %s\n", prog, overrides[i], err);
            return -1;
        }
    }
    if (config_check(cfg, err, sizeof err) != 0) {
        fprintf(stderr, "%s: %s\n", prog, err);
        return -1;
    }
    return 0;
}
