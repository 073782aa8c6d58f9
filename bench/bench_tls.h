/*
 * bench_tls - TLS (OpenSSL 3) over memory BIOs for ringmta-bench and
 * ringmta-sink, so the ring keeps doing every socket read and write.
 *
 * The same approach as the daemon's io/tls (which bench/ must not link): a
 * stream is fed the ciphertext that arrived (bench_tls_feed), asked to
 * advance its handshake or for plaintext, given plaintext to protect, and
 * drained of the records it produced (bench_tls_take) after every call:
 * handshake messages and session tickets come out of reads too. OpenSSL
 * never touches a socket, so a handshake is CPU only (one key exchange, one
 * signature or verification) and never blocks the ring's other sessions.
 *
 * Threads: an SSL_CTX from this module may be shared (OpenSSL locks it); a
 * stream belongs to one connection on one thread.
 *
 * The client side never verifies the server's certificate: the tools run
 * against self-signed test certificates. Both sides are TLS 1.2 or newer.
 */
#ifndef RINGMTA_BENCH_TLS_H
#define RINGMTA_BENCH_TLS_H

#include <stdbool.h>
#include <stddef.h>

typedef struct ssl_st SSL;
typedef struct ssl_ctx_st SSL_CTX;
typedef struct bio_st BIO;
typedef struct ssl_session_st SSL_SESSION;

enum bench_tls_result {
    BENCH_TLS_DONE = 1,    /* the handshake has finished */
    BENCH_TLS_AGAIN = 0,   /* needs more input from the peer */
    BENCH_TLS_ERROR = -1,  /* fatal: drop the connection (reason in error) */
    BENCH_TLS_CLOSED = -2, /* the peer sent close_notify */
};

struct bench_tls {
    SSL *ssl;    /* NULL: no TLS on this connection */
    BIO *rbio;   /* ciphertext from the peer (owned by ssl) */
    BIO *wbio;   /* ciphertext to the peer (owned by ssl) */
    bool done;   /* handshake finished */
    bool shutdown_sent;
    char error[160];
};

/*
 * Client context: TLS 1.2+, no verification; client-side session caching is
 * left to the caller (bench_tls_session / the resume argument). NULL with err.
 */
SSL_CTX *bench_tls_client_ctx(char *err, size_t errsize);
/*
 * Server context from a PEM certificate chain and its key: TLS 1.2+, session
 * cache and one TLS 1.3 ticket per handshake, so clients can resume. NULL with err.
 */
SSL_CTX *bench_tls_server_ctx(const char *cert_file, const char *key_file, char *err,
                              size_t errsize);
void bench_tls_ctx_free(SSL_CTX *ctx);

/*
 * A stream in connect (client) or accept (server) state; resume: a session
 * from an earlier connection or NULL (not consumed: the caller keeps its
 * reference). 0, or -1 with t->error.
 */
int bench_tls_client(struct bench_tls *t, SSL_CTX *ctx, SSL_SESSION *resume);
int bench_tls_server(struct bench_tls *t, SSL_CTX *ctx);
/*
 * Frees the stream without sending close_notify; after a finished handshake
 * its session stays resumable. Safe on a zeroed or freed stream.
 */
void bench_tls_free(struct bench_tls *t);

/* Ciphertext that arrived from the peer (copied). */
void bench_tls_feed(struct bench_tls *t, const void *p, size_t n);
/* Advances the handshake as far as the input allows. */
enum bench_tls_result bench_tls_handshake(struct bench_tls *t);
/*
 * Plaintext into buf (at most cap octets): the count (> 0), 0 when more input
 * is needed, BENCH_TLS_ERROR or BENCH_TLS_CLOSED.
 */
long bench_tls_read(struct bench_tls *t, void *buf, size_t cap);
/* Protects all n plaintext octets (the output BIO grows). 0 or -1. */
int bench_tls_write(struct bench_tls *t, const void *p, size_t n);
/* Queues close_notify (once, after a finished handshake); never waits for the peer's. */
void bench_tls_shutdown(struct bench_tls *t);
/* Ciphertext waiting to be sent. */
size_t bench_tls_pending(const struct bench_tls *t);
/*
 * Moves all waiting ciphertext to the end of *buf (length *len, capacity
 * *cap, grown with xrealloc; the caller owns it). Returns the octets moved.
 */
size_t bench_tls_take(struct bench_tls *t, char **buf, size_t *cap, size_t *len);

/* After the handshake: whether it resumed a session, and the version text. */
bool bench_tls_resumed(const struct bench_tls *t);
const char *bench_tls_version(const struct bench_tls *t);
/* The session to resume later (a new reference) or NULL if not resumable. */
SSL_SESSION *bench_tls_session(const struct bench_tls *t);
void bench_tls_session_free(SSL_SESSION *s);

#endif
