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

/* -- lent buffers -------------------------------------------------------------- */


/* Raise buffer_error(res, buf): the OSError for a negative result (with
 * .buffer = buf unless buf is None). Returns NULL. */
static PyObject *raise_os_error(int res, PyObject *buf)
{
    PyObject *code = PyLong_FromLong(res);
    PyObject *exc = code ? CALL_HOOK(buffer_error, code, buf, NULL) : NULL;

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
    exc = CALL_HOOK(unlendable, obj, writable ? Py_True : Py_False, NULL);
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
            exc = CALL_HOOK(in_use, obj, NULL);
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
    .tp_name = "ouring._ringcore.Lease",
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

