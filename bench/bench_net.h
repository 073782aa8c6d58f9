/*
 * bench_net - socket addresses and options for the bench tools.
 * Any thread; no state.
 */
#ifndef RINGMTA_BENCH_NET_H
#define RINGMTA_BENCH_NET_H

#include <sys/socket.h>

/*
 * Parses "host:port" or "[v6]:port" (numeric hosts and "localhost" only: the
 * tools measure, they do not resolve). Returns 0 or -EINVAL.
 */
int bench_net_parse(const char *text, struct sockaddr_storage *ss, socklen_t *len);
/* Sets TCP_NODELAY: pipelined replies must not wait for Nagle. */
void bench_net_nodelay(int fd);

#endif
