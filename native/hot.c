/* ouring._hot: the per-operation path, in the CPython C API.
 *
 * cffi releases and re-takes the GIL around every foreign call and saves and
 * restores errno (about 2,400 instructions a call), and in Python the
 * operation table's attribute traffic cost more than the kernel's own work
 * on a page-cache read. Here, with the GIL held throughout:
 * - the lease table and `Lease` (one lent buffer);
 * - `Operation`, the base of every operation: its SQE image and lifecycle as
 *   C fields; `BufferOperation` (read/write/recv/send) built in one call with
 *   its lent buffer embedded;
 * - `RingCore`, the operation table of a ring and every state change of an
 *   operation, with the submit-and-reap loop.
 * Setup, probing and teardown of the ring stay in cffi (`_native`).
 *
 * Who owns what: a lend (in a Lease or a BufferOperation) owns one buffer
 * export (Py_buffer) of its object and one entry in the process-wide lease
 * table, from construction until `release()` (or its deallocation, if it was
 * never released). A RingCore references every operation the kernel may
 * touch until its final CQE. The ring memory (`struct ouring`) is owned by
 * `_native`; RingCore borrows its address between _open_core and _close_core.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include "shim.h"

/* One SQE length is 32 bits and the kernel moves at most MAX_RW_COUNT
 * (INT_MAX & PAGE_MASK) bytes per read or write: longer buffers get a short
 * count, never a silently truncated 32-bit length. */
#define OURING_MAX_RW 0x7FFFF000

/* -- the lease table ---------------------------------------------------------
 *
 * Address ranges of caller memory lent to in-flight operations, per process
 * (memory is per process: two rings must not write into one buffer either).
 * Ranges the kernel writes into are exclusive: they overlap no other lent
 * range. Ranges it only reads may overlap each other but not a written one.
 * Both lists are sorted by start; written ranges never overlap, so their ends
 * sort too. Python's buffer export keeps the memory itself alive; this table
 * only answers "is any byte of it already lent?". Every function here runs
 * with the GIL held (the fallback's worker threads lease nothing themselves),
 * which serialises the table. */

struct ouring_range {
    uintptr_t start, end;
};

struct ouring_ranges {
    struct ouring_range *items;
    size_t n, cap;
};

static struct {
    struct ouring_ranges written, read;
    uintptr_t longest_read; /* bounds how far back an overlapping read can start */
} ouring_leases = {{NULL, 0, 0}, {NULL, 0, 0}, 0};

/* The index of the first range whose start is > start (upper bound). */
static size_t ouring_ranges_after(const struct ouring_ranges *r, uintptr_t start)
{
    size_t lo = 0, hi = r->n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (r->items[mid].start <= start)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static int ouring_overlaps_written(uintptr_t start, uintptr_t end)
{
    const struct ouring_ranges *w = &ouring_leases.written;
    size_t i = ouring_ranges_after(w, start);

    if (i > 0 && w->items[i - 1].end > start)
        return 1;
    return i < w->n && w->items[i].start < end;
}

static int ouring_overlaps_read(uintptr_t start, uintptr_t end)
{
    const struct ouring_ranges *r = &ouring_leases.read;
    size_t i = ouring_ranges_after(r, end - 1); /* ranges starting before end */
    uintptr_t floor = start > ouring_leases.longest_read ? start - ouring_leases.longest_read : 0;

    while (i > 0 && r->items[i - 1].start >= floor) {
        if (r->items[i - 1].end > start)
            return 1;
        i--;
    }
    return 0;
}

static int ouring_ranges_insert(struct ouring_ranges *r, uintptr_t start, uintptr_t end)
{
    size_t i;

    if (r->n == r->cap) {
        size_t cap = r->cap ? 2 * r->cap : 64;
        struct ouring_range *items = realloc(r->items, cap * sizeof(*items));
        if (!items)
            return -ENOMEM;
        r->items = items;
        r->cap = cap;
    }
    i = ouring_ranges_after(r, start);
    memmove(&r->items[i + 1], &r->items[i], (r->n - i) * sizeof(*r->items));
    r->items[i].start = start;
    r->items[i].end = end;
    r->n++;
    return 0;
}

static void ouring_ranges_remove(struct ouring_ranges *r, uintptr_t start, uintptr_t end)
{
    size_t i = ouring_ranges_after(r, start);

    while (i > 0 && r->items[i - 1].start == start) {
        if (r->items[i - 1].end == end) {
            i--;
            memmove(&r->items[i], &r->items[i + 1], (r->n - i - 1) * sizeof(*r->items));
            r->n--;
            return;
        }
        i--;
    }
}

/* Lend [p, p + size): 0, -EBUSY if any byte conflicts with a lent range, or
 * -ENOMEM. size must be > 0. */
static int ouring_lease(const void *p, size_t size, int writable)
{
    uintptr_t start = (uintptr_t)p, end = start + size;
    int ret;

    if (ouring_overlaps_written(start, end))
        return -EBUSY;
    if (writable) {
        if (ouring_overlaps_read(start, end))
            return -EBUSY;
        return ouring_ranges_insert(&ouring_leases.written, start, end);
    }
    ret = ouring_ranges_insert(&ouring_leases.read, start, end);
    if (ret == 0 && size > ouring_leases.longest_read)
        ouring_leases.longest_read = size;
    return ret;
}

static void ouring_unlease(const void *p, size_t size, int writable)
{
    uintptr_t start = (uintptr_t)p;

    ouring_ranges_remove(writable ? &ouring_leases.written : &ouring_leases.read, start,
                         start + size);
}

/* -- lent buffers -------------------------------------------------------------
 *
 * Python callables registered by _buffers.py and _ops.py (set_helpers), so
 * messages and slow-path argument checks live in Python: unlendable(obj,
 * writable) and in_use(obj) build a refused lend's exception; fileno_for(fd,
 * buf), file_offset(offset) and u32(value, name) check arguments that are not
 * a plain in-range int; buffer_error(res, buf) builds a failed operation's
 * OSError. */
static PyObject *unlendable_factory, *in_use_factory;
static PyObject *fileno_for_helper, *file_offset_helper, *u32_helper, *buffer_error_helper;
static PyObject *str_writes_buffer, *str_flags;

/* helper(args..., NULL), or SystemError if set_helpers was never called. */
#define CALL_HELPER(helper, ...)                                                            \
    ((helper) ? PyObject_CallFunctionObjArgs((helper), __VA_ARGS__)                         \
              : (PyErr_SetString(PyExc_SystemError, "ouring._hot: set_helpers() not called"), \
                 (PyObject *)NULL))

/* One lent buffer: what a Lease and a BufferOperation own. */
struct lend {
    PyObject *obj;     /* the caller's object, handed back on completion */
    Py_buffer view;    /* the export: pins a bytearray, keeps an mmap open */
    Py_ssize_t length; /* what one SQE may move: min(view.len, OURING_MAX_RW) */
    int writable;      /* the kernel writes into it (read, recv, readv) */
    int held;          /* view and table entry not yet given back */
};

/* Raise buffer_error(res, buf): the OSError for a negative result (with
 * .buffer = buf unless buf is None). Returns NULL. */
static PyObject *raise_os_error(int res, PyObject *buf)
{
    PyObject *code = PyLong_FromLong(res);
    PyObject *exc = code ? CALL_HELPER(buffer_error_helper, code, buf, NULL) : NULL;

    Py_XDECREF(code);
    if (exc) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
    return NULL;
}

/* Raise unlendable(obj, writable) from the pending exception (`raise X from exc`). */
static int raise_unlendable(PyObject *obj, int writable)
{
    PyObject *type, *value, *tb, *exc;

    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb)
        PyException_SetTraceback(value, tb);
    exc = CALL_HELPER(unlendable_factory, obj, writable ? Py_True : Py_False, NULL);
    if (exc && PyExceptionInstance_Check(exc)) {
        PyException_SetCause(exc, value); /* steals value */
        PyException_SetContext(exc, Py_NewRef(value ? value : Py_None));
        value = NULL;
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    } else if (exc) {
        PyErr_SetString(PyExc_SystemError, "ouring: an error factory returned a non-exception");
    }
    Py_XDECREF(exc);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    return -1;
}

/* Lend obj: take a buffer export and a lease-table entry. 0, or -1 with the
 * exception set (unlendable, in use, or out of memory) and nothing held. */
static int lend_acquire(struct lend *l, PyObject *obj, int writable)
{
    int ret;

    /* PyBUF_SIMPLE asks for one contiguous run of bytes; a strided view refuses. */
    if (PyObject_GetBuffer(obj, &l->view, writable ? PyBUF_WRITABLE : PyBUF_SIMPLE) < 0)
        return raise_unlendable(obj, writable);
    if (l->view.len) {
        ret = ouring_lease(l->view.buf, (size_t)l->view.len, writable);
        if (ret < 0) {
            PyObject *exc;

            PyBuffer_Release(&l->view);
            if (ret == -ENOMEM) {
                PyErr_NoMemory();
                return -1;
            }
            exc = CALL_HELPER(in_use_factory, obj, NULL);
            if (exc) {
                PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
                Py_DECREF(exc);
            }
            return -1;
        }
    }
    l->held = 1;
    l->writable = writable;
    l->obj = Py_NewRef(obj);
    l->length = l->view.len < OURING_MAX_RW ? l->view.len : OURING_MAX_RW;
    return 0;
}

static void lend_give_back(struct lend *l)
{
    if (!l->held)
        return;
    l->held = 0;
    if (l->view.len)
        ouring_unlease(l->view.buf, (size_t)l->view.len, l->writable);
    PyBuffer_Release(&l->view);
}

