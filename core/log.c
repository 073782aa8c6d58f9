/*
 * log - leveled log lines: filter, format into a stack buffer, hand to the sink.
 *
 * Any thread, no locks, no allocation. The level and the sink are set once at
 * start-up (before workers exist) and read with relaxed atomics afterwards, so
 * a late change is harmless but not ordered with anything else.
 * Invariants: a line handed to the sink is at most LOG_LINE_MAX - 1 bytes,
 * contains no CR or LF, and is NUL-terminated at line[len].
 * Hazard: the default sink uses stdio (one fprintf per line, which stdio
 * locks); the daemon replaces it with io/logsink.c.
 */
#include "log.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

/* The formatted text including its NUL; longer messages end in "...". */
#define LOG_LINE_MAX 2048

static const char *const log_level_names[] = {
    [LOG_ERROR] = "error",
    [LOG_WARN] = "warn",
    [LOG_INFO] = "info",
    [LOG_DEBUG] = "debug",
};

static void log_sink_stderr(enum log_level level, const char *line, size_t len);

static _Atomic int log_level = LOG_INFO;
static log_sink_fn *_Atomic log_sink = log_sink_stderr;

/* Default sink: "level: text" on stderr, no timestamp (tools and tests). */
static void
log_sink_stderr(enum log_level level, const char *line, size_t len)
{
    fprintf(stderr, "%s: %.*s\n", log_level_name(level), (int)len, line);
}

void
log_set_sink(log_sink_fn *sink)
{
    atomic_store_explicit(&log_sink, sink ? sink : log_sink_stderr,
                          memory_order_relaxed);
}

void
log_set_level(enum log_level level)
{
    if ((int)level < LOG_ERROR)
        level = LOG_ERROR;
    if (level > LOG_DEBUG)
        level = LOG_DEBUG;
    atomic_store_explicit(&log_level, (int)level, memory_order_relaxed);
}

enum log_level
log_get_level(void)
{
    return (enum log_level)atomic_load_explicit(&log_level, memory_order_relaxed);
}

int
log_level_parse(const char *name)
{
    for (size_t i = 0; i < sizeof log_level_names / sizeof log_level_names[0]; i++)
        if (strcmp(name, log_level_names[i]) == 0)
            return (int)i;
    return -1;
}

const char *
log_level_name(enum log_level level)
{
    if ((int)level < LOG_ERROR || level > LOG_DEBUG)
        return "unknown";
    return log_level_names[level];
}

void
log_msg(enum log_level level, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    log_vmsg(level, fmt, ap);
    va_end(ap);
}

/* Formats one line and passes it to the sink unless the level filters it. */
void
log_vmsg(enum log_level level, const char *fmt, va_list ap)
{
    char line[LOG_LINE_MAX];
    size_t len;
    int n;

    if ((int)level > atomic_load_explicit(&log_level, memory_order_relaxed))
        return;
    n = vsnprintf(line, sizeof line, fmt, ap);
    if (n < 0) {
        n = snprintf(line, sizeof line, "(bad log format: %s)", fmt);
        if (n < 0)
            return;
    }
    if ((size_t)n >= sizeof line) {
        len = sizeof line - 1;
        memcpy(line + len - 3, "...", 3);
    } else {
        len = (size_t)n;
    }
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
        line[--len] = '\0';
    /* One record is one line: a stray newline inside would let a message
     * forge the next record, so it becomes a space. */
    for (size_t i = 0; i < len; i++)
        if (line[i] == '\n' || line[i] == '\r')
            line[i] = ' ';
    atomic_load_explicit(&log_sink, memory_order_relaxed)(level, line, len);
}

/* Writes the escape of byte c into unit; returns its length (1, 2 or 4). */
static size_t
log_escape_unit(unsigned char c, char unit[4])
{
    static const char hex[] = "0123456789abcdef";

    if (c == '\\') {
        unit[0] = '\\';
        unit[1] = '\\';
        return 2;
    }
    if (c >= 0x20 && c <= 0x7e) {
        unit[0] = (char)c;
        return 1;
    }
    unit[0] = '\\';
    unit[1] = 'x';
    unit[2] = hex[c >> 4];
    unit[3] = hex[c & 0xf];
    return 4;
}

/*
 * Escapes untrusted bytes for a log line. Whole escapes only: a truncated
 * result never ends in half of "\xHH", and "..." marks that bytes were lost.
 */
char *
log_escape(char *out, size_t outsize, const void *in, size_t inlen)
{
    const unsigned char *p = in;
    char unit[4];
    size_t need = 0, budget, o = 0, ulen, dots;

    if (outsize == 0)
        return out;
    for (size_t i = 0; i < inlen; i++)
        need += log_escape_unit(p[i], unit);
    budget = outsize - 1;
    dots = 0;
    if (need > budget) {
        /* Does not fit: reserve room for "..." (or what of it fits). */
        dots = budget < 3 ? budget : 3;
        budget -= dots;
    }
    for (size_t i = 0; i < inlen; i++) {
        ulen = log_escape_unit(p[i], unit);
        if (o + ulen > budget)
            break;
        memcpy(out + o, unit, ulen);
        o += ulen;
    }
    memcpy(out + o, "...", dots);
    out[o + dots] = '\0';
    return out;
}
