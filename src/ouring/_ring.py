"""The ring core: one io_uring, its operation table, submission, reaping,
cancellation requests and teardown. No event loop is imported here: an
adapter attaches an ``Executor`` that parks a task on an operation and wakes
it when the ring says the operation is done.

Kernel facts this module relies on:

- A CQE is posted for every request the kernel consumed, whether or not a
  cancel for it succeeded (IORING_OP_ASYNC_CANCEL is best effort). Memory an
  SQE points at must stay valid until that CQE: operations stay in
  ``_inflight`` (and so keep their buffers) until then.
- SQEs are consumed in order, so a cancel prepared after its target, even in
  the same batch, finds it.
- The CQ holds ``cq_entries`` CQEs; past that the kernel keeps an overflow list
  (IORING_FEAT_NODROP) that only io_uring_enter flushes. The ring lets at most
  ``cq_entries // 2`` operations into the kernel and keeps the other half for
  cancel requests (at most one per operation), so its own traffic cannot
  overflow the CQ; the native reap flushes an overflow anyway if one appears.
- ``io_uring_queue_exit`` returns while io-wq workers may still write into
  user memory. ``close`` therefore cancels, reaps every CQE it can within a
  bounded wait, and keeps forever (leaks, counted) the memory of operations
  that never completed.

State changes of an operation (see DESIGN.md for the table) happen only in
the C ``RingCore`` this class extends (``native/core.c``): ``submit``,
``_prepare``, ``cancel``, ``abandon``, the settle of each reaped CQE,
``_withdraw_pending`` and ``_leak_inflight``. It keeps the operation table and
runs once per operation, so it is C; the policy (setup, when to flush and
reap, teardown) stays here.
"""

from __future__ import annotations

import errno
import os
import resource
import sys
import time
import warnings
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from threading import get_ident
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from . import _ringcore, _sockaddr
from ._backend import Backend, FdRequest, _live_rings_but
from ._buffers import in_use, unlendable
from ._errors import RingClosedError, UnsupportedError, setup_error
from ._generated_ring import RingOperations
from ._native import ffi, lib
from ._ops import (
    CANCELLING,
    CLOSED,
    DONE,
    PENDING,
    RING,
    SUBMITTED,
    Close,
    Connect,
    MultishotReceive,
    Nop,
    Operation,
    Read,
    ReadFixed,
    Send,
    SendMsg,
    SendZC,
    Write,
    WriteFixed,
    buffer_error,
    file_offset,
    fileno,
    fileno_for,
    fixed_or_plain,
    read_requests,
    socket_family,
    u32,
    uses_fd,
)
from ._ringcore import Group, Receiver, RingCore
from ._ringcore import after_fork_in_child as _ringcore_after_fork_in_child

if TYPE_CHECKING:
    from ._pool import BufferPool

__all__ = [
    "DEFAULT_SETUP_FLAGS",
    "Executor",
    "FdRequest",
    "Operations",
    "Ring",
    "RingStatistics",
    "arm_receive",
    "submit_group",
]

T = TypeVar("T")
B = TypeVar("B")
S = TypeVar("S")

# COOP_TASKRUN: completions run as task work when this thread next enters the
# kernel instead of interrupting it (an IPI); the ring fd still polls readable.
# TASKRUN_FLAG: the kernel flags IORING_SQ_TASKRUN when such work waits, and the
# native reap then calls io_uring_get_events. SUBMIT_ALL: one bad SQE does not
# stop the rest of the batch (it gets its own error CQE).
DEFAULT_SETUP_FLAGS = (
    lib.IORING_SETUP_COOP_TASKRUN | lib.IORING_SETUP_TASKRUN_FLAG | lib.IORING_SETUP_SUBMIT_ALL
)
_MAX_ENTRIES = 32768  # IORING_MAX_ENTRIES
_MAX_CQ_ENTRIES = 2 * _MAX_ENTRIES
_DEFAULT_MIN_CQ = 4096  # 64 KiB of CQ: room for 2048 operations in the kernel at once
_NO_WAIT = -1

