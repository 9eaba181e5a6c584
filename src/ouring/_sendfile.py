"""``sendfile``: a file to a socket without copying through Python.

The bytes go file -> pipe -> socket with two ``IORING_OP_SPLICE`` per pipe
load: the first makes the pipe point at the file's page-cache pages, the
second hands those pages to the socket. The pipe pair belongs to one call and
is closed when the call ends, whatever happens: bytes left in it by a cancel
or an error die with it and can never reach another socket.

Kernel facts this relies on:

- io_uring runs every splice in an io-wq worker and does not retry on
  ``EAGAIN``: a splice into an ``O_NONBLOCK`` socket (trio's sockets, ouring's
  ``UringSocket``) sends what fits and returns the count, or ``-EAGAIN``; the
  rest waits for the socket to poll writable, on the running executor's own
  poller (trio's ``wait_writable``, the asyncio loop's ``add_writer``). Into a
  blocking socket the worker waits for room itself.
- A splice from a file into an empty pipe never waits for the pipe, and one
  from the pipe into the socket only moves what the file splice put there, so
  the pipe (blocking, never shared) never blocks a worker.
- ``F_SETPIPE_SZ`` grows the pipe to up to ``/proc/sys/fs/pipe-max-size``
  (1 MiB by default) unless the user's pipes are over
  ``pipe-user-pages-soft``; it then keeps its 64 KiB, which only means more
  splices.
- A file system without ``splice_read`` (some special files) answers
  ``EINVAL`` before anything moved: the rest goes by read + send.
"""

from __future__ import annotations

import errno
import fcntl
import operator
import os
import socket as _stdlib_socket
from typing import Any

import trio

from ._current import current_library
from ._current import ring_of_task as current_ring  # no Python frame: asked per operation
from ._native import lib
from ._ops import Read, Send, Splice, fileno
from ._ring import Ring

__all__ = ["sendfile"]

#: How much one pipe load carries: the pipe is grown to this (or the count).
PIPE_SIZE = 1 << 20
#: The buffer of the read + send path.
COPY_CHUNK = 256 * 1024
_SEND_FLAGS = _stdlib_socket.MSG_NOSIGNAL | _stdlib_socket.MSG_WAITALL


class _NotSpliceable(Exception):
    """The file cannot be spliced from; nothing of this pipe load moved."""


async def sendfile(
    sock_or_stream: Any, file: Any, offset: int = 0, count: int | None = None
) -> int:
    """Send ``count`` bytes of ``file`` from ``offset`` (``None``: up to the
    end of the file) to a connected stream socket, without copying them
    through Python; returns how many were sent, fewer only if the file ended.

    ``sock_or_stream`` is a ``socket.socket``, a trio socket (such as
    ``ouring.trio.UringSocket``), a ``trio.SocketStream`` or an
    ``ouring.trio.SocketStream``; ``file`` an fd, an ``ouring.AsyncFile`` or a
    file object (anything with ``fileno()``) open for reading. The file's
    position is neither used nor moved; data still in an ``AsyncFile``'s write
    buffer is not seen (flush first). Nobody else may send on the socket
    meanwhile.

    io_uring splices through a pipe pair of the call's own; without splice
    support (a kernel or file system without it) it reads into a buffer and
    sends that. Errors on a stream are trio's (``BrokenResourceError``,
    ``ClosedResourceError``); on a socket, ``OSError``; the file's errors are
    ``OSError`` either way.

    Cancelled, it raises ``Cancelled`` like ``trio.abc.SendStream.send_all``:
    an unknown part may have been sent, so the connection is in an unknown
    state and should be closed. Nothing else is left behind: the pipe pair is
    closed and its unsent bytes discarded with it.
    """
    sock = getattr(sock_or_stream, "socket", sock_or_stream)
    stream = isinstance(sock_or_stream, trio.abc.Stream)
    if not hasattr(sock, "fileno") or getattr(sock, "type", None) != _stdlib_socket.SOCK_STREAM:
        raise TypeError(
            "sendfile sends to a connected SOCK_STREAM socket or a SocketStream, "
            f"not {type(sock_or_stream).__name__}"
        )
    file_fd = fileno(file)
    start: int = operator.index(offset)
    if start < 0:
        raise ValueError(f"offset must be >= 0, not {start}")
    # Checked now, before the pipe pair exists: a closed fd's number would
    # otherwise be the pipe's own.
    info = os.fstat(file_fd)
    if count is None:
        total = max(info.st_size - start, 0)
    else:
        total = operator.index(count)
        if total < 0:
            raise ValueError(f"count must be >= 0 or None, not {total}")
    sock_fd = sock.fileno()
    if sock_fd < 0:
        await _checkpoint()
        if stream:
            raise trio.ClosedResourceError("this socket was already closed")
        raise OSError(errno.EBADF, os.strerror(errno.EBADF))
    ring = current_ring()
    if total == 0:
        await _checkpoint()
        return 0
    sent = 0
    try:
        if ring.supports(lib.IORING_OP_SPLICE):
            try:
                return await _splice(ring, sock_fd, file_fd, start, total)
            except _NotSpliceable as exc:
                sent = exc.args[0]
        return sent + await _copy(ring, sock_fd, file_fd, start + sent, total - sent)
    except _SocketError as exc:
        error = exc.__cause__
        assert isinstance(error, OSError)
        if not stream:
            raise error from None
        if error.errno == errno.EBADF:
            raise trio.ClosedResourceError("this socket was already closed") from error
        raise trio.BrokenResourceError(f"socket connection broken: {error}") from error


