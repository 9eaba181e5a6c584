"""The trio executor's C awaitables (native/trio_await.c): the steps that
perform an inline operation and receive from a multishot queue. Their
cancellation semantics are also run, side by side with the Python paths they
mirror, by the tests that take the ``executor_path`` fixture (test_trio.py,
test_receive.py's model, trio's stream checks)."""

from __future__ import annotations

import collections.abc
import os
import socket
import struct
from pathlib import Path

import pytest
import trio
import trio.testing
from conftest import tcp_pair

import ouring
from ouring import _ringcore, _trio
from ouring.trio import UringSocket


def batching() -> ouring.Ring:
    """The run's ring, told that the last pass was busy: the next inline
    operation is a C step (a lone task's goes through the Python path)."""
    ring = ouring.current_ring()
    ring._alone = False
    return ring


def test_trios_traps_are_what_the_c_steps_yield() -> None:
    """If trio changes its trap messages, ouring falls back to the Python
    paths (slower, still correct): this test says so instead of staying quiet."""
    from trio._core._traps import CancelShieldedCheckpoint, WaitTaskRescheduled

    assert _trio._trio_traps() == (CancelShieldedCheckpoint, WaitTaskRescheduled)
    assert _trio._Driver.perform is _ringcore.trio_perform  # type: ignore[comparison-overlap]
    assert _trio._Driver.receive is _ringcore.trio_receive


async def test_a_step_is_a_coroutine_to_trio(tmp_path: Path) -> None:
    path = tmp_path / "data"
    path.write_bytes(b"step" * 8)
    fd = os.open(path, os.O_RDONLY)
    try:
        batching()
        step = ouring.read(fd, bytearray(4), 0)
        assert type(step) is _ringcore.TrioStep
        assert isinstance(step, collections.abc.Coroutine)
        assert await step == (bytearray(b"step"), 4)
        with pytest.raises(RuntimeError, match="cannot reuse"):
            await step
        # nursery.start_soon accepts it as an async function's coroutine.
        got: list[object] = []

        async def keep(buf: bytearray, offset: int) -> None:
            got.append(await ouring.read(fd, buf, offset))

        async with trio.open_nursery() as nursery:
            batching()
            nursery.start_soon(ouring.read, fd, bytearray(4), 4)
            nursery.start_soon(keep, bytearray(4), 8)
        assert got == [(bytearray(b"step"), 4)]
    finally:
        os.close(fd)


async def test_throwing_into_a_submitted_step_abandons_its_operation(
    pipe: tuple[int, int],
) -> None:
    """A coroutine thrown into at its one yield: the exception comes out, and
    the ring keeps the read and its buffer until the final CQE (cancelled)."""
    r, w = pipe
    ring = batching()
    buf = bytearray(4)
    step = ouring.read(r, buf)
    assert step.send(None) is _trio._TRAPS[0]  # type: ignore[index]
    ring.flush()  # the kernel has the buffer now
    with pytest.raises(ValueError, match="thrown"):
        step.throw(ValueError("thrown"))
    with pytest.raises(BufferError):
        buf.extend(b"x")  # still the kernel's
    with trio.fail_after(5):
        await ouring.wait_all_ops_completed()
    buf.extend(b"x")
    os.write(w, b"data")
    assert os.read(r, 10) == b"data"  # the abandoned read was cancelled, read nothing
    with pytest.raises(ValueError, match="again"):
        step.throw(ValueError("again"))  # finished: as a finished coroutine


async def test_a_parked_receive_that_is_closed_leaves_the_queue_to_the_next() -> None:
    a, b = tcp_pair()
    with a, UringSocket(b) as sock:
        a.sendall(b"first")
        assert await sock.recv(100) == b"first"  # the queue is armed
        step = sock.recv(100)
        msg = step.send(None)  # type: ignore[attr-defined]  # nothing queued: parks
        assert type(msg).__name__ == "WaitTaskRescheduled"
        assert sock._rx is not None
        assert sock._rx.waiter is trio.lowlevel.current_task()
        step.close()  # type: ignore[attr-defined]
        assert sock._rx.waiter is None
        a.sendall(b"second")
        with trio.fail_after(5):
            assert await sock.recv(100) == b"second"


async def test_a_queued_error_is_raised_after_a_full_checkpoint(executor_path: str) -> None:
    """The take raises (the peer reset the connection) after the bytes that
    came before it; the receive that raises is still a checkpoint."""
    a, b = tcp_pair()
    with UringSocket(b) as sock:
        a.sendall(b"last words")
        assert await sock.recv(100) == b"last words"
        a.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        a.close()  # RST
        with trio.fail_after(5):
            # MSG_PEEK parks until the queue has something: here, the error.
            with pytest.raises(ConnectionResetError):
                await sock.recv(1, socket.MSG_PEEK)
        with trio.testing.assert_checkpoints(), pytest.raises(ConnectionResetError):
            await sock.recv(100)


async def test_sends_and_ready_receives_are_checkpoints(executor_path: str) -> None:
    a, b = tcp_pair()
    with UringSocket(a) as left, UringSocket(b) as right:
        batching()
        with trio.testing.assert_checkpoints():
            assert await left.send(b"ping") == 4
        with trio.fail_after(5):
            while right._rx is None or not right._rx.ready:
                await right.recv(1, socket.MSG_PEEK)
        with trio.testing.assert_checkpoints():
            assert await right.recv(100) == b"ping"


async def test_a_cancelled_scope_stops_a_step_before_the_kernel_sees_it(
    pipe: tuple[int, int], executor_path: str
) -> None:
    r, w = pipe
    before = ouring.current_ring().statistics().submitted
    buf = bytearray(4)
    with trio.CancelScope() as scope:
        scope.cancel()
        batching()
        await ouring.write(w, b"nope")
    assert scope.cancelled_caught
    assert ouring.current_ring().statistics().submitted == before
    os.write(w, b"ok")
    assert os.read(r, 10) == b"ok"
    buf.extend(b"!")
