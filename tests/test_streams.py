"""ouring.trio: socket streams and listeners with trio's interfaces, over real
sockets on 127.0.0.1 and socketpairs."""

from __future__ import annotations

import errno
import functools
import os
import random
import socket
import struct
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from conftest import tcp_pair

import ouring
import ouring.trio
from ouring.trio import (
    SocketListener,
    SocketStream,
    open_tcp_listeners,
    open_tcp_stream,
    open_unix_socket,
    serve_tcp,
)

SMALL_BUFFER = 4096  # SO_SNDBUF/SO_RCVBUF of clogged streams (the kernel doubles it)


def inflight() -> int:
    return ouring.current_ring().statistics().inflight


async def fill_stream(stream: SocketStream) -> None:
    """Send until the kernel's buffers are full (trio's own clogging helper)."""

    async def sender() -> None:
        while True:
            await stream.send_all(b"x" * 10000)

    async def waiter(nursery: trio.Nursery) -> None:
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        nursery.start_soon(waiter, nursery)


async def clog(left: SocketStream, right: SocketStream) -> tuple[SocketStream, SocketStream]:
    for stream in (left, right):
        stream.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFER)
        stream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)
    await fill_stream(left)
    await fill_stream(right)
    return left, right


# -- trio's conformance suite -----------------------------------------------------------


async def test_tcp_stream_passes_trios_half_closeable_stream_checks(executor_path: str) -> None:
    async def stream_maker() -> tuple[SocketStream, SocketStream]:
        a, b = tcp_pair()
        return SocketStream(a), SocketStream(b)

    async def clogged_stream_maker() -> tuple[SocketStream, SocketStream]:
        return await clog(*await stream_maker())

    await trio.testing.check_half_closeable_stream(stream_maker, clogged_stream_maker)
    assert inflight() == 0


async def test_socketpair_stream_passes_trios_half_closeable_stream_checks() -> None:
    async def stream_maker() -> tuple[SocketStream, SocketStream]:
        a, b = socket.socketpair()
        return SocketStream(a), SocketStream(b)

    async def clogged_stream_maker() -> tuple[SocketStream, SocketStream]:
        return await clog(*await stream_maker())

    await trio.testing.check_half_closeable_stream(stream_maker, clogged_stream_maker)
    assert inflight() == 0


async def test_trio_socket_objects_are_accepted_too() -> None:
    a, b = trio.socket.socketpair()
    left, right = SocketStream(a), SocketStream(b)
    assert left.socket is a
    async with left, right:
        await left.send_all(b"via a trio socket")
        assert await right.receive_some() == b"via a trio socket"
    assert a.fileno() == -1
    assert b.fileno() == -1


# -- construction and socket options ----------------------------------------------------


async def test_constructors_validate_their_socket() -> None:
    with pytest.raises(TypeError, match="socket"):
        SocketStream(3)  # type: ignore[arg-type]
    with socket.socket(type=socket.SOCK_DGRAM) as dgram:
        with pytest.raises(ValueError, match=r"^SocketStream requires a SOCK_STREAM socket$"):
            SocketStream(dgram)
        with pytest.raises(ValueError, match="SOCK_STREAM"):
            SocketListener(dgram)
    with (
        socket.socket() as unbound,
        pytest.raises(ValueError, match=r"^SocketListener requires a listening socket$"),
    ):
        SocketListener(unbound)
    with pytest.raises(TypeError):
        SocketListener(object())  # type: ignore[arg-type]


async def test_tcp_nodelay_is_on_and_options_can_be_changed() -> None:
    a, b = tcp_pair()
    async with SocketStream(a) as s, SocketStream(b):
        assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, False)
        assert not s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        raw = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 4)
        assert isinstance(raw, bytes)
        assert struct.unpack("i", raw) == (0,)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, struct.pack("i", 1))
        assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        notsent_lowat = getattr(socket, "TCP_NOTSENT_LOWAT", 25)
        assert s.getsockopt(socket.IPPROTO_TCP, notsent_lowat) == 2**14
        with pytest.raises(TypeError, match="must not be None"):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, None)  # type: ignore[call-overload]
        with pytest.raises(TypeError, match="must be None"):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1, 4)  # type: ignore[call-overload]


