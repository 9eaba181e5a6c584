"""The module-level operations, loop-neutral: each asks ``ring_of_task()``
(``_current.py``) for the ring of the running task, trio's or asyncio's, and
hands its operation to that ring's executor. ``open_ring`` builds a ring and
asks the current library's adapter to drive it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Coroutine, Iterable
from contextlib import asynccontextmanager
from threading import get_ident
from typing import Any, TypeVar

from ._current import _innermost, _task_ring, adapter, ring_of_task
from ._fallback import make_ring
from ._ops import (
    Read,
    ReadFixed,
    ReadV,
    Recv,
    RecvMsg,
    Send,
    SendMsg,
    Splice,
    Write,
    WriteFixed,
    WriteV,
    fileno,
    fixed_or_plain,
    read_requests,
    socket_family,
)
from ._ring import Ring
from ._sockaddr import is_numeric

B = TypeVar("B")
S = TypeVar("S")


def current_ring() -> Ring:
    """The ring that module-level operations use: the innermost
    ``open_ring()`` of this task's context, else the run's (trio) or the
    event loop's (asyncio) own ring."""
    return ring_of_task()


async def wait_all_ops_completed(ring: Ring | None = None) -> None:
    """Park until ``ring`` (default: the current ring) has no operation pending
    or in the kernel. For tests: ``trio.testing.wait_all_tasks_blocked`` and
    ``MockClock`` cannot see operations in flight in the kernel."""
    ring = ring_of_task() if ring is None else ring
    idle = adapter().Event()
    ring.call_when_idle(idle.set)
    await idle.wait()


@asynccontextmanager
async def open_ring(
    entries: int = 256,
    *,
    cq_entries: int | None = None,
    setup_flags: int | None = None,
    teardown_timeout: float = 5.0,
    fallback: str | None = None,
) -> AsyncIterator[Ring]:
    """A ring of its own for the enclosed code (and tasks it spawns), closed
    on exit: in-flight operations are cancelled and reaped first. Under trio
    or asyncio, whichever runs the task.

    When io_uring is unavailable, ``fallback="threads"`` (default:
    ``$OURING_FALLBACK``, else ``"off"``) gives a ring that runs the same
    operations on worker threads and readiness waits instead of raising
    ``UnsupportedError``; ``"always-threads"`` never tries io_uring."""
    drive = adapter().drive  # first: outside a run or loop, nothing is built
    driver = drive(
        make_ring(
            entries,
            cq_entries=cq_entries,
            setup_flags=setup_flags,
            teardown_timeout=teardown_timeout,
            fallback=fallback,
        )
    )
    ring = driver.ring
    token = _innermost.set(ring)
    cached = _task_ring.set((ring, get_ident()))
    try:
        yield ring
    finally:
        _task_ring.reset(cached)
        _innermost.reset(token)
        driver.close()


# -- module-level operations on the current ring ---------------------------------------
#
# The hot ones are plain functions that build their operation and return the
# executor's coroutine: arguments are checked at the call, and awaiting them
# goes through one coroutine frame fewer than an ``async def`` wrapper would
# (each frame costs on every suspension and resumption).


def read(fd: Any, buf: B, offset: int = -1) -> Coroutine[Any, Any, tuple[B, int]]:
    """Read into ``buf`` (a writable buffer) at ``offset``, or at the file
    position when it is -1. Returns the same buffer and the byte count."""
    ring = ring_of_task()  # first: nothing is acquired outside a run
    return ring.perform(Read(fd, buf, offset))


def write(fd: Any, buf: B, offset: int = -1) -> Coroutine[Any, Any, tuple[B, int]]:
    """Write from ``buf`` at ``offset`` (-1: the file position)."""
    ring = ring_of_task()
    return ring.perform(Write(fd, buf, offset))


def read_many(requests: Iterable[tuple[Any, B, int]]) -> Coroutine[Any, Any, list[tuple[B, int]]]:
    """Read a batch of ``(fd, buffer, offset)`` requests (explicit offsets,
    >= 0) and return ``[(buffer, count), ...]`` in order: one checkpoint and
    at most one wakeup for the whole batch. The first failure raises (its
    ``OSError.buffer`` says which); a cancelled batch raises ``Cancelled``
    once the kernel has given every buffer back."""
    ring = ring_of_task()
    return ring.perform_many(read_requests(requests, ring._fixed_pool))


