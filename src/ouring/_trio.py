"""The trio adapter: trio's scheduler drives a Ring.

Facts about trio this module relies on:

- ``wait_task_rescheduled(abort_fn)``: returning ``Abort.SUCCEEDED`` promises
  that nobody reschedules the task later; ``Abort.FAILED`` promises that
  somebody will, and a cancellation that takes effect late is reported by
  calling the ``raise_cancel`` that abort_fn received. An abort_fn that raises
  crashes trio. This is the protocol of trio's own completion-based backend
  (``_io_windows.py``, ``wait_overlapped``): an operation the kernel has not
  seen is withdrawn (SUCCEEDED); a submitted one gets IORING_OP_ASYNC_CANCEL
  (FAILED) and its real CQE decides: cancelled means ``Cancelled``, anything
  else is returned, because it happened (trio then raises ``Cancelled`` at the
  next checkpoint, since the scope stays cancelled).
- An instrument's ``before_io_wait`` runs once per scheduler pass, just before
  trio blocks for I/O: the one ``io_uring_enter`` per pass happens there. It
  must not reschedule tasks when its ``timeout`` is above 0: that timeout is
  computed already, so trio would sleep with a runnable task. With timeout 0
  (a task is runnable already) trio only polls, and takes the pass's batch
  of runnable tasks after ``after_io_wait``: a wake there lands in the same
  batch as one from ``after_io_wait``. ``after_io_wait`` runs after the I/O
  wait and before trio takes the pass's batch of runnable tasks: completions
  are reaped there, so a waiter runs in the same pass as its CQE. An
  instrument that raises is removed silently (every operation would then
  hang), so neither hook raises; failures go through ``run_sync_soon``.
- ``cancel_shielded_checkpoint`` puts the task back in the run queue at
  once: it runs in the next batch, after that pass's ``before_io_wait``
  (submit) and ``after_io_wait`` (reap). An operation that completes inside
  the submitting ``io_uring_enter`` is therefore DONE when the task resumes,
  with no park and no ``reschedule``.
- ``wait_readable`` on the ring fd sees completions with setup flags 0 or
  COOP_TASKRUN. With DEFER_TASKRUN it misses them; ``Ring.wait_fd`` is then an
  eventfd registered with the ring.
- A system task is cancelled when the main task ends, so the per-run ring is
  torn down in the reaper's ``finally``, still inside the run.
- ``MockClock(autojump_threshold=0)`` does not see ring operations: deadlines
  are trio's cancel scopes, never io_uring timeouts.
- trio's traps yield a message to its run loop (the class object
  ``CancelShieldedCheckpoint``, or a ``WaitTaskRescheduled`` holding the abort
  function) and trio sends back an outcome. ``perform`` and ``receive`` are C
  awaitables that yield those messages themselves (native/trio_await.c, whose
  header has the details); ``_trio_traps`` checks the messages at import and
  the Python paths here run instead if trio has changed them.
"""

from __future__ import annotations

import functools
import os
import socket
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Sequence
from contextlib import asynccontextmanager, suppress
from contextvars import ContextVar
from threading import get_ident
from typing import Any, TypeVar

import outcome
import trio

from . import _hot
from ._errors import FdClosedError
from ._fallback import ThreadDriver, ThreadRing, make_ring, wait_answered, wakeup_in_run
from ._hot import Group, Receiver
from ._ops import (
    DONE,
    MultishotReceive,
    Operation,
    Read,
    ReadFixed,
    ReadV,
    Recv,
    RecvMsg,
    Send,
    SendMsg,
    Splice,
    Write,
    WriteFixed,
    WriteV,
    fileno,
    fixed_or_plain,
    read_requests,
    socket_family,
)
from ._ring import RECV_GROUP as _RECV_GROUP
from ._ring import Ring
from ._sockaddr import is_numeric

T = TypeVar("T")
B = TypeVar("B")
S = TypeVar("S")

