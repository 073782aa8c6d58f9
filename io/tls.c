/*
 * tls - OpenSSL over memory BIOs (see tls.h).
 *
 * Every OpenSSL call that can fail starts with ERR_clear_error(): the error
 * queue is per thread, and a stale entry from another connection of the
 * same worker would otherwise be reported as this one's failure.
 */
#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "alloc.h"
#include "smtp_reply.h"

struct tls_server {
    pthread_mutex_t lock;       /* guards ctx against a concurrent reload */
    SSL_CTX *ctx;
    char *cert_file;
    char *key_file;
    int min_version;
    long session_timeout_s;
};

struct tls_client {
    SSL_CTX *ctx;
};

void
tls_global_init(void)
{
    OPENSSL_init_ssl(OPENSSL_INIT_LOAD_SSL_STRINGS | OPENSSL_INIT_LOAD_CRYPTO_STRINGS, NULL);
}

/* The newest OpenSSL error as text, or fallback. */
static void
tls_error_text(char *buf, size_t size, const char *fallback)
{
    unsigned long e = ERR_get_error();
    if (e == 0) {
        snprintf(buf, size, "%s", fallback);
        return;
    }
    unsigned long last;
    while ((last = ERR_get_error()) != 0)
        e = last;   /* the last one is the most specific */
    ERR_error_string_n(e, buf, size);
}

static int
tls_parse_min_version(const char *text)
{
    if (text != NULL && strcmp(text, ">=TLSv1.3") == 0)
        return TLS1_3_VERSION;
    return TLS1_2_VERSION;
}

static SSL_CTX *
tls_server_ctx_build(const struct tls_server *t, char *err, size_t errsize)
{
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        tls_error_text(err, errsize, "SSL_CTX_new failed");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, t->min_version);
    /* No compression (CRIME), no renegotiation (a client-driven CPU sink),
     * our cipher order. */
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION
                                 | SSL_OP_CIPHER_SERVER_PREFERENCE);
    /* Idle sessions give their record buffers back: 10 000 idle TLS
     * sessions must not hold 10 000 x 34 KiB. */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"ringmta", 7);
    SSL_CTX_set_timeout(ctx, t->session_timeout_s);
    SSL_CTX_set_num_tickets(ctx, 1);
    const char *key = t->key_file[0] ? t->key_file : t->cert_file;
    if (SSL_CTX_use_certificate_chain_file(ctx, t->cert_file) != 1) {
        char why[200];
        tls_error_text(why, sizeof why, "unreadable");
        snprintf(err, errsize, "certificate %s: %s", t->cert_file, why);
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1
        || SSL_CTX_check_private_key(ctx) != 1) {
        char why[200];
        tls_error_text(why, sizeof why, "unreadable or not the certificate's key");
        snprintf(err, errsize, "private key %s: %s", key, why);
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

struct tls_server *
tls_server_new(const char *cert_file, const char *key_file, const char *min_version_text,
               uint64_t session_timeout_ms, char *err, size_t errsize)
{
    struct tls_server *t = xcalloc(1, sizeof *t);
    pthread_mutex_init(&t->lock, NULL);
    t->cert_file = xstrdup(cert_file);
    t->key_file = xstrdup(key_file != NULL ? key_file : "");
    t->min_version = tls_parse_min_version(min_version_text);
    t->session_timeout_s = (long)(session_timeout_ms / 1000);
    t->ctx = tls_server_ctx_build(t, err, errsize);
    if (t->ctx == NULL)
        return tls_server_free(t);
    return t;
}

int
tls_server_reload(struct tls_server *t, char *err, size_t errsize)
{
    SSL_CTX *ctx = tls_server_ctx_build(t, err, errsize);
    if (ctx == NULL)
        return -1;
    pthread_mutex_lock(&t->lock);
    SSL_CTX *old = t->ctx;
    t->ctx = ctx;
    pthread_mutex_unlock(&t->lock);
    SSL_CTX_free(old);   /* streams made with it hold their own reference */
    return 0;
}

struct tls_server *
tls_server_free(struct tls_server *t)
{
    if (t == NULL)
        return NULL;
    SSL_CTX_free(t->ctx);
    pthread_mutex_destroy(&t->lock);
    xfree(t->cert_file);
    xfree(t->key_file);
    xfree(t);
    return NULL;
}

struct tls_client *
tls_client_new(const char *ca_file, char *err, size_t errsize)
{
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) {
        tls_error_text(err, errsize, "SSL_CTX_new failed");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    /* Sessions are kept per destination by the caller (tls_stream_session). */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
    int ok = (ca_file != NULL && ca_file[0])
                 ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL)
                 : SSL_CTX_set_default_verify_paths(ctx);
    if (ok != 1) {
        char why[200];
        tls_error_text(why, sizeof why, "unreadable");
        snprintf(err, errsize, "CA file %s: %s", ca_file && ca_file[0] ? ca_file : "(system)",
                 why);
        SSL_CTX_free(ctx);
        return NULL;
    }
    struct tls_client *t = xcalloc(1, sizeof *t);
    t->ctx = ctx;
    return t;
}

