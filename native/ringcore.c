/* ouring._ringcore: the per-operation path, in the CPython C API.
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
 *
 * The extension is one translation unit made of parts, one per concern
 * (internal.h lists them and holds what they share). One unit, not several
 * linked together: the hot path crosses parts on every operation (core_settle
 * gives back a BufferOperation's lend, the dispatch asks op_cancelled, the
 * constructors lend), and only a unit that sees both sides inlines those calls
 * without link-time optimisation, which the sdist build cannot count on.
 */
#include "internal.h"

#include "lease.c"      /* the lease table, lent buffers, Lease */
#include "ops.c"        /* Operation, BufferOperation and subclasses, Group */
#include "pool.c"       /* BufferPool's memory and buffers */
#include "receive.c"    /* the provided-buffer ring, Receiver, MultishotReceive */
#include "core.c"       /* RingCore */
#include "trio_await.c" /* the trio executor's awaitables */
#include "asyncio_await.c" /* the asyncio executor's awaitable and waker */


/* cached_ring(var, find): the ring that the ContextVar `var` caches for this
 * task as (ring, thread ident), if it was cached by this thread and is still
 * open; else find(). Every operation asks (_trio.current_ring), so the
 * common case costs no Python frame. */
static PyObject *ringcore_cached_ring(PyObject *Py_UNUSED(m), PyObject *const *args, Py_ssize_t nargs)
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

/* set_hooks(**hooks): every hook of struct hooks by its name, all of them, once
 * per process (ouring._ring registers them at import). Table-driven, so a hook
 * is added in internal.h, here and in _ringcore.pyi. */
static const struct {
    const char *name;
    size_t offset;
} hook_names[] = {
    {"unlendable", offsetof(struct hooks, unlendable)},
    {"in_use", offsetof(struct hooks, in_use)},
    {"fileno_for", offsetof(struct hooks, fileno_for)},
    {"file_offset", offsetof(struct hooks, file_offset)},
    {"u32", offsetof(struct hooks, u32)},
    {"buffer_error", offsetof(struct hooks, buffer_error)},
    {"closed_error", offsetof(struct hooks, closed_error)},
    {"unsupported", offsetof(struct hooks, unsupported)},
    {"cancel_fd", offsetof(struct hooks, cancel_fd)},
};
#define N_HOOKS (sizeof(hook_names) / sizeof(hook_names[0]))

static PyObject *ringcore_set_hooks(PyObject *Py_UNUSED(module), PyObject *args, PyObject *kwargs)
{
    PyObject *given[N_HOOKS];
    size_t i;

    if (PyTuple_GET_SIZE(args) || !kwargs || PyDict_GET_SIZE(kwargs) != (Py_ssize_t)N_HOOKS) {
        PyErr_Format(PyExc_TypeError, "set_hooks() takes its %zu hooks by keyword, all of them",
                     N_HOOKS);
        return NULL;
    }
    for (i = 0; i < N_HOOKS; i++) {
        given[i] = PyDict_GetItemString(kwargs, hook_names[i].name); /* borrowed */
        if (!given[i]) {
            PyErr_Format(PyExc_TypeError, "set_hooks() missing the hook %s", hook_names[i].name);
            return NULL;
        }
    }
    for (i = 0; i < N_HOOKS; i++)
        Py_XSETREF(*(PyObject **)((char *)&hooks + hook_names[i].offset), Py_NewRef(given[i]));
    Py_RETURN_NONE;
}

static PyObject *ringcore_after_fork_in_child(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(a))
{
    fork_generation++;
    Py_RETURN_NONE;
}

static PyMethodDef ringcore_methods[] = {
    {"after_fork_in_child", ringcore_after_fork_in_child, METH_NOARGS,
     "Registered with os.register_at_fork: every ring opened before is the parent's."},
    {"cached_ring", (PyCFunction)(void (*)(void))ringcore_cached_ring, METH_FASTCALL,
     "cached_ring(var, find): the open ring that ContextVar var caches for this thread\n"
     "as (ring, thread ident), else find()."},
    {"set_trio", (PyCFunction)(void (*)(void))ringcore_set_trio, METH_VARARGS | METH_KEYWORDS,
     "set_trio(*, checkpoint_if_cancelled, cancel_shielded_checkpoint,\n"
     "wait_task_rescheduled, current_task, value, closed_error, succeeded, arm, finish):\n"
     "trio's objects for trio_perform and trio_receive (native/trio_await.c)."},
    {"trio_perform", (PyCFunction)(void (*)(void))ringcore_trio_perform, METH_FASTCALL,
     "trio_perform(ring, op): the trio executor's perform; an operation that usually\n"
     "completes inside the pass's io_uring_enter yields once, in C."},
    {"trio_receive", (PyCFunction)(void (*)(void))ringcore_trio_receive, METH_FASTCALL,
     "trio_receive(ring, rx, fd, take, *args): awaitable; take(*args) from the multishot\n"
     "queue rx once it has something (the trio executor's receive)."},
    {"set_asyncio", (PyCFunction)(void (*)(void))ringcore_set_asyncio,
     METH_VARARGS | METH_KEYWORDS,
     "set_asyncio(*, cancelled_error, invalid_state_error): asyncio's exceptions for\n"
     "asyncio_perform (native/asyncio_await.c)."},
    {"asyncio_perform", (PyCFunction)(void (*)(void))ringcore_asyncio_perform, METH_FASTCALL,
     "asyncio_perform(ring, op): the asyncio executor's perform; the awaitable is also the\n"
     "future its task parks on, woken by the driver's AsyncioWaker."},
    {"set_hooks", (PyCFunction)(void (*)(void))ringcore_set_hooks, METH_VARARGS | METH_KEYWORDS,
     "set_hooks(*, unlendable, in_use, fileno_for, file_offset, u32, buffer_error,\n"
     "closed_error, unsupported, cancel_fd): the Python the extension calls (internal.h)."},
    {NULL},
};

static struct PyModuleDef ringcore_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "ouring._ringcore",
    .m_doc = "The per-operation hot path of ouring in the CPython C API.",
    .m_size = -1,
    .m_methods = ringcore_methods,
};

PyMODINIT_FUNC PyInit__ringcore(void)
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
        trio_await_ready() < 0 || asyncio_await_ready() < 0)
        return NULL;
    str_writes_buffer = PyUnicode_InternFromString("writes_buffer");
    str_flags = PyUnicode_InternFromString("flags");
    str_opcode = PyUnicode_InternFromString("opcode");
    str_release = PyUnicode_InternFromString("release");
    str_discard = PyUnicode_InternFromString("discard");
    str_more = PyUnicode_InternFromString("_more");
    str_wake = PyUnicode_InternFromString("wake");
    str_perform = PyUnicode_InternFromString("perform");
    str_driver_of = PyUnicode_InternFromString("_driver_of");
    if (!str_writes_buffer || !str_flags || !str_opcode || !str_release || !str_discard ||
        !str_more || !str_wake || !str_perform || !str_driver_of)
        return NULL;
    m = PyModule_Create(&ringcore_module);
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
        PyModule_AddObjectRef(m, "AsyncioStep", (PyObject *)&AStepType) < 0 ||
        PyModule_AddObjectRef(m, "AsyncioWaker", (PyObject *)&WakerType) < 0 ||
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