_run_driver: trio.lowlevel.RunVar[_Driver | ThreadDriver] = trio.lowlevel.RunVar("ouring_driver")
_innermost: ContextVar[Ring | None] = ContextVar("ouring_ring", default=None)
# Looked up once: perform() runs once per operation.
_current_task = trio.lowlevel.current_task
_checkpoint_if_cancelled = trio.lowlevel.checkpoint_if_cancelled
_cancel_shielded_checkpoint = trio.lowlevel.cancel_shielded_checkpoint
_wait_task_rescheduled = trio.lowlevel.wait_task_rescheduled
_SUCCEEDED = trio.lowlevel.Abort.SUCCEEDED
_FAILED = trio.lowlevel.Abort.FAILED
_task_ring: ContextVar[tuple[Ring, int] | None] = ContextVar("ouring_task_ring", default=None)


def _trio_traps() -> tuple[Any, Any] | None:
    """trio's two trap messages, if its traps yield them as
    native/trio_await.c expects (its header): the class object
    CancelShieldedCheckpoint, and a WaitTaskRescheduled carrying the abort
    function. Checked by driving trio's own traps one step; None (the Python
    paths everywhere) if trio has changed them."""
    try:
        from trio._core._traps import CancelShieldedCheckpoint, WaitTaskRescheduled
    except ImportError:
        return None

    def abort(_: Any) -> trio.lowlevel.Abort:
        return _SUCCEEDED

    def first_yield(coro: Coroutine[Any, Any, Any]) -> Any:
        try:
            return coro.send(None)
        except BaseException:  # noqa: BLE001 - any surprise means: not as expected
            return None
        finally:
            coro.close()

    if first_yield(_cancel_shielded_checkpoint()) is not CancelShieldedCheckpoint:
        return None
    parked = first_yield(_wait_task_rescheduled(abort))
    if type(parked) is not WaitTaskRescheduled or parked.abort_func is not abort:
        return None
    return CancelShieldedCheckpoint, WaitTaskRescheduled


_TRAPS = _trio_traps()


