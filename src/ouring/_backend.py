"""What every ring is, whichever backend performs its operations: the io_uring
``Ring`` (``_ring.py``) and the ``ThreadRing`` of the fallback
(``_fallback.py``) are siblings under :class:`Backend`. Loop-neutral: neither
trio nor asyncio is imported here.

The layers above a ring (the module-level operations, files, paths, streams,
sockets, sendfile, pools) use only what :class:`Backend` declares. The
io_uring queue (``submit``, ``flush``, ``reap``, ``wait``, ``abandon``,
``has_queued``, ``wait_fd``) belongs to ``Ring`` alone, for its executors and
for those who drive a ring by hand; a layer that calls it checks first that
it has an io_uring ring (``ring.has("io_uring")``, or a feature only io_uring
has, such as ``recv_group()`` or ``"multishot_accept"``).

This module also keeps the registry of the process's live rings, through
which closing an fd reaches every ring (see below).
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Coroutine, Sequence
from threading import get_ident
from typing import TYPE_CHECKING, Any, Self, TypeVar

from ._ops import Operation, fileno

if TYPE_CHECKING:
    from ._pool import BufferPool
    from ._ring import RingStatistics

__all__ = ["Backend", "FdRequest"]

T = TypeVar("T")


# -- closing an fd across rings ------------------------------------------------------
#
# close(2) does not stop the io_uring operations on an fd (each holds its own
# reference to the file), and an operation still queued in Python names the fd
# by number until the kernel consumes its SQE, when the number may already name
# another file. So closing an fd through ouring first asks every live ring of
# the process to withdraw or cancel its operations on that fd, whichever ring
# runs the close. A ring is only ever touched by its own thread (its core
# checks the thread; the operation table and the SQ have no lock): the rings
# of the closing thread are asked directly (Ring.cancel_fd); a ring of another
# thread gets an FdRequest in its queue, answered by its own thread when its
# event loop runs the wakeup the executor installed (trio: TrioToken.
# run_sync_soon, thread-safe, wakes the I/O wait) or, for a ring driven by
# hand, at its next flush() or wait(). Ring.close_fd waits for the answers of
# the rings that have a wakeup before it submits the close.

_registry_lock = threading.Lock()  # guards _live_rings and every ring's request queue
_live_rings: dict[int, weakref.ref[Backend]] = {}


def _registry_after_fork_in_child() -> None:
    # Another thread of the parent may have held the lock at the fork: the
    # child's copy would stay locked forever. None of the parent's rings is
    # usable in the child (see above), so the child starts with no ring.
    global _registry_lock
    _registry_lock = threading.Lock()
    _live_rings.clear()


os.register_at_fork(after_in_child=_registry_after_fork_in_child)


class FdRequest:
    """A request, posted by a close in another thread, to withdraw or cancel a
    ring's operations on ``fd``. Answered once, by the ring's own thread."""

    __slots__ = ("_callbacks", "answered", "fd")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.answered = False
        self._callbacks: list[Callable[[], object]] = []

    def when_answered(self, callback: Callable[[], object]) -> None:
        """Call ``callback`` (in the answering thread, or now) once answered."""
        with _registry_lock:
            if not self.answered:
                self._callbacks.append(callback)
                return
        callback()

    def answer(self) -> None:
        with _registry_lock:
            if self.answered:
                return
            self.answered = True
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()


def _live_rings_but(ring: Backend) -> list[Backend]:
    with _registry_lock:
        refs = list(_live_rings.values())
    found = (ref() for ref in refs)
    return [
        other
        for other in found
        if other is not None
        and other is not ring
        and other._registered
        and not other._closed
        and not other._forked
    ]


class Backend:
    """One ring, as the layers above it see it. Implemented by ``Ring``
    (io_uring) and ``ThreadRing`` (syscalls on worker threads and readiness
    waits); what is the same for both is here, once.

    Each backend provides (declared below for the type checker):

    - ``perform(op)``/``perform_many(ops)``: the awaitable of an operation's
      outcome (a batch's, in order), under the executor that drives the ring;
    - ``cancel(op, by)``: ask for ``op`` to end without happening (True:
      withdrawn at once, it did not happen; False: its end decides);
    - ``_cancel_fd_here(fd)``: end this ring's operations on ``fd`` (being
      closed): those that did not happen raise ``FdClosedError``
      (trio: ``ClosedResourceError``);
    - ``call_when_idle(callback)``, ``close()``, ``busy``, ``statistics()``,
      ``supports(opcode)``, ``recv_group()`` (None: one-shot receives),
      ``_register_pool``/``_unregister_pool`` (a ``BufferPool``'s buffers);
    - the facts the registry reads: ``_closed``, ``_thread`` (the owner
      thread), ``_forked`` (this process is not the ring's), ``_features``;
    - ``executor``: the io_uring executor that drives the queue (a
      ``ThreadRing`` has none: its operations run when awaited);
    - ``_fixed_pool``: the registered pool (None on a ``ThreadRing``).
    """

    _fixed_pool: BufferPool | None = None
    _features: dict[str, bool]
    _registered: bool
    _wakeup: Callable[[], bool] | None
    _fd_requests: list[FdRequest]

    if TYPE_CHECKING:
        executor: Any
        _closed: bool

        @property
        def _thread(self) -> int: ...

        @property
        def _forked(self) -> bool: ...

        def perform(self, op: Operation[T]) -> Coroutine[Any, Any, T]: ...

        def perform_many(self, ops: Sequence[Operation[T]]) -> Coroutine[Any, Any, list[T]]: ...

        def _cancel_fd_here(self, fd: int) -> int: ...

        def cancel(self, op: Any, by: int = 1, /) -> bool: ...

        def call_when_idle(self, callback: Callable[[], object]) -> None: ...

        def close(self) -> None: ...

        @property
        def busy(self) -> bool: ...

        def statistics(self) -> RingStatistics: ...

        def supports(self, opcode: int) -> bool: ...

        def recv_group(self) -> int | None: ...

        def _register_pool(self, pool: BufferPool) -> str | None: ...

        def _unregister_pool(self, pool: BufferPool) -> None: ...

    def features(self) -> dict[str, bool]:
        """What this ring can do, probed when it was set up: ``"io_uring"``
        (False on the thread fallback), ``"fixed_buffers"`` (READ_FIXED and
        WRITE_FIXED: a :class:`BufferPool` can register; ``RLIMIT_MEMLOCK`` is
        only known when one tries, see ``BufferPool.reason``), the setup
        modes (``"coop_taskrun"``, ``"defer_taskrun"``, ``"nodrop"``) and the
        calls whose opcode only newer kernels have (``"stat"``,
        ``"ftruncate"``, ``"mkdir"``...: False means the call raises
        ``UnsupportedError``), ``"multishot_recv"`` (TCP sockets receive
        through one multishot recv into provided buffers, see
        :meth:`recv_group`), ``"multishot_accept"`` (listeners keep one
        accept armed), ``"send_zc"`` (:func:`ouring.send_zc` sends without
        copying)."""
        return dict(self._features)

    def has(self, feature: str) -> bool:
        """``features()[feature]`` without copying the table: for the paths
        that ask at every call (accept, send_zc)."""
        return self._features[feature]

    # -- the registry of live rings (closing an fd across rings) ----------------------

    def _register(self) -> None:
        #: Called by any thread to have this ring's thread answer its requests
        #: soon; False if it cannot (its event loop has ended). Set by the
        #: executor that drives the ring; None when it is driven by hand.
        self._wakeup: Callable[[], bool] | None = None
        self._fd_requests: list[FdRequest] = []
        with _registry_lock:
            # Entries of rings collected without close() (see _forget).
            for key in [key for key, ref in _live_rings.items() if ref() is None]:
                del _live_rings[key]
            self._registered = True
            _live_rings[id(self)] = weakref.ref(self)

    def _forget(self) -> None:
        """Leave the registry from ``__del__``: no lock (the garbage collector
        may run inside a section that holds it, in this very thread). Nothing
        else references a ring being finalized, so no close can be posting to
        it; a close waiting for its answer holds it alive. Its entry, a dead
        weak reference, is dropped by the next ``_register``."""
        self._registered = False

    def _unregister(self) -> None:
        """Leave the registry; answer what was asked (a closing ring ends all
        its operations anyway). Idempotent."""
        with _registry_lock:
            if not getattr(self, "_registered", False):
                return
            self._registered = False
            ref = _live_rings.get(id(self))
            if ref is not None and ref() in (self, None):
                del _live_rings[id(self)]
            requests, self._fd_requests = self._fd_requests, []
        for request in requests:
            request.answer()

    def _post_fd_request(self, fd: int) -> FdRequest | None:
        """From another thread: ask this ring to end its operations on ``fd``.
        The request, if this ring's event loop will answer it soon; None if it
        is closed, or driven by hand (it answers at its next flush or wait),
        or its event loop has ended."""
        request = FdRequest(fd)
        with _registry_lock:
            if not self._registered:
                return None  # closed meanwhile: nothing of it is left on the fd
            self._fd_requests.append(request)
            wakeup = self._wakeup
        return request if wakeup is not None and wakeup() else None

    def _answer_fd_requests(self) -> None:
        """In this ring's thread: end the operations other threads asked about.
        Never raises: it runs as an event-loop callback."""
        if not self._fd_requests:
            return
        with _registry_lock:
            requests, self._fd_requests = self._fd_requests, []
        for request in requests:
            try:
                if not self._closed:
                    self._cancel_fd_here(request.fd)
            except Exception:  # noqa: BLE001 - a failing ring is closed by its driver
                pass
            finally:
                self._fd_request_done(request)

    def _fd_request_done(self, request: FdRequest) -> None:
        """The ring's operations on ``request.fd`` are ended: answer the
        closing thread. (The thread ring answers later if a syscall of its
        still runs on the fd.)"""
        request.answer()

    def cancel_fd(self, fd: Any) -> int:
        """Ask for every operation on ``fd`` to be cancelled because the fd is
        being closed, on this ring and on every other live ring of this thread
        (rings of other threads: see :meth:`close_fd`). The ones that do not
        happen end with ``FdClosedError`` (trio: ``ClosedResourceError``);
        queued ones are withdrawn at once, those in the kernel get a cancel
        request. Closing an fd does not stop the kernel's operations on it (each
        holds its own reference to the file), so a new file reusing the fd
        number could otherwise see an old operation's data. Returns how many
        operations were asked. O(operations in flight)."""
        fd = fileno(fd)
        count = self._cancel_fd_here(fd)
        here = get_ident()
        for ring in _live_rings_but(self):
            if ring._thread == here:
                count += ring._cancel_fd_here(fd)
        return count

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def buffer_pool(self, count: int, size: int) -> BufferPool:
        """A :class:`BufferPool` of ``count`` buffers of ``size`` bytes,
        registered with this ring (see ``BufferPool.registered``)."""
        from ._pool import BufferPool

        return BufferPool(count, size, ring=self)
