/* ouring._hot: the per-operation hot path, in the CPython C API.
 *
 * cffi releases and re-takes the GIL around every foreign call and saves and
 * restores errno: about 2,400 instructions per call, three calls per
 * operation (lease, prep, unlease). Here the same work runs with the GIL held
 * and costs a few hundred: a `Lease` type (buffer export + lease table) and
 * `prep` (one SQE). Everything else stays in cffi (`_native`) and Python.
 *
 * Who owns what: a Lease owns one buffer export (Py_buffer) of its object and
 * one entry in the process-wide lease table, from construction until
 * `release()` (or its deallocation, if it was never released). The ring
 * (`struct ouring`) is owned by `_native`; `prep` only borrows its address,
 * which the Python Ring passes while it is open.
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

/* -- Lease ------------------------------------------------------------------- */

/* Python callables that build the exceptions, so their messages live in
 * _buffers.py: unlendable(obj, writable) and in_use(obj). */
static PyObject *unlendable_factory, *in_use_factory;

typedef struct {
    PyObject_HEAD
    PyObject *obj;       /* the caller's object, handed back on completion */
    Py_buffer view;      /* the export: pins a bytearray, keeps an mmap open */
    Py_ssize_t length;   /* what one SQE may move: min(view.len, OURING_MAX_RW) */
    int writable;        /* the kernel writes into it (read, recv, readv) */
    int held;            /* view and table entry not yet given back */
    int fresh;           /* obj is a new bytes object only this lease knows (fresh()) */
} Lease;

static void lease_give_back(Lease *self)
{
    if (!self->held)
        return;
    self->held = 0;
    if (self->view.len)
        ouring_unlease(self->view.buf, (size_t)self->view.len, self->writable);
    PyBuffer_Release(&self->view);
}

/* Raise unlendable(obj, writable) from the pending exception (`raise X from exc`). */
static PyObject *raise_unlendable(PyObject *obj, PyObject *writable)
{
    PyObject *type, *value, *tb, *exc;

    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb)
        PyException_SetTraceback(value, tb);
    exc = PyObject_CallFunctionObjArgs(unlendable_factory, obj, writable, NULL);
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
    return NULL;
}

static PyObject *lease_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *obj, *writable_obj, *exc;
    Lease *self;
    int writable, ret;

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
    /* PyBUF_SIMPLE asks for one contiguous run of bytes; a strided view refuses. */
    if (PyObject_GetBuffer(obj, &self->view, writable ? PyBUF_WRITABLE : PyBUF_SIMPLE) < 0) {
        Py_DECREF(self);
        return raise_unlendable(obj, writable_obj);
    }
    self->held = 1;
    self->writable = writable;
    if (self->view.len) {
        ret = ouring_lease(self->view.buf, (size_t)self->view.len, writable);
        if (ret < 0) {
            PyBuffer_Release(&self->view);
            self->held = 0;
            Py_DECREF(self);
            if (ret == -ENOMEM)
                return PyErr_NoMemory();
            exc = PyObject_CallOneArg(in_use_factory, obj);
            if (exc) {
                PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
                Py_DECREF(exc);
            }
            return NULL;
        }
    }
    self->obj = Py_NewRef(obj);
    self->length = self->view.len < OURING_MAX_RW ? self->view.len : OURING_MAX_RW;
    return (PyObject *)self;
}

/* Lease.fresh(size): a lease on a new bytes object of `size` bytes, left
 * uninitialised, that nothing else references. The kernel writes into it and
 * take(n) hands it out cut to n bytes: no copy, and no reused buffer to copy
 * out of. CPython's socket.recv fills the bytes it returns the same way; the
 * object is immutable only once someone else can see it. */
