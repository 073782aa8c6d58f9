/*
 * settings - builds the configuration the way every ringmta program does:
 * the embedded defaults, then -c FILE (if given), then each -o key=value in
 * order (later wins), then the cross-setting checks.
 *
 * Start-up only (reads the file with stdio). Shared by ringmta and
 * ringmta-ctl so both agree on spool_dir and the rest.
 */
#ifndef RINGMTA_IO_SETTINGS_H
#define RINGMTA_IO_SETTINGS_H

#include <stddef.h>

#include "config.h"

/* Returns 0, or -1 after printing "PROG: reason" to stderr. */
int settings_load(struct config *cfg, const char *prog, const char *file,
                  char *const *overrides, size_t noverrides);

#endif