async def test_unix_streams_skip_the_tcp_options() -> None:
    a, b = socket.socketpair()
    async with SocketStream(a) as s, SocketStream(b):
        with pytest.raises(OSError, match="not supported"):
            s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


# -- receiving --------------------------------------------------------------------------


async def test_receive_into_returns_the_same_buffer_and_the_count() -> None:
    a, b = socket.socketpair()
    async with SocketStream(a) as left, SocketStream(b) as right:
        buf = bytearray(8)
        await left.send_all(b"owned")
        got, n = await right.receive_into(buf)
        assert got is buf
        assert (n, bytes(buf[:n])) == (5, b"owned")

        view = memoryview(buf)[2:4]  # a slice: at most its 2 bytes
        await left.send_all(b"xyz")
        got_view, n = await right.receive_into(view)
        assert got_view is view
        assert n == 2
        assert buf[:5] == b"owxyd"
        view.release()
        got, n = await right.receive_into(buf)
        assert buf[:n] == b"z"

        with pytest.raises(ValueError, match="at least one byte"):
            await right.receive_into(bytearray())
        with pytest.raises(TypeError, match="writable"):
            await right.receive_into(b"read-only")
        buf.extend(b"!")  # every lease was given back

        await left.send_eof()
        assert await right.receive_into(buf) == (buf, 0)


async def test_receive_some_sizes() -> None:
    a, b = socket.socketpair()
    async with SocketStream(a) as left, SocketStream(b) as right:
        await left.send_all(b"abcdef")
        assert await right.receive_some(2) == b"ab"
        chunk = await right.receive_some()
        assert chunk == b"cdef"
        assert type(chunk) is bytes
        big = os.urandom(100_000)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(left.send_all, big)
            got = b""
            while len(got) < len(big):
                got += await right.receive_some(200_000)  # beyond the stream's own buffer
        assert got == big
        with pytest.raises(TypeError):
            await right.receive_some(1.5)  # type: ignore[arg-type]


async def test_receive_some_adapts_its_buffer_to_what_arrives() -> None:
    """An idle receive holds a small buffer; a bulk transfer grows it to
    max_bytes within a few receives; never more than max_bytes."""
    from ouring._trio_socket import INITIAL_RECEIVE_SIZE, MIN_RECEIVE_SIZE

    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    async with SocketStream(a) as left, SocketStream(b) as right:
        big = os.urandom(1 << 18)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(left.send_all, big)
            sizes: list[int] = []
            got = b""
            while len(got) < len(big):
                chunk = await right.receive_some(32768)
                sizes.append(len(chunk))
                got += chunk
        assert got == big
        assert max(sizes) == 32768  # grown to max_bytes, and no further
        assert sizes[0] <= INITIAL_RECEIVE_SIZE
        for _ in range(4):  # small messages shrink it back
            await left.send_all(b"x")
            assert await right.receive_some() == b"x"
        assert right._recv_size == MIN_RECEIVE_SIZE


async def test_concurrent_receives_are_refused() -> None:
    a, b = socket.socketpair()
    async with SocketStream(a) as left, SocketStream(b) as right, trio.open_nursery() as nursery:
        nursery.start_soon(right.receive_some)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await right.receive_into(bytearray(4))
        with pytest.raises(trio.BusyResourceError):
            await right.receive_some()
        await left.send_all(b"x")


async def test_send_all_of_a_large_buffer_leaves_it_resizable() -> None:
    big = 10_000_000
    a, b = socket.socketpair()
    async with SocketStream(a) as left, SocketStream(b) as right:

        async def sender() -> None:
            data = bytearray(b"\1") * big
            await left.send_all(data)
            data += bytes(big)  # no export of it is left behind

        async def receiver() -> None:
            await trio.testing.wait_all_tasks_blocked()
            total = 0
            while total < big:
                chunk = await right.receive_some(big)
                assert chunk.count(1) == len(chunk)
                total += len(chunk)
            assert total == big

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender)
            nursery.start_soon(receiver)
        await left.send_all(b"e")
        assert await right.receive_some(10) == b"e"


