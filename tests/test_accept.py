"""Multishot accept (ouring._accept.Acceptor) under UringSocket.accept,
trio.SocketListener and ouring's own SocketListener: real listeners on
127.0.0.1, real connections, fds counted in /proc/self/fd."""

from __future__ import annotations

import errno
import os
import random
import select
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import trio
import trio.testing

import ouring
import ouring._accept
import ouring.trio
from ouring._accept import Acceptor
from ouring.trio import UringSocket

pytestmark = pytest.mark.io_uring_only


def open_fds() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/fd")}


def inflight() -> int:
    return ouring.current_ring().statistics().inflight


@pytest.fixture(autouse=True)
def _needs_multishot_accept() -> None:
    # A fresh ring, only to ask the kernel.
    with ouring.Ring(1) as ring:
        if not ring.features()["multishot_accept"]:
            pytest.skip("this kernel has no multishot accept (Linux 5.19)")


async def until(condition: Callable[[], bool]) -> None:
    """Wait for ``condition``, which the ring's completions make true: each
    round blocks in select until the ring fd says a CQE was posted, then lets
    one scheduler pass reap it."""
    ring = ouring.current_ring()
    with trio.fail_after(10):
        while not condition():
            select.select([ring.wait_fd], [], [], 0.5)
            await trio.lowlevel.checkpoint()


async def settled() -> None:
    """Until what closing asked to cancel has its final CQE."""
    with trio.fail_after(10):
        await ouring.wait_all_ops_completed()


@contextmanager
def uring_listener(backlog: int = 128) -> Iterator[UringSocket]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(backlog)
    with UringSocket(sock) as listener:
        yield listener


def acceptor_of(listener: UringSocket | ouring.trio.SocketListener) -> Acceptor:
    acceptor = listener._acceptor
    assert acceptor is not None
    return acceptor


async def test_one_multishot_accept_serves_every_connection() -> None:
    """The first accept arms one multishot accept; connections that arrive
    while nobody waits are queued, and later accepts take them without
    submitting anything. The address is the peer's, as accept(2) gives it."""
    ring = ouring.current_ring()
    with uring_listener() as listener:
        address = listener.getsockname()
        first = socket.create_connection(address)
        submitted = ring.statistics().submitted
        conn, peer = await listener.accept()
        assert ring.statistics().submitted == submitted + 1
        assert peer == first.getsockname()
        clients = [socket.create_connection(address) for _ in range(5)]
        await until(lambda: acceptor_of(listener).queued == 5)
        got = []
        for _ in clients:
            with trio.testing.assert_checkpoints():
                got.append(await listener.accept())
        assert ring.statistics().submitted == submitted + 1  # still the same multishot
        assert acceptor_of(listener).armed
        assert [peer for _, peer in got] == [c.getsockname() for c in clients]
        for accepted, _ in got:
            await accepted.send(b"hi")
            accepted.close()
        assert [c.recv(2) for c in clients] == [b"hi"] * 5
        for c in [first, *clients]:
            c.close()
        conn.close()
    await settled()
    assert inflight() == 0


async def test_a_cancelled_accept_takes_nothing() -> None:
    """Cancelled while parked: nothing was taken, and the connection the
    kernel accepts after the cancel is the next accept's. Pre-cancelled with
    connections queued: Cancelled, and the queue is untouched."""
    with uring_listener() as listener:
        address = listener.getsockname()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(listener.accept)
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
        client = socket.create_connection(address)
        await until(lambda: acceptor_of(listener).queued == 1)
        with trio.CancelScope() as scope:
            scope.cancel()
            with pytest.raises(trio.Cancelled):
                await listener.accept()
        assert acceptor_of(listener).queued == 1
        conn, peer = await listener.accept()
        assert peer == client.getsockname()
        conn.close()
        client.close()


async def test_a_second_accept_while_one_waits_is_busy() -> None:
    with uring_listener() as listener:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(listener.accept)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.BusyResourceError):
                await listener.accept()
            nursery.cancel_scope.cancel()


