"""The example programs run as a user would run them: in their own process."""

from __future__ import annotations

import functools
import importlib.util
import random
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import h11
import httpx
import pytest
import trio
import trio.testing
from conftest import open_fds

import ouring
import ouring.trio

CAT = Path(__file__).resolve().parent.parent / "examples" / "cat.py"


def run_cat(
    *args: Path, stdout: int | None = subprocess.PIPE
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, str(CAT), *map(str, args)],
        stdout=stdout,
        stderr=subprocess.PIPE,
        timeout=60,
        check=False,
    )


def two_files(tmp_path: Path) -> tuple[Path, Path, bytes]:
    """One file with every byte value, one of several 64 KiB chunks and a tail."""
    every_byte = bytes(range(256)) * 3
    large = random.Random(1).randbytes(5 * 64 * 1024 + 12345)
    a = tmp_path / "every-byte.bin"
    b = tmp_path / "large.bin"
    a.write_bytes(every_byte)
    b.write_bytes(large)
    return a, b, every_byte + large


def test_cat_concatenates_files(tmp_path: Path) -> None:
    a, b, expected = two_files(tmp_path)
    done = run_cat(a, b)
    assert done.stderr == b""
    assert done.returncode == 0
    assert done.stdout == expected


def test_cat_writes_to_a_regular_file(tmp_path: Path) -> None:
    a, b, expected = two_files(tmp_path)
    out = tmp_path / "out.bin"
    with out.open("wb") as f:
        done = run_cat(b, a, b, stdout=f.fileno())
    assert done.stderr == b""
    assert done.returncode == 0
    large = b.read_bytes()
    assert out.read_bytes() == large + a.read_bytes() + large
    assert len(expected) < out.stat().st_size


def test_cat_reports_a_missing_file_and_goes_on(tmp_path: Path) -> None:
    a, b, expected = two_files(tmp_path)
    missing = tmp_path / "missing.txt"
    done = run_cat(a, missing, b)
    assert done.returncode == 1
    assert done.stderr.decode() == f"cat: {missing}: No such file or directory\n"
    assert done.stdout == expected

    done = run_cat(missing)
    assert done.returncode == 1
    assert done.stderr.decode() == f"cat: {missing}: No such file or directory\n"
    assert done.stdout == b""


COPY_FILE = Path(__file__).resolve().parent.parent / "examples" / "copy_file.py"


