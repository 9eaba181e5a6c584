"""When io_uring is unavailable: the same API on worker threads and readiness.

``make_ring`` opens an io_uring ``Ring``; when the kernel refuses one
(``UnsupportedError``: ``kernel.io_uring_disabled``, a seccomp filter's
``EPERM``, ``ENOSYS``, ``ENOMEM``) and the fallback is enabled
(``OURING_FALLBACK=threads``, or ``fallback="threads"``), it returns a
``ThreadRing`` instead. ``OURING_FALLBACK=always-threads`` (or
``fallback="always-threads"``) skips io_uring altogether, for tests;
``off`` (the default) re-raises ``UnsupportedError``.

A ``ThreadRing`` executes the very ``Operation`` objects the io_uring path
submits: their constructors validated the arguments and leased the buffers,
their SQE image (``fd, addr, length, offset, op_flags``) says what to do, and
the equivalent syscall runs on that image and stores what the kernel would have
posted in ``op.res`` (a count, an fd, or ``-errno``). ``release()`` runs once,
then ``op.outcome()`` makes the caller's value, so return values and exceptions
are those of the io_uring path by construction.

Where each operation runs, and what a cancel means (trio's rule: an operation
that raises ``Cancelled`` did not happen):

- Sockets, pipes, ttys, character devices (``recv``, ``send``, ``accept``,
  ``connect``, and ``read``/``write``/``readv``/``writev`` on fds that are not
  regular files, block devices or directories): a non-blocking attempt in the
  event-loop thread, and ``trio.lowlevel.wait_readable``/``wait_writable``
  between attempts. The attempt is non-blocking per call, so the caller's fd
  keeps its mode: ``MSG_DONTWAIT`` for recv/send, ``RWF_NOWAIT`` (preadv2 /
  pwritev2) for read/write. Only where the kernel has no per-call flag
  (``accept``, ``connect``, read/write on a tty) is ``O_NONBLOCK`` set around
  that one syscall and restored right after, with no checkpoint in between.
  A cancel can only land while waiting for readiness, before the syscall:
  nothing was consumed, ``Cancelled`` is exact. Like io_uring, an fd with
  ``O_NONBLOCK`` still waits; an explicit ``MSG_DONTWAIT`` gets ``EAGAIN``.
- Files and paths (read/write on regular files, ``open``, ``close``, ``fsync``,
  ``stat``, ``fallocate``, ``fadvise``, ``ftruncate``, ``unlink``, ``rmdir``,
  ``mkdir``, ``rename``, ``symlink``, ``link``): a worker thread. A cancel
  that arrives while the syscall runs does not abandon it: like an io_uring
  cancel that finds the request already running in io-wq, it waits for the
  syscall and the result is *returned* (trio raises ``Cancelled`` at the next
  checkpoint). Abandoning would report ``Cancelled`` for a write that
  happened, a file position that moved or a file that was created. File
  syscalls are short; a blocking ``open`` of a FIFO is the exception (a
  cancel waits for the peer), as an uninterruptible io-wq request would.
  A cancel while waiting for a thread (the per-ring ``CapacityLimiter``)
  withdraws the operation: ``Cancelled``, nothing happened.
- ``nop``, ``shutdown``: at once, followed by a schedule point.

Ownership is the io_uring path's: the operation (and its leases: a bytearray
lent to a pending recv cannot be resized) is held by the ring until the
syscall has finished, whatever happens to the caller; a closed coroutine whose
thread is still running leaves the operation to the ring, which releases it and
undoes a result nobody receives (closes an accepted or opened fd) when the
thread ends. ``cancel_fd`` (and so ``close``, on any ring of the process:
see ``_ring.py``) ends operations waiting on the fd with
``trio.ClosedResourceError``; ``close()`` of the ring ends waiting
ones with ``RingClosedError``, waits ``teardown_timeout`` for running threads
and keeps forever (leaks, counted) what has not finished by then.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import socket
import stat as stat_module
import threading
import time
import warnings
from collections.abc import Callable, Coroutine, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, Final, NoReturn, TypeVar

import outcome
import trio

from ._errors import FdClosedError, RingClosedError, UnsupportedError
from ._native import ffi, lib
from ._ops import (
    CALLER,
    CLOSED,
    DONE,
    LEAKED,
    PENDING,
    RING,
    SUBMITTED,
    Accept,
    Close,
    Connect,
    Fadvise,
    Fallocate,
    Fsync,
    Ftruncate,
    LinkAt,
    MkdirAt,
    Nop,
    OpenAt,
    Operation,
    Read,
    ReadV,
    Recv,
    RecvBytes,
    RecvMsg,
    RenameAt,
    RmdirAt,
    Send,
    SendCount,
    SendMsg,
    Shutdown,
    Splice,
    Statx,
    SymlinkAt,
    UnlinkAt,
    Write,
    WriteV,
    address_of,
    uses_fd,
)
from ._ring import _FEATURE_OPCODES, FdRequest, Ring, RingStatistics

if TYPE_CHECKING:
    from ._pool import BufferPool

__all__ = [
    "FALLBACK_ENV",
    "FALLBACK_MODES",
    "ThreadDriver",
    "ThreadRing",
    "make_ring",
    "wait_answered",
    "wakeup_in_run",
]

T = TypeVar("T")

FALLBACK_ENV: Final = "OURING_FALLBACK"
#: ``off``: io_uring or ``UnsupportedError``; ``threads``: io_uring, else a
#: ``ThreadRing``; ``always-threads``: a ``ThreadRing`` without trying io_uring.
FALLBACK_MODES: Final = ("off", "threads", "always-threads")

_EAGAIN = -errno.EAGAIN
_OFFSET_CURRENT = (1 << 64) - 1  # an SQE offset of -1: the file position
_DEFAULT_THREADS = 40  # trio.to_thread's default limit

# Operations whose thread had not finished when their ring closed: their
# memory may still be written by that thread, so it is kept forever.
_leaked_forever: list[Operation[Any]] = []


def make_ring(
    entries: int = 256,
    *,
    cq_entries: int | None = None,
    setup_flags: int | None = None,
    teardown_timeout: float = 5.0,
    fallback: str | None = None,
) -> Ring:
    """An io_uring ``Ring``, or a ``ThreadRing`` when io_uring is unavailable and
    the fallback is on. ``fallback`` (default: ``$OURING_FALLBACK``, else
    ``"off"``) is one of :data:`FALLBACK_MODES`."""
    mode = fallback_mode(fallback)
    if mode == "always-threads":
        return ThreadRing(teardown_timeout=teardown_timeout)
    try:
        return Ring(
            entries,
            cq_entries=cq_entries,
            setup_flags=setup_flags,
            teardown_timeout=teardown_timeout,
        )
    except UnsupportedError as exc:
        if mode != "threads":
            raise
        return ThreadRing(teardown_timeout=teardown_timeout, reason=exc)


def fallback_mode(fallback: str | None = None) -> str:
    """The validated fallback mode: ``fallback``, else ``$OURING_FALLBACK``."""
    if fallback is None:
        value = os.environ.get(FALLBACK_ENV, "").strip()
        if value not in ("", *FALLBACK_MODES):
            raise ValueError(
                f"{FALLBACK_ENV}={value!r} is not one of {', '.join(FALLBACK_MODES)} "
                "(or unset, which means off)"
            )
        return value or "off"
    if fallback not in FALLBACK_MODES:
        raise ValueError(f"fallback={fallback!r} is not one of {', '.join(FALLBACK_MODES)}")
    return fallback


# -- the syscalls, on the operation's SQE image -----------------------------------------
#
# ctypes calls release the GIL, take plain addresses (the leased memory the SQE
# would point at), and report errno per thread. Each returns what the CQE would
# hold: the result, or -errno.

_libc = ctypes.CDLL(None, use_errno=True)
_int, _uint, _ptr = ctypes.c_int, ctypes.c_uint, ctypes.c_void_p
_size, _ssize, _off = ctypes.c_size_t, ctypes.c_ssize_t, ctypes.c_int64


def _c(name: str, restype: Any, *argtypes: Any) -> Any:
    function = getattr(_libc, name)
    function.restype = restype
    function.argtypes = argtypes
    return function


_read = _c("read", _ssize, _int, _ptr, _size)
_pread = _c("pread64", _ssize, _int, _ptr, _size, _off)
_write = _c("write", _ssize, _int, _ptr, _size)
_pwrite = _c("pwrite64", _ssize, _int, _ptr, _size, _off)
_readv = _c("readv", _ssize, _int, _ptr, _int)
_preadv = _c("preadv64", _ssize, _int, _ptr, _int, _off)
_preadv2 = _c("preadv64v2", _ssize, _int, _ptr, _int, _off, _int)
_writev = _c("writev", _ssize, _int, _ptr, _int)
_pwritev = _c("pwritev64", _ssize, _int, _ptr, _int, _off)
_pwritev2 = _c("pwritev64v2", _ssize, _int, _ptr, _int, _off, _int)
_recv = _c("recv", _ssize, _int, _ptr, _size, _int)
_send = _c("send", _ssize, _int, _ptr, _size, _int)
_recvmsg = _c("recvmsg", _ssize, _int, _ptr, _int)
_sendmsg = _c("sendmsg", _ssize, _int, _ptr, _int)
_accept4 = _c("accept4", _int, _int, _ptr, _ptr, _int)
_connect = _c("connect", _int, _int, _ptr, _uint)
_getsockopt = _c("getsockopt", _int, _int, _int, _int, _ptr, _ptr)
_shutdown = _c("shutdown", _int, _int, _int)
_close = _c("close", _int, _int)
_fsync = _c("fsync", _int, _int)
_fdatasync = _c("fdatasync", _int, _int)
_openat = _c("openat", _int, _int, _ptr, _int, _uint)
_statx = _c("statx", _int, _int, _ptr, _int, _uint, _ptr)
_fallocate = _c("fallocate64", _int, _int, _int, _off, _off)
_fadvise = _c("posix_fadvise64", _int, _int, _off, _off, _int)  # returns the errno
_ftruncate = _c("ftruncate64", _int, _int, _off)
_unlinkat = _c("unlinkat", _int, _int, _ptr, _int)
_mkdirat = _c("mkdirat", _int, _int, _ptr, _uint)
_renameat2 = _c("renameat2", _int, _int, _ptr, _int, _ptr, _uint)
_linkat = _c("linkat", _int, _int, _ptr, _int, _ptr, _int)
_symlinkat = _c("symlinkat", _int, _ptr, _int, _ptr)


def _sys(function: Any, *args: Any) -> int:
    """Call, retrying EINTR (a signal, not a cancel: io_uring retries too)."""
    while True:
        res: int = function(*args)
        if res >= 0:
            return res
        code = ctypes.get_errno()
        if code != errno.EINTR:
            return -code


def _offset(op: Operation[Any]) -> int | None:
    return None if op.offset == _OFFSET_CURRENT else op.offset


def _i32(value: int) -> int:
    """A dir fd that travelled in a 32-bit SQE field (AT_FDCWD is negative)."""
    return value - (1 << 32) if value >= 1 << 31 else value


def _rw_blocking(op: Operation[Any]) -> int:
    """read/write/readv/writev on a regular file, in a worker thread."""
    fd, addr, length, offset = op.fd, op.addr, op.length, _offset(op)
    if isinstance(op, Read):
        return (
            _sys(_read, fd, addr, length)
            if offset is None
            else _sys(_pread, fd, addr, length, offset)
        )
    if isinstance(op, Write):
        return (
            _sys(_write, fd, addr, length)
            if offset is None
            else _sys(_pwrite, fd, addr, length, offset)
        )
    if isinstance(op, ReadV):
        return (
            _sys(_readv, fd, addr, length)
            if offset is None
            else _sys(_preadv, fd, addr, length, offset)
        )
    return (
        _sys(_writev, fd, addr, length)
        if offset is None
        else _sys(_pwritev, fd, addr, length, offset)
    )


def _close_fd(op: Operation[Any]) -> int:
    # Linux closes the fd even when close(2) reports EINTR: never retry it.
    if _close(op.fd) == 0:
        return 0
    code = ctypes.get_errno()
    return 0 if code == errno.EINTR else -code


def _fadvise_op(op: Operation[Any]) -> int:
    length = op.length if op.addr == 0 else op.addr
    return -int(_fadvise(op.fd, op.offset, length, op.op_flags))


# The worker-thread operations, by class: each reads the SQE fields as the
# kernel does for that opcode (see ouring_prep in native/shim.h).
_THREADED: dict[type[Operation[Any]], Callable[[Operation[Any]], int]] = {
    Read: _rw_blocking,
    Write: _rw_blocking,
    ReadV: _rw_blocking,
    WriteV: _rw_blocking,
    OpenAt: lambda op: _sys(_openat, op.fd, op.addr, op.op_flags, op.length),
    Close: _close_fd,
    Fsync: lambda op: _sys(
        _fdatasync if op.op_flags & lib.IORING_FSYNC_DATASYNC else _fsync, op.fd
    ),
    Statx: lambda op: _sys(_statx, op.fd, op.addr, op.op_flags, op.length, op.offset),
    Fallocate: lambda op: _sys(_fallocate, op.fd, op.length, op.offset, op.addr),
    Fadvise: _fadvise_op,
    Ftruncate: lambda op: _sys(_ftruncate, op.fd, op.offset),
    UnlinkAt: lambda op: _sys(_unlinkat, op.fd, op.addr, op.op_flags),
    RmdirAt: lambda op: _sys(_unlinkat, op.fd, op.addr, op.op_flags),
    MkdirAt: lambda op: _sys(_mkdirat, op.fd, op.addr, op.length),
    RenameAt: lambda op: _sys(_renameat2, op.fd, op.addr, _i32(op.length), op.offset, op.op_flags),
    LinkAt: lambda op: _sys(_linkat, op.fd, op.addr, _i32(op.length), op.offset, op.op_flags),
    # IORING_OP_SYMLINKAT: addr is the target, addr2 (offset) the new link.
    SymlinkAt: lambda op: _sys(_symlinkat, op.addr, op.fd, op.offset),
}


class _NonBlocking:
    """``O_NONBLOCK`` on ``fd`` for the duration of one syscall, then the
    caller's mode again; for syscalls with no per-call non-blocking flag."""

    __slots__ = ("fd", "was_blocking")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.was_blocking = False

    def __enter__(self) -> None:
        try:
            self.was_blocking = os.get_blocking(self.fd)
            if self.was_blocking:
                os.set_blocking(self.fd, False)
        except OSError:
            self.was_blocking = False  # a bad fd: the syscall itself reports it

    def __exit__(self, *exc_info: object) -> None:
        if self.was_blocking:
            os.set_blocking(self.fd, True)