/* The garbage collector must see through a lend: a caller's object may refer
 * back to the operation that holds it (buf -> op -> buf). */
static int lend_traverse(struct lend *l, visitproc visit, void *arg)
{
    Py_VISIT(l->obj);
    if (l->held)
        Py_VISIT(l->view.obj);
    return 0;
}

/* Only an unreachable owner gets here, or to dealloc unreleased. The ring
 * keeps every operation the kernel may touch reachable (in flight, or leaked
 * forever), so an unreachable one was never seen by the kernel, or is over:
 * giving the memory back is safe. */
static void lend_clear(struct lend *l)
{
    lend_give_back(l);
    Py_CLEAR(l->obj);
}

/* Lend a new, uninitialised bytes object of `size` bytes that nothing else
 * references, for the kernel to write into; lend_take() hands it out cut to
 * the count. No copy, and no reused buffer to copy out of: CPython's
 * socket.recv fills the bytes it returns the same way (the object is
 * immutable only once someone else can see it). */
static int lend_fresh(struct lend *l, PyObject *size_obj)
{
    Py_ssize_t size = PyLong_AsSsize_t(size_obj);
    PyObject *obj;

    if (size == -1 && PyErr_Occurred())
        return -1;
    if (size < 1 || size > OURING_MAX_RW) {
        PyErr_Format(PyExc_ValueError, "size must be between 1 and %d, not %zd", OURING_MAX_RW,
                     size);
        return -1;
    }
    obj = PyBytes_FromStringAndSize(NULL, size);
    if (!obj || PyObject_GetBuffer(obj, &l->view, PyBUF_SIMPLE) < 0) {
        Py_XDECREF(obj);
        return -1;
    }
    /* New memory overlaps no lent range: only -ENOMEM can fail. */
    if (ouring_lease(l->view.buf, (size_t)size, 1) < 0) {
        PyBuffer_Release(&l->view);
        Py_DECREF(obj);
        PyErr_NoMemory();
        return -1;
    }
    l->obj = obj;
    l->held = 1;
    l->writable = 1;
    l->length = size;
    return 0;
}

/* The fresh bytes, cut to their first n bytes, once given back. The lend
 * gives them up (obj becomes None). */
static PyObject *lend_take(struct lend *l, Py_ssize_t n)
{
    PyObject *obj = l->obj;

    if (l->held || !obj || !PyBytes_CheckExact(obj)) {
        PyErr_SetString(PyExc_RuntimeError,
                        "the received bytes are handed out once, after the final CQE");
        return NULL;
    }
    if (n < 0 || n > PyBytes_GET_SIZE(obj)) {
        PyErr_Format(PyExc_ValueError, "n must be between 0 and %zd, not %zd",
                     PyBytes_GET_SIZE(obj), n);
        return NULL;
    }
    l->obj = Py_NewRef(Py_None);
    if (Py_REFCNT(obj) == 1)
        return _PyBytes_Resize(&obj, n) < 0 ? NULL : obj; /* frees obj on failure */
    /* Someone read the bytes meanwhile: resizing in place would change their
     * object, so copy instead. */
    Py_SETREF(obj, PyBytes_FromStringAndSize(PyBytes_AS_STRING(obj), n));
    return obj;
}

/* -- Lease ------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    struct lend lend;
} Lease;

static PyObject *lease_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *obj, *writable_obj;
    Lease *self;
    int writable;

    if (kwargs && PyDict_GET_SIZE(kwargs)) {
        PyErr_SetString(PyExc_TypeError, "Lease() takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_UnpackTuple(args, "Lease", 2, 2, &obj, &writable_obj))
        return NULL;
    if ((writable = PyObject_IsTrue(writable_obj)) < 0)
        return NULL;
    self = (Lease *)type->tp_alloc(type, 0);
    if (!self)
        return NULL;
    if (lend_acquire(&self->lend, obj, writable) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static PyObject *lease_release(Lease *self, PyObject *Py_UNUSED(ignored))
{
    lend_give_back(&self->lend);
    Py_RETURN_NONE;
}

static PyObject *lease_get_ptr(Lease *self, void *Py_UNUSED(closure))
{
    return PyLong_FromVoidPtr(self->lend.held ? self->lend.view.buf : NULL);
}

static int lease_traverse(Lease *self, visitproc visit, void *arg)
{
    return lend_traverse(&self->lend, visit, arg);
}

static int lease_clear(Lease *self)
{
    lend_clear(&self->lend);
    return 0;
}

static void lease_dealloc(Lease *self)
{
    PyObject_GC_UnTrack(self);
    lease_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef lease_methods[] = {
    {"release", (PyCFunction)lease_release, METH_NOARGS,
     "Give the memory back: drop the table entry and the export. Called once,\n"
     "after the final CQE of the operation that holds it; later calls do nothing."},
    {NULL},
};

static PyMemberDef lease_members[] = {
    {"obj", T_OBJECT, offsetof(Lease, lend.obj), READONLY, "the lent object"},
    {"length", T_PYSSIZET, offsetof(Lease, lend.length), READONLY,
     "bytes one SQE may move (capped at MAX_RW)"},
    {NULL},
};

static PyGetSetDef lease_getset[] = {
    {"ptr", (getter)lease_get_ptr, NULL, "the address the SQE points at (0 once released)", NULL},
    {NULL},
};

static PyTypeObject LeaseType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ouring._hot.Lease",
    .tp_doc = "Lease(obj, writable): one buffer lent to the kernel.",
    .tp_basicsize = sizeof(Lease),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)lease_traverse,
    .tp_clear = (inquiry)lease_clear,
    .tp_new = lease_new,
    .tp_dealloc = (destructor)lease_dealloc,
    .tp_methods = lease_methods,
    .tp_members = lease_members,
    .tp_getset = lease_getset,
};

/* Optional object fields (a waiter, an executor) hold NULL for None, so C
 * tests them with a plain NULL check. */
static PyObject *optional_get(PyObject *field)
{
    return Py_NewRef(field ? field : Py_None);
}

static void optional_set(PyObject **field, PyObject *value)
{
    Py_XSETREF(*field, value && value != Py_None ? Py_NewRef(value) : NULL);
}

/* A getset on such a field; the closure is the field's offset. */
#define OPTIONAL_FIELD(self, closure) ((PyObject **)((char *)(self) + (size_t)(closure)))

static PyObject *optional_getter(PyObject *self, void *closure)
{
    return optional_get(*OPTIONAL_FIELD(self, closure));
}

static int optional_setter(PyObject *self, PyObject *value, void *closure)
{
    optional_set(OPTIONAL_FIELD(self, closure), value);
    return 0;
}

/* -- Operation ----------------------------------------------------------------
 *
 * The base of every operation (_ops.py subclasses it in Python): its SQE image
 * and its lifecycle as C fields. Python code reads and writes them as
 * attributes; only the ring writes the lifecycle ones (state, res, cancel_by,
 * waiter, abandoned, user_data). */

/* Operation.state, exported to Python (_ops.py documents each). */
#define STATE_CREATED 0
#define STATE_PENDING 1
#define STATE_SUBMITTED 2
#define STATE_CANCELLING 3
#define STATE_DONE 4
#define STATE_LEAKED 5
/* Operation.cancel_by: who asked for a cancel (0: nobody). */
#define CANCEL_BY_CALLER 1
#define CANCEL_BY_RING 2
#define CANCEL_BY_CLOSED 3

typedef struct {
    PyObject_HEAD
    PyObject *waiter; /* the executor's token to wake when DONE; NULL reads as None */
    unsigned long long addr, offset, user_data;
    int fd, res, state, cancel_by;
    unsigned int length, op_flags, file_index, cqe_flags;
    unsigned short ioprio, buf_index;
    unsigned char sqe_flags;
    unsigned char opcode; /* the class's opcode, copied by submit */
    char abandoned;
} Op;

/* An int in 0..max, or OverflowError. */
static int u64_arg(PyObject *o, uint64_t max, uint64_t *out)
{
    unsigned long long v = PyLong_AsUnsignedLongLong(o);

    if (v == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    if (v > max) {
        PyErr_SetString(PyExc_OverflowError, "SQE field out of range");
        return -1;
    }
    *out = v;
    return 0;
}

static PyObject *op_new(PyTypeObject *type, PyObject *Py_UNUSED(args), PyObject *Py_UNUSED(kw))
{
    return type->tp_alloc(type, 0); /* zeroed: CREATED, no waiter */
}

/* Operation(fd, addr, length, offset, op_flags): the SQE image. */
static int op_init(Op *self, PyObject *args, PyObject *kwargs)
{
    PyObject *fd, *addr, *length, *offset, *op_flags;
    uint64_t a, l, o, f;
    long d;

    if (kwargs && PyDict_GET_SIZE(kwargs)) {
        PyErr_SetString(PyExc_TypeError, "Operation() takes no keyword arguments");
        return -1;
    }
    if (!PyArg_UnpackTuple(args, "Operation", 5, 5, &fd, &addr, &length, &offset, &op_flags))
        return -1;
    d = PyLong_AsLong(fd);
    if (d == -1 && PyErr_Occurred())
        return -1;
    if (d < INT32_MIN || d > INT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "fd out of range");
        return -1;
    }
    if (u64_arg(addr, UINT64_MAX, &a) || u64_arg(length, UINT32_MAX, &l) ||
        u64_arg(offset, UINT64_MAX, &o) || u64_arg(op_flags, UINT32_MAX, &f))
        return -1;
    self->fd = (int)d;
    self->addr = a;
    self->length = (unsigned int)l;
    self->offset = o;
    self->op_flags = (unsigned int)f;
    return 0;
}

