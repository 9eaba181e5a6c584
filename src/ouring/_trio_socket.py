"""ouring's trio socket: a ``trio.socket.SocketType`` whose I/O is io_uring's.

``UringSocket`` wraps a stdlib socket, as trio's own socket class does, and
has every member of trio's socket with trio's semantics (same values, same
exceptions, a checkpoint per I/O call, ``Cancelled`` meaning it did not
happen). ``recv``, ``recv_into``, ``send``, ``accept`` and ``connect`` are
io_uring recv, send, accept and connect; ``recvfrom``, ``recvfrom_into``,
``recvmsg``, ``recvmsg_into``, ``sendto`` and ``sendmsg`` are recvmsg and
sendmsg. Because it is a ``trio.socket.SocketType``, trio's final classes
``trio.SocketStream`` and ``trio.SocketListener`` accept it, and
``trio.socket.set_custom_socket_factory`` (:func:`install`) makes
``trio.socket.socket()`` and so ``trio.open_tcp_stream``, ``trio.serve_tcp``,
``trio.open_tcp_listeners`` and every library built on them return it;
:func:`install` also wraps trio's constructors that ignore the factory
(``from_stdlib_socket``, ``fromfd``, ``socketpair``, ``socket(fileno=)``).

Facts this module relies on:

- trio's socket makes one direction wait at a time: a second task that has
  to wait for readability (or writability) of an fd another task already
  waits on gets ``BusyResourceError`` (``trio.testing``'s stream checks ask
  for it on ``receive_some``). Here the read direction (recv*, accept) and the
  write direction (send*, connect) each keep their operation in flight in a
  slot; a call that finds its direction's operation still in the ring gets
  ``BusyResourceError`` too, except a send behind a send the kernel has not
  seen yet (it cannot have waited): that one is queued beside it, as trio
  lets a send through when the first did not wait.
- ``close(2)`` does not stop operations in flight on an fd (each holds its
  own reference to the file), so ``close()`` first asks the ring to cancel the
  slots' operations (``Ring.cancel(op, CLOSED)``): their tasks get
  ``trio.ClosedResourceError``, as trio's ``notify_closing`` gives tasks
  waiting in ``wait_readable``; then it calls ``notify_closing`` for the
  epoll waiters (``wait_writable``) and closes.
- ``recv``, ``receive_into``, ``accept`` and ``send`` leave their completed
  operation in the slot until the next call in that direction (or
  ``close``); the others empty it when they return. The slot is how the next
  ``recv`` learns how much the last one received (the adaptive size below),
  and it lets ``recv`` and ``send`` return the executor's coroutine with no
  wrapper coroutine of their own. A completed operation holds the caller's
  object (``receive_into``'s buffer, the sent data), never a buffer export: the ring
  released the lease at the CQE.
- A TCP socket on a ring with provided buffers (``Ring.recv_group``, Linux
  6.0+) receives through one multishot recv (``MultishotReceive``), armed at
  its first receive: the kernel picks a ring buffer only when data arrives,
  the bytes go to the socket's ``Receiver`` (copied out, or, from half a
  buffer up, the buffer's own bytes object handed over and replaced) and the
  buffer goes straight back. Every receive of the socket (recv, recv_into, recvfrom,
  recvmsg and their ``_into`` forms, ``receive_into``) takes from that queue,
  in order; it parks only when the queue is empty, and a cancel then only
  ends the wait: what arrives afterwards stays queued. ``MSG_PEEK`` and
  ``MSG_WAITALL`` are served from the queue; other flags (``MSG_OOB``,
  ``MSG_ERRQUEUE``, ``MSG_TRUNC``) are one-shot operations. The multishot
  recv carries no ancillary data, so ``recvmsg`` on such a socket returns none
  (TCP has none to carry but timestamps), and unix sockets, whose ancillary
  data passes fds, always receive one-shot. The queue is bounded
  (``Receiver.limit``): past it the kernel's multishot is stopped, the socket
  buffer fills and TCP's window closes, until a receive drains the queue.
- trio calls ``socket.recv(65536)`` for every one-shot ``receive_some``. The kernel
  writes into a new bytes object that is allocated when the receive is
  submitted and parked with it, so a stream socket asks for what recently
  arrived instead (from 16 KiB, doubled after a full receive, halved after
  one under a quarter full, never above what the caller allows): a stream
  socket may return fewer bytes than asked. Datagram sockets and explicit
  ``flags`` always ask for the full size (a datagram is cut to the buffer).
- ``send`` passes ``MSG_NOSIGNAL``: a peer that went away is ``EPIPE``, not
  ``SIGPIPE``, whatever the program did with that signal.
- ``shutdown`` is synchronous in trio's interface (``SocketStream.send_eof``
  calls it without awaiting), so it is the ``shutdown(2)`` syscall here too;
  ``bind``, ``listen``, the options and addresses are plain syscalls, as in
  trio. ``is_readable`` and ``wait_writable`` are readiness questions that no
  ring operation answers: ``poll(2)`` and trio's epoll, as in trio.
"""

from __future__ import annotations

import errno
import functools
import operator
import os
import select
import socket as _stdlib_socket
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

import trio

from ._accept import Acceptor, peer_address
from ._buffers import MAX_RW
from ._current import ring_of_task as current_ring  # no Python frame: asked per operation
from ._ops import (
    CANCELLING,
    CLOSED,
    DONE,
    PENDING,
    SUBMITTED,
    Accept,
    Connect,
    Recv,
    RecvBytes,
    RecvMsg,
    SendCount,
    SendMsg,
)
from ._ring import Ring
from ._ringcore import Operation as CoreOperation
from ._ringcore import Receiver

if TYPE_CHECKING:
    from types import TracebackType
    from typing import Self

    from typing_extensions import Buffer

    from ._ops import Operation

__all__ = ["SocketFactory", "UringSocket", "custom_socket_factory", "install"]

B = TypeVar("B")
P = ParamSpec("P")
T = TypeVar("T")

# recv's adaptive size (see the module docstring): where it starts, how small it gets.
INITIAL_RECEIVE_SIZE = 16384
MIN_RECEIVE_SIZE = 4096

