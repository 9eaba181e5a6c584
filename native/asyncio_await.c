/* The asyncio executor's awaitable (a part of the extension: see internal.h;
 * it uses the Core): `asyncio_perform(ring, op)`, AsyncioDriver.perform, and
 * `AsyncioWaker`, the driver's `wake` and the runner of its loop callbacks.
 *
 * Why: a task that yields None to asyncio (a bare yield, as sleep(0)) is put
 * back with `loop.call_soon`, which on the default loop is Python (call_soon,
 * _check_closed, _call_soon, Handle.__init__) and one Handle per yield, run by
 * Handle._run; a Future's set_result schedules its task's wakeup the same way.
 * That was about 13k of the 23k instructions of one random 4 KiB read at 32
 * tasks. Here a task parks on its step, which asyncio's Task takes for a
 * Future (the protocol every Task, the C one and asyncio.tasks._PyTask,
 * accepts from a foreign future: `_asyncio_future_blocking`, `_loop` (read
 * when there is no `get_loop()`), `add_done_callback(fn, context=)`,
 * `result()`, `cancel(msg)`), and the
 * driver's loop callbacks (the iteration's flush, the reader on wait_fd)
 * call the wakeup of every task whose operation they completed themselves,
 * in the task's context, before they return: one Handle per batch instead of
 * one per operation, and no Python frame between the CQE and the task.
 *
 * Facts about asyncio this relies on (CPython 3.11-3.13 _asynciomodule.c and
 * tasks.py; uvloop runs asyncio's Task):
 * - A Task whose coroutine yields an object with `_asyncio_future_blocking`
 *   true checks that its loop (`get_loop()`, else `_loop`) is its own, sets
 *   the attribute to False, calls `add_done_callback(wakeup,
 *   context=task_context)` and parks; its
 *   wakeup(fut) calls `fut.result()` and steps the task (throwing in what
 *   result() raised). `asyncio.isfuture` (ensure_future, gather) reads the
 *   attribute too: a step reads None there until it is parked, so that
 *   `gather(ouring.read(...))` wraps it in a Task like any coroutine.
 * - Task.cancel() calls `fut.cancel(msg)` on the future it waits on; True
 *   means the future will wake the task (whose wakeup then gets the
 *   CancelledError from result()), False that the task throws CancelledError
 *   in at its next step itself. A Future cancels once and is done after.
 * - A task step must not run inside another task's step (asyncio raises
 *   RuntimeError): wakeups run only from the waker's own loop callbacks, never
 *   from a wake inside a task (a withdrawn operation, a ring closed by a task),
 *   which schedules one drain with call_soon instead.
 * - Context.run refuses a context that is entered already; a loop callback
 *   runs in a copy of its scheduler's context (call_soon without context=),
 *   never in a task's own context object.
 *
 * Who owns what: as any perform, the ring owns the operation from submit to
 * its final CQE; a step closed or thrown into abandons it or hands it to the
 * driver's Python `_cancelled` (its fate decides, as in _asyncio.py). While
 * parked, the operation's waiter is the step, and the step holds the task's
 * wakeup until it calls or schedules it (once). The waker's list holds the
 * steps it is about to wake. */

static PyObject *aio_cancelled_error, *aio_invalid_state, *aio_task_type;
static PyObject *str_cancelled_slow, *str_outcome, *str_context, *str_call_soon,
    *str_create_future, *str_set_result;

enum { AS_START, AS_PARKED, AS_DELEGATE, AS_FINISHED };
enum { AF_PENDING, AF_DONE, AF_CANCELLED };

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall; /* the waker is called as wake(waiter) */
    PyObject *loop;      /* a weak reference: the loop holds the driver, not back */
    PyObject *fallback;  /* wake(waiter) for any other waiter (a Future) */
    PyObject *woken;     /* list: steps whose operation is DONE, to wake */
    int inside;          /* a run() or drain is on the stack: it wakes them */
    char scheduled;      /* a drain is queued with call_soon */
} Waker;

typedef struct {
    PyObject_HEAD
    char state, fut, blocking, queued;
    Core *ring;
    PyObject *op;
    Waker *waker;
    PyObject *callback, *context; /* the task's wakeup and context, until called */
    PyObject *more;               /* any other done callbacks: list of (fn, context) */
    PyObject *cancel_msg;
    PyObject *sub; /* DELEGATE: the driver's _cancelled(ring, op, exc) */
} AStep;

static PyTypeObject WakerType, AStepType;

/* -- scheduling through the loop ------------------------------------------------------- */

