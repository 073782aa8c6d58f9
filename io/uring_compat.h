/*
 * uring_compat - helpers newer liburing versions have and Debian 12's 2.3
 * lacks. Each is a thin wrapper over the raw system call the kernel has had
 * for years; drop them when the minimum liburing grows.
 */
#ifndef RINGMTA_IO_URING_COMPAT_H
#define RINGMTA_IO_URING_COMPAT_H

#include <errno.h>
#include <liburing.h>
#include <sys/mman.h>
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

/* io_uring_setup_buf_ring() (liburing 2.4): map a provided-buffer ring of
 * `entries` slots (a power of two) and register it as group bgid. Returns
 * the ring (initialised, empty) or NULL with *err = -errno. */
static inline struct io_uring_buf_ring *
uring_compat_setup_buf_ring(struct io_uring *ring, unsigned entries, int bgid, int *err)
{
    size_t bytes = entries * sizeof(struct io_uring_buf);
    void *mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (mem == MAP_FAILED) {
        *err = -errno;
        return NULL;
    }
    struct io_uring_buf_ring *br = mem;
    io_uring_buf_ring_init(br);
    struct io_uring_buf_reg reg = {
        .ring_addr = (uint64_t)(uintptr_t)mem,
        .ring_entries = entries,
        .bgid = (uint16_t)bgid,
    };
    int r = io_uring_register_buf_ring(ring, &reg, 0);
    if (r != 0) {
        munmap(mem, bytes);
        *err = r;
        return NULL;
    }
    return br;
}

#endif