async def test_peer_reset_is_a_broken_resource() -> None:
    a, b = tcp_pair()
    b.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    async with SocketStream(a) as s:
        b.close()  # linger 0: RST

        async def send_forever() -> None:
            while True:
                await s.send_all(b"x" * 1000)

        with pytest.raises(trio.BrokenResourceError) as info:
            await send_forever()
        assert isinstance(info.value.__cause__, OSError)
        assert info.value.__cause__.errno in (errno.ECONNRESET, errno.EPIPE)


# -- closing ----------------------------------------------------------------------------


async def test_closing_wakes_a_blocked_receiver_and_a_reused_fd_gets_no_old_data() -> None:
    a, b = socket.socketpair()
    stream = SocketStream(a)
    old_fd = a.fileno()
    outcome: list[object] = []

    async def receiver() -> None:
        try:
            outcome.append(await stream.receive_some())
        except trio.ClosedResourceError as exc:
            outcome.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receiver)
        await trio.testing.wait_all_tasks_blocked()
        assert inflight() == 1  # the recv is in the kernel
        with trio.testing.assert_checkpoints():
            await stream.aclose()
    assert len(outcome) == 1
    assert isinstance(outcome[0], trio.ClosedResourceError)
    assert inflight() == 0  # the old recv is over: nothing can read for it any more
    assert a.fileno() == -1

    c, d = socket.socketpair()
    with b:
        assert c.fileno() == old_fd  # the lowest free fd number: the old one
        with pytest.raises(OSError, match="Broken pipe"):
            b.send(b"OLD")  # the old socket is gone, not just its fd
        async with SocketStream(c) as new, SocketStream(d) as peer:
            await peer.send_all(b"NEW")
            assert await new.receive_some() == b"NEW"
            with pytest.raises(trio.ClosedResourceError):
                await stream.receive_some()


@pytest.mark.io_uring_only  # the fallback closes the old socket: its peer gets EPIPE
async def test_a_reused_fd_number_never_sees_data_meant_for_a_closed_streams_receive() -> None:
    """The hard case: the fd number is reused, and the old peer sends, before
    the cancel request even reached the kernel. The kernel's recv holds the old
    file, not the number: the old data goes to the old receiver (or nowhere),
    never to the new socket."""
    for _ in range(20):
        a, b = socket.socketpair()
        stream = SocketStream(a)
        old_fd = a.fileno()
        outcome: list[object] = []

        async def receiver(stream: SocketStream = stream, outcome: list[object] = outcome) -> None:
            try:
                outcome.append(await stream.receive_some())
            except trio.ClosedResourceError as exc:
                outcome.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(receiver)
            await trio.testing.wait_all_tasks_blocked()
            stream._close()  # aclose() without its checkpoint: the cancel is not yet sent
            c, d = socket.socketpair()
            assert c.fileno() == old_fd
            with b:
                b.send(b"OLD")  # still accepted: the kernel's recv keeps the old socket
            d.send(b"NEW")
            async with SocketStream(c) as new, SocketStream(d):
                assert await new.receive_some() == b"NEW"
        assert len(outcome) == 1
        assert outcome[0] == b"OLD" or isinstance(outcome[0], trio.ClosedResourceError)
        assert inflight() == 0


async def test_closing_wakes_a_blocked_sender() -> None:
    a, b = socket.socketpair()
    left, right = await clog(SocketStream(a), SocketStream(b))

    async def close_soon() -> None:
        await trio.testing.wait_all_tasks_blocked()
        await left.aclose()

    async with right, trio.open_nursery() as nursery:
        nursery.start_soon(close_soon)
        with pytest.raises(trio.ClosedResourceError):
            await left.send_all(b"y" * 100_000)
    assert inflight() == 0


async def test_aclose_closes_even_when_cancelled() -> None:
    a, b = socket.socketpair()
    stream = SocketStream(a)
    with trio.CancelScope() as scope:
        scope.cancel()
        await stream.aclose()
    assert scope.cancelled_caught
    assert a.fileno() == -1
    b.close()
    await stream.aclose()  # idempotent
    with pytest.raises(trio.ClosedResourceError):
        await stream.receive_into(bytearray(1))
    with pytest.raises(trio.ClosedResourceError):
        await stream.send_eof()


