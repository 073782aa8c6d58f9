/*
 * sink_parse - resumable SMTP input machine for the sink (see sink_parse.h).
 *
 * Per connection, never shared. Invariant: the parser never looks at a byte
 * twice and never needs more than one byte of look-behind, which it keeps in
 * data_state; so input may be split anywhere. Body bytes are passed on in runs
 * (one callback per contiguous stretch of input), not byte by byte.
 */
#include "sink_parse.h"

#include <string.h>
#include <strings.h>

/* States of the DATA body machine. */
enum {
    DATA_BOL,    /* at the start of a line */
    DATA_MID,    /* inside a line */
    DATA_CR,     /* just after a CR (emitted) */
    DATA_DOT,    /* a '.' at the start of a line (held, not emitted) */
    DATA_DOT_CR, /* ".\r" at the start of a line (both held) */
};

void
sink_parse_init(struct sink_parse *p, sink_parse_body_fn *body, void *ctx)
{
    memset(p, 0, sizeof(*p) - sizeof(p->line));
    p->line[0] = '\0';
    p->mode = SINK_PARSE_MODE_COMMAND;
    p->body = body;
    p->body_ctx = ctx;
}

void
sink_parse_start_data(struct sink_parse *p)
{
    p->mode = SINK_PARSE_MODE_DATA;
    p->data_state = DATA_BOL; /* the DATA command's CRLF starts the first line */
    p->body_bytes = 0;
}

void
sink_parse_start_bdat(struct sink_parse *p, uint64_t size)
{
    p->mode = SINK_PARSE_MODE_BDAT;
    p->chunk_left = size;
    p->body_bytes = 0;
}

static void
parse_emit(struct sink_parse *p, const char *bytes, size_t n)
{
    if (n == 0)
        return;
    p->body_bytes += n;
    if (p->body != NULL)
        p->body(p->body_ctx, bytes, n);
}

/* Title: one command line, collected across calls up to its LF. */
static enum sink_parse_event
parse_command(struct sink_parse *p, const char *in, size_t len, size_t *used)
{
    const char *lf = memchr(in, '\n', len);
    size_t take = lf ? (size_t)(lf - in) + 1 : len;
    size_t add = lf ? take - 1 : take;

    *used = take;
    if (!p->overflow) {
        if (p->line_len + add > SINK_PARSE_LINE_MAX) {
            p->overflow = true;
        } else {
            memcpy(p->line + p->line_len, in, add);
            p->line_len += add;
        }
    }
    if (lf == NULL)
        return SINK_PARSE_AGAIN;
    if (p->overflow) {
        p->overflow = false;
        p->line_len = 0;
        p->line[0] = '\0';
        return SINK_PARSE_TOO_LONG;
    }
    /* RFC 5321 2.3.8: lines end in CRLF; a bare LF is tolerated here. */
    if (p->line_len > 0 && p->line[p->line_len - 1] == '\r')
        p->line_len--;
    p->line[p->line_len] = '\0';
    p->line_ready = true;
    return SINK_PARSE_LINE;
}

/*
 * Title: the DATA body, un-stuffed.
 * RFC 5321 4.5.2: "If the first character is a period and there are other
 * characters on the line, the first character is deleted." A line holding only
 * "." ends the data; the CRLF before it belongs to the message.
 */
static enum sink_parse_event
parse_data(struct sink_parse *p, const char *in, size_t len, size_t *used)
{
    const char *s = in, *end = in + len, *run = in;
    unsigned st = p->data_state;

    while (s < end) {
        switch (st) {
        case DATA_MID: {
            const char *cr = memchr(s, '\r', (size_t)(end - s));
            if (cr == NULL) {
                s = end;
            } else {
                s = cr + 1;
                st = DATA_CR;
            }
            break;
        }
        case DATA_CR: {
            char c = *s++;
            st = c == '\n' ? DATA_BOL : c == '\r' ? DATA_CR : DATA_MID;
            break;
        }
        case DATA_BOL:
            if (*s == '.') {
                parse_emit(p, run, (size_t)(s - run));
                run = ++s; /* the dot is held: stuffing or terminator */
                st = DATA_DOT;
            } else {
                st = *s++ == '\r' ? DATA_CR : DATA_MID;
            }
            break;
        case DATA_DOT:
            if (*s == '\r') {
                run = ++s; /* hold the CR too */
                st = DATA_DOT_CR;
            } else {
                s++; /* the dot was stuffing: dropped; this byte is body */
                st = DATA_MID;
            }
            break;
        case DATA_DOT_CR:
            if (*s == '\n') {
                s++;
                p->mode = SINK_PARSE_MODE_COMMAND;
                p->data_state = DATA_BOL;
                *used = (size_t)(s - in);
                return SINK_PARSE_DATA_END;
            }
            /* ".\r<x>": the dot was stuffing, the held CR is body. */
            parse_emit(p, "\r", 1);
            st = DATA_CR;
            break;
        }
    }
    parse_emit(p, run, (size_t)(s - run));
    p->data_state = st;
    *used = len;
    return SINK_PARSE_AGAIN;
}

