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

#include <stdbool.h>
#include <stddef.h>

#include "config.h"

/* Returns 0, or -1 after printing "PROG: reason" to stderr. */
int settings_load(struct config *cfg, const char *prog, const char *file,
                  char *const *overrides, size_t noverrides);

/* Reads a whole file (start-up only); NULL with errno set on failure.
 * Result owned by the caller. */
char *settings_read_file(const char *path, size_t *len);

/* Loads the routing files and relayhost named by the settings into d-style
 * outputs: transport_map, destination_policy and smtp_sasl_password_file
 * (NULL when not set).
 * Returns 0, or -1 after printing "PROG: reason" to stderr. */
struct route_table;
struct route_policy;
struct route_credentials;
struct route_hop;
int settings_load_routes(const struct config *cfg, const char *prog,
                         struct route_table **transport, struct route_policy **policy,
                         struct route_credentials **credentials, struct route_hop *relayhost,
                         bool *relayhost_set);

#endif