async def test_closing_the_listener_closes_its_queued_connections() -> None:
    assert inflight() == 0  # the run's ring (and its fds) exist from here on
    before = open_fds()
    listener = UringSocket(socket.socket())
    await listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    address = listener.getsockname()
    first = socket.create_connection(address)
    conn, _ = await listener.accept()
    conn.close()
    clients = [socket.create_connection(address) for _ in range(10)]
    await until(lambda: acceptor_of(listener).queued == 10)
    assert len(open_fds() - before) == 1 + 11 + 10  # listener, clients, queued connections
    listener.close()
    await settled()
    assert inflight() == 0
    # The server side of each queued connection is closed: each client sees EOF.
    for client in clients:
        client.settimeout(10)
        assert client.recv(10) == b""
        client.close()
    first.close()
    assert open_fds() == before


async def test_close_wakes_a_parked_accept_and_later_connections_are_not_accepted() -> None:
    listener = UringSocket(socket.socket())
    await listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    address = listener.getsockname()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:

            async def accept() -> None:
                with pytest.raises(trio.ClosedResourceError):
                    await listener.accept()

            nursery.start_soon(accept)
            await trio.testing.wait_all_tasks_blocked()
            listener.close()
    await settled()
    assert inflight() == 0
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address).close()


async def test_close_from_another_thread_wakes_a_parked_accept() -> None:
    listener = UringSocket(socket.socket())
    await listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    result: list[BaseException] = []

    async def accept() -> None:
        try:
            await listener.accept()
        except trio.ClosedResourceError as exc:
            result.append(exc)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(accept)
            await trio.testing.wait_all_tasks_blocked()
            await trio.to_thread.run_sync(listener.close)
    assert [type(exc) for exc in result] == [trio.ClosedResourceError]
    assert listener.fileno() == -1
    await settled()
    assert inflight() == 0


