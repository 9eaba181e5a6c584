"""The loop primitives of ``_sync`` (what the file and path layers need from
the loop), under real trio and real asyncio runs.

The trio tests are async (pytest-trio runs them); the asyncio ones are plain
functions around ``asyncio.run``, so that each gets a fresh event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing

from ouring import _sync

# -- which library ------------------------------------------------------------------------


async def test_trio_is_detected_inside_trio_run() -> None:
    assert _sync.in_trio()
    assert isinstance(_sync.fifo_lock(), trio.StrictFIFOLock)
    assert isinstance(_sync.closed_error("x"), trio.ClosedResourceError)


def test_asyncio_is_detected_inside_asyncio_run_with_trio_imported() -> None:
    async def main() -> None:
        assert not _sync.in_trio()
        assert isinstance(_sync.fifo_lock(), asyncio.Lock)
        error = _sync.closed_error("closed")
        assert type(error) is _sync.ClosedResourceError
        assert str(error) == "closed"

    assert "trio" in sys.modules
    asyncio.run(main())


# -- the FIFO lock -------------------------------------------------------------------------


async def test_trio_lock_is_granted_in_arrival_order() -> None:
    lock = _sync.fifo_lock()
    order: list[int] = []

    async def take(i: int) -> None:
        async with lock:
            order.append(i)
            await trio.lowlevel.checkpoint()

    await lock.acquire()
    async with trio.open_nursery() as nursery:
        for i in range(10):
            nursery.start_soon(take, i)
            await trio.testing.wait_all_tasks_blocked()  # i is queued before i + 1 starts
        lock.release()
    assert order == list(range(10))


def test_asyncio_lock_is_granted_in_arrival_order_even_to_a_late_arrival() -> None:
    async def main() -> list[str]:
        lock = _sync.fifo_lock()
        order: list[str] = []

        async def take(name: str) -> None:
            async with lock:
                order.append(name)
                await asyncio.sleep(0)

        await lock.acquire()
        tasks = [asyncio.create_task(take(str(i))) for i in range(10)]
        await asyncio.sleep(0)  # all ten queued, in creation order
        lock.release()
        # Released with waiters queued: a task arriving now must not barge in.
        tasks.append(asyncio.create_task(take("late")))
        await asyncio.gather(*tasks)
        return order

    assert asyncio.run(main()) == [*map(str, range(10)), "late"]


# -- checkpoint_if_cancelled ------------------------------------------------------------------


async def test_trio_checkpoint_raises_only_when_cancelled() -> None:
    with trio.CancelScope() as scope:
        await _sync.checkpoint_if_cancelled()  # not cancelled: returns
        scope.cancel()
        with pytest.raises(trio.Cancelled):
            await _sync.checkpoint_if_cancelled()


def test_asyncio_checkpoint_raises_when_cancelled_and_does_not_yield_otherwise() -> None:
    async def main() -> None:
        ran: list[str] = []
        asyncio.get_running_loop().call_soon(ran.append, "other")
        await _sync.checkpoint_if_cancelled()
        assert ran == []  # no yield: the callback did not get to run
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await _sync.checkpoint_if_cancelled()
        assert task.uncancel() == 0
        await _sync.checkpoint_if_cancelled()  # delivered once, not again

    asyncio.run(main())


def test_asyncio_checkpoint_under_timeout_gives_timeout_error() -> None:
    async def main() -> None:
        async def past_deadline() -> None:
            async with asyncio.timeout(0):
                # The deadline passed: its cancel is pending while this task runs.
                await asyncio.sleep(0)
                await _sync.checkpoint_if_cancelled()

        with pytest.raises(TimeoutError):
            await past_deadline()
        task = asyncio.current_task()
        assert task is not None
        assert task.cancelling() == 0

    asyncio.run(main())


# -- shielded ------------------------------------------------------------------------------


async def test_trio_shielded_region_completes_and_the_cancel_follows() -> None:
    finished: list[str] = []

    async def region(value: str) -> str:
        await trio.sleep(0.05)
        finished.append(value)
        return value

    got = []
    with trio.CancelScope() as scope:
        scope.cancel()
        got.append(await _sync.shielded(region, "done"))
        await trio.lowlevel.checkpoint()
    assert finished == ["done"]
    assert got == ["done"]
    assert scope.cancelled_caught


def test_asyncio_shielded_region_completes_and_the_cancel_follows() -> None:
    async def main() -> None:
        finished: list[str] = []
        got: list[str] = []
        started = asyncio.Event()

        async def region(value: str) -> str:
            started.set()
            await asyncio.sleep(0.05)
            finished.append(value)
            return value

        async def call() -> None:
            got.append(await _sync.shielded(region, "done"))
            await asyncio.sleep(0)  # the cancel is raised here

        task = asyncio.create_task(call())
        await started.wait()
        task.cancel("stop")
        with pytest.raises(asyncio.CancelledError) as info:
            await task
        assert info.value.args == ("stop",)  # the caller's own cancel, re-armed
        assert finished == ["done"]
        assert got == ["done"]
        assert task.cancelled()

    asyncio.run(main())


def test_asyncio_shielded_region_under_timeout_gives_timeout_error_after_it() -> None:
    async def main() -> None:
        got: list[int] = []

        async def region() -> int:
            await asyncio.sleep(0.05)
            return 7

        async def call() -> None:
            async with asyncio.timeout(0.01):
                got.append(await _sync.shielded(region))
                await asyncio.sleep(1)  # interrupted at once: the timeout's cancel

        with pytest.raises(TimeoutError):
            await call()
        assert got == [7]
        task = asyncio.current_task()
        assert task is not None
        assert task.cancelling() == 0
        await asyncio.sleep(0)  # nothing left pending

    asyncio.run(main())


def test_asyncio_shielded_region_that_raises_passes_its_error_and_the_cancel_on() -> None:
    async def main() -> None:
        started = asyncio.Event()

        async def region() -> None:
            started.set()
            await asyncio.sleep(0.02)
            raise OSError("from the region")

        async def call() -> str:
            try:
                await _sync.shielded(region)
            except OSError as exc:
                seen = str(exc)
            await asyncio.sleep(0)
            return seen  # pragma: no cover - the cancel is raised above

        task = asyncio.create_task(call())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


# -- scopes --------------------------------------------------------------------------------


async def test_trio_scope_cancel_ends_the_region_with_closed_resource_error() -> None:
    scope = _sync.open_scope()
    cleaned: list[bool] = []

    async def region() -> None:
        try:
            await trio.sleep_forever()
        finally:
            cleaned.append(True)

    async def closer() -> None:
        await trio.testing.wait_all_tasks_blocked()
        scope.cancel("closed under it")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(closer)
        with pytest.raises(trio.ClosedResourceError, match="closed under it"):
            await scope.run(region)
    assert cleaned == [True]


def test_asyncio_scope_cancel_ends_the_region_with_closed_resource_error() -> None:
    async def main() -> None:
        scope = _sync.open_scope()
        cleaned: list[bool] = []
        started = asyncio.Event()

        async def region() -> None:
            started.set()
            try:
                await asyncio.sleep(3600)
            finally:
                cleaned.append(True)

        async def closer() -> None:
            await started.wait()
            scope.cancel("closed under it")

        closing = asyncio.create_task(closer())
        with pytest.raises(_sync.ClosedResourceError, match="closed under it"):
            await scope.run(region)
        await closing
        assert cleaned == [True]
        task = asyncio.current_task()
        assert task is not None
        assert task.cancelling() == 0
        await asyncio.sleep(0)  # the caller itself was never cancelled

    asyncio.run(main())


@pytest.mark.parametrize("shield", [False, True], ids=["scope", "shielded"])
@pytest.mark.parametrize("how", ["close", "throw"])
def test_asyncio_region_ends_with_the_coroutine_that_awaited_it(shield: bool, how: str) -> None:
    """The caller's coroutine closed (a combinator dropping it) or thrown
    into while the region runs as its own task: nothing will wait for the
    region any more, so it is cancelled rather than left running (it used
    to stay parked forever, holding what it held: a file's lock)."""

    async def main() -> None:
        scope = _sync.open_scope(shield=shield)
        started = asyncio.Event()
        done = asyncio.Event()
        ended: list[BaseException] = []

        async def region() -> None:
            started.set()
            try:
                await asyncio.sleep(3600)
            except BaseException as exc:
                ended.append(exc)
                done.set()
                raise

        coro = scope.run(region)
        waiter = coro.send(None)  # the region task is created; the caller parks
        await started.wait()
        if how == "close":
            coro.close()
        else:
            with pytest.raises(KeyError):
                coro.throw(KeyError("thrown in"))
        async with asyncio.timeout(5):
            await done.wait()
        assert isinstance(ended[0], asyncio.CancelledError)
        assert isinstance(waiter, asyncio.Future)

    asyncio.run(main())


def test_asyncio_caller_cancel_wins_over_the_scopes_own() -> None:
    async def main() -> None:
        scope = _sync.open_scope()
        started = asyncio.Event()

        async def region() -> None:
            started.set()
            await asyncio.sleep(3600)

        task = asyncio.create_task(scope.run(region))
        await started.wait()
        task.cancel()
        scope.cancel("closed")
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_asyncio_unshielded_scope_passes_the_callers_cancel_on() -> None:
    async def main() -> None:
        cleaned: list[bool] = []
        started = asyncio.Event()

        async def region() -> None:
            started.set()
            try:
                await asyncio.sleep(3600)
            finally:
                cleaned.append(True)

        async def call() -> None:
            await _sync.open_scope().run(region)

        task = asyncio.create_task(call())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert cleaned == [True]

    asyncio.run(main())


def test_asyncio_region_cancelled_before_it_starts_still_runs_its_finally() -> None:
    # The fd-closing shape of _path._with_fd: the region owns a resource from
    # its first line, so it must run even when the cancel came first (trio's
    # scope raises at the region's first checkpoint, inside its try).
    async def main() -> None:
        entered: list[str] = []

        async def region() -> None:
            entered.append("entered")
            try:
                await asyncio.sleep(3600)
            finally:
                entered.append("cleaned")

        task = asyncio.current_task()
        assert task is not None
        task.cancel()  # pending when run() first awaits
        with pytest.raises(asyncio.CancelledError):
            await _sync.open_scope().run(region)
        assert entered == ["entered", "cleaned"]
        assert task.uncancel() == 0

    asyncio.run(main())


async def test_trio_scope_shield_raised_inside_keeps_the_rest_of_the_region() -> None:
    steps: list[str] = []

    async def region(effect: _sync.Scope) -> str:
        await trio.sleep(0.01)
        effect.shield = True  # an effect happened: finish
        steps.append("effect")
        await trio.sleep(0.05)
        steps.append("finished")
        return "done"

    got = []
    with trio.CancelScope() as outer:
        effect = _sync.open_scope()

        async def canceller() -> None:
            await trio.sleep(0.03)
            outer.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(canceller)
            got.append(await effect.run(region, effect))
        await trio.lowlevel.checkpoint()
    assert steps == ["effect", "finished"]
    assert got == ["done"]
    assert outer.cancelled_caught


def test_asyncio_scope_shield_raised_inside_keeps_the_rest_of_the_region() -> None:
    async def main() -> None:
        steps: list[str] = []
        got: list[str] = []
        shielded = asyncio.Event()

        async def region(effect: _sync.Scope) -> str:
            await asyncio.sleep(0.01)
            effect.shield = True  # an effect happened: finish
            steps.append("effect")
            shielded.set()
            await asyncio.sleep(0.05)
            steps.append("finished")
            return "done"

        async def call() -> None:
            effect = _sync.open_scope()
            got.append(await effect.run(region, effect))
            await asyncio.sleep(0)

        task = asyncio.create_task(call())
        await shielded.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert steps == ["effect", "finished"]
        assert got == ["done"]

    asyncio.run(main())


def test_asyncio_scope_cancelled_before_its_shield_is_raised_does_not_finish() -> None:
    async def main() -> None:
        steps: list[str] = []
        started = asyncio.Event()

        async def region(effect: _sync.Scope) -> None:
            started.set()
            await asyncio.sleep(3600)
            effect.shield = True  # pragma: no cover - never reached
            steps.append("effect")  # pragma: no cover

        async def call() -> None:
            effect = _sync.open_scope()
            await effect.run(region, effect)

        task = asyncio.create_task(call())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert steps == []

    asyncio.run(main())


# -- deliver_later -------------------------------------------------------------------------


async def test_trio_deliver_later_returns_and_the_cancel_follows() -> None:
    returned = []
    with trio.CancelScope() as scope:
        scope.cancel()
        await _sync.deliver_later(trio.sleep_forever())  # noqa: ASYNC105 - awaited inside
        returned.append(True)
        await trio.lowlevel.checkpoint()
    assert returned == [True]
    assert scope.cancelled_caught


def test_asyncio_deliver_later_returns_and_the_timeout_still_fires() -> None:
    async def main() -> None:
        returned: list[bool] = []

        async def call() -> None:
            async with asyncio.timeout(0.01):
                await _sync.deliver_later(asyncio.sleep(1))
                returned.append(True)
                await asyncio.sleep(1)

        with pytest.raises(TimeoutError):
            await call()
        assert returned == [True]
        task = asyncio.current_task()
        assert task is not None
        assert task.cancelling() == 0

    asyncio.run(main())


# -- the same rule across a TaskGroup: siblings see one cancel each ----------------------


@pytest.mark.parametrize("primitive", ["shielded", "deliver_later"])
def test_asyncio_taskgroup_cancel_is_not_swallowed(primitive: str) -> None:
    async def region() -> int:
        await asyncio.sleep(0.05)
        return 1

    wrap: dict[str, Callable[[], Awaitable[Any]]] = {
        "shielded": lambda: _sync.shielded(region),
        "deliver_later": lambda: _sync.deliver_later(region()),
    }

    async def main() -> list[str]:
        seen: list[str] = []

        async def worker() -> None:
            await wrap[primitive]()
            seen.append("returned")
            await asyncio.sleep(1)
            seen.append("not cancelled")  # pragma: no cover

        async def failer() -> None:
            await asyncio.sleep(0.01)
            raise ValueError("sibling failed")

        async def group() -> None:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(worker())
                tasks.create_task(failer())

        with pytest.raises(ExceptionGroup) as info:
            await group()
        assert info.group_contains(ValueError)
        return seen

    assert asyncio.run(main()) == ["returned"]


def test_asyncio_shield_raised_after_a_cancel_was_passed_on() -> None:
    # The region's operation completes although the caller's cancel reached
    # it (as a ring operation does whose ASYNC_CANCEL came too late: the
    # executor returns the result and re-arms the cancel), and the region
    # then raises its shield. uncancel() withdraws the passed-on cancel before
    # the re-arm runs (it waits for the region to suspend), so the region
    # finishes, on every version; the caller returns its result.
    async def main() -> tuple[list[str], bool]:
        steps: list[str] = []
        started = asyncio.Event()

        async def operation() -> str:
            started.set()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError as exc:
                _sync._rearm(exc)  # completed despite the cancel
            return "result"

        async def region(effect: _sync.Scope) -> str:
            steps.append(await operation())
            effect.shield = True
            await asyncio.sleep(0.01)
            steps.append("finished")
            return "done"

        async def call() -> str:
            effect = _sync.open_scope()
            return await effect.run(region, effect)

        task = asyncio.create_task(call())
        await started.wait()
        task.cancel()
        assert await task == "done"  # it happened: returned, not dropped
        return steps, task.cancelled()

    steps, cancelled = asyncio.run(main())
    assert not cancelled
    assert steps == ["result", "finished"]


# -- to_thread -----------------------------------------------------------------------------


async def test_trio_to_thread_runs_in_trios_worker_thread() -> None:
    main = threading.get_ident()
    assert await _sync.to_thread(threading.get_ident) != main
    assert await _sync.to_thread(divmod, 7, 2) == (3, 1)


def test_asyncio_to_thread_cancelled_while_queued_never_runs() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(max_workers=1))
        release = threading.Event()
        ran: list[str] = []
        busy = asyncio.create_task(_sync.to_thread(release.wait))  # holds the only thread
        await asyncio.sleep(0.01)
        queued = asyncio.create_task(_sync.to_thread(ran.append, "ran"))
        await asyncio.sleep(0.01)
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        release.set()
        assert await busy is True
        await _sync.to_thread(ran.append, "after")
        assert ran == ["after"]  # the withdrawn call never ran

    asyncio.run(main())


def test_asyncio_to_thread_cancelled_while_running_returns_then_is_cancelled() -> None:
    async def main() -> None:
        started = threading.Event()
        release = threading.Event()
        got: list[str] = []

        def work() -> str:
            started.set()
            release.wait()
            return "result"

        async def call() -> None:
            got.append(await _sync.to_thread(work))
            await asyncio.sleep(0)  # the cancel is raised here

        task = asyncio.create_task(call())
        await asyncio.to_thread(started.wait)  # another worker of the default executor
        task.cancel()
        await asyncio.sleep(0.01)
        assert not task.done()  # it waits for the thread
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert got == ["result"]

    asyncio.run(main())
