/*
 * main - the ringmta daemon: settings, spool recovery, workers, signals.
 *
 * The main thread does the blocking start-up work (reading the config,
 * recovering the spool, creating the first segments), starts one worker per
 * core, then only waits for signals. SIGTERM/SIGINT stop accepting, let
 * in-flight commits finish and exit; workers never see a signal (all are
 * blocked before any thread starts).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "alloc.h"
#include "clientlimit.h"
#include "config.h"
#include "delivery.h"
#include "retry.h"
#include "log.h"
#include "logsink.h"
#include "segfile.h"
#include "settings.h"
#include "tls.h"
#include "worker.h"

/*
 * One TLS server context per listen endpoint: its own (cert=...) or the
 * global smtpd_tls_cert_file. A submissions listener cannot work without
 * one; smtp and submission listeners offer STARTTLS when they have one and
 * smtpd_tls_security_level is not none.
 */
static int
daemon_tls_init(struct daemon *d)
{
    const struct config *cfg = d->cfg;
    d->listen_tls = xcalloc(cfg->nlisten ? cfg->nlisten : 1, sizeof *d->listen_tls);
    tls_global_init();
    for (size_t i = 0; i < cfg->nlisten; i++) {
        const struct listen_endpoint *ep = &cfg->listen[i];
        const char *cert = ep->tls_cert_file[0] ? ep->tls_cert_file : cfg->smtpd_tls_cert_file;
        const char *key = ep->tls_cert_file[0] || ep->tls_key_file[0] ? ep->tls_key_file
                                                                       : cfg->smtpd_tls_key_file;
        if (ep->kind != LISTENER_SUBMISSIONS
            && cfg->smtpd_tls_security_level == TLS_LEVEL_NONE)
            continue;
        if (cert[0] == '\0') {
            if (ep->kind == LISTENER_SUBMISSIONS) {
                log_error("listen %s:%u/submissions needs a certificate: set "
                          "smtpd_tls_cert_file or (cert=FILE,key=FILE)", ep->host, ep->port);
                return -1;
            }
            if (cfg->smtpd_tls_security_level == TLS_LEVEL_ENCRYPT) {
                log_error("smtpd_tls_security_level = encrypt needs smtpd_tls_cert_file");
                return -1;
            }
            continue;
        }
        char err[512];
        d->listen_tls[i] = tls_server_new(cert, key, cfg->smtpd_tls_protocols,
                                          cfg->smtpd_tls_session_cache_timeout_ms, err,
                                          sizeof err);
        if (d->listen_tls[i] == NULL) {
            log_error("TLS for %s:%u: %s", ep->host, ep->port, err);
            return -1;
        }
    }
    if (cfg->smtp_tls_security_level != TLS_LEVEL_NONE || cfg->destination_policy[0]
        || cfg->smtp_sasl_password_file[0]) {
        char err[512];
        d->smtp_tls = tls_client_new(cfg->smtp_tls_CAfile, err, sizeof err);
        if (d->smtp_tls == NULL) {
            log_error("outbound TLS: %s", err);
            return -1;
        }
    }
    return 0;
}

/* smtpd_auth_password_file: AUTH is offered only when it is set. */
static int
daemon_auth_init(struct daemon *d)
{
    const struct config *cfg = d->cfg;
    if (cfg->smtpd_auth_password_file[0] == '\0') {
        for (size_t i = 0; i < cfg->nlisten; i++)
            if (cfg->listen[i].kind != LISTENER_SMTP) {
                log_warn("listen %s:%u is a submission listener but smtpd_auth_password_file "
                         "is not set: it relays only for mynetworks, like port 25",
                         cfg->listen[i].host, cfg->listen[i].port);
                break;
            }
        return 0;
    }
    char err[512];
    struct auth_table *t = auth_table_load(cfg->smtpd_auth_password_file, err, sizeof err);
    if (t == NULL) {
        log_error("%s", err);
        return -1;
    }
    size_t users = auth_table_count(t);
    d->auth = authpool_new(cfg->smtpd_auth_threads, t, err, sizeof err);
    if (d->auth == NULL) {
        auth_table_free(t);
        log_error("AUTH: %s", err);
        return -1;
    }
    log_info("AUTH: %zu user%s from %s", users, users == 1 ? "" : "s",
             cfg->smtpd_auth_password_file);
    return 0;
}

