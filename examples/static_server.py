"""static_server: a static HTTP/1.1 file server on h11 and ouring.

Usage: ``python examples/static_server.py [--host HOST] [--mode MODE] ROOT [PORT]``
(port 0, the default, lets the kernel pick one).

It prints ``listening on HOST:PORT`` once it accepts connections and serves
the files under ROOT to GET and HEAD requests, with keep-alive: a missing
file, a directory without ``index.html`` or a path that leaves ROOT (``..``,
a symlink pointing out) is a 404, another method a 405. It exits cleanly
(status 0) on SIGINT or SIGTERM.

Each connection runs ``handle`` in its own task: h11 parses the requests and
frames the responses; the bytes travel over trio's ``trio.SocketStream``.
The body goes one of three ways (``--mode``), so the same server measures
each (benchmarks/bench_static.py):

- ``splice`` (default): ``ouring.sendfile``, the file's page-cache pages
  spliced into the socket through a pipe, never copied through Python.
  h11's ``send_with_data_passthrough`` frames a body it never sees.
- ``copy``: ouring's read + send: ``AsyncFile.read_at`` into one buffer per
  connection, then ``send_all`` of it.
- ``trio``: trio's own sockets and ``trio.open_file`` (worker threads), for
  comparison.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import mimetypes
import os
import signal
import stat
import sys
from typing import Any
from urllib.parse import unquote, urlsplit

import h11
import trio

import ouring
import ouring.trio

MODES = ("splice", "copy", "trio")
CHUNK = 256 * 1024  # the copy modes' buffer
MAX_REQUEST = 64 * 1024  # request line and headers
SERVER = b"ouring-static"


class FileBody:
    """A response body that h11 frames by its length and never reads: the
    bytes go straight from the file to the socket."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size


def resolve(root: str, target: bytes) -> tuple[str, os.stat_result] | None:
    """The regular file (or directory index) that ``target`` names under
    ``root``, and its stat, or None. Symlinks are followed, then the result
    must still be inside ``root``: no ``..`` or link leads out of it. (A few
    lstat() calls on cached inodes: done inline.)"""
    path = unquote(urlsplit(target.decode("ascii", "replace")).path)
    if "\0" in path:
        return None
    full = os.path.realpath(os.path.join(root, path.lstrip("/")))
    if full != root and not full.startswith(root + os.sep):
        return None
    try:
        info = os.stat(full)
        if stat.S_ISDIR(info.st_mode):
            full = os.path.join(full, "index.html")
            info = os.stat(full)
    except OSError:
        return None
    return (full, info) if stat.S_ISREG(info.st_mode) else None


def real_root(root: str) -> str:
    return os.path.realpath(root)


async def send_body(stream: trio.SocketStream, path: str, mode: str, size: int, buf: Any) -> None:
    if mode == "splice":
        f = await ouring.open_file(path, "rb", buffering=0)
        async with f:
            sent = await ouring.sendfile(stream, f, 0, size)
    elif mode == "copy":
        f = await ouring.open_file(path, "rb", buffering=0)
        async with f:
            sent = 0
            while sent < size:
                buf, n = await f.read_at(buf, sent)
                if n == 0:
                    break
                n = min(n, size - sent)
                with memoryview(buf) as view:
                    await stream.send_all(view[:n])
                sent += n
    else:
        async with await trio.open_file(path, "rb", buffering=0) as tf:
            sent = 0
            while sent < size:
                chunk = await tf.read(min(CHUNK, size - sent))
                if not chunk:
                    break
                await stream.send_all(chunk)
                sent += len(chunk)
    if sent < size:  # the file shrank: the response cannot be completed
        raise trio.BrokenResourceError(f"{path} ended after {sent} of {size} bytes")


async def respond(
    stream: trio.SocketStream,
    conn: h11.Connection,
    request: h11.Request,
    root: str,
    mode: str,
    buf: Any,
) -> None:
    async def send(event: h11.Event) -> None:
        data = conn.send(event)
        if data:
            await stream.send_all(data)

    async def simple(status: int, text: bytes, *extra: tuple[bytes, bytes]) -> None:
        headers = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(text))]
        await send(
            h11.Response(status_code=status, headers=[*headers, *extra, (b"server", SERVER)])
        )
        if request.method != b"HEAD":
            await send(h11.Data(data=text))
        await send(h11.EndOfMessage())

    if request.method not in (b"GET", b"HEAD"):
        await simple(405, b"method not allowed\n", (b"allow", b"GET, HEAD"))
        return
    found = resolve(root, request.target)
    if found is None:
        await simple(404, b"not found\n")
        return
    path, info = found
    kind = mimetypes.guess_type(path)[0] or "application/octet-stream"
    await send(
        h11.Response(
            status_code=200,
            headers=[
                (b"content-type", kind.encode()),
                (b"content-length", b"%d" % info.st_size),
                (b"server", SERVER),
            ],
        )
    )
    if request.method == b"GET" and info.st_size:
        conn.send_with_data_passthrough(h11.Data(data=FileBody(info.st_size)))  # type: ignore[arg-type]
        await send_body(stream, path, mode, info.st_size, buf)
    await send(h11.EndOfMessage())


async def handle(stream: trio.SocketStream, root: str, mode: str) -> None:
    """Serve one connection's requests until it closes or fails."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST)
    buf = bytearray(CHUNK) if mode == "copy" else None
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(MAX_REQUEST))
            elif isinstance(event, h11.Request):
                await respond(stream, conn, event, root, mode, buf)
            elif event is h11.PAUSED:  # the response is out, the request read
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return  # either side asked to close (Connection: close, HTTP/1.0)
                conn.start_next_cycle()
            elif isinstance(event, h11.ConnectionClosed):
                return
            # Data / EndOfMessage of a request body: ignored.
    except h11.RemoteProtocolError:
        if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            # A malformed request: say so, then close.
            response = h11.Response(status_code=400, headers=[(b"content-length", b"0")])
            data = conn.send(response) or b""
            data += conn.send(h11.EndOfMessage()) or b""
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
        pass  # the client went away, maybe in the middle of a body


async def serve(
    root: str,
    port: int = 0,
    *,
    host: str = "127.0.0.1",
    mode: str = "splice",
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``root`` until cancelled; ``task_status.started`` gets the listeners."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    root = real_root(root)
    handler = functools.partial(handle, root=root, mode=mode)
    serve_tcp = trio.serve_tcp if mode == "trio" else ouring.trio.serve_tcp
    await serve_tcp(handler, port, host=host, task_status=task_status)


async def main(root: str, host: str, port: int, mode: str) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            listeners: list[trio.SocketListener] = await nursery.start(
                functools.partial(serve, root, port, host=host, mode=mode)
            )
            for listener in listeners:
                bound_host, bound_port = listener.socket.getsockname()[:2]
                print(f"listening on {bound_host}:{bound_port}", flush=True)
            async for _ in signals:
                nursery.cancel_scope.cancel()  # stop accepting; close every connection
                break


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="A static HTTP file server on h11 and ouring.")
    parser.add_argument("root", help="the directory to serve")
    parser.add_argument("port", type=int, nargs="?", default=0, help="0: the kernel picks one")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--mode", choices=MODES, default="splice", help="how bodies are sent")
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse_args(sys.argv[1:])
    if not os.path.isdir(args.root):
        sys.exit(f"static_server: {args.root}: not a directory")
    trio.run(main, args.root, args.host, args.port, args.mode)
