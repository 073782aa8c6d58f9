/*
 * logsink - formats a log record with time, pid and thread name and writes it
 * to fd 2 in a single write(2).
 *
 * Any thread, lock-free: the thread name is thread-local, the pid is written
 * once at install, and the calendar conversion is done here because glibc's
 * gmtime_r takes the time zone lock. One write(2) per line is what keeps lines
 * from different threads whole: a line is under PIPE_BUF (4096), so a write to
 * a pipe is atomic, and a file opened O_APPEND gets each line in one piece.
 * XXX: a short write (disk full, non-blocking tty) is not retried; retrying
 * would let another thread's line land inside ours.
 */
#include "logsink.h"

#include "log.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Prefix is at most ~90 bytes; the core caps the text at 2047. */
#define LOGSINK_LINE_MAX 2200

static _Thread_local char logsink_thread[16];
static int logsink_pid;

void
logsink_set_thread_name(const char *name)
{
    if (name == NULL)
        name = "";
    snprintf(logsink_thread, sizeof logsink_thread, "%s", name);
}

/* Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's algorithm). */
static void
logsink_civil(int64_t days, int *year, unsigned *month, unsigned *day)
{
    int64_t z = days + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;

    *day = doy - (153 * mp + 2) / 5 + 1;
    *month = mp < 10 ? mp + 3 : mp - 9;
    *year = (int)(yoe + era * 400 + (*month <= 2));
}

static void
logsink_write(enum log_level level, const char *line, size_t len)
{
    char buf[LOGSINK_LINE_MAX];
    struct timespec ts;
    int64_t secs, days, rem;
    int year, n;
    unsigned month, day;
    size_t o;
    ssize_t w;

    clock_gettime(CLOCK_REALTIME, &ts);
    secs = (int64_t)ts.tv_sec;
    days = secs / 86400;
    rem = secs % 86400;
    if (rem < 0) {
        rem += 86400;
        days--;
    }
    logsink_civil(days, &year, &month, &day);
    n = snprintf(buf, sizeof buf,
                 "%04d-%02u-%02uT%02d:%02d:%02d.%03ldZ ringmta[%d] %s %s: ", year, month,
                 day, (int)(rem / 3600), (int)(rem / 60 % 60), (int)(rem % 60),
                 ts.tv_nsec / 1000000, logsink_pid, log_level_name(level),
                 logsink_thread[0] ? logsink_thread : "main");
    if (n < 0)
        return;
    o = (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1;
    if (len > sizeof buf - 1 - o)
        len = sizeof buf - 1 - o;
    memcpy(buf + o, line, len);
    o += len;
    buf[o++] = '\n';
    do
        w = write(STDERR_FILENO, buf, o);
    while (w < 0 && errno == EINTR);
}

void
logsink_install(void)
{
    logsink_pid = (int)getpid();
    log_set_sink(logsink_write);
}
