/* Buffer pools: page-aligned memory of ouring's own, cut into equal buffers
 * that a ring can register with the kernel (io_uring_register_buffers) for
 * READ_FIXED/WRITE_FIXED. A part of the ring-core extension (see internal.h).
 *
 * `PoolCore` owns one anonymous mmap, from construction until its
 * deallocation: every `PoolBuffer` holds a strong reference to its pool, and
 * every operation that lent a PoolBuffer holds the buffer (its lend's `obj`)
 * until its final CQE, or forever if the ring leaked it. So the mapping is
 * unmapped only once no buffer object exists, and no buffer object exists
 * while the kernel may write into it.
 *
 * A PoolBuffer is a one-shot handle on one slot. release() (or leaving its
 * `with` block, or its deallocation) gives the slot back, but the slot
 * re-enters the free list only once the last buffer export is gone: an
 * operation in flight holds one (the lend), and so does a memoryview the
 * user still has. A released handle refuses new exports, and the next get()
 * of that slot returns a new handle, so a stale reference can never reach
 * the memory of the slot's next owner. Everything here runs with the GIL
 * held. */

#include <sys/mman.h>

typedef struct {
    PyObject_HEAD
    char *base;          /* the mapping: page-aligned; NULL if it failed */
    size_t map_len;      /* count * stride */
    Py_ssize_t size;     /* bytes per buffer, as the user asked */
    Py_ssize_t stride;   /* size rounded up to a page: each buffer starts page-aligned */
    int count;
    int nfree;
    int *free;           /* a stack of free slot indices, lowest on top at start */
    PyObject *dict;      /* the Python subclass's attributes */
    PyObject *weakrefs;
} PoolCore;

typedef struct {
    PyObject_HEAD
    PoolCore *pool; /* strong: keeps the mapping alive */
    char *addr;
    Py_ssize_t exports; /* live buffer exports (lends and memoryviews) */
    int index;
    char released;      /* given back: no new exports; the slot returns at exports == 0 */
    char home;          /* the slot is back in the pool: this handle is dead */
} PoolBuffer;

static PyTypeObject PoolCoreType, PoolBufferType;

#define OURING_POOL_MAX_COUNT 16384          /* IORING_MAX_REG_BUFFERS */
#define OURING_POOL_MAX_SIZE (1L << 30)      /* the kernel refuses a registered buffer over 1 GiB */

static PyObject *pool_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"count", "size", NULL};
    Py_ssize_t count, size, page = sysconf(_SC_PAGESIZE);
    PoolCore *self;
    int i;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "nn", kwlist, &count, &size))
        return NULL;
    if (count < 1 || count > OURING_POOL_MAX_COUNT) {
        PyErr_Format(PyExc_ValueError, "count must be between 1 and %d, not %zd",
                     OURING_POOL_MAX_COUNT, count);
        return NULL;
    }
    if (size < 1 || size > OURING_POOL_MAX_SIZE) {
        PyErr_Format(PyExc_ValueError, "size must be between 1 and %ld bytes, not %zd",
                     OURING_POOL_MAX_SIZE, size);
        return NULL;
    }
    self = (PoolCore *)type->tp_alloc(type, 0);
    if (!self)
        return NULL;
    self->size = size;
    self->stride = (size + page - 1) / page * page;
    self->count = (int)count;
    self->map_len = (size_t)count * (size_t)self->stride;
    self->free = PyMem_Malloc(sizeof(int) * (size_t)count);
    if (!self->free) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    /* Anonymous and private: zero-filled, page-aligned, ouring's own. */
    self->base = mmap(NULL, self->map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                      -1, 0);
    if (self->base == MAP_FAILED) {
        self->base = NULL;
        Py_DECREF(self);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    for (i = 0; i < self->count; i++)
        self->free[i] = self->count - 1 - i; /* pops 0, 1, 2, ... */
    self->nfree = self->count;
    return (PyObject *)self;
}

static int pool_traverse(PoolCore *self, visitproc visit, void *arg)
{
    Py_VISIT(self->dict);
    return 0;
}

static int pool_clear(PoolCore *self)
{
    Py_CLEAR(self->dict);
    return 0;
}

/* No PoolBuffer exists any more (each holds the pool): nothing can lend this
 * memory to the kernel, and no operation holds any of it. */
