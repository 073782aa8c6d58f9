/*
 * bench_tls - OpenSSL over memory BIOs (see bench_tls.h).
 *
 * Every OpenSSL call that can fail starts with ERR_clear_error(): the error
 * queue is per thread, and a stale entry from another connection on the same
 * thread would otherwise be reported as this one's failure.
 */
#include "bench_tls.h"

#include <stdio.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "alloc.h"

/* Title: the most specific queued OpenSSL error as text, or fallback. */
static void
bench_tls_error_text(char *buf, size_t size, const char *fallback)
{
    unsigned long e = ERR_get_error(), last;
    if (e == 0) {
        snprintf(buf, size, "%s", fallback);
        return;
    }
    while ((last = ERR_get_error()) != 0)
        e = last;
    ERR_error_string_n(e, buf, size);
}

SSL_CTX *
bench_tls_client_ctx(char *err, size_t errsize)
{
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) {
        bench_tls_error_text(err, errsize, "SSL_CTX_new failed");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    /* A bench against self-signed certificates: the chain is never checked. */
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    /* Sessions are kept by the caller (one per generator thread). */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
    return ctx;
}

SSL_CTX *
bench_tls_server_ctx(const char *cert_file, const char *key_file, char *err, size_t errsize)
{
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        bench_tls_error_text(err, errsize, "SSL_CTX_new failed");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    /* Resumption: a TLS 1.2 session cache and one TLS 1.3 ticket per handshake. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"ringmta-sink", 12);
    SSL_CTX_set_timeout(ctx, 7200);
    SSL_CTX_set_num_tickets(ctx, 1);
    char why[200];
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
        bench_tls_error_text(why, sizeof(why), "unreadable");
        snprintf(err, errsize, "certificate %s: %s", cert_file, why);
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        bench_tls_error_text(why, sizeof(why), "unreadable or not the certificate's key");
        snprintf(err, errsize, "private key %s: %s", key_file, why);
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

void
bench_tls_ctx_free(SSL_CTX *ctx)
{
    if (ctx != NULL)
        SSL_CTX_free(ctx);
}

/* Title: wrap ssl in a pair of memory BIOs. */
static int
bench_tls_attach(struct bench_tls *t, SSL *ssl)
{
    memset(t, 0, sizeof(*t));
    if (ssl == NULL) {
        bench_tls_error_text(t->error, sizeof(t->error), "SSL_new failed");
        return -1;
    }
    t->rbio = BIO_new(BIO_s_mem());
    t->wbio = BIO_new(BIO_s_mem());
    if (t->rbio == NULL || t->wbio == NULL) {
        BIO_free(t->rbio);
        BIO_free(t->wbio);
        SSL_free(ssl);
        t->rbio = t->wbio = NULL;
        snprintf(t->error, sizeof(t->error), "BIO_new failed");
        return -1;
    }
    /* An empty input BIO means "wait for more", never end of file. */
    BIO_set_mem_eof_return(t->rbio, -1);
    SSL_set_bio(ssl, t->rbio, t->wbio); /* the SSL owns both now */
    t->ssl = ssl;
    return 0;
}

int
bench_tls_client(struct bench_tls *t, SSL_CTX *ctx, SSL_SESSION *resume)
{
    ERR_clear_error();
    if (bench_tls_attach(t, SSL_new(ctx)) < 0)
        return -1;
    if (resume != NULL)
        SSL_set_session(t->ssl, resume); /* takes its own reference */
    SSL_set_connect_state(t->ssl);
    return 0;
}

int
bench_tls_server(struct bench_tls *t, SSL_CTX *ctx)
{
    ERR_clear_error();
    if (bench_tls_attach(t, SSL_new(ctx)) < 0)
        return -1;
    SSL_set_accept_state(t->ssl);
    return 0;
}

void
bench_tls_free(struct bench_tls *t)
{
    if (t->ssl != NULL) {
        /*
         * OpenSSL marks the session of an SSL freed without a shutdown as not
         * resumable (ssl_clear_bad_session). The tools close after QUIT without
         * a close_notify exchange, which is no reason to lose the session.
         */
        if (t->done)
            SSL_set_shutdown(t->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
        SSL_free(t->ssl); /* and both BIOs */
    }
    t->ssl = NULL;
    t->rbio = t->wbio = NULL;
    t->done = false;
    t->shutdown_sent = false;
}

void
bench_tls_feed(struct bench_tls *t, const void *p, size_t n)
{
    const char *q = p;
    while (n > 0) {
        int chunk = n > (1u << 30) ? (1 << 30) : (int)n;
        int w = BIO_write(t->rbio, q, chunk);
        if (w <= 0)
            return; /* a memory BIO fails only when out of memory */
        q += w;
        n -= (size_t)w;
    }
}

/* Title: what a failed SSL call means; fills t->error for BENCH_TLS_ERROR. */
static enum bench_tls_result
bench_tls_failure(struct bench_tls *t, int r)
{
    int e = SSL_get_error(t->ssl, r);
    switch (e) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        return BENCH_TLS_AGAIN;
    case SSL_ERROR_ZERO_RETURN:
        return BENCH_TLS_CLOSED;
    default:
        bench_tls_error_text(t->error, sizeof(t->error),
                             e == SSL_ERROR_SYSCALL ? "unexpected end of stream" : "protocol error");
        return BENCH_TLS_ERROR;
    }
}

enum bench_tls_result
bench_tls_handshake(struct bench_tls *t)
{
    if (t->done)
        return BENCH_TLS_DONE;
    ERR_clear_error();
    int r = SSL_do_handshake(t->ssl);
    if (r == 1) {
        t->done = true;
        return BENCH_TLS_DONE;
    }
    return bench_tls_failure(t, r);
}

long
bench_tls_read(struct bench_tls *t, void *buf, size_t cap)
{
    size_t n = 0;
    ERR_clear_error();
    if (SSL_read_ex(t->ssl, buf, cap, &n) == 1)
        return (long)n;
    enum bench_tls_result r = bench_tls_failure(t, 0);
    return r == BENCH_TLS_AGAIN ? 0 : r;
}

int
bench_tls_write(struct bench_tls *t, const void *p, size_t n)
{
    const char *q = p;
    while (n > 0) {
        size_t w = 0;
        ERR_clear_error();
        if (SSL_write_ex(t->ssl, q, n, &w) != 1) {
            bench_tls_failure(t, 0);
            return -1;
        }
        q += w;
        n -= w;
    }
    return 0;
}

void
bench_tls_shutdown(struct bench_tls *t)
{
    if (t->ssl == NULL || !t->done || t->shutdown_sent)
        return;
    t->shutdown_sent = true;
    ERR_clear_error();
    SSL_shutdown(t->ssl);
    ERR_clear_error();
}

size_t
bench_tls_pending(const struct bench_tls *t)
{
    return t->wbio != NULL ? BIO_ctrl_pending(t->wbio) : 0;
}

size_t
bench_tls_take(struct bench_tls *t, char **buf, size_t *cap, size_t *len)
{
    size_t n = bench_tls_pending(t);
    if (n == 0)
        return 0;
    if (*len + n > *cap) {
        size_t c = *cap ? *cap : 4096;
        while (c < *len + n)
            c *= 2;
        *buf = xrealloc(*buf, c);
        *cap = c;
    }
    size_t got = 0;
    /* A memory BIO hands out everything it holds. */
    if (BIO_read_ex(t->wbio, *buf + *len, n, &got) != 1)
        return 0;
    *len += got;
    return got;
}

bool
bench_tls_resumed(const struct bench_tls *t)
{
    return t->ssl != NULL && SSL_session_reused(t->ssl) == 1;
}

const char *
bench_tls_version(const struct bench_tls *t)
{
    return t->ssl != NULL ? SSL_get_version(t->ssl) : "none";
}

SSL_SESSION *
bench_tls_session(const struct bench_tls *t)
{
    if (t->ssl == NULL)
        return NULL;
    SSL_SESSION *s = SSL_get1_session(t->ssl);
    if (s != NULL && !SSL_SESSION_is_resumable(s)) {
        SSL_SESSION_free(s);
        return NULL;
    }
    return s;
}

void
bench_tls_session_free(SSL_SESSION *s)
{
    if (s != NULL)
        SSL_SESSION_free(s);
}
