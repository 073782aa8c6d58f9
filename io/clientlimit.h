/*
 * clientlimit - per-client-IP connection counts and rates, and the global
 * connection budget (Postfix's anvil, in-process).
 *
 * Shared by all workers: a fixed table of stripes, each a mutex over a small
 * chained hash; the critical section is a few loads and stores. Counting is
 * exact (no hash-collision false positives).
 */
#ifndef RINGMTA_IO_CLIENTLIMIT_H
#define RINGMTA_IO_CLIENTLIMIT_H

#include <stdbool.h>
#include <stdint.h>

#include "netaddr.h"

enum clientlimit_verdict {
    CLIENTLIMIT_OK = 0,
    CLIENTLIMIT_TOO_MANY_FROM_CLIENT,   /* 421 4.7.0 */
    CLIENTLIMIT_TOO_FAST,               /* 421 4.7.0 */
    CLIENTLIMIT_TOO_MANY_TOTAL,         /* 421 4.3.2 */
};

struct clientlimit;

/* Limits of 0 mean "no limit". rate_limit is per 60 s. */
struct clientlimit *clientlimit_new(unsigned per_client, unsigned rate_limit,
                                    unsigned total);
struct clientlimit *clientlimit_free(struct clientlimit *cl);
/* A connection arrived; on CLIENTLIMIT_OK the caller must call release (with
 * the same exempt flag) at close. On a refusal nothing is held. An exempt
 * client (smtpd_client_event_limit_exceptions) counts only toward the global
 * budget. */
enum clientlimit_verdict clientlimit_acquire(struct clientlimit *cl, const struct netaddr *a,
                                             uint64_t now_ms, bool exempt);
void clientlimit_release(struct clientlimit *cl, const struct netaddr *a, bool exempt);

/*
 * Failed AUTH attempts per client address (smtpd_client_auth_failure_limit
 * per minute; 0 = none). Nobody is exempt: trusted networks do not need to
 * guess passwords. auth_allowed says whether a client may try again now;
 * auth_failed counts one failure and says whether the client is now over.
 */
void clientlimit_set_auth_failure_limit(struct clientlimit *cl, unsigned per_minute);
bool clientlimit_auth_allowed(struct clientlimit *cl, const struct netaddr *a, uint64_t now_ms);
bool clientlimit_auth_failed(struct clientlimit *cl, const struct netaddr *a, uint64_t now_ms);

#endif
