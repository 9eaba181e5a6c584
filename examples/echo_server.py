"""echo_server: a TCP echo server on ``ouring.trio.serve_tcp``.

Usage: ``python examples/echo_server.py [--host HOST] [PORT]`` (port 0, the
default, lets the kernel pick one).

It prints ``listening on HOST:PORT`` once it accepts connections, then echoes
every byte each client sends until the client closes its side, and exits
cleanly (status 0) on SIGINT or SIGTERM.

Each connection runs ``echo`` in its own task, with trio's own
``trio.SocketStream`` over an ``ouring.trio.UringSocket``. The handler
receives with the socket's ``receive_into``, the owned-buffer receive: one 64 KiB bytearray per
connection is lent to the kernel for each receive and comes back with the
byte count, so nothing is allocated per message. ``send_all`` sends that
prefix of it back; the buffer is lent again only after the send completed.
"""

from __future__ import annotations

import argparse
import functools
import signal
import sys

import trio

from ouring.trio import UringSocket, serve_tcp

CHUNK = 64 * 1024


async def echo(stream: trio.SocketStream) -> None:
    sock = stream.socket
    assert isinstance(sock, UringSocket)
    buf = bytearray(CHUNK)
    try:
        while True:
            buf, n = await sock.receive_into(buf)
            if not n:  # the client sent EOF
                return
            with memoryview(buf) as view:
                await stream.send_all(view[:n])
    except (trio.BrokenResourceError, ConnectionError):
        pass  # the client went away without closing cleanly (e.g. a reset)


async def main(host: str, port: int) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            listeners: list[trio.SocketListener] = await nursery.start(
                functools.partial(serve_tcp, echo, port, host=host)
            )
            for listener in listeners:
                bound_host, bound_port = listener.socket.getsockname()[:2]
                print(f"listening on {bound_host}:{bound_port}", flush=True)
            async for _ in signals:
                nursery.cancel_scope.cancel()  # stop accepting; close every connection
                break


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="A TCP echo server on ouring.trio.serve_tcp.")
    parser.add_argument("port", type=int, nargs="?", default=0, help="0: the kernel picks one")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse_args(sys.argv[1:])
    trio.run(main, args.host, args.port)
