"""Echo rows of the suite: TCP ping-pong over 127.0.0.1.

50 connections each send a message (64 B or 16 KiB), wait for the whole echo,
and send the next, for a few seconds. The servers:

- ``ouring.trio.serve_tcp``: the handler gets ouring's stream, which has trio's
  shape (``receive_some`` / ``send_all``); a second row uses its
  ``receive_into(buf) -> (buf, n)``, the owned-buffer receive. Both rows say
  "unavailable" while ``ouring.trio`` or those names do not exist;
- ``trio.serve_listeners`` over ``ouring.trio.SocketListener``: ouring's own
  stream class (not a ``trio.SocketStream``), the same handler;
- ``trio.serve_tcp`` with trio's socket streams;
- the same plain ``trio.serve_tcp`` program with ``ouring.trio.install()`` at
  the start of its run: trio's own ``SocketListener``/``SocketStream`` over
  ouring's ``trio.socket.SocketType``, so a user's unchanged trio code runs on
  io_uring (says "unavailable" while ``ouring.trio.install`` does not exist);
- asyncio streams (``asyncio.start_server``), on the default loop and on uvloop,
  and on the io_uring event loops that replace asyncio's, uringcore's and
  rsloop's, where they install (PyPI has only their sources, a Rust build: the
  rows say "not installed" where ``make bench-deps`` could not build them);
- ``ouring.asyncio.start_server`` on the default loop: asyncio's own
  ``StreamReader``/``StreamWriter`` over ouring's transports, the same handler
  (says "unavailable" while ``ouring.asyncio`` or its ``start_server`` does not
  exist).

Why it is fair: every server is the same few lines of a user's echo handler in
its own framework (read up to 64 KiB, write it back), runs alone in a fresh
process pinned to one CPU, and is loaded by the same load generator, a small C
program (``echo_client.c``, one thread, epoll) pinned to the other CPU, so the
client costs every server the same and is not a Python bottleneck. The client
stamps every message with its connection and sequence numbers and compares
every reply with what it sent, byte for byte: a server that loses, mixes or
replays data fails the cell. The server reports the bytes it echoed, which
must cover what the client counted. The server's CPU use over the run is
shown: below 100 % the server was waiting on the client (or the kernel), not
the other way round.
"""

from __future__ import annotations

import asyncio
import functools
import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import trio
from _harness import (
    BENCH_DIR,
    RESULTS_DIR,
    BrokenPathError,
    CellResult,
    Row,
    cpu_pair,
    optional_module,
    pinned,
)

HOST = "127.0.0.1"
CONNECTIONS = 50
RECEIVE_SIZE = 65536
CLIENT_SOURCE = BENCH_DIR / "echo_client.c"
CLIENT_BINARY = RESULTS_DIR / "echo_client"

SIZES = {"echo64": 64, "echo16k": 16 * 1024}
SERVERS = {
    "ouring": "ouring.trio.serve_tcp",
    "ouring-into": "ouring.trio.serve_tcp, receive_into",
    "ouring-factory": "trio.serve_tcp, ouring factory",
    "ouring-own": "ouring.trio.SocketListener (ouring's stream)",
    "trio": "trio.serve_tcp",
    "asyncio": "asyncio streams",
    "uvloop": "asyncio streams on uvloop",
    "uringcore": "asyncio streams on uringcore",
    "rsloop": "asyncio streams on rsloop",
    "ouring-asyncio": "ouring.asyncio streams",
}
#: The event loops of the asyncio rows: (module, its loop factory); None: the default loop.
ASYNCIO_LOOPS: dict[str, tuple[str, str] | None] = {
    "asyncio": None,
    "uvloop": ("uvloop", "new_event_loop"),
    "uringcore": ("uringcore", "UringEventLoop"),
    "rsloop": ("rsloop", "new_event_loop"),
    "ouring-asyncio": None,
}
#: Why a peer loop may be missing: uvloop is in the bench extra; the two Rust loops
#: are installed one by one by `make bench-deps`, and fail to build where PyPI's
#: source needs what the machine lacks (on the development VM: uringcore's build
#: fetches crates from crates.io, rsloop's wants a pinned nightly toolchain).
MISSING = {
    "uvloop": "uvloop is not installed (pip install '.[bench]')",
    "uringcore": "uringcore is not installed: PyPI has only its Rust source, which did not "
    "build here (.venv/bench-peers.log)",
    "rsloop": "rsloop is not installed: PyPI has only its Rust source, which did not build "
    "here (.venv/bench-peers.log)",
}


