"""``ouring.asyncio``: asyncio transports, servers and streams over the ring,
on the default loop and on uvloop, against real sockets on 127.0.0.1 and
Unix sockets in tmp_path."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
import socket
import ssl
import struct
import threading
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import trustme
from conftest import open_fds

import ouring
import ouring.asyncio as oa

uvloop = pytest.importorskip("uvloop")

LOOPS = ["default", "uvloop"]


@pytest.fixture(params=LOOPS)
def run(request: pytest.FixtureRequest) -> Callable[[Callable[[], Awaitable[Any]]], Any]:
    def runner(main: Callable[[], Awaitable[Any]]) -> Any:
        if request.param == "uvloop":
            return uvloop.run(main())
        return asyncio.run(main())  # type: ignore[arg-type]

    return runner


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.write_eof()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def echo_server() -> tuple[oa.RingServer, int]:
    server = await oa.start_server(echo, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def test_echo_round_trips_and_large_transfers_are_byte_exact(run: Any) -> None:
    async def main() -> None:
        server, port = await echo_server()
        async with server:
            reader, writer = await oa.open_connection("127.0.0.1", port)
            for size in (1, 64, 16384, 100_000):
                payload = random.randbytes(size)
                writer.write(payload)
                assert await reader.readexactly(size) == payload
            payload = random.randbytes(8 << 20)

            async def send() -> None:
                for i in range(0, len(payload), 65536):
                    writer.write(payload[i : i + 65536])
                    await writer.drain()
                writer.write_eof()

            _, got = await asyncio.gather(send(), reader.read(-1))
            assert got == payload
            assert reader.at_eof()
            writer.close()
            await writer.wait_closed()

    run(main)


def test_readuntil_readline_and_their_limits(run: Any) -> None:
    async def main() -> None:
        server, port = await echo_server()
        async with server:
            reader, writer = await oa.open_connection("127.0.0.1", port, limit=1024)
            writer.write(b"one\ntwo|three\n")
            assert await reader.readline() == b"one\n"
            assert await reader.readuntil(b"|") == b"two|"
            assert await reader.readline() == b"three\n"
            writer.write(b"x" * 4000 + b"\n")
            with pytest.raises(ValueError, match="limit"):  # readline's LimitOverrunError
                await reader.readline()
            writer.write_eof()
            with pytest.raises(asyncio.IncompleteReadError):
                await reader.readexactly(10_000)
            writer.close()
            await writer.wait_closed()

    run(main)


def test_half_close_the_peer_still_sends_after_our_eof(run: Any) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read(-1)  # until our write_eof
        writer.write(b"got " + str(len(data)).encode())
        await writer.drain()
        writer.close()

    async def main() -> None:
        server = await oa.start_server(handler, "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            reader, writer = await oa.open_connection("127.0.0.1", port)
            assert writer.can_write_eof()
            writer.write(b"a" * 5000)
            writer.write_eof()
            with pytest.raises(RuntimeError):
                writer.write(b"late")
            assert await reader.read(-1) == b"got 5000"
            writer.close()
            await writer.wait_closed()

    run(main)


def test_flow_control_pauses_a_fast_writer_for_a_slow_reader(run: Any) -> None:
    received = bytearray()

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while chunk := await reader.read(4096):
            received.extend(chunk)
            await asyncio.sleep(0.001)
        writer.close()

    async def main() -> None:
        server = await oa.start_server(slow, "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            reader, writer = await oa.open_connection("127.0.0.1", port)
            transport = writer.transport
            transport.set_write_buffer_limits(high=64 * 1024)
            assert transport.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
            payload = random.randbytes(4 << 20)
            writer.write(payload)  # far above the high-water mark: the protocol pauses
            assert transport.get_write_buffer_size() > 64 * 1024
            await writer.drain()  # returns once the buffer is under the low mark
            assert transport.get_write_buffer_size() <= 16 * 1024
            writer.write_eof()
            await reader.read()
            writer.close()
            await writer.wait_closed()
            assert bytes(received) == payload

    run(main)


def test_a_peer_reset_ends_the_connection_with_its_error(run: Any) -> None:
    async def main() -> None:
        listener = socket.create_server(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        reader, writer = await oa.open_connection("127.0.0.1", port)
        peer, _ = listener.accept()
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        peer.close()  # linger 0: a reset
        listener.close()
        with pytest.raises(ConnectionResetError):
            await reader.read(100)
        assert writer.transport.is_closing()
        writer.close()
        with pytest.raises(ConnectionResetError):  # as asyncio's: connection_lost's error
            await writer.wait_closed()

    run(main)


def test_server_close_with_clients_connected(run: Any) -> None:
    reported: list[dict[str, Any]] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: reported.append(ctx))
        server, port = await echo_server()
        clients = [await oa.open_connection("127.0.0.1", port) for _ in range(5)]
        for reader, writer in clients:
            writer.write(b"ping")
            assert await reader.readexactly(4) == b"ping"
        server.close()
        assert not server.is_serving()
        with pytest.raises(ConnectionRefusedError):
            await oa.open_connection("127.0.0.1", port)
        for reader, writer in clients:  # still connected until they end
            writer.write(b"pong")
            assert await reader.readexactly(4) == b"pong"
        server.close_clients()
        await asyncio.wait_for(server.wait_closed(), 5)
        for reader, writer in clients:
            assert await reader.read() == b""
            writer.close()
            await writer.wait_closed()
        gc.collect()  # a task that failed unseen is reported when collected
        await asyncio.sleep(0)

    run(main)
    assert reported == []  # the accept cut by close() is no error


class Collect(asyncio.BufferedProtocol):
    def __init__(self) -> None:
        self.buf = bytearray(1000)
        self.data = bytearray()
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.calls = 0

    def get_buffer(self, sizehint: int) -> bytearray:
        return self.buf

    def buffer_updated(self, nbytes: int) -> None:
        self.calls += 1
        self.data += self.buf[:nbytes]

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.done.set_result(None)


def test_a_buffered_protocol_receives_into_its_own_buffer(run: Any) -> None:
    async def main() -> None:
        listener = socket.create_server(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        transport, protocol = await oa.create_connection(Collect, "127.0.0.1", port)
        peer, _ = listener.accept()
        payload = random.randbytes(50_000)
        peer.sendall(payload)
        peer.close()
        listener.close()
        assert isinstance(protocol, Collect)
        await asyncio.wait_for(protocol.done, 5)
        assert bytes(protocol.data) == payload
        assert protocol.calls >= 50  # never more than its 1000-byte buffer at once
        assert transport.is_closing()

    run(main)


def test_unix_connection_and_server(run: Any, tmp_path: Path) -> None:
    path = tmp_path / "sock"

    async def main() -> None:
        server = await oa.start_unix_server(echo, path)
        async with server:
            reader, writer = await oa.open_unix_connection(path)
            writer.write(b"over unix")
            assert await reader.readexactly(9) == b"over unix"
            writer.close()
            await writer.wait_closed()

    run(main)


def test_extra_info_and_transport_surface(run: Any) -> None:
    async def main() -> None:
        server, port = await echo_server()
        async with server:
            reader, writer = await oa.open_connection("127.0.0.1", port)
            transport = writer.transport
            assert isinstance(transport, oa.RingTransport)
            assert transport.get_extra_info("peername") == ("127.0.0.1", port)
            assert transport.get_extra_info("sockname")[0] == "127.0.0.1"
            assert transport.get_extra_info("socket").family == socket.AF_INET
            assert transport.get_extra_info("nothing", 7) == 7
            assert transport.is_reading()
            transport.pause_reading()
            assert not transport.is_reading()
            writer.write(b"while paused")
            await asyncio.sleep(0.05)
            assert not reader._buffer  # type: ignore[attr-defined]
            transport.resume_reading()
            assert await reader.readexactly(12) == b"while paused"
            with pytest.raises(TypeError):
                transport.write("text")  # type: ignore[arg-type]
            transport.abort()
            await writer.wait_closed()
            assert transport.is_closing()

    run(main)


@pytest.mark.parametrize("over_tls", [False, True], ids=["plain", "tls"])
def test_random_timeouts_on_read_lose_no_byte(run: Any, over_tls: bool, tls: TLSPair) -> None:
    # A numbered stream: every 4-byte number in order, whatever the timeouts
    # cut (asyncio's StreamReader over ouring's transport; over TLS, over
    # asyncio's SSLProtocol over it).
    count = 500_000
    server_tls: dict[str, Any] = {"ssl": tls.server} if over_tls else {}
    client_tls = tls.client_kwds() if over_tls else {}
    rng = random.Random(3)

    async def produce(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for start in range(0, count, 50):  # small writes: the reader often waits
            writer.write(struct.pack("<50I", *range(start, start + 50)))
            await writer.drain()
            await asyncio.sleep(0)
        writer.close()

    async def main() -> None:
        server = await oa.start_server(produce, "127.0.0.1", 0, **server_tls)
        async with server:
            port = server.sockets[0].getsockname()[1]
            reader, writer = await oa.open_connection("127.0.0.1", port, **client_tls)
            got = bytearray()
            timeouts = 0
            while True:
                try:
                    async with asyncio.timeout(rng.choice([0, 1e-5, 1e-4, 1e-3])):
                        chunk = await reader.read(rng.randint(1, 200))
                except TimeoutError:
                    timeouts += 1
                    continue
                if not chunk:
                    break
                got += chunk
            assert len(got) == 4 * count
            assert list(struct.unpack(f"<{count}I", got)) == list(range(count))
            # (over TLS the reader waits less often: a record brings more)
            assert timeouts > (100 if over_tls else 1000)
            writer.close()
            await writer.wait_closed()

    run(main)


def test_connections_leave_no_fd_behind(run: Any) -> None:
    async def main() -> None:
        server, port = await echo_server()
        async with server:
            for _ in range(50):
                reader, writer = await oa.open_connection("127.0.0.1", port)
                writer.write(b"x")
                assert await reader.readexactly(1) == b"x"
                writer.close()
                await writer.wait_closed()

    run(main)  # the loop's ring made, then closed with its loop
    before = open_fds()
    run(main)
    assert open_fds() == before


def test_bad_input_is_refused_at_the_call(run: Any) -> None:
    async def main() -> None:
        with pytest.raises(ValueError, match="host and port"):
            await oa.open_connection()
        listener = socket.create_server(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        listener.close()
        with pytest.raises(ConnectionRefusedError):
            await oa.open_connection("127.0.0.1", port)

    run(main)


def test_cancelled_connects_and_accepts_leave_no_fd(run: Any) -> None:
    # Timeouts cut open_connection at every point: before the connect is
    # submitted, while the kernel has it, after it completed. Whatever
    # connected is either handed out or closed; nothing stays open.
    rng = random.Random(5)

    async def main() -> None:
        server, port = await echo_server()
        async with server:
            made = 0
            for _ in range(300):
                try:
                    # None: no deadline, so some connect completes however slow
                    # the machine (PYTHONMALLOC=debug); 0 always cuts it.
                    async with asyncio.timeout(rng.choice([0, 1e-5, 1e-4, 1e-3, None])):
                        reader, writer = await oa.open_connection("127.0.0.1", port)
                except TimeoutError:
                    continue
                made += 1
                writer.write(b"!")
                assert await reader.readexactly(1) == b"!"
                writer.close()
                await writer.wait_closed()
            assert made > 0  # (all 300 on uvloop: a loopback connect completes inline)
            server.close_clients()

    run(main)  # the loop's ring made and closed once
    before = open_fds()
    run(main)
    assert open_fds() == before


async def cancelled_at_each_suspension(
    call: Callable[[], Coroutine[Any, Any, Any]],
    after: Callable[[str, Any], Awaitable[None]],
    most: int = 400,
) -> list[str]:
    """Run ``call()`` in a task cancelled after k iterations of the loop, for
    k = 0, 1, 2, ... until it completes first: a task takes at most one step
    per iteration, so the cancel reaches every suspension of the call in turn.
    ``after(status, value)`` checks each attempt ("cancelled": value None).
    Returns the statuses in order."""
    statuses: list[str] = []
    for k in range(most):
        task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(call())
        for _ in range(k):
            await asyncio.sleep(0)
        finished = task.done()
        task.cancel()
        try:
            value = await task
        except asyncio.CancelledError:
            statuses.append("cancelled")
            await after("cancelled", None)
            continue
        statuses.append("ok")
        await after("ok", value)
        if finished:
            return statuses
    raise AssertionError(f"still cancelled after {most} iterations")


@pytest.mark.parametrize("over_tls", [False, True], ids=["plain", "tls"])
def test_open_connection_cancelled_at_each_suspension_is_all_or_nothing(
    run: Any, over_tls: bool, tls: TLSPair
) -> None:
    # Cancelled before the connect happened: nothing is left (no fd) and the
    # server saw no connection (on 127.0.0.1 a connect completes inside its
    # io_uring_enter: withdrawn, or done). Once connected, it finishes: the
    # caller gets a usable connection (the cancel at its next await), never
    # one closed behind its back. Over TLS the handshake's steps are
    # suspensions too: cancelled before it completed, the connection is
    # aborted (no fd left; the server's handshake fails, so its application
    # never sees it). Whether some cancels fall in the handshake depends on
    # how many loop passes it takes:
    # test_tls_connection_cancelled_in_its_handshake_is_aborted makes sure.
    server_tls: dict[str, Any] = {"ssl": tls.server} if over_tls else {}
    client_tls = tls.client_kwds() if over_tls else {}
    accepted: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        await echo(reader, writer)

    async def main() -> list[str]:
        server = await oa.start_server(handler, "127.0.0.1", 0, **server_tls)
        port = server.sockets[0].getsockname()[1]
        async with server:
            before = open_fds()
            made = 0

            async def after(status: str, value: Any) -> None:
                nonlocal made
                if status == "ok":
                    made += 1
                    reader, writer = value
                    writer.write(b"!")
                    assert await reader.readexactly(1) == b"!"
                    writer.close()
                    await writer.wait_closed()
                for _ in range(400):  # the server's side of it ends too
                    if len(accepted) >= made and open_fds() <= before:
                        break
                    await asyncio.sleep(0.002)
                assert len(accepted) == made
                assert open_fds() <= before

            statuses = await cancelled_at_each_suspension(
                lambda: oa.open_connection("127.0.0.1", port, **client_tls), after
            )
        return statuses

    statuses = run(main)
    assert statuses[0] == "cancelled"  # k = 0: before it started
    assert statuses[-1] == "ok"


def test_start_server_cancelled_at_each_suspension_is_all_or_nothing(run: Any) -> None:
    # Cancelled before it listens: no socket bound or left. Once listening, it
    # finishes and the server serves (the cancel comes at the next await).
    async def main() -> list[str]:
        ouring.current_ring()  # the loop's ring (its fds) first
        before = open_fds()

        async def after(status: str, value: Any) -> None:
            if status == "ok":
                server = value
                port = server.sockets[0].getsockname()[1]
                reader, writer = await oa.open_connection("127.0.0.1", port)
                writer.write(b"?")
                assert await reader.readexactly(1) == b"?"
                writer.close()
                await writer.wait_closed()
                server.close()
                server.close_clients()
                await server.wait_closed()
            assert open_fds() == before

        return await cancelled_at_each_suspension(
            lambda: oa.start_server(echo, "127.0.0.1", 0), after
        )

    statuses = run(main)
    assert statuses[0] == "cancelled"
    assert statuses[-1] == "ok"


# -- TLS: asyncio's SSLProtocol over RingTransport --------------------------------------


class TLSPair:
    """A CA made at test time (trustme), a server context with a certificate
    for "localhost" signed by it, and a client context that trusts it."""

    def __init__(self) -> None:
        self.ca = trustme.CA()
        self.server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("localhost").configure_cert(self.server)
        self.client = ssl.create_default_context()
        self.ca.configure_trust(self.client)

    def client_kwds(self) -> dict[str, Any]:
        return {"ssl": self.client, "server_hostname": "localhost"}


@pytest.fixture(scope="module")
def tls() -> TLSPair:
    return TLSPair()


async def banner_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    # The server speaks first: its first record follows the handshake's last.
    writer.write(b"hello\n")
    await echo(reader, writer)


async def tls_echo_server(tls: TLSPair, ring: bool) -> tuple[asyncio.AbstractServer, int]:
    start = oa.start_server if ring else asyncio.start_server
    server: asyncio.AbstractServer = await start(banner_echo, "127.0.0.1", 0, ssl=tls.server)
    return server, server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("client_ring", "server_ring"),
    [(True, False), (False, True), (True, True)],
    ids=["ouring-client-asyncio-server", "asyncio-client-ouring-server", "ouring-both"],
)
def test_tls_echo_both_directions_8_mib_byte_exact(
    run: Any, tls: TLSPair, client_ring: bool, server_ring: bool
) -> None:
    async def main() -> None:
        server, port = await tls_echo_server(tls, server_ring)
        connect = oa.open_connection if client_ring else asyncio.open_connection
        async with server:
            reader, writer = await connect("127.0.0.1", port, **tls.client_kwds())
            assert await reader.readline() == b"hello\n"
            assert writer.get_extra_info("ssl_object").version() is not None
            assert writer.get_extra_info("peercert")["subjectAltName"] == (("DNS", "localhost"),)
            assert writer.get_extra_info("peername") == ("127.0.0.1", port)
            for size in (1, 64, 16384, 100_000):
                payload = random.randbytes(size)
                writer.write(payload)
                assert await reader.readexactly(size) == payload
            payload = random.randbytes(8 << 20)

            async def send() -> None:
                for i in range(0, len(payload), 65536):
                    writer.write(payload[i : i + 65536])
                    await writer.drain()

            _, got = await asyncio.gather(send(), reader.readexactly(len(payload)))
            assert got == payload
            writer.close()
            await writer.wait_closed()

    run(main)


def test_tls_unix_connection_and_server(run: Any, tls: TLSPair, tmp_path: Path) -> None:
    path = tmp_path / "sock"

    async def main() -> None:
        server = await oa.start_unix_server(echo, path, ssl=tls.server)
        async with server:
            reader, writer = await oa.open_unix_connection(path, **tls.client_kwds())
            writer.write(b"over unix and tls")
            assert await reader.readexactly(17) == b"over unix and tls"
            assert writer.get_extra_info("sslcontext") is tls.client
            writer.close()
            await writer.wait_closed()

    run(main)


@pytest.mark.parametrize(
    "case", ["wrong-hostname", "untrusted"], ids=["wrong-hostname", "untrusted-cert"]
)
def test_tls_handshake_failure_raises_as_asyncio_and_leaves_no_fd(
    run: Any, tls: TLSPair, case: str
) -> None:
    handled: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handled.append(1)
        writer.close()

    if case == "wrong-hostname":
        kwds: dict[str, Any] = {"ssl": tls.client, "server_hostname": "example.org"}
    else:
        kwds = {"ssl": True, "server_hostname": "localhost"}  # the default context

    async def main() -> None:
        ouring.current_ring()  # the loop's ring (its fds) first
        server = await oa.start_server(handler, "127.0.0.1", 0, ssl=tls.server)
        port = server.sockets[0].getsockname()[1]
        # uvloop opens an fd of its own at its first connection: made first
        _, writer = await asyncio.open_connection("127.0.0.1", port, **tls.client_kwds())
        writer.close()
        await writer.wait_closed()
        handled.clear()
        before = open_fds()
        async with server:
            with pytest.raises(ssl.SSLCertVerificationError) as theirs:
                await asyncio.open_connection("127.0.0.1", port, **kwds)
            with pytest.raises(ssl.SSLCertVerificationError) as ours:
                await oa.open_connection("127.0.0.1", port, **kwds)
            assert ours.value.verify_code == theirs.value.verify_code
            for _ in range(200):  # the server's side of them ends too
                if open_fds() <= before:
                    break
                await asyncio.sleep(0.005)
            assert open_fds() <= before
            assert handled == []  # the application never saw the failed ones

    run(main)


def test_tls_handshake_timeout_closes_the_socket_and_raises(run: Any, tls: TLSPair) -> None:
    # A peer that accepts and never answers the ClientHello.
    async def main() -> None:
        ouring.current_ring()
        listener = socket.create_server(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        before = open_fds()
        with pytest.raises(ConnectionAbortedError, match="SSL handshake"):
            await oa.open_connection(
                "127.0.0.1", port, ssl_handshake_timeout=0.2, **tls.client_kwds()
            )
        peer, _ = listener.accept()
        peer.settimeout(5)
        assert peer.recv(65536)  # the ClientHello it sent
        assert peer.recv(65536) == b""  # then the connection ended
        peer.close()
        listener.close()
        await asyncio.sleep(0)  # connection_lost's close: the next iteration
        assert open_fds() <= before

    run(main)


def test_tls_connection_cancelled_in_its_handshake_is_aborted(run: Any, tls: TLSPair) -> None:
    # Connected, ClientHello sent, no answer: the cancel falls in the
    # handshake, every time. The call raises, leaves no fd, and the peer sees
    # the connection end.
    async def main() -> None:
        ouring.current_ring()
        listener = socket.create_server(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        before = open_fds()
        task = asyncio.ensure_future(oa.open_connection("127.0.0.1", port, **tls.client_kwds()))
        loop = asyncio.get_running_loop()
        listener.setblocking(False)
        peer, _ = await asyncio.wait_for(loop.sock_accept(listener), 5)
        assert await asyncio.wait_for(loop.sock_recv(peer, 65536), 5)  # the ClientHello
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await asyncio.wait_for(loop.sock_recv(peer, 65536), 5) == b""
        peer.close()
        listener.close()
        await asyncio.sleep(0)  # connection_lost's close: the next iteration
        assert open_fds() <= before

    run(main)


def test_tls_server_handshake_timeout_ends_a_silent_client(run: Any, tls: TLSPair) -> None:
    async def main() -> None:
        server = await oa.start_server(
            echo, "127.0.0.1", 0, ssl=tls.server, ssl_handshake_timeout=0.1
        )
        async with server:
            port = server.sockets[0].getsockname()[1]
            silent = socket.create_connection(("127.0.0.1", port))
            silent.setblocking(False)
            loop = asyncio.get_running_loop()
            assert await asyncio.wait_for(loop.sock_recv(silent, 100), 5) == b""
            silent.close()

    run(main)


def test_tls_shutdown_timeout_ends_a_close_the_peer_never_answers(run: Any, tls: TLSPair) -> None:
    # A peer that completes the handshake (blocking ssl, in a thread) and then
    # never answers close_notify: close() gives up after ssl_shutdown_timeout
    # and the connection ends with asyncio's TimeoutError, as asyncio's own
    # client does against the same peer.
    async def close_against_silent_peer(connect: Callable[..., Any]) -> BaseException | None:
        listener = socket.create_server(("127.0.0.1", 0))
        listener.settimeout(5)
        port = listener.getsockname()[1]
        release = threading.Event()

        def serve() -> None:
            conn, _ = listener.accept()
            with tls.server.wrap_socket(conn, server_side=True):
                release.wait(10)
            listener.close()

        thread = threading.Thread(target=serve)
        thread.start()
        try:
            _, writer = await connect(
                "127.0.0.1", port, ssl_shutdown_timeout=0.2, **tls.client_kwds()
            )
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), 5)
            except TimeoutError as exc:
                return exc
            return None
        finally:
            release.set()
            await asyncio.to_thread(thread.join)

    async def main() -> None:
        theirs = await close_against_silent_peer(asyncio.open_connection)
        ours = await close_against_silent_peer(oa.open_connection)
        assert str(ours) == str(theirs) == "SSL shutdown timed out"

    run(main)


@pytest.mark.parametrize("over_tls", [False, True], ids=["plain", "tls"])
def test_a_failing_protocol_factory_leaves_no_socket(
    run: Any, tls: TLSPair, over_tls: bool
) -> None:
    # The connect happened, but the call fails before any transport holds
    # the socket: it is closed (asyncio's own leaves it to the collector).
    def factory() -> asyncio.Protocol:
        raise RuntimeError("no protocol")

    async def main() -> None:
        server, port = await echo_server()
        async with server:
            before = open_fds()
            kwds = tls.client_kwds() if over_tls else {}
            with pytest.raises(RuntimeError, match="no protocol"):
                await oa.create_connection(factory, "127.0.0.1", port, **kwds)
            for _ in range(200):  # the server's side of it ends too
                if open_fds() <= before:
                    break
                await asyncio.sleep(0.002)
            assert open_fds() <= before

    run(main)


def test_tls_argument_rules_are_asyncio_s(run: Any, tls: TLSPair) -> None:
    async def main() -> None:
        ouring.current_ring()
        before = open_fds()
        with pytest.raises(ValueError, match="server_hostname is only meaningful with ssl"):
            await oa.open_connection("127.0.0.1", 1, server_hostname="x")
        with pytest.raises(ValueError, match="ssl_handshake_timeout is only meaningful"):
            await oa.open_connection("127.0.0.1", 1, ssl_handshake_timeout=1)
        with pytest.raises(ValueError, match="ssl_shutdown_timeout is only meaningful"):
            await oa.open_connection("127.0.0.1", 1, ssl_shutdown_timeout=1)
        with pytest.raises(ValueError, match="should be a positive number"):
            await oa.open_connection("127.0.0.1", 1, ssl=tls.client, ssl_handshake_timeout=0)
        with pytest.raises(TypeError, match="SSLContext"):
            await oa.open_connection("127.0.0.1", 1, ssl="yes")
        with (
            socket.socket() as sock,
            pytest.raises(ValueError, match="You must set server_hostname"),
        ):
            await oa.open_connection(sock=sock, ssl=True)
        with pytest.raises(ValueError, match="you have to pass server_hostname"):
            await oa.open_unix_connection("/nonexistent", ssl=tls.client)
        with pytest.raises(TypeError, match="ssl argument must be an SSLContext or None"):
            await oa.start_server(echo, "127.0.0.1", 0, ssl=True)
        with pytest.raises(ValueError, match="ssl_handshake_timeout is only meaningful"):
            await oa.start_server(echo, "127.0.0.1", 0, ssl_handshake_timeout=1)
        with pytest.raises(ValueError, match="ssl_shutdown_timeout is only meaningful"):
            await oa.start_unix_server(echo, "/nonexistent", ssl_shutdown_timeout=1)
        with (
            tls.client.wrap_socket(socket.socket(), server_hostname="x") as wrapped,
            pytest.raises(TypeError, match="SSLSocket"),
        ):
            await oa.open_connection(sock=wrapped, ssl=tls.client, server_hostname="x")
        assert open_fds() == before

    run(main)


# -- start_tls: upgrading a RingTransport ----------------------------------------------


class Recorder(asyncio.Protocol):
    def __init__(self) -> None:
        self.data = bytearray()

    def data_received(self, data: bytes) -> None:
        self.data += data


async def until(condition: Callable[[], bool]) -> None:
    """Poll ``condition`` (state the transport keeps; no event tells it), 5 s at most."""
    for _ in range(5000):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition never held")


@pytest.mark.parametrize("receive", ["multishot", "one-shot"])
def test_pause_set_protocol_resume_hands_every_byte_to_the_new_protocol(
    run: Any, receive: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # loop.start_tls's sequence on the transport: what arrives between
    # pause_reading and resume_reading goes to the protocol set meanwhile,
    # none of it to the old one. Multishot: it waits in the receive queue;
    # one-shot (kernels without provided buffers, forced here): the receive
    # the kernel holds when reading pauses completes, and its data waits in
    # the transport.
    async def main() -> None:
        if receive == "one-shot":
            monkeypatch.setattr(ouring.current_ring(), "recv_group", lambda: None)
        listener = socket.create_server(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        transport, old = await oa.create_connection(Recorder, "127.0.0.1", port)
        assert isinstance(old, Recorder)
        assert isinstance(transport, oa.RingTransport)
        peer, _ = listener.accept()
        listener.close()
        peer.sendall(b"before")
        await until(lambda: len(old.data) == 6)
        transport.pause_reading()
        new = Recorder()
        transport.set_protocol(new)
        peer.sendall(b"after")
        if receive == "one-shot":
            assert transport._rx is None
            await until(lambda: transport._held is not None)
        else:
            assert transport._rx is not None
            rx = transport._rx
            await until(lambda: rx.queued == 5)
        for _ in range(3):  # iterations of the loop: nothing is delivered
            await asyncio.sleep(0)
        assert bytes(old.data) == b"before"
        assert new.data == b""
        transport.resume_reading()
        await until(lambda: len(new.data) == 5)
        peer.sendall(b" and more")
        await until(lambda: len(new.data) == 14)
        assert bytes(new.data) == b"after and more"
        assert bytes(old.data) == b"before"
        transport.close()
        peer.close()

    run(main)


def test_start_tls_upgrades_a_plain_connection(run: Any, tls: TLSPair) -> None:
    # STARTTLS: plaintext first, then both sides upgrade the same connection.
    # The server with ouring.asyncio.stream_start_tls (any loop); the client
    # with StreamWriter.start_tls where the loop's start_tls takes a
    # RingTransport (asyncio's), and on uvloop, which refuses it, with
    # stream_start_tls too.
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert await reader.readline() == b"STARTTLS\n"
        writer.write(b"GO\n")
        await oa.stream_start_tls(writer, tls.server)
        assert writer.get_extra_info("ssl_object").server_side
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    async def main() -> None:
        server = await oa.start_server(handler, "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            reader, writer = await oa.open_connection("127.0.0.1", port)
            assert writer.get_extra_info("ssl_object") is None
            writer.write(b"STARTTLS\n")
            assert await reader.readline() == b"GO\n"
            if isinstance(asyncio.get_running_loop(), asyncio.BaseEventLoop):
                await writer.start_tls(tls.client, server_hostname="localhost")
            else:
                with pytest.raises(TypeError, match="not supported by start_tls"):
                    await writer.start_tls(tls.client, server_hostname="localhost")
                await oa.stream_start_tls(writer, tls.client, server_hostname="localhost")
            assert not writer.get_extra_info("ssl_object").server_side
            payload = random.randbytes(1 << 20)
            writer.write(payload)
            assert await reader.readexactly(len(payload)) == payload
            writer.close()
            await writer.wait_closed()

    run(main)


def test_stream_start_tls_cancelled_at_each_suspension_is_all_or_nothing(
    run: Any, tls: TLSPair
) -> None:
    # A plain connection, then the upgrade cancelled after k loop passes, for
    # k = 0, 1, ... until it completes first. Cancelled before the upgrade
    # began: the plain stream, unchanged; in the handshake: the connection is
    # aborted (a half-done handshake cannot be undone); either way nothing is
    # left open once closed. Completed: the stream is TLS and carries data.
    aborted = 0

    def reader_protocol(writer: asyncio.StreamWriter) -> Any:
        return writer._protocol  # type: ignore[attr-defined]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            assert await reader.readline() == b"STARTTLS\n"
            writer.write(b"GO\n")
            await oa.stream_start_tls(writer, tls.server)
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass  # the client aborted mid-handshake
        finally:
            writer.close()

    async def main() -> list[str]:
        nonlocal aborted
        server = await oa.start_server(handler, "127.0.0.1", 0)
        statuses: list[str] = []
        async with server:
            port = server.sockets[0].getsockname()[1]
            before = open_fds()
            for k in range(400):
                reader, writer = await oa.open_connection("127.0.0.1", port)
                writer.write(b"STARTTLS\n")
                assert await reader.readline() == b"GO\n"
                task = asyncio.ensure_future(
                    oa.stream_start_tls(writer, tls.client, server_hostname="localhost")
                )
                for _ in range(k):
                    await asyncio.sleep(0)
                finished = task.done()
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    statuses.append("cancelled")
                    # Before the upgrade began (the task's start, its drain):
                    # nothing changed, the stream is the plain one. Once the
                    # handshake began: the connection is aborted.
                    if writer.transport.is_closing():
                        aborted += 1
                    else:
                        assert writer.get_extra_info("ssl_object") is None
                        assert writer.transport.get_protocol() is reader_protocol(writer)
                else:
                    statuses.append("ok")
                    assert writer.get_extra_info("ssl_object") is not None
                    writer.write(b"over tls")
                    assert await reader.readexactly(8) == b"over tls"
                writer.close()
                with contextlib.suppress(ConnectionError, ssl.SSLError):
                    await writer.wait_closed()
                for _ in range(400):  # the server's side of it ends too
                    if open_fds() <= before:
                        break
                    await asyncio.sleep(0.002)
                assert open_fds() <= before
                if finished:
                    return statuses
        raise AssertionError("still cancelled after 400 iterations")

    statuses = run(main)
    assert statuses[0] == "cancelled"
    assert statuses[-1] == "ok"
    assert aborted  # some cancels fell in the handshake


def test_start_tls_refuses_what_asyncio_refuses(run: Any, tls: TLSPair) -> None:
    async def main() -> None:
        server, port = await echo_server()
        async with server:
            reader, writer = await oa.open_connection("127.0.0.1", port)
            protocol = writer._protocol  # type: ignore[attr-defined]
            with pytest.raises(TypeError, match="SSLContext"):
                await oa.start_tls(writer.transport, protocol, None)  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="not supported by start_tls"):
                await oa.start_tls(asyncio.Transport(), protocol, tls.client)
            writer.write(b"still plain")
            assert await reader.readexactly(11) == b"still plain"
            writer.close()
            await writer.wait_closed()

    run(main)