/* The loop (a new reference), or NULL with RuntimeError once it is collected. */
static PyObject *waker_loop(Waker *w)
{
    PyObject *loop;

#if PY_VERSION_HEX >= 0x030D0000
    if (PyWeakref_GetRef(w->loop, &loop) < 0)
        return NULL;
#else
    loop = PyWeakref_GetObject(w->loop); /* borrowed; NULL on error */
    loop = loop == Py_None ? NULL : Py_XNewRef(loop);
#endif
    if (!loop && !PyErr_Occurred())
        PyErr_SetString(PyExc_RuntimeError, "the event loop is gone");
    return loop;
}

/* loop.call_soon(fn, arg[, context=ctx]). */
static int waker_call_soon(Waker *w, PyObject *fn, PyObject *arg, PyObject *ctx)
{
    PyObject *stack[4], *names = NULL, *r, *loop = waker_loop(w);
    size_t n = 2;

    if (!loop)
        return -1;
    stack[0] = loop;
    stack[1] = fn;
    if (arg)
        stack[n++] = arg;
    if (ctx && ctx != Py_None) {
        if (!(names = PyTuple_Pack(1, str_context))) {
            Py_DECREF(loop);
            return -1;
        }
        stack[n] = ctx;
    }
    r = PyObject_VectorcallMethod(str_call_soon, stack, n, names);
    Py_DECREF(loop);
    Py_XDECREF(names);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

static PyObject *waker_drain_py(Waker *w, PyObject *Py_UNUSED(ignored));
static PyMethodDef waker_drain_def = {"_drain", (PyCFunction)waker_drain_py, METH_NOARGS, NULL};

/* Queue one drain, unless one is queued. A loop that is closed runs nothing
 * any more: its tasks stay parked (a ring closed after its loop). */
static void waker_schedule(Waker *w)
{
    PyObject *drain;

    if (w->scheduled)
        return;
    if (!(drain = PyCFunction_New(&waker_drain_def, (PyObject *)w))) {
        PyErr_WriteUnraisable((PyObject *)w);
        return;
    }
    if (waker_call_soon(w, drain, NULL, NULL) < 0) {
        /* The loop is closed (RuntimeError) or gone: it will never step these
         * tasks again, and the list must not keep them (and their loop) alive. */
        if (PyErr_ExceptionMatches(PyExc_RuntimeError))
            PyErr_Clear();
        else
            PyErr_WriteUnraisable((PyObject *)w);
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(w->woken); i++)
            ((AStep *)PyList_GET_ITEM(w->woken, i))->queued = 0;
        if (PyList_SetSlice(w->woken, 0, PyList_GET_SIZE(w->woken), NULL) < 0)
            PyErr_WriteUnraisable((PyObject *)w);
    } else {
        w->scheduled = 1;
    }
    Py_DECREF(drain);
}

/* -- the step as the future its task waits on ----------------------------------------- */

/* Whether `cb` is the wakeup asyncio's C Task registers (task_wakeup, bound
 * to the task): it only reads the outcome of the future it is handed, and
 * reads an exact Future's in C, where any other future costs result() called
 * by name (a str made from "result", hashed, a bound method: about 1.4k
 * instructions per wake). */
static int is_task_wakeup(PyObject *cb)
{
    return PyCFunction_Check(cb) && aio_task_type && PyCFunction_GET_SELF(cb) &&
           PyObject_TypeCheck(PyCFunction_GET_SELF(cb), (PyTypeObject *)aio_task_type) &&
           strcmp(((PyCFunctionObject *)cb)->m_ml->ml_name, "task_wakeup") == 0;
}

/* Schedule every done callback the step holds, as a Future does when it is
 * done (`now`: run the task's own one here instead, in its context; a C
 * Task's wakeup gets `done`, when given, an exact Future done with None: the
 * step's own outcome). */
static int astep_callbacks(AStep *s, int now, PyObject *done)
{
    PyObject *cb = s->callback, *ctx = s->context, *more = s->more;
    int rc = 0;

    s->callback = s->context = s->more = NULL;
    if (cb) {
        if (now && (!ctx || PyContext_Enter(ctx) == 0)) {
            PyObject *r = PyObject_CallOneArg(
                cb, done && is_task_wakeup(cb) ? done : (PyObject *)s);
            if (ctx && PyContext_Exit(ctx) < 0 && r)
                Py_CLEAR(r);
            rc = r ? 0 : -1;
            Py_XDECREF(r);
        } else {
            if (now)
                PyErr_Clear(); /* the context is entered: as any callback */
            rc = waker_call_soon(s->waker, cb, (PyObject *)s, ctx);
        }
    }
    if (more) {
        for (Py_ssize_t i = 0; rc == 0 && i < PyList_GET_SIZE(more); i++) {
            PyObject *pair = PyList_GET_ITEM(more, i);
            rc = waker_call_soon(s->waker, PyTuple_GET_ITEM(pair, 0), (PyObject *)s,
                                 PyTuple_GET_ITEM(pair, 1));
        }
    }
    Py_XDECREF(cb);
    Py_XDECREF(ctx);
    Py_XDECREF(more);
    return rc;
}