def read_fixed(fd: Any, buf: B, offset: int = -1) -> Coroutine[Any, Any, tuple[B, int]]:
    """``read`` into a buffer of a :class:`BufferPool` (or a memoryview of
    one): a fixed read (IORING_OP_READ_FIXED) when the pool is registered with
    this ring, a plain read otherwise. Any other buffer: ``TypeError``."""
    ring = ring_of_task()
    return ring.perform(fixed_or_plain(ring._fixed_pool, ReadFixed, Read, fd, buf, offset))


def write_fixed(fd: Any, buf: B, offset: int = -1) -> Coroutine[Any, Any, tuple[B, int]]:
    """``write`` from a buffer of a :class:`BufferPool`, as :func:`read_fixed`."""
    ring = ring_of_task()
    return ring.perform(fixed_or_plain(ring._fixed_pool, WriteFixed, Write, fd, buf, offset))


def readv(fd: Any, bufs: S, offset: int = -1) -> Coroutine[Any, Any, tuple[S, int]]:
    """Scatter-read into a sequence of writable buffers."""
    ring = ring_of_task()
    return ring.perform(ReadV(fd, bufs, offset))


def writev(fd: Any, bufs: S, offset: int = -1) -> Coroutine[Any, Any, tuple[S, int]]:
    """Gather-write from a sequence of buffers."""
    ring = ring_of_task()
    return ring.perform(WriteV(fd, bufs, offset))


def recv(sock: Any, buf: B, flags: int = 0) -> Coroutine[Any, Any, tuple[B, int]]:
    """Receive into ``buf``; 0 bytes means the peer closed its side."""
    ring = ring_of_task()
    return ring.perform(Recv(sock, buf, flags))


def send(sock: Any, buf: B, flags: int = 0) -> Coroutine[Any, Any, tuple[B, int]]:
    """Send from ``buf``; may send less than all of it."""
    ring = ring_of_task()
    return ring.perform(Send(sock, buf, flags))


def send_zc(sock: Any, buf: B, flags: int = 0) -> Coroutine[Any, Any, tuple[B, int]]:
    """Send from ``buf`` without copying it into the socket buffer
    (IORING_OP_SEND_ZC): the network stack reads ``buf`` itself, so the
    operation keeps it (lent, a ``bytearray`` cannot be resized) until the
    kernel's notification that it is done with it, after the byte count.
    Returns ``(buf, n)``; may send less than all. Where the kernel has no
    send_zc (``Ring.features()["send_zc"]``) or the socket cannot send
    without copying (``AF_UNIX``), a plain :func:`send`."""
    return ring_of_task().send_zc(sock, buf, flags)


def recvmsg(
    sock: Any, bufs: S, ancbufsize: int = 0, flags: int = 0
) -> Coroutine[Any, Any, tuple[S, int, list[tuple[int, int, bytes]], int, Any]]:
    """``socket.recvmsg_into`` with owned buffers: receive into a sequence of
    writable buffers and up to ``ancbufsize`` bytes of ancillary data. Returns
    ``(bufs, nbytes, ancdata, msg_flags, address)``: the same sequence, then
    what ``recvmsg_into`` returns (``ancdata`` as ``[(level, type, data)]``,
    ``msg_flags`` with ``MSG_TRUNC``/``MSG_CTRUNC``, the sender's address or
    None)."""
    ring = ring_of_task()
    return ring.perform(RecvMsg(sock, bufs, ancbufsize, flags))


def sendmsg(
    sock: Any, bufs: S, ancdata: Any = (), flags: int = 0, address: Any = None
) -> Coroutine[Any, Any, tuple[S, int]]:
    """``socket.sendmsg`` with owned buffers: send from a sequence of buffers
    with ancillary data ``[(level, type, data)]``, to ``address`` (None: the
    connected peer; a host name is resolved with the loop's resolver). Returns
    ``(bufs, nbytes)``."""
    ring = ring_of_task()
    if address is not None and not is_numeric(socket_family(sock, fileno(sock)), address):
        return ring.sendmsg(sock, bufs, ancdata, flags, address)
    return ring.perform(SendMsg(sock, bufs, ancdata, flags, address))


async def accept(sock: Any) -> tuple[socket.socket, Any]:
    """Accept a connection: ``(socket.socket, address)``."""
    return await ring_of_task().accept(sock)


