/* Multishot receives into a provided-buffer ring (a part of the extension:
 * see internal.h). The core's dispatch calls multirecv_cqe and core_settle
 * calls receive_settled.
 *
 * Kernel facts this relies on (Linux 6.0+ for IORING_RECV_MULTISHOT; 5.19+ for
 * IORING_REGISTER_PBUF_RING; measured on 6.18):
 * - A multishot recv (IORING_OP_RECV, IORING_RECV_MULTISHOT in ioprio,
 *   IOSQE_BUFFER_SELECT with the group in buf_group) stays armed: every time
 *   data arrives the kernel takes the next buffer of the group's ring, fills
 *   it, and posts a CQE with IORING_CQE_F_BUFFER (the buffer id in the upper
 *   16 bits of the flags) and, while it stays armed, IORING_CQE_F_MORE.
 * - The final CQE (no F_MORE) ends it: res 0 is the end of the stream, a
 *   negative res an error; -ENOBUFS means the group's ring was empty (nothing
 *   was lost: the data waits in the socket); -ECANCELED a cancel. A final CQE
 *   may still carry a buffer (F_BUFFER) with data.
 * - The buffer ring's entries are read by the kernel at its head and written
 *   by us at its tail (the tail is published with a release store by
 *   io_uring_buf_ring_advance); the kernel pins the entries' pages, not the
 *   buffers, which it writes with copy_to_user: the buffers count nothing
 *   against RLIMIT_MEMLOCK. liburing 2.3 has no io_uring_setup_buf_ring, so
 *   the memory is our own mmap, page-aligned as registration requires.
 *
 * Who owns what: the pool (entries and buffers) belongs to the Core and lives
 * until the ring is closed with nothing leaked. Each buffer is the storage of
 * a bytes object that only the pool references: the entries point at their
 * ob_sval, which nobody reads or hashes while the kernel may write it. A
 * buffer the kernel filled goes back to the ring in the same dispatch, so no
 * buffer waits for a consumer: a small arrival is copied into a new bytes
 * object; a large one (at least half a buffer) is handed over as it is, shrunk
 * to its length, and a new bytes object takes its place in the ring (one
 * allocation instead of a copy of up to a buffer's worth: measured on the
 * 16 KiB echo, where every arrival fills a buffer). A
 * Receiver (one per socket) holds what arrived until a receive takes it, and
 * the armed MultishotReceive operation while the kernel has it; the
 * operation holds its Receiver. The cycle is broken at the final CQE. */

#include <sys/mman.h>

struct recv_pool {
    struct io_uring_buf_ring *br; /* `count` entries, page-aligned */
    PyObject **slot;              /* `count` bytes objects of `size` bytes: the buffers */
    size_t br_bytes;
    unsigned count, size, mask;
    unsigned short group;
};

/* -- Receiver -------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *chunks;   /* list of bytes, oldest first; chunks[first] minus `skip` bytes onward */
    Py_ssize_t first;   /* index of the oldest chunk not taken entirely */
    Py_ssize_t skip;    /* bytes of chunks[first] taken already */
    Py_ssize_t queued;  /* bytes not taken */
    Py_ssize_t limit;   /* above this many queued bytes the multishot is stopped */
    PyObject *waiter;   /* the task parked for data, or NULL */
    PyObject *op;       /* the armed MultishotReceive, or NULL */
    PyObject *park;     /* the executor's: what a task yields to park on this queue, or NULL */
    int end;            /* 0; 1: end of stream seen; -errno: an error for the next receive */
    char closed;
} Receiver;

static PyTypeObject ReceiverType;

typedef struct MultiRecv {
    Op op;
    Receiver *receiver; /* strong; cleared once DONE */
} MultiRecv;

static PyTypeObject MultiRecvType;

static PyObject *receiver_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"limit", NULL};
    Py_ssize_t limit = 256 * 1024;
    Receiver *self;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|n", kwlist, &limit))
        return NULL;
    if (limit < 1) {
        PyErr_SetString(PyExc_ValueError, "limit must be >= 1");
        return NULL;
    }
    self = (Receiver *)type->tp_alloc(type, 0);
    if (!self)
        return NULL;
    self->limit = limit;
    if (!(self->chunks = PyList_New(0))) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static int receiver_traverse(Receiver *self, visitproc visit, void *arg)
{
    Py_VISIT(self->chunks);
    Py_VISIT(self->waiter);
    Py_VISIT(self->op);
    Py_VISIT(self->park);
    return 0;
}

