/* What the parts of the ring-core extension share (one translation unit:
 * ringcore.c includes this header, then every part; see ringcore.c for why). Types
 * every part uses, the objects C calls back into, and the prototypes of the
 * functions one part calls in another, so the parts can be read, and
 * included, in any order. Everything stays `static`: the compiler sees the
 * whole extension at once and inlines across parts (lend_give_back into
 * core_settle, op_cancelled into the dispatch) as it did in one file.
 *
 * The parts:
 *   lease.c       the process-wide lease table, lent buffers (struct lend), Lease
 *   ops.c         Operation, BufferOperation and its constructors, Group
 *   pool.c        BufferPool's memory: PoolCore, PoolBuffer
 *   receive.c     the provided-buffer ring, Receiver, MultishotReceive
 *   core.c        RingCore: the operation table, submit, prepare, reap and
 *                 settle, cancel, abandon, teardown
 *   trio_await.c  the trio executor's awaitables (the core never calls it)
 *   asyncio_await.c  the asyncio executor's awaitable and waker (the core
 *                 never calls it: the waker is its executor's `wake`)
 *   ringcore.c    the module: cached_ring, the hooks, after_fork_in_child, init
 */
#ifndef OURING_INTERNAL_H
#define OURING_INTERNAL_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include "shim.h"

/* One SQE length is 32 bits and the kernel moves at most MAX_RW_COUNT
 * (INT_MAX & PAGE_MASK) bytes per read or write: longer buffers get a short
 * count, never a silently truncated 32-bit length. */
#define OURING_MAX_RW 0x7FFFF000

/* -- the Python the extension calls -----------------------------------------
 *
 * Every call from C into Python is one of these, and nothing else:
 * - hooks: module-level callables (and one class) registered by keyword with
 *   set_hooks(), once, in _ring.py; typed in _ringcore.pyi. They keep messages and
 *   slow-path argument checks in Python.
 * - the operation protocol: methods and class attributes every operation has
 *   because the C base type (Operation, ops.c) defines them or a subclass must
 *   set them: `opcode` (class), `writes_buffer` (BufferOperation subclasses),
 *   `completes_inline` (class, trio_await.c), release(), discard(),
 *   _more(res, flags), result().
 * - the executor protocol (_ring.Executor): `wake(waiter)`, looked up once
 *   when `RingCore.executor` is set; trio_await.c also calls the trio
 *   driver's `_perform(ring, op)` (its slow path).
 * - idle callbacks (Ring.call_when_idle) and the callables a caller hands to
 *   cached_ring and trio_receive.
 * Facts C keeps and Python reads (never the other way round): the owner
 * thread and process of a ring (RingCore._thread, _forked), the fork
 * generation, the lifecycle fields of an operation. */
struct hooks {
    PyObject *unlendable;   /* (obj, writable) -> the exception: obj cannot be lent */
    PyObject *in_use;       /* (obj) -> BufferInUseError: obj overlaps a lent buffer */
    PyObject *fileno_for;   /* (fd, buf) -> int: an fd that is not a plain int in range */
    PyObject *file_offset;  /* (offset) -> int: an offset that is not a plain int in range */
    PyObject *u32;          /* (value, name) -> int: flags that are not a plain u32 */
    PyObject *buffer_error; /* (res, buf) -> OSError of a failed operation on buf */
    PyObject *closed_error; /* RingClosedError: a ring used after close, or elsewhere */
    PyObject *unsupported;  /* (op) -> UnsupportedError: this kernel lacks op's opcode */
    PyObject *cancel_fd;    /* (ring, fd) -> int: cancel every operation on fd, before
                               a close (Ring.cancel_fd: every ring of the thread) */
};
static struct hooks hooks;

/* hook(args..., NULL), or SystemError if set_hooks was never called. */
#define CALL_HOOK(hook, ...)                                                                   \
    (hooks.hook ? PyObject_CallFunctionObjArgs(hooks.hook, __VA_ARGS__)                      \
                : (PyErr_SetString(PyExc_SystemError, "ouring._ringcore: set_hooks() not called"), \
                   (PyObject *)NULL))

/* The names C looks up (interned once, at import: ringcore.c). */
static PyObject *str_writes_buffer, *str_flags, *str_opcode, *str_release, *str_discard,
    *str_more, *str_wake, *str_perform, *str_driver_of;

/* -- types ------------------------------------------------------------------ */

/* One lent buffer: what a Lease and a BufferOperation own. */
struct lend {
    PyObject *obj;     /* the caller's object, handed back on completion */
    Py_buffer view;    /* the export: pins a bytearray, keeps an mmap open */
    Py_ssize_t length; /* what one SQE may move: min(view.len, OURING_MAX_RW) */
    int writable;      /* the kernel writes into it (read, recv, readv) */
    int held;          /* view and table entry not yet given back */
};

/* -- Operation: the base of every operation (ops.c) */
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

/* -- BufferOperation: an operation on one lent caller buffer (ops.c) */
typedef struct {
    Op op;
    struct lend lend;
} BufOp;

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

struct recv_pool; /* receive.c */

/* -- RingCore: one ring's operation table (core.c) */
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
    PyObject *on_queue;       /* the executor's: called when pending and cancels stop being empty */
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
    pid_t pid;                /* getpid() when opened (first claimed); 0 before */
    char closed;
    int last_submit; /* io_uring_submit's last result: a count, or -errno */
    unsigned batch;  /* CQEs copied out per pass */
    uint64_t *cqe_user_data;
    int32_t *cqe_res;
    uint32_t *cqe_flags;
    unsigned char supported[256];
    struct recv_pool *pool; /* the provided buffers of multishot receives, or NULL */
} Core;

/* The first exception raised by a callback while settling a batch is kept
 * and re-raised once every CQE of the batch is settled: a CQE that was
 * consumed from the CQ must never be dropped. */
struct first_error {
    PyObject *type, *value, *tb;
};

/* Bumped in a forked child (os.register_at_fork, see _ring.py): the child has
 * no ring memory (MADV_DONTFORK), so its copies of the parent's rings must
 * never touch it. A counter instead of getpid(): no syscall per check. */
static unsigned long fork_generation;

static PyTypeObject LeaseType, OpType, BufOpType, FileOpType, MessageOpType, ReceiveOpType,
    CountOpType, GroupType, PoolCoreType, PoolBufferType, ReceiverType, MultiRecvType, CoreType;

/* -- what one part calls in another ----------------------------------------- */

/* lease.c */
static PyObject *raise_os_error(int res, PyObject *buf);
static void lend_give_back(struct lend *l);
static int lend_acquire(struct lend *l, PyObject *obj, int writable);
/* ops.c */
static PyObject *optional_get(PyObject *field);
static void optional_set(PyObject **field, PyObject *value);
static int op_cancelled(const Op *op);
/* core.c */
static void keep_error(struct first_error *e);
static int core_request_cancel(Core *c, Op *op, int by);
static int core_usable(Core *c);
/* receive.c */
typedef struct MultiRecv MultiRecv;
static int multirecv_cqe(Core *c, MultiRecv *m, int res, unsigned flags, struct first_error *err);
static void receive_settled(Core *c, MultiRecv *m, int res, struct first_error *err);
static int pool_open(struct io_uring *ring, unsigned count, unsigned size, unsigned short group,
                     struct recv_pool **out);
static void pool_close(struct io_uring *ring, struct recv_pool *p, int may_write);

#endif
