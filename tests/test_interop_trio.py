"""Real trio software on ouring's sockets: httpx (httpcore's trio backend) and
hypercorn, against 127.0.0.1, and a user's own fake network installed with
``trio.socket.set_custom_socket_factory``.

Two ways a program reaches io_uring, and each test runs both where it applies:

- ``installed factory``: a plain trio program (``trio.serve_tcp``, httpx with no
  option) after ``ouring.trio.install()``: every ``trio.socket.socket()`` of the
  run, so every socket trio's high-level functions open, is ouring's;
- ``ouring.trio``: no factory; the server is ``ouring.trio.serve_tcp`` and httpx
  connects through ``ouring.trio.open_tcp_stream`` (an httpcore network backend).
  httpcore's trio backend asserts ``isinstance(stream, trio.SocketStream)`` and
  calls ``stream.socket.is_readable()`` on pooled connections, so this only
  works if ouring hands out trio's own stream over a ``trio.socket.SocketType``.

Both ends check the sockets they got are ouring's: a test passes only if the
traffic really went through the ring. No test leaves an fd behind.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import math
import os
import random
import socket as stdlib_socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, overload

import anyio
import anyio.abc
import h11
import httpcore
import httpx
import pytest
import trio
import trio.testing
from httpcore._backends.trio import TrioStream  # httpcore's own trio stream wrapper
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve
from hypercorn.trio.tcp_server import TCPServer as HypercornTCPServer
from hypercorn.trio.worker_context import WorkerContext as HypercornWorkerContext
from hypercorn.utils import wrap_app

import ouring
import ouring.trio

if TYPE_CHECKING:
    from typing_extensions import Buffer

HOST = "127.0.0.1"
BLOB = random.Random(14).randbytes(8 * 1024 * 1024 + 12345)  # not a multiple of any chunk size
CHUNK = 64 * 1024
BOUND = 30  # seconds: every test's upper bound, far above its normal run time

INSTALLED_FACTORY = "installed factory"
OURING_TRIO = "ouring.trio"
MODES = [INSTALLED_FACTORY, OURING_TRIO]


# -- fds -------------------------------------------------------------------------------------


def open_fds() -> dict[int, str]:
    fds: dict[int, str] = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            fds[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # the directory fd of listdir itself, gone by now
            continue
    return fds


@pytest.fixture(autouse=True)
def no_fd_left_behind() -> Iterator[None]:
    """Around the whole trio run of the test (pytest-trio runs sync fixtures outside
    it): the run's ring, its sockets and every connection must be closed after."""
    before = open_fds()
    yield
    left = {fd: what for fd, what in open_fds().items() if before.get(fd) != what}
    assert not left, f"fds left behind: {left}"


def is_ouring_socket(sock: object) -> bool:
    """A trio socket whose class is ouring's (not trio's own ``_SocketType``)."""
    return isinstance(sock, trio.socket.SocketType) and type(sock).__module__.startswith("ouring")


# -- a small HTTP/1.1 server (h11) for trio streams -----------------------------------------