static int receiver_clear(Receiver *self)
{
    Py_CLEAR(self->chunks);
    Py_CLEAR(self->waiter);
    Py_CLEAR(self->op);
    Py_CLEAR(self->park);
    return 0;
}

static void receiver_dealloc(Receiver *self)
{
    PyObject_GC_UnTrack(self);
    receiver_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Drop the chunks taken entirely once they are many: the list stays short. */
static int receiver_compact(Receiver *self)
{
    if (self->first == PyList_GET_SIZE(self->chunks)) {
        self->first = 0;
        return PyList_SetSlice(self->chunks, 0, PY_SSIZE_T_MAX, NULL);
    }
    if (self->first >= 32 && self->first * 2 >= PyList_GET_SIZE(self->chunks)) {
        if (PyList_SetSlice(self->chunks, 0, self->first, NULL) < 0)
            return -1;
        self->first = 0;
    }
    return 0;
}

/* Copy up to n queued bytes to dst, consuming them unless peek. */
static Py_ssize_t receiver_copy(Receiver *self, char *dst, Py_ssize_t n, int peek)
{
    Py_ssize_t i = self->first, skip = self->skip, done = 0;

    while (done < n && i < PyList_GET_SIZE(self->chunks)) {
        PyObject *chunk = PyList_GET_ITEM(self->chunks, i);
        Py_ssize_t len = PyBytes_GET_SIZE(chunk) - skip;
        Py_ssize_t part = len < n - done ? len : n - done;

        memcpy(dst + done, PyBytes_AS_STRING(chunk) + skip, (size_t)part);
        done += part;
        if (part == len) {
            i++;
            skip = 0;
        } else {
            skip += part;
        }
    }
    if (!peek) {
        self->first = i;
        self->skip = skip;
        self->queued -= done;
    }
    return done;
}

/* Nothing queued: b"" at the end of the stream, the queued error (once), or
 * None (wait). 1 when the caller must return *out (NULL: raise). */
static int receiver_nothing(Receiver *self, PyObject **out, int peek)
{
    if (self->end > 0) {
        *out = PyBytes_FromStringAndSize(NULL, 0);
    } else if (self->end < 0) {
        int err = -self->end;
        if (!peek)
            self->end = 0; /* reported once, as SO_ERROR is */
        errno = err;
        *out = PyErr_SetFromErrno(PyExc_OSError);
    } else {
        *out = Py_NewRef(Py_None);
    }
    return 1;
}

static PyObject *receiver_take_impl(Receiver *self, Py_ssize_t n, int peek)
{
    PyObject *out;

    if (n < 1) {
        PyErr_SetString(PyExc_ValueError, "take() needs a size >= 1");
        return NULL;
    }
    if (!self->queued) {
        receiver_nothing(self, &out, peek);
        return out;
    }
    if (!peek && !self->skip) {
        /* The common case: the oldest chunk fits whole. Hand it out as it is
         * (no copy) unless more would fit after it. */
        PyObject *chunk = PyList_GET_ITEM(self->chunks, self->first);
        Py_ssize_t len = PyBytes_GET_SIZE(chunk);
        if (len == n || (len < n && len == self->queued)) {
            Py_INCREF(chunk);
            self->first++;
            self->queued -= len;
            if (receiver_compact(self) < 0) {
                Py_DECREF(chunk);
                return NULL;
            }
            return chunk;
        }
    }
    if (n > self->queued)
        n = self->queued;
    out = PyBytes_FromStringAndSize(NULL, n);
    if (!out)
        return NULL;
    receiver_copy(self, PyBytes_AS_STRING(out), n, peek);
    if (!peek && receiver_compact(self) < 0) {
        Py_DECREF(out);
        return NULL;
    }
    return out;
}

static PyObject *receiver_take(Receiver *self, PyObject *arg)
{
    Py_ssize_t n = PyLong_AsSsize_t(arg);

    if (n == -1 && PyErr_Occurred())
        return NULL;
    return receiver_take_impl(self, n, 0);
}

static PyObject *receiver_peek(Receiver *self, PyObject *arg)
{
    Py_ssize_t n = PyLong_AsSsize_t(arg);

    if (n == -1 && PyErr_Occurred())
        return NULL;
    return receiver_take_impl(self, n, 1);
}

/* take_into(buffer, nbytes=0) -> count or None. */
static PyObject *receiver_take_into(Receiver *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    Py_ssize_t n, done;
    PyObject *out;

    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "take_into(buffer, nbytes=0)");
        return NULL;
    }
    if (PyObject_GetBuffer(args[0], &view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0)
        return NULL;
    n = view.len;
    if (nargs == 2) {
        Py_ssize_t want = PyLong_AsSsize_t(args[1]);
        if (want == -1 && PyErr_Occurred()) {
            PyBuffer_Release(&view);
            return NULL;
        }
        if (want > 0 && want < n)
            n = want;
    }
    if (n < 1) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "take_into() needs a buffer of at least one byte");
        return NULL;
    }
    if (!self->queued) {
        PyBuffer_Release(&view);
        receiver_nothing(self, &out, 0);
        if (out && out != Py_None) { /* the end of the stream: 0 bytes */
            Py_DECREF(out);
            return PyLong_FromLong(0);
        }
        return out;
    }
    done = receiver_copy(self, view.buf, n, 0);
    PyBuffer_Release(&view);
    if (receiver_compact(self) < 0)
        return NULL;
    return PyLong_FromSsize_t(done);
}

