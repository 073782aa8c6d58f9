/*
 * config - the settings table, value parsers, main.cf parsing and formatting.
 *
 * Any thread may read a finished config; building one (init, set, parse) is
 * single-threaded. Every setting is one row of config_table: key, type, the
 * field it fills, its default as text, its description, and optional limits.
 * Adding a setting is adding a field to struct config and one row here; the
 * defaults, parsing, formatting and documentation all come from the row.
 * Invariants: after config_init every string field is a heap string owned by
 * the config (never NULL); a failed config_set leaves the config unchanged;
 * config_format's output parses back to an equal config.
 */
#include "config.h"

#include "alloc.h"
#include "log.h"
#include "netaddr.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum config_type {
    CONFIG_STRING,  /* char *; with choices: one of them, stored canonical */
    CONFIG_SIZE,    /* uint64_t octets; K, M, G suffixes (powers of 1024) */
    CONFIG_TIME,    /* uint64_t milliseconds; ms, s, m, h, d; bare = seconds */
    CONFIG_BOOL,    /* bool; yes, no, true, false, 1, 0 */
    CONFIG_UINT,    /* unsigned */
    CONFIG_ENUM,    /* an enum whose values are the indexes of choices */
    CONFIG_LISTEN,  /* the listen endpoint list (listen + nlisten) */
};

struct config_setting {
    const char *key;
    enum config_type type;
    size_t offset;                /* of the field in struct config */
    const char *default_text;     /* parsed by config_init: one source of truth */
    const char *description;
    uint64_t min, max;            /* SIZE, TIME, UINT; max 0 = the type's limit */
    const char *const *choices;   /* ENUM, or a STRING limited to these words */
    /* STRING: further syntax check; fills why and returns -1 if bad */
    int (*check)(const char *value, char *why, size_t whysize);
};

/*
 * The offset of a field, checked at compile time to have type T, so a row can
 * never make a size parser write into an unsigned.
 */