/* None (not a future) unless the step is parked: then whether its task has
 * not yet taken it as the future it waits on. */
static PyObject *astep_get_blocking(AStep *s, void *Py_UNUSED(closure))
{
    if (s->state != AS_PARKED)
        Py_RETURN_NONE;
    return PyBool_FromLong(s->blocking);
}

static int astep_set_blocking(AStep *s, PyObject *value, void *Py_UNUSED(closure))
{
    int v;

    if (!value) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete _asyncio_future_blocking");
        return -1;
    }
    if ((v = PyObject_IsTrue(value)) < 0)
        return -1;
    s->blocking = (char)v;
    return 0;
}

static PyObject *astep_add_done_callback(AStep *s, PyObject *const *args, Py_ssize_t nargs,
                                         PyObject *kwnames)
{
    PyObject *fn, *ctx = Py_None;

    if (nargs != 1 || (kwnames && (PyTuple_GET_SIZE(kwnames) != 1 ||
                                   PyUnicode_Compare(PyTuple_GET_ITEM(kwnames, 0),
                                                     str_context) != 0))) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "add_done_callback(fn, *, context=None)");
        return NULL;
    }
    fn = args[0];
    if (kwnames)
        ctx = args[1];
    if (s->fut != AF_PENDING) {
        if (waker_call_soon(s->waker, fn, (PyObject *)s, ctx) < 0)
            return NULL;
        Py_RETURN_NONE;
    }
    if (!s->callback) {
        s->callback = Py_NewRef(fn);
        s->context = ctx == Py_None ? NULL : Py_NewRef(ctx);
        Py_RETURN_NONE;
    }
    {
        PyObject *pair = PyTuple_Pack(2, fn, ctx);
        int rc;
        if (!pair)
            return NULL;
        if (!s->more && !(s->more = PyList_New(0))) {
            Py_DECREF(pair);
            return NULL;
        }
        rc = PyList_Append(s->more, pair);
        Py_DECREF(pair);
        if (rc < 0)
            return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *astep_remove_done_callback(AStep *s, PyObject *fn)
{
    Py_ssize_t removed = 0;

    if (s->callback) {
        int eq = PyObject_RichCompareBool(s->callback, fn, Py_EQ);
        if (eq < 0)
            return NULL;
        if (eq) {
            Py_CLEAR(s->callback);
            Py_CLEAR(s->context);
            removed++;
        }
    }
    if (s->more) {
        for (Py_ssize_t i = PyList_GET_SIZE(s->more) - 1; i >= 0; i--) {
            int eq = PyObject_RichCompareBool(
                PyTuple_GET_ITEM(PyList_GET_ITEM(s->more, i), 0), fn, Py_EQ);
            if (eq < 0)
                return NULL;
            if (eq) {
                if (PyList_SetSlice(s->more, i, i + 1, NULL) < 0)
                    return NULL;
                removed++;
            }
        }
    }
    return PyLong_FromSsize_t(removed);
}

/* cancel(msg=None): as Future.cancel. The task is woken soon (through the
 * loop, as a cancelled Future wakes it) and its wakeup's result() raises
 * CancelledError, which the task throws into the step: the driver's
 * _cancelled decides what happened to the operation. */
static PyObject *astep_cancel(AStep *s, PyObject *const *args, Py_ssize_t nargs,
                              PyObject *kwnames)
{
    PyObject *msg = Py_None;

    if (nargs + (kwnames ? PyTuple_GET_SIZE(kwnames) : 0) > 1) {
        PyErr_SetString(PyExc_TypeError, "cancel(msg=None)");
        return NULL;
    }
    if (nargs + (kwnames ? PyTuple_GET_SIZE(kwnames) : 0) == 1)
        msg = args[0];
    if (s->fut != AF_PENDING)
        Py_RETURN_FALSE;
    s->fut = AF_CANCELLED;
    Py_XSETREF(s->cancel_msg, Py_NewRef(msg));
    if (astep_callbacks(s, 0, NULL) < 0)
        return NULL;
    Py_RETURN_TRUE;
}

static PyObject *astep_cancelled_error(AStep *s)
{
    if (s->cancel_msg && s->cancel_msg != Py_None)
        PyErr_SetObject(aio_cancelled_error, s->cancel_msg);
    else
        PyErr_SetNone(aio_cancelled_error);
    return NULL;
}

static PyObject *astep_result(AStep *s, PyObject *Py_UNUSED(ignored))
{
    if (s->fut == AF_CANCELLED)
        return astep_cancelled_error(s);
    if (s->fut == AF_PENDING) {
        PyErr_SetString(aio_invalid_state, "Result is not ready.");
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *astep_exception(AStep *s, PyObject *Py_UNUSED(ignored))
{
    if (s->fut == AF_CANCELLED)
        return astep_cancelled_error(s);
    if (s->fut == AF_PENDING) {
        PyErr_SetString(aio_invalid_state, "Exception is not set.");
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *astep_done(AStep *s, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(s->fut != AF_PENDING);
}

static PyObject *astep_cancelled(AStep *s, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(s->fut == AF_CANCELLED);
}

/* -- the coroutine --------------------------------------------------------------------- */

static PySendResult astep_yield_self(AStep *s, PyObject **result)
{
    s->state = AS_PARKED;
    s->fut = AF_PENDING;
    s->blocking = 1;
    *result = Py_NewRef(s);
    return PYGEN_NEXT;
}

/* The operation is DONE (or LEAKED: the ring closed first): its outcome. */
static PySendResult astep_finish(AStep *s, PyObject **result)
{
    Op *op = (Op *)s->op;
    PyObject *r;

    s->state = AS_FINISHED;
    Py_CLEAR(op->waiter);
    if (op->state == STATE_DONE && !op->cancel_by)
        r = PyObject_CallMethodNoArgs(s->op, str_result);
    else
        r = PyObject_CallMethodNoArgs(s->op, str_outcome);
    if (!r)
        return PYGEN_ERROR;
    *result = r;
    return PYGEN_RETURN;
}

static PySendResult astep_delegated(AStep *s, PySendResult g)
{
    if (g != PYGEN_NEXT) {
        Py_CLEAR(s->sub);
        s->state = AS_FINISHED;
    }
    return g;
}

static PySendResult astep_send(AStep *s, PyObject *value, PyObject **result)
{
    PyObject *args[2], *r;
    Op *op;

    switch (s->state) {
    case AS_START:
        /* The ring's on_queue hook schedules the iteration's flush. */
        args[0] = s->op;
        args[1] = (PyObject *)s; /* the core wakes the step: the waker's __call__ */
        if (!(r = core_submit(s->ring, args, 2))) {
            s->state = AS_FINISHED;
            return PYGEN_ERROR;
        }
        Py_DECREF(r);
        return astep_yield_self(s, result);
    case AS_PARKED:
        op = (Op *)s->op;
        if (op->state == STATE_DONE || op->state == STATE_LEAKED)
            return astep_finish(s, result);
        /* Sent to before its operation is done (driven by hand): park again. */
        return astep_yield_self(s, result);
    case AS_DELEGATE:
        return astep_delegated(s, PyIter_Send(s->sub, value, result));
    default:
        PyErr_SetString(PyExc_RuntimeError, "cannot reuse an awaited ouring step");
        return PYGEN_ERROR;
    }
}

/* Thrown into while parked (the task's CancelledError, or anything thrown
 * into a coroutine driven by hand): the driver's Python _cancelled decides,
 * as in its perform. */
static PySendResult astep_throw(AStep *s, PyObject *const *args, Py_ssize_t nargs,
                                PyObject **result)
{
    PyObject *t, *v, *tb, *r;

    if (s->state == AS_DELEGATE)
        return astep_delegated(s, step_resume_sub(s->sub, NULL, args, nargs, result));
    step_set_thrown(args, nargs);
    if (s->state == AS_START) {
        /* Never submitted: the operation gives back what it holds. */
        s->state = AS_FINISHED;
        PyErr_Fetch(&t, &v, &tb);
        r = PyObject_CallMethodNoArgs(s->op, str_release);
        if (r) {
            Py_DECREF(r);
            PyErr_Restore(t, v, tb);
        } else {
            Py_XDECREF(t);
            Py_XDECREF(v);
            Py_XDECREF(tb);
        }
        return PYGEN_ERROR;
    }
    if (s->state != AS_PARKED) {
        s->state = AS_FINISHED;
        return PYGEN_ERROR;
    }
    PyErr_Fetch(&t, &v, &tb);
    PyErr_NormalizeException(&t, &v, &tb);
    if (tb && v)
        PyException_SetTraceback(v, tb);
    Py_XDECREF(t);
    Py_XDECREF(tb);
    Py_CLEAR(((Op *)s->op)->waiter);
    if (s->fut == AF_PENDING)
        s->fut = AF_DONE; /* no wake, no cancel() any more */
    s->sub = v ? PyObject_CallMethodObjArgs(s->ring->executor ? s->ring->executor : Py_None,
                                            str_cancelled_slow, (PyObject *)s->ring, s->op, v,
                                            NULL)
               : NULL;
    Py_XDECREF(v);
    if (!s->sub) {
        /* The ring keeps the operation until its final CQE; the error stays. */
        PyErr_Fetch(&t, &v, &tb);
        r = core_abandon(s->ring, s->op);
        if (r)
            Py_DECREF(r);
        else
            PyErr_Clear();
        PyErr_Restore(t, v, tb);
        s->state = AS_FINISHED;
        return PYGEN_ERROR;
    }
    s->state = AS_DELEGATE;
    return astep_delegated(s, PyIter_Send(s->sub, Py_None, result));
}

/* close(), or garbage while suspended. */
static int astep_unwind(AStep *s)
{
    PyObject *r = NULL;
    char state = s->state;

    s->state = AS_FINISHED;
    if (state == AS_PARKED) {
        Py_CLEAR(((Op *)s->op)->waiter);
        s->fut = AF_DONE;
        r = core_abandon(s->ring, s->op); /* the ring keeps it until its final CQE */
    } else if (state == AS_DELEGATE) {
        PyObject *sub = s->sub;
        s->sub = NULL;
        r = PyObject_CallMethodNoArgs(sub, str_close);
        Py_DECREF(sub);
    } else if (state == AS_START) {
        r = PyObject_CallMethodNoArgs(s->op, str_release);
    } else {
        return 0;
    }
    Py_XDECREF(r);
    return r ? 0 : -1;
}

static PySendResult astep_am_send(PyObject *self, PyObject *value, PyObject **result)
{
    return astep_send((AStep *)self, value, result);
}

static PyObject *astep_iternext(PyObject *self)
{
    PyObject *r = NULL;
    PySendResult g = astep_send((AStep *)self, Py_None, &r);
    return step_finish_iteration(g, r);
}

static PyObject *astep_send_py(PyObject *self, PyObject *value)
{
    PyObject *r = NULL;
    PySendResult g = astep_send((AStep *)self, value, &r);
    return step_finish_iteration(g, r);
}

static PyObject *astep_throw_py(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *r = NULL;

    if (nargs < 1 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "throw(type[, value[, traceback]])");
        return NULL;
    }
    {
        PySendResult g = astep_throw((AStep *)self, args, nargs, &r);
        return step_finish_iteration(g, r);
    }
}

static PyObject *astep_close_py(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    if (astep_unwind((AStep *)self) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static void astep_finalize(PyObject *self)
{
    PyObject *t, *v, *tb;
    char state = ((AStep *)self)->state;

    /* Never started: the operation's own deallocation gives its memory back. */
    if (state == AS_START || state == AS_FINISHED)
        return;
    PyErr_Fetch(&t, &v, &tb);
    if (astep_unwind((AStep *)self) < 0)
        PyErr_WriteUnraisable(self);
    PyErr_Restore(t, v, tb);
}

static int astep_traverse(AStep *s, visitproc visit, void *arg)
{
    Py_VISIT(s->ring);
    Py_VISIT(s->op);
    Py_VISIT(s->waker);
    Py_VISIT(s->callback);
    Py_VISIT(s->context);
    Py_VISIT(s->more);
    Py_VISIT(s->cancel_msg);
    Py_VISIT(s->sub);
    return 0;
}

static int astep_clear(AStep *s)
{
    Py_CLEAR(s->ring);
    Py_CLEAR(s->op);
    Py_CLEAR(s->waker);
    Py_CLEAR(s->callback);
    Py_CLEAR(s->context);
    Py_CLEAR(s->more);
    Py_CLEAR(s->cancel_msg);
    Py_CLEAR(s->sub);
    return 0;
}

static void astep_dealloc(AStep *s)
{
    if (PyObject_CallFinalizerFromDealloc((PyObject *)s) < 0)
        return; /* resurrected */
    PyObject_GC_UnTrack(s);
    astep_clear(s);
    PyObject_GC_Del(s);
}

static PyMethodDef astep_methods[] = {
    {"send", astep_send_py, METH_O, NULL},
    {"throw", (PyCFunction)(void (*)(void))astep_throw_py, METH_FASTCALL, NULL},
    {"close", astep_close_py, METH_NOARGS, NULL},
    {"add_done_callback", (PyCFunction)(void (*)(void))astep_add_done_callback,
     METH_FASTCALL | METH_KEYWORDS, NULL},
    {"remove_done_callback", (PyCFunction)astep_remove_done_callback, METH_O, NULL},
    {"cancel", (PyCFunction)(void (*)(void))astep_cancel, METH_FASTCALL | METH_KEYWORDS, NULL},
    {"result", (PyCFunction)astep_result, METH_NOARGS, NULL},
    {"exception", (PyCFunction)astep_exception, METH_NOARGS, NULL},
    {"done", (PyCFunction)astep_done, METH_NOARGS, NULL},
    {"cancelled", (PyCFunction)astep_cancelled, METH_NOARGS, NULL},
    {NULL},
};

/* The step's loop: asyncio's Task (futures._get_loop) reads `_loop` when a
 * future has no get_loop(), without the bound method a get_loop() call makes
 * on every park. */
static PyObject *astep_loop_attr(AStep *s, void *Py_UNUSED(closure))
{
    return waker_loop(s->waker);
}

static PyGetSetDef astep_getset[] = {
    {"_asyncio_future_blocking", (getter)astep_get_blocking, (setter)astep_set_blocking, NULL,
     NULL},
    {"_loop", (getter)astep_loop_attr, NULL, "the loop whose task parks on it", NULL},
    {NULL},
};

/* -- awaited as a future ----------------------------------------------------------------
 *
 * Code that steps a coroutine by hand and awaits what it yields (as Task
 * does with a Future) awaits the parked step: that await is a Future's,
 * which yields the step until it is done and then returns result(). Before
 * it is started, awaiting the step is awaiting the operation. */

typedef struct {
    PyObject_HEAD
    AStep *step;
    char yielded;
} AStepWait;

static PyTypeObject AStepWaitType;

static PyObject *astepwait_next(AStepWait *w)
{
    AStep *s = w->step;
    PyObject *r;

    if (s->fut == AF_PENDING) {
        if (w->yielded) {
            PyErr_SetString(PyExc_RuntimeError, "await wasn't used with future");
            return NULL;
        }
        w->yielded = 1;
        s->blocking = 1;
        return Py_NewRef(s);
    }
    if (!(r = astep_result(s, NULL)))
        return NULL;
    return step_finish_iteration(PYGEN_RETURN, r);
}

static int astepwait_traverse(AStepWait *w, visitproc visit, void *arg)
{
    Py_VISIT(w->step);
    return 0;
}

static int astepwait_clear(AStepWait *w)
{
    Py_CLEAR(w->step);
    return 0;
}

static void astepwait_dealloc(AStepWait *w)
{
    PyObject_GC_UnTrack(w);
    astepwait_clear(w);
    PyObject_GC_Del(w);
}

static PyTypeObject AStepWaitType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ouring._ringcore.AsyncioStepWait",
    .tp_doc = "await on a parked AsyncioStep, as on a Future.",
    .tp_basicsize = sizeof(AStepWait),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)astepwait_next,
    .tp_traverse = (traverseproc)astepwait_traverse,
    .tp_clear = (inquiry)astepwait_clear,
    .tp_dealloc = (destructor)astepwait_dealloc,
};

static PyObject *astep_await(PyObject *self)
{
    AStepWait *w;

    if (((AStep *)self)->state == AS_START)
        return Py_NewRef(self);
    if (!(w = PyObject_GC_New(AStepWait, &AStepWaitType)))
        return NULL;
    w->step = (AStep *)Py_NewRef(self);
    w->yielded = 0;
    PyObject_GC_Track(w);
    return (PyObject *)w;
}

static PyAsyncMethods astep_async = {
    .am_await = astep_await,
    .am_send = astep_am_send,
};

static PyTypeObject AStepType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ouring._ringcore.AsyncioStep",
    .tp_doc = "An operation awaited under asyncio, and the future its task parks on "
              "(native/asyncio_await.c).",
    .tp_basicsize = sizeof(AStep),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_as_async = &astep_async,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = astep_iternext,
    .tp_methods = astep_methods,
    .tp_getset = astep_getset,
    .tp_traverse = (traverseproc)astep_traverse,
    .tp_clear = (inquiry)astep_clear,
    .tp_dealloc = (destructor)astep_dealloc,
    .tp_finalize = astep_finalize,
};

/* -- the waker ------------------------------------------------------------------------- */

/* Wake every queued step: call its task's wakeup here, in the task's context.
 * Steps woken meanwhile (a task's step withdrew another's operation) are
 * woken in the same drain. On an exception (a task step that raised
 * KeyboardInterrupt), the rest waits for a drain of its own. */
static int waker_drain(Waker *w)
{
    Py_ssize_t i = 0;
    int rc = 0;
    PyObject *done = NULL, *loop, *r;

    /* One exact Future done with None per drain, handed to the C Tasks'
     * wakeups (is_task_wakeup). Made here and dropped at the end: the
     * waker never holds its loop. */
    if (PyList_GET_SIZE(w->woken) > 1 && (loop = waker_loop(w))) {
        done = PyObject_CallMethodNoArgs(loop, str_create_future);
        Py_DECREF(loop);
        if (done) {
            if ((r = PyObject_CallMethodOneArg(done, str_set_result, Py_None)))
                Py_DECREF(r);
            else
                Py_CLEAR(done);
        }
    }
    if (!done)
        PyErr_Clear(); /* no Future: each wakeup gets its step */

    w->inside++;
    while (i < PyList_GET_SIZE(w->woken)) {
        AStep *s = (AStep *)Py_NewRef(PyList_GET_ITEM(w->woken, i));
        i++;
        s->queued = 0;
        if (s->fut == AF_PENDING && s->state == AS_PARKED) {
            s->fut = AF_DONE;
            rc = astep_callbacks(s, 1, done);
        }
        Py_DECREF(s);
        if (rc < 0)
            break;
    }
    w->inside--;
    Py_XDECREF(done);
    if (PyList_SetSlice(w->woken, 0, i, NULL) < 0 && rc == 0)
        rc = -1;
    if (rc < 0 && PyList_GET_SIZE(w->woken)) {
        PyObject *t, *v, *tb;
        PyErr_Fetch(&t, &v, &tb);
        waker_schedule(w);
        PyErr_Restore(t, v, tb);
    }
    return rc;
}

static PyObject *waker_drain_py(Waker *w, PyObject *Py_UNUSED(ignored))
{
    w->scheduled = 0;
    if (w->inside || waker_drain(w) == 0)
        Py_RETURN_NONE;
    return NULL;
}

/* wake(waiter): the core's, for every operation DONE with a waiter. */
static PyObject *waker_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf,
                                  PyObject *kwnames)
{
    Waker *w = (Waker *)self;
    AStep *s;

    if (PyVectorcall_NARGS(nargsf) != 1 || kwnames) {
        PyErr_SetString(PyExc_TypeError, "wake(waiter)");
        return NULL;
    }
    if (!Py_IS_TYPE(args[0], &AStepType))
        return PyObject_CallOneArg(w->fallback, args[0]);
    s = (AStep *)args[0];
    if (s->queued || s->fut != AF_PENDING || s->state != AS_PARKED)
        Py_RETURN_NONE;
    if (PyList_Append(w->woken, (PyObject *)s) < 0)
        return NULL;
    s->queued = 1;
    if (!w->inside)
        waker_schedule(w); /* a wake inside a task: its step is not ours to nest */
    Py_RETURN_NONE;
}

/* run(fn, *args): a loop callback of the driver (its flush, its reader):
 * fn(*args), then the wakeups of what it completed. */
static PyObject *waker_run(Waker *w, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *r;

    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError, "run(fn, *args)");
        return NULL;
    }
    w->inside++;
    r = PyObject_Vectorcall(args[0], args + 1, (size_t)(nargs - 1), NULL);
    w->inside--;
    if (w->inside || !PyList_GET_SIZE(w->woken))
        return r;
    if (!r) {
        PyObject *t, *v, *tb;
        PyErr_Fetch(&t, &v, &tb);
        waker_schedule(w);
        PyErr_Restore(t, v, tb);
        return NULL;
    }
    if (waker_drain(w) < 0) {
        Py_DECREF(r);
        return NULL;
    }
    return r;
}