enum sink_parse_event
sink_parse_feed(struct sink_parse *p, const char *in, size_t len, size_t *used)
{
    switch (p->mode) {
    case SINK_PARSE_MODE_DATA:
        return parse_data(p, in, len, used);
    case SINK_PARSE_MODE_BDAT: {
        size_t take = len;
        if ((uint64_t)take > p->chunk_left)
            take = (size_t)p->chunk_left;
        parse_emit(p, in, take);
        p->chunk_left -= take;
        *used = take;
        if (p->chunk_left > 0)
            return SINK_PARSE_AGAIN;
        p->mode = SINK_PARSE_MODE_COMMAND;
        return SINK_PARSE_CHUNK_END;
    }
    case SINK_PARSE_MODE_COMMAND:
    default:
        break;
    }
    if (p->line_ready) {
        p->line_ready = false;
        p->line_len = 0;
    }
    if (len == 0) {
        *used = 0;
        return SINK_PARSE_AGAIN;
    }
    return parse_command(p, in, len, used);
}

/* Argument shapes for the command table. */
#define CMD_ARG_NONE     0x1 /* trailing text is a syntax error */
#define CMD_ARG_REQUIRED 0x2 /* missing argument is a syntax error */

static const struct {
    const char *name;
    size_t len;
    enum sink_verb verb;
    unsigned flags;
} parse_cmd_table[] = {
    /* RFC 5321 4.1.1.1: "EHLO" SP ( Domain / address-literal ) CRLF */
    {"EHLO", 4, SINK_VERB_EHLO, CMD_ARG_REQUIRED},
    {"HELO", 4, SINK_VERB_HELO, CMD_ARG_REQUIRED},
    /* RFC 5321 4.1.1.2: "MAIL FROM:" Reverse-path [SP Mail-parameters] CRLF */
    {"MAIL", 4, SINK_VERB_MAIL, CMD_ARG_REQUIRED},
    /* RFC 5321 4.1.1.3: "RCPT TO:" ( ... Forward-path ) [SP Rcpt-parameters] CRLF */
    {"RCPT", 4, SINK_VERB_RCPT, CMD_ARG_REQUIRED},
    /* RFC 5321 4.1.1.4: data = "DATA" CRLF */
    {"DATA", 4, SINK_VERB_DATA, CMD_ARG_NONE},
    /* RFC 3030 4: bdat-cmd ::= "BDAT" SP chunk-size [ SP end-marker ] CR LF */
    {"BDAT", 4, SINK_VERB_BDAT, CMD_ARG_REQUIRED},
    {"RSET", 4, SINK_VERB_RSET, CMD_ARG_NONE},
    /* RFC 5321 4.1.1.9: noop = "NOOP" [ SP String ] CRLF */
    {"NOOP", 4, SINK_VERB_NOOP, 0},
    {"QUIT", 4, SINK_VERB_QUIT, CMD_ARG_NONE},
    {"VRFY", 4, SINK_VERB_VRFY, CMD_ARG_REQUIRED},
    {"HELP", 4, SINK_VERB_HELP, 0},
    {"STARTTLS", 8, SINK_VERB_STARTTLS, CMD_ARG_NONE},
};

const char *
sink_parse_verb_name(enum sink_verb verb)
{
    for (size_t i = 0; i < sizeof(parse_cmd_table) / sizeof(parse_cmd_table[0]); i++)
        if (parse_cmd_table[i].verb == verb)
            return parse_cmd_table[i].name;
    return "?";
}

/* Title: decimal digits to uint64, rejecting empty, junk and overflow. */
static bool
parse_u64(const char *s, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    if (n == 0 || n > 19)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *out = v;
    return true;
}

