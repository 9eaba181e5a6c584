/* The trio executor's two hot awaitables (a part of the extension: see
 * internal.h; it uses the Core and the Receiver): an inline step, an operation that usually
 * completes inside the pass's io_uring_enter (_Driver.perform), and
 * `trio_receive(ring, rx, fd, take, *args)`, a take from a socket's multishot
 * queue (_Driver.receive); trio_perform decides between the first and the
 * driver's Python _perform. Each is one C object that yields trio's trap
 * messages itself, where the Python paths stack three or four coroutine
 * frames (the executor's, cancel_shielded_checkpoint's, trio's _async_yield)
 * for every yield. The core never calls into this file; it does nothing until
 * _trio.py hands it trio's objects (set_trio), and the Python paths in
 * _trio.py stay the reference: every branch here mirrors one there.
 *
 * Facts about trio this relies on (_trio.py checks the first two at import
 * by driving trio's own traps, and leaves this file unused if they differ):
 * - A task parks or yields by handing trio's run loop a trap message: the
 *   class object CancelShieldedCheckpoint (rescheduled at once, never
 *   cancelled there) or a WaitTaskRescheduled(abort_func) instance (parked;
 *   abort_func runs on cancel). Messages are read, never kept or mutated,
 *   so one WaitTaskRescheduled per receive queue is yielded at every park.
 * - trio resumes a task by send()ing an outcome: Value(None) after these
 *   traps, Error(Cancelled) after an abort that returned SUCCEEDED. A Value
 *   is ours alone and its unwrap() only marks it used, so its type is
 *   checked instead of calling it; anything else is unwrap()ped (raises).
 * - trio never throw()s into a task. throw() and close() reach these objects
 *   from a coroutine that is closed (garbage, a run torn down) or driven by
 *   hand, and clean up as the Python paths' except clauses do.
 * - checkpoint_if_cancelled() is called, not imitated: it counts the cancel
 *   point that trio.testing.assert_checkpoints checks, and delivers a
 *   pending KeyboardInterrupt.
 *
 * Who owns what: an inline step holds its operation and ring; once submitted
 * the ring owns the operation (as in any perform), and a step closed or
 * thrown into abandons it. A receive step holds its Receiver; while parked
 * the Receiver holds the task (rx.waiter), which the abort or the CQE
 * dispatch clears: exactly one reschedule per park. */

static PyObject *trio_cic, *trio_csc, *trio_wtr, *trio_current_task, *trio_value_type,
    *trio_closed_error, *trio_succeeded, *trio_arm, *trio_finish;
static PyObject *str_result, *str_throw, *str_close, *str_unwrap, *str_completes_inline,
    *str_perform_slow;

enum { STEP_INLINE, STEP_RECEIVE };
enum {
    STEP_START,      /* not started */
    STEP_CHECKPOINT, /* forwarding to checkpoint_if_cancelled(), which yielded (cancelled) */
    STEP_SHIELDED,   /* yielded CancelShieldedCheckpoint */
    STEP_PARKED,     /* receive: yielded the queue's WaitTaskRescheduled */
    STEP_DELEGATE,   /* inline: forwarding to the Python rest (_finish) */
    STEP_FINISHED,
};

typedef struct {
    PyObject_HEAD
    char kind, state;
    int fd;
    Core *ring;
    PyObject *op;   /* inline: the operation */
    Receiver *rx;   /* receive: the queue */
    PyObject *take; /* receive: take(*args) -> data, or None to wait */
    PyObject *args;
    PyObject *sub;  /* CHECKPOINT, DELEGATE: the coroutine forwarded to */
    PyObject *data; /* receive, SHIELDED: what the take returned */
    PyObject *et, *ev, *etb; /* receive, SHIELDED: what the take raised */
} Step;

static PyTypeObject StepType;

static PyObject *step_alloc(char kind, Core *ring)
{
    Step *s;

    if (!trio_cic) {
        PyErr_SetString(PyExc_RuntimeError, "set_trio() was not called");
        return NULL;
    }
    if (!(s = PyObject_GC_New(Step, &StepType)))
        return NULL;
    s->kind = kind;
    s->state = STEP_START;
    s->fd = -1;
    s->ring = (Core *)Py_NewRef(ring);
    s->op = s->take = s->args = s->sub = s->data = s->et = s->ev = s->etb = NULL;
    s->rx = NULL;
    PyObject_GC_Track(s);
    return (PyObject *)s;
}

