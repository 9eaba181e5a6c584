"""Multishot receives into the ring's provided buffers (native/receive.c, the
``Receiver`` of a TCP ``UringSocket`` or ``ouring.trio.SocketStream``).

What they must keep: every received byte reaches a receive, in order, whatever
is cancelled (Cancelled took nothing); the queue is bounded and its backpressure
reaches TCP; ENOBUFS (every provided buffer in use) and the end of a multishot
never fail a call; a queue outlives the run whose ring armed it.
"""

from __future__ import annotations

import os
import random
import select
import socket
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing
from conftest import open_fds, tcp_pair

import ouring
import ouring.trio
from ouring import _ringcore
from ouring._ops import DONE, MultishotReceive
from ouring._ring import RECV_BUFFER_SIZE, RECV_BUFFERS, RECV_GROUP, Ring
from ouring.trio import UringSocket

# -- the receiver itself, on a ring driven by hand -----------------------------------------


def settle(ring: Ring, *, expect: bool = True) -> None:
    """Submit what is queued and settle the CQEs the kernel posts (waiting up
    to a second for the first when one is expected)."""
    ring.flush()
    if expect:
        select.select([ring.wait_fd], [], [], 1)
    ring.reap()


def test_a_receiver_hands_out_what_arrived_in_order_and_the_end_once_per_take() -> None:
    a, b = socket.socketpair()  # the mechanism is per fd: any stream socket
    with Ring() as ring, a, b:
        assert ring.recv_group() == RECV_GROUP
        rx = _ringcore.Receiver(limit=1 << 20)
        op = MultishotReceive(a.fileno(), rx, RECV_GROUP)
        assert rx.op is op
        assert op.receiver is rx
        ring.submit(op)
        settle(ring, expect=False)
        assert rx.take(10) is None
        assert not rx.ready
        b.send(b"hello")
        b.send(b" world")
        settle(ring)
        assert rx.queued == 11
        assert rx.ready
        assert rx.peek(100) == b"hello world"
        assert rx.queued == 11
        assert rx.take(3) == b"hel"
        assert rx.take(100) == b"lo world"  # across chunks
        b.send(b"x" * (RECV_BUFFER_SIZE * 2 + 5))  # more than one provided buffer
        settle(ring)
        buf = bytearray(RECV_BUFFER_SIZE)
        assert rx.take_into(buf, 7) == 7
        assert buf[:7] == b"x" * 7
        assert rx.take(1 << 20) == b"x" * (RECV_BUFFER_SIZE * 2 - 2)
        b.close()
        settle(ring)
        assert rx.op is None
        assert op.state == DONE
        assert rx.take(5) == b""
        assert rx.take(5) == b""
        assert rx.take_into(buf) == 0
        assert ring.statistics().more >= 4


def test_an_error_is_reported_to_one_receive_after_what_arrived_before_it() -> None:
    a, b = tcp_pair()
    with Ring() as ring, a:
        assert ring.recv_group() == RECV_GROUP  # the buffers, registered at first use
        rx = _ringcore.Receiver()
        ring.submit(MultishotReceive(a.fileno(), rx, RECV_GROUP))
        settle(ring, expect=False)
        b.send(b"last words")
        settle(ring)  # delivered before the reset: a reset discards unread data
        b.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        b.close()  # linger 0: a reset
        settle(ring)
        assert rx.take(100) == b"last words"
        with pytest.raises(ConnectionResetError):
            rx.take(100)
        assert rx.take(100) is None  # reported once; a new receive asks the kernel


