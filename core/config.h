/*
 * config - every setting of ringmta, its default, parsing and validation.
 *
 * The configuration is an immutable snapshot once built: workers read it
 * without locks; a reload (later) builds a new one and swaps the pointer.
 * The file format is Postfix main.cf: "key = value" lines, '#' comments, a
 * line starting with white space continues the previous one. Unknown keys
 * and bad values are errors with file:line in the message. core/ does no I/O:
 * io/ reads the file and passes the text.
 *
 * Sizes accept K, M, G suffixes (powers of 1024); times accept ms, s, m, h,
 * d suffixes (a bare number is seconds); booleans yes/no.
 */
#ifndef RINGMTA_CORE_CONFIG_H
#define RINGMTA_CORE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum listener_kind {
    LISTENER_SMTP = 0,        /* port 25 style; STARTTLS offered with a certificate */
    LISTENER_SUBMISSION,      /* 587: STARTTLS, then AUTH required before MAIL */
    LISTENER_SUBMISSIONS,     /* 465: implicit TLS (RFC 8314), AUTH required */
};

#define CONFIG_PATH_MAX 1024

struct listen_endpoint {
    char host[64];            /* "127.0.0.1", "::1", "0.0.0.0", "::" */
    uint16_t port;
    enum listener_kind kind;
    /* "(cert=FILE,key=FILE)" after the kind: this listener's certificate;
     * empty = smtpd_tls_cert_file / smtpd_tls_key_file */
    char tls_cert_file[CONFIG_PATH_MAX];
    char tls_key_file[CONFIG_PATH_MAX];
};

/* Postfix's smtpd_tls_security_level: none = no STARTTLS; may = offered
 * when a certificate is configured; encrypt = MAIL only under TLS.
 * smtp_tls_security_level (outbound) adds verify: TLS with a certificate
 * that chains to the CA store and names the next hop. */
enum tls_level { TLS_LEVEL_NONE = 0, TLS_LEVEL_MAY, TLS_LEVEL_ENCRYPT, TLS_LEVEL_VERIFY };
/* The words of enum tls_level, in order, NULL-terminated. */
extern const char *const config_tls_level_words[];

enum durability { DURABILITY_FSYNC = 0, DURABILITY_NONE };

/* spool_receive: where a received body lands first (io/conn.c). mapped:
 * straight into the segment's mapping; buffered: into a worker buffer, then
 * pwrite(2) into the segment, so no page of the mapping is written. */
enum spool_receive { SPOOL_RECEIVE_MAPPED = 0, SPOOL_RECEIVE_BUFFERED };

/* smtp_send_zerocopy: how message bodies go out (io/delivery.c). */
enum send_zerocopy { SEND_ZEROCOPY_AUTO = 0, SEND_ZEROCOPY_YES, SEND_ZEROCOPY_NO };

