"""Multishot accept for listeners: one armed accept per listening socket and
a queue of the connections it accepted while nobody was waiting.

``UringSocket.accept`` (under ``trio.SocketListener``) and ouring's own
``SocketListener`` take connections from an :class:`Acceptor` when the ring
has ``features()["multishot_accept"]``; otherwise they submit one accept per
call, as before.

Facts this module relies on:

- A multishot accept (``IORING_ACCEPT_MULTISHOT``, Linux 5.19) posts one CQE
  with ``IORING_CQE_F_MORE`` per accepted connection and stays armed. It ends
  with a final CQE (no ``F_MORE``) on an error (``EMFILE``...: the accept
  fails once and the connection stays in the kernel's backlog), on a cancel,
  or when the CQ is full (then that final CQE carries one more fd). Each fd
  is installed in the process when its CQE is posted: from then on it is
  ouring's to hand out or close, never to lose.
- When woken, the kernel accepts everything in the listen backlog at once,
  one CQE each: a bound on the queue cannot stop a burst that is already
  accepted. At the bound the multishot is cancelled, so nothing more is
  accepted until the queue drains; the connections of the burst that crossed
  it are queued all the same (at most the listen backlog), never dropped.
- The kernel gives no peer address with a multishot accept: ``accept``'s
  address is ``getpeername()`` of the new socket. A connection reset before
  that has none (``ENOTCONN``): it is closed and reported as
  ``ECONNABORTED``, which is what ``accept(2)`` says of a connection that
  died before it was accepted (``trio.SocketListener`` skips it).
- The CQEs are settled inside the ring's reap, which runs in trio's
  ``after_io_wait``/``before_io_wait`` hooks or in the reaper task: the sink
  methods never raise there (an instrument that raises is removed), and a
  parked ``accept`` is woken with ``reschedule``, allowed in those hooks.
- trio's rules: every ``accept`` is a checkpoint; ``Cancelled`` means nothing
  was taken (a connection that arrives after the cancel stays queued); a
  second task accepting while one waits gets ``BusyResourceError``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket as _stdlib_socket
from collections import deque
from typing import Any

import trio

from ._current import ring_of_task as current_ring  # no Python frame: asked per operation
from ._errors import os_error
from ._ops import CLOSED, PENDING, SUBMITTED, AcceptMulti
from ._ring import Ring

__all__ = ["ACCEPT_QUEUE_BOUND", "Acceptor"]

#: Connections a listener queues before its multishot accept is cancelled
#: (backpressure: the rest wait in the kernel's listen backlog). The accept
#: that takes the queue down to half of it arms the multishot again.
ACCEPT_QUEUE_BOUND = 64

_BUSY = "another task is already reading / writing this fd"  # trio's words (accept)
_CLOSED = "another task closed this fd"  # trio's notify_closing words

_checkpoint_if_cancelled = trio.lowlevel.checkpoint_if_cancelled
_cancel_shielded_checkpoint = trio.lowlevel.cancel_shielded_checkpoint


def _close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


class Acceptor:
    """The multishot accept of one listening socket (``sock``: its
    ``fileno()`` is read at every arm, -1 once closed) and the queue of what
    it delivered: fds (>= 0) and errors (negative errno), in order."""

    __slots__ = ("_closed", "_op", "_queue", "_ring", "_sock", "_token", "_waiter", "bound")

    def __init__(self, sock: Any, bound: int | None = None) -> None:
        self._sock = sock
        self._queue: deque[int] = deque()
        self._op: AcceptMulti | None = None  # armed: submitted, no final CQE yet
        self._ring: Ring | None = None
        self._waiter: Any = None  # the task parked in accept()
        self._token: trio.lowlevel.TrioToken | None = None
        self._closed = False
        self.bound = ACCEPT_QUEUE_BOUND if bound is None else bound

    @property
    def queued(self) -> int:
        """Connections (and errors) accepted and not yet taken."""
        return len(self._queue)

    @property
    def op(self) -> AcceptMulti | None:
        """The armed multishot accept (None: not armed), and its ring."""
        return self._op

    @property
    def ring(self) -> Ring | None:
        return self._ring

    @property
    def armed(self) -> bool:
        """A multishot accept is in the ring (it may be being cancelled)."""
        return self._op is not None

    # -- the sink: called by the ring while it settles CQEs; never raises ----------------

    def accepted(self, fd: int) -> None:
        if self._closed:
            _close_quietly(fd)  # accepted before the close's cancel reached the kernel
            return
        self._queue.append(fd)
        op = self._op
        if len(self._queue) >= self.bound and op is not None and op.state == SUBMITTED:
            # Backpressure: stop accepting; the rest wait in the listen backlog.
            ring = self._ring
            if ring is not None and not ring.closed:
                ring.cancel(op)
        self._wake()

    def ended(self, op: AcceptMulti) -> None:
        if op is self._op:
            self._op = self._ring = None
        res = op.res
        if res >= 0:
            self.accepted(res)  # a final CQE with an fd: the CQ was full
            return
        # A cancel (ours: backpressure, close, the ring closing) ends it
        # silently; anything else (EMFILE, EINVAL: not listening...) is the
        # next accept's error, in its place in the queue. The accept after
        # that arms a new multishot.
        if not (self._closed or op.cancelled() or res == -errno.ECANCELED):
            self._queue.append(res)
        self._wake()

    def _wake(self) -> None:
        task, self._waiter = self._waiter, None
        if task is not None:
            trio.lowlevel.reschedule(task)

    # -- the listener side -----------------------------------------------------------

    async def accept(self) -> _stdlib_socket.socket:
        """The next connection, as a blocking-mode ``socket.socket`` of the
        listener's family, type and protocol (close-on-exec); an error the
        kernel reported for the multishot is raised here, once."""
        await _checkpoint_if_cancelled()
        if self._queue:
            fd = self._queue.popleft()
            try:
                # The schedule point (a checkpoint per call, as trio's accept).
                await _cancel_shielded_checkpoint()
            except BaseException:
                self._queue.appendleft(fd)  # closed or thrown into: nothing was taken
                raise
            return self._hand_out(fd)
        while True:
            if self._closed:
                raise trio.ClosedResourceError(_CLOSED)
            if self._queue:
                # Woken with something queued: parking was the checkpoint.
                return self._hand_out(self._queue.popleft())
            if self._waiter is not None:
                raise trio.BusyResourceError(_BUSY)
            ring = self._ring
            if ring is not None and ring.closed:
                # Its ring closed before the final CQE (leaked): start afresh.
                self._op = self._ring = None
            if self._op is None:
                self._arm()
            task = self._waiter = trio.lowlevel.current_task()
            self._token = trio.lowlevel.current_trio_token()

            def abort(_: Any, task: Any = task) -> trio.lowlevel.Abort:
                # Nothing is taken while parked: what arrives stays queued.
                if self._waiter is task:
                    self._waiter = None
                return trio.lowlevel.Abort.SUCCEEDED

            try:
                await trio.lowlevel.wait_task_rescheduled(abort)
            except BaseException:
                # Cancelled (abort ran), or this coroutine was closed or
                # thrown into while parked: nothing was taken, and nobody may
                # reschedule the task for this wait any more.
                if self._waiter is task:
                    self._waiter = None
                raise

    def _arm(self) -> None:
        ring = current_ring()
        op = AcceptMulti(self._sock, self)
        ring.submit(op)
        self._op, self._ring = op, ring

    def _hand_out(self, item: int) -> _stdlib_socket.socket:
        if item < 0:
            raise os_error(item)
        if len(self._queue) <= self.bound // 2 and self._op is None and not self._closed:
            # Drained (or the kernel ended it): accept in the background again.
            # Never raises past here: a closed ring is seen by the next accept.
            with contextlib.suppress(Exception):
                self._arm()
        sock = self._sock
        try:
            return _stdlib_socket.socket(sock.family, sock.type, sock.proto, item)
        except BaseException:
            _close_quietly(item)
            raise

    def close(self) -> None:
        """The listener is closing: cancel the multishot (connections it
        accepts before the cancel lands are closed), close every queued
        connection, and wake a parked ``accept`` with ``ClosedResourceError``.
        From another thread the work is handed to the run's thread."""
        if self._closed:
            return
        token = self._token
        if token is not None and not _in_run(token):
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(self._close_here)
                return
        self._close_here()

    def _close_here(self) -> None:
        self._closed = True
        op, ring = self._op, self._ring
        if (
            op is not None
            and ring is not None
            and op.state in (PENDING, SUBMITTED)
            and not ring.closed
        ):
            ring.cancel(op, CLOSED)
        while self._queue:
            item = self._queue.popleft()
            if item >= 0:
                _close_quietly(item)
        self._wake()

    def __del__(self) -> None:
        # Dropped with connections queued (its listener was never closed):
        # the fds are ours, nobody else will close them.
        for item in self._queue:
            if item >= 0:
                _close_quietly(item)


def _in_run(token: trio.lowlevel.TrioToken) -> bool:
    try:
        return trio.lowlevel.current_trio_token() is token
    except RuntimeError:
        return False


def peer_address(conn: _stdlib_socket.socket) -> Any:
    """``accept``'s address for a connection from a multishot accept, which
    carries none: the peer's, from the kernel. A connection reset since has
    none: closed, and ``ECONNABORTED`` raised (see the module docstring)."""
    try:
        return conn.getpeername()
    except OSError:
        conn.close()
        raise OSError(errno.ECONNABORTED, os.strerror(errno.ECONNABORTED)) from None