# Ring.features(): operations whose opcode varies by kernel, by the name of
# the ouring call (the probe answers for them: io_uring_get_probe).
_FEATURE_OPCODES = {
    "fixed_buffers": lib.IORING_OP_READ_FIXED,
    "fallocate": lib.IORING_OP_FALLOCATE,
    "fadvise": lib.IORING_OP_FADVISE,
    "stat": lib.IORING_OP_STATX,
    "shutdown": lib.IORING_OP_SHUTDOWN,
    "rename": lib.IORING_OP_RENAMEAT,
    "unlink": lib.IORING_OP_UNLINKAT,
    "mkdir": lib.IORING_OP_MKDIRAT,
    "symlink": lib.IORING_OP_SYMLINKAT,
    "link": lib.IORING_OP_LINKAT,
    "ftruncate": lib.OURING_OP_FTRUNCATE,
    "splice": lib.IORING_OP_SPLICE,
}

# A forked child has no ring memory (MADV_DONTFORK): the core refuses every
# ring opened before the fork from then on (a counter, not a getpid() syscall
# per check). Forks made without Python's hooks are not seen.
os.register_at_fork(after_in_child=_ringcore_after_fork_in_child)

# Memory of operations the kernel never completed before their ring closed. It
# is never freed: the kernel may still write into it.
_leaked_forever: list[Operation[Any]] = []


# The provided buffers of multishot receives (Ring.recv_group): 128 of 16 KiB,
# each the storage of a bytes object (native/receive.c): an arrival of half a
# buffer or more is handed over as that object, with no copy. At setup two
# pages of each are touched (the object's header, its trailing NUL), the rest
# only as data arrives. 16 KiB holds a typical TLS record or HTTP request in
# one CQE. More buffers only matter when more than 128 arrivals wait for one
# reap: ENOBUFS then ends a multishot, which the next receive re-arms
# (measured: 64 and 256 buffers echo alike at 50 connections; 256 cost 0.8 MiB
# more RSS with 10,000 idle connections).
RECV_BUFFERS = 128
RECV_BUFFER_SIZE = 16384
RECV_GROUP = 0
_UNTRIED = object()


def _kernel_at_least(major: int, minor: int) -> bool:
    """Whether the running kernel's version is at least ``major.minor``
    (for what the opcode probe cannot tell, such as a flag of an opcode)."""
    try:
        found = tuple(int(part) for part in os.uname().release.split("-")[0].split(".")[:2])
    except ValueError:
        return False
    return found >= (major, minor)


def submit_group(ring: Ring, ops: Sequence[Operation[Any]]) -> Group:
    """Submit every operation of ``ops`` with one ``Group`` as their waiter
    (for an executor's ``perform_many``): the ring wakes the group's waiter,
    set by the executor, once, when the last is DONE. If a submit fails, the
    operations not yet submitted are released, those submitted are abandoned
    (the ring keeps their memory until their CQEs), and the error raised."""
    group = Group(len(ops), None)  # no waiter yet: the executor sets its own
    for i, op in enumerate(ops):
        try:
            ring.submit(op, group)
        except BaseException:
            for rest in ops[i + 1 :]:
                rest.release()
            for submitted in ops[:i]:
                ring.abandon(submitted)
            raise
    return group


def arm_receive(ring: Ring, rx: Receiver, fd: int) -> None:
    """Arm ``rx``'s multishot receive on ``ring`` (for an executor's
    ``receive``, when ``rx.op`` is None: its first receive, or the kernel
    ended the last one)."""
    op = MultishotReceive(fd, rx, RECV_GROUP)
    try:
        ring.submit(op)
    except BaseException:
        rx.op = None
        raise


