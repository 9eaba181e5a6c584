"""trio's socket streams, with their I/O going through io_uring.

``open_tcp_stream``, ``open_tcp_listeners``, ``serve_tcp`` and
``open_unix_socket`` mirror trio's, argument for argument, and return trio's
own ``trio.SocketStream``/``trio.SocketListener`` over ``UringSocket``
(``_trio_socket.py``); with another socket factory installed they are trio's.

``SocketStream`` (ouring's own) is a ``trio.abc.HalfCloseableStream`` over a
stdlib socket whose ``receive_some``, ``send_all`` and ``send_eof`` are ring
operations (recv, send, shutdown), and ``SocketListener`` a
``trio.abc.Listener`` whose ``accept`` is one, for code that builds them.

Facts this module relies on:

- Every ring operation is a full checkpoint (a cancel point and a schedule
  point), and one that raises ``Cancelled`` did not happen. One
  whose CQE says it happened despite a cancel request is *returned*; trio
  raises ``Cancelled`` at the next checkpoint. So nothing between a ring call
  and the return to the caller may raise: a received chunk or an accepted
  connection would be lost.
- ``close(2)`` does not stop operations in flight on an fd (each holds its own
  reference to the file). Closing a stream first asks the ring to cancel its
  operations (``Ring.cancel(op, CLOSED)``, what ``Ring.cancel_fd`` does for
  every operation on an fd); their waiters get ``trio.ClosedResourceError``.
  Closing the fd right after is memory-safe (the ring owns the buffers until
  the CQEs), and a new socket that reuses the fd number is a different file:
  the old operations never read from it or write into it.
- ``wait_send_all_might_not_block`` has no ring operation to wait on; it uses
  trio's own ``wait_writable`` (epoll), and closing calls ``notify_closing``
  so a task blocked there gets ``ClosedResourceError`` as in trio.
- Sends pass ``MSG_NOSIGNAL`` (a peer that went away is ``EPIPE``, never a
  ``SIGPIPE``, whatever the embedding program did with the signal) and
  ``MSG_WAITALL``, which makes the kernel finish a large send itself instead
  of returning a short count to Python (a short count still comes back if the
  send is cancelled part way, or on old kernels; ``send_all`` then loops).
"""

from __future__ import annotations

import errno
import operator
import os
import socket as _stdlib_socket
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, overload

import trio

from ._accept import Acceptor
from ._buffers import MAX_RW
from ._current import ring_of_task as current_ring  # no Python frame: asked per operation
from ._ops import (
    CANCELLING,
    PENDING,
    Accept,
    Operation,
    Recv,
    RecvBytes,
    Send,
    SendCount,
    Shutdown,
)
from ._ring import Ring
from ._ringcore import Receiver
from ._trio_socket import (
    INITIAL_RECEIVE_SIZE,
    MIN_RECEIVE_SIZE,
    UringSocket,
    _cancel_for_close,
    _sync_call,
    bind_receiver,
    close_receiver,
    custom_socket_factory,
)

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = [
    "DEFAULT_RECEIVE_SIZE",
    "SocketListener",
    "SocketStream",
    "open_tcp_listeners",
    "open_tcp_stream",
    "open_unix_socket",
    "serve_tcp",
]

#: What ``receive_some()`` asks for without ``max_bytes`` (trio's value).
DEFAULT_RECEIVE_SIZE = 65536
# receive_some's adaptive buffer (INITIAL_RECEIVE_SIZE, MIN_RECEIVE_SIZE) is
# UringSocket.recv's: one policy for both.
#: trio's first-attempt head start in ``open_tcp_stream`` (RFC 6555 says 150-250 ms).
DEFAULT_DELAY = 0.250

_SOCKET_TYPES = (_stdlib_socket.socket, trio.socket.SocketType)
_INET = (_stdlib_socket.AF_INET, _stdlib_socket.AF_INET6)
_SEND_FLAGS = _stdlib_socket.MSG_NOSIGNAL | _stdlib_socket.MSG_WAITALL
_SEND_BUSY = "another task is currently sending data on this SocketStream"
_RECEIVE_BUSY = "another task is currently receiving data on this SocketStream"