_SOCK_STREAM = _stdlib_socket.SOCK_STREAM
_AF_INET = _stdlib_socket.AF_INET
_AF_INET6 = _stdlib_socket.AF_INET6
_AF_UNIX = _stdlib_socket.AF_UNIX
_MSG_NOSIGNAL = int(_stdlib_socket.MSG_NOSIGNAL)  # an int: IntFlag | int is slow
# trio's socket meets EAGAIN (BlockingIOError) by waiting for readiness and
# trying again, so MSG_DONTWAIT never reaches its caller; io_uring would hand
# -EAGAIN back. The flag is dropped: the operation waits, as trio's does.
_WAIT = ~int(_stdlib_socket.MSG_DONTWAIT)
_MSG_PEEK = int(_stdlib_socket.MSG_PEEK)
_MSG_WAITALL = int(_stdlib_socket.MSG_WAITALL)
_BUSY = "another task is already reading / writing this fd"  # trio's words
_checkpoint = trio.lowlevel.checkpoint
_checkpoint_if_cancelled = trio.lowlevel.checkpoint_if_cancelled
_cancel_shielded_checkpoint = trio.lowlevel.cancel_shielded_checkpoint


def _busy(op: Operation[Any] | None) -> bool:
    """The ring (or the kernel) still has ``op``: its direction is taken."""
    return op is not None and PENDING <= op.state <= CANCELLING


def _cancel_for_close(op: Operation[Any] | None, ring: Ring | None) -> None:
    """``op``'s fd is being closed (by this socket, or by ouring's own stream
    and listener): if the kernel may still run it, it is cancelled and its
    task gets ``ClosedResourceError``."""
    if op is not None and ring is not None and op.state in (PENDING, SUBMITTED) and not ring.closed:
        ring.cancel(op, CLOSED)


def _stop_now(op: CoreOperation | None, ring: Ring | None) -> None:
    """End a socket's multishot ``op`` before its fd changes hands: whatever
    it delivers is in its queue on return. Refused (``BusyResourceError``)
    from a thread that does not own its ring, or if the kernel did not end it
    at once."""
    if op is None or ring is None or ring.closed:
        return  # not armed, or ended (or leaked) by its ring's close
    if threading.get_ident() != ring._thread:
        raise trio.BusyResourceError("this socket receives or accepts on another thread's ring")
    if not ring.cancel_now(op):
        raise trio.BusyResourceError(
            "the kernel has not ended this socket's multishot operation yet: try again"
        )


def _waiting(flags: Any) -> int:
    """``flags`` without ``MSG_DONTWAIT`` (see ``_WAIT``)."""
    return operator.index(flags) & _WAIT


async def _sent_nothing() -> int:
    await _checkpoint()
    return 0  # send(b"") sends nothing and returns at once, as send(2)


async def _raise_busy() -> Any:
    await _checkpoint_if_cancelled()
    raise trio.BusyResourceError(_BUSY)


