"""The asyncio adapter: a running asyncio loop (the default loop, uvloop)
drives a Ring.

Facts about asyncio this module relies on (CPython 3.11-3.13's
``base_events.py``, ``tasks.py``, ``timeouts.py``; uvloop 0.19+ behaves alike
where it matters here):

- ``_run_once`` polls the selector (timeout 0 when callbacks are ready), queues
  the callbacks of ready fds, then runs exactly the callbacks that were ready
  when it started: one added by ``call_soon`` during an iteration runs in the
  next one, after those already queued. There is no "before I/O wait" hook, so
  the ring's ``_on_queue`` hook (called whenever its queue of operations or
  of cancel requests stops being empty, whoever queued) schedules one flush
  with ``call_soon``; everything queued in that iteration is in its batch,
  and the flush runs before the tasks it wakes (they are queued behind it).
- ``perform`` is ``_ringcore.asyncio_perform`` (native/asyncio_await.c):
  one C object that submits and parks its task on itself, a future to
  asyncio's Task, and that the waker (the ring's ``wake``) wakes from inside
  the flush or reader callback that completed it, in the task's context: no
  ``call_soon`` per operation. The rest of this list is the Python reference
  (``_perform_in_python``), whose rules the C step keeps.
- A coroutine that yields ``None`` (``asyncio.sleep(0)``'s bare ``yield``) is
  put back at the end of the ready queue: behind the flush its first
  operation scheduled. An operation that usually completes inside its own
  ``io_uring_enter`` (``completes_inline``: page-cache reads and writes, sends
  with socket-buffer room) therefore yields once and finds itself DONE when the
  task resumes: no Future, one loop iteration. Anything else parks on a Future
  that the ring's ``wake`` resolves.
- ``Task.cancel()`` cancels the Future the task waits on (or, when it waits on
  none, throws ``CancelledError`` in at its next step) and counts the request
  (``cancelling()``); ``uncancel()`` takes one back. ``asyncio.timeout()``
  raises ``TimeoutError`` on exit when the block ends in ``CancelledError`` and
  ``uncancel()`` brings the count back to its value at entry.
- The ownership rule is trio's: an operation the kernel has not seen is
  withdrawn (``ring.cancel`` returns True) and ``CancelledError`` raised at once:
  it did not happen. A submitted one gets IORING_OP_ASYNC_CANCEL and the task
  keeps waiting (further cancels do not abandon it) for its final CQE, which
  decides: cancelled means ``CancelledError``; anything else happened, so the
  result is returned and the cancellation is not swallowed: it is re-armed
  (``uncancel()`` + ``cancel()``, the count unchanged) once the task suspends
  again, so its next await raises ``CancelledError`` (``_sync._rearm``).
- The re-arm waits for that suspension (``call_soon``) and is skipped if the
  request was taken back meanwhile: an ``asyncio.timeout`` (or anyio cancel
  scope) whose deadline met an operation that completed anyway, and that ends
  without another suspension, exits normally (no ``TimeoutError``: the
  operation happened) and its cancellation ends with it, on every version.
  Arming at once would not do: on 3.11 and 3.12 the scope's ``uncancel()``
  does not drop an armed cancel, which then escaped the scope; and a task
  returning with a cancel armed ends cancelled, dropping its result.
- A coroutine closed or thrown into (anything but ``CancelledError``) while
  its operation is in flight leaves the operation to the ring
  (``ring.abandon``): the memory is kept until the final CQE and a result
  nobody receives is undone (an opened fd closed).
- One ring per event loop, made at the loop's first operation and kept in a
  WeakKeyDictionary: the driver holds no strong reference to its loop (the
  loop holds the driver through the reader on the ring's fd), so a loop can
  be collected. Completions are reaped by ``loop.add_reader(ring.wait_fd)``:
  the ring fd polls readable with setup flags 0 or COOP_TASKRUN, and with
  DEFER_TASKRUN ``wait_fd`` is an eventfd registered with the ring.
- Teardown: ``asyncio.run`` (and uvloop's ``run``) cancel the remaining tasks,
  then ``loop.shutdown_asyncgens()`` acloses every async generator that the
  loop's ``firstiter`` hook registered, inside the loop, before ``close()``.
  Each ring is guarded by such a generator, started by hand when the ring is
  made, whose ``finally`` closes it (cancel, reap, leak what never completes)
  while the loop still runs. A loop closed without ``shutdown_asyncgens`` has
  its ring closed at the next ring lookup of its thread, or when it is
  collected (a ``weakref.finalize``). A task still parked on an operation
  keeps its loop alive (the op's Future holds it, the ring holds the op), so
  such a loop's ring goes at the lookup, or at exit; that close reaps the
  final CQEs without waking into the closed loop. The ring core refuses calls from any
  other thread than its own, so a collection in another thread leaves the
  ring to ``Ring.__del__``, which keeps in-flight memory forever.
- ``loop.call_soon_threadsafe`` is the thread-safe wakeup (other threads'
  fd closes reach the ring through it); it raises ``RuntimeError`` once the
  loop is closed.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import sys
import threading
import types
import weakref
from asyncio import CancelledError
from asyncio import Event as Event
from collections.abc import Callable, Generator, Sequence
from contextlib import suppress
from threading import get_ident
from typing import Any, TypeVar

from . import _ringcore, _sync
from ._errors import FdClosedError
from ._fallback import ThreadRing, make_ring
from ._ops import DONE, LEAKED, Operation
from ._ring import FdRequest, Ring, arm_receive, submit_group
from ._ringcore import Receiver

__all__ = ["AsyncioDriver", "Event", "ThreadDriver", "drive", "loop_ring", "run_ring"]

_ringcore.set_asyncio(
    cancelled_error=CancelledError,
    invalid_state_error=asyncio.InvalidStateError,
    task_type=asyncio.Task,
)

T = TypeVar("T")

_running_loop = asyncio.get_running_loop  # C; a loop runs wherever an op is awaited
_current_task = asyncio.current_task


@types.coroutine
def _yield() -> Generator[None, None, None]:
    """One pass of the loop: the task is queued behind the callbacks already
    ready (asyncio.sleep(0) without its checks)."""
    yield


def _wake(fut: asyncio.Future[None]) -> None:
    # A Future cancelled by Task.cancel() stays the op's waiter until the task
    # runs again and takes it off: its CQE may come first. A loop closed with
    # the task still parked (loop.close() without asyncio.run's teardown) has
    # its ring closed later, by another loop's lookup or a finalizer: that
    # close reaps the final CQE, and the Future's loop can schedule nothing
    # any more (set_result would raise out of the reap).
    if not fut.done() and not fut.get_loop().is_closed():
        fut.set_result(None)


class _LoopDriver:
    """What a driver of either backend does in one asyncio loop: it is the
    loop's for the ring's lifetime, and closes the ring when the loop shuts
    its async generators down (or is collected); other threads' closes of an
    fd reach the ring through ``call_soon_threadsafe``."""

    def __init__(self, ring: Ring | ThreadRing, loop: asyncio.AbstractEventLoop) -> None:
        self.ring = ring
        self._loop = weakref.ref(loop)  # the loop holds the driver, not back
        self._thread = get_ident()
        self._closed = False
        ring._wakeup = self._wakeup  # other threads' closes reach the ring through it
        self._guard = self._start_guard()
        self._finalizer: weakref.finalize[Any, Any] | None = None

    def call_soon(self, fn: Callable[..., object], *args: Any) -> bool:
        loop = self._loop()
        if loop is None:
            return False
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed
            return False
        return True

    def _wakeup(self) -> bool:
        # In the loop's thread, the answer's cancels schedule the flush.
        return self.call_soon(self.ring._answer_fd_requests)

    async def resolve(self, family: int, address: Any) -> Any:
        host, port, *rest = address
        infos = await _running_loop().getaddrinfo(
            host, port, family=family, type=socket.SOCK_STREAM
        )
        return (infos[0][4][0], port, *rest)

    async def wait_answered(self, requests: Sequence[FdRequest]) -> None:
        """Wait until other threads' rings have answered every request (their
        answers arrive in their threads, and reach this loop through
        ``call_soon_threadsafe``)."""
        loop = _running_loop()
        done = loop.create_future()
        left = len(requests)

        def one_answered() -> None:  # in this loop's thread
            nonlocal left
            left -= 1
            if left == 0 and not done.done():
                done.set_result(None)

        def answered() -> None:  # in the answering ring's thread (or this one)
            with suppress(RuntimeError):  # this close was cancelled, loop closed
                loop.call_soon_threadsafe(one_answered)

        for request in requests:
            request.when_answered(answered)
        await done

    def _start_guard(self) -> Any:
        """An async generator, registered with the loop by its firstiter hook,
        whose ``finally`` closes the ring when ``shutdown_asyncgens`` acloses
        it (asyncio.run, uvloop.run), still inside the loop."""

        async def guard() -> Any:
            try:
                yield
            finally:
                if not self._closed and get_ident() == self._thread:
                    if asyncio._get_running_loop() is not None:
                        await _yield()  # other generators' aclose() start first
                    self.close()

        gen = guard()
        # The finalizer hook (the loop's bound method) is stored in the
        # generator at its first step and would keep the loop alive through
        # the driver: only firstiter, which registers it for
        # shutdown_asyncgens, is wanted.
        hooks = sys.get_asyncgen_hooks()
        sys.set_asyncgen_hooks(hooks.firstiter, None)
        try:
            step = gen.asend(None)
            with suppress(StopIteration):
                step.send(None)
        finally:
            sys.set_asyncgen_hooks(*hooks)
        return gen

    def _detach(self) -> None:
        """Leave the loop (before the ring closes)."""
        self._closed = True

    def close(self) -> None:
        self._detach()
        self.ring.close()
        if self._finalizer is not None:
            self._finalizer.detach()
        guard, self._guard = self._guard, None
        if guard is not None and guard.ag_frame is not None and not guard.ag_running:
            step = guard.aclose()  # its finally sees _closed: nothing awaited
            with suppress(StopIteration):
                step.send(None)


class AsyncioDriver(_LoopDriver):
    """Drives one ring in one asyncio loop: one flush per loop iteration for
    what the iteration submitted, completions reaped by a reader on the ring's
    ``wait_fd``."""

    def __init__(self, ring: Ring, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(ring, loop)
        self.ring: Ring = ring
        self._flush_queued = False
        # The ring's wake (looked up when the executor is set): parks of the
        # C perform are woken by the loop callbacks run through it; any other
        # waiter (a Future) goes to _wake.
        self._waker = _ringcore.AsyncioWaker(loop, _wake)
        self.wake = self._waker
        ring.executor = self
        ring._on_close = self._detach  # whoever closes the ring, before its fd goes
        # Whoever queues for the kernel (perform, a cancel, an abandon, a close
        # of an fd, a transport) schedules this iteration's flush through it.
        ring._on_queue = self.flush_soon
        loop.add_reader(ring.wait_fd, self._waker.run, self._reap)

    # -- Executor ---------------------------------------------------------------------

    async def perform(self, ring: Ring, op: Operation[T]) -> T:
        if ring._alone:
            # The last flush had at most one operation to submit: a lone task,
            # with nobody to batch with. It goes to the kernel at once and a
            # page-cache read is reaped in the same io_uring_enter; the task
            # still yields once (a checkpoint, as every operation is).
            ring._alone = False
            ring.submit(op)
            try:
                ring.flush(reap=True)
            except BaseException:  # noqa: BLE001 - the op waits for the ring's close
                _running_loop().call_soon(self.close)
            inline = True
        else:
            ring.submit(op)  # the ring's on_queue hook schedules the flush
            inline = op.completes_inline
        if inline:
            try:
                await _yield()
            except BaseException as exc:  # noqa: BLE001 - the op's fate decides
                return await self._cancelled(ring, op, exc)
            if op.state == DONE:
                return op.result() if not op.cancel_by else op.outcome()
            if op.state == LEAKED:
                # The ring was closed during the yield: its close woke no
                # waiter (there was none yet), and no CQE will ever come.
                return op.outcome()  # RingClosedError
        fut = _running_loop().create_future()
        op.waiter = fut
        try:
            await fut
        except BaseException as exc:  # noqa: BLE001 - the op's fate decides
            return await self._cancelled(ring, op, exc)
        return op.result() if not op.cancel_by else op.outcome()

    # The reference path in Python, which the C one mirrors (tests run both).
    _perform_in_python = perform
    perform = staticmethod(_ringcore.asyncio_perform)  # type: ignore[assignment]

    async def _cancelled(self, ring: Ring, op: Operation[T], exc: BaseException) -> T:
        """``exc`` was thrown in while ``op`` was in flight (or just done)."""
        op.waiter = None  # a withdrawn op is settled inside cancel(): no wake
        if not isinstance(exc, CancelledError):
            ring.abandon(op)  # closed or thrown into: nobody receives it
            raise exc
        if ring.cancel(op):
            raise exc  # withdrawn: the kernel never saw it
        await self._until_done(ring, (op,))
        if op.cancelled():
            raise exc
        _sync._rearm(exc)
        return op.outcome()

    async def _until_done(self, ring: Ring, ops: Sequence[Operation[Any]]) -> None:
        """Wait for the final CQE of every op in ``ops`` (cancel requested): the
        kernel owns their memory until then, so further cancellations do not
        end the wait (they stay counted in ``cancelling()``)."""
        loop = _running_loop()
        for op in ops:
            # LEAKED: the ring closed meanwhile and woke the waiter; no CQE
            # will come (the memory stays the ring's forever).
            while op.state != DONE and op.state != LEAKED:
                fut = op.waiter = loop.create_future()
                try:
                    await fut
                except CancelledError:
                    pass
                except BaseException:
                    for rest in ops:
                        ring.abandon(rest)
                    raise
                op.waiter = None

    async def perform_many(self, ring: Ring, ops: Sequence[Operation[T]]) -> list[T]:
        """As trio's: one wait for the whole batch (a ``Group`` is every
        operation's waiter, woken when the last is DONE); cancelled, the ones
        the kernel has not seen are withdrawn and the task waits for every
        final CQE; if any was cancelled the batch raises ``CancelledError``
        and what did complete is dropped (read_many's reads at explicit offsets
        move no file position)."""
        group = submit_group(ring, ops)
        loop = _running_loop()
        try:
            if all(op.completes_inline for op in ops):
                await _yield()
            if group.left:
                fut = group.waiter = loop.create_future()
                await fut
        except BaseException as exc:
            group.waiter = None  # withdrawn operations settle here: no wake
            if not isinstance(exc, CancelledError):
                for op in ops:
                    ring.abandon(op)
                raise
            for op in ops:
                ring.cancel(op)
            await self._until_done(ring, ops)
            if any(op.cancelled() for op in ops):
                raise
            _sync._rearm(exc)
        return [op.result() if not op.cancel_by else op.outcome() for op in ops]

    async def receive(
        self, ring: Ring, rx: Receiver, fd: int, take: Callable[..., Any], *args: Any
    ) -> Any:
        """``take(*args)`` from the multishot queue ``rx``, arming its receive
        as needed. The task yields before it takes (a checkpoint); a
        cancellation only ends the wait and the multishot stays armed, so
        ``CancelledError`` means nothing was taken."""
        if rx.ready:
            await _yield()
            data = take(*args)
            if data is not None:
                return data
            # A take that wants more than is queued (MSG_WAITALL) waits below.
        loop = _running_loop()
        while True:
            if rx.closed:
                raise FdClosedError(errno.EBADF, "another task closed this socket")
            if rx.op is None:
                arm_receive(ring, rx, fd)
            fut = rx.waiter = loop.create_future()
            try:
                await fut
            finally:
                rx.waiter = None
            if rx.closed:
                raise FdClosedError(errno.EBADF, "another task closed this socket")
            data = take(*args)
            if data is not None:
                return data

    # The ring calls this with a waiter: the C perform's step (which the
    # waker wakes), or the Future a task waits on (op.waiter, a perform_many
    # group's, or a receive's rx.waiter). Replaced per driver by its waker.
    wake: Callable[[Any], None] = staticmethod(_wake)

    # -- loop callbacks -----------------------------------------------------------------

    def flush_soon(self) -> None:
        """Flush in the next iteration: operations and cancel requests queued
        in this one go to the kernel together. The ring's ``_on_queue`` hook:
        called by the ring whenever it starts queueing again."""
        if not self._flush_queued and not self._closed:
            loop = self._loop()
            if loop is None or loop.is_closed():
                # A coroutine closed after its loop (the loop's garbage, or a
                # task destroyed pending): the cancel request stays queued on
                # the ring, whose close cancels and reaps what is in flight.
                return
            self._flush_queued = True
            loop.call_soon(self._waker.run, self._flush)

    def _flush(self) -> None:
        """Once per iteration that submitted: everything it queued goes to the
        kernel in one io_uring_enter, which also settles what completed inside
        it (page-cache reads), before the tasks queued behind this run."""
        self._flush_queued = False
        ring = self.ring
        ring._alone = ring._pass_submits <= 1
        ring._pass_submits = 0
        try:
            ring.flush(reap=True)
        except Exception:  # noqa: BLE001 - io_uring_enter failed outright: close
            self.close()
            return
        if ring.has_queued(room_only=True):
            # The kernel wanted CQEs reaped before more SQEs: the rest goes
            # next iteration. Operations held back by the in-flight cap wait
            # for a CQE instead (_reap), so a full ring does not spin the loop.
            self.flush_soon()

    def _reap(self) -> None:
        ring = self.ring
        try:
            ring.reap()
        except Exception:  # noqa: BLE001 - the ring cannot be trusted: close
            self.close()
            return
        if ring.has_queued():
            self.flush_soon()  # room in the kernel again

    # -- lifetime -----------------------------------------------------------------------

    def _detach(self) -> None:
        """Leave the loop: ``Ring.close`` calls this (whoever closes the ring)
        before it closes the ring fd, while the number is still the ring's."""
        if self._closed:
            return
        self._closed = True
        self.ring._on_queue = None  # the close's own cancels are reaped by the close
        loop = self._loop()
        if loop is not None and not loop.is_closed():
            with suppress(RuntimeError, ValueError):
                loop.remove_reader(self.ring.wait_fd)