static PyObject *waker_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"loop", "fallback", NULL};
    PyObject *loop, *fallback;
    Waker *w;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO:AsyncioWaker", kwlist, &loop, &fallback))
        return NULL;
    if (!aio_cancelled_error) {
        PyErr_SetString(PyExc_RuntimeError, "set_asyncio() was not called");
        return NULL;
    }
    if (!(w = (Waker *)type->tp_alloc(type, 0)))
        return NULL;
    w->vectorcall = waker_vectorcall;
    w->fallback = Py_NewRef(fallback);
    if (!(w->loop = PyWeakref_NewRef(loop, NULL)) || !(w->woken = PyList_New(0))) {
        Py_DECREF(w);
        return NULL;
    }
    return (PyObject *)w;
}

static int waker_traverse(Waker *w, visitproc visit, void *arg)
{
    Py_VISIT(w->loop);
    Py_VISIT(w->fallback);
    Py_VISIT(w->woken);
    return 0;
}

static int waker_clear(Waker *w)
{
    Py_CLEAR(w->loop);
    Py_CLEAR(w->fallback);
    Py_CLEAR(w->woken);
    return 0;
}

static void waker_dealloc(Waker *w)
{
    PyObject_GC_UnTrack(w);
    waker_clear(w);
    Py_TYPE(w)->tp_free((PyObject *)w);
}