static void step_drop_taken(Step *s)
{
    Py_CLEAR(s->data);
    Py_CLEAR(s->et);
    Py_CLEAR(s->ev);
    Py_CLEAR(s->etb);
}

/* Raise what was thrown in: throw(exc), or throw(type[, value[, tb]]). */
static void step_set_thrown(PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *typ = args[0], *val = nargs > 1 ? args[1] : Py_None;

    if (PyExceptionInstance_Check(typ)) {
        PyErr_SetObject((PyObject *)Py_TYPE(typ), typ);
    } else if (PyExceptionClass_Check(typ)) {
        PyErr_SetObject(typ, val);
        if (nargs > 2 && args[2] != Py_None) {
            PyObject *t, *v, *tb;
            PyErr_Fetch(&t, &v, &tb);
            PyErr_NormalizeException(&t, &v, &tb);
            Py_XDECREF(tb);
            PyErr_Restore(t, v, Py_NewRef(args[2]));
        }
    } else {
        PyErr_SetString(PyExc_TypeError, "exceptions must derive from BaseException");
    }
}

/* Resume `sub` with a value, or with what was thrown in (thrown != NULL). */
static PySendResult step_resume_sub(PyObject *sub, PyObject *value, PyObject *const *thrown,
                                    Py_ssize_t nthrown, PyObject **result)
{
    PyObject *r, *meth;

    if (!thrown)
        return PyIter_Send(sub, value, result);
    if (!(meth = PyObject_GetAttr(sub, str_throw)))
        return PYGEN_ERROR;
    r = PyObject_Vectorcall(meth, thrown, (size_t)nthrown, NULL);
    Py_DECREF(meth);
    if (r) {
        *result = r;
        return PYGEN_NEXT;
    }
    if (!PyErr_ExceptionMatches(PyExc_StopIteration))
        return PYGEN_ERROR;
    {
        PyObject *t, *v, *tb;
        PyErr_Fetch(&t, &v, &tb);
        PyErr_NormalizeException(&t, &v, &tb);
        *result = v ? PyObject_GetAttrString(v, "value") : Py_NewRef(Py_None);
        Py_XDECREF(t);
        Py_XDECREF(v);
        Py_XDECREF(tb);
        return *result ? PYGEN_RETURN : PYGEN_ERROR;
    }
}

/* trio's outcome for a trap: a Value goes through (it carries None); an
 * Error raises its exception (Cancelled). */
