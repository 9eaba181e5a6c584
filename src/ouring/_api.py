"""The module-level operations written by hand (the others are generated:
``_generated_api.py``), loop-neutral: each asks ``ring_of_task()``
(``_current.py``) for the ring of the running task, trio's or asyncio's, and
hands its operation to that ring's executor. ``open_ring`` builds a ring and
asks the current library's adapter to drive it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Coroutine, Iterable
from contextlib import asynccontextmanager
from threading import get_ident
from typing import Any, TypeVar

from ._current import _innermost, _task_ring, adapter, ring_of_task
from ._fallback import make_ring
from ._generated_api import *  # noqa: F403 - the one-operation calls, written from _ops.py
from ._ops import (
    Read,
    ReadFixed,
    SendMsg,
    Write,
    WriteFixed,
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
# Those that build one operation and perform it are written from their class
# in _ops.py (``public = Public(...)``) by tools/gen_ops.py, in
# _generated_api.py. These do more: a batch, a choice of operation, a name to
# resolve, every ring to ask. Like the generated ones, the hot ones are plain
# functions that build their operation and return the executor's coroutine:
# arguments are checked at the call, and awaiting them goes through one
# coroutine frame fewer than an ``async def`` wrapper would.


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


def send_zc(sock: Any, buf: B, flags: int = 0) -> Coroutine[Any, Any, tuple[B, int]]:
    """Send from ``buf`` without copying it into the socket buffer
    (IORING_OP_SEND_ZC): the network stack reads ``buf`` itself, so the
    operation keeps it (lent, a ``bytearray`` cannot be resized) until the
    kernel's notification that it is done with it, after the byte count.
    Returns ``(buf, n)``; may send less than all. Where the kernel has no
    send_zc (``Ring.features()["send_zc"]``) or the socket cannot send
    without copying (``AF_UNIX``), a plain :func:`send`."""
    return ring_of_task().send_zc(sock, buf, flags)


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


async def connect(sock: Any, address: Any) -> None:
    """Connect ``sock``; host names are resolved with the loop's resolver."""
    await ring_of_task().connect(sock, address)


async def close(fd: Any) -> None:
    """Close an int fd, or a ``socket.socket`` (detached once closed)."""
    await ring_of_task().close_fd(fd)
