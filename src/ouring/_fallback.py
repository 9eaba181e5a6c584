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
  event-loop thread, and the executor's readiness wait (trio's
  ``wait_readable``/``wait_writable``, asyncio's ``add_reader``/``add_writer``)
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
  checkpoint; asyncio raises ``CancelledError`` at the task's next await).
  Abandoning would report ``Cancelled`` for a write that
  happened, a file position that moved or a file that was created. File
  syscalls are short; a blocking ``open`` of a FIFO is the exception (a
  cancel waits for the peer), as an uninterruptible io-wq request would.
  A cancel while waiting for a thread (the per-ring semaphore of
  ``threads``) withdraws the operation: ``Cancelled``, nothing happened.
- ``nop``, ``shutdown``: at once, followed by a schedule point.

Ownership is the io_uring path's: the operation (and its leases: a bytearray
lent to a pending recv cannot be resized) is held by the ring until the
syscall has finished, whatever happens to the caller; a closed coroutine whose
thread is still running leaves the operation to the ring, which releases it and
undoes a result nobody receives (closes an accepted or opened fd) when the
thread ends. ``cancel_fd`` (and so ``close``, on any ring of the process:
see ``_backend.py``) ends operations waiting on the fd with
``trio.ClosedResourceError`` (asyncio: ``FdClosedError``); ``close()`` of the ring ends waiting
ones with ``RingClosedError``, waits ``teardown_timeout`` for running threads
and keeps forever (leaks, counted) what has not finished by then.

This module imports neither trio nor asyncio. The syscalls, and where each
runs, are ``_blocking.SYSCALLS``; the loop primitives (a FIFO lock, a region
that a cancel of the ring can end) are ``_sync``'s; what only the running
event loop can do is asked of the :class:`ThreadExecutor` the adapter attaches
(``_trio.ThreadDriver``, ``_asyncio.ThreadDriver``): run a callable in a
worker thread, wait until an fd is readable or writable.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat as stat_module
import threading
import time
import warnings
from collections.abc import Callable, Coroutine, Sequence
from functools import partial
from threading import get_ident
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar

from . import _sync
from ._backend import FdRequest
from ._blocking import EAGAIN, FILE, INLINE, READY, SPLICE, SYSCALLS, Syscall
from ._errors import RingClosedError, UnsupportedError
from ._ops import (
    CALLER,
    CLOSED,
    DONE,
    LEAKED,
    PENDING,
    RING,
    SUBMITTED,
    Close,
    Operation,
    Splice,
    uses_fd,
)
from ._ring import _FEATURE_OPCODES, Operations, Ring, RingStatistics, queue_sizes

if TYPE_CHECKING:
    from ._pool import BufferPool

__all__ = [
    "FALLBACK_ENV",
    "FALLBACK_MODES",
    "ThreadExecutor",
    "ThreadRing",
    "fallback_mode",
    "make_ring",
]

T = TypeVar("T")

FALLBACK_ENV: Final = "OURING_FALLBACK"
#: ``off``: io_uring or ``UnsupportedError``; ``threads``: io_uring, else a
#: ``ThreadRing``; ``always-threads``: a ``ThreadRing`` without trying io_uring.
FALLBACK_MODES: Final = ("off", "threads", "always-threads")

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
) -> Ring | ThreadRing:
    """An io_uring ``Ring``, or a ``ThreadRing`` when io_uring is unavailable and
    the fallback is on. ``fallback`` (default: ``$OURING_FALLBACK``, else
    ``"off"``) is one of :data:`FALLBACK_MODES`."""
    mode = fallback_mode(fallback)
    if mode == "always-threads":
        queue_sizes(entries, cq_entries)  # bad input raises here as for io_uring
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