async def _checkpoint() -> None:
    """A cancel point that yields once, under the executor running the task
    (a sendfile that moves nothing is still a checkpoint)."""
    if current_library() == "trio":
        await trio.lowlevel.checkpoint()
    else:
        import asyncio

        await asyncio.sleep(0)


async def _wait_writable(fd: int) -> None:
    """Until ``fd`` polls writable, under the executor running the task."""
    if current_library() == "trio":
        await trio.lowlevel.wait_writable(fd)
        return
    import asyncio

    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def writable() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_writer(fd, writable)
    try:
        await ready
    finally:
        loop.remove_writer(fd)


class _SocketError(Exception):
    """An ``OSError`` from the socket's side (its ``__cause__``)."""


async def _splice(ring: Ring, sock_fd: int, file_fd: int, offset: int, count: int) -> int:
    # Blocking pipe ends: io-wq waits on them, never the event loop (and the
    # pipe is never full when a file splice starts, nor empty when a socket
    # splice does).
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        size = PIPE_SIZE
        try:
            size = fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, min(PIPE_SIZE, count))
        except OSError:  # over pipe-user-pages-soft: the default size
            size = fcntl.fcntl(w, fcntl.F_GETPIPE_SZ)
        sent = 0
        while sent < count:
            try:
                loaded = await ring.perform(
                    Splice(file_fd, offset + sent, w, -1, min(count - sent, size))
                )
            except OSError as exc:
                if exc.errno == errno.EINVAL and sent == 0:
                    raise _NotSpliceable(sent) from exc
                raise
            if loaded == 0:
                break  # end of file
            while loaded:
                try:
                    moved = await ring.perform(Splice(r, -1, sock_fd, -1, loaded))
                except BlockingIOError:
                    # A full O_NONBLOCK socket: nothing moved; wait for room.
                    await _wait_writable(sock_fd)
                    continue
                except OSError as exc:
                    raise _SocketError from exc
                loaded -= moved
                sent += moved
        return sent
    finally:
        # Every splice on these fds has its final CQE by now (a cancelled
        # operation raises only then), or was abandoned: withdrawn if queued,
        # else the kernel holds its own reference to the pipe.
        os.close(r)
        os.close(w)


async def _copy(ring: Ring, sock_fd: int, file_fd: int, offset: int, count: int) -> int:
    """read + send through one buffer, for files that cannot be spliced."""
    buf = bytearray(min(count, COPY_CHUNK))
    sent = 0
    while sent < count:
        buf, n = await ring.perform(Read(file_fd, buf, offset + sent))
        if n == 0:
            break
        n = min(n, count - sent)
        with memoryview(buf) as view:
            done = 0
            while done < n:
                try:
                    _, m = await ring.perform(Send(sock_fd, view[done:n], _SEND_FLAGS))
                except OSError as exc:
                    raise _SocketError from exc
                done += m
        sent += n
    return sent