# -- cancellation never loses bytes -----------------------------------------------------


def numbered(count: int) -> bytes:
    return b"".join(struct.pack(">I", i) for i in range(count))


@pytest.mark.parametrize("kind", ["unix", "tcp"])
async def test_cancelled_receives_never_lose_bytes(kind: str) -> None:
    """Receives under tiny deadlines while a sender streams a numbered pattern:
    every receive is withdrawn before the kernel sees it, cancelled in the
    kernel, or completed despite the cancel (and then returned). The bytes
    reassemble exactly."""
    rng = random.Random(7)
    expected = numbered(1_000_000)
    a, b = socket.socketpair() if kind == "unix" else tcp_pair()
    got = bytearray()
    rounds = cancelled = won_the_race = 0
    async with SocketStream(a) as sender_stream, SocketStream(b) as receiver_stream:

        async def sender() -> None:
            view = memoryview(expected)
            while view:
                size = rng.choice((1, 3, 64, 700, 4096))
                await sender_stream.send_all(view[:size])
                view = view[size:]
                await trio.sleep(rng.choice((0, 0, 1e-5, 5e-5)))
            await sender_stream.send_eof()  # a lost chunk: the receiver meets the end early

        with trio.fail_after(30):  # a lost chunk would leave the receiver waiting forever
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sender)
                while len(got) < len(expected):
                    rounds += 1
                    deadline = rng.choice((0, 1e-6, 1e-5, 3e-5, 1e-4, 1e-3))
                    max_bytes = rng.choice((None, 1, 5, 100, 1000))
                    with trio.move_on_after(deadline) as scope:
                        if rng.random() < 0.5:
                            chunk = await receiver_stream.receive_some(max_bytes)
                        else:
                            buf, n = await receiver_stream.receive_into(bytearray(max_bytes or 512))
                            chunk = bytes(buf[:n])
                        assert chunk, f"end of stream after {len(got)} of {len(expected)} bytes"
                        got += chunk
                        if scope.cancel_called:
                            won_the_race += 1  # returned although its cancel was requested
                    cancelled += scope.cancelled_caught
    assert got == expected
    assert rounds > 5000
    assert cancelled > 100
    assert inflight() == 0
    print(f"{rounds} rounds, {cancelled} cancelled, {won_the_race} completed despite a cancel")


# -- open_tcp_stream --------------------------------------------------------------------


class FakeResolver(trio.abc.HostnameResolver):
    """Answers one name with the given socket addresses, in order."""

    def __init__(self, name: str, sockaddrs: list[tuple[str, int]]) -> None:
        self.name = name.encode()
        self.sockaddrs = sockaddrs

    async def getaddrinfo(
        self,
        host: bytes | None,
        port: bytes | str | int | None,
        family: int = 0,
        type: int = 0,  # noqa: A002 - the interface's name
        proto: int = 0,
        flags: int = 0,
    ) -> Any:
        await trio.lowlevel.checkpoint()
        assert host == self.name
        return [
            (
                socket.AF_INET6 if ":" in addr[0] else socket.AF_INET,
                socket.SOCK_STREAM,
                socket.IPPROTO_TCP,
                "",
                addr,
            )
            for addr in self.sockaddrs
        ]

    async def getnameinfo(self, sockaddr: Any, flags: int) -> tuple[str, str]:
        raise NotImplementedError


@contextmanager
def resolving(name: str, sockaddrs: list[tuple[str, int]]) -> Iterator[None]:
    previous = trio.socket.set_custom_hostname_resolver(FakeResolver(name, sockaddrs))
    try:
        yield
    finally:
        trio.socket.set_custom_hostname_resolver(previous)