static void pool_dealloc(PoolCore *self)
{
    PyObject_GC_UnTrack(self);
    if (self->weakrefs)
        PyObject_ClearWeakRefs((PyObject *)self);
    pool_clear(self);
    if (self->base)
        munmap(self->base, self->map_len);
    PyMem_Free(self->free);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* _take() -> a new PoolBuffer on a free slot, or None when every one is out. */
static PyObject *pool_take(PoolCore *self, PyObject *Py_UNUSED(ignored))
{
    PoolBuffer *buf;
    int index;

    if (self->nfree == 0)
        Py_RETURN_NONE;
    buf = PyObject_New(PoolBuffer, &PoolBufferType);
    if (!buf)
        return NULL;
    index = self->free[--self->nfree];
    buf->pool = (PoolCore *)Py_NewRef(self);
    buf->addr = self->base + (Py_ssize_t)index * self->stride;
    buf->index = index;
    buf->exports = 0;
    buf->released = 0;
    buf->home = 0;
    return (PyObject *)buf;
}

static PyObject *pool_get_available(PoolCore *self, void *Py_UNUSED(closure))
{
    return PyLong_FromLong(self->nfree);
}

static PyObject *pool_get_address(PoolCore *self, void *Py_UNUSED(closure))
{
    return PyLong_FromVoidPtr(self->base);
}

static PyMethodDef pool_methods[] = {
    {"_take", (PyCFunction)pool_take, METH_NOARGS,
     "A buffer on a free slot, or None when every buffer is out."},
    {NULL},
};

static PyMemberDef pool_members[] = {
    {"count", T_INT, offsetof(PoolCore, count), READONLY, "how many buffers the pool has"},
    {"size", T_PYSSIZET, offsetof(PoolCore, size), READONLY, "bytes per buffer"},
    {"stride", T_PYSSIZET, offsetof(PoolCore, stride), READONLY,
     "distance between buffers: size rounded up to a page"},
    {NULL},
};

static PyGetSetDef pool_getset[] = {
    {"available", (getter)pool_get_available, NULL, "buffers in the pool now", NULL},
    {"address", (getter)pool_get_address, NULL, "the first buffer's address (page-aligned)",
     NULL},
    {NULL},
};

static PyTypeObject PoolCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ouring._ringcore.PoolCore",
    .tp_doc = "PoolCore(count, size): count page-aligned buffers of size bytes, ouring's own.",
    .tp_basicsize = sizeof(PoolCore),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)pool_traverse,
    .tp_clear = (inquiry)pool_clear,
    .tp_new = pool_new,
    .tp_dealloc = (destructor)pool_dealloc,
    .tp_dictoffset = offsetof(PoolCore, dict),
    .tp_weaklistoffset = offsetof(PoolCore, weakrefs),
    .tp_methods = pool_methods,
    .tp_members = pool_members,
    .tp_getset = pool_getset,
};

/* -- PoolBuffer ------------------------------------------------------------ */

/* The slot goes back to the free list; the handle is dead from now on. */
static void poolbuf_home(PoolBuffer *self)
{
    if (self->home)
        return;
    self->home = 1;
    self->pool->free[self->pool->nfree++] = self->index;
}

static int poolbuf_getbuffer(PoolBuffer *self, Py_buffer *view, int flags)
{
    if (self->released) {
        PyErr_SetString(PyExc_BufferError,
                        "this pool buffer was released back to its pool; get() another one");
        view->obj = NULL;
        return -1;
    }
    if (PyBuffer_FillInfo(view, (PyObject *)self, self->addr, self->pool->size, 0, flags) < 0)
        return -1;
    self->exports++;
    return 0;
}

/* An operation's final CQE (its lend) or a user's memoryview let go. */
static void poolbuf_releasebuffer(PoolBuffer *self, Py_buffer *Py_UNUSED(view))
{
    if (--self->exports == 0 && self->released)
        poolbuf_home(self);
}

static PyObject *poolbuf_release(PoolBuffer *self, PyObject *Py_UNUSED(ignored))
{
    if (self->released) {
        PyErr_SetString(PyExc_ValueError, "this pool buffer was released already");
        return NULL;
    }
    self->released = 1;
    /* Lent to an operation (or viewed): the slot waits for the last export. */
    if (self->exports == 0)
        poolbuf_home(self);
    Py_RETURN_NONE;
}

static PyObject *poolbuf_enter(PoolBuffer *self, PyObject *Py_UNUSED(ignored))
{
    return Py_NewRef(self);
}

static PyObject *poolbuf_exit(PoolBuffer *self, PyObject *Py_UNUSED(args))
{
    if (!self->released) {
        self->released = 1;
        if (self->exports == 0)
            poolbuf_home(self);
    }
    Py_RETURN_NONE;
}

