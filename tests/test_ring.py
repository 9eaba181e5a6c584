"""The ring core, driven synchronously (no event loop) through its driver
interface: submit / flush / wait / cancel / close."""

from __future__ import annotations

import errno
import os
import socket
import threading
from pathlib import Path
from typing import Any

import pytest
from ouring._native import lib

import ouring
from ouring import _ring, _ringcore
from ouring._errors import setup_error
from ouring._ops import DONE, LEAKED, PENDING, SUBMITTED, Nop, OpenAt, Read, Recv, RecvBytes


def drain(ring: ouring.Ring, timeout: float = 5.0) -> None:
    """Drive the ring until nothing is in flight."""
    while ring.statistics().inflight:
        assert ring.wait(timeout), "no completion within the timeout"


def test_ring_reports_its_geometry_and_closes() -> None:
    with ouring.Ring(8) as ring:
        stats = ring.statistics()
        assert (stats.sq_entries, stats.inflight, stats.leaked) == (8, 0, 0)
        assert stats.cq_entries >= 16
        assert ring.supports(lib.IORING_OP_READ)
        assert not ring.supports(10_000)
        fd = ring.fd
        os.fstat(fd)
    assert ring.closed
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(fd)
    ring.close()  # idempotent


@pytest.mark.parametrize(
    ("kwargs", "exc"),
    [
        ({"entries": 0}, ValueError),
        ({"entries": -1}, ValueError),
        ({"entries": 40_000}, ValueError),
        ({"entries": "8"}, TypeError),
        ({"entries": True}, TypeError),
        ({"entries": 8, "cq_entries": 4}, ValueError),
        ({"entries": 8, "cq_entries": 1 << 20}, ValueError),
        ({"entries": 8, "cq_entries": 8.0}, TypeError),
        ({"entries": 8, "teardown_timeout": -1}, ValueError),
    ],
)
def test_bad_ring_arguments(kwargs: dict[str, object], exc: type[Exception]) -> None:
    with pytest.raises(exc):
        ouring.Ring(**kwargs)  # type: ignore[arg-type]


def test_user_data_is_never_reused() -> None:
    with ouring.Ring(4) as ring:
        seen = []
        for _ in range(3):
            ops = [Nop() for _ in range(10)]
            for op in ops:
                ring.submit(op)
            drain(ring)
            seen += [op.user_data for op in ops]
        assert seen == sorted(seen)
        assert len(set(seen)) == 30
        assert 0 not in seen  # reserved for cancel requests


def test_burst_of_100x_the_sq_on_an_8_entry_ring(tmp_path: Path) -> None:
    path = tmp_path / "data"
    path.write_bytes(bytes(range(256)) * 16)
    fd = os.open(path, os.O_RDONLY)
    try:
        with ouring.Ring(8) as ring:
            ops = [Read(fd, bytearray(16), (i * 16) % 4096) for i in range(800)]
            for op in ops:
                ring.submit(op)
            ring.flush()
            drain(ring)
            for i, op in enumerate(ops):
                buf, n = op.outcome()
                start = (i * 16) % 4096 % 256
                assert n == 16
                assert bytes(buf) == bytes(range(start, start + 16))
            stats = ring.statistics()
            assert (stats.submitted, stats.completed, stats.inflight) == (800, 800, 0)
    finally:
        os.close(fd)


def test_kernel_side_is_capped_at_half_the_cq_without_nodrop(
    socketpair: tuple[socket.socket, socket.socket],
) -> None:
    """Where an overflow would lose completions (no IORING_FEAT_NODROP), idle
    operations never fill the CQ beyond room for their cancels; the rest wait
    in Python and go in as completions free room. (White box: the cap a
    pre-5.5 kernel gets, set on this one.)"""
    a, b = socketpair
    with ouring.Ring(4, cq_entries=16) as ring:
        ring._max_inflight = ring.cq_entries // 2
        ops = [Recv(a, bytearray(1)) for _ in range(20)]
        for op in ops:
            ring.submit(op)
        ring.flush()
        stats = ring.statistics()
        assert (stats.inflight, stats.pending) == (20, 12)
        assert [op.state for op in ops] == [SUBMITTED] * 8 + [PENDING] * 12
        b.send(bytes(range(20)))
        while ring.statistics().inflight:
            ring.wait(5)
        received = sorted(op.outcome()[0][0] for op in ops)
        assert received == list(range(20))


