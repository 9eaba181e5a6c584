"""Issue 4, scenarios 2, 3 and 4: cancels racing completions. Whatever wins,
each operation ends exactly once, and nothing is lost: a cancelled recv
leaves its bytes in the socket, one that won the race returns them; an
accepted connection or opened fd is delivered or closed, never leaked."""

from __future__ import annotations

import contextlib
import os
import random
import select
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

import ouring

from ._helpers import all_ops_completed, fd_count, wait_cqe_ready, wait_parked

# -- 2. cancel/complete races ----------------------------------------------------------

# A peer in another process, so that its send really runs concurrently with
# the cancel (no GIL in between): for each cue byte on stdin it sends that byte.
_PEER = """
import os, socket, sys
sock = socket.socket(fileno=int(sys.argv[1]))
while True:
    cue = os.read(0, 1)
    if not cue or cue == b"\\xff":
        break
    sock.send(cue)
"""

SENTINEL = 0xEE  # data bytes are 0..0x7f, so an untouched buffer is recognizable


@contextlib.contextmanager
def racing_peer(sock: socket.socket) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _PEER, str(sock.fileno())],
        stdin=subprocess.PIPE,
        pass_fds=(sock.fileno(),),
    )
    try:
        yield proc
    finally:
        assert proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.write(b"\xff")
            proc.stdin.flush()
        proc.stdin.close()
        assert proc.wait(10) == 0


async def race_recv_against_cancel(rounds: int, seed: int) -> tuple[int, int]:
    """``rounds`` recvs, each cancelled while the peer sends one byte."""
    rng = random.Random(seed)
    a, b = socket.socketpair()
    ring = ouring.current_ring()
    sent = bytearray()
    received = bytearray()
    cancelled = delivered = 0
    with a, b, racing_peer(b) as peer:
        assert peer.stdin is not None
        cue = peer.stdin.fileno()
        before = ring.statistics()
        for k in range(rounds):
            start = ring.statistics().submitted
            scope = anyio.CancelScope()
            endings: list[tuple[str, bytes]] = []

            async def receiver(scope: anyio.CancelScope, endings: list[tuple[str, bytes]]) -> None:
                buf = bytearray([SENTINEL]) * 16
                with scope:
                    try:
                        buf, n = await ouring.recv(a, buf)
                    except anyio.get_cancelled_exc_class():
                        endings.append(("cancelled", bytes(buf)))
                        raise
                    endings.append(("delivered", bytes(buf[:n])))
                    assert buf[n:] == bytes([SENTINEL]) * (16 - n)
                    await anyio.lowlevel.checkpoint()  # where the late cancellation is raised

            with anyio.fail_after(10):
                async with anyio.create_task_group() as nursery:
                    nursery.start_soon(receiver, scope, endings)
                    await wait_parked(ring, start + 1)
                    data = bytes([k & 0x7F])
                    os.write(cue, data)
                    sent += data
                    how = rng.randrange(4)
                    if how == 1:
                        for _ in range(rng.randrange(2000)):
                            pass  # a few microseconds: the peer is sending now
                    elif how == 2:
                        await anyio.lowlevel.checkpoint()  # a scheduler pass in between
                    elif how == 3:
                        select.select([ring.wait_fd], [], [], 0.001)  # maybe completed
                    scope.cancel()
            assert len(endings) == 1, f"round {k} ended {len(endings)} times"
            kind, data = endings[0]
            if kind == "cancelled":
                assert data == bytes([SENTINEL]) * 16, f"round {k}: cancelled but written"
                cancelled += 1
            else:
                assert data, "a recv on a socketpair returned EOF"
                received += data
                delivered += 1
        after = ring.statistics()
        assert after.completed - before.completed == rounds
        assert after.cancelled - before.cancelled == cancelled
        assert after.inflight == 0
        # Whatever no recv took is still in the socket, in order.
        a.settimeout(5)
        while len(received) < len(sent):
            chunk = a.recv(65536)
            assert chunk, "EOF before every byte arrived"
            received += chunk
    assert received == sent
    return cancelled, delivered


