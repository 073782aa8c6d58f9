/*
 * settings - defaults, settings file, -o overrides, checks. Start-up only.
 */
#include "settings.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "route.h"

char *
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

/* One routing file: read and parsed, or NULL when the setting is empty. */
static int
settings_load_file(const struct config *cfg, const char *path, const char *prog,
                   const char *what, void **out,
                   int (*parse)(void **, const struct config *, const char *, size_t,
                                const char *, char *, size_t))
{
    *out = NULL;
    if (path == NULL || path[0] == '\0')
        return 0;
    size_t len = 0;
    char *text = settings_read_file(path, &len);
    if (text == NULL) {
        fprintf(stderr, "%s: %s: cannot read %s: %s\n", prog, what, path, strerror(errno));
        return -1;
    }
    char err[512];
    int r = parse(out, cfg, text, len, path, err, sizeof err);
    xfree(text);
    if (r != 0) {
        fprintf(stderr, "%s: %s\n", prog, err);
        return -1;
    }
    return 0;
}

static int
settings_parse_table(void **out, const struct config *cfg, const char *text, size_t len,
                     const char *origin, char *err, size_t errsize)
{
    (void)cfg;
    return route_table_parse((struct route_table **)out, text, len, origin, err, errsize);
}

static int
settings_parse_policy(void **out, const struct config *cfg, const char *text, size_t len,
                      const char *origin, char *err, size_t errsize)
{
    (void)cfg;
    return route_policy_parse((struct route_policy **)out, text, len, origin, err, errsize);
}

static int
settings_parse_credentials(void **out, const struct config *cfg, const char *text, size_t len,
                           const char *origin, char *err, size_t errsize)
{
    return route_credentials_parse((struct route_credentials **)out, text, len,
                                   (uint16_t)cfg->smtp_port, origin, err, errsize);
}

int
settings_load_routes(const struct config *cfg, const char *prog,
                     struct route_table **transport, struct route_policy **policy,
                     struct route_credentials **credentials, struct route_hop *relayhost,
                     bool *relayhost_set)
{
    void *t = NULL, *p = NULL, *c = NULL;
    if (settings_load_file(cfg, cfg->transport_map, prog, "transport_map", &t, settings_parse_table)
        != 0)
        return -1;
    if (settings_load_file(cfg, cfg->destination_policy, prog, "destination_policy", &p,
                           settings_parse_policy)
        != 0) {
        route_table_free(t);
        return -1;
    }
    if (settings_load_file(cfg, cfg->smtp_sasl_password_file, prog, "smtp_sasl_password_file", &c,
                           settings_parse_credentials)
        != 0) {
        route_table_free(t);
        route_policy_free(p);
        return -1;
    }
    *relayhost_set = false;
    if (cfg->relayhost != NULL && cfg->relayhost[0] != '\0') {
        char err[256];
        if (route_hop_parse(relayhost, cfg->relayhost, err, sizeof err) != 0) {
            fprintf(stderr, "%s: relayhost: %s\n", prog, err);
            route_table_free(t);
            route_policy_free(p);
            route_credentials_free(c);
            return -1;
        }
        *relayhost_set = true;
    }
    *transport = t;
    *policy = p;
    *credentials = c;
    return 0;
}