#define CONFIG_AT(field, T)                                                            \
    (offsetof(struct config, field)                                                    \
     + 0 * sizeof(struct {                                                             \
           _Static_assert(__builtin_types_compatible_p(                                \
                              __typeof__(((struct config *)0)->field), T),             \
                          "struct config field " #field " is not " #T);                \
           char c;                                                                     \
       }))

/* One row: SETTING(key, TYPE(field), default, description[, .min, .max, .choices]) */
#define SETTING(k, type_and_field, def, desc, ...)                                     \
    { .key = k, type_and_field, .default_text = def, .description = desc, __VA_ARGS__ }
#define STRING(field) .type = CONFIG_STRING, .offset = CONFIG_AT(field, char *)
#define SIZE(field) .type = CONFIG_SIZE, .offset = CONFIG_AT(field, uint64_t)
#define TIME(field) .type = CONFIG_TIME, .offset = CONFIG_AT(field, uint64_t)
#define BOOL(field) .type = CONFIG_BOOL, .offset = CONFIG_AT(field, bool)
#define UINT(field) .type = CONFIG_UINT, .offset = CONFIG_AT(field, unsigned)
#define ENUM(field, T) .type = CONFIG_ENUM, .offset = CONFIG_AT(field, T)
#define LISTEN(field)                                                                  \
    .type = CONFIG_LISTEN, .offset = CONFIG_AT(field, struct listen_endpoint *)

#define KIB UINT64_C(1024)
#define MIB (KIB * 1024)
#define GIB (MIB * 1024)

/* Enum fields are stored through an int: the choices' order is the enum's. */
_Static_assert(sizeof(enum durability) == sizeof(int), "enum durability is an int");
_Static_assert(DURABILITY_FSYNC == 0 && DURABILITY_NONE == 1, "durability order");
static const char *const config_durability_words[] = {"fsync", "none", NULL};
_Static_assert(sizeof(enum spool_receive) == sizeof(int), "enum spool_receive is an int");
_Static_assert(SPOOL_RECEIVE_MAPPED == 0 && SPOOL_RECEIVE_BUFFERED == 1, "spool_receive order");
static const char *const config_spool_receive_words[] = {"mapped", "buffered", NULL};
static const char *const config_send_zerocopy_words[] = {"auto", "yes", "no", NULL};
_Static_assert(sizeof(enum tls_level) == sizeof(int), "enum tls_level is an int");
_Static_assert(TLS_LEVEL_NONE == 0 && TLS_LEVEL_MAY == 1 && TLS_LEVEL_ENCRYPT == 2,
               "tls_level order");
const char *const config_tls_level_words[] = {"none", "may", "encrypt", "verify", NULL};
static const char *const config_smtpd_tls_level_words[] = {"none", "may", "encrypt", NULL};
static const char *const config_tls_protocol_words[] = {">=TLSv1.2", ">=TLSv1.3", NULL};
static const char *const config_log_level_words[] = {"error", "warn", "info", "debug",
                                                     NULL};

static int config_check_networks(const char *value, char *why, size_t whysize);

static const struct config_setting config_table[] = {
    /* identity */
    SETTING("hostname", STRING(hostname), "",
            "Host name in the greeting and Received: lines; "
            "empty = the system's host name"),
    SETTING("smtpd_banner", STRING(smtpd_banner), "ESMTP ringmta",
            "Text after \"220 <hostname> \" in the greeting"),
    /* process */
    SETTING("listen", LISTEN(listen),
            "127.0.0.1:2525",
            "Endpoints ADDR:PORT[/smtp|/submission|/submissions][(cert=FILE,key=FILE)], "
            "comma or space separated; IPv6 in brackets"),
    SETTING("workers", UINT(workers), "0", "Worker threads; 0 = one per online CPU",
            .max = 1024),
    SETTING("log_level", STRING(log_level), "info", "Least severe level logged",
            .choices = config_log_level_words),
    /* spool */
    SETTING("spool_dir", STRING(spool_dir), "./var/spool", "Directory holding the spool"),
    SETTING("spool_segment_size", SIZE(spool_segment_size), "64M",
            "Size of one spool segment file", .min = MIB, .max = 2 * GIB),
    SETTING("durability", ENUM(durability, enum durability), "fsync",
            "fsync = a message is on disk before 250; "
            "none = trust the page cache (tests only)",
            .choices = config_durability_words),
    SETTING("spool_receive", ENUM(spool_receive, enum spool_receive), "mapped",
            "mapped = bodies received straight into the segment mapping; "
            "buffered = into a worker buffer, then written with pwrite",
            .choices = config_spool_receive_words),
    /* relay policy */
    SETTING("relay_domains", STRING(relay_domains), "",
            "Domains accepted for relay from any client, comma or space separated"),
    SETTING("relay_networks", STRING(relay_networks), "127.0.0.0/8, ::1",
            "Client networks allowed to relay anywhere (CIDR list)",
            .check = config_check_networks),
    /* message limits */
    SETTING("message_size_limit", SIZE(message_size_limit), "10240000",
            "Largest message accepted, in octets; 0 = none"),
    SETTING("max_hops", UINT(max_hops), "100",
            "Received: headers after which a message is rejected as looping", .min = 1),
    SETTING("body_line_limit", UINT(body_line_limit), "998",
            "Longest body line in octets without CRLF; 0 = none"),
    SETTING("header_size_limit", SIZE(header_size_limit), "102400",
            "Largest header section, in octets"),
    /* session limits */
    SETTING("smtpd_recipient_limit", UINT(smtpd_recipient_limit), "1000",
            "Recipients accepted per message"),
    SETTING("smtpd_command_line_limit", UINT(smtpd_command_line_limit), "512",
            "Longest command line in octets including CRLF "
            "(RFC 5321 4.5.3.1.4: at least 512)",
            .min = 512),
    SETTING("smtpd_timeout", TIME(smtpd_timeout_ms), "300s",
            "Idle time allowed while waiting for the client", .min = 1),
    SETTING("smtpd_min_data_rate", SIZE(smtpd_min_data_rate), "500",
            "Octets per second a client must sustain during DATA; 0 = none"),
    SETTING("smtpd_greet_pause", TIME(smtpd_greet_pause_ms), "0s",
            "Wait before the greeting; a client that talks first is rejected"),
    SETTING("smtpd_soft_error_limit", UINT(smtpd_soft_error_limit), "10",
            "Errors after which every reply is delayed by smtpd_error_sleep_time"),
    SETTING("smtpd_hard_error_limit", UINT(smtpd_hard_error_limit), "20",
            "Errors after which the session is closed"),
    SETTING("smtpd_error_sleep_time", TIME(smtpd_error_sleep_time_ms), "1s",
            "Delay per reply once the soft error limit is reached"),
    SETTING("smtpd_junk_command_limit", UINT(smtpd_junk_command_limit), "100",
            "NOOP, RSET, VRFY... allowed before they count as errors"),
    SETTING("smtpd_client_connection_count_limit",
            UINT(smtpd_client_connection_count_limit), "50",
            "Simultaneous connections per client address; 0 = none"),
    SETTING("smtpd_client_connection_rate_limit",
            UINT(smtpd_client_connection_rate_limit), "0",
            "New connections per client address per minute; 0 = none"),
    SETTING("smtpd_connection_limit", UINT(smtpd_connection_limit), "10000",
            "Simultaneous connections from all clients; 0 = none"),
    /* Postfix exempts $mynetworks from its anvil limits by default: the
     * applications that submit in bulk are the trusted ones. */
    SETTING("smtpd_client_event_limit_exceptions",
            STRING(smtpd_client_event_limit_exceptions), "127.0.0.0/8, ::1",
            "Clients exempt from the per-client count and rate limits (CIDR list)",
            .check = config_check_networks),
    /* TLS (inbound) */
    SETTING("smtpd_tls_cert_file", STRING(smtpd_tls_cert_file), "",
            "Server certificate chain (PEM) for STARTTLS and implicit TLS; "
            "empty = no TLS except on listeners with their own (cert=...)"),
    SETTING("smtpd_tls_key_file", STRING(smtpd_tls_key_file), "",
            "Private key (PEM) of smtpd_tls_cert_file; empty = in the certificate file"),
    SETTING("smtpd_tls_security_level", ENUM(smtpd_tls_security_level, enum tls_level),
            "may",
            "none = no STARTTLS; may = STARTTLS offered when a certificate is set; "
            "encrypt = MAIL only after STARTTLS",
            .choices = config_smtpd_tls_level_words),
    SETTING("smtpd_tls_protocols", STRING(smtpd_tls_protocols), ">=TLSv1.2",
            "Oldest TLS version accepted from clients",
            .choices = config_tls_protocol_words),
    SETTING("smtpd_tls_session_cache_timeout", TIME(smtpd_tls_session_cache_timeout_ms),
            "3600s", "Lifetime of TLS sessions and tickets for resumption", .min = 1000),
    SETTING("smtpd_starttls_timeout", TIME(smtpd_starttls_timeout_ms), "300s",
            "Time allowed for a client's whole TLS handshake", .min = 1),
    /* SMTP AUTH */
    SETTING("smtpd_auth_password_file", STRING(smtpd_auth_password_file), "",
            "File of 'user:hash' lines, hash a crypt(3) string (yescrypt $y$, "
            "SHA-512 $6$); empty = AUTH not offered"),
    /* RFC 4954 §4: PLAIN and LOGIN send the password in clear, so only
     * inside TLS by default (Postfix's name and meaning). */
    SETTING("smtpd_tls_auth_only", BOOL(smtpd_tls_auth_only), "yes",
            "Offer and accept AUTH only inside TLS (530 5.7.0 otherwise)"),
    SETTING("smtpd_client_auth_failure_limit", UINT(smtpd_client_auth_failure_limit), "10",
            "Failed AUTH attempts per client address per minute before "
            "421 4.7.0 and close; 0 = none"),
    SETTING("smtpd_auth_threads", UINT(smtpd_auth_threads), "2",
            "Threads verifying passwords, off the workers' loops "
            "(a yescrypt hash takes tens of ms)",
            .min = 1, .max = 64),
    /* delivery */
    SETTING("dns_servers", STRING(dns_servers), "",
            "DNS servers ADDR[:PORT], comma separated; empty = /etc/resolv.conf"),
    SETTING("smtp_port", UINT(smtp_port), "25", "Port of mail servers found by MX",
            .min = 1, .max = 65535),
    SETTING("relayhost", STRING(relayhost), "",
            "Send all mail to this smarthost: host[:port] or [ip]:port (no MX lookup)"),
    SETTING("transport_map", STRING(transport_map), "",
            "File of 'domain host[:port]' or 'domain [ip]:port' lines overriding MX"),
    SETTING("destination_policy", STRING(destination_policy), "",
            "File of 'domain key=value...' lines overriding the shaping settings"),
    SETTING("max_rcpt_per_transaction", UINT(max_rcpt_per_transaction), "100",
            "Recipients of one message to one destination per SMTP transaction",
            .min = 1),
    SETTING("max_connections", UINT(max_connections), "20",
            "Simultaneous connections per destination", .min = 1),
    SETTING("max_messages_per_connection", UINT(max_messages_per_connection), "100",
            "Messages sent over one connection before it is closed", .min = 1),
    SETTING("max_message_rate", SIZE(max_message_rate), "0",
            "Messages per second per destination; 0 = no limit"),
    SETTING("max_connection_rate", SIZE(max_connection_rate), "0",
            "New connections per second per destination; 0 = no limit"),
    SETTING("smtp_tls_security_level", ENUM(smtp_tls_security_level, enum tls_level), "may",
            "Outbound TLS: none; may = STARTTLS when offered; encrypt = defer without "
            "TLS; verify = also a certificate valid for the next hop's name",
            .choices = config_tls_level_words),
    SETTING("smtp_tls_CAfile", STRING(smtp_tls_CAfile), "",
            "CA certificates (PEM) for smtp_tls_security_level = verify; "
            "empty = the system store"),
    SETTING("smtp_sasl_password_file", STRING(smtp_sasl_password_file), "",
            "File of 'nexthop user:password' lines: SMTP AUTH to those smarthosts "
            "(Postfix's smtp_sasl_password_maps)"),
    SETTING("smtp_tls_auth_only", BOOL(smtp_tls_auth_only), "yes",
            "Send smarthost credentials only inside TLS: a hop with credentials "
            "gets at least smtp_tls_security_level = encrypt"),
    SETTING("smtp_connection_reuse_time", TIME(smtp_connection_reuse_time_ms), "5s",
            "How long an idle outbound connection is kept for the next message"),
    SETTING("smtp_connect_timeout", TIME(smtp_connect_timeout_ms), "30s",
            "Outbound TCP connection timeout"),
    SETTING("smtp_send_zerocopy", ENUM(smtp_send_zerocopy, enum send_zerocopy), "auto",
            "Message bodies by zero-copy send (IORING_OP_SEND_ZC) in pieces of at least "
            "64 KiB: auto = to peers off loopback (where the kernel copies anyway); "
            "yes = to every peer; no = never",
            .choices = config_send_zerocopy_words),
    SETTING("smtp_helo_timeout", TIME(smtp_helo_timeout_ms), "300s",
            "Wait for the greeting and the EHLO reply (RFC 5321 4.5.3.2: 5 min)"),
    SETTING("smtp_mail_timeout", TIME(smtp_mail_timeout_ms), "300s",
            "Wait for MAIL and RCPT replies (5 min)"),
    SETTING("smtp_data_init_timeout", TIME(smtp_data_init_timeout_ms), "120s",
            "Wait for the reply to DATA (2 min)"),
    SETTING("smtp_data_xfer_timeout", TIME(smtp_data_xfer_timeout_ms), "180s",
            "Each write of the message body (3 min)"),
    SETTING("smtp_data_done_timeout", TIME(smtp_data_done_timeout_ms), "600s",
            "Wait for the reply after the final dot (10 min)"),
    SETTING("minimal_backoff_time", TIME(minimal_backoff_time_ms), "300s",
            "First retry delay of a deferred recipient"),
    SETTING("maximal_backoff_time", TIME(maximal_backoff_time_ms), "4000s",
            "Longest retry delay"),
    SETTING("max_queue_lifetime", TIME(max_queue_lifetime_ms), "5d",
            "Age after which undeliverable mail is bounced (5.4.7)"),
    SETTING("delay_warning_time", TIME(delay_warning_time_ms), "0s",
            "Age after which a delay notice is sent; 0 = only when NOTIFY=DELAY asks"),
};

#define CONFIG_NSETTINGS (sizeof config_table / sizeof config_table[0])

/* ------------------------------------------------------------------ text */

static bool
config_is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v';
}

