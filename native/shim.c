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

/* Register `count` buffers of `size` bytes, `stride` apart from `base`, as
 * the ring's fixed buffers (indices 0..count-1). The kernel pins their pages
 * and, for a process without CAP_IPC_LOCK, counts them against
 * RLIMIT_MEMLOCK (-ENOMEM past it). A ring has one table: -EBUSY if it has one. */
static int ouring_register_buffers(struct ouring *o, uintptr_t base, size_t stride, size_t size,
                                   unsigned count)
{
    struct iovec *iovecs = calloc(count, sizeof(*iovecs));
    unsigned i;
    int ret;

    if (!iovecs)
        return -ENOMEM;
    for (i = 0; i < count; i++) {
        iovecs[i].iov_base = (void *)(base + (uintptr_t)i * stride);
        iovecs[i].iov_len = size;
    }
    ret = io_uring_register_buffers(&o->ring, iovecs, count);
    free(iovecs);
    return ret;
}

static int ouring_unregister_buffers(struct ouring *o)
{
    return io_uring_unregister_buffers(&o->ring);
}