struct config {
    /* identity */
    char *hostname;                     /* "" = the system's host name */
    char *smtpd_banner;                 /* text after "220 <hostname> " */
    /* process */
    struct listen_endpoint *listen;     /* "ADDR:PORT[/kind]", comma separated */
    size_t nlisten;
    unsigned workers;                   /* 0 = one per online CPU */
    char *log_level;                    /* error|warn|info|debug */
    /* spool */
    char *spool_dir;
    uint64_t spool_segment_size;
    enum durability durability;
    enum spool_receive spool_receive;
    /* relay policy */
    char *relay_domains;
    char *relay_networks;
    /* message limits */
    uint64_t message_size_limit;
    unsigned max_hops;
    unsigned body_line_limit;           /* octets without CRLF; 0 = none */
    uint64_t header_size_limit;
    /* session limits */
    unsigned smtpd_recipient_limit;
    unsigned smtpd_command_line_limit;  /* octets including CRLF */
    uint64_t smtpd_timeout_ms;
    uint64_t smtpd_min_data_rate;       /* octets per second; 0 = none */
    uint64_t smtpd_greet_pause_ms;
    unsigned smtpd_soft_error_limit;
    unsigned smtpd_hard_error_limit;
    uint64_t smtpd_error_sleep_time_ms;
    unsigned smtpd_junk_command_limit;
    unsigned smtpd_client_connection_count_limit;  /* 0 = none */
    unsigned smtpd_client_connection_rate_limit;   /* per minute; 0 = none */
    unsigned smtpd_connection_limit;               /* all clients; 0 = none */
    char *smtpd_client_event_limit_exceptions;     /* CIDR list */
    /* TLS (inbound) */
    char *smtpd_tls_cert_file;          /* PEM chain; "" = no TLS unless per listener */
    char *smtpd_tls_key_file;           /* PEM key; "" = in the cert file */
    enum tls_level smtpd_tls_security_level;
    char *smtpd_tls_protocols;          /* ">=TLSv1.2" or ">=TLSv1.3" */
    uint64_t smtpd_tls_session_cache_timeout_ms;
    uint64_t smtpd_starttls_timeout_ms; /* the whole handshake */
    /* SMTP AUTH (RFC 4954) */
    char *smtpd_auth_password_file;     /* "" = AUTH not offered */
    bool smtpd_tls_auth_only;           /* AUTH offered and accepted only under TLS */
    unsigned smtpd_client_auth_failure_limit;      /* per client per minute; 0 = none */
    unsigned smtpd_auth_threads;        /* password verification threads */
    /* delivery (outbound) */
    char *dns_servers;                  /* "" = /etc/resolv.conf; "127.0.0.1:5353, ..." */
    unsigned smtp_port;                 /* port of next hops found by MX */
    char *relayhost;                    /* "" or host[:port] or [ip]:port: send all there */
    char *transport_map;                /* file: domain -> host[:port] | [ip]:port */
    char *destination_policy;           /* file: per-domain shaping overrides */
    unsigned max_rcpt_per_transaction;
    unsigned max_connections;           /* per destination */
    unsigned max_messages_per_connection;
    uint64_t max_message_rate;          /* per destination per second; 0 = none */
    uint64_t max_connection_rate;       /* per destination per second; 0 = none */
    enum tls_level smtp_tls_security_level;  /* outbound: none, may, encrypt, verify */
    char *smtp_tls_CAfile;              /* "" = the system CA store */
    char *smtp_sasl_password_file;      /* "" = no AUTH to smarthosts */
    bool smtp_tls_auth_only;            /* credentials only over TLS */
    uint64_t smtp_connection_reuse_time_ms;   /* idle connection kept for reuse */
    uint64_t smtp_connect_timeout_ms;
    enum send_zerocopy smtp_send_zerocopy;
    uint64_t smtp_helo_timeout_ms;      /* banner and EHLO replies */
    uint64_t smtp_mail_timeout_ms;      /* MAIL and RCPT replies */
    uint64_t smtp_data_init_timeout_ms; /* reply to DATA */
    uint64_t smtp_data_xfer_timeout_ms; /* each body write */
    uint64_t smtp_data_done_timeout_ms; /* reply after the final dot */
    uint64_t minimal_backoff_time_ms;
    uint64_t maximal_backoff_time_ms;
    uint64_t max_queue_lifetime_ms;
    uint64_t delay_warning_time_ms;     /* delay notice after this long deferred; 0 = none */
};

/* Fills every setting with its documented default. */
void config_init(struct config *cfg);
void config_free(struct config *cfg);

/* Sets one setting from text. Returns 0, or -1 with err ("unknown setting
 * 'x'", "bad value for y: ..."). */
int config_set(struct config *cfg, const char *key, const char *value, char *err,
               size_t errsize);
/* "key=value" as given to -o. */
int config_set_assignment(struct config *cfg, const char *assignment, char *err,
                          size_t errsize);
/* Parses a whole main.cf-style file. origin names it in errors. */
int config_parse_text(struct config *cfg, const char *text, size_t len,
                      const char *origin, char *err, size_t errsize);
/* Cross-setting checks (e.g. the soft error limit below the hard one). */
int config_check(const struct config *cfg, char *err, size_t errsize);

/* "key = value\n" for every setting, in table order; caller frees. */
char *config_format(const struct config *cfg);

/* One setting's documentation, for README tables and --help. */
struct config_doc {
    const char *key;
    const char *default_text;
    const char *description;
};
const struct config_doc *config_docs(size_t *count);

/* Value parsers, exported for tests and for callers with their own syntax. */
int config_parse_size(const char *text, uint64_t *out);
int config_parse_time_ms(const char *text, uint64_t *out);
int config_parse_bool(const char *text, bool *out);

#endif