/* The kernel's "restart this syscall" codes (include/linux/errno.h). A
 * syscall never returns them to user space, but an io-wq worker that a cancel
 * woke from an interruptible wait posts them in the CQE as they are: an openat
 * waiting for a FIFO's peer ends with -ERESTARTSYS (measured on 6.18). */
#define OURING_ERESTARTSYS 512
#define OURING_ERESTARTNOINTR 513
#define OURING_ERESTARTNOHAND 514
#define OURING_ERESTART_RESTARTBLOCK 516

/* A requested cancel won: the operation did not happen. -EINTR and the
 * restart codes count too: an io-wq worker interrupted by a cancel reports
 * them, and they mean nothing happened (a partial transfer returns the count). */
static int op_cancelled(const Op *op)
{
    if (!op->cancel_by)
        return 0;
    switch (op->res) {
    case -ECANCELED:
    case -EINTR:
    case -OURING_ERESTARTSYS:
    case -OURING_ERESTARTNOINTR:
    case -OURING_ERESTARTNOHAND:
    case -OURING_ERESTART_RESTARTBLOCK:
        return 1;
    default:
        return 0;
    }
}

static PyObject *op_cancelled_py(Op *self, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(op_cancelled(self));
}

static PyMethodDef op_methods[] = {
    {"cancelled", (PyCFunction)op_cancelled_py, METH_NOARGS,
     "True when a requested cancel won: the operation did not happen (-ECANCELED,\n"
     "or -EINTR / -ERESTART* from an interrupted io-wq worker: nothing moved)."},
    {NULL},
};

static int op_traverse(Op *self, visitproc visit, void *arg)
{
    Py_VISIT(self->waiter);
    return 0;
}

static int op_clear(Op *self)
{
    Py_CLEAR(self->waiter);
    return 0;
}

static void op_dealloc(Op *self)
{
    PyObject_GC_UnTrack(self);
    op_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef op_members[] = {
    {"fd", T_INT, offsetof(Op, fd), 0, "SQE fd (or dir fd)"},
    {"addr", T_ULONGLONG, offsetof(Op, addr), 0, "SQE addr: an address as an int"},
    {"length", T_UINT, offsetof(Op, length), 0, "SQE len"},
    {"offset", T_ULONGLONG, offsetof(Op, offset), 0, "SQE off (or addr2)"},
    {"op_flags", T_UINT, offsetof(Op, op_flags), 0, "SQE per-opcode flags"},
    {"sqe_flags", T_UBYTE, offsetof(Op, sqe_flags), 0, "IOSQE_* flags"},
    {"ioprio", T_USHORT, offsetof(Op, ioprio), 0, "SQE ioprio (multishot, send_zc flags)"},
    {"buf_index", T_USHORT, offsetof(Op, buf_index), 0, "SQE buf_index (or buf_group)"},
    {"file_index", T_UINT, offsetof(Op, file_index), 0, "SQE splice_fd_in / file_index"},
    {"cqe_flags", T_UINT, offsetof(Op, cqe_flags), 0, "the final CQE's flags"},
    {"user_data", T_ULONGLONG, offsetof(Op, user_data), 0, "set by the ring; never reused"},
    {"state", T_INT, offsetof(Op, state), 0, "CREATED .. LEAKED (see _ops.py)"},
    {"res", T_INT, offsetof(Op, res), 0, "the final CQE's result"},
    {"cancel_by", T_INT, offsetof(Op, cancel_by), 0, "who asked for a cancel (0: nobody)"},
    {"abandoned", T_BOOL, offsetof(Op, abandoned), 0, "nobody will receive the result"},
    {NULL},
};

static PyGetSetDef op_getset[] = {
    {"waiter", optional_getter, optional_setter,
     "the executor's token to wake when DONE, or None", (void *)offsetof(Op, waiter)},
    {NULL},
};

static PyTypeObject OpType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ouring._hot.Operation",
    .tp_doc = "Operation(fd, addr, length, offset, op_flags): an SQE image and a lifecycle.",
    .tp_basicsize = sizeof(Op),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)op_traverse,
    .tp_clear = (inquiry)op_clear,
    .tp_new = op_new,
    .tp_init = (initproc)op_init,
    .tp_dealloc = (destructor)op_dealloc,
    .tp_methods = op_methods,
    .tp_members = op_members,
    .tp_getset = op_getset,
};

/* -- BufferOperation ------------------------------------------------------------
 *
 * An operation on one caller buffer (read, write, recv, send), built in one C
 * call: this is the library's hottest constructor. It owns one lend from
 * construction until release(), which the ring calls once, after the final
 * CQE. Subclasses say `writes_buffer` (a class attribute); FileOperation
 * takes (fd, buf, offset=-1), MessageOperation (sock, buf, flags=0). */

typedef struct {
    Op op;
    struct lend lend;
} BufOp;

/* fd as an int in 0..INT32_MAX: the fast path, or fileno_for(fd, buf). */
static int buf_fd(PyObject *fd, PyObject *buf, int *out)
{
    long v;

    if (PyLong_CheckExact(fd)) {
        v = PyLong_AsLong(fd);
        if (!(v == -1 && PyErr_Occurred()) && v >= 0 && v <= INT32_MAX) {
            *out = (int)v;
            return 0;
        }
        PyErr_Clear();
    }
    PyObject *r = CALL_HELPER(fileno_for_helper, fd, buf, NULL);
    if (!r)
        return -1;
    v = PyLong_AsLong(r);
    Py_DECREF(r);
    if (v == -1 && PyErr_Occurred())
        return -1;
    *out = (int)v;
    return 0;
}

/* An int (or an int subclass: socket.MSG_* flags are IntFlags, whose value
 * is their int) in lo..hi, else helper(value[, name]) -> a checked int. */
static int checked_u64(PyObject *value, long long lo, unsigned long long hi, PyObject *helper,
                       PyObject *name, unsigned long long *out)
{
    PyObject *r;

    if (PyLong_Check(value)) {
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
        if (!overflow && !(v == -1 && PyErr_Occurred()) && v >= lo &&
            (v < 0 || (unsigned long long)v <= hi)) {
            *out = (unsigned long long)v;
            return 0;
        }
        PyErr_Clear();
    }
    r = CALL_HELPER(helper, value, name, NULL);
    if (!r)
        return -1;
    *out = PyLong_AsUnsignedLongLong(r);
    Py_DECREF(r);
    return (*out == (unsigned long long)-1 && PyErr_Occurred()) ? -1 : 0;
}

static PyObject *buf_make(PyTypeObject *type, PyObject *fd_obj, PyObject *buf, int opcode_offset,
                          unsigned long long third)
{
    PyObject *w = PyObject_GetAttr((PyObject *)type, str_writes_buffer);
    BufOp *self;
    int writable, fd;

    if (!w)
        return NULL;
    writable = PyObject_IsTrue(w);
    Py_DECREF(w);
    if (writable < 0 || buf_fd(fd_obj, buf, &fd) < 0)
        return NULL;
    self = (BufOp *)type->tp_alloc(type, 0);
    if (!self)
        return NULL;
    if (lend_acquire(&self->lend, buf, writable) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    self->op.fd = fd;
    self->op.addr = (uintptr_t)self->lend.view.buf;
    self->op.length = (unsigned int)self->lend.length;
    if (opcode_offset)
        self->op.offset = third;
    else
        self->op.op_flags = (unsigned int)third;
    return (PyObject *)self;
}

/* Positional (a, b[, c]) or keywords named in kwlist. */
static int buf_args(PyObject *args, PyObject *kwargs, const char *fmt, char **kwlist,
                    PyObject **a, PyObject **b, PyObject **c)
{
    Py_ssize_t n = PyTuple_GET_SIZE(args);

    if ((!kwargs || !PyDict_GET_SIZE(kwargs)) && (n == 2 || n == 3)) {
        *a = PyTuple_GET_ITEM(args, 0);
        *b = PyTuple_GET_ITEM(args, 1);
        if (n == 3)
            *c = PyTuple_GET_ITEM(args, 2);
        return 0;
    }
    return PyArg_ParseTupleAndKeywords(args, kwargs, fmt, kwlist, a, b, c) ? 0 : -1;
}

static PyObject *file_op_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"fd", "buf", "offset", NULL};
    PyObject *fd, *buf, *offset = NULL;
    unsigned long long off = UINT64_MAX; /* -1: the file position */

    if (buf_args(args, kwargs, "OO|O", kwlist, &fd, &buf, &offset) < 0)
        return NULL;
    /* Offset first, as before any fd or buffer is looked at: -1 (all ones)
     * means the file position, anything else must fit in 63 bits. */
    if (offset && checked_u64(offset, -1, INT64_MAX, file_offset_helper, NULL, &off) < 0)
        return NULL;
    return buf_make(type, fd, buf, 1, off);
}

static PyObject *message_op_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"sock", "buf", "flags", NULL};
    PyObject *sock, *buf, *flags = NULL;
    unsigned long long f = 0;

    if (buf_args(args, kwargs, "OO|O", kwlist, &sock, &buf, &flags) < 0)
        return NULL;
    if (flags && checked_u64(flags, 0, UINT32_MAX, u32_helper, str_flags, &f) < 0)
        return NULL;
    return buf_make(type, sock, buf, 0, f);
}

static int buf_init(PyObject *Py_UNUSED(self), PyObject *Py_UNUSED(args),
                    PyObject *Py_UNUSED(kw))
{
    return 0; /* everything happened in tp_new */
}

static PyObject *buf_release(BufOp *self, PyObject *Py_UNUSED(ignored))
{
    lend_give_back(&self->lend);
    Py_RETURN_NONE;
}