@pytest.mark.io_uring_only  # races a cancel with a posted CQE (wait_fd): no CQ on threads
async def test_cancel_complete_race_each_recv_ends_exactly_once(executor: str) -> None:
    cancelled, delivered = await race_recv_against_cancel(600, seed=2)
    assert cancelled + delivered == 600
    assert cancelled > 0  # both outcomes really happen
    assert delivered > 0


@pytest.mark.slow
async def test_cancel_complete_race_10000_rounds(executor: str) -> None:
    cancelled, delivered = await race_recv_against_cancel(10_000, seed=10_000)
    assert cancelled > 0
    assert delivered > 0


# -- 3. data-loss fuzz ------------------------------------------------------------------


# The sender runs in another process, so its sends really race the receiver's
# cancels; bursts and gaps make receivers park and cancels meet arriving data.
_SENDER = """
import random, socket, sys, time
sock = socket.socket(fileno=int(sys.argv[1]))
size, seed = int(sys.argv[2]), int(sys.argv[3])
data = b"".join(i.to_bytes(4, "big") for i in range(size // 4))
rng = random.Random(seed)
view = memoryview(data)
while view:
    n = sock.send(view[: rng.randrange(1, 3000)])
    view = view[n:]
    time.sleep(rng.choice([0, 0, 0, 2e-5, 1e-4]))
sock.shutdown(socket.SHUT_WR)
"""


async def stream_from_another_process(sock: socket.socket, size: int, seed: int) -> None:
    fd = sock.fileno()
    cmd = [sys.executable, "-c", _SENDER, str(fd), str(size), str(seed)]
    await anyio.run_process(cmd, pass_fds=(fd,))
    sock.close()  # the child shut down the write side; nothing more to send