/* close(): no more receives; what is queued is dropped. Returns the parked
 * waiter (or None), which the caller wakes. */
static PyObject *receiver_close(Receiver *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *waiter = self->waiter;

    self->closed = 1;
    self->waiter = NULL;
    self->queued = 0;
    self->first = self->skip = 0;
    if (PyList_SetSlice(self->chunks, 0, PY_SSIZE_T_MAX, NULL) < 0) {
        Py_XDECREF(waiter);
        return NULL;
    }
    return waiter ? waiter : Py_NewRef(Py_None);
}

static PyObject *receiver_get_ready(Receiver *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->queued > 0 || self->end != 0);
}

static PyMethodDef receiver_methods[] = {
    {"take", (PyCFunction)receiver_take, METH_O,
     "take(n) -> up to n queued bytes; b'' at the end of the stream; raises the\n"
     "queued error once; None when nothing is queued."},
    {"peek", (PyCFunction)receiver_peek, METH_O, "peek(n): as take(n), consuming nothing."},
    {"take_into", (PyCFunction)(void (*)(void))receiver_take_into, METH_FASTCALL,
     "take_into(buffer, nbytes=0) -> count copied (0 at the end of the stream) or None."},
    {"close", (PyCFunction)receiver_close, METH_NOARGS,
     "No more receives; drop what is queued. Returns the parked waiter or None."},
    {NULL},
};

static PyMemberDef receiver_members[] = {
    {"queued", T_PYSSIZET, offsetof(Receiver, queued), READONLY, "bytes not taken yet"},
    {"limit", T_PYSSIZET, offsetof(Receiver, limit), 0,
     "queued bytes above which the multishot is stopped until a receive drains them"},
    {"end", T_INT, offsetof(Receiver, end), READONLY,
     "0, 1 (end of stream seen) or -errno (an error for the next receive)"},
    {"closed", T_BOOL, offsetof(Receiver, closed), READONLY, NULL},
    {NULL},
};

static PyGetSetDef receiver_getset[] = {
    {"waiter", optional_getter, optional_setter, "the task parked for data, or None",
     (void *)offsetof(Receiver, waiter)},
    {"op", optional_getter, optional_setter,
     "the armed MultishotReceive, or None (set to None when its submission failed)",
     (void *)offsetof(Receiver, op)},
    {"ready", (getter)receiver_get_ready, NULL,
     "whether a receive would return at once (data, the end, or an error)", NULL},
    {NULL},
};

static PyTypeObject ReceiverType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ouring._ringcore.Receiver",
    .tp_doc = "Receiver(limit=262144): what a socket's multishot receive delivered, in order.",
    .tp_basicsize = sizeof(Receiver),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)receiver_traverse,
    .tp_clear = (inquiry)receiver_clear,
    .tp_new = receiver_new,
    .tp_dealloc = (destructor)receiver_dealloc,
    .tp_methods = receiver_methods,
    .tp_members = receiver_members,
    .tp_getset = receiver_getset,
};

/* -- MultishotReceive ------------------------------------------------------------ */

/* MultishotReceive(fd, receiver, group): the receiver's next arming. The SQE
 * takes no buffer: the kernel picks one from the group at each arrival. */