class _Driver(trio.abc.Instrument):
    """Drives one ring in the current trio run: batches submissions in
    ``before_io_wait`` and reaps completions in a system task."""

    def __init__(self, ring: Ring) -> None:
        self.ring = ring
        self._closed = False
        self._token = trio.lowlevel.current_trio_token()
        self._reaper_scope = trio.CancelScope()
        # ring._pass_submits / ring._alone (kept by the core, so that
        # perform can be C): a pass that submitted at most one operation
        # means a lone task, whose next operation goes to the kernel at once
        # instead of waiting for the batch.
        ring.executor = self
        ring._wakeup = wakeup_in_run(ring)  # other threads' closes reach the ring through it
        ring._on_close = self._detach  # whoever closes the ring, before its fd goes
        trio.lowlevel.add_instrument(self)
        trio.lowlevel.spawn_system_task(self._reap, name=f"ouring reaper (ring fd {ring.fd})")

    # -- Executor ---------------------------------------------------------------------

    def perform(self, ring: Ring, op: Operation[T]) -> Coroutine[Any, Any, T]:
        # Where trio's traps are as native/trio_await.c expects, this is
        # _hot.trio_perform (assigned after _receive): an operation that usually
        # completes inside the pass's io_uring_enter (sends with socket-buffer
        # room, page-cache reads and writes) when the last pass was not a lone
        # task's is done in C: checkpoint_if_cancelled, submit, one
        # cancel_shielded_checkpoint, its result if DONE, else _finish. That is
        # _perform's completes_inline branch.
        return self._perform(ring, op)

    async def _perform(self, ring: Ring, op: Operation[T]) -> T:
        lone = ring._alone
        if lone or op.completes_inline:
            # Two ways to finish without parking, both a full checkpoint
            # (checkpoint_if_cancelled + cancel_shielded_checkpoint, what trio's
            # socket calls do around a successful syscall):
            # - lone: the last pass submitted at most one operation and this is
            #   the first of this pass, so there is nobody to batch with. It is
            #   submitted and reaped at once; if its CQE is there (page-cache
            #   reads), it yields and returns.
            # - completes_inline: it usually completes inside the io_uring_enter
            #   of before_io_wait (page-cache reads and writes, sends with socket
            #   buffer room), and after_io_wait settles it before this task runs
            #   again. So it yields once and finds it DONE: no park and no
            #   reschedule, about 6k instructions less than parking.
            # Anything not DONE parks in _finish.
            if lone:
                ring._alone = False
            try:
                await _checkpoint_if_cancelled()
            except BaseException:
                op.release()  # never submitted: the caller keeps everything
                raise
            ring.submit(op)
            if lone:
                try:
                    ring.flush(reap=True)
                except BaseException:  # noqa: BLE001 - the op waits for the ring's close
                    self._token.run_sync_soon(self.close)
            if not lone or op.state == DONE:
                try:
                    await _cancel_shielded_checkpoint()
                except BaseException:
                    ring.abandon(op)  # closed or thrown into: nobody receives it
                    raise
        else:
            # No checkpoint_if_cancelled here: parking is the cancel point. A
            # scope cancelled already calls abort() as soon as the task parks,
            # which withdraws the still PENDING operation before the kernel
            # sees it (the batch is submitted in before_io_wait), so Cancelled
            # means it did not happen, as trio's rules require.
            ring.submit(op, _current_task())
        return await _finish(ring, op)

    async def perform_many(self, ring: Ring, ops: Sequence[Operation[T]]) -> list[T]:
        """One checkpoint and at most one park for a whole batch: every
        operation is submitted with one ``Group`` as its waiter, which the
        ring wakes once, when the last is DONE. Cancelled: the operations the
        kernel has not seen are withdrawn, the others get a cancel request,
        and the task waits for every final CQE (their buffers are the
        kernel's until then). If any was cancelled the batch raises
        ``Cancelled`` and what did complete is dropped; that is safe for
        read_many's reads at explicit offsets, which move no file position."""
        try:
            await _checkpoint_if_cancelled()
        except BaseException:
            for op in ops:
                op.release()  # never submitted: the caller keeps everything
            raise
        group = Group(len(ops), None)  # no waiter while the task only yields
        for i, op in enumerate(ops):
            try:
                ring.submit(op, group)
            except BaseException:
                for rest in ops[i + 1 :]:
                    rest.release()
                for submitted in ops[:i]:
                    ring.abandon(submitted)
                raise
        if all(op.completes_inline for op in ops):
            # Page-cache reads complete in the io_uring_enter of this pass's
            # before_io_wait: one yield, and usually nothing to park for.
            try:
                await _cancel_shielded_checkpoint()
            except BaseException:
                for op in ops:
                    ring.abandon(op)
                raise
        if group.left:
            task = group.waiter = _current_task()
            raise_cancel = None

            def abort(raise_cancel_: Any) -> trio.lowlevel.Abort:
                nonlocal raise_cancel
                raise_cancel = raise_cancel_
                group.waiter = None  # withdrawn operations settle here: no wake
                for op in ops:
                    ring.cancel(op)
                if not group.left:
                    return _SUCCEEDED
                group.waiter = task
                return _FAILED

            try:
                await _wait_task_rescheduled(abort)
            except BaseException:
                for op in ops:
                    ring.abandon(op)
                raise
            if raise_cancel is not None and any(op.cancelled() for op in ops):
                raise_cancel()
        return [op.result() if not op.cancel_by else _outcome(op) for op in ops]

    async def _receive(self, ring: Ring, rx: Receiver, fd: int, take: Any, *args: Any) -> Any:
        """``take(*args)`` (a ``Receiver`` method: take, peek, take_into, or
        a wrapper of one) once the socket's multishot receive has delivered
        something, arming it as needed. With something queued: a full
        checkpoint around the take, as trio's own recv around a syscall that
        does not block. Otherwise the task parks on the receiver, not on an
        operation: parking is the cancel point (as in ``perform``), a cancel
        only ends the wait (Abort.SUCCEEDED) and the multishot stays armed,
        so whatever arrives afterwards stays queued for the next receive and
        Cancelled means nothing was taken. ``receive`` is this in C where
        trio's traps are as native/trio_await.c expects."""
        if rx.ready:
            await _checkpoint_if_cancelled()
            try:
                data = take(*args)
            finally:
                await _cancel_shielded_checkpoint()
            if data is not None:
                return data
            # A take that wants more than is queued (MSG_WAITALL) waits below.

        def abort(raise_cancel: Any) -> trio.lowlevel.Abort:
            rx.waiter = None  # nothing was taken: it did not happen
            return _SUCCEEDED

        while True:
            if rx.closed:
                raise trio.ClosedResourceError("another task closed this socket")
            if rx.op is None:
                # Not armed (first receive, or the kernel ended the last one:
                # end of stream, ENOBUFS, backpressure, an error).
                _arm(ring, rx, fd)
            rx.waiter = _current_task()
            await _wait_task_rescheduled(abort)
            if rx.closed:
                raise trio.ClosedResourceError("another task closed this socket")
            data = take(*args)
            if data is not None:
                return data

    # The reference paths in Python, which the C ones mirror (tests run both).
    _perform_in_python = perform
    _receive_in_python = _receive
    if _TRAPS is not None:
        perform = staticmethod(_hot.trio_perform)  # type: ignore[assignment]
        receive = staticmethod(_hot.trio_receive)
    else:
        receive = _receive  # type: ignore[assignment]

    def call_soon(self, fn: Any, *args: Any) -> bool:
        try:
            self._token.run_sync_soon(fn, *args)
        except trio.RunFinishedError:
            return False
        return True

    # The ring calls this with a waiter: the task parked in _finish (op.waiter),
    # perform_many's group's, or a receive's (rx.waiter).
    wake = staticmethod(trio.lowlevel.reschedule)
    wait_answered = staticmethod(wait_answered)

    async def resolve(self, family: int, address: Any) -> Any:
        host, port, *rest = address
        infos = await trio.socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
        return (infos[0][4][0], port, *rest)

    # -- scheduler hooks ----------------------------------------------------------------

    def before_io_wait(self, timeout: float) -> None:
        ring = self.ring
        ring._alone = ring._pass_submits <= 1
        ring._pass_submits = 0
        try:
            # Busy (timeout 0): settle what completed inside this submit (page-
            # cache reads) right here. The CQ is then empty when trio polls, so
            # the ring fd is not readable and the reaper task is not woken for
            # nothing: one task step and one epoll re-arm saved per pass.
            ring.flush(reap=timeout == 0)
        except BaseException:  # noqa: BLE001 - an instrument must never raise
            # io_uring_enter failed outright (not EBUSY): the ring cannot be
            # trusted. Closing it reschedules waiters (RingClosedError), which
            # is not allowed here, so it happens on the next pass.
            self._token.run_sync_soon(self.close)

    def after_io_wait(self, timeout: float) -> None:
        # Reaping here, between the I/O wait and the pass's batch of runnable
        # tasks, wakes the waiters of this pass's completions in the same pass:
        # no hop through the reaper task, whose wakeup is only needed to end
        # the I/O wait when every task is parked on the ring.
        if self.ring.busy:
            try:
                self.ring.reap()
            except BaseException:  # noqa: BLE001 - an instrument must never raise
                self._token.run_sync_soon(self.close)

    async def _reap(self) -> None:
        try:
            with self._reaper_scope:
                # Checked before every wait: once the ring is closed its fd
                # number may belong to the next ring (or any file), whose own
                # waiter must get trio's one registration per fd; a second
                # wait_readable there raises BusyResourceError in this system
                # task and kills the run. A reaper spawned for a ring closed
                # before it first ran, or woken in the pass that closed it,
                # gets here. No checkpoint between the check and
                # wait_readable's registration, so nothing can close the ring
                # in between; a close while parked goes through _detach's
                # notify_closing, before the fd is closed.
                while not self._closed:
                    await trio.lowlevel.wait_readable(self.ring.wait_fd)
                    self.ring.reap()
        except (trio.ClosedResourceError, OSError):
            # Closed under us, or io_uring_enter failed outright (not EBUSY):
            # a system task must not raise, so the ring closes and its
            # waiters get RingClosedError.
            pass
        finally:
            self.close()

    def _detach(self) -> None:
        """Leave the run's scheduler: ``Ring.close`` calls this (whoever
        closes the ring: this driver, the user, a failed kernel call) before
        it closes the ring fd, while the number is still the ring's."""
        if self._closed:
            return
        self._closed = True
        with suppress(KeyError):
            trio.lowlevel.remove_instrument(self)
        # A reaper parked in wait_readable leaves with ClosedResourceError and
        # trio forgets the fd; one that has not run yet sees _closed.
        trio.lowlevel.notify_closing(self.ring.wait_fd)
        self._reaper_scope.cancel()

    def close(self) -> None:
        self._detach()
        self.ring.close()