/* Trims white space at both ends of s[0..*len); returns the new start. */
static const char *
config_trim(const char *s, size_t *len)
{
    size_t n = *len;

    while (n > 0 && config_is_space(*s)) {
        s++;
        n--;
    }
    while (n > 0 && config_is_space(s[n - 1]))
        n--;
    *len = n;
    return s;
}

/* A growing string for config_format. */
struct config_buf {
    char *p;
    size_t len, cap;
};

static void
config_buf_add(struct config_buf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        while (b->len + n + 1 > b->cap)
            b->cap = b->cap ? b->cap * 2 : 1024;
        b->p = xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void
config_buf_str(struct config_buf *b, const char *s)
{
    config_buf_add(b, s, strlen(s));
}

/* ------------------------------------------------------------ value parsers */

/* Reads one or more decimal digits at *p into *out; -1 on none or overflow. */
static int
config_digits(const char **p, uint64_t *out)
{
    const char *s = *p;
    uint64_t v = 0;

    if (*s < '0' || *s > '9')
        return -1;
    for (; *s >= '0' && *s <= '9'; s++) {
        unsigned d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *p = s;
    *out = v;
    return 0;
}

int
config_parse_size(const char *text, uint64_t *out)
{
    const char *p = text;
    uint64_t v, unit = 1;

    if (config_digits(&p, &v) < 0)
        return -1;
    switch (*p) {
    case '\0':
        break;
    case 'k': case 'K': unit = KIB; p++; break;
    case 'm': case 'M': unit = MIB; p++; break;
    case 'g': case 'G': unit = GIB; p++; break;
    default:
        return -1;
    }
    if (*p != '\0' || v > UINT64_MAX / unit)
        return -1;
    *out = v * unit;
    return 0;
}

int
config_parse_time_ms(const char *text, uint64_t *out)
{
    static const struct {
        const char *suffix;
        uint64_t ms;
    } units[] = {
        {"", 1000}, {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000},
    };
    const char *p = text;
    uint64_t v;

    if (config_digits(&p, &v) < 0)
        return -1;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(p, units[i].suffix) != 0)
            continue;
        if (v > UINT64_MAX / units[i].ms)
            return -1;
        *out = v * units[i].ms;
        return 0;
    }
    return -1;
}