@dataclass
class HttpServer:
    """Serves ``/blob`` and ``/blob?anything`` (BLOB), ``/hello/N`` (a short body;
    ``/hello/close`` closes the connection after it, without telling the client),
    ``/slow`` (reads the request, never answers, waits for the client to close),
    ``/stall`` (sends half of BLOB, then waits for the client to close). Records what
    it saw."""

    connections: int = 0
    closed: int = 0
    targets: list[bytes] = field(default_factory=list)
    sockets: list[object] = field(default_factory=list)
    changed: trio.Event = field(default_factory=trio.Event)

    def _note_change(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def wait_closed(self, count: int) -> None:
        while self.closed < count:
            await self.changed.wait()

    async def handle(self, stream: trio.abc.Stream) -> None:
        self.connections += 1
        self.sockets.append(getattr(stream, "socket", None))
        conn = h11.Connection(h11.SERVER)
        try:
            await self._serve(conn, stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away mid-response
        finally:
            self.closed += 1
            self._note_change()

    async def _serve(self, conn: h11.Connection, stream: trio.abc.Stream) -> None:
        while True:
            request = await next_event(conn, stream)
            if isinstance(request, h11.ConnectionClosed):
                return
            assert isinstance(request, h11.Request), request
            while not isinstance(await next_event(conn, stream), h11.EndOfMessage):
                pass
            self.targets.append(request.target)
            self._note_change()
            if request.target in (b"/slow", b"/stall"):
                if request.target == b"/stall":  # half of BLOB's announced length
                    headers = [("content-length", str(len(BLOB)))]
                    data = h11.Data(data=BLOB[: len(BLOB) // 2])
                    response = h11.Response(status_code=200, headers=headers)
                    await stream.send_all(conn.send(response) + conn.send(data))
                while await stream.receive_some(CHUNK):  # until the client closes
                    pass
                return
            blob = request.target.partition(b"?")[0] == b"/blob"
            body = BLOB if blob else request.target + b" ok"
            headers = [("content-length", str(len(body)))]
            await stream.send_all(conn.send(h11.Response(status_code=200, headers=headers)))
            for start in range(0, len(body), CHUNK):
                await stream.send_all(conn.send(h11.Data(data=body[start : start + CHUNK])))
            await stream.send_all(conn.send(h11.EndOfMessage()))
            if conn.our_state is h11.MUST_CLOSE or request.target == b"/hello/close":
                return
            conn.start_next_cycle()


async def next_event(conn: h11.Connection, stream: trio.abc.Stream) -> Any:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(bytes(await stream.receive_some(CHUNK)))


# -- the two ways in -------------------------------------------------------------------------


class OuringNetworkBackend(httpcore.TrioBackend):
    """httpcore's trio backend, connecting with ``ouring.trio.open_tcp_stream``; the
    stream goes to httpcore's own ``TrioStream``, which asserts it is a
    ``trio.SocketStream`` whenever it needs the socket."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            with trio.fail_after(math.inf if timeout is None else timeout):
                stream = await ouring.trio.open_tcp_stream(host, port, local_address=local_address)
        except trio.TooSlowError as exc:
            raise httpcore.ConnectTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        return TrioStream(stream)


def http_client(mode: str, **kwargs: Any) -> httpx.AsyncClient:
    if mode == INSTALLED_FACTORY:
        return httpx.AsyncClient(**kwargs)  # plain httpx: trio.open_tcp_stream, the factory
    transport = httpx.AsyncHTTPTransport()
    # httpx has no option for httpcore's network backend: give its transport a pool
    # that has ours (httpx maps httpcore's exceptions to its own around the pool).
    transport._pool = httpcore.AsyncConnectionPool(network_backend=OuringNetworkBackend())
    return httpx.AsyncClient(transport=transport, **kwargs)


@asynccontextmanager
async def serving(mode: str, handler: Callable[[Any], Awaitable[None]]) -> AsyncIterator[str]:
    """Runs ``handler`` on every connection to a fresh 127.0.0.1 port; yields its URL.
    Under the installed factory the server is plain ``trio.serve_tcp`` (installed
    first, so the client of the test goes through it too)."""
    if mode == INSTALLED_FACTORY:
        ouring.trio.install()
        serve_tcp: Any = trio.serve_tcp
    else:
        serve_tcp = ouring.trio.serve_tcp
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(serve_tcp, handler, 0, host=HOST))
        assert all(is_ouring_socket(listener.socket) for listener in listeners), listeners
        port = listeners[0].socket.getsockname()[1]
        yield f"http://{HOST}:{port}"
        nursery.cancel_scope.cancel()


def client_socket(response: httpx.Response) -> object:
    """The socket under the connection that carried ``response`` (httpcore asserts on
    the way that the stream is a ``trio.SocketStream``)."""
    return response.extensions["network_stream"].get_extra_info("socket")


# -- httpx against an ouring-backed server --------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_httpx_downloads_8_mib_byte_for_byte(mode: str) -> None:
    server = HttpServer()
    with trio.fail_after(BOUND):
        async with serving(mode, server.handle) as url, http_client(mode) as client:
            response = await client.get(f"{url}/blob")
            assert response.status_code == 200
            assert is_ouring_socket(client_socket(response))
            assert len(response.content) == len(BLOB)
            assert hashlib.sha256(response.content).digest() == hashlib.sha256(BLOB).digest()
            assert response.content == BLOB
    assert server.targets == [b"/blob"]
    assert server.sockets
    assert all(is_ouring_socket(s) for s in server.sockets), server.sockets


@pytest.mark.parametrize("mode", MODES)
async def test_httpx_keeps_one_connection_alive_for_several_requests(mode: str) -> None:
    server = HttpServer()
    with trio.fail_after(BOUND):
        async with serving(mode, server.handle) as url, http_client(mode) as client:
            sockets = []
            for i in range(6):
                # An idle pooled connection is checked with stream.socket.is_readable()
                # before httpcore reuses it: ouring's socket must answer it.
                response = await client.get(f"{url}/hello/{i}")
                assert response.content == f"/hello/{i} ok".encode()
                sockets.append(client_socket(response))
            if mode == INSTALLED_FACTORY:  # the blob too, on the same connection
                response = await client.get(f"{url}/blob")
                assert response.content == BLOB
                sockets.append(client_socket(response))
        await server.wait_closed(1)
    assert server.connections == 1
    assert len({id(s) for s in sockets}) == 1
    assert is_ouring_socket(sockets[0])
    assert server.targets[:6] == [f"/hello/{i}".encode() for i in range(6)]


@pytest.mark.parametrize("mode", MODES)
async def test_httpx_sees_that_the_server_closed_an_idle_connection(mode: str) -> None:
    """Before reusing a pooled connection httpcore asks ``stream.socket.is_readable()``:
    an idle connection the peer closed is readable (EOF), so httpcore opens a new
    one. A socket that answered False would get the request sent into a closed
    connection and fail with "Server disconnected"."""
    server = HttpServer()
    with trio.fail_after(BOUND):
        async with serving(mode, server.handle) as url, http_client(mode) as client:
            first = await client.get(f"{url}/hello/close")
            assert first.content == b"/hello/close ok"
            await server.wait_closed(1)
            # Wait for the kernel's answer: the server's FIN has reached the client. If it
            # came before the response was closed, httpcore already asked is_readable()
            # when it put the connection back in the pool, and closed it (fileno -1).
            sock = client_socket(first)
            assert isinstance(sock, trio.socket.SocketType)
            if sock.fileno() != -1:
                await trio.lowlevel.wait_readable(sock.fileno())
            second = await client.get(f"{url}/hello/1")
            assert second.content == b"/hello/1 ok"
            assert client_socket(second) is not sock
    assert server.connections == 2
    assert server.targets == [b"/hello/close", b"/hello/1"]


@pytest.mark.parametrize("mode", MODES)
async def test_httpx_read_timeout_closes_the_connection(mode: str) -> None:
    server = HttpServer()
    with trio.fail_after(BOUND):
        async with serving(mode, server.handle) as url:
            # Only the read has a short timeout: a loaded machine must not turn the
            # connect or the request into the timeout the test expects from the read.
            async with http_client(mode, timeout=httpx.Timeout(BOUND, read=0.3)) as client:
                with pytest.raises(httpx.ReadTimeout):
                    await client.get(f"{url}/slow")
                # httpcore dropped the connection that timed out: the server sees it close.
                await server.wait_closed(1)
                response = await client.get(f"{url}/hello/again", timeout=BOUND)
                assert response.content == b"/hello/again ok"
            await server.wait_closed(2)
    assert server.targets == [b"/slow", b"/hello/again"]
    assert server.connections == 2


@pytest.mark.parametrize("mode", MODES)
async def test_httpx_concurrent_requests_on_several_connections(mode: str) -> None:
    server = HttpServer()
    paths = ["/blob?1", "/blob?2", *(f"/hello/{i}" for i in range(8))]
    bodies: dict[str, bytes] = {}
    sockets: list[object] = []  # kept alive, so that their ids stay distinct

    async def fetch(client: httpx.AsyncClient, url: str, path: str) -> None:
        response = await client.get(f"{url}{path}")
        bodies[path] = response.content
        sockets.append(client_socket(response))

    # Every task starts (and parks in its connect) before any request ends, so
    # httpcore opens a connection for each: one ring-driven socket per task.
    with trio.fail_after(BOUND):
        async with (
            serving(mode, server.handle) as url,
            http_client(mode) as client,
            trio.open_nursery() as nursery,
        ):
            for path in paths:
                nursery.start_soon(fetch, client, url, path)
    expected = {path: f"{path} ok".encode() for path in paths}
    expected.update({"/blob?1": BLOB, "/blob?2": BLOB})
    assert bodies == expected
    assert all(is_ouring_socket(sock) for sock in sockets)
    assert len({id(sock) for sock in sockets}) == server.connections == len(paths)


@pytest.mark.parametrize("mode", MODES)
async def test_httpx_download_cancelled_while_its_recv_waits(mode: str) -> None:
    """The server sends half of the body and stalls; the download reads that half and
    parks in its next recv (in the ring); then its scope is cancelled. The recv ends
    with Cancelled, httpcore closes the connection, the server sees the close, no fd
    stays open, and the next request works."""
    server = HttpServer()
    received = 0
    got_half = trio.Event()

    async def download(client: httpx.AsyncClient, url: str, scope: trio.CancelScope) -> None:
        nonlocal received
        with scope:
            async with client.stream("GET", f"{url}/stall") as response:
                async for chunk in response.aiter_raw():
                    received += len(chunk)
                    if received == len(BLOB) // 2:
                        got_half.set()

    with trio.fail_after(BOUND):
        async with serving(mode, server.handle) as url, http_client(mode) as client:
            scope = trio.CancelScope()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(download, client, url, scope)
                await got_half.wait()
                await trio.testing.wait_all_tasks_blocked()  # parked in the next recv
                scope.cancel()
            assert scope.cancelled_caught
            assert received == len(BLOB) // 2
            await server.wait_closed(1)
            response = await client.get(f"{url}/blob")
            assert response.content == BLOB
    assert server.connections == 2
    assert server.targets == [b"/stall", b"/blob"]


@pytest.mark.parametrize("mode", MODES)
async def test_httpx_refused_connection_raises_connect_error(mode: str) -> None:
    # A bound socket that does not listen: the kernel answers SYN with RST
    # (ECONNREFUSED), and nobody else can take the port meanwhile.
    with stdlib_socket.socket() as closed_door:
        closed_door.bind((HOST, 0))
        port = closed_door.getsockname()[1]
        if mode == INSTALLED_FACTORY:
            ouring.trio.install()
        statistics = ouring.current_ring().statistics
        before = statistics()
        with trio.fail_after(BOUND):
            async with http_client(mode) as client:
                with pytest.raises(httpx.ConnectError):
                    await client.get(f"http://{HOST}:{port}/")
        # The refused connect was the ring's (connect is its only socket operation here).
        assert statistics().submitted > before.submitted


# -- hypercorn -------------------------------------------------------------------------------


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """GET: BLOB; POST: the SHA-256 and length of the body received."""
    if scope["type"] == "lifespan":
        return
    assert scope["type"] == "http"
    if scope["method"] == "POST":
        digest, size = hashlib.sha256(), 0
        while True:
            message = await receive()
            digest.update(message.get("body", b""))
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = f"{digest.hexdigest()} {size}".encode()
    else:
        body = BLOB
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@pytest.mark.parametrize("mode", MODES)
async def test_hypercorn_serves_httpx_on_ouring_sockets(mode: str) -> None:
    """hypercorn's HTTP server (its TCPServer: h11/h2 protocol, ASGI) run by plain
    ``trio.serve_tcp`` after ``ouring.trio.install()`` (or by ``ouring.trio.serve_tcp``),
    fetched with httpx: a download and an upload, both checked byte for byte.
    ``hypercorn.trio.serve()`` itself is the next test."""
    config = HypercornConfig()
    framework: Any = asgi_app  # hypercorn's ASGIFramework: typed dicts of every message
    app = wrap_app(framework, config.wsgi_max_body_size, "asgi")
    context = HypercornWorkerContext(None)
    server_sockets: list[object] = []

    async def handler(stream: trio.SocketStream) -> None:
        server_sockets.append(stream.socket)
        plain: Any = stream  # hypercorn annotates SSLStream; it takes a SocketStream too
        await HypercornTCPServer(app, config, context, {}, plain).run()

    upload = random.Random(5).randbytes(3 * 1024 * 1024 + 7)
    with trio.fail_after(BOUND):
        async with serving(mode, handler) as url, http_client(mode) as client:
            statistics = ouring.current_ring().statistics
            before = statistics()
            got = await client.get(f"{url}/")
            assert got.content == BLOB
            posted = await client.post(f"{url}/", content=upload)
            assert posted.text == f"{hashlib.sha256(upload).hexdigest()} {len(upload)}"
            assert is_ouring_socket(client_socket(got))
            # The bytes went through the ring: a send moves at most what the socket
            # buffer takes, a TCP receive arrives in CQEs of at most one provided
            # buffer (16 KiB) of the sockets' multishot receives, so each direction
            # took at least one operation or CQE per 64 KiB.
            after = statistics()
            moved = after.submitted - before.submitted + after.more - before.more
            assert moved >= (len(BLOB) + len(upload)) // CHUNK
    assert len(server_sockets) == 1
    assert is_ouring_socket(server_sockets[0])


async def lifespan_asgi_app(
    scope: dict[str, Any], receive: Any, send: Any, clients: list[object]
) -> None:
    """``asgi_app`` with the lifespan protocol answered; records each request's client
    address (one address for several requests: one kept-alive connection)."""
    if scope["type"] != "lifespan":
        clients.append(tuple(scope["client"]))
        await asgi_app(scope, receive, send)
        return
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def fetch_in_a_run_of_its_own(url: str, upload: bytes) -> tuple[list[bytes], list[str], int]:
    """Two downloads and an upload on one kept-alive httpx connection, from a trio run
    of this thread with no factory installed (trio's own sockets, no ring): the ring of
    the server's run counts the server's operations only. Returns the bodies, the
    modules of the client's socket classes and how many connections carried them."""

    async def fetch() -> tuple[list[bytes], list[str], int]:
        async with httpx.AsyncClient(timeout=BOUND) as client:
            responses = [await client.get(url), await client.get(url)]
            responses.append(await client.post(url, content=upload))
            sockets = [client_socket(response) for response in responses]
        bodies = [response.content for response in responses]
        return bodies, [type(sock).__module__ for sock in sockets], len({id(s) for s in sockets})

    return trio.run(fetch)


async def test_hypercorn_trio_serve_under_install_serves_from_the_ring() -> None:
    """``hypercorn.trio.serve()``, untouched: it binds stdlib sockets
    (``config.create_sockets()``) and wraps them with ``trio.socket.from_stdlib_socket``,
    which trio does not route through the socket factory; ``install()`` covers it. The
    client runs in a trio run of another thread (without ``install()``: it keeps trio's
    sockets), so every operation on this run's ring is the server's."""
    ouring.trio.install()
    config = HypercornConfig()
    config.bind = [f"{HOST}:0"]
    clients: list[object] = []
    app: Any = functools.partial(lifespan_asgi_app, clients=clients)
    upload = random.Random(6).randbytes(3 * 1024 * 1024 + 11)
    statistics = ouring.current_ring().statistics
    before = statistics()
    shutdown = trio.Event()
    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:
            serve = functools.partial(hypercorn_serve, app, config, shutdown_trigger=shutdown.wait)
            (url,) = await nursery.start(serve)
            bodies, client_classes, connections = await trio.to_thread.run_sync(
                fetch_in_a_run_of_its_own, url, upload
            )
            shutdown.set()
    assert bodies[:2] == [BLOB, BLOB]
    assert bodies[2] == f"{hashlib.sha256(upload).hexdigest()} {len(upload)}".encode()
    assert client_classes == ["trio._socket"] * 3  # the other run kept trio's sockets
    assert connections == 1
    assert len(clients) == 3
    assert len(set(clients)) == 1  # the server saw one kept-alive connection
    # The upload arrived through the ring: at least one CQE of the server
    # connection's multishot receive per 16 KiB provided buffer (plus the
    # accept and the sends, operations of their own).
    after = statistics()
    assert after.more - before.more >= len(upload) // 16384
    assert after.submitted - before.submitted >= 3


async def test_anyio_on_trio_under_install_talks_through_the_ring() -> None:
    """anyio's trio backend wraps the stdlib sockets it binds and connects with
    ``trio.socket.from_stdlib_socket``: under ``install()`` its listener and its
    streams sit on ouring sockets, and its ``raw_socket`` attribute (which anyio reads
    from the trio socket's ``_sock``) is still the stdlib socket."""
    ouring.trio.install()
    statistics = ouring.current_ring().statistics
    received: list[bytes] = []

    async def shout(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            received.append(await stream.receive())
            await stream.send(received[-1].upper())

    with trio.fail_after(BOUND):
        listener = await anyio.create_tcp_listener(local_host=HOST)
        async with listener, trio.open_nursery() as nursery:
            nursery.start_soon(listener.serve, shout)
            submitted = statistics().submitted
            port = listener.extra(anyio.abc.SocketAttribute.local_port)
            async with await anyio.connect_tcp(HOST, port) as client:
                raw = client.extra(anyio.abc.SocketAttribute.raw_socket)
                assert type(raw) is stdlib_socket.socket
                assert raw.getpeername() == (HOST, port)
                await client.send(b"hello")
                assert await client.receive() == b"HELLO"
            # the accept, the client's send and receive, the server's receive and send
            assert statistics().submitted - submitted >= 5
            nursery.cancel_scope.cancel()
    assert received == [b"hello"]
    trio_sockets = [listener.listeners[0], client]  # anyio keeps trio's socket here
    assert all(is_ouring_socket(getattr(x, "_trio_socket", None)) for x in trio_sockets)


# -- a user's fake network -------------------------------------------------------------------


class FakeNetwork:
    """An in-memory TCP network (trio's memory streams) that a test installs with
    ``trio.socket.set_custom_socket_factory``; it opens no fd at all."""

    def __init__(self) -> None:
        self.listening: dict[tuple[str, int], FakeSocket] = {}
        self.connects: list[tuple[str, int]] = []
        self.next_port = 40000


class FakeSocketFactory(trio.abc.SocketFactory):
    def __init__(self, network: FakeNetwork) -> None:
        self.network = network

    def socket(
        self,
        family: stdlib_socket.AddressFamily | int = stdlib_socket.AF_INET,
        type: stdlib_socket.SocketKind | int = stdlib_socket.SOCK_STREAM,  # noqa: A002 - trio's name
        proto: int = 0,
    ) -> trio.socket.SocketType:
        return FakeSocket(self.network, family, type, proto)


class FakeSocket(trio.socket.SocketType):
    """Just what trio's ``open_tcp_stream``, ``open_tcp_listeners``, ``SocketStream``
    and ``SocketListener`` call; a real fd is never involved (``fileno`` refuses)."""

    def __init__(self, network: FakeNetwork, family: int, type_: int, proto: int) -> None:
        super().__init__()
        self.network = network
        self._family = stdlib_socket.AddressFamily(family)
        self._type = stdlib_socket.SocketKind(type_)
        self._proto = proto
        self.local: tuple[str, int] | None = None
        self.peer: tuple[str, int] | None = None
        self.outgoing: trio.testing.MemorySendStream | None = None
        self.incoming: trio.testing.MemoryReceiveStream | None = None
        self.backlog: trio.MemorySendChannel[FakeSocket] | None = None
        self.accepting: trio.MemoryReceiveChannel[FakeSocket] | None = None
        self.shut_wr = False
        self.closed = False

    @property
    def family(self) -> stdlib_socket.AddressFamily:
        return self._family

    @property
    def type(self) -> stdlib_socket.SocketKind:
        return self._type

    @property
    def proto(self) -> int:
        return self._proto

    @property
    def did_shutdown_SHUT_WR(self) -> bool:
        return self.shut_wr

    def fileno(self) -> int:
        raise NotImplementedError("a fake socket has no fd")

    def getsockname(self) -> tuple[str, int]:
        return self.local or ("0.0.0.0", 0)

    def getpeername(self) -> tuple[str, int]:
        if self.peer is None:
            raise OSError(errno.ENOTCONN, os.strerror(errno.ENOTCONN))
        return self.peer

    @overload
    def getsockopt(self, level: int, optname: int) -> int: ...

    @overload
    def getsockopt(self, level: int, optname: int, buflen: int) -> bytes: ...

    def getsockopt(self, level: int, optname: int, buflen: int | None = None) -> int | bytes:
        if (level, optname) == (stdlib_socket.SOL_SOCKET, stdlib_socket.SO_ACCEPTCONN):
            return int(self.accepting is not None)
        return 0 if buflen is None else b"\0" * buflen

    def setsockopt(
        self, level: int, optname: int, value: int | Buffer | None, optlen: int | None = None
    ) -> None:
        pass  # options have no effect on the fake network

    async def bind(self, address: Any) -> None:
        await trio.lowlevel.checkpoint()
        host, port = address[0], address[1]
        if port == 0:
            port, self.network.next_port = self.network.next_port, self.network.next_port + 1
        if (host, port) in self.network.listening:
            raise OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE))
        self.local = (host, port)

    def listen(self, backlog: int = 128) -> None:
        assert self.local is not None
        self.backlog, self.accepting = trio.open_memory_channel[FakeSocket](math.inf)
        self.network.listening[self.local] = self

    async def accept(self) -> tuple[trio.socket.SocketType, Any]:
        assert self.accepting is not None
        conn = await self.accepting.receive()
        return conn, conn.getpeername()

    async def connect(self, address: Any) -> None:
        await trio.lowlevel.checkpoint()
        target = (address[0], address[1])
        self.network.connects.append(target)
        listener = self.network.listening.get(target)
        if listener is None or listener.backlog is None:
            raise ConnectionRefusedError(errno.ECONNREFUSED, os.strerror(errno.ECONNREFUSED))
        server = FakeSocket(self.network, self._family, self._type, self._proto)
        self.outgoing, server.incoming = trio.testing.memory_stream_one_way_pair()
        server.outgoing, self.incoming = trio.testing.memory_stream_one_way_pair()
        port, self.network.next_port = self.network.next_port, self.network.next_port + 1
        self.local, self.peer = ("10.0.0.2", port), target
        server.local, server.peer = target, self.local
        listener.backlog.send_nowait(server)

    async def send(self, data: Buffer, flags: int = 0, /) -> int:
        if self.closed or self.outgoing is None:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        payload = bytes(data)
        await self.outgoing.send_all(payload)
        return len(payload)

    async def recv(self, buflen: int, flags: int = 0, /) -> bytes:
        if self.closed or self.incoming is None:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        return bytes(await self.incoming.receive_some(buflen))

    def shutdown(self, flag: int) -> None:
        if flag in (stdlib_socket.SHUT_WR, stdlib_socket.SHUT_RDWR) and self.outgoing:
            self.outgoing.close()
            self.shut_wr = True

    def close(self) -> None:
        self.closed = True
        for stream in (self.outgoing, self.incoming):
            if stream is not None:
                stream.close()
        if self.backlog is not None and self.local is not None:
            self.backlog.close()
            self.network.listening.pop(self.local, None)


async def test_a_users_fake_network_factory_is_honoured_by_ouring_trio() -> None:
    """A test of the user's installs its own socket factory; ouring.trio's
    open_tcp_listeners, serve_tcp and open_tcp_stream must use it (trio's path),
    not open real sockets: the address is not this machine's, and no fd appears."""
    network = FakeNetwork()
    trio.socket.set_custom_socket_factory(FakeSocketFactory(network))
    fds = open_fds()
    address = "192.0.2.7"  # TEST-NET-1: a real bind here fails with EADDRNOTAVAIL
    with trio.fail_after(BOUND):
        listeners = await ouring.trio.open_tcp_listeners(8080, host=address)
        assert [type(listener.socket) for listener in listeners] == [FakeSocket]
        client = await ouring.trio.open_tcp_stream(address, 8080)
        server = await listeners[0].accept()
        assert isinstance(client.socket, FakeSocket)
        assert isinstance(server.socket, FakeSocket)
        await client.send_all(b"ping")
        assert await server.receive_some(100) == b"ping"
        await server.send_all(b"pong")
        await server.send_eof()
        assert await client.receive_some(100) == b"pong"
        assert await client.receive_some(100) == b""
        with pytest.raises(OSError, match="connect"):
            await ouring.trio.open_tcp_stream(address, 8081)  # nobody listens there

        received: list[bytes] = []

        async def echo(stream: trio.abc.Stream) -> None:
            received.append(bytes(await stream.receive_some(100)))
            await stream.send_all(received[-1].upper())

        async with trio.open_nursery() as nursery:
            served = await nursery.start(functools.partial(ouring.trio.serve_tcp, echo, 9090))
            assert served
            assert all(isinstance(listener.socket, FakeSocket) for listener in served)
            host, port = served[0].socket.getsockname()
            other = await ouring.trio.open_tcp_stream(host, port)
            await other.send_all(b"hello")
            assert await other.receive_some(100) == b"HELLO"
            await other.aclose()
            nursery.cancel_scope.cancel()
        assert open_fds() == fds  # while connected, and after: never a real fd
        for stream in (client, server, *listeners):
            await stream.aclose()
    assert network.connects == [(address, 8080), (address, 8081), (host, port)]
    assert received == [b"hello"]