static PyMethodDef waker_methods[] = {
    {"run", (PyCFunction)(void (*)(void))waker_run, METH_FASTCALL,
     "run(fn, *args): fn(*args), then wake the tasks whose operations it completed."},
    {NULL},
};


static PyTypeObject WakerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ouring._ringcore.AsyncioWaker",
    .tp_doc = "AsyncioWaker(loop, fallback): the asyncio driver's wake(waiter), and the\n"
              "runner of its loop callbacks (native/asyncio_await.c).",
    .tp_basicsize = sizeof(Waker),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(Waker, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_new = waker_new,
    .tp_methods = waker_methods,
    .tp_traverse = (traverseproc)waker_traverse,
    .tp_clear = (inquiry)waker_clear,
    .tp_dealloc = (destructor)waker_dealloc,
};

/* -- module functions ------------------------------------------------------------------ */

/* asyncio_perform(ring, op): AsyncioDriver.perform. */
static PyObject *ringcore_asyncio_perform(PyObject *Py_UNUSED(m), PyObject *const *args,
                                          Py_ssize_t nargs)
{
    Core *c;
    AStep *s;

    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "asyncio_perform(ring, op)");
        return NULL;
    }
    if (!PyObject_TypeCheck(args[0], &CoreType)) {
        PyErr_SetString(PyExc_TypeError, "asyncio_perform needs a Ring");
        return NULL;
    }
    if (core_check_op(args[1]) < 0)
        return NULL;
    c = (Core *)args[0];
    if (!c->wake || !Py_IS_TYPE(c->wake, &WakerType)) {
        PyErr_SetString(PyExc_RuntimeError, "this ring is not driven by asyncio");
        return NULL;
    }
    if (!(s = PyObject_GC_New(AStep, &AStepType)))
        return NULL;
    s->state = AS_START;
    s->fut = AF_PENDING;
    s->blocking = 0;
    s->queued = 0;
    s->ring = (Core *)Py_NewRef(c);
    s->op = Py_NewRef(args[1]);
    s->waker = (Waker *)Py_NewRef(c->wake);
    s->callback = s->context = s->more = s->cancel_msg = s->sub = NULL;
    PyObject_GC_Track(s);
    return (PyObject *)s;
}