class Executor(Protocol):
    """What an event-loop adapter provides to drive a ring.

    The contract, both ways (``_trio.py`` and ``_asyncio.py`` use nothing
    else of the ring):

    - The adapter sets ``ring.executor`` (the ring then calls its ``wake``
      for every DONE operation that has a waiter), ``ring._on_close`` (called
      by ``close`` before the ring fd goes, so the loop drops its waits on the
      number) and ``ring._wakeup`` (thread-safe: asks the loop to run
      ``ring._answer_fd_requests()`` soon; other threads' closes go through it).
    - It hands operations to the ring with ``submit(op, waiter)`` (or
      ``submit_group``/``arm_receive``), asks for cancels with ``cancel(op)``
      (True: withdrawn, it did not happen) and gives up on an operation whose
      caller is gone with ``abandon(op)``; the ring keeps the memory either way.
    - It decides when the kernel sees them: ``flush(reap=True)`` once per loop
      pass or iteration, ``reap()`` when ``wait_fd`` polls readable, and again
      when ``has_queued()`` says operations or cancel requests still wait for
      the kernel (a full SQ, or the in-flight cap). An adapter whose loop has
      no "before the I/O wait" point sets ``ring._on_queue``: the ring calls
      it whenever its queue of operations, or of cancel requests, stops being
      empty, whoever queued (a layer's ``perform``, a cancel, an abandon, a
      close of an fd, the asyncio transports' callbacks), and the adapter
      schedules its flush there. ``ring._pass_submits``
      (operations submitted since the last flush, counted by the ring) and
      ``ring._alone`` (set by the adapter: the last flush had at most one) let
      it submit a lone task's operation at once instead of batching it.
    - From an operation it reads ``state`` (DONE), ``waiter``,
      ``cancel_by``, ``completes_inline`` (usually done inside the submitting
      ``io_uring_enter``), ``cancelled()``, ``result()`` and ``outcome()``.
    - It closes the ring (``close``) when its run or loop ends.
    """

    def perform(self, ring: Ring, op: Operation[T]) -> Coroutine[Any, Any, T]:
        """Submit ``op`` on ``ring``, park the current task until it is DONE,
        and return ``op.outcome()`` (applying the loop's cancellation rules)."""
        ...

    def perform_many(self, ring: Ring, ops: Sequence[Operation[T]]) -> Coroutine[Any, Any, list[T]]:
        """Submit every operation of ``ops`` on ``ring``, park the task once
        until all are DONE, and return their outcomes in order (the first
        failure raises)."""
        ...

    def receive(
        self, ring: Ring, rx: Receiver, fd: int, take: Callable[..., Any], *args: Any
    ) -> Coroutine[Any, Any, Any]:
        """``take(*args)`` from a socket's multishot queue ``rx`` once it
        returns something (not None), arming ``rx``'s ``MultishotReceive`` on
        ``ring`` when it is not armed. A checkpoint; cancelled, nothing was
        taken. ``rx.waiter`` is this loop's token for the parked task, woken
        with ``wake`` (by the ring at each delivery, or by a close)."""
        ...

    def wake(self, waiter: Any) -> None:
        """The operation whose ``waiter`` this is is DONE: reschedule that
        task (it reads the operation's outcome itself)."""
        ...

    def call_soon(self, fn: Callable[..., object], *args: Any) -> bool:
        """From any thread: run ``fn(*args)`` soon in the ring's thread, inside
        its event loop. False if the loop has ended (nothing drives the ring)."""
        ...

    async def resolve(self, family: int, address: Any) -> Any:
        """A numeric form of ``address``, resolved without blocking the loop."""
        ...

    async def wait_answered(self, requests: Sequence[FdRequest]) -> None:
        """Park until every request is answered (by other threads' rings)."""
        ...


def queue_sizes(entries: int, cq_entries: int | None) -> int:
    """The CQ size for ``entries`` SQEs and the asked ``cq_entries`` (None:
    the default), or the ``TypeError``/``ValueError`` of bad sizes. Checked
    by every ring, the thread fallback's too: bad input raises at the call."""
    if not isinstance(entries, int) or isinstance(entries, bool):
        raise TypeError(f"entries must be an int, not {type(entries).__name__}")
    if not 1 <= entries <= _MAX_ENTRIES:
        raise ValueError(f"entries must be in 1..{_MAX_ENTRIES}, not {entries}")
    if cq_entries is None:
        return min(max(2 * entries, _DEFAULT_MIN_CQ), _MAX_CQ_ENTRIES)
    if not isinstance(cq_entries, int) or isinstance(cq_entries, bool):
        raise TypeError(f"cq_entries must be an int, not {type(cq_entries).__name__}")
    if not entries <= cq_entries <= _MAX_CQ_ENTRIES:
        raise ValueError(f"cq_entries must be in {entries}..{_MAX_CQ_ENTRIES}, not {cq_entries}")
    return cq_entries


@dataclass(frozen=True, slots=True)
class RingStatistics:
    """A snapshot of one ring's counters."""

    inflight: int  #: operations not yet done: pending plus those the kernel owns
    pending: int  #: queued in Python: the kernel has not seen them yet
    submitted: int  #: operations handed to the kernel since the ring opened
    completed: int  #: operations done (final CQE, or withdrawn before submission)
    cancelled: int  #: operations that ended cancelled (did not happen)
    leaked: int  #: operations whose memory was kept forever at close
    batches: int  #: io_uring_enter calls that submitted SQEs
    sq_entries: int
    cq_entries: int
    setup_flags: int
    #: CQEs that were not final (IORING_CQE_F_MORE): a multishot operation's
    #: deliveries, send_zc's results before their notifications
    more: int = 0