int
config_parse_bool(const char *text, bool *out)
{
    static const char *const yes[] = {"yes", "true", "1"};
    static const char *const no[] = {"no", "false", "0"};

    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (strcasecmp(text, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(text, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -1;
}

/* Index of word in a NULL-terminated list, case-insensitive; -1 if absent. */
static int
config_choice(const char *const *choices, const char *word)
{
    for (int i = 0; choices[i] != NULL; i++)
        if (strcasecmp(choices[i], word) == 0)
            return i;
    return -1;
}

static int
config_nchoices(const char *const *choices)
{
    int n = 0;

    while (choices[n] != NULL)
        n++;
    return n;
}

/* ----------------------------------------------------------------- listen */

static const char *const config_kind_words[] = {
    [LISTENER_SMTP] = "smtp",
    [LISTENER_SUBMISSION] = "submission",
    [LISTENER_SUBMISSIONS] = "submissions",
    NULL,
};

/*
 * "(cert=FILE,key=FILE)": the options of one listener, the rest of its item.
 */
static int
config_parse_endpoint_options(const char *p, struct listen_endpoint *ep, char *why,
                              size_t whysize)
{
    p++;   /* '(' */
    for (;;) {
        size_t len = strcspn(p, ",)");
        const char *eq = memchr(p, '=', len);
        char *dst = NULL;
        if (eq != NULL && (size_t)(eq - p) == 4 && strncmp(p, "cert", 4) == 0)
            dst = ep->tls_cert_file;
        else if (eq != NULL && (size_t)(eq - p) == 3 && strncmp(p, "key", 3) == 0)
            dst = ep->tls_key_file;
        if (dst == NULL) {
            snprintf(why, whysize, "unknown listener option '%.*s'; expected cert=FILE or "
                     "key=FILE", (int)(len > 40 ? 40 : len), p);
            return -1;
        }
        size_t vlen = len - (size_t)(eq + 1 - p);
        if (vlen == 0 || vlen >= CONFIG_PATH_MAX) {
            snprintf(why, whysize, "listener option '%.*s' needs a file name",
                     (int)(eq - p), p);
            return -1;
        }
        memcpy(dst, eq + 1, vlen);
        dst[vlen] = '\0';
        p += len;
        if (*p == ')')
            break;
        if (*p != ',') {
            snprintf(why, whysize, "missing ')' after the listener options");
            return -1;
        }
        p++;
    }
    if (p[1] != '\0') {
        snprintf(why, whysize, "unexpected text after ')'");
        return -1;
    }
    return 0;
}

/*
 * Parses one "ADDR:PORT[/kind][(options)]" item (NUL-terminated). On error fills why with
 * the reason, without the "bad value" frame, and returns -1.
 */
static int
config_parse_endpoint(const char *item, struct listen_endpoint *ep, char *why,
                      size_t whysize)
{
    const char *host = item, *hostend, *p, *slash;
    unsigned char addr[16];
    uint64_t port;
    size_t hostlen;
    int kind = LISTENER_SMTP;
    bool v6 = false;

    if (*item == '[') {
        host = item + 1;
        hostend = strchr(host, ']');
        if (hostend == NULL) {
            snprintf(why, whysize, "missing ']' after the IPv6 address");
            return -1;
        }
        v6 = true;
        p = hostend + 1;
        if (*p != ':') {
            snprintf(why, whysize, "expected ':PORT' after ']'");
            return -1;
        }
    } else {
        hostend = strchr(item, ':');
        if (hostend == NULL) {
            snprintf(why, whysize, "expected ADDR:PORT");
            return -1;
        }
        p = hostend;
        const char *second = strchr(hostend + 1, ':');
        if (second != NULL && second < hostend + 1 + strcspn(hostend + 1, "/(")) {
            snprintf(why, whysize, "an IPv6 address needs brackets, like [::1]:25");
            return -1;
        }
    }
    hostlen = (size_t)(hostend - host);
    if (hostlen == 0 || hostlen >= sizeof ep->host) {
        snprintf(why, whysize, "expected ADDR:PORT");
        return -1;
    }
    memcpy(ep->host, host, hostlen);
    ep->host[hostlen] = '\0';
    /* Literals only: core/ does no DNS, and a listener must not depend on it. */
    if (inet_pton(v6 ? AF_INET6 : AF_INET, ep->host, addr) != 1) {
        snprintf(why, whysize, "'%s' is not an IP%s address", ep->host, v6 ? "v6" : "v4");
        return -1;
    }
    p++; /* the ':' */
    slash = strchr(p, '/');
    if (config_digits(&p, &port) < 0 || port < 1 || port > 65535
        || (*p != '\0' && p != slash && *p != '(')) {
        snprintf(why, whysize, "the port must be a number from 1 to 65535");
        return -1;
    }
    if (*p == '(' && config_parse_endpoint_options(p, ep, why, whysize) < 0)
        return -1;
    if (*p != '(' && slash != NULL) {
        char word[32];
        size_t wl = strcspn(slash + 1, "(");
        snprintf(word, sizeof word, "%.*s", (int)(wl < sizeof word ? wl : sizeof word - 1),
                 slash + 1);
        kind = wl < sizeof word ? config_choice(config_kind_words, word) : -1;
        if (kind >= 0 && slash[1 + wl] == '('
            && config_parse_endpoint_options(slash + 1 + wl, ep, why, whysize) < 0)
            return -1;
        if (kind < 0) {
            snprintf(why, whysize,
                     "unknown kind '/%.20s'; expected /smtp, /submission or /submissions",
                     slash + 1);
            return -1;
        }
    }
    ep->port = (uint16_t)port;
    ep->kind = (enum listener_kind)kind;
    return 0;
}

/* Parses the whole list; the result is owned by the caller (xfree). */
static int
config_parse_listen(const char *text, struct listen_endpoint **out, size_t *nout,
                    char *item, size_t itemsize, char *why, size_t whysize)
{
    struct listen_endpoint *eps = NULL;
    size_t n = 0;
    const char *p = text;

    for (;;) {
        size_t len;

        while (*p == ',' || config_is_space(*p))
            p++;
        if (*p == '\0')
            break;
        len = strcspn(p, ", \t\r\n\f\v(");
        if (p[len] == '(') {   /* listener options: up to the ')' */
            const char *close = strchr(p + len, ')');
            len = close != NULL ? (size_t)(close - p) + 1 : strlen(p);
        }
        snprintf(item, itemsize, "%.*s", (int)len, p);
        eps = xrealloc(eps, (n + 1) * sizeof *eps);
        memset(&eps[n], 0, sizeof eps[n]);
        if (len >= itemsize || config_parse_endpoint(item, &eps[n], why, whysize) < 0) {
            if (len >= itemsize)
                snprintf(why, whysize, "item too long");
            xfree(eps);
            return -1;
        }
        n++;
        p += len;
    }
    *out = eps;
    *nout = n;
    return 0;
}

static void
config_format_listen(struct config_buf *b, const struct config *cfg)
{
    char port[16];

    for (size_t i = 0; i < cfg->nlisten; i++) {
        const struct listen_endpoint *ep = &cfg->listen[i];
        bool v6 = strchr(ep->host, ':') != NULL;

        if (i > 0)
            config_buf_str(b, ", ");
        if (v6)
            config_buf_str(b, "[");
        config_buf_str(b, ep->host);
        snprintf(port, sizeof port, "%s:%u", v6 ? "]" : "", ep->port);
        config_buf_str(b, port);
        if (ep->kind != LISTENER_SMTP && (unsigned)ep->kind <= LISTENER_SUBMISSIONS) {
            config_buf_str(b, "/");
            config_buf_str(b, config_kind_words[ep->kind]);
        }
        if (ep->tls_cert_file[0] || ep->tls_key_file[0]) {
            if (ep->kind == LISTENER_SMTP)
                config_buf_str(b, "/smtp");
            config_buf_str(b, "(");
            if (ep->tls_cert_file[0]) {
                config_buf_str(b, "cert=");
                config_buf_str(b, ep->tls_cert_file);
            }
            if (ep->tls_key_file[0]) {
                config_buf_str(b, ep->tls_cert_file[0] ? ",key=" : "key=");
                config_buf_str(b, ep->tls_key_file);
            }
            config_buf_str(b, ")");
        }
    }
}

/* ------------------------------------------------------------ row checks */

/* CIDR lists must parse here, so a typo fails with file:line at start-up. */
static int
config_check_networks(const char *value, char *why, size_t whysize)
{
    struct cidr_list list;

    if (cidr_list_parse(&list, value, why, whysize) < 0)
        return -1;
    cidr_list_free(&list);
    return 0;
}

/* ------------------------------------------------------------- the table */

static void *
config_field(struct config *cfg, const struct config_setting *s)
{
    return (char *)cfg + s->offset;
}

static const void *
config_cfield(const struct config *cfg, const struct config_setting *s)
{
    return (const char *)cfg + s->offset;
}

static const struct config_setting *
config_lookup(const char *key)
{
    for (size_t i = 0; i < CONFIG_NSETTINGS; i++)
        if (strcmp(config_table[i].key, key) == 0)
            return &config_table[i];
    return NULL;
}

/* A size as text: whole G or M get a suffix; K and bytes are left as bytes,
 * the way message_size_limit = 10240000 is usually written. */
static void
config_format_size(char *buf, size_t size, uint64_t v)
{
    if (v != 0 && v % GIB == 0)
        snprintf(buf, size, "%" PRIu64 "G", v / GIB);
    else if (v != 0 && v % MIB == 0)
        snprintf(buf, size, "%" PRIu64 "M", v / MIB);
    else
        snprintf(buf, size, "%" PRIu64, v);
}

static void
config_format_time(char *buf, size_t size, uint64_t ms)
{
    if (ms != 0 && ms % 86400000 == 0)
        snprintf(buf, size, "%" PRIu64 "d", ms / 86400000);   /* lifetimes read as days */
    else if (ms % 1000 == 0)
        snprintf(buf, size, "%" PRIu64 "s", ms / 1000);
    else
        snprintf(buf, size, "%" PRIu64 "ms", ms);
}

static void
config_format_number(const struct config_setting *s, char *buf, size_t size, uint64_t v)
{
    if (s->type == CONFIG_SIZE)
        config_format_size(buf, size, v);
    else if (s->type == CONFIG_TIME)
        config_format_time(buf, size, v);
    else
        snprintf(buf, size, "%" PRIu64, v);
}

/* What a good value looks like, for "bad value" messages. */
static void
config_hint(const struct config_setting *s, char *buf, size_t size)
{
    size_t o = 0;

    if (s->choices != NULL) {
        o = (size_t)snprintf(buf, size, "expected ");
        for (size_t i = 0; s->choices[i] != NULL && o < size; i++)
            o += (size_t)snprintf(buf + o, size - o, "%s%s",
                                  i == 0 ? "" : s->choices[i + 1] ? ", " : " or ",
                                  s->choices[i]);
        return;
    }
    switch (s->type) {
    case CONFIG_SIZE:
        snprintf(buf, size, "expected a size like 10M");
        break;
    case CONFIG_TIME:
        snprintf(buf, size, "expected a time like 30s, 5m or 500ms");
        break;
    case CONFIG_BOOL:
        snprintf(buf, size, "expected yes or no");
        break;
    case CONFIG_UINT:
        snprintf(buf, size, "expected a whole number");
        break;
    default:
        snprintf(buf, size, "not allowed here");
        break;
    }
}

static int
config_bad_value(const struct config_setting *s, const char *value, const char *why,
                 char *err, size_t errsize)
{
    char shown[128];

    log_escape(shown, sizeof shown, value, strlen(value));
    snprintf(err, errsize, "bad value for %s: '%s' (%s)", s->key, shown, why);
    return -1;
}

/* Checks a number against the row's limits; the type's own limit is typemax. */
static int
config_check_range(const struct config_setting *s, const char *value, uint64_t v,
                   uint64_t typemax, char *err, size_t errsize)
{
    uint64_t max = s->max != 0 && s->max < typemax ? s->max : typemax;
    char lo[32], hi[32], why[96];

    if (v >= s->min && v <= max)
        return 0;
    config_format_number(s, lo, sizeof lo, s->min);
    config_format_number(s, hi, sizeof hi, max);
    if (s->min == 0)
        snprintf(why, sizeof why, "must be at most %s", hi);
    else if (max == typemax)
        snprintf(why, sizeof why, "must be at least %s", lo);
    else
        snprintf(why, sizeof why, "must be between %s and %s", lo, hi);
    return config_bad_value(s, value, why, err, errsize);
}

/* Parses value (trimmed, NUL-terminated) into the row's field. */
static int
config_apply(struct config *cfg, const struct config_setting *s, const char *value,
             char *err, size_t errsize)
{
    void *field = config_field(cfg, s);
    char hint[96], item[2 * CONFIG_PATH_MAX + 160], why[128];
    uint64_t v;
    bool b;
    int i;

    switch (s->type) {
    case CONFIG_STRING:
        if (s->choices != NULL) {
            if ((i = config_choice(s->choices, value)) < 0)
                goto bad;
            value = s->choices[i];
        }
        /* A control character would not survive config_format (or a log line). */
        for (const char *p = value; *p; p++)
            if ((unsigned char)*p < 0x20 || *p == 0x7f)
                return config_bad_value(s, value, "control characters are not allowed",
                                        err, errsize);
        if (s->check != NULL && s->check(value, why, sizeof why) < 0)
            return config_bad_value(s, value, why, err, errsize);
        xfree(*(char **)field);
        *(char **)field = xstrdup(value);
        return 0;
    case CONFIG_SIZE:
    case CONFIG_TIME:
        if ((s->type == CONFIG_SIZE ? config_parse_size(value, &v)
                                    : config_parse_time_ms(value, &v)) < 0)
            goto bad;
        if (config_check_range(s, value, v, UINT64_MAX, err, errsize) < 0)
            return -1;
        *(uint64_t *)field = v;
        return 0;
    case CONFIG_UINT: {
        const char *p = value;

        if (config_digits(&p, &v) < 0 || *p != '\0') {
            /* A number too big for 64 bits is still a number: say so. */
            if (*value >= '0' && *value <= '9' && value[strspn(value, "0123456789")] == 0)
                v = UINT64_MAX;
            else
                goto bad;
        }
        if (config_check_range(s, value, v, UINT_MAX, err, errsize) < 0)
            return -1;
        *(unsigned *)field = (unsigned)v;
        return 0;
    }
    case CONFIG_BOOL:
        if (config_parse_bool(value, &b) < 0)
            goto bad;
        *(bool *)field = b;
        return 0;
    case CONFIG_ENUM:
        if ((i = config_choice(s->choices, value)) < 0)
            goto bad;
        *(int *)field = i;
        return 0;
    case CONFIG_LISTEN: {
        struct listen_endpoint *eps;
        size_t n;

        if (config_parse_listen(value, &eps, &n, item, sizeof item, why, sizeof why) < 0)
            return config_bad_value(s, item, why, err, errsize);
        xfree(cfg->listen);
        cfg->listen = eps;
        cfg->nlisten = n;
        return 0;
    }
    }
bad:
    config_hint(s, hint, sizeof hint);
    return config_bad_value(s, value, hint, err, errsize);
}

/* Appends the row's current value as text that config_apply accepts. */
static void
config_format_value(struct config_buf *b, const struct config *cfg,
                    const struct config_setting *s)
{
    const void *field = config_cfield(cfg, s);
    char num[32];
    int i;

    switch (s->type) {
    case CONFIG_STRING:
        if (*(char *const *)field != NULL)
            config_buf_str(b, *(char *const *)field);
        return;
    case CONFIG_SIZE:
    case CONFIG_TIME:
        config_format_number(s, num, sizeof num, *(const uint64_t *)field);
        break;
    case CONFIG_UINT:
        snprintf(num, sizeof num, "%u", *(const unsigned *)field);
        break;
    case CONFIG_BOOL:
        snprintf(num, sizeof num, "%s", *(const bool *)field ? "yes" : "no");
        break;
    case CONFIG_ENUM:
        i = *(const int *)field;
        if (i < 0 || i >= config_nchoices(s->choices))
            i = 0; /* not reachable through config_set */
        config_buf_str(b, s->choices[i]);
        return;
    case CONFIG_LISTEN:
        config_format_listen(b, cfg);
        return;
    }
    config_buf_str(b, num);
}

/* ------------------------------------------------------------------- API */

void
config_init(struct config *cfg)
{
    char err[256];

    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < CONFIG_NSETTINGS; i++) {
        if (config_apply(cfg, &config_table[i], config_table[i].default_text, err,
                         sizeof err) < 0) {
            /* A bad default is a bug in the table, found by the first test run. */
            fprintf(stderr, "ringmta: fatal: default of %s: %s\n", config_table[i].key,
                    err);
            abort();
        }
    }
}

void
config_free(struct config *cfg)
{
    for (size_t i = 0; i < CONFIG_NSETTINGS; i++) {
        char **field = config_field(cfg, &config_table[i]);

        if (config_table[i].type == CONFIG_STRING)
            *field = xfree(*field);
    }
    cfg->listen = xfree(cfg->listen);
    cfg->nlisten = 0;
}

int
config_set(struct config *cfg, const char *key, const char *value, char *err,
           size_t errsize)
{
    const struct config_setting *s = config_lookup(key);
    size_t len = strlen(value);
    const char *v = config_trim(value, &len);
    char *trimmed;
    int rc;

    if (s == NULL) {
        char shown[128];

        log_escape(shown, sizeof shown, key, strlen(key));
        snprintf(err, errsize, "unknown setting '%s'", shown);
        return -1;
    }
    trimmed = xstrndup(v, len);
    rc = config_apply(cfg, s, trimmed, err, errsize);
    xfree(trimmed);
    return rc;
}

int
config_set_assignment(struct config *cfg, const char *assignment, char *err,
                      size_t errsize)
{
    const char *eq = strchr(assignment, '=');
    size_t keylen;
    const char *key;
    char *k;
    int rc;

    keylen = eq ? (size_t)(eq - assignment) : 0;
    key = config_trim(assignment, &keylen);
    if (eq == NULL || keylen == 0) {
        char shown[128];

        log_escape(shown, sizeof shown, assignment, strlen(assignment));
        snprintf(err, errsize, "expected key=value, got '%s'", shown);
        return -1;
    }
    k = xstrndup(key, keylen);
    rc = config_set(cfg, k, eq + 1, err, errsize);
    xfree(k);
    return rc;
}

/* Applies one logical line "key = value" (NUL-terminated, trimmed). */
static int
config_parse_line(struct config *cfg, const char *line, const char *origin,
                  unsigned lineno, char *err, size_t errsize)
{
    const char *eq = strchr(line, '=');
    char msg[384];

    if (config_set_assignment(cfg, line, msg, sizeof msg) == 0)
        return 0;
    if (eq == NULL || eq == line) {
        char shown[128];

        log_escape(shown, sizeof shown, line, strlen(line));
        snprintf(msg, sizeof msg, "expected 'key = value', got '%s'", shown);
    }
    snprintf(err, errsize, "%s:%u: %s", origin, lineno, msg);
    return -1;
}

/*
 * main.cf rules (Postfix postconf(5)): blank lines and lines whose first
 * non-blank character is '#' are ignored; a line starting with white space
 * continues the logical line before it (joined with one space), even across
 * ignored lines. Errors name the line where the logical line starts.
 */
int
config_parse_text(struct config *cfg, const char *text, size_t len, const char *origin,
                  char *err, size_t errsize)
{
    struct config_buf logical = {0};
    const char *p = text, *end = text + len;
    unsigned lineno = 0, start = 0;
    int rc = 0;

    if (origin == NULL)
        origin = "(config)";
    while (p < end && rc == 0) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t linelen = nl ? (size_t)(nl - p) : (size_t)(end - p);
        bool continued = linelen > 0 && (*p == ' ' || *p == '\t');
        const char *body = p;
        size_t bodylen = linelen;

        lineno++;
        p += linelen + (nl != NULL);
        body = config_trim(body, &bodylen);
        if (memchr(body, '\0', bodylen) != NULL) {
            snprintf(err, errsize, "%s:%u: NUL byte in the line", origin, lineno);
            rc = -1;
        } else if (bodylen == 0 || *body == '#') {
            continue;
        } else if (continued) {
            if (logical.len == 0) {
                snprintf(err, errsize,
                         "%s:%u: line starts with white space but continues no setting",
                         origin, lineno);
                rc = -1;
            } else {
                config_buf_add(&logical, " ", 1);
                config_buf_add(&logical, body, bodylen);
            }
        } else {
            if (logical.len > 0)
                rc = config_parse_line(cfg, logical.p, origin, start, err, errsize);
            logical.len = 0;
            config_buf_add(&logical, body, bodylen);
            start = lineno;
        }
    }
    if (rc == 0 && logical.len > 0)
        rc = config_parse_line(cfg, logical.p, origin, start, err, errsize);
    xfree(logical.p);
    return rc;
}

int
config_check(const struct config *cfg, char *err, size_t errsize)
{
    if (cfg->nlisten == 0) {
        snprintf(err, errsize, "listen: no endpoint; set listen = ADDR:PORT");
        return -1;
    }
    for (size_t i = 0; i < cfg->nlisten; i++) {
        for (size_t j = 0; j < i; j++) {
            if (cfg->listen[i].port == cfg->listen[j].port
                && strcmp(cfg->listen[i].host, cfg->listen[j].host) == 0) {
                snprintf(err, errsize, "listen: %s port %u is listed twice",
                         cfg->listen[i].host, cfg->listen[i].port);
                return -1;
            }
        }
    }
    if (cfg->smtpd_soft_error_limit > cfg->smtpd_hard_error_limit) {
        snprintf(err, errsize, "smtpd_soft_error_limit (%u) must not exceed "
                 "smtpd_hard_error_limit (%u)",
                 cfg->smtpd_soft_error_limit, cfg->smtpd_hard_error_limit);
        return -1;
    }
    if (cfg->spool_dir == NULL || cfg->spool_dir[0] == '\0') {
        snprintf(err, errsize, "spool_dir must not be empty");
        return -1;
    }
    return 0;
}

char *
config_format(const struct config *cfg)
{
    struct config_buf b = {0};

    for (size_t i = 0; i < CONFIG_NSETTINGS; i++) {
        size_t before;

        config_buf_str(&b, config_table[i].key);
        config_buf_str(&b, " = ");
        before = b.len;
        config_format_value(&b, cfg, &config_table[i]);
        if (b.len == before)
            b.p[--b.len] = '\0'; /* "key =" rather than a trailing blank */
        config_buf_str(&b, "\n");
    }
    return b.p;
}

static struct config_doc config_doc_table[CONFIG_NSETTINGS];
static pthread_once_t config_doc_once = PTHREAD_ONCE_INIT;

static void
config_doc_init(void)
{
    for (size_t i = 0; i < CONFIG_NSETTINGS; i++) {
        config_doc_table[i].key = config_table[i].key;
        config_doc_table[i].default_text = config_table[i].default_text;
        config_doc_table[i].description = config_table[i].description;
    }
}

const struct config_doc *
config_docs(size_t *count)
{
    pthread_once(&config_doc_once, config_doc_init);
    *count = CONFIG_NSETTINGS;
    return config_doc_table;
}
