/*
 * logsink - the daemon's log sink: timestamped lines, one write(2) each, to fd 2.
 *
 * Any thread, lock-free. Line format:
 *   2026-11-29T18:00:00.123Z ringmta[PID] LEVEL THREAD: text
 * with the time in RFC 3339 UTC with milliseconds, LEVEL as log_level_name()
 * gives it, and THREAD the calling thread's name (default "main").
 */
#ifndef RINGMTA_IO_LOGSINK_H
#define RINGMTA_IO_LOGSINK_H

/* Installs the sink (log_set_sink) and records the process id. Call at start-up
 * and again in a forked child that keeps logging. */
void logsink_install(void);

/* Names the calling thread in its log lines, e.g. "worker3". The text is
 * copied (at most 15 bytes kept); NULL or "" restores "main". */
void logsink_set_thread_name(const char *name);

#endif