def test_copy_file_copies_binary_and_text(tmp_path: Path) -> None:
    source = tmp_path / "source.bin"
    data = random.Random(2).randbytes(3 * 256 * 1024 + 4321)
    source.write_bytes(data)
    text = tmp_path / "source.txt"
    text.write_bytes("line €\r\nnext\rlast".encode() * 5000)
    for src, dest, extra in (
        (source, tmp_path / "copy.bin", []),
        (text, tmp_path / "copy.txt", ["--text"]),
    ):
        done = subprocess.run(
            [sys.executable, str(COPY_FILE), str(src), str(dest), *extra],
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert done.stderr == b""
        assert done.returncode == 0
        assert dest.read_bytes() == src.read_bytes()

    missing = tmp_path / "missing.bin"
    done = subprocess.run(
        [sys.executable, str(COPY_FILE), str(missing), str(tmp_path / "out")],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.decode() == f"copy_file: {missing}: No such file or directory\n"


ECHO_SERVER = Path(__file__).resolve().parent.parent / "examples" / "echo_server.py"


def test_echo_server_echoes_concurrent_clients_and_stops_on_sigterm() -> None:
    import select
    import signal
    import socket
    import threading

    server = subprocess.Popen(
        [sys.executable, str(ECHO_SERVER), "--host", "127.0.0.1", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert server.stdout is not None
    try:
        ready, _, _ = select.select([server.stdout], [], [], 30)
        assert ready, "the server did not start"
        line = server.stdout.readline().decode()
        assert line.startswith("listening on 127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1])

        def client(seed: int, echoed: list[bytes]) -> None:
            data = random.Random(seed).randbytes(seed * 50_000 + 1)
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                # Send from another thread: the echo comes back while we send.
                sender = threading.Thread(target=sock.sendall, args=(data,))
                sender.start()
                got = bytearray()
                while len(got) < len(data):
                    chunk = sock.recv(65536)
                    assert chunk
                    got += chunk
                sender.join()
                sock.shutdown(socket.SHUT_WR)
                assert sock.recv(1) == b""  # the server closes after our EOF
            echoed.append(bytes(got) if got == data else b"mismatch")

        echoed: list[bytes] = []
        clients = [threading.Thread(target=client, args=(i, echoed)) for i in range(1, 9)]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join(60)
        assert len(echoed) == 8
        assert b"mismatch" not in echoed

        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=30)
        assert err == b""
        assert server.returncode == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()


# -- static_server: in this process (its handler under a real HTTP client), then as a program

STATIC_SERVER = Path(__file__).resolve().parent.parent / "examples" / "static_server.py"
SIZES = {"empty.bin": 0, "one.bin": 1, "mid.bin": 64 * 1024 + 1, "big.bin": (1 << 20) + 7}


def load_static_server() -> Any:
    spec = importlib.util.spec_from_file_location("static_server", STATIC_SERVER)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


static_server = load_static_server()


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A served root with files of the sizes under test, an index, and ways
    out of the root: a secret beside it and a symlink pointing at it."""
    root = tmp_path / "www"
    (root / "docs").mkdir(parents=True)
    rng = random.Random(3)
    for name, size in SIZES.items():
        (root / name).write_bytes(rng.randbytes(size))
    (root / "docs" / "index.html").write_bytes(b"<h1>docs</h1>\n")
    (tmp_path / "secret.txt").write_bytes(b"secret\n")
    (root / "escape.txt").symlink_to(tmp_path / "secret.txt")
    return root


@asynccontextmanager
async def running(site: Path, mode: str = "splice") -> AsyncIterator[tuple[int, Any]]:
    """The example's handler behind ouring.trio.serve_tcp (trio.serve_tcp in
    mode "trio"); yields the port and a channel that gets one item each time
    a connection's handler has returned and its stream is closed."""
    done_send, done_receive = trio.open_memory_channel[None](100)
    root = static_server.real_root(str(site))

    async def handler(stream: trio.SocketStream) -> None:
        try:
            await static_server.handle(stream, root, mode)
        finally:
            await trio.aclose_forcefully(stream)
            done_send.send_nowait(None)

    serve_tcp = trio.serve_tcp if mode == "trio" else ouring.trio.serve_tcp
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(serve_tcp, handler, 0, host="127.0.0.1"))
        yield listeners[0].socket.getsockname()[1], done_receive
        nursery.cancel_scope.cancel()


class RawClient:
    """One HTTP/1.1 connection driven by h11, to send what httpx would not
    (``..`` in a target) and to see that requests share the connection."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT)

    async def request(self, method: bytes, target: bytes) -> tuple[h11.Response, bytes]:
        if self.conn.our_state is h11.DONE:
            self.conn.start_next_cycle()
        headers = [(b"host", b"127.0.0.1")]
        data = self.conn.send(h11.Request(method=method, target=target, headers=headers))
        data += self.conn.send(h11.EndOfMessage()) or b""
        await self.stream.send_all(data)
        response: h11.Response | None = None
        body = bytearray()
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(await self.stream.receive_some(1 << 20))
            elif isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert response is not None
                return response, bytes(body)
            else:
                raise AssertionError(f"unexpected {event!r}")


def header(response: h11.Response, name: bytes) -> bytes:
    return dict(response.headers)[name]


@pytest.mark.parametrize("mode", ["splice", "copy", "trio"])
async def test_static_server_downloads_are_byte_exact_on_one_connection(
    site: Path, mode: str
) -> None:
    async with (
        running(site, mode) as (port, _),
        await trio.open_tcp_stream("127.0.0.1", port) as stream,
    ):
        client = RawClient(stream)
        for name in [*SIZES, "big.bin", "empty.bin"]:  # keep-alive: one connection
            response, body = await client.request(b"GET", b"/" + name.encode())
            assert response.status_code == 200
            assert int(header(response, b"content-length")) == SIZES[name]
            assert body == (site / name).read_bytes()
        response, body = await client.request(b"GET", b"/docs/")
        assert (response.status_code, body) == (200, b"<h1>docs</h1>\n")
        assert header(response, b"content-type") == b"text/html"


async def test_static_server_head_404_and_no_way_out_of_the_root(site: Path) -> None:
    async with running(site) as (port, _), await trio.open_tcp_stream("127.0.0.1", port) as stream:
        client = RawClient(stream)
        response, body = await client.request(b"HEAD", b"/big.bin")
        assert response.status_code == 200
        assert int(header(response, b"content-length")) == SIZES["big.bin"]
        assert body == b""
        for target in (
            b"/missing.bin",
            b"/../secret.txt",
            b"/docs/../../secret.txt",
            b"/%2e%2e/secret.txt",
            b"/escape.txt",  # a symlink out of the root
            b"/docs/missing/",
            b"/one.bin%00.txt",
        ):
            response, body = await client.request(b"GET", target)
            assert (response.status_code, body) == (404, b"not found\n"), target
        response, _ = await client.request(b"POST", b"/one.bin")
        assert response.status_code == 405
        response, body = await client.request(b"GET", b"/one.bin")  # still served
        assert (response.status_code, body) == (200, (site / "one.bin").read_bytes())


async def test_static_server_serves_20_concurrent_downloads(site: Path) -> None:
    expected = (site / "big.bin").read_bytes()
    async with running(site) as (port, _):
        limits = httpx.Limits(max_connections=20)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits) as http:
            bodies: list[bytes] = []

            async def download() -> None:
                response = await http.get("/big.bin")
                assert response.status_code == 200
                bodies.append(response.content)

            async with trio.open_nursery() as nursery:
                for _ in range(20):
                    nursery.start_soon(download)
            response = await http.get("/nope")
            assert response.status_code == 404
    assert len(bodies) == 20
    assert all(body == expected for body in bodies)


async def test_a_client_leaving_mid_transfer_leaves_no_fd_and_no_operation(site: Path) -> None:
    huge = site / "huge.bin"
    with huge.open("wb") as f:
        f.truncate(64 << 20)  # sparse: far more than the socket buffers hold
    async with running(site) as (port, handled):
        with trio.fail_after(10):
            ring = ouring.current_ring()
            await trio.testing.wait_all_tasks_blocked()  # the listener's accept is parked
            before = open_fds()
            parked = ring.statistics().inflight
            async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
                client = RawClient(stream)
                await stream.send_all(
                    client.conn.send(
                        h11.Request(method=b"GET", target=b"/huge.bin", headers=[(b"host", b"x")])
                    )
                )
                got = 0
                while got < 256 * 1024:
                    got += len(await stream.receive_some(65536))
                # Close with unread data: the kernel resets the connection.
            await handled.receive()  # the handler saw the reset and returned
            assert open_fds() == before  # its socket, file and pipe pair are closed
            assert ring.statistics().inflight == parked
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                response = await http.get("/mid.bin")  # the server keeps serving
                assert response.content == (site / "mid.bin").read_bytes()


def test_static_server_runs_as_a_program(site: Path) -> None:
    import select
    import signal

    server = subprocess.Popen(
        [sys.executable, str(STATIC_SERVER), "--host", "127.0.0.1", str(site), "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert server.stdout is not None
    try:
        ready, _, _ = select.select([server.stdout], [], [], 30)
        assert ready, "the server did not start"
        line = server.stdout.readline().decode()
        assert line.startswith("listening on 127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1])
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:
            assert http.get("/big.bin").content == (site / "big.bin").read_bytes()
            assert http.get("/../secret.txt").status_code == 404
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=30)
        assert err == b""
        assert server.returncode == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