/* SIGHUP: certificates, keys and the password file are read again;
 * connections keep theirs. (XXX: the other settings still need a restart.) */
static void
daemon_reload(struct daemon *d)
{
    if (d->auth != NULL) {
        char err[512];
        struct auth_table *t =
            auth_table_load(d->cfg->smtpd_auth_password_file, err, sizeof err);
        if (t == NULL) {
            log_error("SIGHUP: password file kept as it was: %s", err);
        } else {
            log_info("SIGHUP: reloaded %zu user%s from %s", auth_table_count(t),
                     auth_table_count(t) == 1 ? "" : "s", d->cfg->smtpd_auth_password_file);
            authpool_set_table(d->auth, t);
        }
    }
    unsigned ok = 0, failed = 0;
    for (size_t i = 0; i < d->cfg->nlisten; i++) {
        if (d->listen_tls[i] == NULL)
            continue;
        char err[512];
        if (tls_server_reload(d->listen_tls[i], err, sizeof err) == 0) {
            ok++;
        } else {
            failed++;
            log_error("SIGHUP: TLS for %s:%u kept its old certificate: %s",
                      d->cfg->listen[i].host, d->cfg->listen[i].port, err);
        }
    }
    log_info("SIGHUP: reloaded %u TLS certificate%s%s", ok, ok == 1 ? "" : "s",
             failed ? " (some failed, see above)" : "");
}

static void
usage(FILE *f)
{
    fprintf(f,
            "usage: ringmta [-c FILE] [-o key=value]... [--check-config]\n"
            "  -c FILE          settings file (key = value lines, like Postfix main.cf)\n"
            "  -o key=value     override one setting (repeatable)\n"
            "  --check-config   validate the settings, print the effective ones, exit\n"
            "  -h, --help       this text\n"
            "Without -c the embedded defaults are used: listen 127.0.0.1:2525,\n"
            "spool in ./var/spool.\n");
}

/* One daemon per spool: a second one would append to the same segments. */
static int
lock_spool(const char *dir)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/lock", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        close(fd);
        return e == EWOULDBLOCK ? -EBUSY : -e;
    }
    return fd;   /* kept open for the life of the process */
}

struct recovered_ctx {
    struct daemon *d;
    struct retry_params retry;
    struct retry_rng rng;
    uint64_t now_ms;
    uint64_t next_attempt_ms;
};

/* Recovered work goes to its owner's scheduler, spread over the recovery
 * window so a restart with a big queue does not stampede (row 49). */
static void
route_recovered(void *arg, struct queue_entry *e)
{
    struct recovered_ctx *ctx = arg;
    unsigned owner = worker_owner(ctx->d, e->domain);
    uint64_t due = retry_recovered_due(&ctx->retry, e->msg->env.arrival_ms,
                                       ctx->next_attempt_ms, ctx->now_ms, &ctx->rng);
    delivery_add(ctx->d->workers[owner], e, due);
}