def rows() -> list[Row]:
    return [
        Row(workload, impl, CONNECTIONS, label)
        for workload in SIZES
        for impl, label in SERVERS.items()
    ]


# -- the servers (each runs in its own process: bench_echo.py --serve IMPL) ----------------


class Stats:
    __slots__ = ("bytes", "connections")

    def __init__(self) -> None:
        self.bytes = 0
        self.connections = 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def ready(port: int) -> None:
    print(f"READY {port}", flush=True)


def unavailable(reason: str) -> None:
    print(f"UNAVAILABLE {reason}", flush=True)


def serve_trio(impl: str, stats: Stats, port: int) -> None:
    """trio.serve_tcp (alone, or on ouring's socket factory), or
    ouring.trio.serve_tcp, with the same handler."""
    serve_tcp: Any = trio.serve_tcp
    install: Any = None
    if impl == "ouring-factory":
        install = getattr(optional_module("ouring.trio"), "install", None)
        if install is None:
            return unavailable("ouring.trio has no install() yet")
    elif impl.startswith("ouring"):
        module: Any = optional_module("ouring.trio")
        serve_tcp = getattr(module, "serve_tcp", None)
        if module is None:
            return unavailable("ouring.trio does not exist yet")
        if serve_tcp is None:
            return unavailable("ouring.trio has no serve_tcp yet")
        stream_type = getattr(module, "SocketStream", None)
        if impl == "ouring-into" and not hasattr(stream_type, "receive_into"):
            return unavailable("ouring.trio.SocketStream has no receive_into yet")

    async def echo_some(stream: Any) -> None:
        stats.connections += 1
        try:
            while data := await stream.receive_some(RECEIVE_SIZE):
                await stream.send_all(data)
                stats.bytes += len(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # the client closed with a reply in flight, at the end of the run

    async def echo_into(stream: Any) -> None:
        stats.connections += 1
        buf = bytearray(RECEIVE_SIZE)
        # ouring's own stream has it, trio's SocketStream over ouring's socket on .socket
        receive_into = getattr(stream, "receive_into", None) or stream.socket.receive_into
        try:
            while True:
                buf, n = await receive_into(buf)
                if not n:
                    break
                await stream.send_all(memoryview(buf)[:n])
                stats.bytes += n
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass

    handler = echo_into if impl == "ouring-into" else echo_some
    if impl == "ouring-own":
        listener_class = getattr(optional_module("ouring.trio"), "SocketListener", None)
        if listener_class is None:
            return unavailable("ouring.trio has no SocketListener yet")

        async def serve_own(*, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            sock = socket.create_server((HOST, port), backlog=CONNECTIONS)
            listeners = [listener_class(sock)]
            await trio.serve_listeners(handler, listeners, task_status=task_status)

        serve_tcp = None

    async def main() -> None:
        if install is not None:
            # From here on trio.socket.socket(), and so trio.serve_tcp's
            # listeners and the connections they accept, are ouring's sockets.
            install()
        async with trio.open_nursery() as nursery:
            if serve_tcp is None:
                await nursery.start(serve_own)
            else:
                await nursery.start(functools.partial(serve_tcp, handler, port, host=HOST))
            ready(port)
            await trio.lowlevel.wait_readable(sys.stdin.fileno())  # EOF: the parent is done
            nursery.cancel_scope.cancel()

    trio.run(main)


def serve_asyncio(impl: str, stats: Stats, port: int) -> None:
    """asyncio.start_server on the row's loop, or ouring.asyncio.start_server on
    the default loop, with the same handler."""
    loop_factory: Any = None
    start_server: Any = asyncio.start_server
    spec = ASYNCIO_LOOPS[impl]
    if spec is not None:
        module: Any = optional_module(spec[0])
        if module is None:
            return unavailable(MISSING[impl])
        loop_factory = getattr(module, spec[1], None)
        if loop_factory is None:
            return unavailable(f"{spec[0]} has no {spec[1]}")
    if impl == "ouring-asyncio":
        ouring_asyncio: Any = optional_module("ouring.asyncio")
        if ouring_asyncio is None:
            return unavailable("ouring.asyncio does not exist yet")
        start_server = getattr(ouring_asyncio, "start_server", None)
        if start_server is None:
            return unavailable("ouring.asyncio has no start_server yet")

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stats.connections += 1
        try:
            while data := await reader.read(RECEIVE_SIZE):
                writer.write(data)
                await writer.drain()
                stats.bytes += len(data)
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await start_server(echo, HOST, port)
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_reader(sys.stdin.fileno(), done.set)
        ready(port)
        async with server:
            await done.wait()
        loop.remove_reader(sys.stdin.fileno())

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main())


def serve(impl: str) -> None:
    stats = Stats()
    port = free_port()
    wall0, cpu0 = time.monotonic(), time.process_time()
    if impl in ASYNCIO_LOOPS:
        serve_asyncio(impl, stats, port)
    else:
        serve_trio(impl, stats, port)
    wall, cpu = time.monotonic() - wall0, time.process_time() - cpu0
    print(
        json.dumps(
            {"bytes": stats.bytes, "connections": stats.connections, "cpu": cpu, "wall": wall}
        ),
        flush=True,
    )


# -- the parent side -------------------------------------------------------------------------


def client_binary() -> Path | str:
    """The compiled load generator (built here if ``make`` did not), or why not."""
    if CLIENT_BINARY.exists() and CLIENT_BINARY.stat().st_mtime >= CLIENT_SOURCE.stat().st_mtime:
        return CLIENT_BINARY
    gcc = shutil.which("gcc")
    if gcc is None:
        return "gcc is not installed: cannot build the load generator"
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [gcc, "-O2", "-Wall", "-Wextra", "-o", str(CLIENT_BINARY), str(CLIENT_SOURCE)],
        check=True,
    )
    return CLIENT_BINARY