# Errors accept(2) reports for a connection that died before it was accepted
# (Linux passes on any error of the new socket): skipped, as trio does.
_IGNORABLE_ACCEPT_ERRNOS = {
    getattr(errno, name)
    for name in (
        "EPERM",
        "ECONNABORTED",
        "EPROTO",
        "ENETDOWN",
        "ENOPROTOOPT",
        "EHOSTDOWN",
        "ENONET",
        "EHOSTUNREACH",
        "EOPNOTSUPP",
        "ENETUNREACH",
        "ENOSR",
        "ESOCKTNOSUPPORT",
        "EPROTONOSUPPORT",
        "ETIMEDOUT",
        "ECONNRESET",
    )
    if hasattr(errno, name)
}

AnySocket = _stdlib_socket.socket | trio.socket.SocketType
B = TypeVar("B")


def _receive_size(max_bytes: int) -> int:
    """receive_some's ``max_bytes``, checked; sizes past what one receive can
    move (``MAX_RW``) are capped: it returns at most that much anyway."""
    size: int = operator.index(max_bytes)
    if size < 1:
        raise ValueError("max_bytes must be >= 1")
    return min(size, MAX_RW)


def _stream_error(exc: OSError) -> trio.ClosedResourceError | trio.BrokenResourceError:
    """trio's translation of a socket error into a stream error."""
    if exc.errno == errno.EBADF:
        return trio.ClosedResourceError("this socket was already closed")
    return trio.BrokenResourceError(f"socket connection broken: {exc}")


async def _raise_closed(message: str = "this socket was already closed") -> NoReturn:
    """trio's order on a closed resource: a checkpoint, then the error."""
    await trio.lowlevel.checkpoint()
    raise trio.ClosedResourceError(message)


def _check_socket(sock: object, what: str) -> None:
    if not isinstance(sock, _SOCKET_TYPES):
        raise TypeError(
            f"{what} requires a socket.socket or trio socket object, not {type(sock).__name__}"
        )
    if sock.type != _stdlib_socket.SOCK_STREAM:
        raise ValueError(f"{what} requires a SOCK_STREAM socket")


def _close_socket(sock: AnySocket) -> None:
    fd = sock.fileno()
    if fd >= 0:
        # Tasks in wait_writable (trio's epoll) get ClosedResourceError.
        trio.lowlevel.notify_closing(fd)
    sock.close()


