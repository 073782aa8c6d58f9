/*
 * ringmta-ctl - the operator's view of a spool.
 *
 *   ringmta-ctl [-c FILE] [-o key=value]... spool list
 *   ringmta-ctl [-c FILE] [-o key=value]... spool show QUEUE_ID
 *
 * "spool list" prints one line per queued message (committed, not done):
 *   QUEUE_ID SENDER NRCPT SIZE STATE
 * QUEUE_ID is the qid as 16 lowercase hex digits, SENDER is <addr> (<> for
 * the null sender) escaped with log_escape, NRCPT counts all recipients,
 * SIZE is the body length in octets, STATE is "queued".
 *
 * "spool show QUEUE_ID" writes the stored body of one committed message to
 * standard output, octet for octet, with no decoding: our Received: header
 * first, then what the client sent (DATA bodies still dot-stuffed as
 * received, BDAT bodies raw). A message not found (or done) is exit 1.
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
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "config.h"
#include "log.h"
#include "segfile.h"
#include "settings.h"
#include "spool.h"

static void
ctl_usage(FILE *f)
{
    fprintf(f, "usage: ringmta-ctl [-c FILE] [-o key=value]... spool list\n"
               "       ringmta-ctl [-c FILE] [-o key=value]... spool show QUEUE_ID\n");
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

/* Parses exactly 16 hex digits (the form spool list prints). */
static bool
ctl_parse_qid(const char *s, uint64_t *qid)
{
    uint64_t v = 0;
    size_t i;
    for (i = 0; s[i] != '\0'; i++) {
        char c = s[i];
        unsigned d;
        if (c >= '0' && c <= '9')
            d = (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            d = (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            d = (unsigned)(c - 'A' + 10);
        else
            return false;
        if (i >= 16)
            return false;
        v = v << 4 | d;
    }
    if (i != 16)
        return false;
    *qid = v;
    return true;
}

/* The spool show command: the body octets of one queued message. */
static int
ctl_spool_show(const struct config *cfg, uint64_t qid)
{
    struct spool_recovery r;
    char err[512];
    if (segfile_recover_dir(cfg->spool_dir, true, &r, err, sizeof err) < 0) {
        fprintf(stderr, "ringmta-ctl: spool: %s\n", err);
        return 1;
    }
    const struct spool_recovered_msg *m = NULL;
    for (size_t i = 0; i < r.nmsgs; i++) {
        if (r.msgs[i].qid == qid && !r.msgs[i].done) {
            m = &r.msgs[i];
            break;
        }
    }
    int status = 0;
    if (m == NULL) {
        fprintf(stderr, "ringmta-ctl: %016" PRIx64 ": no such queued message\n", qid);
        status = 1;
    } else {
        for (uint32_t i = 0; i < m->nchunks && status == 0; i++) {
            const struct spool_extent *e = &m->chunks[i];
            if (e->len > 0 && fwrite(e->seg->base + e->off, 1, e->len, stdout) != e->len)
                status = 1;
        }
    }
    spool_recovery_free(&r);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "ringmta-ctl: write error on standard output\n");
        return 1;
    }
    return status;
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
    int nargs = argc - optind;
    bool list = nargs == 2 && strcmp(argv[optind], "spool") == 0
                && strcmp(argv[optind + 1], "list") == 0;
    bool show = nargs == 3 && strcmp(argv[optind], "spool") == 0
                && strcmp(argv[optind + 1], "show") == 0;
    uint64_t qid = 0;
    if ((!list && !show) || (show && !ctl_parse_qid(argv[optind + 2], &qid))) {
        ctl_usage(stderr);
        xfree(assign);
        return 2;
    }

    /* Like the daemon: defaults, -c FILE, then each -o; so ctl and a daemon
     * started with the same options agree on spool_dir. */
    struct config cfg;
    if (settings_load(&cfg, "ringmta-ctl", file, assign, nassign) < 0) {
        config_free(&cfg);
        xfree(assign);
        return 2;
    }
    spool_set_unmap(segfile_unmap);
    status = show ? ctl_spool_show(&cfg, qid) : ctl_spool_list(&cfg);
    config_free(&cfg);
    xfree(assign);
    return status;
}