struct tls_client *
tls_client_free(struct tls_client *t)
{
    if (t == NULL)
        return NULL;
    SSL_CTX_free(t->ctx);
    xfree(t);
    return NULL;
}

/* --- streams ------------------------------------------------------------ */

static int
tls_stream_attach(struct tls_stream *ts, SSL *ssl)
{
    memset(ts, 0, sizeof *ts);
    if (ssl == NULL)
        return -1;
    ts->ssl = ssl;
    ts->rbio = BIO_new(BIO_s_mem());
    ts->wbio = BIO_new(BIO_s_mem());
    if (ts->rbio == NULL || ts->wbio == NULL) {
        BIO_free(ts->rbio);
        BIO_free(ts->wbio);
        SSL_free(ssl);
        ts->ssl = NULL;
        return -1;
    }
    /* An empty input BIO means "wait for more", never end of file. */
    BIO_set_mem_eof_return(ts->rbio, -1);
    SSL_set_bio(ssl, ts->rbio, ts->wbio);   /* the SSL owns both now */
    return 0;
}

int
tls_stream_server(struct tls_stream *ts, struct tls_server *t)
{
    ERR_clear_error();
    pthread_mutex_lock(&t->lock);
    SSL *ssl = SSL_new(t->ctx);
    pthread_mutex_unlock(&t->lock);
    if (tls_stream_attach(ts, ssl) < 0) {
        tls_error_text(ts->error, sizeof ts->error, "SSL_new failed");
        return -1;
    }
    SSL_set_accept_state(ssl);
    return 0;
}

static bool
tls_is_ip_literal(const char *name)
{
    unsigned char buf[16];
    return inet_pton(AF_INET, name, buf) == 1 || inet_pton(AF_INET6, name, buf) == 1;
}

int
tls_stream_client(struct tls_stream *ts, struct tls_client *t, const char *sni,
                  const char *verify_name, SSL_SESSION *resume)
{
    ERR_clear_error();
    SSL *ssl = SSL_new(t->ctx);
    if (tls_stream_attach(ts, ssl) < 0) {
        tls_error_text(ts->error, sizeof ts->error, "SSL_new failed");
        return -1;
    }
    /* RFC 6066 §3: SNI carries host names, never address literals. */
    if (sni != NULL && sni[0] && !tls_is_ip_literal(sni))
        SSL_set_tlsext_host_name(ssl, sni);
    /* The name is always set, so the verification result says whether the
     * certificate matches; it is enforced only when verify_name is given.
     * An address (a relayhost written [192.0.2.1]) must be in an IP SAN. */
    const char *name = verify_name != NULL ? verify_name : sni;
    if (name != NULL && name[0]) {
        if (tls_is_ip_literal(name)) {
            X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name);
        } else {
            SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
            SSL_set1_host(ssl, name);
        }
    }
    SSL_set_verify(ssl, verify_name != NULL ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
    if (resume != NULL)
        SSL_set_session(ssl, resume);
    SSL_set_connect_state(ssl);
    return 0;
}

void
tls_stream_free(struct tls_stream *ts)
{
    if (ts->ssl != NULL)
        SSL_free(ts->ssl);   /* frees both BIOs */
    memset(ts, 0, sizeof *ts);
}

void
tls_stream_feed(struct tls_stream *ts, const uint8_t *p, size_t n)
{
    while (n > 0) {
        int chunk = n > (1u << 30) ? (1 << 30) : (int)n;
        int w = BIO_write(ts->rbio, p, chunk);
        if (w <= 0)
            return;   /* out of memory: xmalloc would have aborted anyway */
        p += w;
        n -= (size_t)w;
    }
}