def test_with_nodrop_idle_operations_are_not_capped(
    socketpair: tuple[socket.socket, socket.socket],
) -> None:
    """More idle receives than the CQ holds all reach the kernel (a server's
    idle connections), and their completions, overflowing the CQ at once,
    all come back."""
    a, b = socketpair
    with ouring.Ring(4, cq_entries=16) as ring:
        assert ring.features()["nodrop"]
        ops = [Recv(a, bytearray(1)) for _ in range(100)]
        for op in ops:
            ring.submit(op)
        ring.flush()
        assert [op.state for op in ops] == [SUBMITTED] * 100
        b.send(bytes(range(100)))
        while ring.statistics().inflight:
            assert ring.wait(5)
        assert sorted(op.outcome()[0][0] for op in ops) == list(range(100))


def test_cancel_withdraws_what_the_kernel_has_not_seen(
    socketpair: tuple[socket.socket, socket.socket],
) -> None:
    a, _ = socketpair
    buf = bytearray(b"untouched")
    with ouring.Ring(4) as ring:
        op = Recv(a, buf)
        ring.submit(op)
        assert ring.cancel(op) is True
        assert (op.state, op.res, op.cancelled()) == (DONE, -errno.ECANCELED, True)
        buf.extend(b"!")  # lease released: resizable again
        stats = ring.statistics()
        assert (stats.submitted, stats.cancelled, stats.inflight) == (0, 1, 0)


