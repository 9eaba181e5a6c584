"""trio's high-level networking, with the I/O going through io_uring.

The names mirror trio's, with the same signatures and keyword arguments, so
switching is an import::

    from ouring.trio import serve_tcp  # instead of trio.serve_tcp

- :class:`SocketStream`: a ``trio.abc.HalfCloseableStream`` whose
  ``send_all``, ``receive_some`` and ``send_eof`` are io_uring send, recv and
  shutdown; plus ``receive_into(buf) -> (buf, n)``, the owned-buffer receive,
  and ``setsockopt`` / ``getsockopt``.
- :class:`SocketListener`: a ``trio.abc.Listener`` whose ``accept`` is an
  io_uring accept.
- :func:`open_tcp_stream` (ordered attempts with happy eyeballs),
  :func:`open_tcp_listeners`, :func:`serve_tcp`, :func:`open_unix_socket`.

Everything here runs under ``trio.run`` on :func:`ouring.current_ring`.
The objects are trio's stream and listener interfaces, so they work with
``trio.serve_listeners``, ``trio.SSLStream``, ``trio.StapledStream`` and
``trio.testing.check_half_closeable_stream``.
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
