/*
 * listener - listening sockets. Each worker opens its own socket per endpoint
 * with SO_REUSEPORT, so the kernel spreads connections across workers with no
 * shared accept queue and no lock.
 *
 * Called at start-up only (blocking system calls are fine there).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "worker.h"

int
listener_open(const struct listen_endpoint *ep, char *err, size_t errsize)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, ep->host, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons(ep->port);
        sl = sizeof *sin;
    } else if (inet_pton(AF_INET6, ep->host, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(ep->port);
        sl = sizeof *sin6;
    } else {
        snprintf(err, errsize, "listen: '%s' is not an IP address", ep->host);
        return -EINVAL;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errsize, "socket: %s", strerror(errno));
        return -errno;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    /* Inherited by accepted sockets: replies go out at once, never held
     * back by Nagle waiting for the client's delayed ACK. */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (ss.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, sl) != 0) {
        int e = errno;
        snprintf(err, errsize, "bind %s:%u: %s", ep->host, ep->port, strerror(e));
        close(fd);
        return -e;
    }
    if (listen(fd, 4096) != 0) {
        int e = errno;
        snprintf(err, errsize, "listen %s:%u: %s", ep->host, ep->port, strerror(e));
        close(fd);
        return -e;
    }
    return fd;
}
