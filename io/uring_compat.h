/*
 * uring_compat - helpers newer liburing versions have and Debian 12's 2.3
 * lacks. Each is a thin wrapper over the raw system call the kernel has had
 * for years; drop them when the minimum liburing grows.
 */
#ifndef RINGMTA_IO_URING_COMPAT_H
#define RINGMTA_IO_URING_COMPAT_H

#include <errno.h>
#include <liburing.h>
#include <sys/syscall.h>
#include <unistd.h>

/* io_uring_enable_rings() (liburing 2.4): enable an R_DISABLED ring from
 * the thread that will be its single issuer. Returns 0 or -errno. */
static inline int
uring_compat_enable_rings(struct io_uring *ring)
{
    long r = syscall(__NR_io_uring_register, ring->ring_fd, IORING_REGISTER_ENABLE_RINGS,
                     NULL, 0);
    return r < 0 ? -errno : 0;
}

#endif
