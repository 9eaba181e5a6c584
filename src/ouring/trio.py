"""trio's networking, with the socket I/O going through io_uring.

- :class:`UringSocket`: a ``trio.socket.SocketType`` (trio's base class for
  custom sockets) whose ``recv``, ``recv_into``, ``recvfrom(_into)``,
  ``recvmsg(_into)``, ``send``, ``sendto``, ``sendmsg``, ``accept`` and
  ``connect`` are io_uring operations; every other member is trio's socket's,
  with the same results and exceptions. Plus ``receive_into(buf) -> (buf,
  n)``, the owned-buffer receive. trio's own ``trio.SocketStream`` and
  ``trio.SocketListener`` accept it.
- :func:`install`: make ``trio.socket.socket()`` return ouring sockets for
  the current run (``trio.socket.set_custom_socket_factory`` with a
  :class:`SocketFactory`), so ``trio.open_tcp_stream``, ``trio.serve_tcp``,
  ``trio.open_tcp_listeners``, ``trio.open_unix_socket`` and the libraries
  built on them (httpx...) use the ring with no other change. It also
  replaces ``trio.socket.from_stdlib_socket``, ``fromfd``, ``socketpair``
  and ``socket(fileno=...)`` (which trio never routes through the factory)
  with wrappers returning ouring sockets in the runs that installed
  ouring's factory, trio's everywhere else: ``hypercorn.trio.serve()`` and
  anyio's trio backend, which wrap stdlib sockets, use the ring too. Code
  that took one of these functions by name before the first ``install()``
  (``from trio.socket import fromfd``) keeps trio's.
- :func:`open_tcp_stream` (ordered attempts with happy eyeballs),
  :func:`open_tcp_listeners`, :func:`serve_tcp`, :func:`open_unix_socket`:
  trio's functions, argument for argument, returning trio's
  ``SocketStream``/``SocketListener`` over ouring sockets without installing
  anything. When another socket factory is installed (a test's fake
  network), they are trio's functions and use it.
- :class:`SocketStream`, :class:`SocketListener`: ouring's own
  ``trio.abc.HalfCloseableStream``/``Listener`` over a stdlib socket, with
  ``receive_into`` on the stream, for code that constructs them.

Everything here runs under ``trio.run`` on :func:`ouring.current_ring`.
"""

from __future__ import annotations

from ._streams import (
    DEFAULT_RECEIVE_SIZE,
    SocketListener,
    SocketStream,
    open_tcp_listeners,
    open_tcp_stream,
    open_unix_socket,
    serve_tcp,
)
from ._trio_socket import SocketFactory, UringSocket, install

__all__ = [
    "DEFAULT_RECEIVE_SIZE",
    "SocketFactory",
    "SocketListener",
    "SocketStream",
    "UringSocket",
    "install",
    "open_tcp_listeners",
    "open_tcp_stream",
    "open_unix_socket",
    "serve_tcp",
]