/* (buf, count), or the OSError (carrying buf) of a failed operation. */
static PyObject *buf_result(BufOp *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *buf = self->lend.obj ? self->lend.obj : Py_None;

    if (self->op.res < 0) {
        return raise_os_error(self->op.res, buf);
    }
    return Py_BuildValue("(Oi)", buf, self->op.res);
}

static int buf_traverse(BufOp *self, visitproc visit, void *arg)
{
    int ret = lend_traverse(&self->lend, visit, arg);
    return ret ? ret : op_traverse(&self->op, visit, arg);
}

static int buf_clear(BufOp *self)
{
    lend_clear(&self->lend);
    return op_clear(&self->op);
}

static void buf_dealloc(BufOp *self)
{
    PyObject_GC_UnTrack(self);
    buf_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef buf_methods[] = {
    {"release", (PyCFunction)buf_release, METH_NOARGS,
     "Give the buffer back (export and lease-table entry). Called once, by the ring."},
    {"result", (PyCFunction)buf_result, METH_NOARGS,
     "(buf, count), or raise the OSError (with .buffer) of a failed operation."},
    {NULL},
};

static PyMemberDef buf_members[] = {
    {"buffer", T_OBJECT, offsetof(BufOp, lend.obj), READONLY, "the caller's buffer"},
    {NULL},
};

static PyTypeObject BufOpType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ouring._hot.BufferOperation",
    .tp_doc = "An operation on one lent caller buffer.",
    .tp_basicsize = sizeof(BufOp),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)buf_traverse,
    .tp_clear = (inquiry)buf_clear,
    .tp_init = buf_init,
    .tp_dealloc = (destructor)buf_dealloc,
    .tp_methods = buf_methods,
    .tp_members = buf_members,
};

static PyTypeObject FileOpType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ouring._hot.FileOperation",
    .tp_doc = "FileOperation(fd, buf, offset=-1): read/write at offset (-1: the file position).",
    .tp_basicsize = sizeof(BufOp),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)buf_traverse,
    .tp_clear = (inquiry)buf_clear,
    .tp_new = file_op_new,
};

static PyTypeObject MessageOpType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ouring._hot.MessageOperation",
    .tp_doc = "MessageOperation(sock, buf, flags=0): recv/send with MSG_* flags.",
    .tp_basicsize = sizeof(BufOp),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)buf_traverse,
    .tp_clear = (inquiry)buf_clear,
    .tp_new = message_op_new,
};

/* ReceiveOperation(sock, size, flags=0): recv into a new bytes object of up
 * to `size` bytes; result() is that object cut to the received count. */
static PyObject *receive_op_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"sock", "size", "flags", NULL};
    PyObject *sock, *size, *flags = NULL;
    unsigned long long f = 0;
    BufOp *self;
    int fd;

    if (buf_args(args, kwargs, "OO|O", kwlist, &sock, &size, &flags) < 0)
        return NULL;
    if (buf_fd(sock, Py_None, &fd) < 0)
        return NULL;
    if (flags && checked_u64(flags, 0, UINT32_MAX, u32_helper, str_flags, &f) < 0)
        return NULL;
    self = (BufOp *)type->tp_alloc(type, 0);
    if (!self)
        return NULL;
    if (lend_fresh(&self->lend, size) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    self->op.fd = fd;
    self->op.addr = (uintptr_t)self->lend.view.buf;
    self->op.length = (unsigned int)self->lend.length;
    self->op.op_flags = (unsigned int)f;
    return (PyObject *)self;
}

/* The received bytes, or the OSError of a failed receive. */
static PyObject *receive_result(BufOp *self, PyObject *Py_UNUSED(ignored))
{
    if (self->op.res < 0) {
        return raise_os_error(self->op.res, Py_None);
    }
    return lend_take(&self->lend, self->op.res);
}

static PyMethodDef receive_methods[] = {
    {"result", (PyCFunction)receive_result, METH_NOARGS,
     "The received bytes (handed out once), or raise the OSError of a failed receive."},
    {NULL},
};

static PyTypeObject ReceiveOpType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ouring._hot.ReceiveOperation",
    .tp_doc = "ReceiveOperation(sock, size, flags=0): recv into new bytes, as socket.recv.",
    .tp_basicsize = sizeof(BufOp),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)buf_traverse,
    .tp_clear = (inquiry)buf_clear,
    .tp_new = receive_op_new,
    .tp_methods = receive_methods,
};

/* SendOperation(sock, buf, flags=0): a MessageOperation whose result() is
 * the count alone, socket.send's value: the socket layer returns the
 * executor's coroutine itself, with no frame to pick the count out. */
static PyObject *count_result(BufOp *self, PyObject *Py_UNUSED(ignored))
{
    if (self->op.res < 0)
        return raise_os_error(self->op.res, self->lend.obj ? self->lend.obj : Py_None);
    return PyLong_FromLong(self->op.res);
}

static PyMethodDef count_methods[] = {
    {"result", (PyCFunction)count_result, METH_NOARGS,
     "The count sent, or raise the OSError of a failed send."},
    {NULL},
};

static PyTypeObject CountOpType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ouring._hot.SendOperation",
    .tp_doc = "SendOperation(sock, buf, flags=0): send from buf; result() is the count.",
    .tp_basicsize = sizeof(BufOp),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)buf_traverse,
    .tp_clear = (inquiry)buf_clear,
    .tp_new = message_op_new,
    .tp_methods = count_methods,
};

/* -- Group -----------------------------------------------------------------------
 *
 * Group(count, waiter): a waiter for several operations (read_many). Each
 * operation of the group has the Group as its waiter; the ring wakes the
 * group's own waiter once, when the last of them is DONE. An executor's
 * abort clears `waiter` while it withdraws or cancels the operations, so
 * nobody is woken twice. */

typedef struct {
    PyObject_HEAD
    PyObject *waiter; /* NULL reads as None */
    Py_ssize_t left;  /* operations not yet DONE */
} Group;

static PyObject *group_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    Py_ssize_t left;
    PyObject *waiter;
    Group *g;

    if (kwargs && PyDict_GET_SIZE(kwargs)) {
        PyErr_SetString(PyExc_TypeError, "Group() takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "nO", &left, &waiter))
        return NULL;
    if (left < 0) {
        PyErr_SetString(PyExc_ValueError, "count must be >= 0");
        return NULL;
    }
    g = (Group *)type->tp_alloc(type, 0);
    if (!g)
        return NULL;
    g->left = left;
    optional_set(&g->waiter, waiter);
    return (PyObject *)g;
}

static int group_traverse(Group *g, visitproc visit, void *arg)
{
    Py_VISIT(g->waiter);
    return 0;
}

static int group_clear(Group *g)
{
    Py_CLEAR(g->waiter);
    return 0;
}

static void group_dealloc(Group *g)
{
    PyObject_GC_UnTrack(g);
    group_clear(g);
    Py_TYPE(g)->tp_free((PyObject *)g);
}

static PyGetSetDef group_getset[] = {
    {"waiter", optional_getter, optional_setter,
     "woken once, when the last operation is DONE; None: nobody",
     (void *)offsetof(Group, waiter)},
    {NULL},
};

static PyMemberDef group_members[] = {
    {"left", T_PYSSIZET, offsetof(Group, left), READONLY, "operations not yet DONE"},
    {NULL},
};

static PyTypeObject GroupType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ouring._hot.Group",
    .tp_doc = "Group(count, waiter): wake waiter once, when count operations are DONE.",
    .tp_basicsize = sizeof(Group),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)group_traverse,
    .tp_clear = (inquiry)group_clear,
    .tp_new = group_new,
    .tp_dealloc = (destructor)group_dealloc,
    .tp_members = group_members,
    .tp_getset = group_getset,
};

#include "pool.c" /* BufferPool's memory and buffers */

/* -- RingCore ------------------------------------------------------------------
 *
 * The operation table of one ring and every state change of an operation
 * (see DESIGN.md for the table): submit (CREATED -> PENDING), _prepare
 * (PENDING -> SUBMITTED), cancel (PENDING -> DONE, withdrawn; SUBMITTED ->
 * CANCELLING), the settle of each reaped CQE (-> DONE), _withdraw_pending and
 * _leak_inflight (close). The Python Ring (_ring.py) subclasses it and keeps
 * the policy: setup, flush/reap/wait, close, cancel_fd, statistics.
 *
 * Who owns what: the core holds a strong reference to every operation the
 * kernel may touch (`inflight`, keyed by user_data) until its final CQE, so
 * the operation's buffers and structs stay alive that long. `ring` is
 * borrowed from the Python Ring, which frees it (ouring_exit) only after
 * _close_core(). */

#define CANCEL_USER_DATA 0 /* operations count from 1; cancel requests' CQEs carry 0 */

typedef struct {
    PyObject_HEAD
    struct ouring *ring;      /* borrowed; NULL before _open_core and after _close_core */
    PyObject *pending;        /* list: PENDING operations, oldest first */
    PyObject *inflight;       /* dict: user_data -> SUBMITTED/CANCELLING operation */
    PyObject *cancels;        /* list: CANCELLING operations whose cancel is not in the SQ */
    PyObject *idle_callbacks; /* list: called once nothing is pending or in flight */
    PyObject *executor;       /* the event-loop adapter, or NULL */
    PyObject *wake;           /* executor.wake, looked up when executor is set */
    unsigned long long next_user_data, submitted, completed, cancelled, leaked, batches;
    unsigned long long more; /* CQEs with IORING_CQE_F_MORE: not final */
    /* The executor's batching heuristic, kept here so that its perform can
     * be C: operations submitted since the executor last started a pass, and
     * whether the previous pass submitted at most one (nobody to batch with). */
    unsigned long long pass_submits;
    char alone;
    Py_ssize_t max_inflight;
    unsigned long thread; /* the owner: PyThread_get_thread_ident(), as threading.get_ident() */
    unsigned long generation; /* fork_generation when opened: differs in a forked child */
    char closed;
    int last_submit; /* io_uring_submit's last result: a count, or -errno */
    unsigned batch;  /* CQEs copied out per pass */
    uint64_t *cqe_user_data;
    int32_t *cqe_res;
    uint32_t *cqe_flags;
    unsigned char supported[256];
    struct recv_pool *pool; /* the provided buffers of multishot receives, or NULL */
} Core;