static PyObject *multirecv_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"fd", "receiver", "group", NULL};
    int fd;
    unsigned short group;
    Receiver *rx;
    MultiRecv *self;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "iO!H", kwlist, &fd, &ReceiverType, &rx,
                                     &group))
        return NULL;
    if (rx->op || rx->closed) {
        PyErr_SetString(PyExc_RuntimeError,
                        rx->closed ? "the receiver is closed" : "the receiver is armed already");
        return NULL;
    }
    self = (MultiRecv *)type->tp_alloc(type, 0);
    if (!self)
        return NULL;
    self->op.fd = fd;
    self->op.ioprio = IORING_RECV_MULTISHOT;
    self->op.sqe_flags = IOSQE_BUFFER_SELECT;
    self->op.buf_index = group; /* buf_group shares the field */
    self->receiver = (Receiver *)Py_NewRef(rx);
    rx->op = Py_NewRef(self);
    return (PyObject *)self;
}

static int multirecv_init(PyObject *Py_UNUSED(self), PyObject *Py_UNUSED(args),
                          PyObject *Py_UNUSED(kwargs))
{
    return 0; /* all done in tp_new; Operation.__init__ must not run */
}

static int multirecv_traverse(MultiRecv *self, visitproc visit, void *arg)
{
    Py_VISIT(self->receiver);
    return op_traverse(&self->op, visit, arg);
}

static int multirecv_clear(MultiRecv *self)
{
    Py_CLEAR(self->receiver);
    return op_clear(&self->op);
}

static void multirecv_dealloc(MultiRecv *self)
{
    PyObject_GC_UnTrack(self);
    multirecv_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *multirecv_get_receiver(MultiRecv *self, void *Py_UNUSED(closure))
{
    return optional_get((PyObject *)self->receiver);
}

static PyGetSetDef multirecv_getset[] = {
    {"receiver", (getter)multirecv_get_receiver, NULL, "the Receiver it delivers to", NULL},
    {NULL},
};

static PyTypeObject MultiRecvType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ouring._ringcore.MultishotReceive",
    .tp_doc = "MultishotReceive(fd, receiver, group): a multishot recv into a buffer group.",
    .tp_basicsize = sizeof(MultiRecv),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)multirecv_traverse,
    .tp_clear = (inquiry)multirecv_clear,
    .tp_new = multirecv_new,
    .tp_init = multirecv_init,
    .tp_dealloc = (destructor)multirecv_dealloc,
    .tp_getset = multirecv_getset,
};

/* -- the pool and the CQEs ------------------------------------------------------- */

static void pool_give_back(struct recv_pool *p, unsigned bid)
{
    io_uring_buf_ring_add(p->br, PyBytes_AS_STRING(p->slot[bid]), p->size, (unsigned short)bid,
                          p->mask, 0);
    io_uring_buf_ring_advance(p->br, 1);
}

/* The `res` bytes the kernel wrote into buffer `bid`, as an exact-size bytes
 * object; NULL with an exception when memory ran out. Buffer `bid` is ready
 * to be given back either way. */
static PyObject *recv_pool_take(struct recv_pool *p, unsigned bid, int res)
{
    PyObject *full = p->slot[bid], *fresh;

    if ((unsigned)res < p->size / 2 || !(fresh = PyBytes_FromStringAndSize(NULL, p->size))) {
        PyErr_Clear(); /* a new buffer failed: copy out of the old one */
        return PyBytes_FromStringAndSize(PyBytes_AS_STRING(full), res);
    }
    p->slot[bid] = fresh;
    /* Shrinking reallocs in place; should it fail, the bytes are lost with
     * a MemoryError, as a failed copy would lose them. */
    if ((unsigned)res < p->size && _PyBytes_Resize(&full, res) < 0)
        return NULL;
    return full;
}

/* -errno, or 0 with *out a registered pool of `count` (a power of two)
 * buffers of `size` bytes. */
static int pool_open(struct io_uring *ring, unsigned count, unsigned size, unsigned short group,
                     struct recv_pool **out)
{
    struct io_uring_buf_reg reg;
    struct recv_pool *p = calloc(1, sizeof(*p));
    unsigned i;
    int ret = -ENOMEM;