def _rw_nowait(op: Operation[Any], out: bool) -> int:
    """One non-blocking read/write on a pipe, socket or tty. Stream files have
    no position: io_uring ignores the offset there, and so does this."""
    if isinstance(op, Read | Write):
        iov = ffi.new("struct iovec *")
        iov.iov_base = ffi.cast("void *", op.addr)
        iov.iov_len = op.length
        iovecs, count = address_of(iov), 1
    else:
        iovecs, count = op.addr, op.length
    vectored = _pwritev2 if out else _preadv2
    res = _sys(vectored, op.fd, iovecs, count, -1, os.RWF_NOWAIT)
    if res == -errno.EOPNOTSUPP:  # no FMODE_NOWAIT (ttys): O_NONBLOCK for this call
        with _NonBlocking(op.fd):
            res = _sys(_writev if out else _readv, op.fd, iovecs, count)
    return res


def _accept_nowait(op: Operation[Any]) -> int:
    with _NonBlocking(op.fd):
        return _sys(_accept4, op.fd, op.addr, op.offset, op.op_flags)


def _connect_start(op: Operation[Any]) -> int:
    # A blocking connect would block the loop; with O_NONBLOCK it returns
    # EINPROGRESS and the handshake goes on in the kernel whatever the mode.
    with _NonBlocking(op.fd):
        return _sys(_connect, op.fd, op.addr, op.offset)