int
main(int argc, char **argv)
{
    const char *file = NULL;
    bool check_only = false;
    char **overrides = xcalloc((size_t)argc + 1, sizeof *overrides);
    size_t noverrides = 0;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-c") == 0 && i + 1 < argc) {
            file = argv[++i];
        } else if (strcmp(a, "-o") == 0 && i + 1 < argc) {
            overrides[noverrides++] = argv[++i];
        } else if (strcmp(a, "--check-config") == 0) {
            check_only = true;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }

    struct config cfg;
    if (settings_load(&cfg, "ringmta", file, overrides, noverrides) != 0)
        return 2;
    if (check_only) {
        char *text = config_format(&cfg);
        fputs(text, stdout);
        xfree(text);
        config_free(&cfg);
        return 0;
    }

    logsink_install();
    log_set_level((enum log_level)log_level_parse(cfg.log_level));

    struct daemon d;
    memset(&d, 0, sizeof d);
    d.cfg = &cfg;
    char err[512];
    if (relay_policy_init(&d.relay, cfg.relay_domains, cfg.relay_networks, err, sizeof err)
        != 0) {
        log_error("relay policy: %s", err);
        return 2;
    }
    if (cfg.hostname[0] != '\0')
        snprintf(d.hostname, sizeof d.hostname, "%s", cfg.hostname);
    else if (gethostname(d.hostname, sizeof d.hostname - 1) != 0)
        snprintf(d.hostname, sizeof d.hostname, "localhost");

    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    d.nworkers = cfg.workers ? cfg.workers : (unsigned)(ncpu > 0 ? ncpu : 1);
    if (d.nworkers > 64)
        d.nworkers = 64;

    int r = segfile_prepare_dir(cfg.spool_dir);
    if (r != 0) {
        log_error("cannot create spool directory %s: %s", cfg.spool_dir, strerror(-r));
        return 1;
    }
    int lock_fd = lock_spool(cfg.spool_dir);
    if (lock_fd < 0) {
        log_error("cannot lock spool %s: %s", cfg.spool_dir,
                  lock_fd == -EBUSY ? "another ringmta uses it" : strerror(-lock_fd));
        return 1;
    }

    /* smtpd_connection_limit sockets plus segments and rings: lift the soft
     * descriptor limit to the hard one (Debian's default soft limit is 1024). */
    struct rlimit nofile;
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
        nofile.rlim_cur = nofile.rlim_max;
        setrlimit(RLIMIT_NOFILE, &nofile);
    }
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0
        && nofile.rlim_cur < (rlim_t)cfg.smtpd_connection_limit + 256)
        log_warn("open file limit %llu is below smtpd_connection_limit %u + 256; "
                 "connections past it wait in the listen backlog",
                 (unsigned long long)nofile.rlim_cur, cfg.smtpd_connection_limit);

    /* Every thread inherits this mask; only main waits for the signals. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    spool_set_unmap(segfile_unmap);

    /* Recovery: committed messages come back, torn tails are dropped,
     * damaged records go to corrupt/. */
    struct spool_recovery rec;
    uint64_t t0 = worker_mono_ms();
    r = segfile_recover_dir(cfg.spool_dir, false, &rec, err, sizeof err);
    if (r != 0) {
        log_error("spool recovery failed: %s", err);
        return 1;
    }
    d.qid_floor = rec.max_qid;
    d.next_segment_seq = rec.next_segment_seq;

    if (cfg.durability == DURABILITY_NONE)
        log_warn("DURABILITY IS OFF (durability = none): a 250 does NOT mean the message "
                 "is on disk; a crash or power loss loses accepted mail");

    if (cidr_list_parse(&d.limit_exceptions, cfg.smtpd_client_event_limit_exceptions, err,
                        sizeof err)
        != 0) {
        log_error("smtpd_client_event_limit_exceptions: %s", err);
        return 2;
    }
    if (settings_load_routes(&cfg, "ringmta", &d.transport, &d.policy, &d.smtp_credentials,
                             &d.relayhost, &d.relayhost_set)
        != 0)
        return 2;
    if (daemon_tls_init(&d) != 0 || daemon_auth_init(&d) != 0)
        return 2;
    d.limits = clientlimit_new(cfg.smtpd_client_connection_count_limit,
                               cfg.smtpd_client_connection_rate_limit,
                               cfg.smtpd_connection_limit);
    clientlimit_set_auth_failure_limit(d.limits, cfg.smtpd_client_auth_failure_limit);
    d.workers = xcalloc(d.nworkers, sizeof *d.workers);
    for (unsigned i = 0; i < d.nworkers; i++) {
        d.workers[i] = worker_new(&d, i, err, sizeof err);
        if (d.workers[i] == NULL) {
            log_error("worker %u: %s", i, err);
            return 1;
        }
    }

    size_t queued = 0;
    struct recovered_ctx rctx = { .d = &d, .now_ms = worker_unix_ms() };
    retry_params_from_config(&rctx.retry, &cfg);
    retry_rng_seed(&rctx.rng, rctx.now_ms);
    /* The segments recovery kept are owned by the worker that wrote them
     * (or, with fewer workers now, by one of the others): it retires
     * COMMITs in them and removes them once nothing holds them. */
    for (size_t i = 0; i < rec.nkept; i++)
        spool_adopt_segment(d.workers[rec.kept[i]->worker % d.nworkers]->spool, rec.kept[i]);
    for (size_t i = 0; i < rec.nmsgs; i++) {
        struct spool_recovered_msg *rm = &rec.msgs[i];
        if (rm->done) {
            /* Finished before the crash: retire its COMMIT, so the DONE
             * record stops pinning the segments. */
            spool_retire(&rm->holds, rm->qid);
            continue;
        }
        /* The queue keeps its own references: recovery's go with it below. */
        struct spool_extent *body = xmemdup(rm->chunks, rm->nchunks * sizeof *body);
        for (uint32_t k = 0; k < rm->nchunks; k++)
            spool_segment_get(body[k].seg);
        struct queue_msg *m =
            queue_msg_new(rm->qid, &rm->env, rm->body_len, rm->flags, body, rm->nchunks,
                          &rm->holds);
        rctx.next_attempt_ms = rm->next_attempt_ms;
        if (queue_msg_split(m, route_recovered, &rctx) == 0) {
            /* Every recipient has its final status, but the crash came
             * before DONE: write it now, or the message stays forever. */
            spool_append_done(d.workers[0]->spool, rm->qid, &m->holds, NULL);
            spool_retire(&m->holds, rm->qid);
            queue_msg_put(m);
            continue;
        }
        queue_msg_put(m);
        queued++;
    }
    log_info("spool %s: recovered %zu queued message%s in %llu ms (%zu damaged range%s "
             "quarantined, %zu unfinished message%s dropped)",
             cfg.spool_dir, queued, queued == 1 ? "" : "s",
             (unsigned long long)(worker_mono_ms() - t0), rec.ndamage,
             rec.ndamage == 1 ? "" : "s", rec.dropped_uncommitted,
             rec.dropped_uncommitted == 1 ? "" : "s");
    spool_recovery_free(&rec);

    for (unsigned i = 0; i < d.nworkers; i++) {
        r = worker_start(d.workers[i]);
        if (r != 0) {
            log_error("starting worker %u: %s", i, strerror(-r));
            return 1;
        }
    }
    for (size_t i = 0; i < cfg.nlisten; i++)
        log_info("ringmta ready: listening on %s%s%s:%u with %u worker%s, durability=%s",
                 strchr(cfg.listen[i].host, ':') ? "[" : "", cfg.listen[i].host,
                 strchr(cfg.listen[i].host, ':') ? "]" : "", cfg.listen[i].port, d.nworkers,
                 d.nworkers == 1 ? "" : "s",
                 cfg.durability == DURABILITY_FSYNC ? "fsync" : "none");

    for (;;) {
        int sig = 0;
        if (sigwait(&sigs, &sig) != 0)
            continue;
        if (sig == SIGHUP) {
            daemon_reload(&d);
            continue;
        }
        log_info("signal %d: stopping", sig);
        break;
    }
    atomic_store(&d.stopping, true);
    for (unsigned i = 0; i < d.nworkers; i++)
        worker_wake(d.workers[i]);
    for (unsigned i = 0; i < d.nworkers; i++)
        worker_join(d.workers[i]);
    /* The pool may still complete requests into the workers' inboxes. */
    d.auth = authpool_free(d.auth);
    for (unsigned i = 0; i < d.nworkers; i++)
        worker_free(d.workers[i]);
    log_info("stopped");
    clientlimit_free(d.limits);
    cidr_list_free(&d.limit_exceptions);
    route_table_free(d.transport);
    route_policy_free(d.policy);
    route_credentials_free(d.smtp_credentials);
    relay_policy_free(&d.relay);
    for (size_t i = 0; d.listen_tls != NULL && i < cfg.nlisten; i++)
        tls_server_free(d.listen_tls[i]);
    xfree(d.listen_tls);
    tls_client_free(d.smtp_tls);
    xfree(d.workers);
    xfree(overrides);
    config_free(&cfg);
    close(lock_fd);
    return 0;
}