/* What a failed SSL call means; fills ts->error for TLS_ERROR. */
static enum tls_result
tls_stream_failure(struct tls_stream *ts, int r)
{
    int e = SSL_get_error(ts->ssl, r);
    switch (e) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        return TLS_AGAIN;
    case SSL_ERROR_ZERO_RETURN:
        return TLS_CLOSED;
    default:
        break;
    }
    long vr = SSL_get_verify_result(ts->ssl);
    if (vr != X509_V_OK && SSL_get_verify_mode(ts->ssl) != SSL_VERIFY_NONE) {
        snprintf(ts->error, sizeof ts->error, "certificate verification failed: %s",
                 X509_verify_cert_error_string(vr));
        ERR_clear_error();
    } else {
        tls_error_text(ts->error, sizeof ts->error,
                       e == SSL_ERROR_SYSCALL ? "unexpected end of stream" : "protocol error");
    }
    return TLS_ERROR;
}

enum tls_result
tls_stream_handshake(struct tls_stream *ts)
{
    if (ts->handshake_done)
        return TLS_DONE;
    ERR_clear_error();
    int r = SSL_do_handshake(ts->ssl);
    if (r == 1) {
        ts->handshake_done = true;
        return TLS_DONE;
    }
    return tls_stream_failure(ts, r);
}

long
tls_stream_read(struct tls_stream *ts, void *buf, size_t cap)
{
    size_t n = 0;
    ERR_clear_error();
    if (SSL_read_ex(ts->ssl, buf, cap, &n) == 1)
        return (long)n;
    enum tls_result r = tls_stream_failure(ts, 0);
    return r == TLS_AGAIN ? 0 : r;
}

bool
tls_stream_has_input(const struct tls_stream *ts)
{
    return SSL_has_pending(ts->ssl) || BIO_ctrl_pending(ts->rbio) > 0;
}

int
tls_stream_write(struct tls_stream *ts, const void *p, size_t n)
{
    const uint8_t *q = p;
    while (n > 0) {
        size_t w = 0;
        ERR_clear_error();
        if (SSL_write_ex(ts->ssl, q, n, &w) != 1) {
            tls_stream_failure(ts, 0);
            return -1;
        }
        q += w;
        n -= w;
    }
    return 0;
}

void
tls_stream_shutdown(struct tls_stream *ts)
{
    if (ts->shutdown_sent || ts->ssl == NULL || !ts->handshake_done)
        return;
    ts->shutdown_sent = true;
    ERR_clear_error();
    SSL_shutdown(ts->ssl);   /* queues close_notify; we never wait for the peer's */
    ERR_clear_error();
}

size_t
tls_stream_output_pending(const struct tls_stream *ts)
{
    return ts->wbio != NULL ? BIO_ctrl_pending(ts->wbio) : 0;
}

void
tls_stream_take_output(struct tls_stream *ts, struct smtp_outbuf *out)
{
    char *data = NULL;
    long n = BIO_get_mem_data(ts->wbio, &data);
    if (n <= 0)
        return;
    outbuf_append(out, data, (size_t)n);
    (void)BIO_reset(ts->wbio);
}

const char *
tls_stream_version(const struct tls_stream *ts)
{
    return SSL_get_version(ts->ssl);
}

const char *
tls_stream_cipher(const struct tls_stream *ts)
{
    return SSL_get_cipher_name(ts->ssl);
}

int
tls_stream_cipher_bits(const struct tls_stream *ts)
{
    return SSL_get_cipher_bits(ts->ssl, NULL);
}

bool
tls_stream_peer_verified(const struct tls_stream *ts)
{
    X509 *peer = SSL_get0_peer_certificate(ts->ssl);
    return peer != NULL && SSL_get_verify_result(ts->ssl) == X509_V_OK;
}

bool
tls_stream_resumed(const struct tls_stream *ts)
{
    return SSL_session_reused(ts->ssl) == 1;
}

SSL_SESSION *
tls_stream_session(const struct tls_stream *ts)
{
    SSL_SESSION *s = SSL_get1_session(ts->ssl);
    if (s != NULL && !SSL_SESSION_is_resumable(s)) {
        SSL_SESSION_free(s);
        return NULL;
    }
    return s;
}

void
tls_session_free(SSL_SESSION *s)
{
    if (s != NULL)
        SSL_SESSION_free(s);
}
