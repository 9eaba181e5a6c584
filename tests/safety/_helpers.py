"""Helpers shared by the safety suite: fd counting, lease probes, a way to
close a coroutine while it is parked (abiding by trio's protocol under trio,
by asyncio's under asyncio), and waits that work under every executor."""

from __future__ import annotations

import os
import select
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import anyio
import anyio.lowlevel
import outcome
import trio
import trio.testing

import ouring
from ouring._current import current_library

T = TypeVar("T")


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def wait_cqe_ready(ring: ouring.Ring, timeout: float = 5.0) -> None:
    """Block until the kernel has posted a CQE on ``ring`` (polling the ring
    fd is the kernel's own answer); not a sleep."""
    readable, _, _ = select.select([ring.wait_fd], [], [], timeout)
    assert readable, "the kernel posted no completion"


class Buffer(bytearray):
    """A bytearray that can be weakly referenced (a plain one cannot)."""


def is_lent(buf: bytearray) -> bool:
    """Whether ``buf`` is exported (pinned for the kernel): resizing a
    bytearray with a live buffer export raises BufferError."""
    try:
        buf.append(0)
    except BufferError:
        return True
    buf.pop()
    return False


async def drop_on_cancel(coro: Coroutine[Any, Any, T]) -> T:
    """``await coro``, except that cancelling the awaiting task while ``coro``
    is parked closes ``coro`` (GeneratorExit at its park: the library's
    ``Ring.abandon`` path) instead of asking it to finish; under the executor
    running the task."""
    if current_library() == "trio":
        return await _drop_on_cancel_trio(coro)
    return await _drop_on_cancel_asyncio(coro)


