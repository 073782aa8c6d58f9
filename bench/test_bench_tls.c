/*
 * test_bench_tls - the memory-BIO TLS streams of the bench tools, client
 * against server in one process (bytes shuttled by hand, no sockets):
 * handshake, data both ways in any split, resumption (TLS 1.3 tickets are
 * single use: each connection resumes with its predecessor's), bad input, bad key.
 * Each test runs in its own process; .init makes a self-signed P-256
 * certificate in a fresh temp dir, .fini removes it.
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "alloc.h"
#include "bench_tls.h"

static char dir[64];
static char cert_path[128];
static char key_path[128];
static char other_key_path[128];

static EVP_PKEY *
write_key(const char *path)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    cr_assert_not_null(k);
    FILE *fp = fopen(path, "w");
    cr_assert_not_null(fp);
    cr_assert_eq(PEM_write_PrivateKey(fp, k, NULL, NULL, 0, NULL, NULL), 1);
    fclose(fp);
    return k;
}

static void
make_cert(void)
{
    snprintf(dir, sizeof(dir), "/tmp/test_bench_tls.XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(cert_path, sizeof(cert_path), "%s/cert.pem", dir);
    snprintf(key_path, sizeof(key_path), "%s/key.pem", dir);
    snprintf(other_key_path, sizeof(other_key_path), "%s/other.pem", dir);
    EVP_PKEY *k = write_key(key_path);
    EVP_PKEY_free(write_key(other_key_path));
    X509 *x = X509_new();
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, k);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"sink.test", -1,
                               -1, 0);
    X509_set_issuer_name(x, name);
    cr_assert(X509_sign(x, k, EVP_sha256()) > 0);
    FILE *fp = fopen(cert_path, "w");
    cr_assert_not_null(fp);
    PEM_write_X509(fp, x);
    fclose(fp);
    X509_free(x);
    EVP_PKEY_free(k);
}

static void
remove_cert(void)
{
    unlink(cert_path);
    unlink(key_path);
    unlink(other_key_path);
    rmdir(dir);
}

TestSuite(bench_tls, .init = make_cert, .fini = remove_cert);

struct pipe_buf {
    char *p;
    size_t cap, len;
};

/* Moves a's output into b's input, in pieces of step octets (0 = all at once). */
static size_t
shuttle(struct bench_tls *a, struct bench_tls *b, size_t step)
{
    struct pipe_buf buf = {0};
    bench_tls_take(a, &buf.p, &buf.cap, &buf.len);
    for (size_t off = 0; off < buf.len;) {
        size_t n = step == 0 || buf.len - off < step ? buf.len - off : step;
        bench_tls_feed(b, buf.p + off, n);
        off += n;
    }
    size_t moved = buf.len;
    xfree(buf.p);
    return moved;
}

/* Runs both handshakes to the end; returns the number of round trips. */
static int
handshake(struct bench_tls *c, struct bench_tls *s, size_t step)
{
    int rounds = 0;
    enum bench_tls_result rc = BENCH_TLS_AGAIN, rs = BENCH_TLS_AGAIN;
    while (rc != BENCH_TLS_DONE || rs != BENCH_TLS_DONE) {
        cr_assert_lt(rounds, 10, "handshake does not converge");
        rc = bench_tls_handshake(c);
        cr_assert_neq(rc, BENCH_TLS_ERROR, "client: %s", c->error);
        shuttle(c, s, step);
        rs = bench_tls_handshake(s);
        cr_assert_neq(rs, BENCH_TLS_ERROR, "server: %s", s->error);
        shuttle(s, c, step);
        rounds++;
    }
    return rounds;
}

/* Reads everything b has for us into out (cap octets). */
static size_t
drain(struct bench_tls *b, char *out, size_t cap)
{
    size_t got = 0;
    long n;
    while (got < cap && (n = bench_tls_read(b, out + got, cap - got)) > 0)
        got += (size_t)n;
    return got;
}

static void
contexts(SSL_CTX **client, SSL_CTX **server)
{
    char err[256] = "";
    *client = bench_tls_client_ctx(err, sizeof(err));
    cr_assert_not_null(*client, "%s", err);
    *server = bench_tls_server_ctx(cert_path, key_path, err, sizeof(err));
    cr_assert_not_null(*server, "%s", err);
}

Test(bench_tls, handshakes_and_carries_data_both_ways)
{
    SSL_CTX *cc, *sc;
    contexts(&cc, &sc);
    struct bench_tls c, s;
    cr_assert_eq(bench_tls_client(&c, cc, NULL), 0);
    cr_assert_eq(bench_tls_server(&s, sc), 0);
    handshake(&c, &s, 0);
    cr_assert(c.done && s.done);
    cr_assert_not(bench_tls_resumed(&c));
    cr_assert_eq(strncmp(bench_tls_version(&c), "TLSv1.", 6), 0);

    const char cmd[] = "EHLO bench.test\r\n";
    cr_assert_eq(bench_tls_write(&c, cmd, sizeof(cmd) - 1), 0);
    shuttle(&c, &s, 7);
    char buf[256];
    size_t n = drain(&s, buf, sizeof(buf));
    cr_assert_eq(n, sizeof(cmd) - 1);
    cr_assert_eq(memcmp(buf, cmd, n), 0);

    const char reply[] = "250-sink.test\r\n250 PIPELINING\r\n";
    cr_assert_eq(bench_tls_write(&s, reply, sizeof(reply) - 1), 0);
    shuttle(&s, &c, 0);
    n = drain(&c, buf, sizeof(buf));
    cr_assert_eq(n, sizeof(reply) - 1);
    cr_assert_eq(memcmp(buf, reply, n), 0);
    cr_assert_eq(bench_tls_read(&c, buf, sizeof(buf)), 0, "nothing more: AGAIN");
    bench_tls_free(&c);
    bench_tls_free(&s);
    bench_tls_ctx_free(cc);
    bench_tls_ctx_free(sc);
}