def _socket_error(fd: int) -> int:
    value = ctypes.c_int(0)
    size = ctypes.c_uint(ctypes.sizeof(value))
    if _getsockopt(fd, socket.SOL_SOCKET, socket.SO_ERROR, ctypes.byref(value), ctypes.byref(size)):
        return -ctypes.get_errno()
    return -value.value


# -- closing an fd across threads (see _ring.py): trio's side -------------------------------


def wakeup_in_run(ring: Ring) -> Callable[[], bool]:
    """``ring._wakeup`` for a ring driven by the current trio run: any thread
    may call it; the run's own thread then answers the ring's requests.
    ``TrioToken.run_sync_soon`` is thread-safe and wakes trio's I/O wait."""
    token = trio.lowlevel.current_trio_token()

    def wakeup() -> bool:
        try:
            token.run_sync_soon(ring._answer_fd_requests)
        except trio.RunFinishedError:
            return False  # the run is over: nothing drives the ring any more
        return True

    return wakeup


async def wait_answered(requests: Sequence[FdRequest]) -> None:
    """Park until other threads' rings have answered every request. Their
    answers arrive in their threads and reach this run through
    ``run_sync_soon``."""
    token = trio.lowlevel.current_trio_token()
    event = trio.Event()
    left = len(requests)

    def one_answered() -> None:  # in this run's thread
        nonlocal left
        left -= 1
        if left == 0:
            event.set()

    def answered() -> None:  # in the answering ring's thread (or this one)
        with contextlib.suppress(trio.RunFinishedError):  # this close was cancelled, run over
            token.run_sync_soon(one_answered)

    for request in requests:
        request.when_answered(answered)
    await event.wait()


