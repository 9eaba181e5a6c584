"""The few loop primitives the file and path layers need, for trio and asyncio.

``open_file``/``AsyncFile`` and ``Path`` keep each public call atomic with
respect to cancellation (see ``_files.py``). What they need from the running
loop for that is small, and this module is all of it:

- ``fifo_lock()``: a lock granted in arrival order (trio's ``StrictFIFOLock``;
  ``asyncio.Lock``, whose waiters are a FIFO and whose fast path does not
  barge past them);
- ``checkpoint_if_cancelled()``: raise the cancellation if one is pending,
  without yielding otherwise;
- ``shielded(fn, *args)``: run ``fn(*args)`` to its end whatever cancels the
  caller meanwhile; the cancellation is then delivered at the caller's next
  checkpoint, so the call's result is returned, not lost;
- ``open_scope(shield=...)``: a region whose ``shield`` can be raised while it
  runs (once the region has made an effect of its own) and which the layer can
  end with ``cancel(reason)``: the region then raises ``closed_error(reason)``;
- ``deliver_later(awaitable)``: run something after a call's effect is done
  (a flush after the write was accepted): if it is cancelled, the call still
  returns and the cancellation is delivered at the next checkpoint;
- ``to_thread(fn, *args)``: run a blocking function in a worker thread, as
  ``trio.to_thread.run_sync`` does: a cancel while it waits for a thread
  withdraws it (it did not happen); once it runs, its result is returned and
  the cancellation delivered at the next checkpoint;
- ``ClosedResourceError``: what a call ended by a close raises
  (``trio.ClosedResourceError`` under trio).

The library is chosen per call: trio when trio is imported and this thread is
inside ``trio.run``, else asyncio. This module imports neither at load time.

trio has cancel scopes, and each primitive is a one-line use of them. asyncio
has only ``Task.cancel()``, which throws ``CancelledError`` into the task's
current await and counts the request (``Task.cancelling()``); whoever catches
the error and does not re-raise it must ``uncancel()`` (``asyncio.timeout``
and ``TaskGroup`` compare the count with what it was on entry). So:

- a shielded or scoped region runs as a task of its own that the caller
  awaits: a cancel of the caller cannot interrupt the region's awaits, and the
  caller decides whether to pass it on (not shielded) or to wait for the
  region and re-arm the cancel on itself (shielded);
- "deliver at the next checkpoint" is ``uncancel()`` then ``cancel()`` on the
  current task: the count is unchanged, and the task raises
  ``CancelledError`` at its next suspension, as trio raises ``Cancelled`` at
  its next checkpoint;
- a scope's ``cancel`` cancels the region's task; the region's
  ``CancelledError`` then means "ended by the scope" only if the caller was
  not cancelled itself (trio: the outer cancelled scope wins).

Per-version difference (asyncio): a region whose cancel was passed on and that
raises its ``shield`` afterwards (the cancel arrived as its operation
completed) withdraws that cancel with ``uncancel()``. On 3.13 that also drops
the pending ``CancelledError``; on 3.11 and 3.12 it stays pending, and the
region's next await raises it, as if the region had not been shielded.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

from ._current import running_trio

if TYPE_CHECKING:
    import asyncio
    from types import TracebackType

__all__ = [
    "ClosedResourceError",
    "Lock",
    "Scope",
    "checkpoint_if_cancelled",
    "closed_error",
    "deliver_later",
    "fifo_lock",
    "in_trio",
    "open_scope",
    "shielded",
    "to_thread",
]

_T = TypeVar("_T")


class ClosedResourceError(Exception):
    """Under asyncio: the object was closed while this call waited on it; the
    call did not happen (anything it had consumed is kept for a later call).
    Under trio the same calls raise ``trio.ClosedResourceError``."""


class Lock(Protocol):
    """A lock granted in arrival order (what :func:`fifo_lock` returns)."""

    async def acquire(self) -> Any: ...

    def release(self) -> None: ...

    def locked(self) -> bool: ...

    async def __aenter__(self) -> Any: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Any: ...


class Scope(Protocol):
    """A region of a call (what :func:`open_scope` returns): run once."""

    shield: bool

    def cancel(self, reason: str) -> None:
        """End the region: it raises ``closed_error(reason)`` (unless the
        caller was cancelled too: then the caller's cancellation)."""

    async def run(self, fn: Callable[..., Awaitable[_T]], *args: Any) -> _T:
        """``await fn(*args)`` inside the region."""


def in_trio() -> bool:
    """Whether this thread runs inside ``trio.run`` (else: asyncio)."""
    return running_trio() is not None


def fifo_lock() -> Lock:
    """A lock for the running library, granted in arrival order."""
    trio = running_trio()
    if trio is not None:
        lock: Lock = trio.StrictFIFOLock()
        return lock
    import asyncio

    return asyncio.Lock()


def closed_error(reason: str) -> Exception:
    """The running library's "closed while in use" exception."""
    trio = running_trio()
    if trio is not None:
        error: Exception = trio.ClosedResourceError(reason)
        return error
    return ClosedResourceError(reason)


async def checkpoint_if_cancelled() -> None:
    """Raise the pending cancellation, if any; do not yield otherwise."""
    trio = running_trio()
    if trio is not None:
        await trio.lowlevel.checkpoint_if_cancelled()
        return
    import asyncio

    task = asyncio.current_task()
    # A cancel of a task that is running (not parked on a future) is kept in
    # _must_cancel and thrown into the task at its next step: one yield makes
    # the task deliver it, and the flag is cleared. A Task type without the
    # attribute gets the yield every time (a schedule point, still correct).
    if task is None or getattr(task, "_must_cancel", True):
        await asyncio.sleep(0)


async def shielded(fn: Callable[..., Awaitable[_T]], *args: Any) -> _T:
    """``await fn(*args)`` to its end whatever cancels the caller meanwhile;
    then return (or raise) what it did, with the cancellation delivered at the
    caller's next checkpoint (trio: ``CancelScope(shield=True)``)."""
    trio = running_trio()
    if trio is not None:
        with trio.CancelScope(shield=True):
            return await fn(*args)
    scope = _AsyncioScope(shield=True)
    return await scope.run(fn, *args)


def open_scope(shield: bool = False) -> Scope:
    """A new region for the running library (see :class:`Scope`)."""
    trio = running_trio()
    if trio is not None:
        return _TrioScope(trio, shield)
    return _AsyncioScope(shield)


async def deliver_later(awaitable: Awaitable[object]) -> None:
    """Await ``awaitable``, which runs after the call's effect happened: if it
    is cancelled, return anyway and leave the cancellation pending, to be
    raised at the caller's next checkpoint."""
    trio = running_trio()
    if trio is not None:
        # The scope stays cancelled: trio raises again at the next checkpoint.
        with contextlib.suppress(trio.Cancelled):
            await awaitable
        return
    import asyncio

    try:
        await awaitable
    except asyncio.CancelledError as exc:
        _rearm(exc)


async def to_thread(fn: Callable[..., _T], *args: Any) -> _T:
    """``fn(*args)`` in a worker thread (see the module docstring)."""
    trio = running_trio()
    if trio is not None:
        result: _T = await trio.to_thread.run_sync(fn, *args)
        return result
    import asyncio
    import contextvars
    import threading

    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()
    gate = threading.Lock()
    # [started, withdrawn]: whichever of the worker and a cancel takes the
    # gate first decides whether fn runs.
    state = [False, False]

    def job() -> _T | None:
        with gate:
            if state[1]:
                return None
            state[0] = True
        return context.run(fn, *args)

    future = loop.run_in_executor(None, job)
    caught: asyncio.CancelledError | None = None
    while not future.done():
        # A future of our own, as in _AsyncioScope.run: the cancel must not
        # reach the executor's future, whose result is the call's outcome.
        waiter = loop.create_future()
        future.add_done_callback(functools.partial(_wake, waiter))
        try:
            await waiter
        except asyncio.CancelledError as exc:
            with gate:
                if not state[0]:
                    state[1] = True  # still queued for a thread: withdrawn
                    raise
            caught = exc  # running: it finishes, and its result stands
    if caught is not None:
        _rearm(caught)
    return cast(_T, future.result())


class _TrioScope:
    def __init__(self, trio: Any, shield: bool) -> None:
        self._trio = trio
        self._scope = trio.CancelScope(shield=shield)
        self._reason = ""

    @property
    def shield(self) -> bool:
        return bool(self._scope.shield)

    @shield.setter
    def shield(self, value: bool) -> None:
        self._scope.shield = value

    def cancel(self, reason: str) -> None:
        self._reason = reason
        self._scope.cancel()

    async def run(self, fn: Callable[..., Awaitable[_T]], *args: Any) -> _T:
        with self._scope:
            return await fn(*args)
        # The scope swallowed its own Cancelled: only cancel() ends it.
        raise self._trio.ClosedResourceError(self._reason)


def _rearm(exc: asyncio.CancelledError) -> None:
    """Deliver the cancellation ``exc`` (caught, not re-raised: the call
    returns, its effect happened) again at the current task's next
    suspension, unless whoever asked for it takes the request back first.

    The caught request still counts in ``cancelling()``. The re-arm waits for
    the task to suspend (``call_soon``): an ``asyncio.timeout`` or anyio cancel
    scope that ends before that calls ``uncancel()`` on its way out, and the
    request is then gone (not re-armed: it must not escape the scope, and on
    3.11/3.12 an ``uncancel()`` does not drop an armed cancel). Otherwise it is
    re-armed with ``uncancel()`` + ``cancel()`` (the count unchanged) and the
    task's pending await raises ``CancelledError``: trio's "Cancelled at the
    next checkpoint", alike on 3.11-3.13."""
    import asyncio

    task = asyncio.current_task()
    if task is None:  # pragma: no cover - every coroutine here runs in a task
        raise exc
    asked = task.cancelling()
    message = exc.args[0] if exc.args else None

    def rearm() -> None:
        if not task.done() and task.cancelling() >= asked:
            task.uncancel()
            task.cancel(message)

    task.get_loop().call_soon(rearm)


def _wake(waiter: asyncio.Future[None], _: object) -> None:
    if not waiter.done():
        waiter.set_result(None)


class _AsyncioScope:
    """A region run as a task of its own (see the module docstring)."""

    def __init__(self, shield: bool) -> None:
        self._shield = shield
        self._task: asyncio.Task[Any] | None = None
        self._reason: str | None = None
        # Whether the caller's cancel was passed on to the region's task (and
        # so counted in its cancelling()).
        self._passed_on = False
        # Whether the region's task has begun, and the cancel asked of it
        # before that (see _region).
        self._started = False
        self._cancel_pending: tuple[str | None] | None = None
        # What fn returned, kept here rather than only as the task's result:
        # a task whose coroutine returns while a cancel is pending on it
        # (``_must_cancel``: an operation inside completed despite the cancel
        # passed on and re-armed it for the next suspension, and none came)
        # ends cancelled and drops the value. The call happened all the same.
        self._returned: tuple[Any] | None = None

    @property
    def shield(self) -> bool:
        return self._shield

    @shield.setter
    def shield(self, value: bool) -> None:
        self._shield = value
        task = self._task
        if value and self._passed_on and task is not None and not task.done():
            # Withdraw the cancel passed on before the region had an effect:
            # on 3.13 this drops it if still pending; on 3.11/3.12 a pending
            # one stays (see the module docstring).
            self._passed_on = False
            task.uncancel()

    def cancel(self, reason: str) -> None:
        if self._reason is not None:
            return
        self._reason = reason
        if self._task is not None:
            self._cancel_region(None)

    def _cancel_region(self, msg: str | None) -> None:
        assert self._task is not None
        if self._started:
            self._task.cancel(msg)
        elif self._cancel_pending is None:
            self._cancel_pending = (msg,)

    async def _region(self, fn: Callable[..., Awaitable[_T]], args: tuple[Any, ...]) -> _T:
        # A task cancelled before its first step never runs its coroutine, so
        # fn's own try/finally (closing an fd it was handed) would not run. A
        # cancel asked before this point is made here instead: fn runs and
        # raises CancelledError at its first await, as trio's scope raises
        # Cancelled at the first checkpoint inside it.
        self._started = True
        if self._cancel_pending is not None:
            import asyncio

            task = asyncio.current_task()
            assert task is not None
            task.cancel(self._cancel_pending[0])
        value = await fn(*args)
        self._returned = (value,)
        return value

    async def run(self, fn: Callable[..., Awaitable[_T]], *args: Any) -> _T:
        import asyncio

        coro: Coroutine[Any, Any, _T] = self._region(fn, args)
        task = asyncio.get_running_loop().create_task(coro)
        self._task = task
        if self._reason is not None:
            self._cancel_region(None)
        caught: asyncio.CancelledError | None = None
        while not task.done():
            # Wait on a future of our own that the task's end resolves, not on
            # the task: Task.cancel() cancels what the task awaits, and the
            # region must only be cancelled by the decision below.
            waiter = task.get_loop().create_future()
            task.add_done_callback(functools.partial(_wake, waiter))
            try:
                await waiter
            except asyncio.CancelledError as exc:
                caught = exc
                if not self._shield and not self._passed_on:
                    self._passed_on = True
                    self._cancel_region(exc.args[0] if exc.args else None)
            except BaseException:
                # This coroutine was closed (GeneratorExit) or thrown into
                # while the region runs as another task: nothing will wait
                # for the region, so it must not outlive the call. Left
                # running it would keep its operation in the kernel and the
                # file's lock forever (an aclose then waits for that lock,
                # shielded: a hang), and take the next bytes of a pipe for
                # nobody. Cancelled, its operation gets ASYNC_CANCEL and its
                # final CQE ends it, releasing the lock: under trio the same
                # close reaches the operation itself (Ring.abandon). A read
                # that completed despite the cancel is lost with the call, as
                # an abandoned operation's result is. Nothing can be awaited
                # here (a closed coroutine must not yield).
                if not task.done():
                    self._cancel_region(None)
                raise
        if task.cancelled() and self._returned is not None:
            # fn returned, then the task ended cancelled (see _returned): its
            # result stands, and a cancel of the caller is delivered later.
            if caught is not None:
                _rearm(caught)
            return cast(_T, self._returned[0])
        if task.cancelled():
            if caught is not None:
                raise caught  # the caller's cancellation: the region did not finish
            if self._reason is not None:
                raise ClosedResourceError(self._reason)
        elif caught is not None:
            # The region finished despite the caller's cancel: its result
            # stands, and the caller is cancelled at its next await.
            _rearm(caught)
        return task.result()
