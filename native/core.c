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

/* Whether this process is not the one that opened the ring: a fork made with
 * Python's hooks bumped fork_generation (no syscall); one made without them
 * shows in getpid(), asked only here, off the hot path. */
static int core_forked(Core *c)
{
    return c->generation != fork_generation || (c->pid && c->pid != getpid());
}

/* Raise the hook closed_error(message). Returns -1. */
static int core_raise_closed(const char *message)
{
    PyObject *msg = PyUnicode_FromString(message), *exc;

    exc = msg ? CALL_HOOK(closed_error, msg, NULL) : NULL;
    Py_XDECREF(msg);
    if (exc) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
    return -1;
}

/* The ring is open and this is its thread, or RingClosedError (-1). */
static int core_check_open(Core *c)
{
    if (c->closed)
        return core_raise_closed("the ring is closed");
    if (c->thread != PyThread_get_thread_ident())
        return core_raise_closed("this ring belongs to another thread; open one per thread");
    return 0;
}

/* This is the ring's process, or RingClosedError (-1). */
static int core_check_process(Core *c)
{
    if (core_forked(c))
        return core_raise_closed(
            "this ring belongs to the parent process; a forked child must open its own");
    return 0;
}

/* The owner thread in the owner process may drive the ring: 0. Otherwise
 * RingClosedError with the reason (or RuntimeError for a core with no ring
 * memory attached): -1. */
static int core_usable(Core *c)
{
    if (c->thread == PyThread_get_thread_ident() && c->generation == fork_generation && c->ring)
        return 0;
    if (c->generation != fork_generation ? core_check_process(c) : core_check_open(c))
        return -1;
    PyErr_SetString(PyExc_RuntimeError, "the ring is closed");
    return -1;
}

/* `op` cannot be submitted: give its resources back (it never reached the
 * ring), then say why: the ring is closed or not this thread's or process's,
 * or the hook unsupported(op) (this kernel lacks the opcode). NULL. */
static PyObject *core_refuse(Core *c, PyObject *op)
{
    PyObject *r = PyObject_CallMethodNoArgs(op, str_release), *exc;

    if (!r)
        return NULL;
    Py_DECREF(r);
    if (core_check_open(c) < 0 || core_check_process(c) < 0)
        return NULL;
    if ((exc = CALL_HOOK(unsupported, op, NULL))) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
    return NULL;
}

/* _claim(): the calling thread drives this ring from now on. The first claim
 * (or _open_core) also records the process and its fork generation. */
static void core_claim(Core *c)
{
    c->thread = PyThread_get_thread_ident();
    if (!c->pid) {
        c->pid = getpid();
        c->generation = fork_generation;
    }
}

static PyObject *core_claim_py(Core *c, PyObject *Py_UNUSED(ignored))
{
    core_claim(c);
    Py_RETURN_NONE;
}

static PyObject *core_check_open_py(Core *c, PyObject *Py_UNUSED(ignored))
{
    return core_check_open(c) < 0 ? NULL : Py_NewRef(Py_None);
}

static PyObject *core_check_process_py(Core *c, PyObject *Py_UNUSED(ignored))
{
    return core_check_process(c) < 0 ? NULL : Py_NewRef(Py_None);
}

static PyObject *core_get_forked(Core *c, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(core_forked(c));
}

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

/* `queue` (pending or cancels) is about to stop being empty: the executor's
 * on_queue hook, if any, is told. An executor that flushes at a point of its
 * loop's own (trio: every pass) sets none; one without such a point
 * (asyncio) schedules its flush there, once per batch, whoever queues:
 * perform, a cancel, an abandon, a close of an fd, a transport's callbacks,
 * a receive queue past its limit. Per queue, because operations held back
 * by the in-flight cap wait in `pending` for a CQE, not for a flush, while a
 * cancel request must not wait behind them. Called before the append: a
 * failing hook is reported and changes nothing here. */
static void core_queueing(Core *c, PyObject *queue)
{
    PyObject *r;

    if (!c->on_queue || c->on_queue == Py_None || PyList_GET_SIZE(queue))
        return;
    if (!(r = PyObject_CallNoArgs(c->on_queue)))
        PyErr_WriteUnraisable(c->on_queue);
    Py_XDECREF(r);
}

/* SUBMITTED -> CANCELLING: an IORING_OP_ASYNC_CANCEL for `op` goes into the SQ
 * at the next _prepare; its final CQE still decides. The one place a
 * submitted operation is asked to stop (cancel(), and a receive queue past its
 * limit in receive.c). */