# -- the ring ------------------------------------------------------------------------------


class _Entry:
    """What the ring keeps for one operation not yet DONE."""

    __slots__ = ("scope", "thread")

    def __init__(self) -> None:
        # Cancelled by cancel_fd (cancel_by=CLOSED) and close (cancel_by=RING):
        # it covers only waits, never a syscall in progress.
        self.scope = trio.CancelScope()
        self.thread = False  # a worker thread runs the syscall: it cannot be stopped


class ThreadRing(Ring):
    """The ``Ring`` API without io_uring: operations run as the equivalent
    syscalls, on worker threads (files, paths) or after readiness (sockets,
    pipes). See the module docstring for the cancellation semantics.

    Driven by a :class:`ThreadDriver` (``open_ring``/``current_ring`` make one):
    no reaper, no instrument; ``perform`` is the executor itself. It has no
    ring fd: ``fd`` and ``wait_fd`` are -1, and the queue sizes, setup flags and
    ``batches`` are 0. ``reason`` is the ``UnsupportedError`` that made
    :func:`make_ring` fall back (None when forced).
    """

    def __init__(
        self,
        *,
        teardown_timeout: float = 5.0,
        threads: int = _DEFAULT_THREADS,
        reason: UnsupportedError | None = None,
    ) -> None:
        # Ring.__init__ is not called: there is no io_uring to set up. Every
        # Ring method that would touch one is overridden below.
        if teardown_timeout < 0:
            raise ValueError("teardown_timeout must be >= 0")
        if not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be an int >= 1, not {threads!r}")
        self.reason = reason
        self.fd = -1
        self.wait_fd = -1
        self.sq_entries = 0
        self.cq_entries = 0
        self.setup_flags = 0
        self.teardown_timeout = teardown_timeout
        self.executor = None
        self._threads = threads
        self._closed = False
        self._claim()  # this thread and process own the ring (_thread, _forked)
        self._token: trio.lowlevel.TrioToken | None = None
        self._features = self._probe_features()
        self._limiter: trio.CapacityLimiter | None = None
        self._entries: dict[Operation[Any], _Entry] = {}
        self._locks: dict[tuple[int, bool], trio.Lock] = {}
        self._quiet: dict[int, trio.Event] = {}  # closes waiting for an fd's operations
        self._idle_callbacks: list[Callable[[], object]] = []
        self._crashes: dict[Operation[Any], BaseException] = {}
        # Results posted by worker threads, read by the trio thread (and by
        # close(), which may wait for them).
        self._cond = threading.Condition()
        self._thread_results: dict[Operation[Any], outcome.Outcome[int]] = {}
        self._submitted = 0
        self._completed = 0
        self._cancelled = 0
        self._leaked = 0
        # Other threads' requests held until no worker thread runs on the fd.
        self._answer_when_quiet: dict[int, list[FdRequest]] = {}
        self._register()

    def _attach(self) -> None:
        """Bind to the current trio run (by its driver)."""
        self._token = trio.lowlevel.current_trio_token()
        self._claim()  # the run's thread drives it from now on
        self._limiter = trio.CapacityLimiter(self._threads)
        self._wakeup = wakeup_in_run(self)

    # -- the executor ---------------------------------------------------------------

    def perform(self, op: Operation[T]) -> Coroutine[Any, Any, T]:
        return self._run(op)

    def perform_many(self, ops: Sequence[Operation[T]]) -> Coroutine[Any, Any, list[T]]:
        return self._run_many(ops)

    async def _run_many(self, ops: Sequence[Operation[T]]) -> list[T]:
        """read_many without io_uring: the reads one after another (each on a
        worker thread); if one raises, the rest never start."""
        results: list[T] = []
        try:
            for op in ops:
                results.append(await self._run(op))
        except BaseException:
            for rest in ops[len(results) + 1 :]:
                rest.release()
            raise
        return results

    async def _run(self, op: Operation[T]) -> T:
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            self._check_usable()
        except BaseException:
            op.release()  # never started: the caller keeps everything
            raise
        kind = type(op)
        if kind in (Recv, RecvBytes, RecvMsg, Accept):
            return await self._when_ready(op, out=False)
        if kind in (Send, SendCount, SendMsg):
            return await self._when_ready(op, out=True)
        if kind is Connect:
            return await self._connect(op)
        if kind is Splice:
            return await self._splice(op)
        if kind in (Read, ReadV, Write, WriteV):
            try:
                mode = os.fstat(op.fd).st_mode
            except OSError as exc:
                return await self._inline(op, -(exc.errno or errno.EBADF))
            if not (
                stat_module.S_ISREG(mode) or stat_module.S_ISBLK(mode) or stat_module.S_ISDIR(mode)
            ):
                return await self._when_ready(op, out=kind in (Write, WriteV))
            return await self._in_thread(op, _rw_blocking)
        if kind is Nop:
            return await self._inline(op, 0)
        if kind is Shutdown:  # never blocks
            return await self._inline(op, _sys(_shutdown, op.fd, op.length))
        if kind is Close:
            try:
                await self._quiesce(op.fd)
            except BaseException:
                op.release()  # the close did not happen; the fd stays open
                raise
        return await self._in_thread(op, _THREADED[kind])

    async def _quiesce(self, fd: int) -> None:
        """Before a close: end what waits on ``fd`` (ClosedResourceError) and
        wait for the syscalls running on it in worker threads. A thread that
        has not reached its syscall yet must not find the fd number closed, or
        reused by a file opened meanwhile; io_uring pins the file instead."""
        self.cancel_fd(fd)
        while any(uses_fd(other, fd) for other in self._entries):
            event = self._quiet.get(fd)
            if event is None:
                event = self._quiet[fd] = trio.Event()
            await event.wait()

    def _check_usable(self) -> None:
        if self._closed:
            raise RingClosedError("the ring is closed")
        self._check_process()
        if self._token is None:
            raise RuntimeError(
                "this ring is not driven by an event loop; use "
                "`async with ouring.open_ring()` inside trio.run"
            )
        if trio.lowlevel.current_trio_token() is not self._token:
            raise RingClosedError("this ring belongs to another thread; open one per thread")

    def _start(self, op: Operation[Any]) -> _Entry:
        entry = _Entry()
        op.state = PENDING
        self._entries[op] = entry
        return entry

    def _began(self, op: Operation[Any]) -> None:
        op.state = SUBMITTED
        self._submitted += 1

    async def _inline(self, op: Operation[T], res: int) -> T:
        """An operation that never blocks: done now, then a schedule point."""
        self._start(op)
        self._began(op)
        self._settle(op, res)
        try:
            await trio.lowlevel.cancel_shielded_checkpoint()
        except BaseException:
            op.discard()  # closed or thrown into: nobody receives it
            raise
        return self._outcome(op)

    async def _when_ready(self, op: Operation[T], out: bool) -> T:
        """Non-blocking attempts, waiting for readiness in between. One task
        per fd and direction waits at a time (trio allows one), the others
        queue in order behind it, as their SQEs would in the kernel."""
        if isinstance(op, (Recv, RecvBytes)):
            attempt: Callable[[Operation[Any]], int] = partial(_recv_nowait, op.op_flags)
            give_up = bool(op.op_flags & socket.MSG_DONTWAIT)
        elif isinstance(op, (Send, SendCount)):
            attempt = partial(_send_nowait, op.op_flags)
            give_up = bool(op.op_flags & socket.MSG_DONTWAIT)
        elif isinstance(op, RecvMsg):
            attempt = partial(_recvmsg_nowait, op.op_flags)
            give_up = bool(op.op_flags & socket.MSG_DONTWAIT)
        elif isinstance(op, SendMsg):
            attempt = partial(_sendmsg_nowait, op.op_flags)
            give_up = bool(op.op_flags & socket.MSG_DONTWAIT)
        elif isinstance(op, Accept):
            attempt, give_up = _accept_nowait, False
        else:
            attempt, give_up = partial(_rw_nowait, out=out), False
        wait = trio.lowlevel.wait_writable if out else trio.lowlevel.wait_readable
        return await self._serialized(op, out, attempt, wait, give_up)

    async def _connect(self, op: Operation[T]) -> T:
        def attempt(op: Operation[Any]) -> int:
            if op.state == SUBMITTED and op.res == -errno.EINPROGRESS:
                return _socket_error(op.fd)  # writable: the handshake ended
            res = _connect_start(op)
            op.res = res  # remembered between attempts (op is not DONE yet)
            return _EAGAIN if res == -errno.EINPROGRESS else res

        return await self._serialized(op, True, attempt, trio.lowlevel.wait_writable, False)

    async def _splice(self, op: Operation[T]) -> T:
        """splice(2) without io_uring: non-blocking attempts (SPLICE_F_NONBLOCK
        for the pipe, O_NONBLOCK around the call for a socket), waiting in
        between for the non-file ends to be ready: fd_in readable, fd_out
        writable. An attempt that touches a regular file runs in a worker
        thread (it may wait for the disk, never for a peer); a cancel that
        finds it running gets its result, as for any file syscall. A cancel
        while waiting means nothing moved: ``Cancelled``."""
        entry = self._start(op)
        self._began(op)
        ends: list[tuple[int, bool]] = []  # (fd, out) of the ends that may not be ready
        on_file = False
        for fd, out in ((op.file_index, False), (op.fd, True)):
            try:
                mode = os.fstat(fd).st_mode
            except OSError as exc:
                self._settle(op, -(exc.errno or errno.EBADF))
                await trio.lowlevel.cancel_shielded_checkpoint()
                return self._outcome(op)
            if stat_module.S_ISREG(mode) or stat_module.S_ISBLK(mode):
                on_file = True
            else:
                ends.append((fd, out))
        limiter = self._limiter
        assert limiter is not None
        res = -errno.ECANCELED
        yielded = False
        try:
            while True:
                if on_file:
                    # Shielded: the syscall never waits for a peer, and what it
                    # moved is returned, as for any file syscall in a thread.
                    # A cancel (the caller's, cancel_fd's, close's) meanwhile
                    # takes effect at the wait below if nothing moved.
                    yielded = True
                    with trio.CancelScope(shield=True):
                        res = await trio.to_thread.run_sync(_splice_nowait, op, limiter=limiter)
                else:
                    res = _splice_nowait(op)
                if res != _EAGAIN:
                    break
                # Nothing moved: wait for the ends that were not ready, one task
                # per fd and direction at a time (trio's rule), as _serialized.
                res = -errno.ECANCELED
                yielded = True
                with entry.scope:
                    for fd, out in ends:
                        lock = self._locks.get((fd, out))
                        if lock is None:
                            lock = self._locks[(fd, out)] = trio.Lock()
                        wait = trio.lowlevel.wait_writable if out else trio.lowlevel.wait_readable
                        async with lock:
                            await wait(fd)
                if entry.scope.cancel_called:
                    break  # cancel_fd or close: it did not happen
        except trio.ClosedResourceError:
            op.cancel_by = CLOSED  # someone else called notify_closing(fd)
            res = -errno.ECANCELED
        except BaseException:
            op.cancel_by = op.cancel_by or CALLER
            self._settle(op, -errno.ECANCELED)  # nothing moved since the last attempt
            raise
        finally:
            for key in ends:
                lock = self._locks.get(key)
                if lock is not None:
                    stats = lock.statistics()
                    if not stats.locked and not stats.tasks_waiting:
                        del self._locks[key]
        self._settle(op, res)
        if not yielded:
            # The schedule point; what happened is returned (trio raises
            # Cancelled at the next checkpoint).
            await trio.lowlevel.cancel_shielded_checkpoint()
        return self._outcome(op)

    async def _serialized(
        self,
        op: Operation[T],
        out: bool,
        attempt: Callable[[Operation[Any]], int],
        wait: Callable[[int], Coroutine[Any, Any, None]],
        give_up: bool,
    ) -> T:
        entry = self._start(op)
        self._began(op)
        # First one attempt at once, as io_uring issues a request before it
        # arms a poll: what is ready (data, a zero-length read, room to send)
        # completes even while another task waits for readiness on the fd.
        res = attempt(op)
        if res != _EAGAIN or give_up:
            self._settle(op, res)
            try:
                # It happened: the schedule point is shielded, and the result
                # is returned (trio raises Cancelled at the next checkpoint).
                await trio.lowlevel.cancel_shielded_checkpoint()
            except BaseException:
                op.discard()  # closed or thrown into: nobody receives it
                raise
            return self._outcome(op)
        # Then wait: trio lets one task at a time wait for readiness on an fd
        # in each direction, so the others queue in order behind it.
        key = (op.fd, out)
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = trio.Lock()
        res = -errno.ECANCELED
        try:
            with entry.scope:
                async with lock:  # a full checkpoint: the operation's schedule point
                    # No checkpoint between a successful syscall and its
                    # result: a cancel can land only in `wait`, before it.
                    while True:
                        # Readiness is level-triggered: what became ready while
                        # this task queued for the lock is seen at once. (A
                        # connect must not look at SO_ERROR before: it is 0
                        # while the handshake is still in progress.)
                        await wait(op.fd)
                        # A task already woken when cancel_fd or close cancelled
                        # its scope is not interrupted: it must not touch the
                        # fd number, which may be closed and reused by now.
                        if entry.scope.cancel_called:
                            res = -errno.ECANCELED
                            break
                        res = attempt(op)
                        if res != _EAGAIN:
                            break
            if entry.scope.cancelled_caught:
                res = -errno.ECANCELED  # cancel_fd or close: it did not happen
        except trio.ClosedResourceError:
            # Someone else called notify_closing(fd): it is being closed.
            op.cancel_by = CLOSED
            res = -errno.ECANCELED
        except BaseException:
            op.cancel_by = op.cancel_by or CALLER
            self._settle(op, -errno.ECANCELED)  # nothing was consumed
            raise
        finally:
            stats = lock.statistics()
            if not stats.locked and not stats.tasks_waiting and self._locks.get(key) is lock:
                del self._locks[key]
        self._settle(op, res)
        return self._outcome(op)

    async def _in_thread(self, op: Operation[T], syscall: Callable[[Operation[Any]], int]) -> T:
        entry = self._start(op)
        limiter = self._limiter
        assert limiter is not None
        try:
            with entry.scope:
                await limiter.acquire_on_behalf_of(op)
        except BaseException:
            op.cancel_by = op.cancel_by or CALLER
            self._settle(op, -errno.ECANCELED)  # it never reached a thread
            raise
        if entry.scope.cancelled_caught:
            self._settle(op, -errno.ECANCELED)  # cancel_fd or close while queued
            return self._outcome(op)
        self._began(op)
        entry.thread = True
        op.waiter = trio.lowlevel.current_task()
        trio.lowlevel.start_thread_soon(partial(syscall, op), partial(self._deliver, op))
        try:
            # Abort.FAILED: a cancel waits for the syscall, whose result is
            # returned (it happened); trio raises Cancelled at the next checkpoint.
            await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.FAILED)
        except BaseException:
            # The coroutine was closed or thrown into while parked: the ring
            # keeps the operation until its thread ends and undoes the result.
            if op.state == DONE:
                op.discard()
            else:
                op.waiter = None
                op.abandoned = True
            raise
        return self._outcome(op)

    def _deliver(self, op: Operation[Any], result: outcome.Outcome[int]) -> None:
        """In the worker thread, once the syscall returned."""
        with self._cond:
            leaked = op.state == LEAKED
            if not leaked:
                self._thread_results[op] = result
                self._cond.notify_all()
        if leaked:
            # The ring closed without waiting for this thread and kept the
            # operation forever. Now that the syscall is over nothing writes
            # into its memory: give the buffers back, undo an unreceived fd.
            with contextlib.suppress(BaseException):
                op.res = result.unwrap()
            op.release()
            op.discard()
            with contextlib.suppress(ValueError):
                _leaked_forever.remove(op)
            return
        token = self._token
        assert token is not None
        # After the run: close() took the result, or leaked the operation.
        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(self._thread_done, op)

    def _thread_done(self, op: Operation[Any]) -> None:
        with self._cond:
            result = self._thread_results.pop(op, None)
        if result is not None:
            self._finish_thread(op, result)

    def _finish_thread(self, op: Operation[Any], result: outcome.Outcome[int]) -> None:
        if self._limiter is not None:
            self._limiter.release_on_behalf_of(op)
        if op.state == LEAKED:
            return  # kept forever; the thread is done with it now, but close() said so
        try:
            res = result.unwrap()
        except BaseException as exc:  # noqa: BLE001 - a bug in a syscall wrapper
            self._crashes[op] = exc  # raised to the waiter
            res = -errno.EIO
        waiter = op.waiter
        op.waiter = None
        self._settle(op, res)
        if waiter is not None:
            trio.lowlevel.reschedule(waiter)  # type: ignore[arg-type]

    def _settle(self, op: Operation[Any], res: int) -> None:
        """The operation's syscall returned (or it was withdrawn): -> DONE."""
        op.res = res
        op.state = DONE
        op.release()
        self._completed += 1
        if op.cancelled():
            self._cancelled += 1
        self._entries.pop(op, None)
        if op.abandoned and res >= 0:
            op.discard()
        for fd in (op.fd, op.file_index) if type(op) is Splice else (op.fd,):
            quiet = self._quiet.get(fd)
            held = self._answer_when_quiet.get(fd)
            if (quiet is not None or held is not None) and not any(
                uses_fd(other, fd) for other in self._entries
            ):
                if quiet is not None:
                    del self._quiet[fd]
                    quiet.set()
                if held is not None:
                    del self._answer_when_quiet[fd]
                    for request in held:
                        request.answer()
        if self._idle_callbacks and not self._entries:
            callbacks, self._idle_callbacks = self._idle_callbacks, []
            for callback in callbacks:
                callback()

    def _outcome(self, op: Operation[T]) -> T:
        crash = self._crashes.pop(op, None)
        if crash is not None:
            raise crash
        try:
            return op.outcome()
        except FdClosedError as exc:
            raise trio.ClosedResourceError(str(exc)) from None

    # -- the Ring API ------------------------------------------------------------------

    def _cancel_fd_here(self, fd: int) -> int:
        """End the operations waiting on ``fd`` because it is being closed:
        those that did not happen raise ``trio.ClosedResourceError``. One whose
        syscall runs in a worker thread completes and returns its result (an
        io_uring cancel that finds a running request does the same)."""
        targets = [op for op in self._entries if uses_fd(op, fd)]
        for op in targets:
            self.cancel(op, CLOSED)
        if targets and self._token is not None:
            # trio's rule for an fd it may be waiting on; our own waiters are
            # already aborted by their scopes.
            with contextlib.suppress(RuntimeError):  # not inside this ring's run
                trio.lowlevel.notify_closing(fd)
        return len(targets)

    def _fd_request_done(self, request: FdRequest) -> None:
        # Answered once no operation is left on the fd: a waiting task ends at
        # its next step, but a syscall already running in a worker thread
        # finishes first, so that no thread reaches the fd number after the
        # other thread's close(2).
        if not self._closed and any(uses_fd(op, request.fd) for op in self._entries):
            self._answer_when_quiet.setdefault(request.fd, []).append(request)
        else:
            request.answer()

    async def _wait_answered(self, requests: Sequence[FdRequest]) -> None:
        self._check_usable()
        await wait_answered(requests)

    def call_when_idle(self, callback: Callable[[], object]) -> None:
        if self._entries:
            self._idle_callbacks.append(callback)
        else:
            callback()

    def close(self) -> None:
        """Refuse new operations; end the waiting ones (``RingClosedError``);
        wait up to ``teardown_timeout`` for the running threads and deliver
        their results. What still runs after that is kept (leaked, counted,
        with a ``ResourceWarning``) until its thread ends, and its waiter gets
        ``RingClosedError``."""
        if self._closed:
            return
        if threading.get_ident() != self._thread and not self._forked:
            raise RuntimeError("a Ring must be closed by the thread that created it")
        self._closed = True
        if self._forked:
            return  # a forked child: the parent's threads did not come along
        running: list[Operation[Any]] = []
        for op, entry in list(self._entries.items()):
            if entry.thread:
                running.append(op)
            else:
                # The waiting task raises at its next checkpoint and settles.
                self.cancel(op, RING)
        self._answer_closed()
        if not running:
            return
        deadline = time.monotonic() + self.teardown_timeout
        interrupted: BaseException | None = None
        with self._cond:
            while not all(op in self._thread_results for op in running):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    self._cond.wait(remaining)
                except BaseException as exc:  # noqa: BLE001 - Ctrl-C during the wait
                    # Finish the teardown first (never free what a thread
                    # may write), then re-raise.
                    interrupted = exc
                    break
            done = [
                (op, self._thread_results.pop(op)) for op in running if op in self._thread_results
            ]
            finished = {op for op, _ in done}
            stranded = [op for op in running if op not in finished]
            for op in stranded:
                op.state = LEAKED  # from here on, _deliver releases it
        for op, result in done:
            self._finish_thread(op, result)
        if stranded:
            _leaked_forever.extend(stranded)
            self._leaked += len(stranded)
            for op in stranded:
                self._entries.pop(op, None)
                waiter, op.waiter = op.waiter, None
                op.abandoned = True
                if waiter is not None:
                    error = RingClosedError(
                        "the ring was closed while the operation still ran in a worker thread"
                    )
                    with contextlib.suppress(RuntimeError):  # not inside the run any more
                        trio.lowlevel.reschedule(waiter, outcome.Error(error))  # type: ignore[arg-type]
            warnings.warn(
                f"ouring: {len(stranded)} operation(s) still ran in worker threads "
                f"{self.teardown_timeout}s after closing the ring; their buffers are "
                "kept until those threads end, so no thread writes into freed memory",
                ResourceWarning,
                stacklevel=2,
            )
        if interrupted is not None:
            raise interrupted

    def _answer_closed(self) -> None:
        """Closed: nothing more starts here; answer every request (waiting
        tasks end with RingClosedError at their next step)."""
        self._unregister()
        held, self._answer_when_quiet = self._answer_when_quiet, {}
        for requests in held.values():
            for request in requests:
                request.answer()

    def __del__(self) -> None:
        # Nothing native to free; running threads hold their operations.
        if getattr(self, "_registered", False):
            self._closed = True
            self._forget()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def busy(self) -> bool:
        """Whether any operation is not yet done."""
        return bool(self._entries)

    def statistics(self) -> RingStatistics:
        pending = sum(1 for op in self._entries if op.state == PENDING)
        return RingStatistics(
            inflight=len(self._entries),
            pending=pending,
            submitted=self._submitted,
            completed=self._completed,
            cancelled=self._cancelled,
            leaked=self._leaked,
            batches=0,
            sq_entries=0,
            cq_entries=0,
            setup_flags=0,
        )

    def supports(self, opcode: int) -> bool:
        """Whether this ring implements the io_uring opcode (as a syscall)."""
        return opcode in _SUPPORTED

    def recv_group(self) -> int | None:
        """No provided buffers here: every receive is one recv(2)."""
        return None

    def _probe_features(self) -> dict[str, bool]:
        """``Ring.features()``: the calls this ring emulates are True; every
        io_uring mechanism (``"io_uring"``, ``"fixed_buffers"``, the setup
        modes, multishot, send_zc) is False."""
        features = {name: self.supports(opcode) for name, opcode in _FEATURE_OPCODES.items()}
        features.update(
            io_uring=False,
            fixed_buffers=False,
            nodrop=False,
            coop_taskrun=False,
            defer_taskrun=False,
            multishot_recv=False,
            multishot_accept=False,
            send_zc=False,
        )
        return features

    def _register_pool(self, pool: BufferPool) -> str | None:
        self._check_usable()
        return "the thread fallback has no io_uring: the pool's buffers are plain buffers"

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"threads={self._threads}"
        return f"<ouring.ThreadRing {state}>"

    async def _resolve(self, family: int, address: Any) -> Any:
        # No executor here: trio's resolver, as the io_uring driver's resolve.
        host, port, *rest = address
        infos = await trio.socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
        return (infos[0][4][0], port, *rest)

    # The io_uring driver interface has no meaning here.

    def submit(self, op: Operation[Any], waiter: object = None) -> NoReturn:
        op.release()
        raise _no_queue("submit")

    def flush(self, reap: bool = False) -> NoReturn:
        raise _no_queue("flush")

    def reap(self) -> int:
        return 0

    def wait(self, timeout: float | None = None) -> NoReturn:
        raise _no_queue("wait")

    def cancel(self, op: Operation[Any], by: int = CALLER) -> bool:
        """Ask for ``op`` to end without happening (what ``SocketStream``
        does before closing its socket). One waiting for readiness or for a
        thread ends at its task's next step; one whose syscall runs in a
        worker thread completes and returns its result, as an io_uring cancel
        that finds its request running in io-wq. Never withdrawn at once:
        always False."""
        entry = self._entries.get(op)
        if entry is not None and not entry.thread and not entry.scope.cancel_called:
            op.cancel_by = by
            entry.scope.cancel()
        return False

    def abandon(self, op: Operation[Any]) -> NoReturn:
        raise _no_queue("abandon")


