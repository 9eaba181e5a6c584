"""Issue 4, scenarios 1, 5 and 6: a buffer lent to the kernel stays alive and
pinned until the operation's final CQE, whoever drops it and however: a
cancelled caller, a coroutine closed while parked, a ring torn down while an
io-wq worker is still copying into it. What the kernel never gives back is
kept forever, never freed."""

from __future__ import annotations

import errno
import gc
import mmap
import os
import socket
import time
import weakref
from pathlib import Path

import anyio
import pytest
from ouring._native import lib

import ouring
from ouring import _ring
from ouring._ops import DONE, LEAKED, Read, Recv

from ._helpers import (
    Buffer,
    all_ops_completed,
    drop_on_cancel,
    fd_count,
    is_lent,
    wait_cqe_ready,
    wait_parked,
)

# -- 1. a cancelled read keeps its buffer until the CQE -----------------------------------


def test_cancelled_read_keeps_the_only_reference_to_its_buffer_until_the_cqe(
    pipe: tuple[int, int],
) -> None:
    """Driven by hand: the caller asks for a cancel and drops every reference
    (buffer and operation); the ring's reference is what keeps the memory
    the kernel owns alive, and it goes away with the CQE."""
    r, w = pipe
    with ouring.Ring(4) as ring:
        buf = Buffer(b"untouched")
        ref = weakref.ref(buf)
        op = Read(r, buf)
        ring.submit(op)
        ring.flush()
        assert ring.cancel(op) is False  # submitted: a cancel request, the CQE decides
        del op, buf
        gc.collect()
        alive = ref()
        assert alive is not None, "freed while the kernel owns it"
        assert is_lent(alive)  # pinned: resizing raises BufferError
        with pytest.raises(BufferError):
            alive.extend(b"more")
        assert alive == b"untouched"
        del alive
        while ring.statistics().inflight:
            assert ring.wait(5), "no CQE for the cancelled read"
        gc.collect()
        assert ref() is None, "the ring kept the buffer after its CQE"
        assert ring.statistics().cancelled == 1
        os.write(w, b"next")
        assert os.read(r, 10) == b"next"  # the cancelled read consumed nothing


async def test_cancelled_read_dropped_by_its_caller_keeps_its_buffer(
    executor: str, pipe: tuple[int, int]
) -> None:
    """Under every executor: the task holding the read is cancelled and its coroutine
    dropped (closed) while parked, so nothing of the caller references the
    buffer any more; it lives until the CQE and is freed after."""
    r, w = pipe
    ring = ouring.current_ring()

    async def reader(buf: Buffer) -> None:
        await drop_on_cancel(ouring.read(r, buf))

    buf = Buffer(b"untouched")
    ref = weakref.ref(buf)
    start = ring.statistics().submitted
    async with anyio.create_task_group() as nursery:
        nursery.start_soon(reader, buf)
        del buf
        await wait_parked(ring, start + 1)
        assert ring.statistics().inflight == 1
        # Under trio the coroutine is closed right here; under asyncio when
        # the task next runs (the task group's exit).
        nursery.cancel_scope.cancel()
        gc.collect()
        alive = ref()
        assert alive is not None, "freed while the kernel owns it"
        assert is_lent(alive)
        assert alive == b"untouched"
        del alive
    await all_ops_completed()
    gc.collect()
    assert ref() is None
    assert ring.statistics().inflight == 0
    os.write(w, b"next")
    assert os.read(r, 10) == b"next"