def _outcome(op: Operation[T]) -> T:
    try:
        return op.outcome()
    except FdClosedError as exc:
        raise trio.ClosedResourceError(str(exc)) from None


async def _finish(ring: Ring, op: Operation[T]) -> T:
    """The rest of ``perform`` once ``op`` is submitted: its result if it is
    DONE, else park until its final CQE. A cancel withdraws it if the kernel
    has not seen it (Abort.SUCCEEDED: Cancelled, it did not happen), else asks
    the kernel to cancel it (Abort.FAILED) and its real CQE decides:
    cancelled means Cancelled, anything else happened and is returned."""
    if op.state == DONE:
        return op.result() if not op.cancel_by else _outcome(op)
    task = op.waiter = _current_task()
    raise_cancel = None

    def abort(raise_cancel_: Any) -> trio.lowlevel.Abort:
        nonlocal raise_cancel
        raise_cancel = raise_cancel_
        # A withdrawn (PENDING) operation is settled inside cancel(); it
        # must not wake this task as well: Abort.SUCCEEDED already
        # reschedules it, and trio allows exactly one reschedule.
        op.waiter = None
        if ring.cancel(op):
            return _SUCCEEDED
        op.waiter = task
        return _FAILED

    try:
        await _wait_task_rescheduled(abort)
    except BaseException:
        # Abort.SUCCEEDED (op withdrawn, DONE), or the coroutine was closed
        # or thrown into while parked: the ring keeps the operation and its
        # memory until the final CQE, and undoes a result nobody receives.
        ring.abandon(op)
        raise
    if not op.cancel_by:  # nobody asked for a cancel: the common case
        return op.result()
    if raise_cancel is not None and op.cancelled():
        raise_cancel()
    return _outcome(op)