Test(bench_tls, survives_one_octet_at_a_time_and_large_writes)
{
    SSL_CTX *cc, *sc;
    contexts(&cc, &sc);
    struct bench_tls c, s;
    bench_tls_client(&c, cc, NULL);
    bench_tls_server(&s, sc);
    handshake(&c, &s, 1);
    /* 100 KiB: several records; the output BIO grows, nothing is dropped. */
    size_t big = 100 * 1024;
    char *msg = xmalloc(big), *got = xmalloc(big + 1);
    for (size_t i = 0; i < big; i++)
        msg[i] = (char)('a' + i % 26);
    cr_assert_eq(bench_tls_write(&c, msg, big), 0);
    cr_assert_gt(bench_tls_pending(&c), big);
    shuttle(&c, &s, 1000);
    cr_assert_eq(bench_tls_pending(&c), 0);
    cr_assert_eq(drain(&s, got, big + 1), big);
    cr_assert_eq(memcmp(msg, got, big), 0);
    xfree(msg);
    xfree(got);
    bench_tls_free(&c);
    bench_tls_free(&s);
    bench_tls_ctx_free(cc);
    bench_tls_ctx_free(sc);
}

/* One handshake with resume; the session the client holds afterwards (its new ticket). */
static SSL_SESSION *
connect_once(SSL_CTX *cc, SSL_CTX *sc, SSL_SESSION *resume, bool *resumed)
{
    struct bench_tls c, s;
    bench_tls_client(&c, cc, resume);
    bench_tls_server(&s, sc);
    handshake(&c, &s, 0);
    *resumed = bench_tls_resumed(&c);
    cr_assert_eq(bench_tls_resumed(&s), *resumed);
    /* TLS 1.3: the ticket comes after the handshake; the client reads it. */
    char buf[64];
    cr_assert_eq(bench_tls_read(&c, buf, sizeof(buf)), 0);
    SSL_SESSION *next = bench_tls_session(&c);
    bench_tls_free(&c);
    bench_tls_free(&s);
    return next;
}

Test(bench_tls, resumes_with_the_ticket_of_the_previous_connection)
{
    SSL_CTX *cc, *sc;
    contexts(&cc, &sc);
    bool resumed;
    SSL_SESSION *sess = connect_once(cc, sc, NULL, &resumed);
    cr_assert_not(resumed);
    cr_assert_not_null(sess, "no resumable session after the ticket");
    for (int round = 0; round < 3; round++) {
        SSL_SESSION *next = connect_once(cc, sc, sess, &resumed);
        cr_assert(resumed, "round %d: not resumed", round);
        cr_assert_not_null(next, "round %d: no new ticket", round);
        bench_tls_session_free(sess);
        sess = next;
    }
    bench_tls_session_free(sess);
    bench_tls_ctx_free(cc);
    bench_tls_ctx_free(sc);
}

Test(bench_tls, fails_on_plaintext_where_a_handshake_belongs)
{
    SSL_CTX *cc, *sc;
    contexts(&cc, &sc);
    struct bench_tls s;
    bench_tls_server(&s, sc);
    const char junk[] = "EHLO not-tls.test\r\n";
    bench_tls_feed(&s, junk, sizeof(junk) - 1);
    cr_assert_eq(bench_tls_handshake(&s), BENCH_TLS_ERROR);
    cr_assert_neq(s.error[0], '\0');
    bench_tls_free(&s);
    bench_tls_free(&s); /* twice is harmless */
    bench_tls_ctx_free(cc);
    bench_tls_ctx_free(sc);
}

Test(bench_tls, reports_close_notify_as_closed)
{
    SSL_CTX *cc, *sc;
    contexts(&cc, &sc);
    struct bench_tls c, s;
    bench_tls_client(&c, cc, NULL);
    bench_tls_server(&s, sc);
    handshake(&c, &s, 0);
    SSL_shutdown(s.ssl);
    shuttle(&s, &c, 0);
    char buf[64];
    cr_assert_eq(bench_tls_read(&c, buf, sizeof(buf)), BENCH_TLS_CLOSED);
    bench_tls_free(&c);
    bench_tls_free(&s);
    bench_tls_ctx_free(cc);
    bench_tls_ctx_free(sc);
}

Test(bench_tls, refuses_a_key_that_is_not_the_certificates)
{
    char err[256] = "";
    SSL_CTX *sc = bench_tls_server_ctx(cert_path, other_key_path, err, sizeof(err));
    cr_assert_null(sc);
    cr_assert_not_null(strstr(err, "private key"), "%s", err);
    sc = bench_tls_server_ctx("/nonexistent/cert.pem", key_path, err, sizeof(err));
    cr_assert_null(sc);
    cr_assert_not_null(strstr(err, "certificate /nonexistent/cert.pem"), "%s", err);
}