class ThreadExecutor(Protocol):
    """What an event-loop adapter provides to drive a :class:`ThreadRing`
    (``_trio.ThreadDriver``, ``_asyncio.ThreadDriver``). It calls
    ``ring._attach(self)`` in the loop's thread, and ``ring.close()`` when
    its run or loop ends."""

    @property
    def closed_error(self) -> type[BaseException]:
        """The exception ``wait_fd`` raises when another task is closing the
        fd, and a ``_sync.open_scope`` region when its ``cancel`` ends it."""
        ...

    @property
    def Event(self) -> Callable[[], Any]:
        """The loop's event: ``set()``, ``await wait()``."""
        ...

    @property
    def Semaphore(self) -> Callable[[int], Any]:
        """The loop's semaphore: ``await acquire()`` (cancellable), ``release()``."""
        ...

    def owns_current_task(self) -> bool:
        """Whether the calling task runs in the loop that drives the ring."""
        ...

    def call_soon(self, fn: Callable[..., object], *args: Any) -> bool:
        """From any thread: run ``fn(*args)`` soon in the loop's thread.
        False if the loop has ended."""
        ...

    async def checkpoint_if_cancelled(self) -> None:
        """Raise a pending cancellation; do not yield otherwise."""

    async def schedule_point(self) -> None:
        """Yield once; a cancellation meanwhile is not raised here but at
        the task's next checkpoint (the operation before it happened)."""

    async def in_thread(self, op: Operation[Any], job: Callable[[], None]) -> None:
        """Run ``job()`` in a worker thread at once and park the task, with
        its token in ``op.waiter``, until the ring calls ``wake`` with it. A
        cancellation does not end the park (the thread's syscall is not
        abandoned): it is delivered at the task's next checkpoint. A
        coroutine closed or thrown into raises here."""

    def wake(self, waiter: Any) -> None:
        """Resume the task parked in ``in_thread`` with this token."""

    async def wait_fd(self, fd: int, out: bool) -> None:
        """Park until ``fd`` is readable (``out``: writable); cancellable.
        Raises ``closed_error`` if another task closes the fd meanwhile."""

    def notify_closing(self, fd: int) -> None:
        """``fd`` is about to be closed: end the loop's other waits on it."""

    def outcome(self, op: Operation[T]) -> T:
        """``op.outcome()`` with the loop's exceptions (trio:
        ``FdClosedError`` becomes ``ClosedResourceError``)."""
        ...

    async def resolve(self, family: int, address: Any) -> Any:
        """A numeric form of ``address``, resolved without blocking the loop."""

    async def wait_answered(self, requests: Sequence[FdRequest]) -> None:
        """Park until every request is answered (by other threads' rings)."""


class _Entry:
    """What the ring keeps for one operation not yet DONE."""

    __slots__ = ("cancelled", "scope", "thread")

    def __init__(self) -> None:
        # Cancelled by cancel_fd (cancel_by=CLOSED) and close (cancel_by=RING):
        # it covers only waits, never a syscall in progress.
        self.scope = _sync.open_scope()
        self.cancelled = False
        self.thread = False  # a worker thread runs the syscall: it cannot be stopped


