/*
 * ringmta-ctl - the operator's view of a spool.
 *
 *   ringmta-ctl [-c FILE] [-o key=value]... spool list
 *
 * "spool list" prints one line per queued message (committed, not done):
 *   QUEUE_ID SENDER NRCPT SIZE STATE
 * QUEUE_ID is the qid as 16 lowercase hex digits, SENDER is <addr> (<> for
 * the null sender) escaped with log_escape, NRCPT counts all recipients,
 * SIZE is the body length in octets, STATE is "queued".
 *
 * One thread. Read-only: maps the segments read-only, runs recovery without
 * quarantining or removing anything, so it is safe next to a running
 * daemon (a record being written at that moment just looks torn and is
 * skipped). Exit 0 on success, 1 when the spool cannot be read, 2 on bad
 * usage or configuration.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "config.h"
#include "log.h"
#include "segfile.h"
#include "spool.h"

static void
ctl_usage(FILE *f)
{
    fprintf(f, "usage: ringmta-ctl [-c FILE] [-o key=value]... spool list\n");
}

/* Reads a whole file; NULL with errno set on failure. Caller frees. */
static char *
ctl_read_file(const char *path, size_t *len)
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

/* Like the daemon: the defaults, then -c FILE if given, then every -o in
 * order (later wins). Without -c no file is read, so ctl and a daemon
 * started with the same options agree on spool_dir. */
static int
ctl_load_config(struct config *cfg, const char *file, char **assign, size_t nassign)
{
    char err[512];
    if (file != NULL) {
        size_t len;
        char *text = ctl_read_file(file, &len);
        if (text == NULL) {
            fprintf(stderr, "ringmta-ctl: cannot read %s: %s\n", file, strerror(errno));
            return -1;
        }
        int rc = config_parse_text(cfg, text, len, file, err, sizeof err);
        xfree(text);
        if (rc < 0) {
            fprintf(stderr, "ringmta-ctl: %s\n", err);
            return -1;
        }
    }
    for (size_t i = 0; i < nassign; i++) {
        if (config_set_assignment(cfg, assign[i], err, sizeof err) < 0) {
            fprintf(stderr, "ringmta-ctl: -o %s: %s\n", assign[i], err);
            return -1;
        }
    }
    if (config_check(cfg, err, sizeof err) < 0) {
        fprintf(stderr, "ringmta-ctl: %s\n", err);
        return -1;
    }
    if (cfg->spool_dir == NULL || cfg->spool_dir[0] == '\0') {
        fprintf(stderr, "ringmta-ctl: spool_dir is not set\n");
        return -1;
    }
    return 0;
}

/* The spool list command. */
static int
ctl_spool_list(const struct config *cfg)
{
    struct spool_recovery r;
    char err[512];
    if (segfile_recover_dir(cfg->spool_dir, true, &r, err, sizeof err) < 0) {
        fprintf(stderr, "ringmta-ctl: spool: %s\n", err);
        return 1;
    }
    for (size_t i = 0; i < r.nmsgs; i++) {
        const struct spool_recovered_msg *m = &r.msgs[i];
        if (m->done)
            continue;
        const char *s = m->env.sender ? m->env.sender : "";
        size_t slen = strlen(s);
        size_t esize = 4 * slen + 4; /* every octet may become \xHH */
        char *esc = xmalloc(esize);
        log_escape(esc, esize, s, slen);
        printf("%016" PRIx64 " <%s> %" PRIu32 " %" PRIu64 " %s\n", m->qid, esc,
               m->env.nrcpt, m->body_len, "queued");
        xfree(esc);
    }
    spool_recovery_free(&r);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "ringmta-ctl: write error on standard output\n");
        return 1;
    }
    return 0;
}

int
main(int argc, char **argv)
{
    const char *file = NULL;
    char **assign = xcalloc((size_t)argc + 1, sizeof *assign);
    size_t nassign = 0;
    int c, status;

    while ((c = getopt(argc, argv, "+c:o:h")) != -1) {
        switch (c) {
        case 'c':
            file = optarg;
            break;
        case 'o':
            assign[nassign++] = optarg;
            break;
        case 'h':
            ctl_usage(stdout);
            xfree(assign);
            return 0;
        default:
            ctl_usage(stderr);
            xfree(assign);
            return 2;
        }
    }
    if (argc - optind != 2 || strcmp(argv[optind], "spool") != 0
        || strcmp(argv[optind + 1], "list") != 0) {
        ctl_usage(stderr);
        xfree(assign);
        return 2;
    }

    struct config cfg;
    config_init(&cfg);
    if (ctl_load_config(&cfg, file, assign, nassign) < 0) {
        config_free(&cfg);
        xfree(assign);
        return 2;
    }
    spool_set_unmap(segfile_unmap);
    status = ctl_spool_list(&cfg);
    config_free(&cfg);
    xfree(assign);
    return status;
}