async def connect(sock: Any, address: Any) -> None:
    """Connect ``sock``; host names are resolved with the loop's resolver."""
    await ring_of_task().connect(sock, address)


async def open(  # noqa: A001 - the issue's name, mirroring os.open
    path: Any, flags: int = os.O_RDONLY, mode: int = 0o666, *, dir_fd: Any = None
) -> int:
    """``os.open`` through io_uring: returns a close-on-exec fd."""
    return await ring_of_task().open(path, flags, mode, dir_fd=dir_fd)


async def close(fd: Any) -> None:
    """Close an int fd, or a ``socket.socket`` (detached once closed)."""
    await ring_of_task().close_fd(fd)


def splice(
    fd_in: Any, off_in: int, fd_out: Any, off_out: int, nbytes: int, flags: int = 0
) -> Coroutine[Any, Any, int]:
    """``os.splice`` through io_uring: move up to ``nbytes`` from ``fd_in`` at
    ``off_in`` to ``fd_out`` at ``off_out`` without copying through user
    memory; one of the two must be a pipe, and a pipe's offset is -1 (so is
    a file's to use and move its position). ``flags`` are ``os.SPLICE_F_*``.
    Returns the count moved, 0 at the end of the input. Cancelled while it
    waits (an empty pipe, a full socket), nothing moved."""
    ring = ring_of_task()
    return ring.perform(Splice(fd_in, off_in, fd_out, off_out, nbytes, flags))


async def fsync(fd: Any, *, datasync: bool = False) -> None:
    """``os.fsync`` (or ``os.fdatasync`` with ``datasync=True``)."""
    await ring_of_task().fsync(fd, datasync=datasync)


async def stat(path: Any, *, dir_fd: Any = None, follow_symlinks: bool = True) -> os.stat_result:
    """``os.stat`` through statx; ``path`` may also be an open fd."""
    return await ring_of_task().stat(path, dir_fd=dir_fd, follow_symlinks=follow_symlinks)


async def shutdown(sock: Any, how: int) -> None:
    """``socket.shutdown``; unlike ``close``, it ends operations in flight on
    the socket (a pending recv returns 0)."""
    await ring_of_task().shutdown(sock, how)


async def fallocate(fd: Any, offset: int, length: int, *, mode: int = 0) -> None:
    """``fallocate(2)``: ``os.posix_fallocate`` with mode 0, or ``FALLOC_FL_*`` flags."""
    await ring_of_task().fallocate(fd, offset, length, mode=mode)


async def fadvise(fd: Any, offset: int, length: int, advice: int) -> None:
    """``os.posix_fadvise``."""
    await ring_of_task().fadvise(fd, offset, length, advice)


async def ftruncate(fd: Any, length: int) -> None:
    """``os.ftruncate`` (needs Linux 6.9; ``UnsupportedError`` before)."""
    await ring_of_task().ftruncate(fd, length)


async def unlink(path: Any, *, dir_fd: Any = None) -> None:
    """``os.unlink``."""
    await ring_of_task().unlink(path, dir_fd=dir_fd)


async def rmdir(path: Any, *, dir_fd: Any = None) -> None:
    """``os.rmdir``."""
    await ring_of_task().rmdir(path, dir_fd=dir_fd)


async def mkdir(path: Any, mode: int = 0o777, *, dir_fd: Any = None) -> None:
    """``os.mkdir``."""
    await ring_of_task().mkdir(path, mode, dir_fd=dir_fd)


async def rename(src: Any, dst: Any, *, src_dir_fd: Any = None, dst_dir_fd: Any = None) -> None:
    """``os.rename``, which on Linux replaces ``dst`` as ``os.replace`` does."""
    await ring_of_task().rename(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)


async def symlink(src: Any, dst: Any, *, dir_fd: Any = None) -> None:
    """``os.symlink``: make ``dst`` a symbolic link to ``src``."""
    await ring_of_task().symlink(src, dst, dir_fd=dir_fd)


async def link(
    src: Any,
    dst: Any,
    *,
    src_dir_fd: Any = None,
    dst_dir_fd: Any = None,
    follow_symlinks: bool = True,
) -> None:
    """``os.link``: make ``dst`` a hard link to ``src``."""
    await ring_of_task().link(
        src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd, follow_symlinks=follow_symlinks
    )