/* Every export holds a reference to the handle, so none is left here. */
static void poolbuf_dealloc(PoolBuffer *self)
{
    self->released = 1;
    poolbuf_home(self);
    Py_DECREF(self->pool);
    PyObject_Free(self);
}

static Py_ssize_t poolbuf_length(PoolBuffer *self)
{
    return self->pool->size;
}

/* Indexing and slicing go through a memoryview of the buffer: a slice is a
 * memoryview that holds an export (the slot stays out while it lives). */
static PyObject *poolbuf_subscript(PoolBuffer *self, PyObject *key)
{
    PyObject *view = PyMemoryView_FromObject((PyObject *)self), *r;

    if (!view)
        return NULL;
    r = PyObject_GetItem(view, key);
    Py_DECREF(view);
    return r;
}

static int poolbuf_ass_subscript(PoolBuffer *self, PyObject *key, PyObject *value)
{
    PyObject *view, *r;
    int ret;

    if (!value) {
        PyErr_SetString(PyExc_TypeError, "pool buffers have a fixed size: cannot delete items");
        return -1;
    }
    view = PyMemoryView_FromObject((PyObject *)self);
    if (!view)
        return -1;
    ret = PyObject_SetItem(view, key, value);
    r = PyObject_CallMethod(view, "release", NULL);
    Py_XDECREF(r);
    if (!r)
        PyErr_Clear(); /* an export of the view is alive: it lets go later */
    Py_DECREF(view);
    return ret;
}

static PyObject *poolbuf_repr(PoolBuffer *self)
{
    return PyUnicode_FromFormat("<ouring.PoolBuffer index=%d size=%zd%s>", self->index,
                                self->pool->size, self->released ? " released" : "");
}

static PyObject *poolbuf_get_pool(PoolBuffer *self, void *Py_UNUSED(closure))
{
    return Py_NewRef(self->pool);
}

static PyObject *poolbuf_get_released(PoolBuffer *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->released);
}

static PyObject *poolbuf_get_address(PoolBuffer *self, void *Py_UNUSED(closure))
{
    return PyLong_FromVoidPtr(self->addr);
}

static PyBufferProcs poolbuf_as_buffer = {
    .bf_getbuffer = (getbufferproc)poolbuf_getbuffer,
    .bf_releasebuffer = (releasebufferproc)poolbuf_releasebuffer,
};

static PyMappingMethods poolbuf_as_mapping = {
    .mp_length = (lenfunc)poolbuf_length,
    .mp_subscript = (binaryfunc)poolbuf_subscript,
    .mp_ass_subscript = (objobjargproc)poolbuf_ass_subscript,
};

static PySequenceMethods poolbuf_as_sequence = {
    .sq_length = (lenfunc)poolbuf_length,
};

static PyMethodDef poolbuf_methods[] = {
    {"release", (PyCFunction)poolbuf_release, METH_NOARGS,
     "Give the buffer back to its pool. The slot is reused only once no operation\n"
     "(and no memoryview) still holds it. A second release raises ValueError."},
    {"__enter__", (PyCFunction)poolbuf_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)poolbuf_exit, METH_VARARGS, "release(), if not done yet"},
    {NULL},
};

static PyMemberDef poolbuf_members[] = {
    {"index", T_INT, offsetof(PoolBuffer, index), READONLY,
     "the slot in the pool: the registered buffer's index (SQE buf_index)"},
    {NULL},
};

static PyGetSetDef poolbuf_getset[] = {
    {"pool", (getter)poolbuf_get_pool, NULL, "the BufferPool it came from", NULL},
    {"released", (getter)poolbuf_get_released, NULL, "whether release() was called", NULL},
    {"address", (getter)poolbuf_get_address, NULL, "its first byte's address (page-aligned)",
     NULL},
    {NULL},
};

static PyTypeObject PoolBufferType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ouring.PoolBuffer",
    .tp_doc = "A buffer of a BufferPool: writable, fixed-size, page-aligned memory.",
    .tp_basicsize = sizeof(PoolBuffer),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_dealloc = (destructor)poolbuf_dealloc,
    .tp_repr = (reprfunc)poolbuf_repr,
    .tp_as_buffer = &poolbuf_as_buffer,
    .tp_as_mapping = &poolbuf_as_mapping,
    .tp_as_sequence = &poolbuf_as_sequence,
    .tp_methods = poolbuf_methods,
    .tp_members = poolbuf_members,
    .tp_getset = poolbuf_getset,
};