def _arm(ring: Ring, rx: Receiver, fd: int) -> None:
    """Arm ``rx``'s multishot receive on ``ring`` (receive, in C or not)."""
    op = MultishotReceive(fd, rx, _RECV_GROUP)
    try:
        ring.submit(op)
    except BaseException:
        rx.op = None
        raise


def current_ring() -> Ring:
    """The ring that module-level operations use: the innermost
    ``open_ring()`` of this task's context, else the run's own ring."""
    return ring_of_task()


def _find_ring() -> Ring:
    ring = _innermost.get()
    if ring is not None:
        return ring  # even closed: its operations raise RingClosedError
    try:
        ring = _run_driver.get().ring
    except LookupError:
        ring = None
    except RuntimeError:
        raise RuntimeError("ouring operations must be awaited inside trio.run") from None
    if ring is None or ring.closed:
        # closed after a kernel failure: the rest of the run gets a new ring
        driver = _drive(make_ring())
        _run_driver.set(driver)
        ring = driver.ring
    _task_ring.set((ring, get_ident()))
    return ring


# current_ring() without a Python frame, for the modules that ask at every
# operation. The answer is cached in the task's context as (ring, thread
# ident): one ContextVar lookup. open_ring() sets the cache for its block;
# otherwise the first operation of a task caches the run's ring (_find_ring).
# A context copied into a worker thread, and from there into another
# trio.run, carries the cache along: the thread check catches that; a ring
# closed (at the end of its run, or after a kernel failure) fails the closed
# check; both go to _find_ring.
ring_of_task: Callable[[], Ring] = functools.partial(_hot.cached_ring, _task_ring, _find_ring)