async def _drop_on_cancel_asyncio(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio's protocol: ``coro`` yields the Future it parks on (the op's
    waiter) or ``None`` (one pass of the loop). This task waits on that same
    Future; ``Task.cancel()`` cancels it, this task gets ``CancelledError``
    and closes ``coro`` (the ring's wake skips a cancelled Future)."""
    import asyncio

    while True:
        try:
            msg = coro.send(None)
        except StopIteration as done:
            result: T = done.value
            return result
        try:
            if msg is None:
                await asyncio.sleep(0)
            else:
                # As Task.__step does with a yielded Future: take the
                # "blocking" flag off before waiting on it here.
                msg._asyncio_future_blocking = False
                await msg
        except asyncio.CancelledError:
            coro.close()
            raise


async def _drop_on_cancel_trio(coro: Coroutine[Any, Any, T]) -> T:
    """``await coro``, except that cancelling the awaiting task while ``coro``
    is parked *closes* ``coro`` (drops it, as a Rust runtime drops a future)
    instead of asking it to finish.

    This is how a combinator outside the library can close a coroutine while
    it is suspended inside an ouring operation, without breaking trio's
    protocol: ``coro`` is stepped by hand, but every time it parks, this task
    parks itself in trio with its own abort function, and whoever wakes ``coro``
    (the ring, through ``op.waiter``, which is this task) wakes this task. On a
    cancel, the abort function closes ``coro`` (GeneratorExit at its park: the
    library's ``Ring.abandon`` path) and returns ``Abort.SUCCEEDED``, which is
    honest because an abandoned operation never wakes its waiter."""
    to_send: outcome.Outcome[Any] | None = None
    while True:
        try:
            msg = coro.send(to_send)
        except StopIteration as done:
            result: T = done.value
            return result
        if hasattr(msg, "abort_func"):  # trio's WaitTaskRescheduled: parked on the ring

            def abort(raise_cancel: Any) -> trio.lowlevel.Abort:
                coro.close()
                return trio.lowlevel.Abort.SUCCEEDED

            to_send = outcome.Value(await trio.lowlevel.wait_task_rescheduled(abort))
        else:  # trio's CancelShieldedCheckpoint: a lone task's inline completion
            await trio.lowlevel.cancel_shielded_checkpoint()
            to_send = outcome.Value(None)


async def all_ops_completed(ring: ouring.Ring | None = None, bound: float = 5.0) -> None:
    """``ouring.wait_all_ops_completed``, failing instead of hanging when an
    operation never completes (an abandoned recv left armed, say)."""
    with anyio.fail_after(bound):
        await ouring.wait_all_ops_completed(ring)


async def wait_parked(
    ring: ouring.Ring, submitted: int, *, inflight: int = 0, bound: float = 5.0
) -> None:
    """Until the tasks just started have parked on their operations. Under
    trio, ``wait_all_tasks_blocked`` (every other task blocked); asyncio has
    no such hook: until ``ring`` has submitted ``submitted`` operations in
    all and queues none (a flush runs after the tasks that queued its
    operations have parked) or, with ``inflight``, until that many
    operations are queued or in the kernel (more than the ring's in-flight
    cap: a task parks as it queues one that cannot be submitted)."""
    if current_library() == "trio":
        await trio.testing.wait_all_tasks_blocked()
        return
    with anyio.fail_after(bound):
        while inflight and ring.statistics().inflight < inflight:
            await anyio.lowlevel.checkpoint()
        while not inflight and (
            (stats := ring.statistics()).submitted < submitted or stats.pending
        ):
            await anyio.lowlevel.checkpoint()


class _Dropped(Exception):
    """Sent into the caller of ``drop_in_own_task`` to make it close ``coro``."""


async def drop_in_own_task(coro: Coroutine[Any, Any, T]) -> T:
    """Like ``drop_on_cancel``, but ``coro`` is closed by the task that was
    running it, as a combinator inside that task would do. Needed for code
    that holds a ``trio.Lock`` while parked (``AsyncFile``'s methods): trio
    lets only the owning task release a lock, so a coroutine holding one
    cannot be closed from another task's abort function.

    On a cancel, the abort function reschedules this task with ``_Dropped``
    and returns ``Abort.FAILED``; the task then closes ``coro`` (the
    library's ``Ring.abandon`` path) and raises ``Cancelled``. Until ``coro``
    is closed the ring still names this task as the waiter, so use this only
    where the parked operation cannot complete in that one scheduler pass
    (an idle pipe or socket).

    Under asyncio this is ``drop_on_cancel``: there the task running
    ``coro`` is the one that closes it already, and an ``asyncio.Lock`` may
    be released by any task anyway."""
    if current_library() != "trio":
        return await _drop_on_cancel_asyncio(coro)
    to_send: outcome.Outcome[Any] | None = None
    while True:
        try:
            msg = coro.send(to_send)
        except StopIteration as done:
            result: T = done.value
            return result
        if hasattr(msg, "abort_func"):
            task = trio.lowlevel.current_task()
            raise_cancel: list[Any] = []

            def abort(
                raise_cancel_: Any, task: Any = task, raise_cancel: list[Any] = raise_cancel
            ) -> trio.lowlevel.Abort:
                raise_cancel.append(raise_cancel_)
                trio.lowlevel.reschedule(task, outcome.Error(_Dropped()))
                return trio.lowlevel.Abort.FAILED

            try:
                value = await trio.lowlevel.wait_task_rescheduled(abort)
            except _Dropped:
                coro.close()
                raise_cancel[0]()
                raise AssertionError("unreachable") from None
            to_send = outcome.Value(value)
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()
            to_send = outcome.Value(None)


async def wait_until(predicate: Callable[[], bool], bound: float = 5.0) -> None:
    """Checkpoint until ``predicate()`` holds, under any executor (failing,
    never hanging, after ``bound`` seconds)."""
    with anyio.fail_after(bound):
        while not predicate():
            await anyio.lowlevel.checkpoint()


def fd_closed_error() -> type[BaseException]:
    """What an operation raises when its fd was closed through the library
    while it was in flight: trio's ClosedResourceError under trio, the
    library's own FdClosedError (an OSError, EBADF) under asyncio."""
    if current_library() == "trio":
        return trio.ClosedResourceError
    from ouring._errors import FdClosedError

    return FdClosedError