async def _sync_call(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` between a cancel point and a schedule point, exceptions
    included: what trio's socket calls do around a syscall that does not
    block (here: one that raises at once, like any call on a closed socket)."""
    await _checkpoint_if_cancelled()
    try:
        return fn(*args)
    finally:
        await _cancel_shielded_checkpoint()


def bind_receiver(
    rx: Receiver | None, rx_ring: Ring | None, ring: Ring
) -> tuple[Receiver | None, Ring | None]:
    """A TCP socket's multishot queue and its ring, for a receive on
    ``ring``: made at the first receive on a ring with provided buffers
    (``Ring.recv_group``); moved to ``ring`` when its own ring is gone (its
    trio run ended); kept on the old ring only while it still holds
    something if ``ring`` has no provided buffers (the receives after it are
    one-shot); ``(None, None)``: one-shot receives."""
    if rx is not None and rx.op is not None:
        if not rx_ring.closed:  # type: ignore[union-attr]
            raise trio.BusyResourceError("this socket receives on another ring")
        rx.op = None  # ended by its ring's close, or leaked by it
    if ring.executor is not None and ring.recv_group() is not None:
        return (rx if rx is not None else Receiver()), ring
    if rx is not None and rx.ready:
        return rx, rx_ring
    return None, None


def close_receiver(rx: Receiver | None, ring: Ring | None) -> None:
    """End a multishot queue with its socket: the kernel's multishot is
    cancelled, what is queued is dropped, and a task parked on it gets
    ``ClosedResourceError``."""
    if rx is None:
        return
    waiter = rx.close()  # any thread: from here on nothing more is queued
    if ring is None:
        return
    if threading.get_ident() != ring._thread:
        # Closed from another thread (trio.to_thread): the ring, its
        # operations and the parked task belong to the ring's thread. The
        # multishot is matched by its operation, not by the fd number, so
        # the fd may be closed (and its number reused) before this runs.
        executor = ring.executor
        if executor is not None:
            executor.call_soon(_end_receiver, rx.op, ring, waiter)
        return
    _end_receiver(rx.op, ring, waiter)


def _end_receiver(op: Any, ring: Ring, waiter: object) -> None:
    _cancel_for_close(op, ring)
    if waiter is not None:
        trio.lowlevel.reschedule(waiter)  # type: ignore[arg-type]


def _taker(rx: Receiver, flags: int, into: bool) -> Callable[..., Any] | None:
    """How a receive with ``flags`` takes from the multishot queue ``rx``:
    ``take(n)`` or ``take(buffer, nbytes)`` (``into``), returning None while it
    has to wait. None: these flags are a one-shot operation (MSG_OOB and
    MSG_ERRQUEUE read other queues than the stream's)."""
    wanted = flags & _WAIT  # trio's socket never hands back EAGAIN either
    if not wanted:
        return rx.take_into if into else rx.take
    if wanted == _MSG_PEEK:
        return _peek_into(rx) if into else rx.peek
    if wanted == _MSG_WAITALL:
        return _take_all(rx, into)
    return None


def _peek_into(rx: Receiver) -> Callable[[Any, int], int | None]:
    def peek_into(buffer: Any, nbytes: int) -> int | None:
        with memoryview(buffer) as whole, whole.cast("B") as octets:
            data = rx.peek(nbytes or len(octets))
            if data is None:
                return None
            octets[: len(data)] = data
            return len(data)

    return peek_into


def _take_all(rx: Receiver, into: bool) -> Callable[..., Any]:
    """MSG_WAITALL: nothing is taken until all of it is there (or the end of
    the stream, or an error): a cancel while waiting took nothing."""

    def take_all(*args: Any) -> Any:
        if into:
            with memoryview(args[0]) as whole:
                wanted = args[1] or whole.nbytes
        else:
            wanted = args[0]
        if rx.queued < wanted and not rx.end:
            return None
        return rx.take_into(*args) if into else rx.take(*args)

    return take_all


async def _with_buffer(buf: B, count: Awaitable[int] | None) -> tuple[B, int]:
    return buf, await count  # type: ignore[misc]


class UringSocket(trio.socket.SocketType):
    """A trio socket (``trio.socket.SocketType``) over a stdlib socket, whose
    ``recv*``, ``send*``, ``accept`` and ``connect`` are io_uring operations.
    Everything else behaves as trio's own socket.

    Besides trio's interface: ``receive_into(buf) -> (buf, n)``, the
    owned-buffer receive (on a TCP socket with provided buffers the bytes are
    copied from the multishot queue; otherwise the kernel has ``buf`` until
    the receive completes, whatever happens to the caller; cancelled, ``buf``
    is untouched).

    ``close()`` wakes the tasks blocked on the socket with
    ``trio.ClosedResourceError``; a receive or accept that completed despite
    a cancel is returned (trio raises ``Cancelled`` at the next checkpoint).
    """

    __slots__ = (
        "_acceptor",
        "_did_shutdown_SHUT_WR",
        "_fileno",
        "_queued_sends",
        "_read_op",
        "_read_ring",
        "_recv_size",
        "_rx",
        "_rx_ring",
        "_sock",
        "_stream",
        "_tcp",
        "_write_op",
        "_write_ring",
    )

    def __init__(self, sock: _stdlib_socket.socket) -> None:
        if type(sock) is not _stdlib_socket.socket:
            # A subclass (ssl.SSLSocket) has its own I/O: never wrap one blindly.
            raise TypeError(f"expected object of type 'socket.socket', not '{type(sock).__name__}'")
        super().__init__()
        self._sock = sock
        sock.setblocking(False)  # trio's sockets are non-blocking (readiness paths)
        self._fileno: Callable[[], int] = sock.fileno
        self._did_shutdown_SHUT_WR = False
        self._stream = sock.type == _SOCK_STREAM
        self._tcp = self._stream and sock.family in (_AF_INET, _AF_INET6)
        # The multishot receive's queue and the ring it is armed on (module
        # docstring), made at the first receive on a ring that has one.
        self._rx: Receiver | None = None
        self._rx_ring: Ring | None = None
        self._recv_size = INITIAL_RECEIVE_SIZE
        # The last operation of each direction and its ring: close() cancels
        # them, and a call finding one still in flight is refused (busy).
        self._read_op: Operation[Any] | None = None
        self._read_ring: Ring | None = None
        self._write_op: Operation[Any] | None = None
        self._write_ring: Ring | None = None
        # Sends queued while the slot's send was still PENDING (below), and
        # their rings: close() cancels them too.
        self._queued_sends: dict[Operation[Any], Ring] | None = None
        # A listener's multishot accept and its queue, from the first accept
        # on a ring that has them.
        self._acceptor: Acceptor | None = None

    # -- forwarded members (plain syscalls, as in trio) ----------------------------------

    def fileno(self) -> int:
        return self._sock.fileno()

    def getpeername(self) -> Any:
        return self._sock.getpeername()

    def getsockname(self) -> Any:
        return self._sock.getsockname()

    @overload
    def getsockopt(self, level: int, optname: int) -> int: ...

    @overload
    def getsockopt(self, level: int, optname: int, buflen: int) -> bytes: ...

    def getsockopt(self, level: int, optname: int, buflen: int | None = None) -> int | bytes:
        if buflen is None:
            return self._sock.getsockopt(level, optname)
        return self._sock.getsockopt(level, optname, buflen)

    @overload
    def setsockopt(self, level: int, optname: int, value: int | Buffer) -> None: ...

    @overload
    def setsockopt(self, level: int, optname: int, value: None, optlen: int) -> None: ...

    def setsockopt(
        self, level: int, optname: int, value: int | Buffer | None, optlen: int | None = None
    ) -> None:
        if optlen is None:
            if value is None:
                raise TypeError(
                    "invalid value for argument 'value', must not be None when specifying optlen"
                )
            return self._sock.setsockopt(level, optname, value)
        if value is not None:
            raise TypeError(
                f"invalid value for argument 'value': {value!r}, "
                "must be None when specifying optlen"
            )
        return self._sock.setsockopt(level, optname, value, optlen)

    def listen(self, backlog: int = min(_stdlib_socket.SOMAXCONN, 128)) -> None:
        return self._sock.listen(backlog)

    def get_inheritable(self) -> bool:
        return self._sock.get_inheritable()

    def set_inheritable(self, inheritable: bool) -> None:
        return self._sock.set_inheritable(inheritable)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def family(self) -> _stdlib_socket.AddressFamily:
        return self._sock.family

    @property
    def type(self) -> _stdlib_socket.SocketKind:
        return self._sock.type

    @property
    def proto(self) -> int:
        return self._sock.proto

    @property
    def did_shutdown_SHUT_WR(self) -> bool:
        return self._did_shutdown_SHUT_WR

    def __repr__(self) -> str:
        return repr(self._sock).replace("socket.socket", "ouring.trio.UringSocket", 1)

    def dup(self) -> UringSocket:
        """Same as :meth:`socket.socket.dup`."""
        return UringSocket(self._sock.dup())

    def close(self) -> None:
        """Close the socket. Tasks blocked on it get ``ClosedResourceError``:
        ring operations are cancelled first (``close(2)`` alone would leave
        them running against the file), epoll waiters get ``notify_closing``."""
        if self._sock.fileno() == -1:
            return
        self._close_receiver()
        _cancel_for_close(self._read_op, self._read_ring)
        _cancel_for_close(self._write_op, self._write_ring)
        self._read_op = self._write_op = None
        if self._queued_sends:
            for queued, ring in list(self._queued_sends.items()):
                _cancel_for_close(queued, ring)
        if self._acceptor is not None:
            self._acceptor.close()  # its multishot accept, and the queued connections
        # Outside a run nobody can wait on trio's epoll, and notify_closing
        # would raise and leave the fd open (trio's own socket does that).
        if trio.lowlevel.in_trio_run():
            trio.lowlevel.notify_closing(self._sock)
        self._sock.close()

    def _close_receiver(self) -> None:
        close_receiver(self._rx, self._rx_ring)

    def detach(self) -> int:
        """trio's ``detach``: the fd is the caller's, this object closed.

        What the multishot receive took from the socket, and the connections
        the multishot accept took from the backlog, live only in this object
        and cannot be given back to the fd. So both are stopped first, at once
        (``Ring.cancel_now``: nothing arrives after), and a detach that would
        drop any of it raises ``BusyResourceError`` with the socket unchanged
        (the next receive or accept takes what is queued and re-arms)."""
        rx, acceptor = self._rx, self._acceptor
        _stop_now(rx.op if rx is not None else None, self._rx_ring)
        if acceptor is not None:
            _stop_now(acceptor.op, acceptor.ring)
        if rx is not None and rx.queued:
            raise trio.BusyResourceError(
                f"detach() would drop {rx.queued} received bytes not read yet: receive them first"
            )
        if acceptor is not None and acceptor.queued:
            raise trio.BusyResourceError(
                f"detach() would drop {acceptor.queued} accepted connections not taken yet: "
                "accept them first"
            )
        self._close_receiver()
        self._rx = None
        if acceptor is not None:
            acceptor.close()
            self._acceptor = None
        return self._sock.detach()

    def shutdown(self, flag: int) -> None:
        self._sock.shutdown(flag)
        if flag in (_stdlib_socket.SHUT_WR, _stdlib_socket.SHUT_RDWR):
            self._did_shutdown_SHUT_WR = True

    def is_readable(self) -> bool:
        rx = self._rx
        if rx is not None and rx.ready:
            return True  # received already, or the end of the stream seen
        poller = select.poll()
        poller.register(self._sock, select.POLLIN)
        return bool(poller.poll(0))

    async def wait_writable(self) -> None:
        await trio.lowlevel.wait_writable(self._sock)

    # -- addresses -----------------------------------------------------------------------

    async def _resolve(self, address: Any, *, local: bool) -> Any:
        """``address`` with its host and port numeric, as trio resolves it
        (with trio's resolver, so ``set_custom_hostname_resolver`` applies).
        Returns without a checkpoint when there is nothing to resolve."""
        family = self._sock.family
        if family == _AF_INET:
            if not isinstance(address, tuple) or len(address) != 2:
                raise ValueError("address should be a (host, port) tuple")
        elif family == _AF_INET6:
            if not isinstance(address, tuple) or not 2 <= len(address) <= 4:
                raise ValueError("address should be a (host, port, [flowinfo, [scopeid]]) tuple")
        elif family == _AF_UNIX:
            if not isinstance(address, str | bytes | os.PathLike):
                raise TypeError(
                    f"an AF_UNIX address is a str, bytes or path, not {type(address).__name__}"
                )
            return os.fspath(address)
        else:
            return address
        host, port = address[0], address[1]
        if isinstance(port, int) and host is not None:
            try:
                _stdlib_socket.inet_pton(family, host)
            except (OSError, TypeError):
                pass
            else:
                return address  # numeric already: the common case, no checkpoint
        if host == "":
            host = None  # the stdlib's spelling of the wildcard
        elif host == "<broadcast>":
            host = "255.255.255.255"
        flags = _stdlib_socket.AI_PASSIVE if local else 0
        if family == _AF_INET6 and not self._sock.getsockopt(
            _stdlib_socket.IPPROTO_IPV6, _stdlib_socket.IPV6_V6ONLY
        ):
            flags |= _stdlib_socket.AI_V4MAPPED
        infos = await trio.socket.getaddrinfo(
            host, port, family, self._sock.type, self._sock.proto, flags
        )
        resolved = infos[0][4]
        if family == _AF_INET6:
            # getaddrinfo knows nothing of the caller's flowinfo and scope id.
            return (*resolved[:2], *address[2:], *resolved[len(address) :])
        return resolved

    async def bind(self, address: Any) -> None:
        address = await self._resolve(address, local=True)
        if self._sock.family == _AF_UNIX and address and address[:1] not in ("\0", b"\0"):
            # A filesystem path: bind(2) walks directories, which may block.
            return await trio.to_thread.run_sync(self._sock.bind, address)
        await _checkpoint()
        return self._sock.bind(address)

    # -- receiving (the read direction) ---------------------------------------------------

    def recv(self, buflen: int, flags: int = 0, /) -> Awaitable[bytes]:
        """Like :meth:`socket.socket.recv`, but async: an io_uring recv (the
        socket's multishot recv, where it has one)."""
        fd = self._fileno()
        rx = self._rx
        if rx is not None and not flags and fd >= 0 and type(buflen) is int and buflen > 0:
            # The hot path of every receive_some on a TCP socket.
            ring = current_ring()
            if self._rx_ring is ring and rx.waiter is None:
                return ring.executor.receive(ring, rx, fd, rx.take, buflen)  # type: ignore[union-attr]
        op = self._read_op
        # The slot's state is read once: this runs for every receive_some.
        state = DONE if op is None else op.state
        if PENDING <= state <= CANCELLING or (rx is not None and rx.waiter is not None):
            return _raise_busy()
        if fd < 0 or type(buflen) is not int or buflen < 1 or type(flags) is not int:
            return self._recv_slow(buflen, flags)
        ring = current_ring()
        if self._tcp:
            queued = self._from_queue(ring, fd, flags, False, buflen)
            if queued is not None:
                return queued
        size = buflen
        if self._stream and not flags:
            if state == DONE and type(op) is RecvBytes:
                # The last receive says what arrives: adapt (module docstring).
                asked = op.length
                got = op.res
                if got >= asked:
                    self._recv_size = min(asked * 2, max(buflen, MIN_RECEIVE_SIZE))
                elif got < asked >> 2 and asked > MIN_RECEIVE_SIZE:
                    self._recv_size = asked >> 1
            if self._recv_size < size:
                size = self._recv_size
        if size > MAX_RW:
            size = MAX_RW  # one receive moves at most that much anyway
        op = RecvBytes(fd, size, flags & _WAIT if flags else 0)
        self._read_op = op
        self._read_ring = ring
        # The executor's coroutine itself: Ring.perform (which a ring driven
        # by hand needs: it releases op and raises) would cost one more frame.
        executor = ring.executor
        if executor is None:
            return ring.perform(op)
        return executor.perform(ring, op)

    def _from_queue(
        self, ring: Ring, fd: int, flags: int, into: bool, *args: Any
    ) -> Coroutine[Any, Any, Any] | None:
        """This receive as a take from the multishot queue (module
        docstring); None when it is a one-shot operation: flags the queue
        cannot serve, or no queue on ``ring``. ``into``: ``args`` are
        ``(buffer, nbytes)`` and the take returns a count, else ``(n,)``."""
        rx = self._receiver(ring)
        if rx is None:
            return None
        take = _taker(rx, flags, into)
        if take is None:
            return None
        if self._rx_ring is not ring:
            # Queued on a ring that is gone: hand it out, then go one-shot.
            return _sync_call(take, *args)
        return ring.executor.receive(ring, rx, fd, take, *args)  # type: ignore[union-attr]

    def _receiver(self, ring: Ring) -> Receiver | None:
        """The multishot queue to receive from on ``ring`` (see
        :func:`bind_receiver`); None for one-shot receives."""
        rx = self._rx
        if rx is not None and self._rx_ring is ring:
            return rx
        self._rx, self._rx_ring = bind_receiver(rx, self._rx_ring, ring)
        return self._rx

    async def _recv_slow(self, buflen: Any, flags: Any) -> bytes:
        if self._fileno() < 0:
            # The stdlib's own exception for these arguments on a closed socket.
            return await _sync_call(self._sock.recv, buflen, flags)
        buflen = operator.index(buflen)
        flags = operator.index(flags)  # an IntFlag becomes a plain int
        if buflen < 0:
            raise ValueError("negative buffersize in recv")
        if buflen:
            return await self.recv(buflen, flags)
        await _checkpoint()
        return b""  # recv(0): nothing to wait for, as recv(2) with length 0

    def receive_into(self, buf: B) -> Coroutine[Any, Any, tuple[B, int]]:
        """Receive into ``buf`` (a writable buffer of at least one byte):
        ``(buf, n)``, the same buffer and the count, 0 at the end of the
        stream. On a TCP socket with provided buffers (``Ring.recv_group``)
        the bytes are copied from the socket's multishot queue; otherwise the
        kernel writes into ``buf`` until the receive completes, whatever
        happens to the caller. If it raises ``Cancelled``, ``buf`` is
        untouched. A closed socket raises ``OSError(EBADF)``, as ``recv``."""
        fd = self._fileno()
        op = self._read_op
        rx = self._rx
        if _busy(op) or (rx is not None and rx.waiter is not None):
            return _raise_busy()
        if fd < 0:
            return self._closed_error()
        ring = current_ring()
        if self._tcp and self._receiver(ring) is not None:
            with memoryview(buf) as view:  # type: ignore[arg-type]
                if view.readonly:
                    raise TypeError("receive_into needs a writable buffer")
                if not view.nbytes:
                    raise ValueError("receive_into needs a buffer of at least one byte")
            return _with_buffer(buf, self._from_queue(ring, fd, 0, True, buf, 0))
        new: Recv[B] = Recv(fd, buf)
        if not new.length:
            new.release()
            raise ValueError("receive_into needs a buffer of at least one byte")
        self._read_op = new
        self._read_ring = ring
        return ring.perform(new)

    def _reading(self) -> bool:
        """A receive or accept of another task holds the read direction."""
        rx = self._rx
        return _busy(self._read_op) or (rx is not None and rx.waiter is not None)

    async def _closed_error(self) -> Any:
        await _checkpoint()
        raise OSError(errno.EBADF, os.strerror(errno.EBADF))

    async def recv_into(self, buffer: Buffer, nbytes: int = 0, flags: int = 0) -> int:
        """Like :meth:`socket.socket.recv_into`, but async: an io_uring recv."""
        fd = self._fileno()
        if fd < 0:
            return await _sync_call(self._sock.recv_into, buffer, nbytes, flags)
        if self._reading():
            return await _raise_busy()  # type: ignore[no-any-return]
        nbytes = operator.index(nbytes)
        flags = operator.index(flags)
        if nbytes < 0:
            raise ValueError("negative buffersize in recv_into")
        with memoryview(buffer) as whole:
            size = whole.nbytes
            if nbytes > size:
                raise ValueError("buffer too small for requested bytes")
            readonly = whole.readonly
        if size and self._tcp and not readonly:
            queued = self._from_queue(current_ring(), fd, flags, True, buffer, nbytes)
            if queued is not None:
                return await queued  # type: ignore[no-any-return]
        with memoryview(buffer) as whole:
            if not nbytes or nbytes == size:
                target: Any = buffer
            else:
                # Released below once the ring gave it back; never with
                # `with`: if this coroutine is closed while the receive is in
                # flight, the ring still holds an export of the slice.
                target = whole.cast("B")[:nbytes]
        if not size:
            await _checkpoint()
            return 0
        try:
            ring = current_ring()
            op = Recv(self._fileno(), target, flags & _WAIT)
        except BaseException:
            if target is not buffer:
                target.release()
            raise
        self._read_op = op
        self._read_ring = ring
        try:
            _, n = await ring.perform(op)
            return n
        finally:
            if self._read_op is op:
                self._read_op = None  # holds the caller's buffer
            if target is not buffer and not _busy(op):
                # The ring gave it back (or never took it: pre-cancelled):
                # the caller's bytearray can be resized again.
                target.release()

    async def accept(self) -> tuple[UringSocket, Any]:
        """Like :meth:`socket.socket.accept`, but async: an io_uring accept.
        A connection accepted despite a cancel is returned."""
        fd = self._fileno()
        if fd < 0:
            return await _sync_call(self._sock.accept)  # type: ignore[arg-type]
        if _busy(self._read_op):
            return await _raise_busy()  # type: ignore[no-any-return]
        ring = current_ring()
        acceptor = self._acceptor
        if acceptor is not None or ring.has("multishot_accept"):
            if acceptor is None:
                acceptor = self._acceptor = Acceptor(self._sock)
            conn = await acceptor.accept()
            # The kernel gave no address: the peer's, from the new socket. From
            # here to the return only the wrapping may raise, and it closes conn.
            try:
                return UringSocket(conn), peer_address(conn)
            except BaseException:
                conn.close()
                raise
        op = Accept(fd)
        self._read_op = op
        self._read_ring = ring
        conn, address = await ring.perform(op)
        # Nothing between the ring's answer and the return may raise but the
        # wrapping itself, which then closes the new fd.
        try:
            return UringSocket(conn), address
        except BaseException:
            conn.close()
            raise

    # -- sending (the write direction) ----------------------------------------------------

    def send(self, data: Buffer, flags: int = 0, /) -> Awaitable[int]:
        """Like :meth:`socket.socket.send`, but async: an io_uring send."""
        fd = self._fileno()
        op = self._write_op
        queue = op is not None and PENDING <= op.state <= CANCELLING
        if queue and op.state != PENDING:  # type: ignore[union-attr]
            return _raise_busy()
        if fd < 0 or type(flags) is not int:
            return self._send_slow(data, flags)
        ring = current_ring()
        op = SendCount(fd, data, (flags & _WAIT) | _MSG_NOSIGNAL)
        if not op.length:
            op.release()
            return _sent_nothing()
        if queue:
            return self._perform_queued(op, ring)
        # The completed send stays in the slot until the next one, as recv's:
        # it holds the caller's object, never an export of it (the ring gave
        # the lease back at the CQE), so trio's send_all can release its
        # memoryview slices. The executor's coroutine itself is returned (no
        # frame of ours): SendCount's result is the count.
        self._write_op = op
        self._write_ring = ring
        executor = ring.executor
        if executor is None:
            return ring.perform(op)
        return executor.perform(ring, op)

    async def _send_slow(self, data: Any, flags: Any) -> int:
        if self._fileno() < 0:
            return await _sync_call(self._sock.send, data, flags)
        operator.index(flags)  # TypeError, as socket.send
        return await self.send(data, int(flags))

    async def connect(self, address: Any) -> None:
        """Like :meth:`socket.socket.connect`, but async: an io_uring connect.
        As in trio, a cancelled connect closes the socket (the connection may
        have been half made); a failed one raises ``OSError``."""
        try:
            address = await self._resolve(address, local=False)
            fd = self._fileno()
            if fd < 0:
                return await _sync_call(self._sock.connect, address)
            if _busy(self._write_op):
                return await _raise_busy()  # type: ignore[no-any-return]
            ring = current_ring()
            op = Connect(fd, address)
            self._write_op = op
            self._write_ring = ring
            try:
                await ring.perform(op)
            except OSError as exc:
                if exc.errno is None or isinstance(exc, trio.ClosedResourceError):
                    raise
                raise OSError(
                    exc.errno, f"Error connecting to {address!r}: {os.strerror(exc.errno)}"
                ) from None
        except trio.Cancelled:
            self.close()
            raise

    # -- messages with addresses and ancillary data -------------------------------------

    async def _perform_tracked(self, op: Operation[T], write: bool) -> T:
        """Perform ``op`` in its direction's slot, emptied afterwards (the
        op holds the caller's buffers)."""
        ring = current_ring()
        if write:
            self._write_op = op
            self._write_ring = ring
        else:
            self._read_op = op
            self._read_ring = ring
        try:
            return await ring.perform(op)
        finally:
            if self._write_op is op:
                self._write_op = None
            elif self._read_op is op:
                self._read_op = None

    async def recvmsg_into(
        self, buffers: Iterable[Buffer], ancbufsize: int = 0, flags: int = 0, /
    ) -> tuple[int, list[tuple[int, int, bytes]], int, Any]:
        """Like :meth:`socket.socket.recvmsg_into`, but async: an io_uring recvmsg."""
        fd = self._fileno()
        if fd < 0:
            return await _sync_call(self._sock.recvmsg_into, buffers, ancbufsize, flags)
        if self._reading():
            return await _raise_busy()  # type: ignore[no-any-return]
        if self._tcp:
            buffers = list(buffers)  # read twice when the queue cannot serve it
            received = await self._scatter_from_queue(fd, buffers, operator.index(flags))
            if received is not None:
                return received, [], 0, None
        op = RecvMsg(self._sock, buffers, ancbufsize, _waiting(flags))
        _, n, ancdata, msg_flags, address = await self._perform_tracked(op, False)
        return n, ancdata, msg_flags, address

    async def _scatter_from_queue(self, fd: int, buffers: list[Any], flags: int) -> int | None:
        """recvmsg_into from the multishot queue: one take of their total
        size, copied across ``buffers``; None when it is a one-shot receive."""
        views = [memoryview(b).cast("B") for b in buffers]
        try:
            if any(v.readonly for v in views):
                raise TypeError("recvmsg_into() needs writable buffers")
            total = sum(len(v) for v in views)
            queued = self._from_queue(current_ring(), fd, flags, False, total) if total else None
            if queued is None:
                return None
            data: bytes = await queued
            done = 0
            for view in views:
                part = data[done : done + len(view)]
                view[: len(part)] = part
                done += len(part)
            return len(data)
        finally:
            for view in views:
                view.release()

    async def recvmsg(
        self, bufsize: int, ancbufsize: int = 0, flags: int = 0, /
    ) -> tuple[bytes, list[tuple[int, int, bytes]], int, Any]:
        """Like :meth:`socket.socket.recvmsg`, but async: an io_uring recvmsg."""
        fd = self._fileno()
        if fd < 0:
            return await _sync_call(self._sock.recvmsg, bufsize, ancbufsize, flags)
        if operator.index(bufsize) < 0:
            raise ValueError("negative buffer size in recvmsg()")
        if self._reading():
            return await _raise_busy()  # type: ignore[no-any-return]
        if self._tcp and bufsize:
            queued = self._from_queue(current_ring(), fd, operator.index(flags), False, bufsize)
            if queued is not None:
                return await queued, [], 0, None
        buf = bytearray(min(bufsize, MAX_RW))
        op = RecvMsg(self._sock, (buf,), ancbufsize, _waiting(flags))
        _, n, ancdata, msg_flags, address = await self._perform_tracked(op, False)
        del buf[n:]
        return bytes(buf), ancdata, msg_flags, address

    async def recvfrom(self, bufsize: int, flags: int = 0, /) -> tuple[bytes, Any]:
        """Like :meth:`socket.socket.recvfrom`, but async: an io_uring recvmsg."""
        if self._fileno() < 0:
            return await _sync_call(self._sock.recvfrom, bufsize, flags)
        if operator.index(bufsize) < 0:
            raise ValueError("negative buffersize in recvfrom")
        data, _, _, address = await self.recvmsg(bufsize, 0, flags)
        return data, address

    async def recvfrom_into(
        self, buffer: Buffer, nbytes: int = 0, flags: int = 0
    ) -> tuple[int, Any]:
        """Like :meth:`socket.socket.recvfrom_into`, but async: an io_uring recvmsg."""
        if self._fileno() < 0:
            return await _sync_call(self._sock.recvfrom_into, buffer, nbytes, flags)
        nbytes = operator.index(nbytes)
        if nbytes < 0:
            raise ValueError("negative buffersize in recvfrom_into")
        if self._reading():
            return await _raise_busy()  # type: ignore[no-any-return]
        with memoryview(buffer) as whole:
            if nbytes > whole.nbytes:
                raise ValueError("nbytes is greater than the length of the buffer")
            size, readonly = whole.nbytes, whole.readonly
        if self._tcp and size and not readonly:
            queued = self._from_queue(
                current_ring(), self._fileno(), operator.index(flags), True, buffer, nbytes
            )
            if queued is not None:
                return await queued, None
        with memoryview(buffer) as whole:
            # Released below once the ring gave it back (see recv_into).
            target = whole.cast("B")[:nbytes] if nbytes else whole.cast("B")
        try:
            op = RecvMsg(self._sock, (target,), 0, _waiting(flags))
        except BaseException:
            target.release()
            raise
        try:
            _, n, _, _, address = await self._perform_tracked(op, False)
        finally:
            if not _busy(op):  # given back, or never taken (see recv_into)
                target.release()
        return n, address

    @overload
    async def sendto(self, data: Buffer, address: tuple[object, ...] | str | Buffer, /) -> int: ...

    @overload
    async def sendto(
        self, data: Buffer, flags: int, address: tuple[object, ...] | str | Buffer, /
    ) -> int: ...

    async def sendto(self, *args: Any) -> int:
        """Like :meth:`socket.socket.sendto` (``data[, flags], address``), but
        async: an io_uring sendmsg."""
        if not 2 <= len(args) <= 3:
            raise TypeError(f"sendto() takes 2 or 3 arguments ({len(args)} given)")
        data, flags = args[0], (args[1] if len(args) == 3 else 0)
        address = await self._resolve(args[-1], local=False)
        if self._fileno() < 0:
            return await _sync_call(self._sock.sendto, data, flags, address)
        return await self._sendmsg((data,), (), flags, address)

    async def sendmsg(
        self,
        buffers: Iterable[Buffer],
        ancdata: Iterable[tuple[int, int, Buffer]] = (),
        flags: int = 0,
        address: Any = None,
        /,
    ) -> int:
        """Like :meth:`socket.socket.sendmsg`, but async: an io_uring sendmsg."""
        if address is not None:
            address = await self._resolve(address, local=False)
        if self._fileno() < 0:
            return await _sync_call(self._sock.sendmsg, buffers, ancdata, flags, address)
        return await self._sendmsg(buffers, ancdata, flags, address)

    async def _sendmsg(self, buffers: Any, ancdata: Any, flags: Any, address: Any) -> int:
        slot = self._write_op
        queue = slot is not None and PENDING <= slot.state <= CANCELLING
        if queue and slot.state != PENDING:  # type: ignore[union-attr]
            return await _raise_busy()  # type: ignore[no-any-return]
        op = SendMsg(self._sock, buffers, ancdata, _waiting(flags) | _MSG_NOSIGNAL, address)
        if queue:
            _, n = await self._perform_queued(op, current_ring())
        else:
            _, n = await self._perform_tracked(op, True)
        return n

    async def _perform_queued(self, op: Operation[T], ring: Ring) -> T:
        """A send while the slot's send is still PENDING (the kernel has not
        seen it): trio's socket lets a second send through unless the first
        had to wait, and neither has waited yet. This one goes to the kernel
        right after the first, in the same batch. Busy is only for a send the
        kernel holds (it did not complete at once: it waits for room)."""
        queued = self._queued_sends
        if queued is None:
            queued = self._queued_sends = {}
        queued[op] = ring
        try:
            return await ring.perform(op)
        finally:
            del queued[op]


# -- the factory -------------------------------------------------------------------------


class SocketFactory(trio.abc.SocketFactory):
    """Makes :class:`UringSocket` objects: what :func:`install` gives
    ``trio.socket.set_custom_socket_factory``."""

    __slots__ = ()

    def socket(
        self,
        family: _stdlib_socket.AddressFamily | int = _stdlib_socket.AF_INET,
        type: _stdlib_socket.SocketKind | int = _stdlib_socket.SOCK_STREAM,  # noqa: A002
        proto: int = 0,
    ) -> UringSocket:
        return UringSocket(_stdlib_socket.socket(family, type, proto))


def install() -> trio.abc.SocketFactory | None:
    """Make trio's sockets ouring's for the rest of the current ``trio.run``.

    ``trio.socket.socket()`` returns ouring sockets
    (``trio.socket.set_custom_socket_factory`` with a :class:`SocketFactory`),
    so ``trio.open_tcp_stream``, ``trio.serve_tcp``,
    ``trio.open_tcp_listeners``, ``trio.open_unix_socket`` and the libraries
    built on them do their socket I/O through io_uring. trio does not route
    its other constructors through the factory, so the first call also puts
    thin wrappers in the ``trio.socket`` module (once, for the process) as
    ``from_stdlib_socket``, ``fromfd``, ``socketpair`` and ``socket`` (for its
    ``fileno=`` form): in a run where ouring's factory is installed they
    return ouring sockets, anywhere else they are trio's functions unchanged.
    That covers the servers that bind stdlib sockets and wrap them
    (``hypercorn.trio.serve``, anyio's trio backend). Code that took one of
    these functions by name (``from trio.socket import from_stdlib_socket``)
    before the first ``install()``, as trio's own modules do, keeps trio's.

    Returns the factory it replaced (``None``: trio's own), which
    ``trio.socket.set_custom_socket_factory`` puts back."""
    # The factory first: outside a run trio raises there and nothing is patched.
    previous = trio.socket.set_custom_socket_factory(SocketFactory())
    _wrap_trio_constructors()
    return previous


def _current_factory() -> trio.abc.SocketFactory | None:
    """The socket factory installed in the current run. trio only reads it by
    replacing it, so it is put back at once (no checkpoint in between: no
    other task can see the swap)."""
    current = trio.socket.set_custom_socket_factory(None)
    trio.socket.set_custom_socket_factory(current)
    return current


def custom_socket_factory() -> trio.abc.SocketFactory | None:
    """The socket factory installed in this run that is not ouring's (a test's
    fake network, say), or ``None``."""
    current = _current_factory()
    return None if isinstance(current, SocketFactory) else current


def _ours_in_this_run() -> bool:
    """ouring's factory is the one installed in the current run. Outside a
    run (a worker thread of one included) there is no factory: trio's."""
    return trio.lowlevel.in_trio_run() and isinstance(_current_factory(), SocketFactory)


# -- trio's other socket constructors ----------------------------------------------------
#
# trio.socket.socket() is the only constructor that asks the run's factory;
# from_stdlib_socket, fromfd, socketpair and socket(fileno=...) always build
# trio's own class, and trio has no hook for them. install() replaces these
# attributes of the trio.socket module with the wrappers below: in a run that
# installed ouring's factory they return UringSocket, otherwise they call the
# function they replaced, so a run that did not opt in (or another factory,
# such as a test's fake network) sees trio's behaviour. trio's own modules call
# the names of trio._socket or took them at import, and are unaffected.


def _from_trio(made: trio.socket.SocketType) -> UringSocket:
    """The ouring socket on the fd of ``made``, a trio socket trio's
    constructor has just made and nobody else has seen. The fd changes owner:
    ``made`` is detached (it holds nothing afterwards), then whatever holds
    the fd closes it if the next step fails (never twice: a stdlib socket
    closes its fd when it is collected)."""
    family, kind, proto = made.family, made.type, made.proto
    fd = made.detach()
    try:
        sock = _stdlib_socket.socket(family, kind, proto, fd)
    except BaseException:
        os.close(fd)
        raise
    try:
        return UringSocket(sock)
    except BaseException:
        sock.close()
        raise


def _wrap_from_stdlib_socket(
    original: Callable[[_stdlib_socket.socket], trio.socket.SocketType],
) -> Callable[[_stdlib_socket.socket], trio.socket.SocketType]:
    @functools.wraps(original)
    def from_stdlib_socket(sock: _stdlib_socket.socket) -> trio.socket.SocketType:
        if _ours_in_this_run():
            return UringSocket(sock)  # the same TypeError as trio's for a non-socket
        return original(sock)

    return from_stdlib_socket


def _wrap_fromfd(
    original: Callable[P, trio.socket.SocketType],
) -> Callable[P, trio.socket.SocketType]:
    @functools.wraps(original)
    def fromfd(*args: P.args, **kwargs: P.kwargs) -> trio.socket.SocketType:
        # trio's own call first: it dups the fd and reads the family, type
        # and protocol from the kernel (SO_DOMAIN...), with trio's errors.
        made = original(*args, **kwargs)
        return _from_trio(made) if _ours_in_this_run() else made

    return fromfd


_Pair = tuple[trio.socket.SocketType, trio.socket.SocketType]


def _wrap_socketpair(original: Callable[P, _Pair]) -> Callable[P, _Pair]:
    @functools.wraps(original)
    def socketpair(*args: P.args, **kwargs: P.kwargs) -> _Pair:
        left, right = original(*args, **kwargs)
        if not _ours_in_this_run():
            return left, right
        try:
            ours = _from_trio(left)
        except BaseException:
            right.close()
            raise
        try:
            return ours, _from_trio(right)
        except BaseException:
            ours.close()
            raise

    return socketpair


_Socket = Callable[
    [_stdlib_socket.AddressFamily | int, _stdlib_socket.SocketKind | int, int, int | None],
    trio.socket.SocketType,
]


def _wrap_socket(original: _Socket) -> _Socket:
    @functools.wraps(original)
    def socket(
        family: _stdlib_socket.AddressFamily | int = _stdlib_socket.AF_INET,
        type: _stdlib_socket.SocketKind | int = _stdlib_socket.SOCK_STREAM,  # noqa: A002
        proto: int = 0,
        fileno: int | None = None,
    ) -> trio.socket.SocketType:
        made = original(family, type, proto, fileno)
        # Without fileno trio asked the run's factory: ``made`` is already the
        # factory's. With it, trio built its own class around the fd.
        if fileno is None or not _ours_in_this_run():
            return made
        return _from_trio(made)

    return socket


_WRAPS: dict[str, Callable[[Any], Callable[..., Any]]] = {
    "from_stdlib_socket": _wrap_from_stdlib_socket,
    "fromfd": _wrap_fromfd,
    "socketpair": _wrap_socketpair,
    "socket": _wrap_socket,
}
_wrappers: dict[str, Callable[..., Any]] = {}  # name -> the wrapper put in trio.socket
_wrap_lock = threading.Lock()  # install() may run in several threads' trio runs at once


def _wrap_trio_constructors() -> None:
    """Put the wrappers in ``trio.socket`` (each once: an attribute that is
    already ours is left alone, so calling install() again changes nothing)."""
    with _wrap_lock:
        for name, wrap in _WRAPS.items():
            current = getattr(trio.socket, name)
            if _wrappers.get(name) is not current:
                _wrappers[name] = wrapper = wrap(current)
                setattr(trio.socket, name, wrapper)