/*
 * Title: "FROM:<path> params" / "TO:<path> params".
 * Tolerates a space after the colon (common, though not RFC 5321 syntax).
 */
static enum sink_cmd_result
parse_path(struct sink_cmd *cmd, const char *prefix)
{
    size_t plen = strlen(prefix);
    const char *s = cmd->arg, *end = cmd->arg + cmd->arg_len;

    if (cmd->arg_len < plen || strncasecmp(s, prefix, plen) != 0)
        return SINK_CMD_SYNTAX;
    s += plen;
    while (s < end && *s == ' ')
        s++;
    if (s >= end || *s != '<')
        return SINK_CMD_SYNTAX;
    const char *gt = memchr(s, '>', (size_t)(end - s));
    if (gt == NULL)
        return SINK_CMD_SYNTAX;
    cmd->path = s + 1;
    cmd->path_len = (size_t)(gt - s - 1);
    s = gt + 1;
    /* Parameters: SP keyword[=value], only SIZE is looked at. */
    while (s < end) {
        if (*s != ' ')
            return SINK_CMD_SYNTAX;
        while (s < end && *s == ' ')
            s++;
        const char *word = s;
        while (s < end && *s != ' ')
            s++;
        size_t wlen = (size_t)(s - word);
        if (wlen > 5 && strncasecmp(word, "SIZE=", 5) == 0 &&
            !parse_u64(word + 5, wlen - 5, &cmd->mail_size))
            return SINK_CMD_SYNTAX;
    }
    return SINK_CMD_OK;
}

/* Title: "BDAT" SP chunk-size [ SP "LAST" ]. */
static enum sink_cmd_result
parse_bdat(struct sink_cmd *cmd)
{
    const char *s = cmd->arg, *end = cmd->arg + cmd->arg_len;
    const char *sp = memchr(s, ' ', cmd->arg_len);
    const char *num_end = sp ? sp : end;

    if (!parse_u64(s, (size_t)(num_end - s), &cmd->bdat_size))
        return SINK_CMD_SYNTAX;
    if (sp == NULL)
        return SINK_CMD_OK;
    s = sp;
    while (s < end && *s == ' ')
        s++;
    if ((size_t)(end - s) == 4 && strncasecmp(s, "LAST", 4) == 0) {
        cmd->bdat_last = true;
        return SINK_CMD_OK;
    }
    return SINK_CMD_SYNTAX;
}

enum sink_cmd_result
sink_parse_command(const char *line, size_t len, struct sink_cmd *cmd)
{
    memset(cmd, 0, sizeof(*cmd));
    cmd->verb = SINK_VERB_UNKNOWN;

    const char *sp = memchr(line, ' ', len);
    size_t vlen = sp ? (size_t)(sp - line) : len;
    size_t i;
    for (i = 0; i < sizeof(parse_cmd_table) / sizeof(parse_cmd_table[0]); i++)
        if (parse_cmd_table[i].len == vlen && strncasecmp(parse_cmd_table[i].name, line, vlen) == 0)
            break;
    if (i == sizeof(parse_cmd_table) / sizeof(parse_cmd_table[0]))
        return SINK_CMD_UNKNOWN;

    cmd->verb = parse_cmd_table[i].verb;
    if (sp != NULL) {
        cmd->arg = sp + 1;
        cmd->arg_len = len - vlen - 1;
        /* Trailing spaces are not an argument. */
        while (cmd->arg_len > 0 && cmd->arg[cmd->arg_len - 1] == ' ')
            cmd->arg_len--;
    } else {
        cmd->arg = line + len;
        cmd->arg_len = 0;
    }
    unsigned flags = parse_cmd_table[i].flags;
    if ((flags & CMD_ARG_NONE) && cmd->arg_len > 0)
        return SINK_CMD_SYNTAX;
    if ((flags & CMD_ARG_REQUIRED) && cmd->arg_len == 0)
        return SINK_CMD_SYNTAX;

    switch (cmd->verb) {
    case SINK_VERB_MAIL:
        return parse_path(cmd, "FROM:");
    case SINK_VERB_RCPT:
        return parse_path(cmd, "TO:");
    case SINK_VERB_BDAT:
        return parse_bdat(cmd);
    default:
        return SINK_CMD_OK;
    }
}