static int step_resumed_with(PyObject *outcome)
{
    PyObject *r;

    if (Py_IS_TYPE(outcome, (PyTypeObject *)trio_value_type))
        return 0;
    r = PyObject_CallMethodNoArgs(outcome, str_unwrap);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

static PySendResult step_yield(Step *s, char state, PyObject *msg, PyObject **result)
{
    s->state = state;
    *result = Py_NewRef(msg);
    return PYGEN_NEXT;
}

static PySendResult step_return(Step *s, PyObject *value, PyObject **result)
{
    s->state = STEP_FINISHED;
    if (!value)
        return PYGEN_ERROR;
    *result = value;
    return PYGEN_RETURN;
}

static PySendResult step_error(Step *s)
{
    s->state = STEP_FINISHED;
    return PYGEN_ERROR;
}

/* -- receive ---------------------------------------------------------------------- */

/* What a receive is refused with once its queue is closed (Python: receive). */
static PySendResult receive_closed(Step *s)
{
    PyErr_SetString(trio_closed_error, "another task closed this socket");
    return step_error(s);
}

/* The queue's abort function (bound to the Receiver): a cancel only ends
 * the wait; nothing was taken, so the receive did not happen. */
static PyObject *receiver_abort(PyObject *rx, PyObject *Py_UNUSED(raise_cancel))
{
    Py_CLEAR(((Receiver *)rx)->waiter);
    return Py_NewRef(trio_succeeded);
}

static PyMethodDef receiver_abort_def = {"abort", receiver_abort, METH_O, NULL};

/* Park until the queue has something (arming its multishot if the kernel
 * ended the last one, or it never had one). */
static PySendResult receive_park(Step *s, PyObject **result)
{
    Receiver *rx = s->rx;
    PyObject *r, *task, *fd;

    if (rx->closed)
        return receive_closed(s);
    if (!rx->op) {
        if (!(fd = PyLong_FromLong(s->fd)))
            return step_error(s);
        r = PyObject_CallFunctionObjArgs(trio_arm, (PyObject *)s->ring, (PyObject *)rx, fd, NULL);
        Py_DECREF(fd);
        if (!r)
            return step_error(s);
        Py_DECREF(r);
    }
    if (!rx->park) {
        PyObject *abort = PyCFunction_New(&receiver_abort_def, (PyObject *)rx);
        if (!abort)
            return step_error(s);
        rx->park = PyObject_CallOneArg(trio_wtr, abort);
        Py_DECREF(abort);
        if (!rx->park)
            return step_error(s);
    }
    if (!(task = PyObject_CallNoArgs(trio_current_task)))
        return step_error(s);
    Py_XSETREF(rx->waiter, task);
    return step_yield(s, STEP_PARKED, rx->park, result);
}

/* Take what is queued; park again if the take wants more. */
static PySendResult receive_take(Step *s, PyObject **result)
{
    PyObject *data = PyObject_Call(s->take, s->args, NULL);

    if (data != Py_None)
        return step_return(s, data, result);
    Py_DECREF(data);
    return receive_park(s, result);
}

/* -- the state machine -------------------------------------------------------------- */

/* checkpoint_if_cancelled() has returned: not cancelled. */
static PySendResult step_checked(Step *s, PyObject **result)
{
    if (s->kind == STEP_RECEIVE) {
        /* A full checkpoint around the take, as trio's recv around a
         * syscall that did not block; what it raised is raised after. */
        if (!(s->data = PyObject_Call(s->take, s->args, NULL)))
            PyErr_Fetch(&s->et, &s->ev, &s->etb);
    } else {
        PyObject *r = core_submit(s->ring, &s->op, 1);
        if (!r)
            return step_error(s);
        Py_DECREF(r);
    }
    return step_yield(s, STEP_SHIELDED, trio_csc, result);
}

static PySendResult step_checkpoint(Step *s, PyObject *value, PyObject *const *thrown,
                                    Py_ssize_t nthrown, PyObject **result)
{
    PyObject *r;
    PySendResult g;

    if (!s->sub && !(s->sub = PyObject_CallNoArgs(trio_cic)))
        g = PYGEN_ERROR;
    else
        g = step_resume_sub(s->sub, value, thrown, nthrown, &r);
    if (g == PYGEN_NEXT) {
        s->state = STEP_CHECKPOINT;
        *result = r;
        return PYGEN_NEXT;
    }
    Py_CLEAR(s->sub);
    if (g == PYGEN_ERROR) {
        if (s->kind == STEP_INLINE) {
            /* Never submitted: the caller keeps everything. */
            PyObject *t, *v, *tb, *rel;
            PyErr_Fetch(&t, &v, &tb);
            rel = PyObject_CallMethodNoArgs(s->op, str_release);
            if (rel) {
                Py_DECREF(rel);
                PyErr_Restore(t, v, tb);
            } else {
                Py_XDECREF(t);
                Py_XDECREF(v);
                Py_XDECREF(tb);
            }
        }
        return step_error(s);
    }
    Py_DECREF(r);
    return step_checked(s, result);
}

/* Back from CancelShieldedCheckpoint. */
static PySendResult step_shielded(Step *s, PyObject **result)
{
    if (s->kind == STEP_RECEIVE) {
        PyObject *data = s->data;
        if (s->et) {
            PyErr_Restore(s->et, s->ev, s->etb);
            s->et = s->ev = s->etb = NULL;
            return step_error(s);
        }
        s->data = NULL;
        if (data != Py_None)
            return step_return(s, data, result);
        Py_DECREF(data); /* a take that wants more than is queued (MSG_WAITALL) */
        return receive_park(s, result);
    } else {
        Op *op = (Op *)s->op;
        PySendResult g;
        PyObject *r;
        if (op->state == STATE_DONE && !op->cancel_by)
            return step_return(s, PyObject_CallMethodNoArgs(s->op, str_result), result);
        /* Still in the kernel, or a cancel was asked for: the Python rest
         * parks and decides, as _Driver._perform's. */
        s->sub = PyObject_CallFunctionObjArgs(trio_finish, (PyObject *)s->ring, s->op, NULL);
        if (!s->sub) {
            r = core_abandon(s->ring, s->op);
            Py_XDECREF(r);
            return step_error(s);
        }
        s->state = STEP_DELEGATE;
        g = step_resume_sub(s->sub, Py_None, NULL, 0, result);
        if (g != PYGEN_NEXT) {
            Py_CLEAR(s->sub);
            s->state = STEP_FINISHED;
        }
        return g;
    }
}

/* Leave a yielded state without resuming it (thrown into, closed, or
 * resumed with an error): what the Python paths' except clauses do. */
static int step_unwind(Step *s)
{
    PyObject *r = NULL;
    char state = s->state;

    s->state = STEP_FINISHED;
    if (state == STEP_CHECKPOINT || state == STEP_DELEGATE) {
        PyObject *sub = s->sub;
        s->sub = NULL;
        r = PyObject_CallMethodNoArgs(sub, str_close);
        Py_DECREF(sub);
        if (r && state == STEP_CHECKPOINT && s->kind == STEP_INLINE) {
            Py_DECREF(r);
            r = PyObject_CallMethodNoArgs(s->op, str_release);
        }
    } else if (state == STEP_SHIELDED && s->kind == STEP_INLINE) {
        r = core_abandon(s->ring, s->op); /* the ring keeps it until its final CQE */
    } else if (state == STEP_SHIELDED) {
        step_drop_taken(s); /* taken, and nobody receives it: as the Python path */
        return 0;
    } else if (state == STEP_PARKED) {
        Py_CLEAR(s->rx->waiter);
        return 0;
    } else {
        return 0;
    }
    Py_XDECREF(r);
    return r ? 0 : -1;
}

static PySendResult step_send(Step *s, PyObject *value, PyObject **result)
{
    PySendResult g;

    switch (s->state) {
    case STEP_START:
        if (s->kind == STEP_RECEIVE && !(s->rx->queued > 0 || s->rx->end != 0))
            return receive_park(s, result);
        return step_checkpoint(s, Py_None, NULL, 0, result);
    case STEP_CHECKPOINT:
        return step_checkpoint(s, value, NULL, 0, result);
    case STEP_SHIELDED:
    case STEP_PARKED:
        if (step_resumed_with(value) < 0) {
            /* An abort that succeeded cleared rx.waiter itself. */
            PyObject *t, *v, *tb;
            PyErr_Fetch(&t, &v, &tb);
            if (s->state == STEP_PARKED)
                s->state = STEP_FINISHED;
            if (step_unwind(s) < 0) {
                Py_XDECREF(t);
                Py_XDECREF(v);
                Py_XDECREF(tb);
            } else {
                PyErr_Restore(t, v, tb);
            }
            return PYGEN_ERROR;
        }
        if (s->state == STEP_SHIELDED)
            return step_shielded(s, result);
        if (s->rx->closed)
            return receive_closed(s);
        return receive_take(s, result);
    case STEP_DELEGATE:
        g = step_resume_sub(s->sub, value, NULL, 0, result);
        if (g != PYGEN_NEXT) {
            Py_CLEAR(s->sub);
            s->state = STEP_FINISHED;
        }
        return g;
    default:
        PyErr_SetString(PyExc_RuntimeError, "cannot reuse an awaited ouring step");
        return PYGEN_ERROR;
    }
}

static PySendResult step_throw(Step *s, PyObject *const *args, Py_ssize_t nargs,
                               PyObject **result)
{
    PySendResult g;

    if (s->state == STEP_CHECKPOINT)
        return step_checkpoint(s, NULL, args, nargs, result);
    if (s->state == STEP_DELEGATE) {
        g = step_resume_sub(s->sub, NULL, args, nargs, result);
        if (g != PYGEN_NEXT) {
            Py_CLEAR(s->sub);
            s->state = STEP_FINISHED;
        }
        return g;
    }
    if (step_unwind(s) < 0)
        return PYGEN_ERROR;
    s->state = STEP_FINISHED;
    step_set_thrown(args, nargs);
    return PYGEN_ERROR;
}

/* -- the Python face: an awaitable that is its own iterator --------------------------- */

static PyObject *step_finish_iteration(PySendResult g, PyObject *r)
{
    if (g == PYGEN_NEXT)
        return r;
    if (g == PYGEN_RETURN) {
        /* StopIteration(value), built so that a tuple or an exception value
         * arrives as itself. */
        PyObject *e = PyObject_CallOneArg(PyExc_StopIteration, r);
        Py_DECREF(r);
        if (e) {
            PyErr_SetObject(PyExc_StopIteration, e);
            Py_DECREF(e);
        }
    }
    return NULL;
}

static PySendResult step_am_send(PyObject *self, PyObject *value, PyObject **result)
{
    return step_send((Step *)self, value, result);
}

static PyObject *step_iternext(PyObject *self)
{
    PyObject *r = NULL;
    PySendResult g = step_send((Step *)self, Py_None, &r);
    return step_finish_iteration(g, r);
}

static PyObject *step_send_py(PyObject *self, PyObject *value)
{
    PyObject *r = NULL;
    PySendResult g = step_send((Step *)self, value, &r);
    return step_finish_iteration(g, r);
}

static PyObject *step_throw_py(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *r = NULL;

    if (nargs < 1 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "throw(type[, value[, traceback]])");
        return NULL;
    }
    {
        PySendResult g = step_throw((Step *)self, args, nargs, &r);
        return step_finish_iteration(g, r);
    }
}