@contextmanager
def refused_port() -> Iterator[int]:
    """A port where nothing listens (bound, not listening: refuses)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


@asynccontextmanager
async def listening() -> AsyncIterator[trio.SocketListener]:
    (listener,) = await open_tcp_listeners(0, host="127.0.0.1")
    async with listener:
        yield listener


async def test_open_tcp_stream_falls_back_in_order_when_the_first_address_refuses() -> None:
    async with listening() as listener:
        port = listener.socket.getsockname()[1]
        with (
            refused_port() as dead,
            resolving("multi.test", [("127.0.0.1", dead), ("127.0.0.1", port)]),
        ):
            # happy_eyeballs_delay is long: the fallback is the refusal's doing
            with trio.fail_after(5):
                client = await open_tcp_stream("multi.test", port, happy_eyeballs_delay=60)
        async with client, await listener.accept() as server:
            assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            assert server.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            assert client.socket.getpeername() == ("127.0.0.1", port)
            await client.send_all(b"ping")
            assert await server.receive_some() == b"ping"


async def test_happy_eyeballs_starts_the_next_attempt_while_the_first_hangs() -> None:
    # A listener whose accept queue is full drops SYNs: a connect to it hangs.
    with socket.socket() as full:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        fillers = []
        try:
            for _ in range(3):
                filler = socket.socket()
                fillers.append(filler)
                filler.setblocking(False)
                with suppress(BlockingIOError):
                    filler.connect(full.getsockname())
            async with listening() as listener:
                good = listener.socket.getsockname()[1]
                hanging = full.getsockname()[1]
                with resolving("slow.test", [("127.0.0.1", hanging), ("127.0.0.1", good)]):
                    start = trio.current_time()
                    with trio.fail_after(5):
                        client = await open_tcp_stream("slow.test", good, happy_eyeballs_delay=0.05)
                    elapsed = trio.current_time() - start
                async with client, await listener.accept():
                    assert client.socket.getpeername() == ("127.0.0.1", good)
                assert 0.05 <= elapsed < 1  # the hanging attempt was abandoned, not waited out
                # Its connect was cancelled; the listener's multishot accept
                # (where the ring has one) stays armed until it closes.
                armed = ouring.current_ring().features()["multishot_accept"]
                assert inflight() == int(armed)
        finally:
            for filler in fillers:
                filler.close()


async def test_open_tcp_stream_reports_every_failed_attempt() -> None:
    with (
        refused_port() as p1,
        refused_port() as p2,
        resolving("dead.test", [("127.0.0.1", p1), ("127.0.0.1", p2)]),
        pytest.raises(OSError, match=r"^all attempts to connect to dead\.test:80 failed$") as info,
    ):
        await open_tcp_stream("dead.test", 80)
    group = info.value.__cause__
    assert isinstance(group, ExceptionGroup)
    assert [getattr(exc, "errno", None) for exc in group.exceptions] == [errno.ECONNREFUSED] * 2
    with pytest.raises(ValueError, match="host must be str or bytes"):
        await open_tcp_stream(None, 80)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="port must be int"):
        await open_tcp_stream("localhost", "80")  # type: ignore[arg-type]


async def test_open_tcp_stream_binds_the_local_address() -> None:
    async with listening() as listener:
        port = listener.socket.getsockname()[1]
        async with await open_tcp_stream("127.0.0.1", port, local_address="127.0.0.2") as client:
            assert client.socket.getsockname()[0] == "127.0.0.2"
            async with await listener.accept() as server:
                await server.send_all(b"hello")
                assert await client.receive_some() == b"hello"
        with pytest.raises(OSError, match="all attempts"):
            await open_tcp_stream("127.0.0.1", port, local_address="::1")


# -- listeners and serve_tcp ------------------------------------------------------------


async def test_open_tcp_listeners_on_port_0() -> None:
    listeners = await open_tcp_listeners(0, host="127.0.0.1", backlog=5)
    assert len(listeners) == 1
    async with listeners[0] as listener:
        sock = listener.socket
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        host, port = sock.getsockname()
        assert host == "127.0.0.1"
        assert port != 0
    assert sock.fileno() == -1
    with pytest.raises(TypeError):
        await open_tcp_listeners("80")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await open_tcp_listeners(0, backlog="5")  # type: ignore[arg-type]


async def test_wildcard_listeners_cover_both_families() -> None:
    listeners = await open_tcp_listeners(0)
    try:
        families = {listener.socket.family for listener in listeners}
        assert socket.AF_INET in families
        for listener in listeners:
            if listener.socket.family == socket.AF_INET6:
                assert listener.socket.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
    finally:
        for listener in listeners:
            await listener.aclose()


async def test_serve_tcp_echoes_and_hands_out_its_listeners() -> None:
    async def echo(stream: trio.SocketStream) -> None:
        assert isinstance(stream.socket, ouring.trio.UringSocket)
        while data := await stream.receive_some():
            await stream.send_all(data)

    async with trio.open_nursery() as nursery:
        listeners: list[trio.SocketListener] = await nursery.start(
            functools.partial(serve_tcp, echo, 0, host="127.0.0.1")
        )
        # trio's own final classes, over ouring sockets
        assert all(isinstance(listener, trio.SocketListener) for listener in listeners)
        assert all(isinstance(listener.socket, ouring.trio.UringSocket) for listener in listeners)
        port = listeners[0].socket.getsockname()[1]

        async def client(i: int) -> None:
            async with await open_tcp_stream("127.0.0.1", port) as stream:
                message = f"message {i} ".encode() * (i + 1)
                await stream.send_all(message)
                await stream.send_eof()
                got = b""
                while chunk := await stream.receive_some():
                    got += chunk
                assert got == message

        async with trio.open_nursery() as clients:
            for i in range(20):
                clients.start_soon(client, i)
        nursery.cancel_scope.cancel()
    assert listeners[0].socket.fileno() == -1  # serve_listeners closed it
    assert inflight() == 0


async def test_closing_a_listener_wakes_its_accept() -> None:
    async with listening() as listener:

        async def accept_expecting_closed() -> None:
            with pytest.raises(trio.ClosedResourceError):
                await listener.accept()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(accept_expecting_closed)
            await trio.testing.wait_all_tasks_blocked()
            assert inflight() == 1
            with pytest.raises(trio.BusyResourceError):
                await listener.accept()
            await listener.aclose()
        with pytest.raises(trio.ClosedResourceError):
            await listener.accept()
    assert inflight() == 0


async def test_listener_over_a_trio_socket() -> None:
    sock = trio.socket.socket()
    await sock.bind(("127.0.0.1", 0))
    sock.listen()
    async with SocketListener(sock) as listener:
        assert listener.socket is sock
        with socket.create_connection(sock.getsockname()) as client:
            async with await listener.accept() as server:
                assert server.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
                client.sendall(b"hi")
                assert await server.receive_some() == b"hi"
    assert sock.fileno() == -1


# -- unix sockets -----------------------------------------------------------------------


async def test_open_unix_socket(tmp_path: Path) -> None:
    path = tmp_path / "sock"
    with socket.socket(socket.AF_UNIX) as server_sock:
        server_sock.bind(str(path))
        server_sock.listen()
        async with (
            SocketListener(server_sock) as listener,
            await open_unix_socket(path) as client,
            await listener.accept() as server,
        ):
            await client.send_all(b"over a unix socket")
            await client.send_eof()
            assert await server.receive_some() == b"over a unix socket"
            assert await server.receive_some() == b""
    with pytest.raises(FileNotFoundError):
        await open_unix_socket(tmp_path / "missing")


async def test_cancel_that_catches_a_receive_before_the_kernel_saw_it() -> None:
    """A scope cancelled in the same scheduler pass in which its task queued a
    receive (how a server's shutdown meets its busy handlers): the receive is
    withdrawn and raises Cancelled; nothing else happens."""
    pairs = [socket.socketpair() for _ in range(2)]
    streams = [(SocketStream(a), SocketStream(b)) for a, b in pairs]
    try:
        for _ in range(100):
            scope = trio.CancelScope()

            async def first() -> None:
                await streams[0][0].receive_some()  # takes the pass's inline submission

            async def second(scope: trio.CancelScope = scope) -> None:
                with scope:
                    await streams[1][0].receive_some()  # queued: the kernel has not seen it

            async def canceller(scope: trio.CancelScope = scope) -> None:
                scope.cancel()
                await streams[0][1].send_all(b"x")

            with trio.fail_after(5):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(first)
                    nursery.start_soon(second)
                    nursery.start_soon(canceller)
        assert inflight() == 0
    finally:
        for left, right in streams:
            await left.aclose()
            await right.aclose()