def _drive(ring: Ring) -> _Driver | ThreadDriver:
    # A ThreadRing runs its operations itself: no instrument, no reaper; its
    # driver only binds it to the run and closes it at the end.
    return ThreadDriver(ring) if isinstance(ring, ThreadRing) else _Driver(ring)


async def wait_all_ops_completed(ring: Ring | None = None) -> None:
    """Park until ``ring`` (default: the current ring) has no operation pending
    or in the kernel. For tests: ``trio.testing.wait_all_tasks_blocked`` and
    ``MockClock`` cannot see operations in flight in the kernel."""
    ring = ring_of_task() if ring is None else ring
    idle = trio.Event()
    ring.call_when_idle(idle.set)
    await idle.wait()


@asynccontextmanager
async def open_ring(
    entries: int = 256,
    *,
    cq_entries: int | None = None,
    setup_flags: int | None = None,
    teardown_timeout: float = 5.0,
    fallback: str | None = None,
) -> AsyncIterator[Ring]:
    """A ring of its own for the enclosed code (and tasks it spawns), closed
    on exit: in-flight operations are cancelled and reaped first.

    When io_uring is unavailable, ``fallback="threads"`` (default:
    ``$OURING_FALLBACK``, else ``"off"``) gives a ring that runs the same
    operations on worker threads and readiness waits instead of raising
    ``UnsupportedError``; ``"always-threads"`` never tries io_uring."""
    driver = _drive(
        make_ring(
            entries,
            cq_entries=cq_entries,
            setup_flags=setup_flags,
            teardown_timeout=teardown_timeout,
            fallback=fallback,
        )
    )
    ring = driver.ring
    token = _innermost.set(ring)
    cached = _task_ring.set((ring, get_ident()))
    try:
        yield ring
    finally:
        _task_ring.reset(cached)
        _innermost.reset(token)
        driver.close()


# -- module-level operations on the current ring ---------------------------------------
#
# The hot ones are plain functions that build their operation and return the
# executor's coroutine: arguments are checked at the call, and awaiting them
# goes through one coroutine frame fewer than an ``async def`` wrapper would
# (each frame costs on every suspension and resumption).


def read(fd: Any, buf: B, offset: int = -1) -> Coroutine[Any, Any, tuple[B, int]]:
    """Read into ``buf`` (a writable buffer) at ``offset``, or at the file
    position when it is -1. Returns the same buffer and the byte count."""
    ring = ring_of_task()  # first: nothing is acquired outside a run
    return ring._perform(Read(fd, buf, offset))


def write(fd: Any, buf: B, offset: int = -1) -> Coroutine[Any, Any, tuple[B, int]]:
    """Write from ``buf`` at ``offset`` (-1: the file position)."""
    ring = ring_of_task()
    return ring._perform(Write(fd, buf, offset))


def read_many(requests: Iterable[tuple[Any, B, int]]) -> Coroutine[Any, Any, list[tuple[B, int]]]:
    """Read a batch of ``(fd, buffer, offset)`` requests (explicit offsets,
    >= 0) and return ``[(buffer, count), ...]`` in order: one checkpoint and
    at most one wakeup for the whole batch. The first failure raises (its
    ``OSError.buffer`` says which); a cancelled batch raises ``Cancelled``
    once the kernel has given every buffer back."""
    ring = ring_of_task()
    return ring._perform_many(read_requests(requests, ring._fixed_pool))


def read_fixed(fd: Any, buf: B, offset: int = -1) -> Coroutine[Any, Any, tuple[B, int]]:
    """``read`` into a buffer of a :class:`BufferPool` (or a memoryview of
    one): a fixed read (IORING_OP_READ_FIXED) when the pool is registered with
    this ring, a plain read otherwise. Any other buffer: ``TypeError``."""
    ring = ring_of_task()
    return ring._perform(fixed_or_plain(ring._fixed_pool, ReadFixed, Read, fd, buf, offset))


def write_fixed(fd: Any, buf: B, offset: int = -1) -> Coroutine[Any, Any, tuple[B, int]]:
    """``write`` from a buffer of a :class:`BufferPool`, as :func:`read_fixed`."""
    ring = ring_of_task()
    return ring._perform(fixed_or_plain(ring._fixed_pool, WriteFixed, Write, fd, buf, offset))


