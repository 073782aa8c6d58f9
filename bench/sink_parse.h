/*
 * sink_parse - the sink's resumable SMTP input machine: command lines, DATA
 * bodies (dot-unstuffed, RFC 5321 4.5.2) and BDAT chunks (RFC 3030).
 *
 * Per connection, never shared. The state lives in struct sink_parse, so any
 * split of the input (one byte at a time, many pipelined commands at once) gives
 * the same events. Hard limit: a command line longer than SINK_PARSE_LINE_MAX is
 * discarded up to its LF and reported as SINK_PARSE_TOO_LONG.
 *
 * Body bytes go to the callback given at init (may be NULL to only count them);
 * the callback gets the un-stuffed body in pieces, the final ".\r\n" excluded,
 * and must copy what it keeps.
 */
#ifndef RINGMTA_BENCH_SINK_PARSE_H
#define RINGMTA_BENCH_SINK_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* RFC 5321 4.5.3.1.4: 512 octets per command line; we allow room for extensions. */
#define SINK_PARSE_LINE_MAX 2048

enum sink_parse_mode {
    SINK_PARSE_MODE_COMMAND,
    SINK_PARSE_MODE_DATA,
    SINK_PARSE_MODE_BDAT,
};

enum sink_parse_event {
    SINK_PARSE_AGAIN,     /* input used up, no event: feed more */
    SINK_PARSE_LINE,      /* p->line holds one command line, CRLF stripped, NUL-terminated */
    SINK_PARSE_TOO_LONG,  /* a command line over the limit was discarded */
    SINK_PARSE_DATA_END,  /* "<CRLF>.<CRLF>" seen; back in command mode */
    SINK_PARSE_CHUNK_END, /* the BDAT chunk is complete; back in command mode */
};

typedef void sink_parse_body_fn(void *ctx, const char *bytes, size_t n);

struct sink_parse {
    enum sink_parse_mode mode;
    unsigned data_state;
    bool overflow;
    bool line_ready; /* line was returned; the next feed starts a new one */
    size_t line_len;
    uint64_t chunk_left;
    uint64_t body_bytes; /* un-stuffed body bytes since the last start_data/start_bdat */
    sink_parse_body_fn *body;
    void *body_ctx;
    char line[SINK_PARSE_LINE_MAX + 1];
};

void sink_parse_init(struct sink_parse *p, sink_parse_body_fn *body, void *ctx);
/*
 * Consumes input up to and including the next event; *used says how much.
 * Call again with the rest until it returns SINK_PARSE_AGAIN.
 */
enum sink_parse_event sink_parse_feed(struct sink_parse *p, const char *in, size_t len,
                                      size_t *used);
/* After replying 354 to DATA: the following bytes are the message. */
void sink_parse_start_data(struct sink_parse *p);
/* After a BDAT command line: the next size bytes are the chunk (even if refused). */
void sink_parse_start_bdat(struct sink_parse *p, uint64_t size);

enum sink_verb {
    SINK_VERB_UNKNOWN,
    SINK_VERB_HELO,
    SINK_VERB_EHLO,
    SINK_VERB_MAIL,
    SINK_VERB_RCPT,
    SINK_VERB_DATA,
    SINK_VERB_BDAT,
    SINK_VERB_RSET,
    SINK_VERB_NOOP,
    SINK_VERB_QUIT,
    SINK_VERB_VRFY,
    SINK_VERB_HELP,
    SINK_VERB_STARTTLS,
};

/* A parsed command. Pointers point into the line given to sink_parse_command. */
struct sink_cmd {
    enum sink_verb verb;
    const char *arg;       /* text after the verb and one space (EHLO name, NOOP text) */
    size_t arg_len;
    const char *path;      /* MAIL/RCPT: the address inside <>, may be empty */
    size_t path_len;
    uint64_t mail_size;    /* MAIL SIZE= parameter, 0 when absent */
    uint64_t bdat_size;
    bool bdat_last;
};

enum sink_cmd_result {
    SINK_CMD_OK,
    SINK_CMD_SYNTAX,     /* known verb, bad arguments: reply 501 */
    SINK_CMD_UNKNOWN,    /* reply 500 */
};

/* Classifies one command line (no CRLF). cmd is filled even on SINK_CMD_SYNTAX. */
enum sink_cmd_result sink_parse_command(const char *line, size_t len, struct sink_cmd *cmd);
const char *sink_parse_verb_name(enum sink_verb verb);

#endif