static PyObject *str_opcode, *str_release, *str_discard, *str_refuse, *str_cancel_fd, *str_wake,
    *str_check_open, *str_check_process;

/* Bumped in a forked child (os.register_at_fork, see _ring.py): the child has
 * no ring memory (MADV_DONTFORK), so its copies of the parent's rings must
 * never touch it. A counter instead of getpid(): no syscall per check. */
static unsigned long fork_generation;

/* The owner thread in the owner process may drive the ring: 0. Otherwise
 * the Python check (_check_open or _check_process) raises RingClosedError
 * with the reason: -1. */
static int core_usable(Core *c)
{
    PyObject *r;

    if (c->thread == PyThread_get_thread_ident() && c->generation == fork_generation && c->ring)
        return 0;
    r = PyObject_CallMethodNoArgs((PyObject *)c, c->generation != fork_generation
                                                     ? str_check_process
                                                     : str_check_open);
    Py_XDECREF(r);
    if (r && !PyErr_Occurred())
        PyErr_SetString(PyExc_RuntimeError, "the ring is closed");
    return -1;
}

/* The first exception raised by a callback while settling a batch is kept
 * and re-raised once every CQE of the batch is settled: a CQE that was
 * consumed from the CQ must never be dropped. */
struct first_error {
    PyObject *type, *value, *tb;
};

static void keep_error(struct first_error *e)
{
    if (e->type) {
        PyErr_Clear();
        return;
    }
    PyErr_Fetch(&e->type, &e->value, &e->tb);
}

static int restore_error(struct first_error *e)
{
    if (!e->type)
        return 0;
    PyErr_Restore(e->type, e->value, e->tb);
    return -1;
}

/* SUBMITTED -> CANCELLING: an IORING_OP_ASYNC_CANCEL for `op` goes into the SQ
 * at the next _prepare; its final CQE still decides. The one place a
 * submitted operation is asked to stop (cancel(), and a receive queue past its
 * limit in receive.c). */
static int core_request_cancel(Core *c, Op *op, int by)
{
    if (PyList_Append(c->cancels, (PyObject *)op) < 0)
        return -1;
    op->cancel_by = by;
    op->state = STATE_CANCELLING;
    return 0;
}

#include "receive.c"

/* -> DONE: the final CQE arrived, or the operation was withdrawn. Gives back
 * what the kernel could touch, then wakes the waiter (or undoes the result of
 * an abandoned operation). Every step runs even if one raises; the first
 * exception is kept in `err`. */
static void core_settle(Core *c, Op *op, int res, struct first_error *err)
{
    PyObject *r;

    op->res = res;
    op->state = STATE_DONE;
    if (PyObject_TypeCheck(op, &BufOpType)) {
        lend_give_back(&((BufOp *)op)->lend);
    } else if (PyObject_TypeCheck(op, &MultiRecvType)) {
        receive_settled(c, (MultiRecv *)op, res, err); /* owns no memory of its own */
    } else if (!(r = PyObject_CallMethodNoArgs((PyObject *)op, str_release))) {
        keep_error(err);
    } else {
        Py_DECREF(r);
    }
    c->completed++;
    if (op_cancelled(op))
        c->cancelled++;
    if (op->abandoned) {
        if (res >= 0) {
            if (!(r = PyObject_CallMethodNoArgs((PyObject *)op, str_discard)))
                keep_error(err);
            Py_XDECREF(r);
        }
    } else if (op->waiter) {
        /* Held across the call: Python code in it may reset either. */
        PyObject *waiter = Py_NewRef(op->waiter), *wake = Py_XNewRef(c->wake);
        if (Py_IS_TYPE(waiter, &GroupType)) {
            Group *g = (Group *)waiter;
            /* The last of the group wakes the group's waiter. */
            waiter = --g->left <= 0 && g->waiter ? Py_NewRef(g->waiter) : NULL;
            Py_DECREF(g);
        }
        r = NULL;
        if (waiter && wake && !(r = PyObject_CallOneArg(wake, waiter)))
            keep_error(err);
        Py_XDECREF(r);
        Py_XDECREF(waiter);
        Py_XDECREF(wake);
    }
    if (PyList_GET_SIZE(c->idle_callbacks) && !PyDict_GET_SIZE(c->inflight) &&
        !PyList_GET_SIZE(c->pending)) {
        PyObject *callbacks = c->idle_callbacks, *fresh = PyList_New(0);
        Py_ssize_t i;

        if (!fresh) {
            keep_error(err);
            return;
        }
        c->idle_callbacks = fresh;
        for (i = 0; i < PyList_GET_SIZE(callbacks); i++) {
            if (!(r = PyObject_CallNoArgs(PyList_GET_ITEM(callbacks, i))))
                keep_error(err);
            Py_XDECREF(r);
        }
        Py_DECREF(callbacks);
    }
}

static int core_check_op(PyObject *op)
{
    if (!PyObject_TypeCheck(op, &OpType)) {
        PyErr_Format(PyExc_TypeError, "an ouring operation is required, not %s",
                     Py_TYPE(op)->tp_name);
        return -1;
    }
    return 0;
}

/* submit(op, waiter=None): queue op (CREATED -> PENDING); the ring now owns
 * it and its resources. Refused (self._refuse(op) raises) on a closed ring,
 * from another thread, or for an opcode this kernel lacks. */
static PyObject *core_submit(Core *c, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *opcode_obj, *waiter;
    Op *op;
    long opcode;

    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "submit(op, waiter=None)");
        return NULL;
    }
    if (core_check_op(args[0]) < 0)
        return NULL;
    op = (Op *)args[0];
    waiter = nargs == 2 ? args[1] : NULL;
    if (op->state != STATE_CREATED) {
        PyErr_SetString(PyExc_RuntimeError, "this operation was submitted already");
        return NULL;
    }
    opcode_obj = PyObject_GetAttr((PyObject *)Py_TYPE(op), str_opcode);
    if (!opcode_obj)
        return NULL;
    opcode = PyLong_AsLong(opcode_obj);
    Py_DECREF(opcode_obj);
    if (opcode == -1 && PyErr_Occurred())
        return NULL;
    if (opcode < 0 || opcode > 255 || c->closed || !c->ring ||
        c->thread != PyThread_get_thread_ident() || c->generation != fork_generation ||
        !c->supported[opcode])
        return PyObject_CallMethodOneArg((PyObject *)c, str_refuse, (PyObject *)op);
    if (opcode == IORING_OP_CLOSE) {
        /* Closing an fd does not stop the kernel's operations on it. */
        PyObject *fd = PyLong_FromLong(op->fd), *r;
        r = fd ? PyObject_CallMethodOneArg((PyObject *)c, str_cancel_fd, fd) : NULL;
        Py_XDECREF(fd);
        if (!r)
            return NULL;
        Py_DECREF(r);
    }
    if (PyList_Append(c->pending, (PyObject *)op) < 0)
        return NULL;
    op->opcode = (unsigned char)opcode;
    op->user_data = c->next_user_data++; /* 64 bits: never wraps, never reused */
    c->pass_submits++;
    optional_set(&op->waiter, waiter);
    op->state = STATE_PENDING;
    Py_RETURN_NONE;
}

static int core_enter(Core *c, unsigned wait_nr, long long timeout_ns, unsigned max,
                      Py_ssize_t *total);

/* The SQ is full: hand it to the kernel. 0 if the kernel refused (it wants
 * CQEs reaped first; the rest waits for the next flush), 1 if there is room
 * now, -1 on error. */
static int core_make_room(Core *c)
{
    Py_ssize_t n;

    if (core_enter(c, 0, -1, 0, &n) < 0)
        return -1;
    return c->last_submit != -EBUSY && c->last_submit != -EAGAIN;
}

/* _prepare(): cancel requests first, then PENDING -> SUBMITTED for as many
 * operations as the SQ and the in-flight limit allow (at most half the CQ:
 * the other half is for cancel requests, so the ring's own traffic never
 * overflows the CQ). */