def run_cell(row: Row, warmup: float, seconds: float) -> CellResult:
    client = client_binary()
    if isinstance(client, str):
        return CellResult(row.key, unavailable=client)
    size = SIZES[row.workload]
    cpus = cpu_pair()
    server_cpu, client_cpu = cpus if cpus else (None, None)
    server = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--serve", row.impl],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=pinned(server_cpu),
    )
    assert server.stdout is not None
    assert server.stderr is not None
    try:
        first = server.stdout.readline().split(maxsplit=1)
        if first and first[0] == "UNAVAILABLE":
            return CellResult(row.key, unavailable=first[1].strip())
        if len(first) != 2 or first[0] != "READY":
            raise BrokenPathError(f"{row.key}: the server did not start:\n{server.stderr.read()}")
        port = int(first[1])
        done = subprocess.run(
            [
                str(client),
                *("--host", HOST, "--port", str(port), "--conns", str(row.tasks)),
                *("--size", str(size), "--warmup", repr(warmup), "--seconds", repr(seconds)),
            ],
            capture_output=True,
            text=True,
            timeout=warmup + seconds + 60,
            preexec_fn=pinned(client_cpu),
            check=False,
        )
        out, err = server.communicate(timeout=30)  # closes stdin: the server stops
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        for pipe in (server.stdin, server.stdout, server.stderr):
            if pipe is not None:
                pipe.close()  # a row that returned early (unavailable) left them open
    if done.returncode != 0:
        raise BrokenPathError(f"{row.key}: the load generator failed: {done.stderr.strip()}")
    if server.returncode != 0:
        raise BrokenPathError(f"{row.key}: the server failed (exit {server.returncode}):\n{err}")
    got: dict[str, Any] = json.loads(done.stdout)
    stats: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    requests, elapsed = int(got["requests"]), float(got["elapsed"])
    if requests <= 0 or stats["connections"] != row.tasks or stats["bytes"] < requests * size:
        raise BrokenPathError(f"{row.key}: the client counted {got}, the server {stats}")
    return CellResult(
        row.key,
        requests,
        elapsed,
        requests / elapsed,
        size,
        server_cpu=stats["cpu"] / stats["wall"],
    )


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        serve(sys.argv[2])
    else:
        import run

        run.main(["--only", "echo", *sys.argv[1:]])
