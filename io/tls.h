/*
 * tls - TLS (OpenSSL 3) over memory BIOs, so the ring does all socket I/O.
 *
 * The ring receives ciphertext into provided buffers and sends ciphertext
 * from a connection's send buffer; OpenSSL never touches a socket. A
 * struct tls_stream is fed what arrived (tls_stream_feed), asked for
 * plaintext (tls_stream_read: the caller chooses where it lands, so a
 * message body is decrypted straight into its spool chunk), given plaintext
 * to protect (tls_stream_write), and drained of the records it produced
 * (tls_stream_take_output) after every call: handshake messages, session
 * tickets and alerts come out of reads too.
 *
 * Why not kernel TLS: the body path would stay copy-free with kTLS, but the
 * kernels ringmta targets do not always carry the tls ULP (this machine's
 * 6.18 build does not: /proc/sys/net/ipv4/tcp_available_ulp lists only
 * mptcp), and OpenSSL enables kTLS only on socket BIOs. With memory BIOs
 * the decryption itself is the one copy into the spool mapping.
 *
 * Threads: a tls_stream belongs to the connection's worker. A tls_server
 * (one certificate; its SSL_CTX) is shared by every worker; streams are
 * created under its lock so tls_server_reload (main thread, SIGHUP) can
 * swap the context while workers run: a stream keeps the context it was
 * made with (OpenSSL reference counts it), new streams get the new one.
 *
 * Handshakes run on the worker thread: their CPU (one ECDHE and one
 * signature, well under a millisecond) is bounded and never waits for I/O,
 * so they do not stall other sessions any more than parsing does.
 */
#ifndef RINGMTA_IO_TLS_H
#define RINGMTA_IO_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "smtp_server.h"

struct tls_server;
struct tls_client;
typedef struct ssl_st SSL;
typedef struct bio_st BIO;
typedef struct ssl_session_st SSL_SESSION;

/* Once, before any other call (main thread). */
void tls_global_init(void);

/*
 * A server context from a PEM certificate chain and key (key_file NULL or
 * "" = the key is in cert_file). min_version_text is ">=TLSv1.2" or
 * ">=TLSv1.3". TLS 1.2+, no compression, no renegotiation, server cipher
 * preference, session cache and tickets with the given lifetime. Returns
 * NULL with err on a bad file or a key that does not match.
 */
struct tls_server *tls_server_new(const char *cert_file, const char *key_file,
                                  const char *min_version_text, uint64_t session_timeout_ms,
                                  char *err, size_t errsize);
/* Reads the files again (SIGHUP). On error the old context stays. */
int tls_server_reload(struct tls_server *t, char *err, size_t errsize);
struct tls_server *tls_server_free(struct tls_server *t);

/*
 * A client context for outbound STARTTLS. ca_file "" = the system store.
 * Verification is decided per stream (tls_stream_client's verify_name).
 */
struct tls_client *tls_client_new(const char *ca_file, char *err, size_t errsize);
struct tls_client *tls_client_free(struct tls_client *t);

enum tls_result {
    TLS_DONE = 1,           /* handshake finished */
    TLS_AGAIN = 0,          /* needs more input from the peer */
    TLS_ERROR = -1,         /* fatal: close the connection (reason in the stream) */
    TLS_CLOSED = -2,        /* the peer sent close_notify */
};

struct tls_stream {
    SSL *ssl;
    BIO *rbio;              /* ciphertext from the peer, fed by the ring */
    BIO *wbio;              /* ciphertext to the peer, taken by the ring */
    bool handshake_done;
    bool shutdown_sent;
    char error[160];        /* why the stream failed, for the log */
};

/* Server side of a new connection, in accept state. 0 or -1 (err). */
int tls_stream_server(struct tls_stream *ts, struct tls_server *t);
/*
 * Client side, with SNI host (may be NULL). verify_name non-NULL: the peer's
 * certificate must chain to the CA store and match that name (checked by
 * OpenSSL during the handshake); NULL = opportunistic, anything is
 * accepted and the verification result is only reported. resume: a session
 * from an earlier connection to the same destination, or NULL.
 */
int tls_stream_client(struct tls_stream *ts, struct tls_client *t, const char *sni,
                      const char *verify_name, SSL_SESSION *resume);
void tls_stream_free(struct tls_stream *ts);

/* Ciphertext that arrived (copied into the stream). */
void tls_stream_feed(struct tls_stream *ts, const uint8_t *p, size_t n);
/* Runs the handshake as far as the input allows. */
enum tls_result tls_stream_handshake(struct tls_stream *ts);
/*
 * Plaintext into buf (at most cap octets). Returns the count (> 0), 0 when
 * more input is needed, TLS_ERROR or TLS_CLOSED.
 */
long tls_stream_read(struct tls_stream *ts, void *buf, size_t cap);
/* True when plaintext is already decrypted or ciphertext is waiting in the
 * stream: tls_stream_read may return data without new input. */
bool tls_stream_has_input(const struct tls_stream *ts);
/* Protects n plaintext octets (all of them: the memory BIO grows). */
int tls_stream_write(struct tls_stream *ts, const void *p, size_t n);
/* Queues close_notify (once). */
void tls_stream_shutdown(struct tls_stream *ts);
/* Ciphertext waiting to be sent. */
size_t tls_stream_output_pending(const struct tls_stream *ts);
/* Appends all waiting ciphertext to out. */
void tls_stream_take_output(struct tls_stream *ts, struct smtp_outbuf *out);

/* After the handshake: "TLSv1.3", the cipher name, its secret bits, and
 * whether the peer's certificate verified (client side). */
const char *tls_stream_version(const struct tls_stream *ts);
const char *tls_stream_cipher(const struct tls_stream *ts);
int tls_stream_cipher_bits(const struct tls_stream *ts);
bool tls_stream_peer_verified(const struct tls_stream *ts);
bool tls_stream_resumed(const struct tls_stream *ts);
/* The session to resume next time (a new reference, or NULL). */
SSL_SESSION *tls_stream_session(const struct tls_stream *ts);
void tls_session_free(SSL_SESSION *s);

#endif