static PyObject *step_close_py(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    if (step_unwind((Step *)self) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *step_await(PyObject *self)
{
    return Py_NewRef(self);
}

/* Garbage while yielded: as close(), which a coroutine's finalizer calls. */
static void step_finalize(PyObject *self)
{
    PyObject *t, *v, *tb;

    if (((Step *)self)->state == STEP_START || ((Step *)self)->state == STEP_FINISHED)
        return;
    PyErr_Fetch(&t, &v, &tb);
    if (step_unwind((Step *)self) < 0)
        PyErr_WriteUnraisable(self);
    PyErr_Restore(t, v, tb);
}

static int step_traverse(Step *s, visitproc visit, void *arg)
{
    Py_VISIT(s->ring);
    Py_VISIT(s->op);
    Py_VISIT(s->rx);
    Py_VISIT(s->take);
    Py_VISIT(s->args);
    Py_VISIT(s->sub);
    Py_VISIT(s->data);
    Py_VISIT(s->ev);
    Py_VISIT(s->etb);
    return 0;
}

static int step_clear(Step *s)
{
    Py_CLEAR(s->ring);
    Py_CLEAR(s->op);
    Py_CLEAR(s->rx);
    Py_CLEAR(s->take);
    Py_CLEAR(s->args);
    Py_CLEAR(s->sub);
    step_drop_taken(s);
    return 0;
}

static void step_dealloc(Step *s)
{
    if (PyObject_CallFinalizerFromDealloc((PyObject *)s) < 0)
        return; /* resurrected */
    PyObject_GC_UnTrack(s);
    step_clear(s);
    PyObject_GC_Del(s);
}

static PyMethodDef step_methods[] = {
    {"send", step_send_py, METH_O, NULL},
    {"throw", (PyCFunction)(void (*)(void))step_throw_py, METH_FASTCALL, NULL},
    {"close", step_close_py, METH_NOARGS, NULL},
    {NULL},
};

static PyAsyncMethods step_async = {
    .am_await = step_await,
    .am_send = step_am_send,
};

static PyTypeObject StepType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ouring._ringcore.TrioStep",
    .tp_doc = "An awaitable of the trio executor (native/trio_await.c).",
    .tp_basicsize = sizeof(Step),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_as_async = &step_async,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = step_iternext,
    .tp_methods = step_methods,
    .tp_traverse = (traverseproc)step_traverse,
    .tp_clear = (inquiry)step_clear,
    .tp_dealloc = (destructor)step_dealloc,
    .tp_finalize = step_finalize,
};

/* -- module functions ------------------------------------------------------------------- */

/* trio_perform(ring, op): _Driver.perform. An operation that usually
 * completes inside the pass's io_uring_enter (op.completes_inline), when the
 * last pass was not a lone task's, is an inline step; anything else is the
 * driver's Python _perform (lone tasks, operations that park). */
static PyObject *ringcore_trio_perform(PyObject *Py_UNUSED(m), PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *flag;
    Core *c;
    Step *s;
    int inline_;

    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "trio_perform(ring, op)");
        return NULL;
    }
    if (!PyObject_TypeCheck(args[0], &CoreType)) {
        PyErr_SetString(PyExc_TypeError, "trio_perform needs a Ring");
        return NULL;
    }
    if (core_check_op(args[1]) < 0)
        return NULL;
    c = (Core *)args[0];
    if (!c->executor) {
        PyErr_SetString(PyExc_RuntimeError, "this ring is not driven by trio");
        return NULL;
    }
    if (c->alone) {
        inline_ = 0;
    } else {
        if (!(flag = PyObject_GetAttr((PyObject *)Py_TYPE(args[1]), str_completes_inline)))
            return NULL;
        inline_ = PyObject_IsTrue(flag);
        Py_DECREF(flag);
        if (inline_ < 0)
            return NULL;
    }
    if (!inline_)
        return PyObject_CallMethodObjArgs(c->executor, str_perform_slow, args[0], args[1], NULL);
    if (!(s = (Step *)step_alloc(STEP_INLINE, c)))
        return NULL;
    s->op = Py_NewRef(args[1]);
    return (PyObject *)s;
}