async def test_backpressure_the_queue_bound_stops_accepting_until_it_drains(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At the bound the multishot is cancelled: connections then wait in the
    kernel's backlog, not in ouring's queue. The accept that takes the queue
    down to half the bound arms it again, and nothing is lost."""
    bound = 4
    monkeypatch.setattr(ouring._accept, "ACCEPT_QUEUE_BOUND", bound)
    with uring_listener() as listener:
        address = listener.getsockname()
        clients = [socket.create_connection(address)]
        conn, _ = await listener.accept()
        conn.close()
        acceptor = acceptor_of(listener)
        assert acceptor.bound == bound
        # One at a time, so that every CQE is seen before the next connection.
        for queued in range(1, bound + 1):
            clients.append(socket.create_connection(address))
            await until(lambda queued=queued: acceptor.queued == queued)  # type: ignore[misc]
        await until(lambda: not acceptor.armed)  # the cancel's final CQE came
        later = [socket.create_connection(address) for _ in range(6)]
        clients += later
        # Handshaken, and waiting in the backlog: the kernel has no accept armed.
        assert listener.is_readable()
        await ouring.current_ring().nop()  # a round trip through the kernel
        assert acceptor.queued == bound
        assert not acceptor.armed
        peers = []
        for _ in range(bound // 2 - 1):
            accepted, peer = await listener.accept()
            accepted.close()
            peers.append(peer)
            assert not acceptor.armed  # still above half the bound
        accepted, peer = await listener.accept()  # down to half: armed again
        accepted.close()
        peers.append(peer)
        assert acceptor.armed
        # The rest, in order, including the six from the backlog.
        while len(peers) < len(clients) - 1:
            with trio.fail_after(10):
                accepted, peer = await listener.accept()
            accepted.close()
            peers.append(peer)
        assert peers == [c.getsockname() for c in clients[1:]]
        assert not listener.is_readable()
        for c in clients:
            c.close()


async def test_torture_random_cancels_over_1000_connections_leak_no_fd() -> None:
    """1,000 connections, accepts cancelled at random moments (before the
    call, while parked, as a connection arrives), the listener closed with
    connections queued at the end: every connection is accepted exactly once
    or closed with the listener, and /proc/self/fd ends as it started."""
    rng = random.Random(16)
    assert inflight() == 0
    before = open_fds()
    total = 1000
    listener = UringSocket(socket.socket())
    await listener.bind(("127.0.0.1", 0))
    listener.listen(total)
    address = listener.getsockname()
    expected: list[Any] = []
    peers: list[Any] = []
    cancelled = 0
    while len(expected) < total:
        for _ in range(rng.choice((0, 1, 1, 2, 5))):
            if len(expected) < total:
                client = socket.create_connection(address)
                expected.append(client.getsockname())
                client.close()  # the server side stays queued (it got a FIN)
        with trio.move_on_after(rng.choice((0, 0, 1e-6, 1e-5, 1e-4))) as scope:
            conn, peer = await listener.accept()
            conn.close()
            peers.append(peer)
        cancelled += scope.cancelled_caught
    left = total - len(peers)
    assert left > 0
    # Some of the rest are queued, some still in the kernel's backlog: close.
    listener.close()
    await settled()
    assert inflight() == 0
    assert len(set(peers)) == len(peers)  # none twice
    assert set(peers) <= set(expected)
    assert peers == sorted(peers, key=expected.index)  # in arrival order
    assert cancelled > 100
    assert open_fds() == before


async def test_an_error_ends_the_multishot_and_the_next_accept_arms_again() -> None:
    """accept on a socket that does not listen: the kernel ends the multishot
    with EINVAL, which the accept raises (as accept(2) does); once listening,
    the next accept arms a new multishot."""
    with UringSocket(socket.socket()) as sock:
        await sock.bind(("127.0.0.1", 0))
        with pytest.raises(OSError, match="Invalid argument") as info:
            await sock.accept()
        assert info.value.errno == errno.EINVAL
        assert not acceptor_of(sock).armed
        sock.listen(4)
        client = socket.create_connection(sock.getsockname())
        conn, peer = await sock.accept()
        assert peer == client.getsockname()
        conn.close()
        client.close()


async def test_without_multishot_each_accept_is_one_operation() -> None:
    """Where the ring has no multishot accept, accept is one one-shot accept
    per call, with the address from the kernel."""
    ring = ouring.current_ring()
    ring._features["multishot_accept"] = False
    try:
        with uring_listener() as listener:
            client = socket.create_connection(listener.getsockname())
            completed = ring.statistics().completed
            conn, peer = await listener.accept()
            assert ring.statistics().completed == completed + 1
            assert peer == client.getsockname()
            assert listener._acceptor is None
            conn.close()
            client.close()
        assert inflight() == 0
    finally:
        ring._features["multishot_accept"] = True


@pytest.mark.parametrize("kind", ["trio", "ouring"])
async def test_the_listeners_use_it_and_close_queued_connections(kind: str) -> None:
    """trio.SocketListener over a UringSocket, and ouring's own
    SocketListener: connections queued, streams handed out, the queue closed
    with the listener."""
    assert inflight() == 0  # the run's ring (and its fds) exist from here on
    before = open_fds()
    listeners = await ouring.trio.open_tcp_listeners(0, host="127.0.0.1")
    trio_listener = listeners[0]
    address = trio_listener.socket.getsockname()
    listener: trio.SocketListener | ouring.trio.SocketListener
    if kind == "trio":
        listener = trio_listener
        uring = trio_listener.socket
        assert isinstance(uring, UringSocket)
        holder: UringSocket | ouring.trio.SocketListener = uring
    else:
        stdlib = socket.socket(fileno=trio_listener.socket.detach())
        listener = holder = ouring.trio.SocketListener(stdlib)
    clients = [socket.create_connection(address) for _ in range(3)]
    async with await listener.accept() as stream:
        await stream.send_all(b"one")
        assert clients[0].recv(3) == b"one"
    await until(lambda: holder._acceptor is not None and holder._acceptor.queued == 2)
    await listener.aclose()
    await settled()
    assert inflight() == 0
    for client in clients[1:]:
        client.settimeout(10)
        assert client.recv(10) == b""
    for client in clients:
        client.close()
    assert open_fds() == before