static int core_request_cancel(Core *c, Op *op, int by)
{
    core_queueing(c, c->cancels);
    if (PyList_Append(c->cancels, (PyObject *)op) < 0)
        return -1;
    op->cancel_by = by;
    op->state = STATE_CANCELLING;
    return 0;
}


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
 * it and its resources. Refused (core_refuse raises) on a closed ring, from
 * another thread or process, or for an opcode this kernel lacks. */
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
        return core_refuse(c, (PyObject *)op);
    if (opcode == IORING_OP_CLOSE) {
        /* Closing an fd does not stop the kernel's operations on it: the
         * hook cancels them on every ring of this thread first. */
        PyObject *fd = PyLong_FromLong(op->fd), *r;
        r = fd ? CALL_HOOK(cancel_fd, (PyObject *)c, fd, NULL) : NULL;
        Py_XDECREF(fd);
        if (!r)
            return NULL;
        Py_DECREF(r);
    }
    core_queueing(c, c->pending);
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
            PyObject *res = PyLong_FromLong(c->cqe_res[i]);
            PyObject *flags = PyLong_FromUnsignedLong(c->cqe_flags[i]);
            PyObject *r = res && flags
                              ? PyObject_CallMethodObjArgs(op, str_more, res, flags, NULL)
                              : NULL;

            Py_XDECREF(res);
            Py_XDECREF(flags);
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

/* _open_core(ring_address, max_inflight, batch): drive this ring, from this
 * thread (it claims the ring). */
static PyObject *core_open(Core *c, PyObject *args)
{
    unsigned long long addr;
    Py_ssize_t max_inflight;
    unsigned int batch;

    if (!PyArg_ParseTuple(args, "KnI", &addr, &max_inflight, &batch))
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
    core_claim(c);
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
    Py_VISIT(c->on_queue);
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
    Py_CLEAR(c->on_queue);
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

/* perform(op): hand op (a new operation, owned by the ring from here on) to
 * the executor that drives this ring; the awaitable of its outcome. Every
 * module-level operation and socket call comes here, so it is C: a Python
 * method here was one more frame on every operation. Without an executor,
 * the ring's Python _driver_of((op,)) releases op and raises. */
static PyObject *core_perform(Core *c, PyObject *op)
{
    PyObject *args[3];

    if (!c->executor) {
        PyObject *ops = PyTuple_Pack(1, op), *r;
        if (!ops)
            return NULL;
        r = PyObject_CallMethodOneArg((PyObject *)c, str_driver_of, ops);
        Py_DECREF(ops);
        Py_XDECREF(r);
        if (r)
            PyErr_SetString(PyExc_RuntimeError, "this ring has no executor");
        return NULL;
    }
    args[0] = c->executor;
    args[1] = (PyObject *)c;
    args[2] = op;
    return PyObject_VectorcallMethod(str_perform, args, 3, NULL);
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
    {"perform", (PyCFunction)core_perform, METH_O,
     "perform(op): hand op (owned by the ring from here on) to the executor that\n"
     "drives this ring: the awaitable of its outcome."},
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
     "_open_core(ring_address, max_inflight, batch): drive this ring from this thread."},
    {"_claim", (PyCFunction)core_claim_py, METH_NOARGS,
     "_claim(): this thread drives the ring from now on (the first claim also records\n"
     "the process)."},
    {"_check_open", (PyCFunction)core_check_open_py, METH_NOARGS,
     "Raise RingClosedError unless the ring is open and this is its thread."},
    {"_check_process", (PyCFunction)core_check_process_py, METH_NOARGS,
     "Raise RingClosedError unless this is the ring's process (not a forked child)."},
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
    {"_on_queue", T_OBJECT, offsetof(Core, on_queue), 0,
     "the executor's: called when the ring starts queueing for the kernel again"},
    {"_pass_submits", T_ULONGLONG, offsetof(Core, pass_submits), 0,
     "operations submitted since the executor's last pass began"},
    {"_alone", T_BOOL, offsetof(Core, alone), 0,
     "the executor's: the last pass submitted at most one operation"},
    {"_thread", T_ULONG, offsetof(Core, thread), READONLY,
     "the owner thread's ident (threading.get_ident()), set by _open_core or _claim"},
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
    {"_forked", (getter)core_get_forked, NULL,
     "True in a process other than the one that opened (or first claimed) the ring", NULL},
    {"_supported", (getter)core_get_supported, (setter)core_set_supported,
     "one byte per opcode: 1 if this kernel implements it", NULL},
    {NULL},
};

static PyTypeObject CoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ouring._ringcore.RingCore",
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