static PyObject *ringcore_trio_receive(PyObject *Py_UNUSED(m), PyObject *const *args, Py_ssize_t nargs)
{
    Step *s;
    int fd;

    if (nargs < 4) {
        PyErr_SetString(PyExc_TypeError, "trio_receive(ring, rx, fd, take, *args)");
        return NULL;
    }
    if (!PyObject_TypeCheck(args[0], &CoreType) || !PyObject_TypeCheck(args[1], &ReceiverType)) {
        PyErr_SetString(PyExc_TypeError, "trio_receive needs a Ring and a Receiver");
        return NULL;
    }
    {
        long v = PyLong_AsLong(args[2]);
        /* an fd, checked here: the arming reads it */
        if (v == -1 && PyErr_Occurred())
            return NULL;
        if (v < 0 || v > INT32_MAX) {
            PyErr_SetString(PyExc_ValueError, "trio_receive needs an open fd");
            return NULL;
        }
        fd = (int)v;
    }
    if (!(s = (Step *)step_alloc(STEP_RECEIVE, (Core *)args[0])))
        return NULL;
    s->fd = fd;
    s->rx = (Receiver *)Py_NewRef(args[1]);
    s->take = Py_NewRef(args[3]);
    if (!(s->args = PyTuple_New(nargs - 4))) {
        Py_DECREF(s);
        return NULL;
    }
    for (Py_ssize_t i = 4; i < nargs; i++)
        PyTuple_SET_ITEM(s->args, i - 4, Py_NewRef(args[i]));
    return (PyObject *)s;
}