def test_large_arrivals_are_handed_over_and_never_written_again() -> None:
    # An arrival of at least half a buffer is handed out as the buffer's own
    # bytes object and a new one takes its place in the ring; a smaller one
    # is copied. Every chunk is kept until the end: had a handed-out buffer
    # stayed in the ring, a later arrival would have overwritten it.
    sizes = [RECV_BUFFER_SIZE, RECV_BUFFER_SIZE * 3 // 4, RECV_BUFFER_SIZE // 2 - 1, 1, 100]
    rng = random.Random(7)
    a, b = socket.socketpair()
    with Ring() as ring, a, b:
        assert ring.recv_group() == RECV_GROUP
        rx = _ringcore.Receiver(limit=1 << 20)
        ring.submit(MultishotReceive(a.fileno(), rx, RECV_GROUP))
        settle(ring, expect=False)
        sent: list[bytes] = []
        got: list[bytes] = []
        for i in range(3 * RECV_BUFFERS):  # every buffer is replaced several times
            payload = rng.randbytes(sizes[i % len(sizes)])
            b.sendall(payload)
            while rx.queued < len(payload):
                settle(ring)
            chunk = rx.take(RECV_BUFFER_SIZE)
            assert type(chunk) is bytes
            assert len(chunk) == len(payload)
            sent.append(payload)
            got.append(chunk)
        assert got == sent


def test_handed_over_buffers_are_freed_with_their_bytes() -> None:
    a, b = socket.socketpair()
    payload = bytes(RECV_BUFFER_SIZE)
    with Ring() as ring, a, b:
        assert ring.recv_group() == RECV_GROUP
        rx = _ringcore.Receiver(limit=1 << 20)
        ring.submit(MultishotReceive(a.fileno(), rx, RECV_GROUP))
        settle(ring, expect=False)

        def rounds(n: int) -> None:
            for _ in range(n):
                b.sendall(payload)
                while rx.queued < len(payload):
                    settle(ring)
                assert rx.take(len(payload)) == payload

        tracemalloc.start()
        try:
            rounds(2 * RECV_BUFFERS)  # every buffer replaced by a traced one
            before = tracemalloc.get_traced_memory()[0]
            rounds(4 * RECV_BUFFERS)
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        # 512 arrivals of 16 KiB handed over (8 MiB): what stays is the ring's
        # own buffers, replaced, not the handed-out ones.
        assert grown < 2 * RECV_BUFFER_SIZE


def test_receiver_misuse_is_refused_at_the_call() -> None:
    rx = _ringcore.Receiver()
    with pytest.raises(ValueError, match="limit"):
        _ringcore.Receiver(limit=0)
    with pytest.raises(ValueError, match="size"):
        rx.take(0)
    with pytest.raises(BufferError):
        rx.take_into(b"read-only")
    with pytest.raises(ValueError, match="at least one byte"):
        rx.take_into(bytearray(0))
    op = MultishotReceive(0, rx, RECV_GROUP)
    with pytest.raises(RuntimeError, match="armed already"):
        MultishotReceive(0, rx, RECV_GROUP)
    rx.op = None
    del op
    rx.close()
    with pytest.raises(RuntimeError, match="closed"):
        MultishotReceive(0, rx, RECV_GROUP)


# -- sockets under trio -----------------------------------------------------------------


async def test_the_queue_is_bounded_and_its_backpressure_reaches_the_sender(
    executor_path: str,
) -> None:
    """Nobody receives: past the limit the multishot is stopped, the socket
    buffers fill and the sender blocks; then every byte arrives, in order."""
    a, b = tcp_pair()
    data = random.Random(1).randbytes(16 << 20)
    with UringSocket(a) as sender, UringSocket(b) as receiver:
        sent = 0

        async def send_all() -> None:
            nonlocal sent
            view = memoryview(data)
            while sent < len(data):
                sent += await sender.send(view[sent : sent + 65536])

        async with trio.open_nursery() as nursery:
            # Arm the multishot: a first receive of one byte.
            nursery.start_soon(send_all)
            first = await receiver.recv(1)
            rx = receiver._rx
            assert rx is not None
            rx.limit = 256 * 1024
            # Let the sender run until it has to wait for room.
            await trio.testing.wait_all_tasks_blocked()
            for _ in range(50):
                await trio.sleep(0.01)
                await trio.testing.wait_all_tasks_blocked()
            assert rx.op is None  # stopped at the limit ...
            assert rx.queued <= rx.limit + RECV_BUFFERS * RECV_BUFFER_SIZE
            assert sent < len(data)  # ... and the sender waits for TCP's window
            got = bytearray(first)
            while len(got) < len(data):
                got += await receiver.recv(1 << 20)
        assert got == data


async def test_enobufs_under_1000_connections_never_fails_a_call() -> None:
    """Every connection receives at once: far more arrivals than provided
    buffers before one reap. Multishots end with ENOBUFS and are armed again
    by the next receive; every receive returns its message."""
    count = 1000
    pairs = [tcp_pair() for _ in range(count)]
    ring = ouring.current_ring()
    try:
        servers = [UringSocket(server) for _, server in pairs]
        got: list[bytes] = [b""] * count

        async def receive(i: int) -> None:
            got[i] = await servers[i].recv(100)

        before = ring.statistics()
        async with trio.open_nursery() as nursery:
            for i in range(count):
                nursery.start_soon(receive, i)
            await trio.testing.wait_all_tasks_blocked()  # every multishot is armed
            for i, (client, _) in enumerate(pairs):
                client.send(b"message %d" % i)  # no reap between: 1000 arrivals
        assert got == [b"message %d" % i for i in range(count)]
        after = ring.statistics()
        # More armings than connections: ENOBUFS ended some, which re-armed.
        assert after.submitted - before.submitted > count
        # Again, with the queues armed from the start this time.
        async with trio.open_nursery() as nursery:
            for i in range(count):
                nursery.start_soon(receive, i)
            await trio.testing.wait_all_tasks_blocked()
            for i, (client, _) in enumerate(pairs):
                client.send(b"again %d" % i)
        assert got == [b"again %d" % i for i in range(count)]
    finally:
        for client, server in pairs:
            client.close()
            server.close()


def test_a_queue_outlives_the_run_that_armed_it() -> None:
    """What arrived in one trio run is received, in order, in the next; on
    the thread ring (no provided buffers) too, before its one-shot receives."""
    a, b = tcp_pair()
    sock = UringSocket(b)

    async def first_run() -> bytes:
        for word in (b"one ", b"two ", b"three "):
            a.send(word)
        data = await sock.recv(2)  # the multishot takes all three; 2 bytes leave
        with trio.fail_after(5):
            while sock._rx is None or sock._rx.queued < 12:  # noqa: ASYNC110 - the kernel's CQEs
                await trio.sleep(0.001)
        return data

    async def next_run(*, fallback: str | None) -> bytes:
        async with ouring.open_ring(fallback=fallback):
            got = b""
            a.send(b"four")
            while len(got) < 16:
                got += await sock.recv(100)
            return got

    with sock:
        assert trio.run(first_run) == b"on"
        assert trio.run(lambda: next_run(fallback=None)) == b"e two three four"
        a.send(b"five ")
        assert trio.run(first_run) == b"fi"  # the multishot armed again
    a.close()
    a, b = tcp_pair()
    sock = UringSocket(b)
    with sock:
        assert trio.run(first_run) == b"on"
        got = trio.run(lambda: next_run(fallback="always-threads"))
        assert got == b"e two three four"
    a.close()


async def test_a_cancelled_waitall_receive_takes_nothing(executor_path: str) -> None:
    a, b = tcp_pair()
    with UringSocket(a) as left, UringSocket(b) as right:
        await left.send(b"12345")
        with trio.move_on_after(0.05) as scope:
            await right.recv(10, socket.MSG_WAITALL)
        assert scope.cancelled_caught
        await left.send(b"67890abc")
        assert await right.recv(10, socket.MSG_WAITALL) == b"1234567890"
        assert await right.recv(10, socket.MSG_PEEK) == b"abc"
        assert await right.recv(10) == b"abc"


async def test_close_and_detach_end_the_multishot(executor_path: str) -> None:
    a, b = tcp_pair()
    ring = ouring.current_ring()
    before = len(open_fds())
    with UringSocket(a) as left:
        right = UringSocket(b)
        await left.send(b"x")
        assert await right.recv(1) == b"x"
        rx = right._rx
        assert rx is not None
        assert rx.op is not None
        result: list[Any] = []

        async def parked() -> None:
            with pytest.raises(trio.ClosedResourceError):
                await right.recv(10)
            result.append("closed")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(parked)
            await trio.testing.wait_all_tasks_blocked()
            right.close()
        assert result == ["closed"]
        with trio.fail_after(5):
            await ouring.wait_all_ops_completed()
        assert ring.statistics().inflight == 0
        # detach: the multishot stops; the fd is the caller's, still open.
        c, d = tcp_pair()
        other = UringSocket(d)
        await other.send(b"")
        c.send(b"y")
        assert await other.recv(1) == b"y"
        fd = other.detach()
        with trio.fail_after(5):
            await ouring.wait_all_ops_completed()
        c.send(b"z")
        assert os.read(fd, 1) == b"z"  # the kernel's multishot no longer takes it
        os.close(fd)
        c.close()
    assert len(open_fds()) <= before


# -- the model: random receives and cancels against the byte stream -----------------------

Receive = Callable[[UringSocket, random.Random], Any]


async def test_random_receives_and_cancels_against_the_byte_stream(executor_path: str) -> None:
    """Every receive variant (recv, recv_into, receive_into, recvfrom(_into),
    recvmsg(_into), MSG_PEEK, MSG_WAITALL), each under a random deadline, in
    random order with a sender of random chunks: the bytes of the receives
    that returned, with what PEEK and WAITALL promise, are the sent stream."""
    cancelled = 0
    for seed in range(8):
        cancelled += await one_model_run(seed)
    assert cancelled > 100  # the deadlines did cut receives


async def one_model_run(seed: int) -> int:
    rng = random.Random(seed)
    expected = rng.randbytes(150_000)
    a, b = tcp_pair()
    got = bytearray()
    cancelled = 0
    with UringSocket(a) as sender_sock, UringSocket(b) as sock:

        async def sender() -> None:
            view = memoryview(expected)
            while view:
                sent = await sender_sock.send(view[: rng.choice((1, 7, 100, 1500, 20000))])
                view = view[sent:]
                await trio.sleep(rng.choice((0, 0, 1e-5)))

        async def one_call(how: int, size: int) -> bytes:
            if how == 0:
                return await sock.recv(size)
            if how == 1:
                buf = bytearray(size)
                return bytes(buf[: await sock.recv_into(buf)])
            if how == 2:
                buf, n = await sock.receive_into(bytearray(size))
                return bytes(buf[:n])
            if how == 3:
                data, address = await sock.recvfrom(size)
                assert address is None
                return data
            if how == 4:
                buf = bytearray(size)
                n, _ = await sock.recvfrom_into(buf)
                return bytes(buf[:n])
            if how == 5:
                data, ancdata, flags, _ = await sock.recvmsg(size)
                assert ancdata == []
                assert flags == 0
                return data
            bufs = [bytearray(size // 2 + 1), bytearray(size // 2 + 1)]
            n, _, _, _ = await sock.recvmsg_into(bufs)
            return bytes((bufs[0] + bufs[1])[:n])

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sender)
                while len(got) < len(expected):
                    size = rng.choice((1, 3, 100, 4096, 65536))
                    kind = rng.randrange(9)
                    with trio.move_on_after(rng.choice((0, 1e-6, 1e-5, 1e-4))) as scope:
                        if kind == 7:  # PEEK: what the next receive will start with
                            peeked = await sock.recv(size, socket.MSG_PEEK)
                            assert peeked
                            assert expected[len(got) : len(got) + len(peeked)] == peeked
                            continue
                        if kind == 8:  # WAITALL: all of it, unless the stream ends
                            size = min(size, len(expected) - len(got))
                            chunk = await sock.recv(size, socket.MSG_WAITALL)
                            assert len(chunk) == size
                        else:
                            chunk = await one_call(kind, size)
                        assert chunk
                        # At once, not at the end: a lost byte shows here.
                        assert chunk == expected[len(got) : len(got) + len(chunk)]
                        got += chunk
                    cancelled += scope.cancelled_caught
    assert got == expected
    with trio.fail_after(5):
        await ouring.wait_all_ops_completed()
    assert ouring.current_ring().statistics().inflight == 0
    return cancelled


async def test_recvmsg_into_takes_any_iterable_of_buffers() -> None:
    """A generator of buffers is read once, whether the queue serves the call
    or (an empty total) it falls through to a one-shot recvmsg."""
    a, b = tcp_pair()
    with UringSocket(a) as left, UringSocket(b) as right:
        await left.send(b"abcdef")
        first, second = bytearray(2), bytearray(10)
        n, ancdata, flags, address = await right.recvmsg_into(x for x in (first, second))
        assert (n, ancdata, flags, address) == (6, [], 0, None)
        assert (first, second[:4]) == (bytearray(b"ab"), bytearray(b"cdef"))
        with pytest.raises(TypeError):
            await right.recvmsg_into(x for x in (b"read-only",))