    if (!p)
        return -ENOMEM;
    p->count = count;
    p->size = size;
    p->mask = count - 1;
    p->group = group;
    p->br_bytes = (size_t)count * sizeof(struct io_uring_buf);
    p->br = mmap(NULL, p->br_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p->br == MAP_FAILED) {
        free(p);
        return -ENOMEM;
    }
    if (!(p->slot = calloc(count, sizeof(*p->slot))))
        goto fail;
    for (i = 0; i < count; i++)
        if (!(p->slot[i] = PyBytes_FromStringAndSize(NULL, size))) {
            PyErr_Clear(); /* -ENOMEM: receives stay one-shot */
            goto fail;
        }
    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (uintptr_t)p->br;
    reg.ring_entries = count;
    reg.bgid = group;
    if ((ret = io_uring_register_buf_ring(ring, &reg, 0)) < 0)
        goto fail;
    io_uring_buf_ring_init(p->br);
    for (i = 0; i < count; i++)
        io_uring_buf_ring_add(p->br, PyBytes_AS_STRING(p->slot[i]), size, (unsigned short)i,
                              p->mask, (int)i);
    io_uring_buf_ring_advance(p->br, (int)count);
    *out = p;
    return 0;
fail:
    if (p->slot)
        for (i = 0; i < count; i++)
            Py_XDECREF(p->slot[i]);
    free(p->slot);
    munmap(p->br, p->br_bytes);
    free(p);
    return ret;
}

/* The ring is being freed. `may_write`: an operation the kernel never ended
 * could still fill a buffer, so the buffers are kept forever. */
static void pool_close(struct io_uring *ring, struct recv_pool *p, int may_write)
{
    unsigned i;

    if (ring)
        io_uring_unregister_buf_ring(ring, p->group);
    if (!may_write) {
        for (i = 0; i < p->count; i++)
            Py_DECREF(p->slot[i]);
        munmap(p->br, p->br_bytes);
    }
    free(p->slot);
    free(p);
}

static void receiver_wake(PyObject *wake, Receiver *rx, struct first_error *err)
{
    PyObject *waiter = rx->waiter, *r;

    if (!waiter || !wake)
        return;
    rx->waiter = NULL; /* exactly one reschedule per wait */
    if (!(r = PyObject_CallOneArg(wake, waiter)))
        keep_error(err);
    Py_XDECREF(r);
    Py_DECREF(waiter);
}

/* A CQE of a MultishotReceive: copy its data out and give the buffer back to
 * the kernel at once. Returns 1 when the CQE is final (the caller settles
 * the operation), 0 when it stays armed. */
static int multirecv_cqe(Core *c, MultiRecv *m, int res, unsigned flags, struct first_error *err)
{
    Receiver *rx = m->receiver;
    struct recv_pool *p = c->pool;

    if (flags & IORING_CQE_F_BUFFER) {
        unsigned bid = flags >> IORING_CQE_BUFFER_SHIFT;
        PyObject *chunk = NULL;

        if (p && bid < p->count) {
            if (res > 0 && rx && !rx->closed) {
                chunk = recv_pool_take(p, bid, res);
                if (!chunk || PyList_Append(rx->chunks, chunk) < 0)
                    keep_error(err); /* out of memory: these bytes are lost, loudly */
                else
                    rx->queued += res;
                Py_XDECREF(chunk);
            }
            pool_give_back(p, bid);
        }
    }
    if (!(flags & IORING_CQE_F_MORE))
        return 1;
    if (rx) {
        receiver_wake(c->wake, rx, err);
        /* Backpressure: the socket's own buffer (and so TCP's window) fills
         * while nobody takes what arrived. The next receive that finds the
         * queue empty arms it again. */
        if (rx->queued > rx->limit && m->op.state == STATE_SUBMITTED &&
            core_request_cancel(c, &m->op, CANCEL_BY_CALLER) < 0)
            keep_error(err);
    }
    return 0;
}

/* Called by core_settle for a MultishotReceive that is DONE (final CQE, or
 * withdrawn before the kernel saw it): the receiver learns how it ended and
 * its waiter wakes to take what is queued or to arm it again. */
static void receive_settled(Core *c, MultiRecv *m, int res, struct first_error *err)
{
    Receiver *rx = m->receiver;

    if (!rx)
        return;
    m->receiver = NULL;
    if (rx->op == (PyObject *)m)
        Py_CLEAR(rx->op);
    if (!(m->op.cqe_flags & IORING_CQE_F_BUFFER)) {
        if (res == 0)
            rx->end = 1;
        else if (res < 0 && res != -ENOBUFS && res != -ECANCELED && !op_cancelled(&m->op))
            rx->end = res;
    }
    receiver_wake(c->wake, rx, err);
    Py_DECREF(rx);
}