def readv(fd: Any, bufs: S, offset: int = -1) -> Coroutine[Any, Any, tuple[S, int]]:
    """Scatter-read into a sequence of writable buffers."""
    ring = ring_of_task()
    return ring._perform(ReadV(fd, bufs, offset))


def writev(fd: Any, bufs: S, offset: int = -1) -> Coroutine[Any, Any, tuple[S, int]]:
    """Gather-write from a sequence of buffers."""
    ring = ring_of_task()
    return ring._perform(WriteV(fd, bufs, offset))


def recv(sock: Any, buf: B, flags: int = 0) -> Coroutine[Any, Any, tuple[B, int]]:
    """Receive into ``buf``; 0 bytes means the peer closed its side."""
    ring = ring_of_task()
    return ring._perform(Recv(sock, buf, flags))


def send(sock: Any, buf: B, flags: int = 0) -> Coroutine[Any, Any, tuple[B, int]]:
    """Send from ``buf``; may send less than all of it."""
    ring = ring_of_task()
    return ring._perform(Send(sock, buf, flags))


def send_zc(sock: Any, buf: B, flags: int = 0) -> Coroutine[Any, Any, tuple[B, int]]:
    """Send from ``buf`` without copying it into the socket buffer
    (IORING_OP_SEND_ZC): the network stack reads ``buf`` itself, so the
    operation keeps it (lent, a ``bytearray`` cannot be resized) until the
    kernel's notification that it is done with it, after the byte count.
    Returns ``(buf, n)``; may send less than all. Where the kernel has no
    send_zc (``Ring.features()["send_zc"]``) or the socket cannot send
    without copying (``AF_UNIX``), a plain :func:`send`."""
    return ring_of_task().send_zc(sock, buf, flags)


def recvmsg(
    sock: Any, bufs: S, ancbufsize: int = 0, flags: int = 0
) -> Coroutine[Any, Any, tuple[S, int, list[tuple[int, int, bytes]], int, Any]]:
    """``socket.recvmsg_into`` with owned buffers: receive into a sequence of
    writable buffers and up to ``ancbufsize`` bytes of ancillary data. Returns
    ``(bufs, nbytes, ancdata, msg_flags, address)``: the same sequence, then
    what ``recvmsg_into`` returns (``ancdata`` as ``[(level, type, data)]``,
    ``msg_flags`` with ``MSG_TRUNC``/``MSG_CTRUNC``, the sender's address or
    None)."""
    ring = ring_of_task()
    return ring._perform(RecvMsg(sock, bufs, ancbufsize, flags))


def sendmsg(
    sock: Any, bufs: S, ancdata: Any = (), flags: int = 0, address: Any = None
) -> Coroutine[Any, Any, tuple[S, int]]:
    """``socket.sendmsg`` with owned buffers: send from a sequence of buffers
    with ancillary data ``[(level, type, data)]``, to ``address`` (None: the
    connected peer; a host name is resolved with trio's resolver). Returns
    ``(bufs, nbytes)``."""
    ring = ring_of_task()
    if address is not None and not is_numeric(socket_family(sock, fileno(sock)), address):
        return ring.sendmsg(sock, bufs, ancdata, flags, address)
    return ring._perform(SendMsg(sock, bufs, ancdata, flags, address))


async def accept(sock: Any) -> tuple[socket.socket, Any]:
    """Accept a connection: ``(socket.socket, address)``."""
    return await ring_of_task().accept(sock)


async def connect(sock: Any, address: Any) -> None:
    """Connect ``sock``; host names are resolved with trio's resolver."""
    await ring_of_task().connect(sock, address)


async def open(  # noqa: A001 - the issue's name, mirroring os.open
    path: Any, flags: int = os.O_RDONLY, mode: int = 0o666, *, dir_fd: Any = None
) -> int:
    """``os.open`` through io_uring: returns a close-on-exec fd."""
    return await ring_of_task().open(path, flags, mode, dir_fd=dir_fd)


async def close(fd: Any) -> None:
    """Close an int fd, or a ``socket.socket`` (detached once closed)."""
    await ring_of_task().close_fd(fd)