class SocketStream(trio.abc.HalfCloseableStream):
    """A ``trio.abc.HalfCloseableStream`` over a connected ``SOCK_STREAM``
    socket, whose I/O goes through io_uring.

    ``socket`` may be a ``socket.socket`` or a trio socket; the stream owns it
    (``aclose`` closes it). As in trio, ``TCP_NODELAY`` is turned on, and
    ``TCP_NOTSENT_LOWAT`` set to 16 KiB, for TCP sockets; ``setsockopt``
    changes them.

    Besides the stream interface: ``receive_into(buf) -> (buf, n)`` receives
    into a caller's buffer (a copy from the multishot queue on TCP with
    provided buffers, else owned-buffer style: the kernel has it until the
    receive completes), and ``setsockopt`` / ``getsockopt``. TCP streams
    receive through one multishot recv, as :class:`UringSocket` does.

    Closing the stream (``aclose``) wakes every task blocked on it with
    ``trio.ClosedResourceError``. A ``receive_some`` cancelled after the kernel
    received a chunk returns the chunk (trio raises ``Cancelled`` at the next
    checkpoint): no received byte is lost.
    """

    __slots__ = (
        "_closed",
        "_did_shutdown_wr",
        "_fileno",
        "_receiving",
        "_recv_op",
        "_recv_ring",
        "_recv_size",
        "_rx",
        "_rx_ring",
        "_send_op",
        "_send_ring",
        "_sending",
        "_tcp",
        "socket",
    )

    def __init__(self, socket: AnySocket) -> None:
        _check_socket(socket, "SocketStream")
        self.socket = socket
        self._fileno: Callable[[], int] = socket.fileno
        self._closed = False
        self._did_shutdown_wr = False
        self._sending = False
        self._receiving = False
        self._recv_size = INITIAL_RECEIVE_SIZE
        # The operation in flight in each direction and its ring, so that
        # closing can cancel it (cheaper than cancel_fd's scan of every
        # operation in flight on the ring).
        self._recv_op: Operation[Any] | None = None
        self._recv_ring: Ring | None = None
        self._send_op: Operation[Any] | None = None
        self._send_ring: Ring | None = None
        # TCP receives through one multishot recv and its queue, as
        # UringSocket's (see _trio_socket.py).
        self._tcp = socket.family in _INET
        self._rx: Receiver | None = None
        self._rx_ring: Ring | None = None
        if self._tcp:
            with suppress(OSError):
                socket.setsockopt(_stdlib_socket.IPPROTO_TCP, _stdlib_socket.TCP_NODELAY, 1)
            with suppress(OSError, AttributeError):
                socket.setsockopt(
                    _stdlib_socket.IPPROTO_TCP,
                    _stdlib_socket.TCP_NOTSENT_LOWAT,  # type: ignore[attr-defined,unused-ignore]
                    2**14,
                )

    # -- sending -------------------------------------------------------------------------

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Send all of ``data``. If cancelled, some of it may have been sent
        (trio's rule for ``send_all``); the stream is then best closed."""
        if self._did_shutdown_wr:
            raise trio.ClosedResourceError("can't send data after sending EOF")
        if self._sending:
            raise trio.BusyResourceError(_SEND_BUSY)
        self._sending = True
        try:
            fd = self._fileno()
            if self._closed or fd < 0:
                await _raise_closed("this socket was already closed")
            ring = current_ring()
            op = SendCount(fd, data, _SEND_FLAGS)
            length = op.length
            if not length:
                op.release()
                await trio.lowlevel.checkpoint()
                return
            self._send_op = op
            self._send_ring = ring
            try:
                sent = await ring.perform(op)
            except OSError as exc:
                raise _stream_error(exc) from exc
            if sent < length:
                await self._send_rest(data, sent)
        finally:
            self._send_op = None
            self._sending = False

    async def _send_rest(self, data: bytes | bytearray | memoryview, sent: int) -> None:
        """The first send was short (cancelled part way, or a kernel that does
        not finish MSG_WAITALL sends): send the rest, chunk by chunk."""
        with memoryview(data) as view, view.cast("B") as octets:
            total = len(octets)
            while sent < total:
                fd = self._fileno()
                if self._closed or fd < 0:
                    raise trio.ClosedResourceError("the stream was closed during send_all")
                ring = current_ring()
                # No `with` for the slice: if this coroutine is closed while
                # the send is in flight, the ring still holds an export of it.
                rest = octets[sent:]
                op = Send(fd, rest, _SEND_FLAGS)
                self._send_op = op
                self._send_ring = ring
                try:
                    _, n = await ring.perform(op)
                except OSError as exc:
                    raise _stream_error(exc) from exc
                finally:
                    # Once the ring gave the slice back (the usual case, a
                    # Cancelled included), drop its export of the caller's
                    # buffer now: the traceback of an exception keeps this
                    # frame, and so the slice, alive until trio's next step,
                    # and a bytearray with an export cannot be resized.
                    if not PENDING <= op.state <= CANCELLING:
                        rest.release()
                sent += n

    async def wait_send_all_might_not_block(self) -> None:
        """Wait until the socket's send buffer has room (trio's epoll)."""
        if self._sending:
            raise trio.BusyResourceError(_SEND_BUSY)
        self._sending = True
        try:
            fd = self._fileno()
            if self._closed or fd < 0:
                await _raise_closed()
            try:
                await trio.lowlevel.wait_writable(fd)
            except OSError as exc:
                raise _stream_error(exc) from exc
        finally:
            self._sending = False

    async def send_eof(self) -> None:
        """Shut down the sending side (``SHUT_WR``); idempotent."""
        if self._sending:
            raise trio.BusyResourceError(_SEND_BUSY)
        self._sending = True
        try:
            fd = self._fileno()
            if self._did_shutdown_wr or self._closed or fd < 0:
                # trio: a second send_eof is a no-op; on a closed stream,
                # ClosedResourceError after the checkpoint.
                await trio.lowlevel.checkpoint()
                if self._did_shutdown_wr:
                    return
                raise trio.ClosedResourceError("this socket was already closed")
            ring = current_ring()
            op = Shutdown(fd, _stdlib_socket.SHUT_WR)
            self._send_op = op
            self._send_ring = ring
            try:
                await ring.perform(op)
            except OSError as exc:
                raise _stream_error(exc) from exc
            self._did_shutdown_wr = True
        finally:
            self._send_op = None
            self._sending = False

    # -- receiving -----------------------------------------------------------------------

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Receive at most ``max_bytes`` (default 65536); ``b""`` at the end
        of the stream. A chunk received despite a cancel is returned."""
        if self._receiving:
            raise trio.BusyResourceError(_RECEIVE_BUSY)
        if max_bytes is None:
            limit = DEFAULT_RECEIVE_SIZE
        elif type(max_bytes) is int and 0 < max_bytes <= MAX_RW:
            limit = max_bytes
        else:
            limit = _receive_size(max_bytes)
        fd = self._fileno()
        if self._closed or fd < 0:
            await _raise_closed("this socket was already closed")
        ring = current_ring()
        if self._tcp:
            rx = self._rx
            if rx is None or self._rx_ring is not ring:
                rx = self._receiver(ring)
            if rx is not None:
                if self._rx_ring is not ring:
                    return await self._from_queue(ring, rx, fd, rx.take, limit)  # type: ignore[no-any-return]
                # The hot path, inline: one coroutine frame fewer per receive.
                self._receiving = True
                try:
                    return await ring.executor.receive(ring, rx, fd, rx.take, limit)  # type: ignore[union-attr,no-any-return]
                except OSError as exc:
                    raise _stream_error(exc) from exc
                finally:
                    self._receiving = False
        # The kernel writes into a new bytes object that becomes the result
        # (as socket.recv does): no copy out of a reused buffer, and no
        # buffer shared with a receive whose coroutine was closed mid-flight.
        # Unlike socket.recv, the bytes exist while the receive waits, so
        # their size adapts to what arrives (below): 50 idle connections
        # asking for 64 KiB each would churn the heap (page faults measured
        # at 3x trio's in the 16 KiB echo benchmark).
        size = self._recv_size
        op = RecvBytes(fd, size if size < limit else limit)
        self._recv_op = op
        self._recv_ring = ring
        self._receiving = True
        try:
            data: bytes = await ring.perform(op)
        except OSError as exc:
            raise _stream_error(exc) from exc
        finally:
            self._recv_op = None
            self._receiving = False
        # A receive that filled its buffer doubles the next one (up to what
        # the caller allows); one that used under a quarter halves it, down to
        # MIN_RECEIVE_SIZE. Receiving less than max_bytes is always allowed.
        n = len(data)
        if n >= size:
            self._recv_size = min(size * 2, max(limit, MIN_RECEIVE_SIZE))
        elif n < size >> 2 and size > MIN_RECEIVE_SIZE:
            self._recv_size = size >> 1
        return data

    async def receive_into(self, buf: B) -> tuple[B, int]:
        """Receive into ``buf`` (a writable buffer): ``(buf, n)``, the same
        buffer and the byte count, 0 at the end of the stream. The kernel
        writes into ``buf`` until the receive completes, whatever happens to
        the caller; if the receive is cancelled, ``buf`` is untouched."""
        if self._receiving:
            raise trio.BusyResourceError(_RECEIVE_BUSY)
        fd = self._fileno()
        if self._closed or fd < 0:
            await _raise_closed("this socket was already closed")
        ring = current_ring()
        if self._tcp:
            rx = self._receiver(ring)
            if rx is not None:
                with memoryview(buf) as view:  # type: ignore[arg-type]
                    if view.readonly:
                        raise TypeError("receive_into needs a writable buffer")
                    if not view.nbytes:
                        raise ValueError("receive_into needs a buffer of at least one byte")
                n = await self._from_queue(ring, rx, fd, rx.take_into, buf, 0)
                return buf, n
        op = Recv(fd, buf)
        if not op.length:
            op.release()
            raise ValueError("receive_into needs a buffer of at least one byte")
        self._recv_op = op
        self._recv_ring = ring
        self._receiving = True
        try:
            return await ring.perform(op)
        except OSError as exc:
            raise _stream_error(exc) from exc
        finally:
            self._recv_op = None  # holds the caller's buffer
            self._receiving = False

    def _receiver(self, ring: Ring) -> Receiver | None:
        rx = self._rx
        if rx is not None and self._rx_ring is ring:
            return rx
        self._rx, self._rx_ring = bind_receiver(rx, self._rx_ring, ring)
        return self._rx

    async def _from_queue(self, ring: Ring, rx: Receiver, fd: int, take: Any, *args: Any) -> Any:
        self._receiving = True
        try:
            if self._rx_ring is not ring:
                # Queued on a ring that is gone: hand it out (bind_receiver).
                return await _sync_call(take, *args)
            return await ring.executor.receive(ring, rx, fd, take, *args)  # type: ignore[union-attr]
        except OSError as exc:
            raise _stream_error(exc) from exc
        finally:
            self._receiving = False

    # -- closing -------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the stream: cancel its operations in flight (their tasks get
        ``ClosedResourceError``), close the socket, then checkpoint. Closes
        even when cancelled; idempotent."""
        self._close()
        await trio.lowlevel.checkpoint()

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        close_receiver(self._rx, self._rx_ring)
        _cancel_for_close(self._recv_op, self._recv_ring)
        _cancel_for_close(self._send_op, self._send_ring)
        self._recv_op = self._send_op = None
        _close_socket(self.socket)

    # -- socket options --------------------------------------------------------------------

    @overload
    def setsockopt(self, level: int, option: int, value: int | Buffer) -> None: ...

    @overload
    def setsockopt(self, level: int, option: int, value: None, length: int) -> None: ...

    def setsockopt(
        self, level: int, option: int, value: int | Buffer | None, length: int | None = None
    ) -> None:
        """Set an option on the socket (see ``socket.socket.setsockopt``)."""
        if length is None:
            if value is None:
                raise TypeError(
                    "invalid value for argument 'value', must not be None when specifying length"
                )
            return self.socket.setsockopt(level, option, value)
        if value is not None:
            raise TypeError(
                f"invalid value for argument 'value': {value!r}, "
                "must be None when specifying optlen"
            )
        return self.socket.setsockopt(level, option, value, length)

    @overload
    def getsockopt(self, level: int, option: int) -> int: ...

    @overload
    def getsockopt(self, level: int, option: int, buffersize: int) -> bytes: ...

    def getsockopt(self, level: int, option: int, buffersize: int = 0) -> int | bytes:
        """Read an option of the socket (see ``socket.socket.getsockopt``)."""
        if buffersize == 0:
            return self.socket.getsockopt(level, option)
        return self.socket.getsockopt(level, option, buffersize)

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"fd={self._fileno()}"
        return f"<ouring.trio.SocketStream {state}>"


class SocketListener(trio.abc.Listener[SocketStream]):
    """A ``trio.abc.Listener`` over a listening ``SOCK_STREAM`` socket: each
    ``accept`` is an io_uring accept and returns a :class:`SocketStream`.

    The listener owns the socket. Closing it wakes a task blocked in
    ``accept`` with ``trio.ClosedResourceError``; a connection accepted
    despite a cancel is returned, never dropped.
    """

    __slots__ = ("_accept_op", "_accept_ring", "_accepting", "_acceptor", "_closed", "socket")

    def __init__(self, socket: AnySocket) -> None:
        _check_socket(socket, "SocketListener")
        try:
            listening = socket.getsockopt(_stdlib_socket.SOL_SOCKET, _stdlib_socket.SO_ACCEPTCONN)
        except OSError:
            pass  # trust the caller, as trio does where the option is missing
        else:
            if not listening:
                raise ValueError("SocketListener requires a listening socket")
        self.socket = socket
        self._closed = False
        self._accepting = False
        self._accept_op: Operation[Any] | None = None
        self._accept_ring: Ring | None = None
        self._acceptor: Acceptor | None = None  # multishot accept, where the ring has it

    async def accept(self) -> SocketStream:
        """Accept a connection. Connections that died before they were
        accepted are skipped, as in trio; other errors (including
        ``EMFILE`` and friends) are raised."""
        if self._accepting:
            raise trio.BusyResourceError("another task is currently accepting on this listener")
        self._accepting = True
        try:
            while True:
                fd = self.socket.fileno()
                if self._closed or fd < 0:
                    await _raise_closed("this listener was already closed")
                ring = current_ring()
                try:
                    acceptor = self._acceptor
                    if acceptor is not None or ring.has("multishot_accept"):
                        if acceptor is None:
                            acceptor = self._acceptor = Acceptor(self.socket)
                        conn = await acceptor.accept()
                    else:
                        op = Accept(fd)
                        self._accept_op = op
                        self._accept_ring = ring
                        conn, _ = await ring.perform(op)
                except OSError as exc:
                    if exc.errno == errno.EBADF:
                        raise trio.ClosedResourceError("this listener was already closed") from None
                    if exc.errno not in _IGNORABLE_ACCEPT_ERRNOS:
                        raise
                else:
                    try:
                        return SocketStream(conn)
                    except BaseException:
                        conn.close()
                        raise
        finally:
            self._accept_op = None
            self._accepting = False

    async def aclose(self) -> None:
        """Close the listener and its socket (even when cancelled)."""
        if not self._closed:
            self._closed = True
            _cancel_for_close(self._accept_op, self._accept_ring)
            if self._acceptor is not None:
                self._acceptor.close()  # its multishot accept, and the queued connections
            _close_socket(self.socket)
        await trio.lowlevel.checkpoint()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"fd={self.socket.fileno()}"
        return f"<ouring.trio.SocketListener {state}>"


# -- opening streams and listeners -------------------------------------------------------


def _format_host_port(host: str | bytes, port: int | str) -> str:
    host = host.decode("ascii") if isinstance(host, bytes) else host
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _reorder_for_rfc_6555_section_5_4(targets: list[Any]) -> None:
    """Move the first address of another family to second place, so the
    first two attempts try both families (trio's order)."""
    for i in range(1, len(targets)):
        if targets[i][0] != targets[0][0]:
            if i != 1:
                targets.insert(1, targets.pop(i))
            break


async def _bind_local(sock: _stdlib_socket.socket, host: str) -> None:
    """``sock.bind((host, 0))``, resolving ``host`` with trio's resolver."""
    infos = await trio.socket.getaddrinfo(
        host, 0, sock.family, sock.type, sock.proto, _stdlib_socket.AI_PASSIVE
    )
    if not infos:
        raise OSError(f"no address for {host!r}")
    sock.bind(infos[0][4])


async def open_tcp_stream(
    host: str | bytes,
    port: int,
    *,
    happy_eyeballs_delay: float | None = DEFAULT_DELAY,
    local_address: str | None = None,
) -> trio.SocketStream:
    """Connect to ``host``:``port`` over TCP: ``trio.open_tcp_stream`` with
    the connects going through io_uring. Returns trio's own
    ``trio.SocketStream`` over a :class:`~ouring.trio.UringSocket`.
    When a socket factory other than ouring's is installed in this run
    (``trio.socket.set_custom_socket_factory``, a test's fake network), this
    is ``trio.open_tcp_stream`` itself, which uses that factory.

    The addresses ``host`` resolves to (trio's resolver, so
    ``trio.socket.set_custom_hostname_resolver`` applies) are tried in order,
    the first of another family moved to second place (RFC 6555). An attempt
    that has neither succeeded nor failed after ``happy_eyeballs_delay``
    seconds gets company: the next attempt starts in parallel ("happy
    eyeballs"); the first to connect wins and the others are cancelled.
    ``None`` means trio's default delay, as in trio. ``local_address`` binds
    the outgoing sockets to that address first.

    Raises ``OSError`` when every attempt failed; its ``__cause__`` is an
    ``ExceptionGroup`` of each attempt's error.
    """
    if not isinstance(host, str | bytes):
        raise ValueError(f"host must be str or bytes, not {host!r}")
    if not isinstance(port, int):
        raise TypeError(f"port must be int, not {port!r}")
    if custom_socket_factory() is not None:
        return await trio.open_tcp_stream(
            host, port, happy_eyeballs_delay=happy_eyeballs_delay, local_address=local_address
        )
    if happy_eyeballs_delay is None:
        happy_eyeballs_delay = DEFAULT_DELAY

    targets = list(await trio.socket.getaddrinfo(host, port, type=_stdlib_socket.SOCK_STREAM))
    if not targets:
        raise OSError(f"no results found for hostname lookup: {_format_host_port(host, port)}")
    _reorder_for_rfc_6555_section_5_4(targets)

    oserrors: list[OSError] = []
    open_sockets: list[_stdlib_socket.socket] = []
    winner: _stdlib_socket.socket | None = None

    async def attempt_connect(
        family: int, type_: int, proto: int, sockaddr: Any, attempt_failed: trio.Event
    ) -> None:
        nonlocal winner
        try:
            sock = _stdlib_socket.socket(family, type_, proto)
            open_sockets.append(sock)
            sock.setblocking(False)
            if local_address is not None:
                # Let connect pick the port, so one local address can make
                # more than ~64k connections to different remote addresses.
                with suppress(OSError, AttributeError):
                    sock.setsockopt(
                        _stdlib_socket.IPPROTO_IP,
                        _stdlib_socket.IP_BIND_ADDRESS_NO_PORT,  # type: ignore[attr-defined,unused-ignore]
                        1,
                    )
                try:
                    await _bind_local(sock, local_address)
                except OSError:
                    raise OSError(
                        f"local_address={local_address!r} is incompatible "
                        f"with remote address {sockaddr!r}"
                    ) from None
            await current_ring().connect(sock, sockaddr)
            # A connect that completed despite the cancel below is a second
            # winner: it is closed with the losers.
            if winner is None:
                winner = sock
            nursery.cancel_scope.cancel()
        except OSError as exc:
            oserrors.append(exc)
            attempt_failed.set()

    try:
        async with trio.open_nursery() as nursery:
            for family, type_, proto, _, sockaddr in targets:
                attempt_failed = trio.Event()
                nursery.start_soon(attempt_connect, family, type_, proto, sockaddr, attempt_failed)
                # Give this attempt a head start before the next one.
                with trio.move_on_after(happy_eyeballs_delay):
                    await attempt_failed.wait()
        if winner is None:
            msg = f"all attempts to connect to {_format_host_port(host, port)} failed"
            raise OSError(msg) from ExceptionGroup(msg, oserrors)
        stream = trio.SocketStream(UringSocket(winner))
        open_sockets.remove(winner)
        return stream
    finally:
        # Every attempt's task has ended, so no operation is in flight on
        # these sockets: a plain close is enough.
        for sock in open_sockets:
            sock.close()


def _compute_backlog(backlog: int | None) -> int:
    if not isinstance(backlog, int) and backlog is not None:
        raise TypeError(f"backlog must be an int or None, not {backlog!r}")
    if backlog is None:
        return 0xFFFF  # the kernel caps it at net.core.somaxconn
    return min(backlog, 0xFFFF)


async def open_tcp_listeners(
    port: int, *, host: str | bytes | None = None, backlog: int | None = None
) -> list[trio.SocketListener]:
    """``trio.open_tcp_listeners`` with ouring sockets: one
    ``trio.SocketListener`` over a :class:`~ouring.trio.UringSocket` per
    address ``host`` resolves to (``None``: the IPv4 and IPv6 wildcards),
    with ``SO_REUSEADDR``, and ``IPV6_V6ONLY`` on IPv6 sockets. Port 0 lets
    the kernel pick a port (per listener). With another socket factory
    installed, ``trio.open_tcp_listeners`` itself."""
    if not isinstance(port, int):
        raise TypeError(f"port must be an int not {port!r}")
    if custom_socket_factory() is not None:
        return await trio.open_tcp_listeners(port, host=host, backlog=backlog)
    computed_backlog = _compute_backlog(backlog)
    addresses = await trio.socket.getaddrinfo(
        host, port, type=_stdlib_socket.SOCK_STREAM, flags=_stdlib_socket.AI_PASSIVE
    )
    listeners: list[trio.SocketListener] = []
    unsupported_address_families: list[OSError] = []
    try:
        for family, type_, proto, _, sockaddr in addresses:
            try:
                sock = _stdlib_socket.socket(family, type_, proto)
            except OSError as exc:
                if exc.errno == errno.EAFNOSUPPORT:
                    unsupported_address_families.append(exc)
                    continue
                raise
            try:
                sock.setblocking(False)
                sock.setsockopt(_stdlib_socket.SOL_SOCKET, _stdlib_socket.SO_REUSEADDR, 1)
                if family == _stdlib_socket.AF_INET6:
                    sock.setsockopt(_stdlib_socket.IPPROTO_IPV6, _stdlib_socket.IPV6_V6ONLY, 1)
                sock.bind(sockaddr)  # numeric: getaddrinfo resolved it
                sock.listen(computed_backlog)
                listeners.append(trio.SocketListener(UringSocket(sock)))
            except BaseException:
                sock.close()
                raise
    except BaseException:
        for listener in listeners:
            listener.socket.close()
        raise
    if unsupported_address_families and not listeners:
        msg = "This system doesn't support any of the kinds of socket that that address could use"
        raise OSError(errno.EAFNOSUPPORT, msg) from ExceptionGroup(
            msg, unsupported_address_families
        )
    return listeners


async def serve_tcp(
    handler: Callable[[trio.SocketStream], Awaitable[object]],
    port: int,
    *,
    host: str | bytes | None = None,
    backlog: int | None = None,
    handler_nursery: trio.Nursery | None = None,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """``trio.serve_tcp`` over ouring sockets: listen with
    :func:`open_tcp_listeners` and run ``handler(stream)`` (a
    ``trio.SocketStream``) in a new task for each connection
    (``trio.serve_listeners``, which closes each stream after its handler).
    With ``nursery.start``, returns the listeners. Returns only when
    cancelled."""
    listeners = await open_tcp_listeners(port, host=host, backlog=backlog)
    await trio.serve_listeners(
        handler, listeners, handler_nursery=handler_nursery, task_status=task_status
    )


async def open_unix_socket(
    filename: str | bytes | os.PathLike[str] | os.PathLike[bytes],
) -> trio.SocketStream:
    """Connect to the unix-domain socket at ``filename`` (io_uring connect):
    a ``trio.SocketStream`` over a :class:`~ouring.trio.UringSocket`. With
    another socket factory installed, ``trio.open_unix_socket`` itself."""
    if custom_socket_factory() is not None:
        return await trio.open_unix_socket(filename)
    sock = _stdlib_socket.socket(_stdlib_socket.AF_UNIX, _stdlib_socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        await current_ring().connect(sock, os.fspath(filename))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(UringSocket(sock))