static PyObject *core_prepare(Core *c, PyObject *Py_UNUSED(ignored))
{
    Py_ssize_t i = 0, room;
    int ret = 1; /* 1: go on; 0: the kernel wants CQEs reaped first; -1: error */

    if (core_usable(c) < 0)
        return NULL;
    while (i < PyList_GET_SIZE(c->cancels)) {
        Op *target = (Op *)PyList_GET_ITEM(c->cancels, i);
        /* Its CQE may have come first: then there is nothing to cancel.
         * ASYNC_CANCEL matches on user_data, carried in addr. */
        if (target->state == STATE_CANCELLING &&
            ouring_prep(c->ring, IORING_OP_ASYNC_CANCEL, -1,
                        (const void *)(uintptr_t)target->user_data, 0, 0, 0, CANCEL_USER_DATA,
                        0, 0, 0, 0) < 0) {
            if ((ret = core_make_room(c)) <= 0)
                break;
            continue;
        }
        i++;
    }
    if (PyList_SetSlice(c->cancels, 0, i, NULL) < 0 || ret < 0)
        return NULL;
    if (ret == 0)
        Py_RETURN_NONE; /* the rest waits for the next flush */

    room = c->max_inflight - PyDict_GET_SIZE(c->inflight);
    i = 0;
    while (i < PyList_GET_SIZE(c->pending) && room > 0) {
        Op *op = (Op *)PyList_GET_ITEM(c->pending, i);
        PyObject *key;

        if (ouring_prep(c->ring, op->opcode, op->fd, (const void *)(uintptr_t)op->addr,
                        op->length, op->offset, op->op_flags, op->user_data, op->sqe_flags,
                        op->ioprio, op->buf_index, op->file_index) < 0) {
            if ((ret = core_make_room(c)) <= 0)
                break;
            continue;
        }
        /* The SQE is written: from here on the kernel may own op's memory. */
        key = PyLong_FromUnsignedLongLong(op->user_data);
        if (!key || PyDict_SetItem(c->inflight, key, (PyObject *)op) < 0) {
            /* Out of memory with the SQE written: keep op referenced forever
             * rather than let the kernel write into freed memory. */
            Py_XDECREF(key);
            Py_INCREF(op);
            op->state = STATE_LEAKED;
            c->leaked++;
            i++;
            ret = -1;
            break;
        }
        Py_DECREF(key);
        op->state = STATE_SUBMITTED;
        c->submitted++;
        room--;
        i++;
    }
    if (PyList_SetSlice(c->pending, 0, i, NULL) < 0 || ret < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* Settle n reaped CQEs. */
static int core_dispatch(Core *c, int n)
{
    struct first_error err = {NULL, NULL, NULL};
    int i;

    for (i = 0; i < n; i++) {
        PyObject *key, *op;

        /* Cancel requests own nothing and are skipped. */
        if (c->cqe_user_data[i] == CANCEL_USER_DATA)
            continue;
        key = PyLong_FromUnsignedLongLong(c->cqe_user_data[i]);
        op = key ? PyDict_GetItemWithError(c->inflight, key) : NULL;
        if (!op) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_SystemError, "ouring: a CQE for unknown user_data %llu",
                             (unsigned long long)c->cqe_user_data[i]);
            keep_error(&err);
            Py_XDECREF(key);
            continue;
        }
        Py_INCREF(op);
        if (c->cqe_flags[i] & IORING_CQE_F_MORE)
            c->more++;
        if (PyObject_TypeCheck(op, &MultiRecvType) &&
            !multirecv_cqe(c, (MultiRecv *)op, c->cqe_res[i], c->cqe_flags[i], &err)) {
            Py_DECREF(key);
            Py_DECREF(op);
            continue;
        }
        if (c->cqe_flags[i] & IORING_CQE_F_MORE) {
            /* Not the final CQE (a multishot, or send_zc's result before its
             * notification): the operation stays in flight, and so does all
             * it owns; its _more(res, flags) takes what this CQE says. */
            PyObject *r = PyObject_CallMethod(op, "_more", "iI", c->cqe_res[i],
                                              (unsigned int)c->cqe_flags[i]);
            if (!r)
                keep_error(&err);
            Py_XDECREF(r);
            Py_DECREF(key);
            Py_DECREF(op);
            continue;
        }
        if (PyDict_DelItem(c->inflight, key) < 0)
            keep_error(&err);
        Py_DECREF(key);
        ((Op *)op)->cqe_flags = c->cqe_flags[i];
        core_settle(c, (Op *)op, c->cqe_res[i], &err);
        Py_DECREF(op);
    }
    return restore_error(&err);
}

/* Submit what the SQ holds, wait as asked (the GIL released), and settle up
 * to `max` CQEs at a time until fewer are ready. */
static int core_enter(Core *c, unsigned wait_nr, long long timeout_ns, unsigned max,
                      Py_ssize_t *total)
{
    *total = 0;
    if (max > c->batch)
        max = c->batch;
    for (;;) {
        int n, submitted;

        if (!c->ring) {
            PyErr_SetString(PyExc_RuntimeError, "the ring is closed");
            return -1;
        }
        if (wait_nr) {
            Py_BEGIN_ALLOW_THREADS
            n = ouring_submit_and_reap(c->ring, wait_nr, timeout_ns, c->cqe_user_data,
                                       c->cqe_res, c->cqe_flags, max, &c->last_submit);
            Py_END_ALLOW_THREADS
        } else {
            n = ouring_submit_and_reap(c->ring, 0, timeout_ns, c->cqe_user_data, c->cqe_res,
                                       c->cqe_flags, max, &c->last_submit);
        }
        submitted = c->last_submit;
        if (submitted > 0)
            c->batches++;
        /* The CQEs are consumed from the CQ already: settle them first. */
        if (n > 0 && core_dispatch(c, n) < 0)
            return -1;
        *total += n;
        if (submitted < 0 && submitted != -EBUSY && submitted != -EAGAIN &&
            submitted != -EINTR) {
            raise_os_error(submitted, Py_None);
            return -1;
        }
        if ((unsigned)n < max || max == 0)
            return 0;
        wait_nr = 0; /* a full batch: more may be ready */
        timeout_ns = -1;
    }
}

/* _enter(wait_nr, timeout_ns, max_cqes) -> CQEs settled. */
static PyObject *core_enter_py(Core *c, PyObject *const *args, Py_ssize_t nargs)
{
    unsigned long wait_nr, max;
    long long timeout_ns;
    Py_ssize_t total;

    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "_enter(wait_nr, timeout_ns, max_cqes)");
        return NULL;
    }
    if (core_usable(c) < 0)
        return NULL;
    wait_nr = PyLong_AsUnsignedLong(args[0]);
    timeout_ns = PyLong_AsLongLong(args[1]);
    max = PyLong_AsUnsignedLong(args[2]);
    if (PyErr_Occurred())
        return NULL;
    if (core_enter(c, (unsigned)wait_nr, timeout_ns, (unsigned)max, &total) < 0)
        return NULL;
    return PyLong_FromSsize_t(total);
}

/* cancel(op, by=CALLER) -> True when op was withdrawn before the kernel saw
 * it (PENDING -> DONE: it did not happen); False when a cancel request goes
 * to the kernel (SUBMITTED -> CANCELLING) or op is past that. */
static PyObject *core_cancel(Core *c, PyObject *const *args, Py_ssize_t nargs)
{
    long by = CANCEL_BY_CALLER;
    Op *op;

    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "cancel(op, by=CALLER)");
        return NULL;
    }
    if (core_check_op(args[0]) < 0)
        return NULL;
    op = (Op *)args[0];
    if (nargs == 2 && (by = PyLong_AsLong(args[1])) == -1 && PyErr_Occurred())
        return NULL;
    if (op->state == STATE_PENDING) {
        struct first_error err = {NULL, NULL, NULL};
        Py_ssize_t i = PySequence_Index(c->pending, (PyObject *)op);

        if (i < 0 || PyList_SetSlice(c->pending, i, i + 1, NULL) < 0)
            return NULL;
        op->cancel_by = (int)by;
        Py_INCREF(op);
        core_settle(c, op, -ECANCELED, &err);
        Py_DECREF(op);
        if (restore_error(&err) < 0)
            return NULL;
        Py_RETURN_TRUE;
    }
    if (op->state == STATE_SUBMITTED && core_request_cancel(c, op, (int)by) < 0)
        return NULL;
    Py_RETURN_FALSE;
}

/* abandon(op): nobody will receive op's result (its coroutine was closed or
 * thrown into): stop it if possible, and undo its effect (close an fd) if it
 * happened, now if it is DONE already, else when its CQE comes. Once per
 * operation: a second undo could close somebody else's fd. */
static PyObject *core_abandon(Core *c, PyObject *op_obj)
{
    PyObject *r = NULL;
    Op *op;

    if (core_check_op(op_obj) < 0)
        return NULL;
    op = (Op *)op_obj;
    if (op->abandoned)
        Py_RETURN_NONE;
    Py_CLEAR(op->waiter);
    op->abandoned = 1;
    if (op->state == STATE_PENDING || op->state == STATE_SUBMITTED)
        r = core_cancel(c, &op_obj, 1);
    else if (op->state == STATE_DONE && op->res >= 0)
        r = PyObject_CallMethodNoArgs(op_obj, str_discard);
    else
        Py_RETURN_NONE;
    if (!r)
        return NULL;
    Py_DECREF(r);
    Py_RETURN_NONE;
}