def test_cancel_of_a_submitted_op_waits_for_its_cqe(
    socketpair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = socketpair
    buf = bytearray(b"untouched")
    with ouring.Ring(4) as ring:
        op = Recv(a, buf)
        ring.submit(op)
        ring.flush()
        assert ring.cancel(op) is False
        with pytest.raises(BufferError):
            buf.extend(b"!")  # the kernel still owns it
        drain(ring)
        assert op.cancelled()
        assert buf == b"untouched"
        buf.extend(b"!")
        b.send(b"kept")
        assert a.recv(10) == b"kept"  # the cancelled recv took nothing


def test_cancel_now_ends_a_poll_armed_op_inside_one_enter(
    socketpair: tuple[socket.socket, socket.socket],
) -> None:
    """cancel_now: the cancel of a recv waiting on its socket (armed on a
    poll) completes in the io_uring_enter that submits it, so the caller
    knows at once that the kernel no longer runs it."""
    a, b = socketpair
    with ouring.Ring(4) as ring:
        waiting = Recv(a, bytearray(8))
        ring.submit(waiting)
        ring.flush()
        assert waiting.state == SUBMITTED
        assert ring.cancel_now(waiting) is True
        assert waiting.cancelled()
        queued = Recv(a, bytearray(8))
        ring.submit(queued)  # never seen by the kernel: withdrawn
        assert ring.cancel_now(queued) is True
        assert queued.cancelled()
        assert ring.cancel_now(queued) is True  # already DONE: nothing to do
        b.send(b"kept")
        assert a.recv(10) == b"kept"  # neither took anything


def test_submit_after_close_raises_and_releases_the_buffer() -> None:
    ring = ouring.Ring(4)
    ring.close()
    r, w = os.pipe()
    try:
        buf = bytearray(4)
        with pytest.raises(ouring.RingClosedError):
            ring.submit(Read(r, buf))
        buf.extend(b"x")
    finally:
        os.close(r)
        os.close(w)


def test_unsupported_opcode_is_refused_with_the_fix(
    pipe: tuple[int, int],
) -> None:
    with ouring.Ring(4) as ring:
        ring._supported = bytes(len(ring._supported))  # a kernel that probes nothing
        buf = bytearray(4)
        with pytest.raises(ouring.UnsupportedError, match="upgrade the kernel"):
            ring.submit(Read(pipe[0], buf))
        buf.extend(b"x")


@pytest.mark.parametrize("code", [errno.EPERM, errno.ENOSYS, errno.ENOMEM])
def test_setup_failures_name_cause_and_fix(code: int) -> None:
    exc = setup_error(-code)
    assert isinstance(exc, ouring.UnsupportedError)
    assert exc.errno == code
    assert "fix:" in str(exc)


def test_close_cancels_and_reaps_everything_in_flight(
    socketpair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = socketpair
    bufs = [bytearray(8) for _ in range(50)]
    ring = ouring.Ring(8)
    ops = [Recv(a, buf) for buf in bufs]
    for op in ops:
        ring.submit(op)
    ring.flush()
    ring.close()
    assert all(op.state == DONE and op.cancelled() for op in ops)
    stats = ring.statistics()
    assert (stats.inflight, stats.leaked, stats.cancelled) == (0, 0, 50)
    for buf in bufs:
        buf.extend(b"x")  # every lease came back
    b.send(b"after")
    assert a.recv(10) == b"after"


def test_close_waits_for_io_wq_work_that_cannot_be_cancelled(tmp_path: Path) -> None:
    """A buffered read forced to an io-wq worker keeps writing after
    io_uring_queue_exit would return: close() must wait for its CQE."""
    path = tmp_path / "big"
    size = 32 << 20
    with open(path, "wb") as f:
        f.truncate(size)
    fd = os.open(path, os.O_RDONLY)
    try:
        buf = bytearray(b"\xff") * size
        ring = ouring.Ring(4)
        op = Read(fd, buf, 0)
        op.sqe_flags = lib.IOSQE_ASYNC
        ring.submit(op)
        ring.flush()
        ring.close()
        assert op.state == DONE
        assert ring.statistics().leaked == 0
        assert op.res in (size, -errno.ECANCELED, -errno.EINTR)
        buf.extend(b"x")
    finally:
        os.close(fd)


def test_what_never_completes_in_time_is_leaked_on_purpose(
    socketpair: tuple[socket.socket, socket.socket], tmp_path: Path
) -> None:
    path = tmp_path / "big"
    size = 64 << 20
    with open(path, "wb") as f:
        f.truncate(size)
    fd = os.open(path, os.O_RDONLY)
    try:
        buf = bytearray(size)
        ring = ouring.Ring(4, teardown_timeout=0)
        op = Read(fd, buf, 0)
        op.sqe_flags = lib.IOSQE_ASYNC
        ring.submit(op)
        ring.flush()
        with pytest.warns(ResourceWarning, match="kept alive forever"):
            ring.close()
        assert op.state == LEAKED
        assert op in _ring._leaked_forever  # referenced forever: never freed
        assert ring.statistics().leaked == 1
        with pytest.raises(BufferError):
            buf.extend(b"x")  # still pinned: the kernel may write into it
    finally:
        os.close(fd)


def test_closing_from_another_thread_is_refused() -> None:
    import threading

    ring = ouring.Ring(4)
    errors: list[BaseException] = []

    def close() -> None:
        try:
            ring.close()
        except RuntimeError as exc:
            errors.append(exc)

    thread = threading.Thread(target=close)
    thread.start()
    thread.join()
    assert len(errors) == 1
    assert not ring.closed
    ring.close()


def test_a_dropped_ring_keeps_what_the_kernel_owns(
    socketpair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = socketpair
    buf = bytearray(b"untouched")
    ring = ouring.Ring(4)
    op = Recv(a, buf)
    ring.submit(op)
    ring.flush()
    with pytest.warns(ResourceWarning, match=r"unclosed <ouring.Ring fd=\d+"):
        del ring  # the last reference: collected here
    assert op.state == LEAKED
    assert op in _ring._leaked_forever
    with pytest.raises(BufferError):
        buf.extend(b"x")  # never freed nor resized under the kernel
    b.send(b"x")  # the orphaned recv may take this; the buffer is alive to receive it


def test_close_finishes_even_when_the_kernel_refuses_to_enter(
    socketpair: tuple[socket.socket, socket.socket],
) -> None:
    """Someone closed the ring fd: io_uring_enter fails with EBADF. Teardown
    cannot reap, so it leaks what the kernel owns instead of raising halfway."""
    a, _ = socketpair
    buf = bytearray(4)
    ring = ouring.Ring(4)
    op = Recv(a, buf)
    ring.submit(op)
    ring.flush()
    os.close(ring.fd)
    with pytest.warns(ResourceWarning, match="kept alive forever"):
        ring.close()
    assert ring.closed
    assert op.state == LEAKED
    assert ring.statistics().leaked == 1


def test_reaping_a_closed_ring_touches_no_freed_memory() -> None:
    """A reaper woken in the scheduler pass that closed the ring still calls
    reap(): it must not reach the freed native ring (this was a segfault)."""
    ring = ouring.Ring()
    ring.close()
    assert ring.reap() == 0
    ring.flush()


def test_recv_bytes_returns_a_new_bytes_object_of_the_received_count(
    socketpair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = socketpair
    with ouring.Ring(4) as ring:
        op = RecvBytes(a, 65536)
        ring.submit(op)
        ring.flush()
        b.send(b"chunk")
        drain(ring)
        assert op.outcome() == b"chunk"
        eof = RecvBytes(a, 16)
        b.shutdown(socket.SHUT_WR)
        ring.submit(eof)
        drain(ring)
        assert eof.outcome() == b""


def test_a_cancelled_recv_bytes_took_nothing(
    socketpair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = socketpair
    with ouring.Ring(4) as ring:
        op = RecvBytes(a, 16)
        ring.submit(op)
        ring.flush()
        assert ring.cancel(op) is False
        drain(ring)
        assert op.cancelled()
        b.send(b"kept")
        assert a.recv(10) == b"kept"


class _Waker:
    """An executor whose wake raises for one waiter: a bug in an adapter."""

    def __init__(self, bad: object) -> None:
        self.bad = bad
        self.woken: list[object] = []

    def wake(self, waiter: object) -> None:
        if waiter == self.bad:
            raise RuntimeError("wake failed")
        self.woken.append(waiter)


def test_a_raising_wake_does_not_drop_the_rest_of_the_batch(tmp_path: Path) -> None:
    """The CQEs of a batch are consumed from the CQ before they are settled:
    if waking one waiter raises, every other operation of the batch is still
    settled (released, woken) and the first exception comes out after."""
    path = tmp_path / "data"
    path.write_bytes(b"x" * 4096)
    fd = os.open(path, os.O_RDONLY)
    try:
        with ouring.Ring(16) as ring:
            waker = _Waker(bad="w3")
            ring.executor = waker  # type: ignore[assignment]  # wake() only
            bufs = [bytearray(16) for _ in range(8)]
            ops = [Read(fd, buf, 0) for buf in bufs]
            for i, op in enumerate(ops):
                ring.submit(op, f"w{i}")
            ring.flush()  # page-cache reads: all 8 complete inside this submit
            with pytest.raises(RuntimeError, match="wake failed"):
                ring.reap()  # one batch of 8 CQEs
            assert [op.state for op in ops] == [DONE] * 8
            assert sorted(map(str, waker.woken)) == [f"w{i}" for i in range(8) if i != 3]
            for buf in bufs:
                buf.append(0)  # released: resizable again
            ring.executor = None
    finally:
        os.close(fd)


def test_an_operation_is_submitted_once() -> None:
    with ouring.Ring(4) as ring:
        op = Nop()
        ring.submit(op)
        with pytest.raises(RuntimeError, match="submitted already"):
            ring.submit(op)
        drain(ring)
        with pytest.raises(RuntimeError, match="submitted already"):
            ring.submit(op)
        assert ring.statistics().completed == 1


def test_submit_takes_operations_only() -> None:
    with ouring.Ring(4) as ring, pytest.raises(TypeError, match="ouring operation is required"):
        ring.submit("not an op")


def test_abandoning_a_done_operation_undoes_its_result_once(tmp_path: Path) -> None:
    """Nobody will receive an open that completed already: abandon closes its
    fd at once, and only once (a second close could hit a reused number)."""
    path = tmp_path / "f"
    path.write_bytes(b"")
    with ouring.Ring(4) as ring:
        op = OpenAt(path, os.O_RDONLY, 0)
        ring.submit(op)
        drain(ring)
        assert op.state == DONE
        fd = op.res
        os.fstat(fd)
        ring.abandon(op)
        with pytest.raises(OSError, match="Bad file descriptor"):
            os.fstat(fd)
        reused = os.open(path, os.O_RDONLY)  # likely the same number
        try:
            ring.abandon(op)
            os.fstat(reused)  # still open
        finally:
            os.close(reused)


def test_the_owner_thread_and_process_are_kept_in_the_core_only() -> None:
    # The core records them when it opens the ring; Python reads them and
    # cannot set them, so the two sides can never disagree.
    with ouring.Ring(4) as ring:
        assert ring._thread == threading.get_ident()
        assert ring._forked is False
        with pytest.raises(AttributeError):
            ring._thread = 1  # type: ignore[misc]
        with pytest.raises(AttributeError):
            ring._forked = True  # type: ignore[misc]
        seen: list[BaseException] = []

        def elsewhere() -> None:
            try:
                ring._check_open()
            except BaseException as exc:  # noqa: BLE001 - handed to the test thread
                seen.append(exc)

        worker = threading.Thread(target=elsewhere)
        worker.start()
        worker.join()
        assert len(seen) == 1
        assert isinstance(seen[0], ouring.RingClosedError)
        assert "another thread" in str(seen[0])
        ring._check_open()
        ring._check_process()
    with pytest.raises(ouring.RingClosedError, match="closed"):
        ring._check_open()


def test_set_hooks_takes_every_hook_by_keyword_or_changes_nothing() -> None:
    set_hooks: Any = _ringcore.set_hooks  # called as wrong code would call it
    with pytest.raises(TypeError, match="by keyword"):
        set_hooks(print)
    with pytest.raises(TypeError, match="by keyword"):
        set_hooks(u32=print)
    hooks = {name: print for name in _HOOKS if name != "unlendable"}
    with pytest.raises(TypeError, match="missing the hook unlendable"):
        set_hooks(**hooks, unknown=print)
    # The registered hooks are untouched: a refused lend still says why.
    with pytest.raises(TypeError, match="read-only"):
        Read(0, b"immutable", 0)


_HOOKS = (
    "unlendable",
    "in_use",
    "fileno_for",
    "file_offset",
    "u32",
    "buffer_error",
    "closed_error",
    "unsupported",
    "cancel_fd",
)


def test_has_queued_says_what_the_next_flush_would_hand_the_kernel() -> None:
    # What an executor asks after a flush or a reap: operations and cancel
    # requests that still wait for io_uring_enter.
    a, b = socket.socketpair()
    with ouring.Ring() as ring, a, b:
        assert not ring.has_queued()
        op = Recv(a.fileno(), bytearray(10))  # waits: nothing to receive
        ring.submit(op)
        assert ring.has_queued()
        assert ring.has_queued(room_only=True)
        ring.flush()
        assert op.state == SUBMITTED
        assert not ring.has_queued()
        assert not ring.cancel(op)  # in the kernel: a cancel request is queued
        assert ring.has_queued()
        ring.flush()
        assert not ring.has_queued()
        ring.wait(1)
        assert op.state == DONE


def test_has_queued_room_only_leaves_out_what_waits_for_the_in_flight_cap() -> None:
    a, b = socket.socketpair()
    with ouring.Ring() as ring, a, b:
        ring._max_inflight = 1
        first, second = Recv(a.fileno(), bytearray(10)), Recv(a.fileno(), bytearray(10))
        ring.submit(first)
        ring.submit(second)
        ring.flush()
        assert (first.state, second.state) == (SUBMITTED, PENDING)
        assert ring.has_queued()  # the second waits...
        assert not ring.has_queued(room_only=True)  # ...for a CQE, not a flush
        b.send(b"x")
        ring.wait(1)  # the first completes: room again
        assert first.state == DONE
        assert ring.has_queued(room_only=True)
        b.send(b"y")
        ring.flush()
        ring.wait(1)
        assert second.state == DONE


def test_on_queue_is_called_when_a_queue_for_the_kernel_stops_being_empty() -> None:
    # The hook an executor without a "before I/O wait" point (asyncio) uses to
    # schedule its flush, whoever queues: once per queue and batch.
    a, b = socket.socketpair()
    calls: list[str] = []
    with ouring.Ring() as ring, a, b:
        ring._on_queue = lambda: calls.append("queued")
        first, second = Recv(a.fileno(), bytearray(10)), Recv(a.fileno(), bytearray(10))
        ring.submit(first)
        ring.submit(second)  # pending was not empty: no second call
        assert calls == ["queued"]
        ring.flush()
        ring._max_inflight = 2  # the next one waits for a CQE, in pending
        third = Recv(a.fileno(), bytearray(10))
        ring.submit(third)
        ring.flush()
        assert calls == ["queued", "queued"]
        assert third.state == PENDING
        # A cancel request does not wait behind what the in-flight cap holds
        # back: its own queue was empty, so the executor hears of it.
        assert not ring.cancel(first)
        assert calls == ["queued", "queued", "queued"]
        ring._on_queue = None  # the executor left: nobody is told any more
        ring.cancel(second)
        assert len(calls) == 3
        ring.flush()
        b.send(b"x")
        while third.state != DONE:
            ring.wait(1)
            ring.flush()