class _FdLock:
    """One task at a time waits for readiness on an fd in one direction (trio
    allows one waiter; asyncio one reader and one writer callback per fd)."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = _sync.fifo_lock()
        self.users = 0


class ThreadRing(Operations):
    """The ring API without io_uring: operations run as the equivalent
    syscalls, on worker threads (files, paths) or after readiness (sockets,
    pipes). See the module docstring for the cancellation semantics.

    A sibling of the io_uring ``Ring`` (both are ``Operations``): the same
    operation methods, ``perform``, ``cancel``, ``cancel_fd``, ``close``,
    ``statistics``, ``features``; none of the io_uring queue (``submit``,
    ``flush``, ``reap``, ``wait``, ``abandon``): ``perform`` runs the
    operation itself, under the :class:`ThreadExecutor` that the adapter of the
    running trio run or asyncio loop attaches (``open_ring``/``current_ring``
    do). It has no ring fd: ``fd`` and ``wait_fd`` are -1, the queue sizes,
    setup flags and ``batches`` are 0. ``reason`` is the ``UnsupportedError``
    that made :func:`make_ring` fall back (None when forced).
    """

    #: No io_uring executor: the operations run when awaited (layers that
    #: look at ``ring.executor`` go through ``perform``).
    executor: None = None

    def __init__(
        self,
        *,
        teardown_timeout: float = 5.0,
        threads: int = _DEFAULT_THREADS,
        reason: UnsupportedError | None = None,
    ) -> None:
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
        self._threads = threads
        self._closed = False
        # The owner thread and process: no C core here, so they are kept here.
        self._owner = get_ident()
        self._pid = os.getpid()
        self._via: ThreadExecutor | None = None
        self._features = self._probe_features()
        self._limiter: Any = None  # the executor's semaphore of `threads`
        self._entries: dict[Operation[Any], _Entry] = {}
        self._locks: dict[tuple[int, bool], _FdLock] = {}
        self._quiet: dict[int, Any] = {}  # closes waiting for an fd's operations
        self._idle_callbacks: list[Callable[[], object]] = []
        self._crashes: dict[Operation[Any], BaseException] = {}
        # Results posted by worker threads, read by the loop's thread (and by
        # close(), which may wait for them): the CQE result or the exception.
        self._cond = threading.Condition()
        self._thread_results: dict[Operation[Any], tuple[int, BaseException | None]] = {}
        self._submitted = 0
        self._completed = 0
        self._cancelled = 0
        self._leaked = 0
        # Other threads' requests held until no worker thread runs on the fd.
        self._answer_when_quiet: dict[int, list[FdRequest]] = {}
        self._register()

    @property
    def _thread(self) -> int:
        return self._owner

    @property
    def _forked(self) -> bool:
        # A fallback ring: getpid() per check is cheap next to its syscalls.
        return os.getpid() != self._pid

    def _attach(self, via: ThreadExecutor) -> None:
        """Bind to the event loop of ``via`` (by its driver, in the loop's
        thread, which drives the ring from now on)."""
        self._via = via
        self._owner = get_ident()
        self._limiter = via.Semaphore(self._threads)
        self._wakeup = partial(via.call_soon, self._answer_fd_requests)

    # -- performing operations ------------------------------------------------------

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
            via = self._check_usable()
            await via.checkpoint_if_cancelled()
        except BaseException:
            op.release()  # never started: the caller keeps everything
            raise
        how = SYSCALLS[type(op)]
        run = how.run
        if run == FILE:
            try:
                mode = os.fstat(op.fd).st_mode
            except OSError as exc:
                return await self._inline(op, -(exc.errno or errno.EBADF))
            if not (
                stat_module.S_ISREG(mode) or stat_module.S_ISBLK(mode) or stat_module.S_ISDIR(mode)
            ):
                assert how.nowait is not None
                return await self._serialized(op, how.out, how.nowait, False)
        elif run == READY:
            give_up = how.dontwait and bool(op.op_flags & socket.MSG_DONTWAIT)
            return await self._serialized(op, how.out, how.call, give_up)
        elif run == INLINE:
            return await self._inline(op, how.call(op))
        elif run == SPLICE:
            return await self._splice(op, how)
        elif type(op) is Close:
            try:
                await self._quiesce(op.fd)
            except BaseException:
                op.release()  # the close did not happen; the fd stays open
                raise
        return await self._in_thread(op, how.call)

    def _check_usable(self) -> ThreadExecutor:
        if self._closed:
            raise RingClosedError("the ring is closed")
        self._check_process()
        via = self._via
        if via is None:
            raise RuntimeError(
                "this ring is not driven by an event loop; use "
                "`async with ouring.open_ring()` inside trio.run or a running asyncio loop"
            )
        if get_ident() != self._owner or not via.owns_current_task():
            raise RingClosedError("this ring belongs to another thread; open one per thread")
        return via

    def _check_process(self) -> None:
        if self._forked:
            raise RingClosedError(
                "this ring belongs to the parent process; a forked child must open its own"
            )

    async def _quiesce(self, fd: int) -> None:
        """Before a close: end what waits on ``fd`` (ClosedResourceError) and
        wait for the syscalls running on it in worker threads. A thread that
        has not reached its syscall yet must not find the fd number closed, or
        reused by a file opened meanwhile; io_uring pins the file instead."""
        assert self._via is not None
        self.cancel_fd(fd)
        while any(uses_fd(other, fd) for other in self._entries):
            event = self._quiet.get(fd)
            if event is None:
                event = self._quiet[fd] = self._via.Event()
            await event.wait()

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
        assert self._via is not None
        self._start(op)
        self._began(op)
        self._settle(op, res)
        try:
            await self._via.schedule_point()
        except BaseException:
            op.discard()  # closed or thrown into: nobody receives it
            raise
        return self._outcome(op)

    def _fd_lock(self, key: tuple[int, bool]) -> _FdLock:
        held = self._locks.get(key)
        if held is None:
            held = self._locks[key] = _FdLock()
        held.users += 1
        return held

    def _fd_unlock(self, key: tuple[int, bool], held: _FdLock) -> None:
        held.users -= 1
        if not held.users and self._locks.get(key) is held:
            del self._locks[key]

    async def _serialized(
        self,
        op: Operation[T],
        out: bool,
        attempt: Callable[[Operation[Any]], int],
        give_up: bool,
    ) -> T:
        via = self._via
        assert via is not None
        entry = self._start(op)
        self._began(op)
        # First one attempt at once, as io_uring issues a request before it
        # arms a poll: what is ready (data, a zero-length read, room to send)
        # completes even while another task waits for readiness on the fd.
        res = attempt(op)
        if res != EAGAIN or give_up:
            self._settle(op, res)
            try:
                # It happened: the schedule point is shielded, and the result
                # is returned (the cancellation comes at the next checkpoint).
                await via.schedule_point()
            except BaseException:
                op.discard()  # closed or thrown into: nobody receives it
                raise
            return self._outcome(op)
        # Then wait: one task at a time waits for readiness on an fd in each
        # direction, the others queue in order behind it, as their SQEs
        # would in the kernel.
        key = (op.fd, out)
        held = self._fd_lock(key)

        async def wait_and_attempt() -> int:
            async with held.lock:  # a full checkpoint: the operation's schedule point
                # No checkpoint between a successful syscall and its result:
                # a cancel can land only in `wait_fd`, before it.
                while True:
                    # Readiness is level-triggered: what became ready while
                    # this task queued for the lock is seen at once. (A
                    # connect must not look at SO_ERROR before: it is 0
                    # while the handshake is still in progress.)
                    await via.wait_fd(op.fd, out)
                    # A task already woken when cancel_fd or close cancelled
                    # its region is not interrupted: it must not touch the fd
                    # number, which may be closed and reused by now.
                    if entry.cancelled:
                        return -errno.ECANCELED
                    res = attempt(op)
                    if res != EAGAIN:
                        return res

        try:
            res = await entry.scope.run(wait_and_attempt)
        except via.closed_error:
            # Ended by cancel_fd or close (cancel_by is set), or another task
            # is closing the fd (trio's notify_closing): it did not happen.
            op.cancel_by = op.cancel_by or CLOSED
            res = -errno.ECANCELED
        except BaseException:
            op.cancel_by = op.cancel_by or CALLER
            self._settle(op, -errno.ECANCELED)  # nothing was consumed
            raise
        finally:
            self._fd_unlock(key, held)
        self._settle(op, res)
        return self._outcome(op)

    async def _splice(self, op: Operation[T], how: Syscall) -> T:
        """splice(2) without io_uring: non-blocking attempts (SPLICE_F_NONBLOCK
        for the pipe, O_NONBLOCK around the call for a socket), waiting in
        between for the non-file ends to be ready: fd_in readable, fd_out
        writable. An attempt that touches a regular file runs in a worker
        thread (it may wait for the disk, never for a peer); a cancel that
        finds it running gets its result, as for any file syscall. A cancel
        while waiting means nothing moved: ``Cancelled``."""
        via = self._via
        assert via is not None
        entry = self._start(op)
        self._began(op)
        ends: list[tuple[int, bool]] = []  # (fd, out) of the ends that may not be ready
        on_file = False
        for fd, out in ((op.file_index, False), (op.fd, True)):
            try:
                mode = os.fstat(fd).st_mode
            except OSError as exc:
                self._settle(op, -(exc.errno or errno.EBADF))
                await via.schedule_point()
                return self._outcome(op)
            if stat_module.S_ISREG(mode) or stat_module.S_ISBLK(mode):
                on_file = True
            else:
                ends.append((fd, out))

        async def wait_for_ends() -> None:
            for fd, out in ends:
                held = self._fd_lock((fd, out))
                try:
                    async with held.lock:
                        await via.wait_fd(fd, out)
                finally:
                    self._fd_unlock((fd, out), held)

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
                    res = await _sync.shielded(_sync.to_thread, how.call, op)
                else:
                    res = how.call(op)
                if res != EAGAIN:
                    break
                # Nothing moved: wait for the ends that were not ready, one task
                # per fd and direction at a time, as _serialized.
                res = -errno.ECANCELED
                yielded = True
                await entry.scope.run(wait_for_ends)
                if entry.cancelled:
                    break  # cancel_fd or close: it did not happen
        except via.closed_error:
            op.cancel_by = op.cancel_by or CLOSED  # ended by cancel_fd or close, or closing
            res = -errno.ECANCELED
        except BaseException:
            op.cancel_by = op.cancel_by or CALLER
            self._settle(op, -errno.ECANCELED)  # nothing moved since the last attempt
            raise
        self._settle(op, res)
        if not yielded:
            # The schedule point; what happened is returned (the cancellation
            # comes at the next checkpoint).
            await via.schedule_point()
        return self._outcome(op)

    async def _in_thread(self, op: Operation[T], syscall: Callable[[Operation[Any]], int]) -> T:
        via = self._via
        assert via is not None
        entry = self._start(op)
        try:
            await entry.scope.run(self._limiter.acquire)
        except via.closed_error:
            self._settle(op, -errno.ECANCELED)  # cancel_fd or close while queued
            return self._outcome(op)
        except BaseException:
            op.cancel_by = op.cancel_by or CALLER
            self._settle(op, -errno.ECANCELED)  # it never reached a thread
            raise
        if entry.cancelled:
            # cancel_fd or close as the thread was granted: it did not start.
            self._limiter.release()
            self._settle(op, -errno.ECANCELED)
            return self._outcome(op)
        self._began(op)
        entry.thread = True
        try:
            # A cancel waits for the syscall, whose result is returned (it
            # happened); the cancellation comes at the next checkpoint.
            await via.in_thread(op, partial(self._syscall_in_thread, op, syscall))
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

    def _syscall_in_thread(
        self, op: Operation[Any], syscall: Callable[[Operation[Any]], int]
    ) -> None:
        """In the worker thread: the syscall, then its result to the ring."""
        try:
            result: tuple[int, BaseException | None] = (syscall(op), None)
        except BaseException as exc:  # noqa: BLE001 - a bug in a syscall wrapper
            result = (-errno.EIO, exc)
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
                op.res = result[0]
                op.release()
                op.discard()
                with contextlib.suppress(ValueError):
                    _leaked_forever.remove(op)
            return
        via = self._via
        assert via is not None
        # After the loop ended, close() took the result, or leaked the operation.
        via.call_soon(self._thread_done, op)

    def _thread_done(self, op: Operation[Any]) -> None:
        with self._cond:
            result = self._thread_results.pop(op, None)
        if result is not None:
            self._finish_thread(op, result)

    def _finish_thread(self, op: Operation[Any], result: tuple[int, BaseException | None]) -> None:
        self._limiter.release()
        if op.state == LEAKED:
            return  # kept forever; the thread is done with it now, but close() said so
        res, crash = result
        if crash is not None:
            self._crashes[op] = crash  # raised to the waiter
        waiter = op.waiter
        op.waiter = None
        self._settle(op, res)
        if waiter is not None and self._via is not None:
            self._via.wake(waiter)

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
        if self._via is None:
            return op.outcome()
        return self._via.outcome(op)

    # -- what every ring provides ------------------------------------------------------

    def cancel(self, op: Operation[Any], by: int = CALLER, /) -> bool:
        """Ask for ``op`` to end without happening (what ``SocketStream``
        does before closing its socket). One waiting for readiness or for a
        thread ends at its task's next step; one whose syscall runs in a
        worker thread completes and returns its result, as an io_uring cancel
        that finds its request running in io-wq. Never withdrawn at once:
        always False."""
        entry = self._entries.get(op)
        if entry is not None and not entry.thread and not entry.cancelled:
            op.cancel_by = by
            entry.cancelled = True
            entry.scope.cancel("the operation was cancelled")
        return False

    def _cancel_fd_here(self, fd: int) -> int:
        """End the operations waiting on ``fd`` because it is being closed:
        those that did not happen raise ``FdClosedError`` (trio:
        ``ClosedResourceError``). One whose syscall runs in a worker thread
        completes and returns its result (an io_uring cancel that finds a
        running request does the same)."""
        targets = [op for op in self._entries if uses_fd(op, fd)]
        for op in targets:
            self.cancel(op, CLOSED)
        if targets and self._via is not None:
            # trio's rule for an fd it may be waiting on; our own waiters are
            # already ended by their regions.
            self._via.notify_closing(fd)
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
        await self._check_usable().wait_answered(requests)

    async def _resolve(self, family: int, address: Any) -> Any:
        return await self._check_usable().resolve(family, address)

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
        if get_ident() != self._owner and not self._forked:
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
                op.state = LEAKED  # from here on, the thread releases it
        for op, result in done:
            self._finish_thread(op, result)
        if stranded:
            _leaked_forever.extend(stranded)
            self._leaked += len(stranded)
            for op in stranded:
                self._entries.pop(op, None)
                waiter, op.waiter = op.waiter, None
                op.abandoned = True
                if waiter is not None and self._via is not None:
                    self._crashes[op] = RingClosedError(
                        "the ring was closed while the operation still ran in a worker thread"
                    )
                    with contextlib.suppress(RuntimeError):  # not inside the run any more
                        self._via.wake(waiter)
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
        """``features()``: the calls this ring emulates are True; every
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
        if self._closed:
            raise RingClosedError("the ring is closed")
        self._check_process()
        return "the thread fallback has no io_uring: the pool's buffers are plain buffers"

    def _unregister_pool(self, pool: BufferPool) -> None:
        """Nothing was registered: nothing to undo."""

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"threads={self._threads}"
        return f"<ouring.ThreadRing {state}>"


_SUPPORTED = frozenset(cls.opcode for cls in SYSCALLS)