def pattern(size: int) -> bytes:
    """Numbered 4-byte big-endian words: any loss or reordering is visible."""
    return b"".join(i.to_bytes(4, "big") for i in range(size // 4))


@contextlib.contextmanager
def connected(transport: str) -> Iterator[tuple[socket.socket, socket.socket]]:
    """(sender, receiver)"""
    if transport == "socketpair":
        a, b = socket.socketpair()
        with a, b:
            yield a, b
        return
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        sender = socket.create_connection(listener.getsockname())
        receiver, _ = listener.accept()
        with sender, receiver:
            yield sender, receiver


async def receive_under_random_cancels(transport: str, size: int, seed: int) -> tuple[int, int]:
    """A sender process streams the pattern in random chunks; the receiver is
    written as a user would: each recv under a random tiny deadline, another
    task cancelling its scope at random; a recv that returns (it happened,
    even if a cancel was asked) is consumed before the next checkpoint.
    Returns (rounds, recvs that returned data although their scope was
    cancelled)."""
    data = pattern(size)
    rng = random.Random(seed)
    chaos = random.Random(seed + 1)
    received = bytearray()
    rounds = won = 0
    current: list[anyio.CancelScope] = []

    async def canceller() -> None:
        while True:
            await anyio.sleep(chaos.choice([0, 0, 1e-5, 1e-4, 5e-4]))
            if current:
                current[-1].cancel()

    with connected(transport) as (sender, receiver):
        with anyio.fail_after(60):
            async with anyio.create_task_group() as nursery:
                nursery.start_soon(stream_from_another_process, sender, size, seed + 2)
                nursery.start_soon(canceller)
                while True:
                    rounds += 1
                    deadline = rng.choice([0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1])
                    with anyio.move_on_after(deadline) as scope:
                        current.append(scope)
                        buf, n = await ouring.recv(receiver, bytearray(rng.randrange(1, 256)))
                        if n == 0:
                            break
                        received += buf[:n]
                        won += scope.cancel_called
                    current.pop()
                current.clear()
                nursery.cancel_scope.cancel()
    if received != data:
        at = next(
            (i for i, (x, y) in enumerate(zip(received, data, strict=False)) if x != y),
            min(len(received), len(data)),
        )
        pytest.fail(
            f"seed {seed}: the stream differs at byte {at} "
            f"(received {len(received)} of {len(data)} bytes in {rounds} rounds)"
        )
    assert ouring.current_ring().statistics().inflight == 0
    return rounds, won


@pytest.mark.parametrize("transport", ["tcp", "socketpair"])
async def test_no_byte_lost_under_random_deadlines_and_cancels(
    executor: str, transport: str
) -> None:
    rounds, won = await receive_under_random_cancels(transport, 768 << 10, seed=4)
    assert rounds > 1000
    assert won > 0  # results that won the race against a cancel were returned


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("transport", ["tcp", "socketpair"])
async def test_no_byte_lost_long_fuzz(executor: str, transport: str, seed: int) -> None:
    await receive_under_random_cancels(transport, 2 << 20, seed=100 + seed)


# -- 4. cancelled accept and open: delivered or closed, never leaked ---------------------


async def accept_rounds(rounds: int, seed: int) -> None:
    rng = random.Random(seed)
    ring = ouring.current_ring()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(rounds + 8)
        address = listener.getsockname()
        before = fd_count()
        delivered = 0
        clients: list[socket.socket] = []
        for _ in range(rounds):
            start = ring.statistics().submitted
            scope = anyio.CancelScope()
            conns: list[socket.socket] = []

            async def acceptor(scope: anyio.CancelScope, conns: list[socket.socket]) -> None:
                with scope:
                    conn, _ = await ouring.accept(listener)
                    conns.append(conn)  # received, even if a cancel was asked
                    await anyio.lowlevel.checkpoint()

            async with anyio.create_task_group() as nursery:
                nursery.start_soon(acceptor, scope, conns)
                await wait_parked(ring, start + 1)
                clients.append(socket.create_connection(address))
                how = rng.randrange(3)
                if how == 1:
                    wait_cqe_ready(ring)  # the accept completed first
                elif how == 2:
                    await anyio.lowlevel.checkpoint()
                scope.cancel()
            for conn in conns:
                conn.close()
                delivered += 1
        # Connections no accept took are still queued on the listener.
        listener.setblocking(False)
        queued = 0
        while True:
            try:
                conn, _ = listener.accept()
            except BlockingIOError:
                break
            conn.close()
            queued += 1
        for client in clients:
            client.close()
        assert delivered + queued == rounds
        assert delivered > 0
        assert fd_count() == before
    assert ring.statistics().inflight == 0


@pytest.mark.io_uring_only  # lets the accept complete first (wait_cqe_ready): no CQ on threads
async def test_cancelled_accepts_leak_no_fd(executor: str) -> None:
    await accept_rounds(1000, seed=4)


async def open_rounds(tmp_path: Path, rounds: int, seed: int) -> None:
    """Opens with O_CREAT run in io-wq workers: cancels race them for real.
    A user closes any fd an open returned, cancelled scope or not."""
    rng = random.Random(seed)
    ring = ouring.current_ring()
    before = fd_count()
    opened = 0

    async def opener(i: int) -> None:
        nonlocal opened
        with anyio.move_on_after(rng.choice([0, 1e-6, 1e-5, 1e-4, 1e-3])):
            fd = await ouring.open(tmp_path / f"f{i % 13}", os.O_CREAT | os.O_RDWR, 0o600)
            os.close(fd)
            opened += 1

    for r in range(rounds):
        start = ring.statistics().submitted
        async with anyio.create_task_group() as nursery:
            for j in range(8):
                nursery.start_soon(opener, r * 8 + j)
            if rng.randrange(2):
                await wait_parked(ring, start + 8)
            nursery.cancel_scope.cancel()
    await all_ops_completed()
    assert ring.statistics().inflight == 0
    assert fd_count() == before
    assert opened > 0


async def test_cancelled_opens_leak_no_fd(executor: str, tmp_path: Path) -> None:
    await open_rounds(tmp_path, 125, seed=4)  # 1000 opens