/* _withdraw_pending(by): every PENDING operation -> DONE, did not happen. */
static PyObject *core_withdraw_pending(Core *c, PyObject *by_obj)
{
    struct first_error err = {NULL, NULL, NULL};
    long by = PyLong_AsLong(by_obj);
    PyObject *ops;
    Py_ssize_t i;

    if (by == -1 && PyErr_Occurred())
        return NULL;
    ops = c->pending;
    if (!(c->pending = PyList_New(0))) {
        c->pending = ops;
        return NULL;
    }
    for (i = 0; i < PyList_GET_SIZE(ops); i++) {
        Op *op = (Op *)PyList_GET_ITEM(ops, i);
        op->cancel_by = (int)by;
        core_settle(c, op, -ECANCELED, &err);
    }
    Py_DECREF(ops);
    if (restore_error(&err) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* _leak_inflight() -> list: SUBMITTED/CANCELLING -> LEAKED. The kernel may
 * still write into these operations' memory; the caller keeps them forever. */
static PyObject *core_leak_inflight(Core *c, PyObject *Py_UNUSED(ignored))
{
    PyObject *stranded = PyDict_Values(c->inflight);
    Py_ssize_t i;

    if (!stranded)
        return NULL;
    for (i = 0; i < PyList_GET_SIZE(stranded); i++)
        ((Op *)PyList_GET_ITEM(stranded, i))->state = STATE_LEAKED;
    PyDict_Clear(c->inflight);
    c->leaked += (unsigned long long)PyList_GET_SIZE(stranded);
    return stranded;
}

/* _open_core(ring_address, max_inflight, batch, thread): drive this ring. */
static PyObject *core_open(Core *c, PyObject *args)
{
    unsigned long long addr;
    Py_ssize_t max_inflight;
    unsigned int batch;
    unsigned long thread;

    if (!PyArg_ParseTuple(args, "KnIk", &addr, &max_inflight, &batch, &thread))
        return NULL;
    if (c->ring) {
        PyErr_SetString(PyExc_RuntimeError, "already attached");
        return NULL;
    }
    if (batch == 0) {
        PyErr_SetString(PyExc_ValueError, "batch must be > 0");
        return NULL;
    }
    c->cqe_user_data = PyMem_Calloc(batch, sizeof(*c->cqe_user_data));
    c->cqe_res = PyMem_Calloc(batch, sizeof(*c->cqe_res));
    c->cqe_flags = PyMem_Calloc(batch, sizeof(*c->cqe_flags));
    if (!c->cqe_user_data || !c->cqe_res || !c->cqe_flags)
        return PyErr_NoMemory();
    c->ring = (struct ouring *)(uintptr_t)addr;
    c->max_inflight = max_inflight;
    c->batch = batch;
    c->thread = thread;
    c->generation = fork_generation;
    c->closed = 0;
    Py_RETURN_NONE;
}

/* _close_core(): the ring's memory is about to be freed: never touch it again. */
static PyObject *core_close(Core *c, PyObject *Py_UNUSED(ignored))
{
    if (c->pool) {
        /* A forked child must not unregister the parent's buffer group
         * through the inherited ring fd. */
        int parent = c->ring && c->generation == fork_generation;
        pool_close(parent ? &c->ring->ring : NULL, c->pool, c->leaked > 0);
        c->pool = NULL;
    }
    c->ring = NULL;
    Py_RETURN_NONE;
}

/* _open_recv_pool(count, size, group) -> 0, or -errno when this kernel (or
 * its limits) refuses a provided-buffer ring: receives then stay one-shot. */
static PyObject *core_open_recv_pool(Core *c, PyObject *args)
{
    unsigned count, size;
    unsigned short group;
    int ret;

    if (!PyArg_ParseTuple(args, "IIH", &count, &size, &group))
        return NULL;
    if (core_usable(c) < 0)
        return NULL;
    if (c->pool) {
        PyErr_SetString(PyExc_RuntimeError, "the receive pool is open already");
        return NULL;
    }
    if (!count || count > 32768 || (count & (count - 1)) || !size || size > OURING_MAX_RW) {
        PyErr_SetString(PyExc_ValueError, "count must be a power of two <= 32768, size > 0");
        return NULL;
    }
    ret = pool_open(&c->ring->ring, count, size, group, &c->pool);
    return PyLong_FromLong(ret);
}

static PyObject *core_new(PyTypeObject *type, PyObject *Py_UNUSED(args), PyObject *Py_UNUSED(kw))
{
    Core *c = (Core *)type->tp_alloc(type, 0);

    if (!c)
        return NULL;
    c->closed = 1; /* until _open_core: a core that never attached is not open */
    c->next_user_data = 1;
    c->alone = 1; /* the first operation of a run has nobody to batch with */
    c->pending = PyList_New(0);
    c->inflight = PyDict_New();
    c->cancels = PyList_New(0);
    c->idle_callbacks = PyList_New(0);
    if (!c->pending || !c->inflight || !c->cancels || !c->idle_callbacks) {
        Py_DECREF(c);
        return NULL;
    }
    return (PyObject *)c;
}

static int core_traverse(Core *c, visitproc visit, void *arg)
{
    Py_VISIT(c->pending);
    Py_VISIT(c->inflight);
    Py_VISIT(c->cancels);
    Py_VISIT(c->idle_callbacks);
    Py_VISIT(c->executor);
    Py_VISIT(c->wake);
    return 0;
}

/* Breaks cycles through the executor (ring -> driver -> ring) only. The
 * containers stay: every method may use them, and `inflight` holds what the
 * kernel may touch (a ring is closed, or its __del__ leaked those, before it
 * is collected); a cycle through a queued operation's waiter is broken at
 * the task or frame. */
static int core_clear(Core *c)
{
    Py_CLEAR(c->executor);
    Py_CLEAR(c->wake);
    return 0;
}

static void core_dealloc(Core *c)
{
    PyObject_GC_UnTrack(c);
    core_clear(c);
    Py_CLEAR(c->idle_callbacks);
    Py_CLEAR(c->cancels);
    Py_CLEAR(c->pending);
    Py_CLEAR(c->inflight);
    PyMem_Free(c->cqe_user_data);
    PyMem_Free(c->cqe_res);
    PyMem_Free(c->cqe_flags);
    Py_TYPE(c)->tp_free((PyObject *)c);
}

static PyObject *core_get_executor(Core *c, void *Py_UNUSED(closure))
{
    return optional_get(c->executor);
}

static int core_set_executor(Core *c, PyObject *value, void *Py_UNUSED(closure))
{
    PyObject *wake = NULL;

    if (value && value != Py_None && !(wake = PyObject_GetAttr(value, str_wake)))
        return -1;
    Py_XSETREF(c->wake, wake);
    optional_set(&c->executor, value);
    return 0;
}

static PyObject *core_get_supported(Core *c, void *Py_UNUSED(closure))
{
    return PyBytes_FromStringAndSize((const char *)c->supported, sizeof(c->supported));
}

static int core_set_supported(Core *c, PyObject *value, void *Py_UNUSED(closure))
{
    char *data;
    Py_ssize_t n;

    if (!value || PyBytes_AsStringAndSize(value, &data, &n) < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "_supported must be bytes");
        return -1;
    }
    memset(c->supported, 0, sizeof(c->supported));
    memcpy(c->supported, data, (size_t)(n < 256 ? n : 256));
    return 0;
}

static PyMethodDef core_methods[] = {
    {"submit", (PyCFunction)(void (*)(void))core_submit, METH_FASTCALL,
     "submit(op, waiter=None): queue op; the ring now owns it and its resources.\n"
     "waiter is the executor's token to wake when op is DONE."},
    {"cancel", (PyCFunction)(void (*)(void))core_cancel, METH_FASTCALL,
     "cancel(op, by=CALLER) -> True when op was withdrawn before the kernel saw it\n"
     "(DONE, did not happen); False when a cancel request goes to the kernel."},
    {"abandon", (PyCFunction)core_abandon, METH_O,
     "abandon(op): nobody will receive op's result: stop it if possible, and undo\n"
     "its effect (close an fd) if it completes."},
    {"_prepare", (PyCFunction)core_prepare, METH_NOARGS,
     "Write queued cancels, then operations, into the SQ."},
    {"_enter", (PyCFunction)(void (*)(void))core_enter_py, METH_FASTCALL,
     "_enter(wait_nr, timeout_ns, max_cqes) -> CQEs settled."},
    {"_withdraw_pending", (PyCFunction)core_withdraw_pending, METH_O,
     "_withdraw_pending(by): every PENDING operation is DONE and did not happen."},
    {"_leak_inflight", (PyCFunction)core_leak_inflight, METH_NOARGS,
     "_leak_inflight() -> the operations the kernel still owns, now LEAKED."},
    {"_open_core", (PyCFunction)core_open, METH_VARARGS,
     "_open_core(ring_address, max_inflight, batch, thread): drive this ring."},
    {"_close_core", (PyCFunction)core_close, METH_NOARGS,
     "The ring's memory is about to be freed."},
    {"_open_recv_pool", (PyCFunction)core_open_recv_pool, METH_VARARGS,
     "_open_recv_pool(count, size, group) -> 0 or -errno: the buffers of multishot receives."},
    {NULL},
};

static PyMemberDef core_members[] = {
    {"_pending", T_OBJECT_EX, offsetof(Core, pending), READONLY, NULL},
    {"_inflight", T_OBJECT_EX, offsetof(Core, inflight), READONLY, NULL},
    {"_cancels", T_OBJECT_EX, offsetof(Core, cancels), READONLY, NULL},
    {"_idle_callbacks", T_OBJECT_EX, offsetof(Core, idle_callbacks), 0, NULL},
    {"_closed", T_BOOL, offsetof(Core, closed), 0, NULL},
    {"_pass_submits", T_ULONGLONG, offsetof(Core, pass_submits), 0,
     "operations submitted since the executor's last pass began"},
    {"_alone", T_BOOL, offsetof(Core, alone), 0,
     "the executor's: the last pass submitted at most one operation"},
    {"_max_inflight", T_PYSSIZET, offsetof(Core, max_inflight), 0, NULL},
    {"_last_submit", T_INT, offsetof(Core, last_submit), READONLY, NULL},
    {"_submitted", T_ULONGLONG, offsetof(Core, submitted), 0, NULL},
    {"_completed", T_ULONGLONG, offsetof(Core, completed), 0, NULL},
    {"_cancelled", T_ULONGLONG, offsetof(Core, cancelled), 0, NULL},
    {"_leaked", T_ULONGLONG, offsetof(Core, leaked), 0, NULL},
    {"_batches", T_ULONGLONG, offsetof(Core, batches), 0, NULL},
    {"_more_cqes", T_ULONGLONG, offsetof(Core, more), 0, NULL},
    {NULL},
};

static PyGetSetDef core_getset[] = {
    {"executor", (getter)core_get_executor, (setter)core_set_executor,
     "the event-loop adapter that drives this ring (set by it), or None", NULL},
    {"_supported", (getter)core_get_supported, (setter)core_set_supported,
     "one byte per opcode: 1 if this kernel implements it", NULL},
    {NULL},
};

static PyTypeObject CoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ouring._hot.RingCore",
    .tp_doc = "The operation table of one ring and every state change of an operation.",
    .tp_basicsize = sizeof(Core),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)core_traverse,
    .tp_clear = (inquiry)core_clear,
    .tp_new = core_new,
    .tp_dealloc = (destructor)core_dealloc,
    .tp_methods = core_methods,
    .tp_members = core_members,
    .tp_getset = core_getset,
};