async def test_plain_cancel_waits_for_the_cqe_then_releases(
    executor: str, socketpair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = socketpair
    buf = Buffer(b"untouched")
    scope = anyio.CancelScope()
    ring = ouring.current_ring()
    start = ring.statistics().submitted
    lent_during_cancel: list[bool] = []

    async def receiver() -> None:
        with scope:
            await ouring.recv(a, buf)

    async with anyio.create_task_group() as nursery:
        nursery.start_soon(receiver)
        await wait_parked(ring, start + 1)
        scope.cancel()
        lent_during_cancel.append(is_lent(buf))
    assert lent_during_cancel == [True]
    assert scope.cancelled_caught
    assert buf == b"untouched"
    assert not is_lent(buf)
    b.send(b"kept")
    assert a.recv(10) == b"kept"


def test_an_mmap_cannot_be_closed_while_lent(pipe: tuple[int, int]) -> None:
    r, _ = pipe
    m = mmap.mmap(-1, 4096)
    with ouring.Ring(4) as ring:
        op = Read(r, m)
        ring.submit(op)
        ring.flush()
        ring.cancel(op)
        with pytest.raises(BufferError):
            m.close()
        while ring.statistics().inflight:
            assert ring.wait(5)
    m.close()  # given back


# -- 5. a coroutine closed while parked -----------------------------------------------


async def test_closed_coroutine_no_escape_buffer_owned_until_cqe(
    executor: str, socketpair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = socketpair
    ring = ouring.current_ring()
    buf = Buffer(b"untouched")
    outcomes: list[BaseException] = []

    async def receiver() -> None:
        try:
            await drop_on_cancel(ouring.recv(a, buf))
        except BaseException as exc:
            outcomes.append(exc)
            raise

    for _ in range(50):
        start = ring.statistics().submitted
        async with anyio.create_task_group() as nursery:
            nursery.start_soon(receiver)
            await wait_parked(ring, start + 1)
            nursery.cancel_scope.cancel()
            assert ring.statistics().inflight == 1  # the ring still owns it
            assert is_lent(buf)
        await all_ops_completed()
        assert not is_lent(buf)
    # Only the executor's own cancellation came out of the closed coroutines'
    # caller.
    assert len(outcomes) == 50
    assert all(isinstance(e, anyio.get_cancelled_exc_class()) for e in outcomes)
    assert buf == b"untouched"
    assert ring.statistics().inflight == 0
    b.send(b"kept")
    assert a.recv(10) == b"kept"  # no abandoned recv stayed armed


async def test_closed_coroutine_whose_op_cannot_be_stopped(executor: str, tmp_path: Path) -> None:
    """The abandoned read runs in an io-wq worker: the kernel keeps writing
    into the buffer after the coroutine is gone; the ring keeps it alive."""
    size = 64 << 20
    path = tmp_path / "data"
    path.write_bytes(b"\xab" * size)
    fd = os.open(path, os.O_RDONLY)
    try:
        async with ouring.open_ring(8) as ring:
            buf = Buffer(size)
            ref = weakref.ref(buf)

            async def reader(buf: Buffer) -> None:
                op = Read(fd, buf, 0)
                op.sqe_flags = lib.IOSQE_ASYNC
                await drop_on_cancel(ring.perform(op))

            async with anyio.create_task_group() as nursery:
                nursery.start_soon(reader, buf)
                del buf
                await wait_parked(ring, 1)
                nursery.cancel_scope.cancel()
                gc.collect()
                alive = ref()
                assert alive is not None
                assert is_lent(alive)
                del alive
            await all_ops_completed(ring)
            gc.collect()
            assert ref() is None
            stats = ring.statistics()
            assert (stats.inflight, stats.completed) == (0, 1)
    finally:
        os.close(fd)


async def test_closed_coroutine_of_a_completed_accept_closes_the_connection(
    executor: str,
) -> None:
    ring = ouring.current_ring()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        before = fd_count()
        for _ in range(50):

            async def acceptor() -> None:
                await drop_on_cancel(ouring.accept(listener))

            start = ring.statistics().submitted
            async with anyio.create_task_group() as nursery:
                nursery.start_soon(acceptor)
                await wait_parked(ring, start + 1)
                client = socket.create_connection(listener.getsockname())
                wait_cqe_ready(ring)  # the accept completed; nobody reaped it yet
                nursery.cancel_scope.cancel()  # closed before it could receive the fd
            await all_ops_completed()
            # The abandoned connection was closed by the ring: the peer sees EOF.
            client.settimeout(5)
            assert client.recv(1) == b""
            client.close()
        assert fd_count() == before
        assert ring.statistics().inflight == 0


async def test_closed_coroutine_of_an_open_closes_the_fd(executor: str, tmp_path: Path) -> None:
    """Opens with O_CREAT go to an io-wq worker, so the coroutine is closed
    while they run; any that completed have their fd closed by the ring."""
    ring = ouring.current_ring()
    before = fd_count()
    for i in range(100):

        async def opener(i: int) -> None:
            fd = await drop_on_cancel(
                ouring.open(tmp_path / f"f{i % 7}", os.O_CREAT | os.O_RDWR, 0o600)
            )
            os.close(fd)  # reached only when it completed before the cancel

        start = ring.statistics().submitted
        async with anyio.create_task_group() as nursery:
            for j in range(4):
                nursery.start_soon(opener, i * 4 + j)
            await wait_parked(ring, start + 4)
            nursery.cancel_scope.cancel()
        await all_ops_completed()
    assert ring.statistics().inflight == 0
    assert fd_count() == before


# -- 6. teardown ---------------------------------------------------------------------------


def _async_read(fd: int, buf: bytearray) -> Read[bytearray]:
    op = Read(fd, buf, 0)
    op.sqe_flags = lib.IOSQE_ASYNC  # forced to an io-wq worker
    return op


@pytest.mark.parametrize("size_mib", [256])
def test_teardown_during_a_huge_io_wq_read_waits_for_its_cqe(tmp_path: Path, size_mib: int) -> None:
    """io_uring_queue_exit returns while an io-wq worker still copies into the
    buffer (field notes: 5k of 65k pages written at exit, all 300 ms later).
    Ring.close must return only after the read's CQE: after it, the kernel
    never writes into the buffer again, and the buffer is given back."""
    size = size_mib << 20
    path = tmp_path / "sparse"
    with open(path, "wb") as f:
        f.truncate(size)  # a hole: reads as zeros without a disk
    fd = os.open(path, os.O_RDONLY)
    try:
        buf = bytearray(b"\xff") * size
        ring = ouring.Ring(4)
        op = _async_read(fd, buf)
        ring.submit(op)
        ring.flush()
        ring.close()
        untouched = buf.count(0xFF)
        # Nothing writes into the buffer after close returned.
        time.sleep(0.3)
        assert buf.count(0xFF) == untouched, "the kernel wrote into the buffer after close"
        assert op.state == DONE
        assert ring.statistics().leaked == 0
        assert op.res == size or op.res in (-errno.ECANCELED, -errno.EINTR) or 0 < op.res < size
        written = op.res if op.res > 0 else 0
        assert untouched == size - written  # exactly the reported bytes were written
        assert not is_lent(buf)  # and it is the caller's again
    finally:
        os.close(fd)


def test_what_does_not_complete_within_the_teardown_wait_is_leaked_on_purpose(
    socketpair: tuple[socket.socket, socket.socket],
) -> None:
    a, _ = socketpair
    buf = Buffer(b"untouched")
    ref = weakref.ref(buf)
    ring = ouring.Ring(4, teardown_timeout=0)  # no time at all to reap its cancel
    op = Recv(a, buf)
    ring.submit(op)
    ring.flush()
    del buf
    with pytest.warns(ResourceWarning, match="kept alive forever"):
        ring.close()
    assert op.state == LEAKED
    assert ring.statistics().leaked == 1
    assert op in _ring._leaked_forever
    del op
    gc.collect()
    leaked = ref()
    assert leaked is not None, "a leaked operation's buffer was freed"
    assert is_lent(leaked)  # never resized or freed under the kernel


async def test_a_task_waiting_on_an_operation_leaked_at_close_gets_ring_closed_error(
    executor: str, socketpair: tuple[socket.socket, socket.socket]
) -> None:
    """Its CQE never comes, so nothing else would ever wake it: a hang."""
    a, _ = socketpair
    buf = bytearray(b"untouched")
    woken: list[BaseException] = []

    async def waiter(ring: ouring.Ring) -> None:
        try:
            await ring.recv(a, buf)
        except ouring.RingClosedError as exc:
            woken.append(exc)

    async with (
        ouring.open_ring(teardown_timeout=0) as ring,
        anyio.create_task_group() as nursery,
    ):
        nursery.start_soon(waiter, ring)
        await wait_parked(ring, 1)
        with pytest.warns(ResourceWarning, match="kept alive forever"):
            ring.close()
    assert len(woken) == 1
    assert ring.statistics().leaked == 1
    assert is_lent(buf)  # the kernel may still write into it: kept, never resized