class ThreadDriver(_LoopDriver):
    """Drives a ``ThreadRing`` in one asyncio loop: the
    ``_fallback.ThreadExecutor`` it asks for worker threads and readiness.
    Worker threads are daemon threads of their own, one per running syscall
    (the ring's semaphore bounds them): a syscall that never returns (an
    ``open`` of a FIFO nobody opens) holds neither the loop's default
    executor nor the interpreter's exit."""

    closed_error = _sync.ClosedResourceError
    Event = asyncio.Event
    Semaphore = asyncio.Semaphore

    def __init__(self, ring: ThreadRing, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(ring, loop)
        self.ring: ThreadRing = ring
        ring._attach(self)

    def owns_current_task(self) -> bool:
        loop = asyncio._get_running_loop()
        return loop is not None and loop is self._loop()

    checkpoint_if_cancelled = staticmethod(_sync.checkpoint_if_cancelled)

    async def schedule_point(self) -> None:
        try:
            await _yield()
        except CancelledError as exc:
            _sync._rearm(exc)  # it happened: the cancel comes at the next await

    async def in_thread(self, op: Operation[Any], job: Callable[[], None]) -> None:
        loop = _running_loop()
        threading.Thread(target=job, name="ouring thread-ring worker", daemon=True).start()
        # The ring wakes the task when the thread's result is settled; a
        # Task.cancel() meanwhile cancels only the Future, and the task waits
        # on: the syscall is not abandoned, its result is returned, and the
        # cancellation is re-armed for the next await. LEAKED: the ring was
        # closed without waiting for the thread, and woke the task.
        caught: CancelledError | None = None
        while op.state != DONE and op.state != LEAKED:
            fut = op.waiter = loop.create_future()
            try:
                await fut
            except CancelledError as exc:
                caught = exc
        if caught is not None:
            _sync._rearm(caught)

    wake = staticmethod(_wake)

    async def wait_fd(self, fd: int, out: bool) -> None:
        loop = _running_loop()
        fut = loop.create_future()
        if out:
            loop.add_writer(fd, _wake, fut)
        else:
            loop.add_reader(fd, _wake, fut)
        try:
            await fut
        finally:
            if out:
                loop.remove_writer(fd)
            else:
                loop.remove_reader(fd)

    def notify_closing(self, fd: int) -> None:
        """asyncio has no waits of its own to end: the ring's readiness waits
        are ended by the ring (their regions), and another reader or writer on
        the fd is its owner's to remove."""

    def outcome(self, op: Operation[T]) -> T:
        return op.outcome()


# -- the adapter surface that _current.py and _api.py use ------------------------------

_drivers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopDriver] = (
    weakref.WeakKeyDictionary()
)


def _loop_collected(driver: _LoopDriver) -> None:
    if get_ident() == driver._thread and not driver._closed:
        driver.close()


def drive(ring: Ring | ThreadRing) -> _LoopDriver:
    """Drive ``ring`` in the running loop until its driver is closed (or the
    loop shuts its async generators down)."""
    loop = asyncio.get_running_loop()
    driver: _LoopDriver = (
        ThreadDriver(ring, loop) if isinstance(ring, ThreadRing) else AsyncioDriver(ring, loop)
    )
    driver._finalizer = weakref.finalize(loop, _loop_collected, driver)
    return driver


def loop_ring() -> Ring | ThreadRing:
    """The running loop's own ring, made on first use; a ring closed after a
    kernel failure is replaced. The rings of this thread's loops that were
    closed without ``shutdown_asyncgens`` are closed here."""
    loop = asyncio.get_running_loop()
    here = get_ident()
    for other, driver in list(_drivers.items()):
        if other.is_closed() and driver._thread == here and not driver._closed:
            driver.close()
    found = _drivers.get(loop)
    if found is None or found.ring.closed:
        found = _drivers[loop] = drive(make_ring())
    return found.ring


run_ring = loop_ring
