"""Issue 4, scenario 7: bursts far beyond the SQ, a cancel storm on a small
ring, and completions far beyond the CQ. Everything completes, nothing hangs,
nothing is lost."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import ExitStack, suppress
from pathlib import Path

import anyio
import pytest

import ouring
from ouring._ops import Nop, Recv

from ._helpers import wait_parked

DATA = bytes(range(256)) * 16


@pytest.fixture
def socketpairs() -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    with ExitStack() as stack:
        pairs = []
        for _ in range(10):
            a, b = socket.socketpair()
            stack.enter_context(a)
            stack.enter_context(b)
            pairs.append((a, b))
        yield pairs


async def test_burst_of_100x_the_ring_of_mixed_operations(
    executor: str, tmp_path: Path, socketpair: tuple[socket.socket, socket.socket]
) -> None:
    path = tmp_path / "data"
    path.write_bytes(DATA)
    a, b = socketpair
    b.send(bytes(range(200)))
    fd = os.open(path, os.O_RDONLY)
    with anyio.fail_after(20):
        async with ouring.open_ring(8, cq_entries=16) as ring:
            reads: list[tuple[int, bytes]] = []
            recvd = bytearray()

            async def reader(i: int) -> None:
                buf, n = await ring.read(fd, bytearray(16), (i * 16) % len(DATA))
                reads.append((i, bytes(buf[:n])))

            async def receiver() -> None:
                buf, n = await ring.recv(a, bytearray(1))
                recvd.extend(buf[:n])

            async with anyio.create_task_group() as nursery:
                for i in range(800):
                    nursery.start_soon(reader, i)
                    if i % 4 == 0:
                        nursery.start_soon(receiver)
                    nursery.start_soon(ring.nop)
            assert len(reads) == 800
            for i, got in reads:
                start = (i * 16) % len(DATA)
                assert got == DATA[start : start + 16]
            assert sorted(recvd) == list(range(200))
            stats = ring.statistics()
            assert (stats.completed, stats.inflight) == (1800, 0)
    os.close(fd)


@pytest.mark.parametrize("cq_entries", [None, 128], ids=["default-cq", "cq-128"])
async def test_cancel_storm_of_5000_recvs_on_a_64_entry_ring(
    executor: str, socketpairs: list[tuple[socket.socket, socket.socket]], cq_entries: int | None
) -> None:
    """5000 recvs share one deadline; a burst of data arrives just before it.
    Every recv either returned bytes or was cancelled without consuming any."""
    sent = {i: bytes([i]) * 100 for i in range(len(socketpairs))}
    received = {i: bytearray() for i in range(len(socketpairs))}
    outcomes = {"cancelled": 0, "delivered": 0}
    async with ouring.open_ring(64, cq_entries=cq_entries) as ring:

        async def receiver(i: int) -> None:
            buf = bytearray(b"\xee")
            try:
                buf, n = await ring.recv(socketpairs[i][0], buf)
            except anyio.get_cancelled_exc_class():
                assert buf == b"\xee"
                outcomes["cancelled"] += 1
                raise
            received[i] += buf[:n]
            outcomes["delivered"] += 1

        with anyio.fail_after(30):
            with anyio.move_on_after(3600) as storm:  # the one shared deadline
                async with anyio.create_task_group() as nursery:
                    for k in range(5000):
                        nursery.start_soon(receiver, k % len(socketpairs))
                    await wait_parked(ring, 0, inflight=5000)
                    for i, (_, b) in enumerate(socketpairs):
                        b.send(sent[i])
                    storm.deadline = anyio.current_time()
            assert outcomes["cancelled"] + outcomes["delivered"] == 5000
            assert outcomes["cancelled"] > 0
            stats = ring.statistics()
            assert (stats.inflight, stats.completed) == (0, 5000)
            assert stats.cancelled == outcomes["cancelled"]
    for i, (a, _) in enumerate(socketpairs):
        a.setblocking(False)
        with suppress(BlockingIOError):
            received[i] += a.recv(1000)
        assert received[i] == sent[i]


def test_completions_far_beyond_a_tiny_cq(
    socketpair: tuple[socket.socket, socket.socket],
) -> None:
    """500 recvs on a 4-entry CQ all complete when the data arrives at once
    (with NODROP all are in the kernel and the CQ overflows; the real-overflow
    test below counts every CQE)."""
    a, b = socketpair
    with ouring.Ring(2, cq_entries=4) as ring:
        ops = [Recv(a, bytearray(1)) for _ in range(500)]
        for op in ops:
            ring.submit(op)
        ring.flush()
        b.send(bytes(range(250)) * 2)
        while ring.statistics().inflight:
            assert ring.wait(5)
        got = sorted(op.outcome()[0][0] for op in ops)
        assert got == sorted(list(range(250)) * 2)


@pytest.mark.parametrize("count", [1000])
def test_real_cq_overflow_is_flushed(
    socketpair: tuple[socket.socket, socket.socket], count: int
) -> None:
    """The kernel really overflows the CQ (IORING_FEAT_NODROP keeps an
    overflow list; ouring puts no cap on operations in flight then). The
    native reap must flush it: every CQE comes back."""
    a, b = socketpair
    with ouring.Ring(8, cq_entries=16) as ring:
        ring._max_inflight = 10 * count  # let far more than the CQ into the kernel
        nops = [Nop() for _ in range(count)]
        for op in nops:
            ring.submit(op)
        ring.flush()  # every nop completes during submission: ~count CQEs, 16 slots
        recvs = [Recv(a, bytearray(1)) for _ in range(count)]
        for recv in recvs:
            ring.submit(recv)
        ring.flush()
        b.send(bytes(count))  # count completions at once
        rounds = 0
        while ring.statistics().inflight:
            assert ring.wait(5), "a completion was lost in the overflow"
            rounds += 1
            assert rounds < 10 * count
        assert all(op.res == 0 for op in nops)
        assert all(op.res == 1 for op in recvs)
        assert ring.statistics().completed == 2 * count
