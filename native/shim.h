/* What both native modules share: `struct ouring` and the inline helpers that
 * prepare one SQE and submit a batch while copying out the ready CQEs. The
 * ring core (ringcore.c, `ouring._ringcore`) calls those with the GIL held; the cffi
 * module (`ouring._native`) uses shim.c's setup, teardown and probe.
 *
 * Who owns what: `struct ouring` is malloc'ed by ouring_setup (shim.c) and freed only by
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
 * cancel flags; `ioprio`, `buf_index` and `file_index` are the SQE fields of those
 * names (file_index shares its place with splice_fd_in). Returns -EBUSY when the SQ is full: nothing was written. */
static inline int ouring_prep(struct ouring *o, int opcode, int fd, const void *addr,
                       uint32_t len, uint64_t off, uint32_t op_flags,
                       uint64_t user_data, uint8_t sqe_flags, uint16_t ioprio,
                       uint16_t buf_index, uint32_t file_index)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&o->ring);

    if (!sqe)
        return -EBUSY;
    io_uring_prep_rw(opcode, sqe, fd, addr, len, off);
    sqe->rw_flags = (int)op_flags;
    sqe->flags = sqe_flags;
    sqe->user_data = user_data;
    sqe->ioprio = ioprio;         /* recv/accept multishot, send_zc flags */
    sqe->buf_index = buf_index;   /* fixed buffer index, or buf_group with BUFFER_SELECT */
    sqe->splice_fd_in = (int32_t)file_index; /* splice's fd_in, or a fixed file slot */
    return 0;
}

static inline void ouring_drain_eventfd(struct ouring *o)
{
    uint64_t value;

    if (o->event_fd >= 0)
        while (read(o->event_fd, &value, sizeof(value)) == sizeof(value))
            ;
}

/* Submit what is in the SQ, optionally wait for `wait_nr` completions (bounded
 * by timeout_ns when it is >= 0), then copy up to `max` ready CQEs into the
 * caller's arrays and advance the CQ head past them.
 *
 * *submit_result receives io_uring_submit's result: the number submitted, or a
 * negative errno. -EBUSY/-EAGAIN mean the kernel wants CQEs reaped first (the
 * SQEs stay in the SQ and go with the next call); -EINTR is retried here.
 *
 * io_uring_for_each_cqe never flushes a CQ overflow list, and with
 * COOP/DEFER_TASKRUN completions may wait as task work: IORING_SQ_CQ_OVERFLOW
 * or IORING_SQ_TASKRUN in the SQ flags (or DEFER_TASKRUN itself) means an
 * io_uring_get_events() is needed before the CQ shows everything. */
static inline int ouring_submit_and_reap(struct ouring *o, unsigned wait_nr, long long timeout_ns,
                                  uint64_t *user_data, int32_t *res, uint32_t *flags,
                                  unsigned max, int *submit_result)
{
    struct io_uring *ring = &o->ring;
    struct io_uring_cqe *cqe;
    unsigned head, n = 0;
    int ret;

    if (wait_nr && timeout_ns >= 0) {
        struct __kernel_timespec ts;
        ts.tv_sec = timeout_ns / 1000000000LL;
        ts.tv_nsec = timeout_ns % 1000000000LL;
        /* -EINTR is returned, not retried: the caller runs the Python signal
         * handlers (Ctrl-C) and retries with what is left of its timeout. */
        ret = io_uring_submit_and_wait_timeout(ring, &cqe, wait_nr, &ts, NULL);
        if (ret == -ETIME)
            ret = 0;
    } else if (wait_nr) {
        ret = io_uring_submit_and_wait(ring, wait_nr);
    } else {
        do {
            ret = io_uring_submit(ring);
        } while (ret == -EINTR);
    }
    *submit_result = ret;
    if (max == 0)
        return 0;

    ouring_drain_eventfd(o);
    if ((o->setup_flags & IORING_SETUP_DEFER_TASKRUN) ||
        (IO_URING_READ_ONCE(*ring->sq.kflags) & (IORING_SQ_CQ_OVERFLOW | IORING_SQ_TASKRUN)))
        io_uring_get_events(ring);
    io_uring_for_each_cqe(ring, head, cqe) {
        if (n == max)
            break;
        user_data[n] = cqe->user_data;
        res[n] = cqe->res;
        flags[n] = cqe->flags;
        n++;
    }
    io_uring_cq_advance(ring, n);
    return (int)n;
}
