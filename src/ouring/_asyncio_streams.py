"""asyncio transports, servers and streams over the ring (``ouring.asyncio``).

A ``RingTransport`` is an ``asyncio.Transport`` whose socket I/O goes through
the loop's own ring (``_asyncio.loop_ring``); everything above it is asyncio's
own: ``open_connection``/``start_server`` hand out asyncio's ``StreamReader``
and ``StreamWriter`` over it. The model is asyncio's completion-based
transports over IOCP (``proactor_events.py``): a receive is always in flight
while reading is not paused, a send is in flight while the write buffer is not
empty, and each completion schedules the next step.

Facts this module relies on:

- A TCP (or Unix stream) socket on a ring with provided buffers receives
  through one multishot recv (``MultishotReceive``) into its ``Receiver``
  queue; the ring wakes ``rx.waiter`` (through the executor's ``wake``: a
  Future's ``set_result``) at each arrival, so the transport's read step is a
  done-callback of that Future, run by the loop in the next iteration. The
  queue is bounded: past its limit the kernel's multishot is cancelled and
  TCP's window closes, so ``pause_reading`` only has to stop taking.
- A ring without provided buffers (old kernels) gets one-shot ``RecvBytes``.
- A send owns its buffer until its final CQE (a ``bytes`` object, or a
  memoryview of one for the rest of a partial send): ``write`` copies what is
  not ``bytes`` (the caller may reuse a bytearray at once), as asyncio's
  transports do when they buffer.
- ``close(2)`` does not stop the kernel's operations on an fd, and a queued
  one names the fd by number: closing cancels every operation on the fd first
  (``Ring.cancel_fd``); the socket object is closed once the ring has no
  operation on it left, so the memory those operations own stays theirs.
- asyncio calls protocol callbacks from the loop, never from inside a
  transport method the protocol called: ``connection_made`` and
  ``connection_lost`` are scheduled with ``call_soon``.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import os
import socket
import sys
from asyncio import trsock
from collections.abc import Callable, Iterable
from typing import Any

from . import _api, _asyncio, _asyncio_tls, _sync
from ._asyncio_tls import TLS
from ._errors import FdClosedError, UnsupportedError
from ._ops import RecvBytes, Send
from ._ring import Ring, arm_receive
from ._ringcore import Receiver

__all__ = [
    "RingServer",
    "RingTransport",
    "create_connection",
    "create_server",
    "create_unix_connection",
    "create_unix_server",
    "open_connection",
    "open_unix_connection",
    "start_server",
    "start_tls",
    "start_unix_server",
    "stream_start_tls",
]

start_tls = _asyncio_tls.start_tls
stream_start_tls = _asyncio_tls.stream_start_tls

_READ_SIZE = 256 * 1024  # as selector transports: max_size of one data_received


class RingTransport(asyncio.Transport):
    """A stream socket's transport driven by the loop's ring."""

    # loop.start_tls (asyncio's) checks this, then pause_reading,
    # set_protocol, resume_reading: between the first and the last nothing
    # is delivered, to the old protocol or the new one.
    _start_tls_compatible = True

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        protocol: asyncio.BaseProtocol,
        waiter: asyncio.Future[None] | None = None,
        server: RingServer | None = None,
    ) -> None:
        super().__init__()
        self._info: dict[str, Any] = {"socket": trsock.TransportSocket(sock)}
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._ring: Ring = _loop_uring()
        self._protocol = protocol
        self._buffered = isinstance(protocol, asyncio.BufferedProtocol)
        self._server = server
        with _suppress_oserror():
            self._info["sockname"] = sock.getsockname()
        if "peername" not in self._info:
            with _suppress_oserror():
                self._info["peername"] = sock.getpeername()
        sock.setblocking(False)  # the ring never blocks; sync syscalls here must not either
        # Reading: the multishot queue (or a one-shot receive in flight).
        self._rx: Receiver | None = Receiver() if self._ring.recv_group() is not None else None
        self._recv_op: RecvBytes | None = None
        self._held: bytes | None = None  # a one-shot receive's data, come while paused
        self._read_fut: asyncio.Future[None] | None = None
        self._paused = False
        self._eof = False
        # Writing: what write() queued, and the send in flight.
        self._buffer: collections.deque[bytes | memoryview] = collections.deque()
        self._buffer_size = 0
        self._send_op: Send[Any] | None = None
        self._eof_requested = False
        self._eof_written = False
        self._high = 64 * 1024
        self._low = 16 * 1024
        self._protocol_paused = False
        # Closing: close() waits for the buffer; abort() and errors do not.
        self._closing = False
        self._lost = False
        if server is not None:
            server._attach(self)
        loop.call_soon(self._start, waiter)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """``socket``, ``sockname``, ``peername``, as asyncio's socket transports."""
        return self._info.get(name, default)

    def __repr__(self) -> str:
        state = "closed" if self._lost else "closing" if self._closing else "open"
        return f"<RingTransport fd={self._fd} {state}>"

    def _start(self, waiter: asyncio.Future[None] | None) -> None:
        if self._closing:
            if waiter is not None and not waiter.done():
                waiter.set_exception(ConnectionError("the transport was closed"))
            return
        self._protocol.connection_made(self)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if not self._closing:
            self._read_step()

    # -- reading ------------------------------------------------------------------------

    def is_reading(self) -> bool:
        return not self._paused and not self._closing

    def pause_reading(self) -> None:
        # What arrives meanwhile waits in the queue (bounded: then TCP's window).
        self._paused = True

    def resume_reading(self) -> None:
        if not self._paused:
            return
        self._paused = False
        if not self._closing and self._read_fut is None and self._recv_op is None:
            # (_read_step checks again: a pause and resume within one
            # iteration schedule it twice)
            self._loop.call_soon(self._read_step)

    def _read_step(self) -> None:
        """Hand the protocol what arrived, until it pauses or nothing is left;
        then wait for the next arrival."""
        rx = self._rx
        if rx is None:
            if self._paused or self._closing:
                return
            held, self._held = self._held, None
            if held is not None:
                self._deliver_one_shot(held)
            elif self._recv_op is None:
                self._recv_one_shot()
            return
        while not self._paused and not self._closing and not self._eof:
            try:
                if self._buffered:
                    buf = self._protocol.get_buffer(-1)  # type: ignore[attr-defined]
                    n = rx.take_into(buf, 0)
                    if n is None:
                        break
                    if n == 0:
                        self._got_eof()
                        return
                    self._protocol.buffer_updated(n)  # type: ignore[attr-defined]
                else:
                    data = rx.take(_READ_SIZE)
                    if data is None:
                        break
                    if not data:
                        self._got_eof()
                        return
                    self._protocol.data_received(data)  # type: ignore[attr-defined]
            except OSError as exc:
                self._fatal_error(exc, "fatal read error")
                return
            except Exception as exc:  # noqa: BLE001 - the protocol's bug ends the connection
                self._fatal_error(exc, "the protocol failed on received data")
                return
        if self._paused or self._closing or self._eof:
            return
        if self._read_fut is not None:  # already waiting (a resume_reading's step)
            return
        if rx.op is None:  # not armed: the first read, or the kernel ended the last
            arm_receive(self._ring, rx, self._fd)
        fut = self._read_fut = self._loop.create_future()
        rx.waiter = fut
        fut.add_done_callback(self._arrived)

    def _arrived(self, fut: asyncio.Future[None]) -> None:
        if self._read_fut is fut:
            self._read_fut = None
            if self._rx is not None:
                self._rx.waiter = None
        if not self._closing:
            self._read_step()

    def _recv_one_shot(self) -> None:
        op = self._recv_op = RecvBytes(self._fd, _READ_SIZE)
        fut = self._loop.create_future()
        self._ring.submit(op, fut)  # the ring wakes fut at the final CQE
        fut.add_done_callback(self._received_one_shot)

    def _received_one_shot(self, _: asyncio.Future[None]) -> None:
        op, self._recv_op = self._recv_op, None
        if op is None or self._closing:
            return
        try:
            data = op.outcome()
        except FdClosedError:
            return
        except OSError as exc:
            self._fatal_error(exc, "fatal read error")
            return
        if self._paused:
            # As the proactor's transports: what a receive in flight brought
            # waits for resume_reading, and goes to the protocol set by then
            # (loop.start_tls pauses, swaps the protocol, resumes).
            self._held = data
            return
        self._deliver_one_shot(data)

    def _deliver_one_shot(self, data: bytes) -> None:
        try:
            if not data:
                self._got_eof()
                return
            if self._buffered:
                _feed_buffered(self._protocol, data)
            else:
                self._protocol.data_received(data)  # type: ignore[attr-defined]
        except Exception as exc:  # noqa: BLE001 - the protocol's bug ends the connection
            self._fatal_error(exc, "the protocol failed on received data")
            return
        if not self._paused and not self._closing:
            self._recv_one_shot()

    def _got_eof(self) -> None:
        self._eof = True
        try:
            keep_open = self._protocol.eof_received()  # type: ignore[attr-defined]
        except Exception as exc:  # noqa: BLE001 - the protocol's bug ends the connection
            self._fatal_error(exc, "the protocol failed on end of stream")
            return
        if not keep_open:
            self.close()

    # -- writing ------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(
                f"data argument must be a bytes-like object, not {type(data).__name__!r}"
            )
        if self._eof_requested:
            raise RuntimeError("Cannot call write() after write_eof()")
        if self._closing:  # (set before _lost, by close, abort and errors)
            return  # asyncio's transports ignore writes after close too
        if not data:
            return
        chunk = data if type(data) is bytes else bytes(data)
        self._buffer.append(chunk)
        self._buffer_size += len(chunk)
        if self._send_op is None:
            self._send_next()
        self._maybe_pause_protocol()

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        for data in list_of_data:
            self.write(data)

    def _send_next(self) -> None:
        buffer = self._buffer
        chunk = buffer.popleft() if len(buffer) == 1 else b"".join(_drain(buffer))
        op = self._send_op = Send(self._fd, chunk)
        fut = self._loop.create_future()
        self._ring.submit(op, fut)  # the ring wakes fut at the final CQE
        fut.add_done_callback(self._sent)

    def _sent(self, _: asyncio.Future[None]) -> None:
        op, self._send_op = self._send_op, None
        if op is None or self._lost:
            return
        try:
            buf, n = op.outcome()
        except FdClosedError:
            return
        except OSError as exc:
            self._fatal_error(exc, "fatal write error")
            return
        self._buffer_size -= n
        if n < len(buf):
            self._buffer.appendleft(memoryview(buf)[n:])
        if self._buffer:
            self._send_next()
        self._maybe_resume_protocol()
        if self._send_op is None:
            if self._eof_requested and not self._eof_written:
                self._shutdown_write()
            if self._closing:
                self._finish_close(None)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        if self._closing or self._eof_requested:
            return
        self._eof_requested = True
        if self._send_op is None:
            self._shutdown_write()

    def _shutdown_write(self) -> None:
        self._eof_written = True
        try:
            self._sock.shutdown(socket.SHUT_WR)  # does not block; ends no receive
        except OSError as exc:
            self._fatal_error(exc, "shutdown failed")

    def get_write_buffer_size(self) -> int:
        return self._buffer_size

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (self._low, self._high)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is None:
            high = 64 * 1024 if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high, self._low = high, low
        self._maybe_pause_protocol()

    def _maybe_pause_protocol(self) -> None:
        if not self._protocol_paused and self._buffer_size > self._high:
            self._protocol_paused = True
            self._tell_protocol("pause_writing")

    def _maybe_resume_protocol(self) -> None:
        if self._protocol_paused and self._buffer_size <= self._low:
            self._protocol_paused = False
            self._tell_protocol("resume_writing")

    def _tell_protocol(self, method: str) -> None:
        # As asyncio's _FlowControlMixin: a failing flow-control callback is
        # reported to the loop and does not end the connection.
        try:
            getattr(self._protocol, method)()
        except Exception as exc:  # noqa: BLE001 - reported, as asyncio does
            self._loop.call_exception_handler(
                {
                    "message": f"protocol.{method}() failed",
                    "exception": exc,
                    "transport": self,
                    "protocol": self._protocol,
                }
            )

    # -- closing ------------------------------------------------------------------------

    def is_closing(self) -> bool:
        return self._closing

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol
        self._buffered = isinstance(protocol, asyncio.BufferedProtocol)

    def close(self) -> None:
        """Stop reading; the buffered data is still sent, then the socket
        closes and ``connection_lost(None)`` is called."""
        if self._closing:
            return
        self._closing = True
        self._stop_reading()
        if self._send_op is None:
            self._finish_close(None)

    def abort(self) -> None:
        """Close at once: buffered data is dropped, the send in flight
        cancelled (it may still have sent)."""
        self._force_close(None)

    def _fatal_error(self, exc: Exception, message: str) -> None:
        # As asyncio's transports: a socket error ends the connection (the
        # protocol sees it in connection_lost); anything else is a bug worth
        # the loop's exception handler.
        if not isinstance(exc, OSError):
            self._loop.call_exception_handler(
                {
                    "message": message,
                    "exception": exc,
                    "transport": self,
                    "protocol": self._protocol,
                }
            )
        self._force_close(exc)

    def _force_close(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._closing = True
        self._stop_reading()
        self._buffer.clear()
        self._buffer_size = 0
        self._finish_close(exc)

    def _stop_reading(self) -> None:
        rx = self._rx
        if rx is not None:
            rx.waiter = None
            rx.close()  # nothing more is queued; what was is dropped
        if self._read_fut is not None:
            self._read_fut.cancel()
            self._read_fut = None

    def _finish_close(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        ring = self._ring
        # Every operation on the fd ends before its number can be reused:
        # queued ones are withdrawn, the kernel's cancelled (a send in flight
        # keeps its buffer until its CQE); the requests go in this iteration.
        if not ring.closed:
            ring.cancel_fd(self._fd)
        self._send_op = self._recv_op = None
        self._loop.call_soon(self._call_connection_lost, exc)

    def _call_connection_lost(self, exc: Exception | None) -> None:
        try:
            self._protocol.connection_lost(exc)
        finally:
            self._sock.close()
            self._protocol = None  # type: ignore[assignment]
            # As asyncio's: the server's wait_closed() returns once every
            # connection's socket is closed, not before.
            server, self._server = self._server, None
            if server is not None:
                server._detach(self)

    def __del__(self) -> None:
        if getattr(self, "_sock", None) is not None and not getattr(self, "_lost", True):
            import warnings

            warnings.warn(
                f"unclosed transport {self!r}", ResourceWarning, source=self, stacklevel=1
            )
            self._sock.close()


class RingServer(asyncio.AbstractServer):
    """What ``create_server`` returns: asyncio's ``Server`` interface over
    listening sockets whose accepts go through the ring (one accept loop task
    per socket)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sockets: list[socket.socket],
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        backlog: int,
        tls: TLS | None = None,
    ) -> None:
        self._loop = loop
        self._tls = tls
        self._listeners = sockets
        self._protocol_factory = protocol_factory
        self._backlog = backlog
        self._accepting: list[asyncio.Task[None]] = []
        self._transports: set[RingTransport] = set()
        self._serving = False
        self._closed = False
        self._serving_forever: asyncio.Future[None] | None = None
        self._waiters: list[asyncio.Future[None]] = []

    def __repr__(self) -> str:
        return f"<RingServer sockets={self.sockets!r}>"

    @property
    def sockets(self) -> tuple[trsock.TransportSocket, ...]:
        return tuple(trsock.TransportSocket(s) for s in self._listeners)

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return self._serving

    async def start_serving(self) -> None:
        self._start()
        # A schedule point, as asyncio's, after the effect: the server serves,
        # and a cancel arriving here is delivered at the caller's next await.
        await _sync.deliver_later(asyncio.sleep(0))

    def _start(self) -> None:
        if self._serving or self._closed:
            return
        self._serving = True
        for sock in self._listeners:
            sock.listen(self._backlog)
            self._accepting.append(self._loop.create_task(self._accept_loop(sock)))

    async def _accept_loop(self, listener: socket.socket) -> None:

        while True:
            try:
                conn, addr = await _api.accept(listener)
            except asyncio.CancelledError:
                raise
            except OSError as exc:
                if self._closed:
                    # close() shut the listener down: the accept in flight
                    # ends with an error (EINVAL) rather than a cancel.
                    return
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # asyncio's own reaction to fd exhaustion: report, wait, retry
                    self._loop.call_exception_handler(
                        {
                            "message": "socket.accept() out of system resource",
                            "exception": exc,
                            "socket": trsock.TransportSocket(listener),
                        }
                    )
                    await asyncio.sleep(1)
                    continue
                raise
            try:
                protocol = self._protocol_factory()
            except BaseException:
                conn.close()
                raise
            if self._tls is None:
                transport = RingTransport(self._loop, conn, protocol, server=self)
                transport._info["peername"] = addr
            else:
                self._serve_tls(conn, addr, protocol, self._tls)

    def _serve_tls(
        self, conn: socket.socket, addr: Any, protocol: asyncio.BaseProtocol, tls: TLS
    ) -> None:
        """As asyncio's ``_accept_connection2``: the SSLProtocol calls the
        application's ``connection_made`` once the handshake is done; a failed
        handshake (its SSLProtocol closed the socket) is reported only in
        debug mode. A callback rather than a task per connection: nothing
        waits for it."""
        loop = self._loop
        waiter: asyncio.Future[None] = loop.create_future()
        ssl_protocol = _asyncio_tls.ssl_protocol(loop, protocol, tls, waiter)
        transport = RingTransport(loop, conn, ssl_protocol, server=self)
        transport._info["peername"] = addr

        def handshake_done(waiter: asyncio.Future[None]) -> None:
            exc = None if waiter.cancelled() else waiter.exception()
            if exc is None:
                return
            transport.abort()
            if loop.get_debug():
                loop.call_exception_handler(
                    {
                        "message": "Error on transport creation for incoming connection",
                        "exception": exc,
                        "protocol": protocol,
                        "transport": transport,
                    }
                )

        waiter.add_done_callback(handshake_done)

    def _attach(self, transport: RingTransport) -> None:
        self._transports.add(transport)

    def _detach(self, transport: RingTransport) -> None:
        self._transports.discard(transport)
        self._wake_if_done()

    def _wake_if_done(self) -> None:
        if self._closed and not self._transports:
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def close(self) -> None:
        """Stop accepting and close the listening sockets; connections stay
        open (``close_clients``/``abort_clients`` end them)."""
        if self._closed:
            return
        self._closed = True
        self._serving = False
        for task in self._accepting:
            task.cancel()
        self._accepting = []
        ring = _asyncio.loop_ring()
        for sock in self._listeners:
            if not ring.closed:
                ring.cancel_fd(sock)  # an accept in flight takes no connection
            # An accept in the kernel holds the listening file until its
            # cancel completes (next iteration): shutdown() stops the
            # listening now, so a connect from here on is refused.
            with _suppress_oserror():
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._listeners = []
        if self._serving_forever is not None and not self._serving_forever.done():
            self._serving_forever.cancel()
        self._wake_if_done()

    def close_clients(self) -> None:
        for transport in list(self._transports):
            transport.close()

    def abort_clients(self) -> None:
        for transport in list(self._transports):
            transport.abort()

    async def wait_closed(self) -> None:
        """Wait until the server is closed and every connection it accepted
        has ended (asyncio 3.12's meaning)."""
        if self._closed and not self._transports:
            return
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        await waiter

    async def serve_forever(self) -> None:
        if self._serving_forever is not None:
            raise RuntimeError(f"server {self!r} is already being awaited on serve_forever()")
        if self._closed:
            raise RuntimeError(f"server {self!r} is closed")
        self._start()
        self._serving_forever = self._loop.create_future()
        try:
            await self._serving_forever
        except asyncio.CancelledError:
            try:
                self.close()
                await self.wait_closed()
            finally:
                raise
        finally:
            self._serving_forever = None

    async def __aenter__(self) -> RingServer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()
        await self.wait_closed()


# -- making connections and servers ---------------------------------------------------


def _loop_uring() -> Ring:
    """The running loop's io_uring ring. The transports are built on its
    queue (``submit`` with a Future as the waiter, multishot receives), which
    the thread fallback's ring does not have: there, this raises before any
    socket is made."""
    ring = _asyncio.loop_ring()
    if not isinstance(ring, Ring):
        raise UnsupportedError(
            errno.EOPNOTSUPP,
            f"ouring.asyncio's transports need io_uring, and this loop runs the thread "
            f"fallback ({ring!r}): asyncio's own transports (loop.create_connection, "
            "asyncio.open_connection, asyncio.start_server) do the same over readiness",
        )
    return ring


async def _connected_transport(
    sock: socket.socket,
    protocol_factory: Callable[[], asyncio.BaseProtocol],
    tls: TLS | None = None,
) -> tuple[asyncio.Transport, asyncio.BaseProtocol]:
    """The transport of a connected ``sock``, once ``connection_made`` ran.
    The connection exists already: a cancel while waiting for that is
    delivered at the caller's next await, and the transport returned (the
    call happened; closing it would not undo the connect). With ``tls``, the
    TLS transport once the handshake is done (see ``_tls_transport``)."""
    if tls is not None:
        return await _tls_transport(sock, protocol_factory, tls)
    loop = asyncio.get_running_loop()
    try:
        protocol = protocol_factory()
    except BaseException:
        sock.close()  # no transport holds it yet, and the ring has nothing on it
        raise
    waiter = loop.create_future()
    transport = RingTransport(loop, sock, protocol, waiter)
    try:
        await _sync.deliver_later(asyncio.shield(waiter))
    except BaseException:
        transport.close()
        raise
    return transport, protocol


async def _tls_transport(
    sock: socket.socket, protocol_factory: Callable[[], asyncio.BaseProtocol], tls: TLS
) -> tuple[asyncio.Transport, asyncio.BaseProtocol]:
    """asyncio's way over any transport: the ring transport carries an
    ``SSLProtocol`` that wraps the user's protocol and calls its
    ``connection_made`` with the TLS transport once the handshake is done.
    The handshake is a suspension of its own: a cancel before it completed
    aborts the connection (no fd left; the peer's handshake fails, so no
    server handed it to its application) and raises; a failed handshake
    raises its error (``ssl.SSLCertVerificationError``, ``ConnectionAbortedError``
    at ``ssl_handshake_timeout``) with the socket closed."""
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    try:
        protocol = protocol_factory()
        ssl_protocol = _asyncio_tls.ssl_protocol(loop, protocol, tls, waiter)
    except BaseException:
        sock.close()  # no transport holds it yet, and the ring has nothing on it
        raise
    app: asyncio.Transport = ssl_protocol._app_transport  # (connection_lost drops it)
    raw = RingTransport(loop, sock, ssl_protocol)
    await _asyncio_tls.handshake(waiter, raw.abort)
    return app, protocol


async def create_connection(
    protocol_factory: Callable[[], asyncio.BaseProtocol],
    host: str | None = None,
    port: int | None = None,
    *,
    family: int = 0,
    proto: int = 0,
    flags: int = 0,
    sock: socket.socket | None = None,
    local_addr: tuple[str, int] | None = None,
    ssl: Any = None,
    server_hostname: str | None = None,
    ssl_handshake_timeout: float | None = None,
    ssl_shutdown_timeout: float | None = None,
    **kwds: Any,
) -> tuple[asyncio.Transport, asyncio.BaseProtocol]:
    """``loop.create_connection`` over the ring: the addresses of ``host`` are
    tried in turn (happy eyeballs: not supported yet). ``ssl`` (an
    ``ssl.SSLContext``, or True for asyncio's default client context) and its
    arguments as asyncio's: the call returns once the handshake is done."""

    tls = _asyncio_tls.client_tls(
        ssl, server_hostname, host, ssl_handshake_timeout, ssl_shutdown_timeout
    )
    _loop_uring()
    if sock is not None:
        _asyncio_tls.check_socket(sock)
        if host is not None or port is not None:
            raise ValueError("host/port and sock can not be specified at the same time")
        return await _connected_transport(sock, protocol_factory, tls)
    if host is None and port is None:
        raise ValueError("host and port was not specified and no sock specified")
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(
        host, port, family=family, type=socket.SOCK_STREAM, proto=proto, flags=flags
    )
    if not infos:
        raise OSError("getaddrinfo() returned empty list")
    errors: list[OSError] = []
    for fam, type_, pro, _, address in infos:
        conn = socket.socket(fam, type_, pro)
        try:
            conn.setblocking(False)
            if local_addr is not None:
                conn.bind(local_addr)
            await _api.connect(conn, address)
        except OSError as exc:
            conn.close()
            errors.append(exc)
            continue
        except BaseException:
            conn.close()
            raise
        return await _connected_transport(conn, protocol_factory, tls)
    if len(errors) == 1:
        raise errors[0]
    raise OSError(f"Multiple exceptions: {', '.join(str(exc) for exc in errors)}")


async def create_unix_connection(
    protocol_factory: Callable[[], asyncio.BaseProtocol],
    path: str | os.PathLike[str] | None = None,
    *,
    sock: socket.socket | None = None,
    ssl: Any = None,
    server_hostname: str | None = None,
    ssl_handshake_timeout: float | None = None,
    ssl_shutdown_timeout: float | None = None,
) -> tuple[asyncio.Transport, asyncio.BaseProtocol]:
    """``loop.create_unix_connection`` over the ring (``ssl`` as
    ``create_connection``'s, with ``server_hostname`` required)."""

    tls = _asyncio_tls.client_tls(
        ssl, server_hostname, None, ssl_handshake_timeout, ssl_shutdown_timeout, unix=True
    )
    _loop_uring()
    if sock is not None:
        _asyncio_tls.check_socket(sock)
    if sock is None:
        if path is None:
            raise ValueError("no path and sock were specified")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            await _api.connect(sock, os.fspath(path))
        except BaseException:
            sock.close()
            raise
    elif path is not None:
        raise ValueError("path and sock can not be specified at the same time")
    return await _connected_transport(sock, protocol_factory, tls)


async def create_server(
    protocol_factory: Callable[[], asyncio.BaseProtocol],
    host: str | Iterable[str] | None = None,
    port: int | None = None,
    *,
    family: int = socket.AF_UNSPEC,
    flags: int = socket.AI_PASSIVE,
    sock: socket.socket | None = None,
    backlog: int = 100,
    reuse_address: bool | None = None,
    reuse_port: bool | None = None,
    start_serving: bool = True,
    ssl: Any = None,
    ssl_handshake_timeout: float | None = None,
    ssl_shutdown_timeout: float | None = None,
    **kwds: Any,
) -> RingServer:
    """``loop.create_server`` over the ring; with ``ssl`` (an
    ``ssl.SSLContext``) each connection reaches the protocol once its
    handshake is done."""
    tls = _asyncio_tls.server_tls(ssl, ssl_handshake_timeout, ssl_shutdown_timeout)
    _loop_uring()
    loop = asyncio.get_running_loop()
    if sock is not None:
        _asyncio_tls.check_socket(sock)
        if host is not None or port is not None:
            raise ValueError("host/port and sock can not be specified at the same time")
        sockets = [sock]
    else:
        hosts: list[str | None] = (
            [host] if host is None or isinstance(host, str) else list(host)
        ) or [None]
        if reuse_address is None:
            reuse_address = os.name == "posix" and sys.platform != "cygwin"
        infos = []
        for h in hosts:
            infos += await loop.getaddrinfo(
                h, port, family=family, type=socket.SOCK_STREAM, flags=flags
            )
        sockets = []
        try:
            for fam, type_, pro, _, address in dict.fromkeys(infos):
                listener = socket.socket(fam, type_, pro)
                sockets.append(listener)
                if reuse_address:
                    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if reuse_port:
                    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if fam == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                    listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, True)
                listener.bind(address)
        except BaseException:
            for listener in sockets:
                listener.close()
            raise
    for listener in sockets:
        listener.setblocking(False)
    server = RingServer(loop, sockets, protocol_factory, backlog, tls)
    if start_serving:
        await server.start_serving()  # listening: the call happened
    return server


async def create_unix_server(
    protocol_factory: Callable[[], asyncio.BaseProtocol],
    path: str | os.PathLike[str] | None = None,
    *,
    sock: socket.socket | None = None,
    backlog: int = 100,
    start_serving: bool = True,
    ssl: Any = None,
    ssl_handshake_timeout: float | None = None,
    ssl_shutdown_timeout: float | None = None,
    **kwds: Any,
) -> RingServer:
    """``loop.create_unix_server`` over the ring (``ssl`` as ``create_server``'s)."""
    _asyncio_tls.server_tls(ssl, ssl_handshake_timeout, ssl_shutdown_timeout, unix=True)
    _loop_uring()
    if sock is None:
        if path is None:
            raise ValueError("path was not specified, and no sock specified")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(os.fspath(path))
        except BaseException:
            sock.close()
            raise
    elif path is not None:
        raise ValueError("path and sock can not be specified at the same time")
    return await create_server(
        protocol_factory,
        sock=sock,
        backlog=backlog,
        start_serving=start_serving,
        ssl=ssl,
        ssl_handshake_timeout=ssl_handshake_timeout,
        ssl_shutdown_timeout=ssl_shutdown_timeout,
    )


# -- asyncio's streams over them ------------------------------------------------------

_LIMIT = 2**16  # asyncio.streams._DEFAULT_LIMIT


async def open_connection(
    host: str | None = None, port: int | None = None, *, limit: int = _LIMIT, **kwds: Any
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """``asyncio.open_connection`` over the ring: asyncio's own reader and writer."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport, _ = await create_connection(lambda: protocol, host, port, **kwds)
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)


async def open_unix_connection(
    path: str | os.PathLike[str] | None = None, *, limit: int = _LIMIT, **kwds: Any
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """``asyncio.open_unix_connection`` over the ring."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport, _ = await create_unix_connection(lambda: protocol, path, **kwds)
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)


_ClientConnected = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]


def _stream_factory(client_connected_cb: _ClientConnected, limit: int) -> Callable[[], Any]:
    loop = asyncio.get_running_loop()

    def factory() -> asyncio.StreamReaderProtocol:
        reader = asyncio.StreamReader(limit=limit, loop=loop)
        return asyncio.StreamReaderProtocol(reader, client_connected_cb, loop=loop)

    return factory


async def start_server(
    client_connected_cb: _ClientConnected,
    host: str | Iterable[str] | None = None,
    port: int | None = None,
    *,
    limit: int = _LIMIT,
    **kwds: Any,
) -> RingServer:
    """``asyncio.start_server`` over the ring."""
    return await create_server(_stream_factory(client_connected_cb, limit), host, port, **kwds)


async def start_unix_server(
    client_connected_cb: _ClientConnected,
    path: str | os.PathLike[str] | None = None,
    *,
    limit: int = _LIMIT,
    **kwds: Any,
) -> RingServer:
    """``asyncio.start_unix_server`` over the ring."""
    return await create_unix_server(_stream_factory(client_connected_cb, limit), path, **kwds)


def _drain(buffer: collections.deque[bytes | memoryview]) -> Iterable[bytes | memoryview]:
    while buffer:
        yield buffer.popleft()


def _feed_buffered(protocol: Any, data: bytes) -> None:
    """``data`` to a BufferedProtocol, in as many buffers as it offers."""
    view = memoryview(data)
    while view:
        buf = memoryview(protocol.get_buffer(len(view))).cast("B")
        n = min(len(buf), len(view))
        if not n:
            raise RuntimeError("get_buffer() returned an empty buffer")
        buf[:n] = view[:n]
        protocol.buffer_updated(n)
        view = view[n:]


class _suppress_oserror:
    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        return exc_type is not None and issubclass(exc_type, OSError)