def splice(
    fd_in: Any, off_in: int, fd_out: Any, off_out: int, nbytes: int, flags: int = 0
) -> Coroutine[Any, Any, int]:
    """``os.splice`` through io_uring: move up to ``nbytes`` from ``fd_in`` at
    ``off_in`` to ``fd_out`` at ``off_out`` without copying through user
    memory; one of the two must be a pipe, and a pipe's offset is -1 (so is
    a file's to use and move its position). ``flags`` are ``os.SPLICE_F_*``.
    Returns the count moved, 0 at the end of the input. Cancelled while it
    waits (an empty pipe, a full socket), nothing moved."""
    ring = ring_of_task()
    return ring._perform(Splice(fd_in, off_in, fd_out, off_out, nbytes, flags))


async def fsync(fd: Any, *, datasync: bool = False) -> None:
    """``os.fsync`` (or ``os.fdatasync`` with ``datasync=True``)."""
    await ring_of_task().fsync(fd, datasync=datasync)


async def stat(path: Any, *, dir_fd: Any = None, follow_symlinks: bool = True) -> os.stat_result:
    """``os.stat`` through statx; ``path`` may also be an open fd."""
    return await ring_of_task().stat(path, dir_fd=dir_fd, follow_symlinks=follow_symlinks)


async def shutdown(sock: Any, how: int) -> None:
    """``socket.shutdown``; unlike ``close``, it ends operations in flight on
    the socket (a pending recv returns 0)."""
    await ring_of_task().shutdown(sock, how)


async def fallocate(fd: Any, offset: int, length: int, *, mode: int = 0) -> None:
    """``fallocate(2)``: ``os.posix_fallocate`` with mode 0, or ``FALLOC_FL_*`` flags."""
    await ring_of_task().fallocate(fd, offset, length, mode=mode)


async def fadvise(fd: Any, offset: int, length: int, advice: int) -> None:
    """``os.posix_fadvise``."""
    await ring_of_task().fadvise(fd, offset, length, advice)


async def ftruncate(fd: Any, length: int) -> None:
    """``os.ftruncate`` (needs Linux 6.9; ``UnsupportedError`` before)."""
    await ring_of_task().ftruncate(fd, length)


async def unlink(path: Any, *, dir_fd: Any = None) -> None:
    """``os.unlink``."""
    await ring_of_task().unlink(path, dir_fd=dir_fd)


async def rmdir(path: Any, *, dir_fd: Any = None) -> None:
    """``os.rmdir``."""
    await ring_of_task().rmdir(path, dir_fd=dir_fd)


async def mkdir(path: Any, mode: int = 0o777, *, dir_fd: Any = None) -> None:
    """``os.mkdir``."""
    await ring_of_task().mkdir(path, mode, dir_fd=dir_fd)


async def rename(src: Any, dst: Any, *, src_dir_fd: Any = None, dst_dir_fd: Any = None) -> None:
    """``os.rename``, which on Linux replaces ``dst`` as ``os.replace`` does."""
    await ring_of_task().rename(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)


async def symlink(src: Any, dst: Any, *, dir_fd: Any = None) -> None:
    """``os.symlink``: make ``dst`` a symbolic link to ``src``."""
    await ring_of_task().symlink(src, dst, dir_fd=dir_fd)


async def link(
    src: Any,
    dst: Any,
    *,
    src_dir_fd: Any = None,
    dst_dir_fd: Any = None,
    follow_symlinks: bool = True,
) -> None:
    """``os.link``: make ``dst`` a hard link to ``src``."""
    await ring_of_task().link(
        src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd, follow_symlinks=follow_symlinks
    )


if _TRAPS is not None:
    _hot.set_trio(
        checkpoint_if_cancelled=_checkpoint_if_cancelled,
        cancel_shielded_checkpoint=_TRAPS[0],
        wait_task_rescheduled=_TRAPS[1],
        current_task=_current_task,
        value=outcome.Value,
        closed_error=trio.ClosedResourceError,
        succeeded=_SUCCEEDED,
        arm=_arm,
        finish=_finish,
    )