/* set_asyncio(*, cancelled_error, invalid_state_error): asyncio's exceptions
 * (_asyncio.py, once). */
static PyObject *ringcore_set_asyncio(PyObject *Py_UNUSED(m), PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"cancelled_error", "invalid_state_error", "task_type", NULL};
    PyObject *cancelled = NULL, *invalid = NULL, *task = NULL;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|$OOO:set_asyncio", kwlist, &cancelled,
                                     &invalid, &task))
        return NULL;
    if (!cancelled || !invalid || !task || !PyExceptionClass_Check(cancelled) ||
        !PyExceptionClass_Check(invalid) || !PyType_Check(task)) {
        PyErr_SetString(PyExc_TypeError,
                        "set_asyncio needs both exception classes and the Task type");
        return NULL;
    }
    Py_XSETREF(aio_task_type, Py_NewRef(task));
    Py_XSETREF(aio_cancelled_error, Py_NewRef(cancelled));
    Py_XSETREF(aio_invalid_state, Py_NewRef(invalid));
    Py_RETURN_NONE;
}

static int asyncio_await_ready(void)
{
    str_cancelled_slow = PyUnicode_InternFromString("_cancelled");
    str_outcome = PyUnicode_InternFromString("outcome");
    str_context = PyUnicode_InternFromString("context");
    str_call_soon = PyUnicode_InternFromString("call_soon");
    str_create_future = PyUnicode_InternFromString("create_future");
    str_set_result = PyUnicode_InternFromString("set_result");
    if (!str_cancelled_slow || !str_outcome || !str_context || !str_call_soon ||
        !str_create_future || !str_set_result)
        return -1;
    if (PyType_Ready(&AStepType) < 0 || PyType_Ready(&AStepWaitType) < 0)
        return -1;
    return PyType_Ready(&WakerType);
}
