/* Included verbatim by build.py into the cffi-generated module. */

static int ouring_setup(unsigned entries, unsigned cq_entries, unsigned flags,
                        struct ouring **out)
{
    struct io_uring_params p;
    struct ouring *o;
    int ret;

    *out = NULL;
    o = calloc(1, sizeof(*o));
    if (!o)
        return -ENOMEM;
    o->event_fd = -1;
    memset(&p, 0, sizeof(p));
    p.flags = flags;
    if (cq_entries) {
        p.flags |= IORING_SETUP_CQSIZE;
        p.cq_entries = cq_entries;
    }
    ret = io_uring_queue_init_params(entries, &o->ring, &p);
    if (ret < 0) {
        free(o);
        return ret;
    }
    o->setup_flags = p.flags;
    o->features = p.features;
    /* A forked child must not share the SQ/CQ mappings: writes from the child
     * would corrupt the parent's ring. With MADV_DONTFORK the child simply has
     * no ring memory; the Python layer refuses to touch the ring in a child. */
    io_uring_ring_dontfork(&o->ring);
    if (flags & IORING_SETUP_DEFER_TASKRUN) {
        o->event_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (o->event_fd < 0 || (ret = io_uring_register_eventfd(&o->ring, o->event_fd)) < 0) {
            ret = o->event_fd < 0 ? -errno : ret;
            if (o->event_fd >= 0)
                close(o->event_fd);
            io_uring_queue_exit(&o->ring);
            free(o);
            return ret;
        }
    }
    *out = o;
    return 0;
}

/* Only called once the Python layer has reaped every CQE it could, or decided
 * to leak (never free) the memory of operations the kernel still owns. */
static void ouring_exit(struct ouring *o)
{
    if (o->event_fd >= 0)
        close(o->event_fd);
    io_uring_queue_exit(&o->ring);
    free(o);
}

static int ouring_ring_fd(struct ouring *o) { return o->ring.ring_fd; }
static int ouring_wait_fd(struct ouring *o)
{
    return o->event_fd >= 0 ? o->event_fd : o->ring.ring_fd;
}
static unsigned ouring_sq_entries(struct ouring *o) { return o->ring.sq.ring_entries; }
static unsigned ouring_cq_entries(struct ouring *o) { return o->ring.cq.ring_entries; }
static unsigned ouring_setup_flags(struct ouring *o) { return o->setup_flags; }
static unsigned ouring_features(struct ouring *o) { return o->features; }

/* Fills supported[op] with 1 for each opcode this kernel implements. */
static int ouring_probe(struct ouring *o, unsigned char *supported, unsigned n)
{
    struct io_uring_probe *probe = io_uring_get_probe_ring(&o->ring);
    unsigned op;

    if (!probe)
        return -ENOMEM;
    for (op = 0; op < n; op++)
        supported[op] = io_uring_opcode_supported(probe, (int)op) ? 1 : 0;
    io_uring_free_probe(probe);
    return 0;
}

static void ouring_drain_eventfd(struct ouring *o)
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
static int ouring_submit_and_reap(struct ouring *o, unsigned wait_nr, long long timeout_ns,
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
