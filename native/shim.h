/* The hot path of ouring, in C so that Python makes one foreign call to prepare
 * an SQE and one to submit a batch and reap the CQEs that are ready.
 *
 * Who owns what: `struct ouring` is malloc'ed here and freed only by
 * ouring_exit(). Memory that SQEs point at (buffers, paths, sockaddrs, statx
 * structs, iovecs) is owned by the Python operation objects, never by this file.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>
#include <liburing.h>

/* Opcodes newer than liburing 2.3's header (Debian 12). Their numbers are
 * kernel ABI; whether this kernel has them is decided by the probe. */
#define OURING_OP_FTRUNCATE 55 /* Linux 6.9 */
#define OURING_PROBE_OPS 256   /* io_uring_get_probe_ring() sizes its probe for 256 ops */

struct ouring {
    struct io_uring ring;
    unsigned setup_flags;
    unsigned features;
    /* With IORING_SETUP_DEFER_TASKRUN, completions are only posted when this
     * task enters the kernel, so polling the ring fd misses them: the kernel
     * signals a registered eventfd when it queues task work instead. -1 otherwise. */
    int event_fd;
};

/* Prepare one SQE. The per-opcode field meanings follow liburing's
 * io_uring_prep_* helpers: `off` doubles as addr2 (accept's addrlen pointer,
 * statx's buffer), `op_flags` is the union of rw/msg/accept/open/statx/fsync/
 * cancel flags. Returns -EBUSY when the SQ is full: nothing was written. */
static inline int ouring_prep(struct ouring *o, int opcode, int fd, const void *addr,
                       uint32_t len, uint64_t off, uint32_t op_flags,
                       uint64_t user_data, uint8_t sqe_flags)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&o->ring);

    if (!sqe)
        return -EBUSY;
    io_uring_prep_rw(opcode, sqe, fd, addr, len, off);
    sqe->rw_flags = (int)op_flags;
    sqe->flags = sqe_flags;
    sqe->user_data = user_data;
    return 0;
}