/* set_trio(**objects): trio's objects, every one by keyword (_trio.py, once). */
static PyObject *ringcore_set_trio(PyObject *Py_UNUSED(m), PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"checkpoint_if_cancelled", "cancel_shielded_checkpoint",
                             "wait_task_rescheduled", "current_task", "value", "closed_error",
                             "succeeded", "arm", "finish", NULL};
    PyObject *o[9] = {NULL};
    int i;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|$OOOOOOOOO:set_trio", kwlist, &o[0], &o[1],
                                     &o[2], &o[3], &o[4], &o[5], &o[6], &o[7], &o[8]))
        return NULL;
    for (i = 0; i < 9; i++) {
        if (!o[i]) {
            PyErr_Format(PyExc_TypeError, "set_trio() missing %s", kwlist[i]);
            return NULL;
        }
    }
    if (!PyType_Check(o[4]) || !PyExceptionClass_Check(o[5])) {
        PyErr_SetString(PyExc_TypeError,
                        "set_trio: value must be a type, closed_error an exception");
        return NULL;
    }
    Py_XSETREF(trio_cic, Py_NewRef(o[0]));
    Py_XSETREF(trio_csc, Py_NewRef(o[1]));
    Py_XSETREF(trio_wtr, Py_NewRef(o[2]));
    Py_XSETREF(trio_current_task, Py_NewRef(o[3]));
    Py_XSETREF(trio_value_type, Py_NewRef(o[4]));
    Py_XSETREF(trio_closed_error, Py_NewRef(o[5]));
    Py_XSETREF(trio_succeeded, Py_NewRef(o[6]));
    Py_XSETREF(trio_arm, Py_NewRef(o[7]));
    Py_XSETREF(trio_finish, Py_NewRef(o[8]));
    Py_RETURN_NONE;
}

static int trio_await_ready(void)
{
    str_result = PyUnicode_InternFromString("result");
    str_throw = PyUnicode_InternFromString("throw");
    str_close = PyUnicode_InternFromString("close");
    str_unwrap = PyUnicode_InternFromString("unwrap");
    str_completes_inline = PyUnicode_InternFromString("completes_inline");
    str_perform_slow = PyUnicode_InternFromString("_perform");
    if (!str_result || !str_throw || !str_close || !str_unwrap || !str_completes_inline ||
        !str_perform_slow)
        return -1;
    return PyType_Ready(&StepType);
}