def _no_queue(name: str) -> NotImplementedError:
    return NotImplementedError(
        f"ThreadRing.{name}: a ThreadRing has no submission queue; it runs operations "
        "itself when they are awaited (ring.read(...), ouring.read(...))"
    )


def _splice_nowait(op: Operation[Any]) -> int:
    """One splice(2) that never waits for a pipe or a socket: SPLICE_F_NONBLOCK
    covers the pipe; a socket end gets O_NONBLOCK for the call (splice sends
    and receives with MSG_DONTWAIT only then)."""
    fd_in, fd_out = op.file_index, op.fd
    off_in = None if op.addr == _OFFSET_CURRENT else op.addr
    off_out = None if op.offset == _OFFSET_CURRENT else op.offset
    with _NonBlocking(fd_in), _NonBlocking(fd_out):
        while True:
            try:
                return os.splice(
                    fd_in, fd_out, op.length, off_in, off_out, op.op_flags | os.SPLICE_F_NONBLOCK
                )
            except InterruptedError:
                continue
            except OSError as exc:
                return -(exc.errno or errno.EIO)


def _recv_nowait(flags: int, op: Operation[Any]) -> int:
    return _sys(_recv, op.fd, op.addr, op.length, flags | socket.MSG_DONTWAIT)


def _send_nowait(flags: int, op: Operation[Any]) -> int:
    # io_uring sends with MSG_NOSIGNAL: a closed peer is EPIPE, never SIGPIPE.
    flags |= socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL
    return _sys(_send, op.fd, op.addr, op.length, flags)


