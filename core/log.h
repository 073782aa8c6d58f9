/*
 * log - leveled log lines, formatted here, written by a sink io/ installs.
 *
 * Any thread. core/ reads no clock and writes no fd: log_msg() formats the
 * text and hands it to the sink (default: stderr with no timestamp). io/ sets a
 * sink that stamps the time and the worker and writes the line in one write(2),
 * so lines from several threads never interleave.
 * Attacker-controlled text must go through log_escape() before it is logged.
 */
#ifndef RINGMTA_CORE_LOG_H
#define RINGMTA_CORE_LOG_H

#include <stdarg.h>
#include <stddef.h>

enum log_level { LOG_ERROR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3 };

/* The sink receives one complete line without the trailing newline. */
typedef void log_sink_fn(enum log_level level, const char *line, size_t len);

void log_set_sink(log_sink_fn *sink);
void log_set_level(enum log_level level);
enum log_level log_get_level(void);
/* Parses "error", "warn", "info", "debug"; returns -1 for anything else. */
int log_level_parse(const char *name);
const char *log_level_name(enum log_level level);

void log_msg(enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void log_vmsg(enum log_level level, const char *fmt, va_list ap);

#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...)                                                                 \
    do {                                                                               \
        if (log_get_level() >= LOG_DEBUG)                                              \
            log_msg(LOG_DEBUG, __VA_ARGS__);                                           \
    } while (0)

/*
 * Copies in[0..inlen) to out as printable ASCII: bytes outside 0x20..0x7e and
 * the backslash become \xHH (\\ for backslash). Always NUL-terminates out
 * (outsize >= 1); truncates with "..." when out is too small. Returns out.
 */
char *log_escape(char *out, size_t outsize, const void *in, size_t inlen);

#endif
