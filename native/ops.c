/* Operations (the Op type and its opcode constructors): the base Operation,
 * whose SQE image and lifecycle are C fields (the struct and the state
 * constants are in internal.h); BufferOperation and the subclasses built in
 * one C call with their lent buffer embedded (read/write, recv/send, a
 * receive into new bytes); Group, the waiter of several operations. What an
 * operation's result means is here (op_cancelled, the result methods); when
 * its state changes is core.c's alone. */

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

/* The operation protocol's defaults (internal.h: what C calls on every
 * operation). release(): nothing to give back. discard(): nothing to undo. */
static PyObject *op_nothing(PyObject *Py_UNUSED(self), PyObject *Py_UNUSED(ignored))
{
    Py_RETURN_NONE;
}

/* _more(res, flags): a CQE with IORING_CQE_F_MORE for an operation that never
 * asks the kernel for several. */
static PyObject *op_more(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_more(res, flags)");
        return NULL;
    }
    unsigned long flags = PyLong_AsUnsignedLong(args[1]);

    if (!PyErr_Occurred())
        PyErr_Format(PyExc_SystemError, "ouring: an unexpected multishot CQE for %R: %S, 0x%x",
                     self, args[0], (unsigned int)flags);
    return NULL;
}

static PyMethodDef op_methods[] = {
    {"release", op_nothing, METH_NOARGS,
     "Give back what the kernel could touch. Called exactly once, by the ring."},
    {"discard", op_nothing, METH_NOARGS,
     "Undo a successful result that nobody will receive (close an fd)."},
    {"_more", (PyCFunction)(void (*)(void))op_more, METH_FASTCALL,
     "_more(res, flags): a CQE with IORING_CQE_F_MORE; more follow for this operation,\n"
     "which stays in flight with all it owns. Only multishot and send_zc get one."},
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
    .tp_name = "ouring._ringcore.Operation",
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
    PyObject *r = CALL_HOOK(fileno_for, fd, buf, NULL);
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
 * is their int) in lo..hi, else the hook *helper(value[, name]) -> a checked int. */
static int checked_u64(PyObject *value, long long lo, unsigned long long hi, PyObject **helper,
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
    if (!*helper) {
        PyErr_SetString(PyExc_SystemError, "ouring._ringcore: set_hooks() not called");
        return -1;
    }
    r = PyObject_CallFunctionObjArgs(*helper, value, name, NULL);
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
    if (offset && checked_u64(offset, -1, INT64_MAX, &hooks.file_offset, NULL, &off) < 0)
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
    if (flags && checked_u64(flags, 0, UINT32_MAX, &hooks.u32, str_flags, &f) < 0)
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
    .tp_name = "ouring._ringcore.BufferOperation",
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
    .tp_name = "ouring._ringcore.FileOperation",
    .tp_doc = "FileOperation(fd, buf, offset=-1): read/write at offset (-1: the file position).",
    .tp_basicsize = sizeof(BufOp),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)buf_traverse,
    .tp_clear = (inquiry)buf_clear,
    .tp_new = file_op_new,
};

static PyTypeObject MessageOpType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ouring._ringcore.MessageOperation",
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
    if (flags && checked_u64(flags, 0, UINT32_MAX, &hooks.u32, str_flags, &f) < 0)
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
    .tp_name = "ouring._ringcore.ReceiveOperation",
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
    .tp_name = "ouring._ringcore.SendOperation",
    .tp_doc = "SendOperation(sock, buf, flags=0): send from buf; result() is the count.",
    .tp_basicsize = sizeof(BufOp),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)buf_traverse,
    .tp_clear = (inquiry)buf_clear,
    .tp_new = message_op_new,
    .tp_methods = count_methods,
};


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
    .tp_name = "ouring._ringcore.Group",
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
