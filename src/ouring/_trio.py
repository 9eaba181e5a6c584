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

import contextlib
import functools
import socket
from collections.abc import Callable, Coroutine, Sequence
from contextlib import suppress
from typing import Any, TypeVar

import outcome
import trio

from . import _ringcore
from ._errors import FdClosedError
from ._fallback import ThreadRing, make_ring
from ._ops import (
    DONE,
    Operation,
)
from ._ring import FdRequest, Ring, arm_receive, submit_group
from ._ringcore import Receiver

T = TypeVar("T")
B = TypeVar("B")
S = TypeVar("S")

_run_driver: trio.lowlevel.RunVar[_Driver | ThreadDriver] = trio.lowlevel.RunVar("ouring_driver")
# Looked up once: perform() runs once per operation.
_current_task = trio.lowlevel.current_task
_checkpoint_if_cancelled = trio.lowlevel.checkpoint_if_cancelled
_cancel_shielded_checkpoint = trio.lowlevel.cancel_shielded_checkpoint
_wait_task_rescheduled = trio.lowlevel.wait_task_rescheduled
_SUCCEEDED = trio.lowlevel.Abort.SUCCEEDED
_FAILED = trio.lowlevel.Abort.FAILED


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


def _call_soon(token: trio.lowlevel.TrioToken, fn: Callable[..., object], *args: Any) -> bool:
    """``Executor.call_soon``: ``TrioToken.run_sync_soon`` is thread-safe and
    wakes trio's I/O wait; False once the run is over."""
    try:
        token.run_sync_soon(fn, *args)
    except trio.RunFinishedError:
        return False
    return True


async def wait_answered(requests: Sequence[FdRequest]) -> None:
    """Park until other threads' rings have answered every request. Their
    answers arrive in their threads and reach this run through
    ``run_sync_soon``."""
    token = trio.lowlevel.current_trio_token()
    event = trio.Event()
    left = len(requests)

    def one_answered() -> None:  # in this run's thread
        nonlocal left
        left -= 1
        if left == 0:
            event.set()

    def answered() -> None:  # in the answering ring's thread (or this one)
        _call_soon(token, one_answered)  # False: this close was cancelled, run over

    for request in requests:
        request.when_answered(answered)
    await event.wait()


async def _resolve(family: int, address: Any) -> Any:
    host, port, *rest = address
    infos = await trio.socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
    return (infos[0][4][0], port, *rest)


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
        # Other threads' closes reach the ring through it.
        ring._wakeup = functools.partial(self.call_soon, ring._answer_fd_requests)
        ring._on_close = self._detach  # whoever closes the ring, before its fd goes
        trio.lowlevel.add_instrument(self)
        trio.lowlevel.spawn_system_task(self._reap, name=f"ouring reaper (ring fd {ring.fd})")

    # -- Executor ---------------------------------------------------------------------

    def perform(self, ring: Ring, op: Operation[T]) -> Coroutine[Any, Any, T]:
        # Where trio's traps are as native/trio_await.c expects, this is
        # _ringcore.trio_perform (assigned after _receive): an operation that usually
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
        group = submit_group(ring, ops)  # no waiter while the task only yields
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
        perform = staticmethod(_ringcore.trio_perform)  # type: ignore[assignment]
        receive = staticmethod(_ringcore.trio_receive)
    else:
        receive = _receive  # type: ignore[assignment]

    def call_soon(self, fn: Any, *args: Any) -> bool:
        return _call_soon(self._token, fn, *args)

    # The ring calls this with a waiter: the task parked in _finish (op.waiter),
    # perform_many's group's, or a receive's (rx.waiter).
    wake = staticmethod(trio.lowlevel.reschedule)
    wait_answered = staticmethod(wait_answered)
    resolve = staticmethod(_resolve)

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


class ThreadDriver:
    """Drives a ``ThreadRing`` in the current trio run: the
    ``_fallback.ThreadExecutor`` it asks for worker threads and readiness,
    and the system task that closes it when the run ends (as the io_uring
    reaper does). No instrument, no reaper: operations run when awaited."""

    closed_error = trio.ClosedResourceError
    Event = trio.Event
    Semaphore = trio.Semaphore

    def __init__(self, ring: ThreadRing) -> None:
        self.ring = ring
        self._closed = False
        self._token = trio.lowlevel.current_trio_token()
        self._scope = trio.CancelScope()
        ring._attach(self)
        trio.lowlevel.spawn_system_task(self._close_at_end, name="ouring thread-ring closer")

    def owns_current_task(self) -> bool:
        return trio.lowlevel.in_trio_run() and (trio.lowlevel.current_trio_token() is self._token)

    def call_soon(self, fn: Callable[..., object], *args: Any) -> bool:
        return _call_soon(self._token, fn, *args)

    checkpoint_if_cancelled = staticmethod(_checkpoint_if_cancelled)
    schedule_point = staticmethod(_cancel_shielded_checkpoint)

    async def in_thread(self, op: Operation[Any], job: Callable[[], None]) -> None:
        op.waiter = _current_task()
        # start_thread_soon never queues: the job runs now, and reports to
        # the ring itself (its deliver callback has nothing to do).
        trio.lowlevel.start_thread_soon(job, _ignore)
        # Abort.FAILED: a cancel waits for the syscall; trio raises Cancelled
        # at the next checkpoint (its scope stays cancelled).
        await _wait_task_rescheduled(_abort_failed)

    wake = staticmethod(trio.lowlevel.reschedule)

    async def wait_fd(self, fd: int, out: bool) -> None:
        if out:
            await trio.lowlevel.wait_writable(fd)
        else:
            await trio.lowlevel.wait_readable(fd)

    def notify_closing(self, fd: int) -> None:
        with contextlib.suppress(RuntimeError):  # not inside this ring's run
            trio.lowlevel.notify_closing(fd)

    def outcome(self, op: Operation[T]) -> T:
        return _outcome(op)

    wait_answered = staticmethod(wait_answered)
    resolve = staticmethod(_resolve)

    async def _close_at_end(self) -> None:
        try:
            with self._scope:
                await trio.sleep_forever()
        finally:
            self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._scope.cancel()
        self.ring.close()


def _ignore(_: object) -> None:
    pass


def _abort_failed(_: object) -> trio.lowlevel.Abort:
    return _FAILED


_arm = arm_receive  # receive's, in C or not


# -- the adapter surface that _current.py and _api.py use ------------------------------

Event = trio.Event


def drive(ring: Ring | ThreadRing) -> _Driver | ThreadDriver:
    """Drive ``ring`` in the current run until its driver is closed (or the
    run ends). A ThreadRing runs its operations itself: no instrument, no
    reaper; its driver only binds it to the run and closes it at the end."""
    return ThreadDriver(ring) if isinstance(ring, ThreadRing) else _Driver(ring)


def run_ring() -> Ring | ThreadRing:
    """The current run's own ring, made on first use; a ring closed after a
    kernel failure is replaced for the rest of the run."""
    try:
        ring = _run_driver.get().ring
    except LookupError:
        ring = None
    if ring is None or ring.closed:
        driver = drive(make_ring())
        _run_driver.set(driver)
        ring = driver.ring
    return ring


if _TRAPS is not None:
    _ringcore.set_trio(
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