def _recvmsg_nowait(flags: int, op: Operation[Any]) -> int:
    # op.addr is the operation's msghdr, as in its SQE; the kernel writes the
    # name and control lengths and msg_flags back into it, as io_uring does.
    return _sys(_recvmsg, op.fd, op.addr, flags | socket.MSG_DONTWAIT)


def _sendmsg_nowait(flags: int, op: Operation[Any]) -> int:
    flags |= socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL
    return _sys(_sendmsg, op.fd, op.addr, flags)


_INLINE_OR_READY: tuple[type[Operation[Any]], ...] = (
    Nop,
    Recv,
    RecvBytes,
    RecvMsg,
    Send,
    SendCount,
    SendMsg,
    Accept,
    Connect,
    Shutdown,
    Splice,
)
_SUPPORTED = frozenset(cls.opcode for cls in (*_INLINE_OR_READY, *_THREADED))


class ThreadDriver:
    """Drives a ThreadRing in the current trio run: binds it to the run and
    closes it when the run ends (a system task, as the io_uring reaper does).
    There is no instrument and no reaper: operations run when awaited."""

    def __init__(self, ring: ThreadRing) -> None:
        self.ring = ring
        self._closed = False
        self._scope = trio.CancelScope()
        ring._attach()
        trio.lowlevel.spawn_system_task(self._close_at_end, name="ouring thread-ring closer")

    async def _close_at_end(self) -> None:
        try:
            with self._scope:
                await trio.sleep_forever()
        finally:
            self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._scope.cancel()
        self.ring.close()