class _IoUring(RingCore, Backend):
    """The io_uring half of :class:`Ring`: setup, the queue its executors
    drive, teardown. The operation methods are :class:`Operations`'."""

    #: Set by the event-loop adapter that drives this ring.
    executor: Executor | None
    #: The pool whose buffers the kernel has (one table per ring), or None.
    _fixed_pool: BufferPool | None = None
    #: Set by the executor that drives this ring: called by :meth:`close`
    #: before the ring fd (and ``wait_fd``) is closed, whoever closes it, so
    #: the event loop drops its waits on the number while the ring still owns
    #: it. The next ring or file opened usually gets the same number.
    _on_close: Callable[[], None] | None = None

    def __init__(
        self,
        entries: int = 256,
        *,
        cq_entries: int | None = None,
        setup_flags: int | None = None,
        teardown_timeout: float = 5.0,
    ) -> None:
        cq_entries = queue_sizes(entries, cq_entries)
        if teardown_timeout < 0:
            raise ValueError("teardown_timeout must be >= 0")

        out = ffi.new("struct ouring **")
        candidates = [DEFAULT_SETUP_FLAGS, 0] if setup_flags is None else [setup_flags]
        for flags in candidates:
            res = lib.ouring_setup(entries, cq_entries, flags, out)
            if res != -errno.EINVAL:
                break
        if res < 0:
            raise setup_error(res)
        self._ptr: Any = out[0]
        self.cq_entries: int = lib.ouring_cq_entries(self._ptr)
        self._batch = self.cq_entries  # CQEs settled per pass of the native reap
        # From here on the core owns the ring: close() and __del__ free it,
        # and it records this thread and process as the ring's (_thread,
        # _forked). At most half the CQ in the kernel: the other half is for
        # cancel requests, at most one per operation.
        self._open_core(int(ffi.cast("uintptr_t", self._ptr)), self.cq_entries // 2, self._batch)
        self.fd: int = lib.ouring_ring_fd(self._ptr)
        #: The fd that polls readable when completions wait: the ring fd, or
        #: with DEFER_TASKRUN the registered eventfd.
        self.wait_fd: int = lib.ouring_wait_fd(self._ptr)
        self.sq_entries: int = lib.ouring_sq_entries(self._ptr)
        self.setup_flags: int = lib.ouring_setup_flags(self._ptr)
        self.teardown_timeout = teardown_timeout
        supported = ffi.new("unsigned char[]", lib.OURING_PROBE_OPS)
        lib.ouring_probe(self._ptr, supported, lib.OURING_PROBE_OPS)
        self._supported = bytes(ffi.buffer(supported))
        self._recv_group: object = _UNTRIED
        self._features = self._probe_features()
        if self._features["nodrop"]:
            # The cap above keeps the ring's own traffic from overflowing the
            # CQ where an overflow loses completions. With IORING_FEAT_NODROP
            # (Linux 5.5) an overflow waits in the kernel until the reap
            # flushes it (tests/safety/test_pressure.py), and a cap would only
            # stall a server: every idle connection keeps a receive (a
            # multishot one, or a one-shot one) in the kernel, so connection
            # 2,049 of the default ring would never be accepted.
            self._max_inflight = sys.maxsize
        self._register()

    def _probe_features(self) -> dict[str, bool]:
        features = {name: self.supports(opcode) for name, opcode in _FEATURE_OPCODES.items()}
        features["fixed_buffers"] = features["fixed_buffers"] and self.supports(
            lib.IORING_OP_WRITE_FIXED
        )
        flags, kernel = self.setup_flags, lib.ouring_features(self._ptr)
        features.update(
            io_uring=True,
            # The CQ never drops a completion: an overflow waits in the kernel.
            nodrop=bool(kernel & lib.IORING_FEAT_NODROP),
            coop_taskrun=bool(flags & lib.IORING_SETUP_COOP_TASKRUN),
            defer_taskrun=bool(flags & lib.IORING_SETUP_DEFER_TASKRUN),
            # IORING_RECV_MULTISHOT is a flag of RECV (Linux 6.0): the probe
            # cannot tell. The buffer ring registers at first use
            # (recv_group), which may still refuse.
            multishot_recv=_kernel_at_least(6, 0) and self.supports(lib.IORING_OP_RECV),
            # IORING_ACCEPT_MULTISHOT is a flag of ACCEPT (Linux 5.19).
            multishot_accept=_kernel_at_least(5, 19) and self.supports(lib.IORING_OP_ACCEPT),
            send_zc=self.supports(lib.IORING_OP_SEND_ZC),
        )
        return features

    # -- the driver interface, used by executors -------------------------------------

    def flush(self, reap: bool = False) -> None:
        """Write queued cancels and operations into the SQ and submit them with
        one io_uring_enter, as far as SQ and CQ capacity allow. With ``reap``,
        the same io_uring_enter also settles the operations whose CQEs are
        ready (a page-cache read completes during its own submission)."""
        if self._fd_requests:
            self._answer_fd_requests()  # before any SQE: a queued op must not go in
        if not (self._pending or self._cancels) or self._closed:
            return
        # _prepare and _enter check the thread and the process themselves.
        self._prepare()
        self._enter(0, _NO_WAIT, self._batch if reap else 0)

    def cancel_now(self, op: _ringcore.Operation) -> bool:
        """Cancel ``op`` and hand the cancel to the kernel at once, reaping in
        the same ``io_uring_enter``: True if ``op`` is DONE on return. For a
        layer that must know now whether the kernel still runs it
        (``UringSocket.detach``). The cancel of an operation armed on a poll
        (a multishot recv or accept waiting for its socket) completes inside
        the ``io_uring_enter`` that submits it; one running in an io-wq
        worker may not."""
        if op.state in (PENDING, SUBMITTED, CANCELLING) and not self._closed:
            self.cancel(op)
            self.flush(reap=True)
        return bool(op.state == DONE)

    def reap(self) -> int:
        """Settle every operation whose final CQE is ready; never blocks. On
        a closed ring, nothing: its memory is gone (a reaper woken in the
        same scheduler pass as the close may still call this)."""
        if self._closed:
            return 0
        return self._enter(0, _NO_WAIT, self._batch)

    def wait(self, timeout: float | None = None) -> int:
        """Submit, block until at least one CQE or ``timeout``, then reap.
        For driving a ring without an event loop; returns the CQEs reaped."""
        self._check_open()  # a closed ring raises here, not only when busy
        self._answer_fd_requests()  # a ring driven by hand answers other threads here
        self._prepare()
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        while True:
            timeout_ns = (
                _NO_WAIT if deadline is None else max(0, int((deadline - time.monotonic()) * 1e9))
            )
            n = self._enter(1, timeout_ns, self._batch)
            # -EINTR: a signal interrupted the wait; its Python handler has run
            # by now (KeyboardInterrupt propagates from here). Retry with what
            # is left of the timeout, as PEP 475 does.
            if n or self._last_submit != -errno.EINTR:
                return n
            if deadline is not None and time.monotonic() >= deadline:
                return 0

    def _cancel_fd_here(self, fd: int) -> int:
        """``cancel_fd`` on this ring only (its own thread)."""
        targets = [op for op in self._pending if uses_fd(op, fd)]
        targets += [op for op in self._inflight.values() if uses_fd(op, fd)]
        for op in targets:
            self.cancel(op, CLOSED)
        return len(targets)

    def call_when_idle(self, callback: Callable[[], object]) -> None:
        """Call ``callback`` once no operation is pending or in the kernel
        (at once if none is)."""
        if self._inflight or self._pending:
            self._idle_callbacks.append(callback)
        else:
            callback()

    # -- lifetime ------------------------------------------------------------------------

    def close(self) -> None:
        """Cancel everything, wait (bounded) for every CQE, then free the ring.

        Waiters of operations that did not happen get ``RingClosedError``.
        Operations the kernel still owns after ``teardown_timeout`` are leaked
        on purpose: their memory is kept forever, counted in
        ``statistics().leaked``, with a ``ResourceWarning``."""
        if self._closed:
            return
        if get_ident() != self._thread and not self._forked:
            raise RuntimeError("a Ring must be closed by the thread that created it")
        self._closed = True
        if self._forked:
            # A forked child: the ring's memory was not inherited (MADV_DONTFORK)
            # and the kernel writes only into the parent's copies of buffers.
            self._detach_pool("its ring belongs to the parent process")
            self._close_core()
            lib.ouring_exit(self._ptr)
            return
        # (Not in a forked child above: its event loop's epoll is the parent's.)
        if self._on_close is not None:
            self._on_close()
        self._withdraw_pending(RING)
        for op in list(self._inflight.values()):
            self.cancel(op, RING)
        # Nothing of this ring will reach the kernel any more: other threads'
        # closes may go on.
        self._unregister()
        deadline = time.monotonic() + self.teardown_timeout
        interrupted: BaseException | None = None
        while self._inflight or self._cancels:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                self._prepare()
                self._enter(1, int(remaining * 1e9), self._batch)
            except OSError:
                break  # the kernel refuses to enter: what it still owns is leaked below
            except BaseException as exc:  # noqa: BLE001 - Ctrl-C during the wait
                # Finish the teardown first (never free what the kernel owns),
                # then re-raise.
                interrupted = interrupted or exc
        stranded = self._leak_inflight()
        # io_uring_queue_exit unregisters the buffers; their memory stays the
        # pool's (held by every buffer an operation, leaked or not, still has).
        self._detach_pool("its ring closed")
        # No CQE will ever wake these waiters: wake them now (outcome() raises
        # RingClosedError). The memory stays with the ring regardless.
        for op in stranded:
            # A multishot receive wakes the task parked on its receiver.
            holder = getattr(op, "receiver", None) or op
            if holder.waiter is not None and self.executor is not None:
                waiter, holder.waiter = holder.waiter, None
                self.executor.wake(waiter)
        self._close_core()
        lib.ouring_exit(self._ptr)
        if stranded:
            warnings.warn(
                f"ouring: {len(stranded)} operation(s) did not complete within "
                f"{self.teardown_timeout}s of closing the ring; their buffers are "
                "kept alive forever so the kernel never writes into freed memory",
                ResourceWarning,
                stacklevel=2,
            )
        if interrupted is not None:
            raise interrupted

    def __del__(self) -> None:
        # Dropped without close(): the garbage collector is no place to wait
        # for the kernel (any thread, any moment), so whatever it still owns
        # is kept forever instead of being freed under it.
        if getattr(self, "_closed", True):
            return
        name = repr(self)
        self._closed = True
        self._forget()
        if not self._forked:
            self._leak_inflight()
        warnings.warn(
            f"unclosed {name}"
            + (f" with {self._leaked} operation(s) in flight" if self._leaked else ""),
            ResourceWarning,
            stacklevel=1,
            source=self,
        )
        self._close_core()
        lib.ouring_exit(self._ptr)

    def _leak_inflight(self) -> list[Operation[Any]]:
        """SUBMITTED/CANCELLING -> LEAKED: the kernel may still write into these
        operations' memory, so it is referenced forever and never freed.
        Returns them."""
        stranded: list[Operation[Any]] = super()._leak_inflight()
        _leaked_forever.extend(stranded)
        return stranded

    @property
    def busy(self) -> bool:
        """Whether any operation is in the kernel (a CQE may come)."""
        return bool(self._inflight)

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"fd={self.fd}"
        return f"<ouring.Ring {state} sq={self.sq_entries} cq={self.cq_entries}>"

    def statistics(self) -> RingStatistics:
        return RingStatistics(
            inflight=len(self._pending) + len(self._inflight),
            pending=len(self._pending),
            submitted=self._submitted,
            completed=self._completed,
            cancelled=self._cancelled,
            leaked=self._leaked,
            batches=self._batches,
            more=self._more_cqes,
            sq_entries=self.sq_entries,
            cq_entries=self.cq_entries,
            setup_flags=self.setup_flags,
        )

    def supports(self, opcode: int) -> bool:
        """Whether this kernel implements the io_uring opcode."""
        return 0 <= opcode < len(self._supported) and bool(self._supported[opcode])

    def recv_group(self) -> int | None:
        """The provided-buffer group that multishot receives of this ring
        use (``MultishotReceive``), registered at the first call; None where
        this kernel has no multishot recv (before Linux 6.0) or refuses the
        buffer ring: receives are then one-shot. The buffers (``RECV_BUFFERS``
        of ``RECV_BUFFER_SIZE`` bytes, ring memory of ouring's own) are shared
        by every socket of the ring and pinned by no one: a connection with
        nothing arriving holds no buffer."""
        group = self._recv_group
        if group is _UNTRIED:
            group = self._recv_group = None
            if self._features["multishot_recv"]:
                res = self._open_recv_pool(RECV_BUFFERS, RECV_BUFFER_SIZE, RECV_GROUP)
                if res == 0:
                    group = self._recv_group = RECV_GROUP
        return group  # type: ignore[return-value]

    # -- registered buffers ------------------------------------------------------------

    def _register_pool(self, pool: BufferPool) -> str | None:
        """Register ``pool``'s buffers with the kernel: None, or why not (the
        pool's buffers are then plain ones). Never raises for the kernel's
        refusal: a pool works either way."""
        self._check_open()
        self._check_process()
        if not self._features["fixed_buffers"]:
            return "this kernel's io_uring has no READ_FIXED/WRITE_FIXED (Linux 5.1+)"
        if self._fixed_pool is not None:
            return "the ring has a registered pool already (one per ring): close that one first"
        res = lib.ouring_register_buffers(
            self._ptr, pool.address, pool.stride, pool.size, pool.count
        )
        if res == -errno.ENOMEM:
            soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
            limit = "unlimited" if soft == resource.RLIM_INFINITY else f"{soft // 1024} KiB"
            size = pool.count * pool.stride // 1024
            return (
                f"RLIMIT_MEMLOCK ({limit}) is too low to register {size} KiB: "
                "raise `ulimit -l` (or LimitMEMLOCK=) for fixed buffers"
            )
        if res < 0:
            return f"io_uring_register_buffers failed: {os.strerror(-res)}"
        self._fixed_pool = pool
        return None

    def _unregister_pool(self, pool: BufferPool) -> None:
        """``pool`` is closed and every buffer is back: no operation names it."""
        if self._fixed_pool is not pool or self._closed or self._forked:
            return
        self._check_open()
        res = lib.ouring_unregister_buffers(self._ptr)
        self._fixed_pool = None
        pool._unregistered("the pool was closed" if res >= 0 else os.strerror(-res))

    def _detach_pool(self, reason: str) -> None:
        pool, self._fixed_pool = self._fixed_pool, None
        if pool is not None:
            pool._unregistered(f"{reason}; its buffers are plain buffers now")

    # -- operations ------------------------------------------------------------------------

    def has_queued(self, *, room_only: bool = False) -> bool:
        """Whether operations or cancel requests wait for the next flush. With
        ``room_only``, queued operations count only while the in-flight cap
        has room for them (those over it wait for a CQE, not for a flush)."""
        if self._cancels:
            return True
        if not self._pending:
            return False
        return not room_only or len(self._inflight) < self._max_inflight

    # perform(op) is RingCore's (native/core.c): executor.perform(self, op), or
    # _driver_of((op,)) without an executor. The layers above the ring
    # (streams, sockets, files) build operations and await it; the
    # module-level functions are built on it.
    if TYPE_CHECKING:

        def perform(self, op: Operation[T]) -> Coroutine[Any, Any, T]: ...

    def perform_many(self, ops: Sequence[Operation[T]]) -> Coroutine[Any, Any, list[T]]:
        """``perform`` for a batch: one wait, the outcomes in order."""
        return self._driver_of(ops).perform_many(self, ops)  # type: ignore[arg-type]

    def _driver_of(self, ops: Sequence[Operation[Any]]) -> Executor:
        """The executor that performs ``ops``; without one, they are released."""
        if self.executor is None:
            for op in ops:
                op.release()
            raise RuntimeError(
                "this ring is not driven by an event loop; use "
                "`async with ouring.open_ring()` inside trio.run or a running asyncio loop"
            )
        return self.executor


class Operations(RingOperations, Backend):
    """The operation methods of every ring, the io_uring ``Ring``'s and the
    fallback ``ThreadRing``'s (``await ring.read(fd, buf)``): each builds its
    operation and awaits the ring's ``perform``."""

    if TYPE_CHECKING:

        def _driver_of(self, ops: Sequence[Operation[Any]]) -> Executor: ...

    async def nop(self) -> None:
        await self.perform(Nop())

    async def read_fixed(self, fd: Any, buf: B, offset: int = -1) -> tuple[B, int]:
        return await self.perform(
            fixed_or_plain(self._fixed_pool, ReadFixed, Read, fd, buf, offset)
        )

    async def write_fixed(self, fd: Any, buf: B, offset: int = -1) -> tuple[B, int]:
        return await self.perform(
            fixed_or_plain(self._fixed_pool, WriteFixed, Write, fd, buf, offset)
        )

    async def read_many(self, requests: Iterable[tuple[Any, B, int]]) -> list[tuple[B, int]]:
        return await self.perform_many(read_requests(requests, self._fixed_pool))

    async def send_zc(self, sock: Any, buf: B, flags: int = 0) -> tuple[B, int]:
        if self.has("send_zc"):
            try:
                return await self.perform(SendZC(sock, buf, flags))
            except OSError as exc:
                # A socket without zero-copy support (AF_UNIX): the kernel
                # refused before sending anything; a plain send does it.
                if exc.errno != errno.EOPNOTSUPP:
                    raise
        return await self.perform(Send(sock, buf, flags))

    async def sendmsg(
        self, sock: Any, bufs: S, ancdata: Any = (), flags: int = 0, address: Any = None
    ) -> tuple[S, int]:
        if address is not None:
            address = await self._numeric_address(sock, address)
        return await self.perform(SendMsg(sock, bufs, ancdata, flags, address))

    async def connect(self, sock: Any, address: Any) -> None:
        address = await self._numeric_address(sock, address)
        await self.perform(Connect(sock, address))

    async def _numeric_address(self, sock: Any, address: Any) -> Any:
        """``address`` with its host name resolved (by the event loop: it may
        block), for the operations that carry a sockaddr."""
        family = socket_family(sock, fileno(sock))
        if _sockaddr.is_numeric(family, address):
            return address
        return await self._resolve(family, address)

    async def _resolve(self, family: int, address: Any) -> Any:
        if self.executor is None:
            raise RuntimeError("resolving a host name needs an event loop")
        return await self.executor.resolve(family, address)

    async def close_fd(self, fd: Any) -> None:
        """Close ``fd`` (an int or a ``socket.socket``) after cancelling every
        operation on it, on every live ring of the process.

        Rings of other threads are asked through their own thread, and the
        close waits for the answer of each that an event loop drives: by the
        time ``close(2)`` runs, every ring has withdrawn its queued operations
        on the fd (they raise ``ClosedResourceError`` and never reach the
        kernel) and asked the kernel to cancel the others (those hold the old
        file, never a new one reusing the number; they end with
        ``ClosedResourceError`` unless they completed first). A ring of
        another thread driven by hand answers at its next ``flush``/``wait``
        and is not waited for. Rings of this thread are asked at once
        (:meth:`cancel_fd`). Cancelled while waiting for another thread's
        answer, the fd stays open; operations already ended stay ended."""
        op = Close(fd)
        here = get_ident()
        # The rings stay referenced until answered: one collected meanwhile
        # would never answer.
        rings = [ring for ring in _live_rings_but(self) if ring._thread != here]
        # A ring driven by hand may never flush again: not waited for (its
        # queued operations go in only at its next flush, which answers first).
        waited = [request for ring in rings if (request := ring._post_fd_request(op.fd))]
        if waited:
            try:
                await self._wait_answered(waited)
            except BaseException:
                op.release()
                raise
        del rings
        await self.perform(op)

    async def _wait_answered(self, requests: Sequence[FdRequest]) -> None:
        await self._driver_of(()).wait_answered(requests)


class Ring(_IoUring, Operations):
    """One io_uring and the operations in flight on it.

    ``entries`` sizes the submission queue; ``cq_entries`` the completion
    queue (default: at least 4096, and twice ``entries``). ``setup_flags``
    defaults to :data:`DEFAULT_SETUP_FLAGS`, falling back to none on kernels
    that reject them; with ``IORING_SETUP_DEFER_TASKRUN`` a registered eventfd
    becomes :attr:`wait_fd`. ``teardown_timeout`` bounds how long
    :meth:`close` waits for the kernel to finish cancelled operations.
    """


def _unsupported(op: Operation[Any]) -> UnsupportedError:
    """Why ``op`` was refused on an open ring of this thread and process."""
    return UnsupportedError(
        errno.EOPNOTSUPP,
        f"this kernel's io_uring has no {type(op).__name__} operation "
        f"(opcode {op.opcode}); upgrade the kernel",
    )


# Every Python function the extension calls (native/internal.h, struct hooks),
# registered once, here. The rest of what C calls is the operation protocol
# (methods of the C base Operation) and the executor's wake.
_ringcore.set_hooks(
    unlendable=unlendable,
    in_use=in_use,
    fileno_for=fileno_for,
    file_offset=file_offset,
    u32=u32,
    buffer_error=buffer_error,
    closed_error=RingClosedError,
    unsupported=_unsupported,
    cancel_fd=Ring.cancel_fd,
)
