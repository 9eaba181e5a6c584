"""Issue 4, scenario 12: a ring used from another thread, after it closed, or
after the trio run that owned it ended: a clear exception, never a hang or a
crash, and the buffer comes back."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import pytest
import trio

import ouring
from ouring._ops import Nop, Read

from ._helpers import is_lent


def in_thread(func: Callable[[], object]) -> BaseException | None:
    caught: list[BaseException] = []

    def run() -> None:
        try:
            func()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            caught.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "hung"
    return caught[0] if caught else None


@pytest.mark.parametrize("method", ["submit", "wait", "flush", "reap", "close"])
def test_another_thread_gets_a_clear_error(pipe: tuple[int, int], method: str) -> None:
    r, _ = pipe
    buf = bytearray(4)
    with ouring.Ring(4) as ring:
        op = Read(r, buf)
        ring.submit(op)
        ring.flush()  # in the kernel

        def use() -> None:
            if method == "submit":
                ring.submit(Read(r, bytearray(1)))
            elif method == "wait":
                ring.wait(0.01)
            elif method == "flush":
                ring.submit(Nop())
                ring.flush()
            elif method == "reap":
                ring.reap()
            else:
                ring.close()

        exc = in_thread(use)
        assert isinstance(exc, ouring.RingClosedError | RuntimeError), exc
        assert "thread" in str(exc)
        assert not ring.closed
        assert ring.statistics().inflight == 1
    assert op.cancelled()
    assert not is_lent(buf)


async def test_a_ring_used_inside_a_trio_run_in_another_thread(pipe: tuple[int, int]) -> None:
    ring = ouring.current_ring()
    buf = bytearray(4)

    def other() -> object:
        async def use() -> None:
            await ring.read(pipe[0], buf)

        return trio.run(use)

    with pytest.raises(ouring.RingClosedError, match="another thread"):
        await trio.to_thread.run_sync(other)
    assert not is_lent(buf)


async def test_after_close(executor: str, pipe: tuple[int, int]) -> None:
    async with ouring.open_ring(4) as ring:
        pass
    buf = bytearray(4)
    with pytest.raises(ouring.RingClosedError):
        await ring.read(pipe[0], buf)
    assert not is_lent(buf)
    ring.close()


@pytest.mark.io_uring_only  # the queue a ring driven by hand uses: the thread ring has none
async def test_the_queue_after_close(executor: str) -> None:
    async with ouring.open_ring(4) as ring:
        pass
    assert isinstance(ring, ouring.Ring)
    with pytest.raises(ouring.RingClosedError):
        ring.wait(0)
    assert ring.reap() == 0
    ring.flush()
    ring.close()


def test_after_the_run_that_owned_it_ended(pipe: tuple[int, int]) -> None:
    rings: list[ouring.Ring] = []

    async def first() -> None:
        rings.append(ouring.current_ring())
        await rings[0].nop()

    trio.run(first)
    ring = rings[0]
    assert ring.closed
    buf = bytearray(4)

    async def second() -> Any:
        return await ring.read(pipe[0], buf)

    with pytest.raises(ouring.RingClosedError):
        trio.run(second)
    assert not is_lent(buf)
    with pytest.raises(RuntimeError, match=r"trio\.run"):
        ouring.current_ring()
    # Module functions outside any run: a clear error at the call, nothing acquired.
    with pytest.raises(RuntimeError, match=r"trio\.run"):
        ouring.read(pipe[0], buf)  # type: ignore[unused-coroutine]  # raises
    assert not is_lent(buf)
    assert os.get_blocking(pipe[0])


async def test_a_closed_run_ring_is_replaced_for_the_rest_of_the_run(
    pipe: tuple[int, int],
) -> None:
    """The driver closes the run's ring when the kernel fails it; the next
    operation of the same run gets a fresh ring, not RingClosedError. (Trio's
    run driver; the asyncio loop's ring is replaced by ``loop_ring`` alike.)"""
    from ouring import _trio

    old = ouring.current_ring()
    _trio._run_driver.get().close()  # what a failed io_uring_enter leads to
    assert old.closed
    # No checkpoint: the new ring may reuse the fd number in this same pass,
    # before the old reaper ever ran (test_trio.py's fd-reuse tests).
    r, w = pipe
    os.write(w, b"x")
    buf, n = await ouring.read(r, bytearray(1))
    assert (bytes(buf), n) == (b"x", 1)
    assert ouring.current_ring() is not old