#include "trio_await.c" /* the trio executor's awaitables */

/* cached_ring(var, find): the ring that the ContextVar `var` caches for this
 * task as (ring, thread ident), if it was cached by this thread and is still
 * open; else find(). Every operation asks (_trio.current_ring), so the
 * common case costs no Python frame. */
static PyObject *hot_cached_ring(PyObject *Py_UNUSED(m), PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *cached = NULL;

    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "cached_ring(var, find)");
        return NULL;
    }
    if (PyContextVar_Get(args[0], NULL, &cached) < 0)
        return NULL;
    if (cached && PyTuple_CheckExact(cached) && PyTuple_GET_SIZE(cached) == 2 &&
        PyLong_CheckExact(PyTuple_GET_ITEM(cached, 1))) {
        PyObject *ring = PyTuple_GET_ITEM(cached, 0);
        unsigned long thread = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(cached, 1));
        int closed = 1;

        if (thread == PyThread_get_thread_ident()) {
            if (PyObject_TypeCheck(ring, &CoreType)) {
                closed = ((Core *)ring)->closed;
            } else {
                PyObject *attr = PyObject_GetAttrString(ring, "_closed");
                closed = attr ? PyObject_IsTrue(attr) : -1;
                Py_XDECREF(attr);
            }
        }
        if (closed == 0) {
            Py_INCREF(ring);
            Py_DECREF(cached);
            return ring;
        }
        if (closed < 0 || PyErr_Occurred()) {
            Py_DECREF(cached);
            return NULL;
        }
    }
    Py_XDECREF(cached);
    return PyObject_CallNoArgs(args[1]);
}

static PyObject *hot_set_helpers(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *h[6];

    if (!PyArg_UnpackTuple(args, "set_helpers", 6, 6, &h[0], &h[1], &h[2], &h[3], &h[4], &h[5]))
        return NULL;
    Py_XSETREF(unlendable_factory, Py_NewRef(h[0]));
    Py_XSETREF(in_use_factory, Py_NewRef(h[1]));
    Py_XSETREF(fileno_for_helper, Py_NewRef(h[2]));
    Py_XSETREF(file_offset_helper, Py_NewRef(h[3]));
    Py_XSETREF(u32_helper, Py_NewRef(h[4]));
    Py_XSETREF(buffer_error_helper, Py_NewRef(h[5]));
    Py_RETURN_NONE;
}

static PyObject *hot_after_fork_in_child(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(a))
{
    fork_generation++;
    Py_RETURN_NONE;
}

static PyMethodDef hot_methods[] = {
    {"after_fork_in_child", hot_after_fork_in_child, METH_NOARGS,
     "Registered with os.register_at_fork: every ring opened before is the parent's."},
    {"cached_ring", (PyCFunction)(void (*)(void))hot_cached_ring, METH_FASTCALL,
     "cached_ring(var, find): the open ring that ContextVar var caches for this thread\n"
     "as (ring, thread ident), else find()."},
    {"set_trio", hot_set_trio, METH_VARARGS,
     "set_trio(checkpoint_if_cancelled, CancelShieldedCheckpoint, WaitTaskRescheduled,\n"
     "current_task, Value, ClosedResourceError, Abort.SUCCEEDED, arm, finish): trio's\n"
     "objects for trio_perform and trio_receive (native/trio_await.c)."},
    {"trio_perform", (PyCFunction)(void (*)(void))hot_trio_perform, METH_FASTCALL,
     "trio_perform(ring, op): the trio executor's perform; an operation that usually\n"
     "completes inside the pass's io_uring_enter yields once, in C."},
    {"trio_receive", (PyCFunction)(void (*)(void))hot_trio_receive, METH_FASTCALL,
     "trio_receive(ring, rx, fd, take, *args): awaitable; take(*args) from the multishot\n"
     "queue rx once it has something (the trio executor's receive)."},
    {"set_helpers", hot_set_helpers, METH_VARARGS,
     "set_helpers(unlendable, in_use, fileno_for, file_offset, u32, buffer_error):\n"
     "the Python callables behind error messages and slow-path argument checks."},
    {NULL},
};

static struct PyModuleDef hot_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "ouring._hot",
    .m_doc = "The per-operation hot path of ouring in the CPython C API.",
    .m_size = -1,
    .m_methods = hot_methods,
};

PyMODINIT_FUNC PyInit__hot(void)
{
    PyObject *m;

    BufOpType.tp_base = &OpType;
    FileOpType.tp_base = &BufOpType;
    MessageOpType.tp_base = &BufOpType;
    ReceiveOpType.tp_base = &BufOpType;
    MultiRecvType.tp_base = &OpType;
    CountOpType.tp_base = &BufOpType;
    if (PyType_Ready(&LeaseType) < 0 || PyType_Ready(&OpType) < 0 ||
        PyType_Ready(&BufOpType) < 0 || PyType_Ready(&FileOpType) < 0 ||
        PyType_Ready(&MessageOpType) < 0 || PyType_Ready(&ReceiveOpType) < 0 ||
        PyType_Ready(&GroupType) < 0 || PyType_Ready(&CoreType) < 0 ||
        PyType_Ready(&ReceiverType) < 0 || PyType_Ready(&MultiRecvType) < 0 ||
        PyType_Ready(&CountOpType) < 0 ||
        PyType_Ready(&PoolCoreType) < 0 || PyType_Ready(&PoolBufferType) < 0 ||
        trio_await_ready() < 0)
        return NULL;
    str_writes_buffer = PyUnicode_InternFromString("writes_buffer");
    str_flags = PyUnicode_InternFromString("flags");
    str_opcode = PyUnicode_InternFromString("opcode");
    str_release = PyUnicode_InternFromString("release");
    str_discard = PyUnicode_InternFromString("discard");
    str_refuse = PyUnicode_InternFromString("_refuse");
    str_cancel_fd = PyUnicode_InternFromString("cancel_fd");
    str_wake = PyUnicode_InternFromString("wake");
    str_check_open = PyUnicode_InternFromString("_check_open");
    str_check_process = PyUnicode_InternFromString("_check_process");
    if (!str_writes_buffer || !str_flags || !str_opcode || !str_release || !str_discard ||
        !str_refuse || !str_cancel_fd || !str_wake || !str_check_open || !str_check_process)
        return NULL;
    m = PyModule_Create(&hot_module);
    if (!m)
        return NULL;
    if (PyModule_AddObjectRef(m, "Lease", (PyObject *)&LeaseType) < 0 ||
        PyModule_AddObjectRef(m, "Operation", (PyObject *)&OpType) < 0 ||
        PyModule_AddObjectRef(m, "BufferOperation", (PyObject *)&BufOpType) < 0 ||
        PyModule_AddObjectRef(m, "FileOperation", (PyObject *)&FileOpType) < 0 ||
        PyModule_AddObjectRef(m, "MessageOperation", (PyObject *)&MessageOpType) < 0 ||
        PyModule_AddObjectRef(m, "ReceiveOperation", (PyObject *)&ReceiveOpType) < 0 ||
        PyModule_AddObjectRef(m, "Group", (PyObject *)&GroupType) < 0 ||
        PyModule_AddObjectRef(m, "Receiver", (PyObject *)&ReceiverType) < 0 ||
        PyModule_AddObjectRef(m, "SendOperation", (PyObject *)&CountOpType) < 0 ||
        PyModule_AddObjectRef(m, "MultishotReceive", (PyObject *)&MultiRecvType) < 0 ||
        PyModule_AddObjectRef(m, "RingCore", (PyObject *)&CoreType) < 0 ||
        PyModule_AddObjectRef(m, "TrioStep", (PyObject *)&StepType) < 0 ||
        PyModule_AddObjectRef(m, "PoolCore", (PyObject *)&PoolCoreType) < 0 ||
        PyModule_AddObjectRef(m, "PoolBuffer", (PyObject *)&PoolBufferType) < 0 ||
        PyModule_AddIntConstant(m, "MAX_RW", OURING_MAX_RW) < 0 ||
        PyModule_AddIntConstant(m, "CREATED", STATE_CREATED) < 0 ||
        PyModule_AddIntConstant(m, "PENDING", STATE_PENDING) < 0 ||
        PyModule_AddIntConstant(m, "SUBMITTED", STATE_SUBMITTED) < 0 ||
        PyModule_AddIntConstant(m, "CANCELLING", STATE_CANCELLING) < 0 ||
        PyModule_AddIntConstant(m, "DONE", STATE_DONE) < 0 ||
        PyModule_AddIntConstant(m, "LEAKED", STATE_LEAKED) < 0 ||
        PyModule_AddIntConstant(m, "CALLER", CANCEL_BY_CALLER) < 0 ||
        PyModule_AddIntConstant(m, "RING", CANCEL_BY_RING) < 0 ||
        PyModule_AddIntConstant(m, "CLOSED", CANCEL_BY_CLOSED) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