static PyObject *lease_fresh(PyTypeObject *type, PyObject *arg)
{
    Py_ssize_t size = PyLong_AsSsize_t(arg);
    Lease *self;
    int ret;

    if (size == -1 && PyErr_Occurred())
        return NULL;
    if (size < 1 || size > OURING_MAX_RW) {
        PyErr_Format(PyExc_ValueError, "size must be between 1 and %d, not %zd", OURING_MAX_RW,
                     size);
        return NULL;
    }
    self = (Lease *)type->tp_alloc(type, 0);
    if (!self)
        return NULL;
    self->obj = PyBytes_FromStringAndSize(NULL, size);
    if (!self->obj) {
        Py_DECREF(self);
        return NULL;
    }
    if (PyObject_GetBuffer(self->obj, &self->view, PyBUF_SIMPLE) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    self->held = 1;
    self->writable = 1;
    self->fresh = 1;
    /* New memory overlaps no lent range: only -ENOMEM can fail. */
    ret = ouring_lease(self->view.buf, (size_t)size, 1);
    if (ret < 0) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    self->length = size;
    return (PyObject *)self;
}

/* take(n): the fresh bytes object, cut to its first n bytes, once released.
 * The lease gives it up (obj becomes None). */
static PyObject *lease_take(Lease *self, PyObject *arg)
{
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    PyObject *obj;

    if (n == -1 && PyErr_Occurred())
        return NULL;
    if (!self->fresh || self->held || !self->obj || !PyBytes_CheckExact(self->obj)) {
        PyErr_SetString(PyExc_RuntimeError,
                        "take() needs a released Lease.fresh() that was not taken yet");
        return NULL;
    }
    obj = self->obj;
    if (n < 0 || n > PyBytes_GET_SIZE(obj)) {
        PyErr_Format(PyExc_ValueError, "n must be between 0 and %zd, not %zd",
                     PyBytes_GET_SIZE(obj), n);
        return NULL;
    }
    self->obj = Py_NewRef(Py_None);
    if (Py_REFCNT(obj) == 1)
        return _PyBytes_Resize(&obj, n) < 0 ? NULL : obj; /* frees obj on failure */
    /* Someone read lease.obj meanwhile: resizing in place would change their
     * object, so copy instead. */
    Py_SETREF(obj, PyBytes_FromStringAndSize(PyBytes_AS_STRING(obj), n));
    return obj;
}

static PyObject *lease_release(Lease *self, PyObject *Py_UNUSED(ignored))
{
    lease_give_back(self);
    Py_RETURN_NONE;
}

static PyObject *lease_get_ptr(Lease *self, void *Py_UNUSED(closure))
{
    return PyLong_FromVoidPtr(self->held ? self->view.buf : NULL);
}

/* The garbage collector must see through a lease: a caller's object may
 * refer back to the operation that holds it (buf -> op -> lease -> buf). */
static int lease_traverse(Lease *self, visitproc visit, void *arg)
{
    Py_VISIT(self->obj);
    if (self->held)
        Py_VISIT(self->view.obj);
    return 0;
}

/* Only an unreachable lease gets here or to dealloc unreleased. The ring
 * keeps every operation the kernel may touch reachable (in flight, or leaked
 * forever), so an unreachable lease was never seen by the kernel, or its
 * operation is over: giving the memory back is safe. */
static int lease_clear(Lease *self)
{
    lease_give_back(self);
    Py_CLEAR(self->obj);
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
    {"fresh", (PyCFunction)lease_fresh, METH_O | METH_CLASS,
     "fresh(size): a lease on a new, uninitialised bytes object of size bytes\n"
     "for the kernel to write into; take(n) hands it out."},
    {"take", (PyCFunction)lease_take, METH_O,
     "take(n): a fresh() lease's bytes, cut to n bytes, after release()."},
    {NULL},
};

static PyMemberDef lease_members[] = {
    {"obj", T_OBJECT, offsetof(Lease, obj), READONLY, "the lent object"},
    {"length", T_PYSSIZET, offsetof(Lease, length), READONLY,
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

/* -- prep -------------------------------------------------------------------- */

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

/* prep(ring, opcode, fd, addr, len, off, op_flags, user_data, sqe_flags) -> 0
 * or -EBUSY (SQ full). `ring` and `addr` are addresses as ints. */
static PyObject *hot_prep(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t ring, opcode, addr, len, off, op_flags, user_data, sqe_flags;
    long fd;

    if (nargs != 9) {
        PyErr_SetString(PyExc_TypeError, "prep() takes 9 arguments");
        return NULL;
    }
    fd = PyLong_AsLong(args[2]);
    if (fd == -1 && PyErr_Occurred())
        return NULL;
    if (fd < INT32_MIN || fd > INT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "fd out of range");
        return NULL;
    }
    if (u64_arg(args[0], UINTPTR_MAX, &ring) || u64_arg(args[1], 255, &opcode) ||
        u64_arg(args[3], UINT64_MAX, &addr) || u64_arg(args[4], UINT32_MAX, &len) ||
        u64_arg(args[5], UINT64_MAX, &off) || u64_arg(args[6], UINT32_MAX, &op_flags) ||
        u64_arg(args[7], UINT64_MAX, &user_data) || u64_arg(args[8], 255, &sqe_flags))
        return NULL;
    return PyLong_FromLong(ouring_prep((struct ouring *)(uintptr_t)ring, (int)opcode, (int)fd,
                                       (const void *)(uintptr_t)addr, (uint32_t)len, off,
                                       (uint32_t)op_flags, user_data, (uint8_t)sqe_flags));
}

static PyObject *hot_set_error_factories(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *unlendable, *in_use;

    if (!PyArg_UnpackTuple(args, "set_error_factories", 2, 2, &unlendable, &in_use))
        return NULL;
    Py_XSETREF(unlendable_factory, Py_NewRef(unlendable));
    Py_XSETREF(in_use_factory, Py_NewRef(in_use));
    Py_RETURN_NONE;
}

static PyMethodDef hot_methods[] = {
    {"prep", (PyCFunction)(void (*)(void))hot_prep, METH_FASTCALL,
     "prep(ring, opcode, fd, addr, len, off, op_flags, user_data, sqe_flags):\n"
     "write one SQE; 0, or -EBUSY when the SQ is full (nothing written)."},
    {"set_error_factories", hot_set_error_factories, METH_VARARGS,
     "set_error_factories(unlendable, in_use): the callables that build Lease's exceptions."},
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

    if (PyType_Ready(&LeaseType) < 0)
        return NULL;
    m = PyModule_Create(&hot_module);
    if (!m)
        return NULL;
    if (PyModule_AddObjectRef(m, "Lease", (PyObject *)&LeaseType) < 0 ||
        PyModule_AddIntConstant(m, "MAX_RW", OURING_MAX_RW) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
