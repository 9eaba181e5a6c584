"""The trio adapter: the abort protocol, batching, ring lifetimes, and
coroutines closed while parked."""

from __future__ import annotations

import errno
import os
import select
import socket
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from ouring._native import lib
from safety._helpers import is_lent

import ouring
from ouring._ops import CANCELLING, DONE


def stats() -> ouring.RingStatistics:
    return ouring.current_ring().statistics()


def wait_cqe_ready(ring: ouring.Ring) -> None:
    """Block (the thread, briefly) until the kernel has posted a CQE: polling
    the ring fd is the kernel's own answer to 'is a completion waiting?'."""
    readable, _, _ = select.select([ring.wait_fd], [], [], 5)
    assert readable, "the kernel posted no completion"


async def test_confirmed_cancel_raises_cancelled_and_leaves_the_buffer(
    socketpair: tuple[socket.socket, socket.socket],
    executor_path: str,
) -> None:
    a, b = socketpair
    buf = bytearray(b"untouched")
    before = stats()
    with trio.move_on_after(0.01) as scope:
        await ouring.recv(a, buf)
    assert scope.cancelled_caught
    assert buf == b"untouched"
    buf.extend(b"!")  # released
    after = stats()
    assert after.cancelled == before.cancelled + 1
    assert after.inflight == 0
    b.send(b"next")
    assert a.recv(10) == b"next"  # the cancelled recv consumed nothing


async def test_completion_that_won_the_race_is_returned(
    socketpair: tuple[socket.socket, socket.socket],
    executor_path: str,
) -> None:
    """The recv completed before the cancel reached the kernel: its bytes are
    returned, and trio raises Cancelled at the next checkpoint instead."""
    a, b = socketpair
    ring = ouring.current_ring()
    got: list[bytes] = []
    scope = trio.CancelScope()

    async def receiver() -> None:
        with scope:
            buf, n = await ouring.recv(a, bytearray(16))
            got.append(bytes(buf[:n]))
            await trio.lowlevel.checkpoint()
            got.append(b"not reached")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receiver)
        await trio.testing.wait_all_tasks_blocked()
        b.send(b"won the race")
        wait_cqe_ready(ring)
        scope.cancel()  # abort_fn runs now: the op is in the kernel -> FAILED
    assert got == [b"won the race"]
    assert scope.cancelled_caught
    assert ring.statistics().inflight == 0


async def test_accept_that_won_the_race_delivers_the_connection() -> None:
    ring = ouring.current_ring()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        accepted: list[socket.socket] = []
        scope = trio.CancelScope()

        async def acceptor() -> None:
            with scope:
                conn, _ = await ouring.accept(listener)
                accepted.append(conn)
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(acceptor)
            await trio.testing.wait_all_tasks_blocked()
            client = socket.create_connection(listener.getsockname())
            wait_cqe_ready(ring)
            scope.cancel()
        with client, accepted[0] as conn:
            client.sendall(b"hi")
            assert conn.recv(2) == b"hi"


async def test_pre_cancelled_operation_never_reaches_the_kernel(
    pipe: tuple[int, int],
    executor_path: str,
) -> None:
    buf = bytearray(4)
    before = stats()
    with trio.CancelScope() as scope:
        scope.cancel()
        await ouring.read(pipe[0], buf)
    assert scope.cancelled_caught
    buf.extend(b"x")  # the lease was released
    assert stats().submitted == before.submitted


async def test_every_operation_is_a_checkpoint(
    tmp_path: Path,
    executor_path: str,
) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    fd = os.open(path, os.O_RDONLY)
    try:
        with trio.testing.assert_checkpoints():
            await ouring.read(fd, bytearray(3), 0)
        with trio.testing.assert_checkpoints():
            await ouring.stat(path)
    finally:
        os.close(fd)


async def test_one_submission_per_scheduler_pass() -> None:
    async with ouring.open_ring(256) as ring:
        before = ring.statistics().batches

        async def one_nop() -> None:
            await ring.nop()

        async with trio.open_nursery() as nursery:
            for _ in range(100):
                nursery.start_soon(one_nop)
        after = ring.statistics()
        assert after.completed == 100
        # The first operation after a quiet pass goes at once (a lone task
        # does not wait for company); the 99 started with it share one enter.
        assert after.batches - before <= 2


async def test_a_lone_task_completes_inline_but_still_yields(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(bytes(range(256)) * 16)
    fd = os.open(path, os.O_RDONLY)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await trio.lowlevel.checkpoint()

    try:
        async with ouring.open_ring() as ring, trio.open_nursery() as nursery:
            nursery.start_soon(ticker)
            buf = bytearray(16)
            for i in range(200):
                buf, n = await ring.read(fd, buf, 16 * i)
                assert n == 16
                assert bytes(buf) == bytes(range(16 * (i % 16), 16 * (i % 16) + 16))
            # Every read was a schedule point: the ticker ran alongside.
            assert ticks >= 150
            with trio.CancelScope() as scope:
                scope.cancel()
                with pytest.raises(trio.Cancelled):
                    await ring.read(fd, buf, 0)
            nursery.cancel_scope.cancel()
    finally:
        os.close(fd)


async def test_burst_far_beyond_the_ring_under_trio(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(bytes(range(256)))
    fd = os.open(path, os.O_RDONLY)
    try:
        async with ouring.open_ring(8, cq_entries=16) as ring:
            results: list[int] = []

            async def reader(i: int) -> None:
                buf, n = await ring.read(fd, bytearray(1), i % 256)
                assert n == 1
                results.append(buf[0])

            async with trio.open_nursery() as nursery:
                for i in range(800):
                    nursery.start_soon(reader, i)
            assert sorted(results) == sorted(i % 256 for i in range(800))
            assert ring.statistics().inflight == 0
    finally:
        os.close(fd)


async def test_closed_coroutine_leaves_its_pending_op_to_the_ring(
    pipe: tuple[int, int],
    executor_path: str,
) -> None:
    """coro.close() while parked (the analogue of dropping a Rust future): the
    ring withdraws what the kernel never saw; nothing escapes, nothing leaks."""
    first = ouring.read(pipe[0], bytearray(4))
    first.send(None)  # a lone task's first op of a pass goes to the kernel at once
    buf = bytearray(4)
    coro = ouring.read(pipe[0], buf)
    coro.send(None)  # runs up to the park; the op is queued, not yet submitted
    assert stats().pending == 1
    coro.close()
    assert stats().pending == 0
    buf.extend(b"x")
    first.close()
    await ouring.wait_all_ops_completed()
    assert stats().inflight == 0


async def test_closed_coroutine_keeps_the_buffer_owned_until_the_cqe(
    pipe: tuple[int, int],
    executor_path: str,
) -> None:
    r, w = pipe
    ring = ouring.current_ring()
    buf = bytearray(4)
    coro = ouring.read(r, buf)
    coro.send(None)
    ring.flush()  # now the kernel owns the buffer
    coro.close()
    with pytest.raises(BufferError):
        buf.extend(b"x")
    await ouring.wait_all_ops_completed()
    buf.extend(b"x")
    os.write(w, b"data")
    assert os.read(r, 10) == b"data"  # the abandoned read was cancelled, not armed


async def test_closed_coroutine_of_an_open_closes_the_fd(
    tmp_path: Path,
    executor_path: str,
) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"")
    ring = ouring.current_ring()
    fds_before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        # A lone task's open completes during its own submission; the
        # coroutine is closed at the schedule point that follows.
        await trio.lowlevel.checkpoint()
        coro = ouring.open(path)
        coro.send(None)
        coro.close()
        # A parked open: queued behind another op of the same pass.
        first = ring.nop()
        first.send(None)
        coro = ouring.open(path)
        coro.send(None)
        ring.flush()  # the open runs in the kernel...
        wait_cqe_ready(ring)  # ...and completes, but nobody will receive it
        coro.close()
        first.close()
        await ouring.wait_all_ops_completed()
    assert len(os.listdir("/proc/self/fd")) == fds_before


async def test_leaving_open_ring_fails_stragglers_with_ring_closed(
    socketpair: tuple[socket.socket, socket.socket],
) -> None:
    a, _ = socketpair
    buf = bytearray(b"untouched")
    errors: list[BaseException] = []

    async def straggler(ring: ouring.Ring) -> None:
        try:
            await ring.recv(a, buf)
        except ouring.RingClosedError as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        async with ouring.open_ring(8) as ring:
            nursery.start_soon(straggler, ring)
            await trio.testing.wait_all_tasks_blocked()
        assert ring.closed
    assert len(errors) == 1
    assert buf == b"untouched"
    buf.extend(b"x")
    assert ring.statistics().inflight == 0


async def test_open_ring_is_used_by_module_functions_inside_it(tmp_path: Path) -> None:
    outer = ouring.current_ring()
    async with ouring.open_ring(8) as inner:
        assert ouring.current_ring() is inner
        await ouring.stat(tmp_path)
        assert inner.statistics().completed == 1
    assert ouring.current_ring() is outer


async def test_defer_taskrun_ring_waits_on_an_eventfd(
    socketpair: tuple[socket.socket, socket.socket],
) -> None:
    flags = lib.IORING_SETUP_DEFER_TASKRUN | lib.IORING_SETUP_SINGLE_ISSUER
    a, b = socketpair
    async with ouring.open_ring(8, setup_flags=flags) as ring:
        assert ring.wait_fd != ring.fd
        assert ring.setup_flags & lib.IORING_SETUP_DEFER_TASKRUN

        async def late_sender() -> None:
            await trio.sleep(0.05)
            b.send(b"deferred")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(late_sender)
            buf, n = await ring.recv(a, bytearray(16))
        assert buf[:n] == b"deferred"


def test_each_run_gets_its_own_ring_torn_down_at_the_end(
    socketpair: tuple[socket.socket, socket.socket],
) -> None:
    """An operation still in flight in a system task when the run ends is
    cancelled and reaped before trio.run returns."""
    a, _ = socketpair
    rings: list[ouring.Ring] = []
    outcomes: list[BaseException] = []
    buf = bytearray(4)

    async def background() -> None:
        try:
            await ouring.recv(a, buf)
        except BaseException as exc:
            outcomes.append(exc)
            raise

    async def main() -> None:
        rings.append(ouring.current_ring())
        trio.lowlevel.spawn_system_task(background)
        await trio.testing.wait_all_tasks_blocked()

    trio.run(main)
    trio.run(main)
    first, second = rings
    assert first is not second
    assert first.closed
    assert second.closed
    for ring in rings:
        assert (ring.statistics().inflight, ring.statistics().leaked) == (0, 0)
    assert all(isinstance(e, trio.Cancelled | ouring.RingClosedError) for e in outcomes)
    buf.extend(b"x")


def test_module_functions_need_a_trio_run() -> None:
    with pytest.raises(RuntimeError, match=r"inside trio\.run"):
        ouring.current_ring()


async def test_a_ring_from_another_run_is_refused() -> None:
    ring = ouring.current_ring()

    def in_thread() -> Any:
        async def use() -> None:
            await ring.nop()

        return trio.run(use)

    with pytest.raises(ouring.RingClosedError, match="another thread"):
        await trio.to_thread.run_sync(in_thread)


async def test_abort_of_a_cancelling_op_is_idempotent(
    socketpair: tuple[socket.socket, socket.socket],
    executor_path: str,
) -> None:
    a, _ = socketpair
    ring = ouring.current_ring()
    from ouring._ops import Recv

    op = Recv(a, bytearray(1))
    ring.submit(op)
    ring.flush()
    assert ring.cancel(op) is False
    assert op.state == CANCELLING
    assert ring.cancel(op) is False  # a second abort asks nothing more
    await ouring.wait_all_ops_completed()
    assert op.state == DONE
    assert op.res == -errno.ECANCELED


async def test_wait_all_ops_completed_returns_when_the_ring_is_idle(
    socketpair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = socketpair
    done: list[bytes] = []

    async def receiver() -> None:
        buf, n = await ouring.recv(a, bytearray(8))
        done.append(bytes(buf[:n]))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receiver)
        await trio.testing.wait_all_tasks_blocked()
        with trio.move_on_after(0.05) as scope:
            await ouring.wait_all_ops_completed()  # the recv is still in flight
        assert scope.cancelled_caught
        b.send(b"go")
        await ouring.wait_all_ops_completed()
        assert ouring.current_ring().statistics().inflight == 0
    assert done == [b"go"]


def _batching_driver() -> Any:
    """The run's driver, told that the last pass was busy: the next
    operation batches (takes the inline-completion yield, not the lone path)."""
    from ouring._trio import _Driver, _run_driver

    ouring.current_ring()
    driver = _run_driver.get()
    assert isinstance(driver, _Driver)
    driver.ring._alone = False
    return driver


def _counting_parks(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every park of an operation (trio's wait_task_rescheduled, as the
    adapter calls it) from now on, in order."""
    from ouring import _trio

    parks: list[object] = []
    park = _trio._wait_task_rescheduled

    async def counted_park(abort: Any) -> Any:
        parks.append(abort)
        return await park(abort)

    monkeypatch.setattr(_trio, "_wait_task_rescheduled", counted_park)
    return parks


async def test_a_batched_page_cache_read_completes_without_parking(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    executor_path: str,
) -> None:
    parks = _counting_parks(monkeypatch)
    path = tmp_path / "data"
    path.write_bytes(bytes(range(256)) * 16)
    fd = os.open(path, os.O_RDONLY)
    try:
        _batching_driver()
        buf, n = await ouring.read(fd, bytearray(16), 32)
        assert (bytes(buf), n) == (bytes(range(32, 48)), 16)
        assert parks == []  # done when the task resumed from its one yield
        # A pipe with no data: the yield finds it not done, so it parks.
        r, w = os.pipe()
        try:
            async with trio.open_nursery() as nursery:

                async def reader() -> None:
                    _batching_driver()
                    buf, n = await ouring.read(r, bytearray(8))
                    assert bytes(buf[:n]) == b"late"

                nursery.start_soon(reader)
                await trio.testing.wait_all_tasks_blocked()
                os.write(w, b"late")
            assert len(parks) == 1
        finally:
            os.close(r)
            os.close(w)
    finally:
        os.close(fd)


class _ReaperSteps(trio.abc.Instrument):
    def __init__(self) -> None:
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.name.startswith("ouring reaper"):
            self.steps += 1


async def test_busy_passes_do_not_wake_the_reaper(tmp_path: Path) -> None:
    """While tasks are runnable (trio polls with timeout 0), before_io_wait
    settles what completed inside its own submit, so the ring fd is not
    readable when trio polls: the reaper task sleeps through busy passes."""
    path = tmp_path / "data"
    path.write_bytes(bytes(range(256)) * 16)
    fd = os.open(path, os.O_RDONLY)
    steps = _ReaperSteps()
    try:
        ouring.current_ring()
        await trio.testing.wait_all_tasks_blocked()  # the reaper is parked
        trio.lowlevel.add_instrument(steps)

        async def reader(task: int) -> None:
            buf = bytearray(16)
            for i in range(50):
                buf, n = await ouring.read(fd, buf, (task * 50 + i) % 256 * 16)
                assert n == 16

        async with trio.open_nursery() as nursery:
            for task in range(8):
                nursery.start_soon(reader, task)
        trio.lowlevel.remove_instrument(steps)
    finally:
        os.close(fd)
    assert ouring.current_ring().statistics().batches >= 50
    # Woken once per pass before (50 here); a read the kernel happens to punt
    # to an io-wq worker could still wake it, hence not == 0.
    assert steps.steps < 5


async def test_closing_a_coroutine_in_its_inline_completion_yield_gives_everything_back(
    tmp_path: Path,
    executor_path: str,
) -> None:
    path = tmp_path / "data"
    path.write_bytes(b"x" * 4096)
    fd = os.open(path, os.O_RDONLY)
    try:
        ring = ouring.current_ring()
        buf = bytearray(4096)
        _batching_driver()
        coro = ouring.read(fd, buf, 0)
        coro.send(None)  # submitted (PENDING), yielded to trio's scheduler
        assert ring.statistics().pending == 1
        coro.close()  # dropped there: withdrawn before the kernel saw it
        assert ring.statistics().inflight == 0
        buf.extend(b"!")  # the lease is back: resizable
    finally:
        os.close(fd)


async def test_a_cancel_during_the_inline_completion_yield_returns_the_result(
    tmp_path: Path,
    executor_path: str,
) -> None:
    """The read happened, so it is returned; trio raises Cancelled at the
    next checkpoint (the scope stays cancelled)."""
    path = tmp_path / "data"
    path.write_bytes(b"y" * 64)
    fd = os.open(path, os.O_RDONLY)
    try:
        got: list[int] = []
        with trio.CancelScope() as scope:
            _batching_driver()
            coro = ouring.read(fd, bytearray(64), 0)

            async def cancel_soon() -> None:
                scope.cancel()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(cancel_soon)
                _, n = await coro
                got.append(n)
            await trio.lowlevel.checkpoint()
            got.append(-1)  # not reached
        assert got == [64]
    finally:
        os.close(fd)


# -- read_many ------------------------------------------------------------------------------


async def test_read_many_returns_each_buffer_and_count_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = bytes(range(256)) * 64
    path = tmp_path / "data"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    parks = _counting_parks(monkeypatch)
    try:
        bufs = [bytearray(100) for _ in range(40)]
        offsets = [(i * 389) % (len(data) - 50) for i in range(40)]
        offsets[-1] = len(data) - 50  # a short read at the end of the file
        before = ouring.current_ring().statistics()
        results = await ouring.read_many(
            [(fd, buf, off) for buf, off in zip(bufs, offsets, strict=True)]
        )
        after = ouring.current_ring().statistics()
    finally:
        os.close(fd)
    assert [buf for buf, _ in results] == bufs
    assert all(got is buf for (got, _), buf in zip(results, bufs, strict=True))
    for (buf, n), off in zip(results, offsets, strict=True):
        assert bytes(buf[:n]) == data[off : off + 100]
    assert results[-1][1] == 50
    assert parks == []  # page-cache reads: one yield, no park
    assert after.submitted - before.submitted == 40
    assert not any(is_lent(buf) for buf in bufs)


async def test_read_many_parks_once_for_reads_that_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    pipes = [os.pipe() for _ in range(3)]
    parks = _counting_parks(monkeypatch)
    try:
        results: list[tuple[bytearray, int]] = []

        async def reader() -> None:
            results.extend(await ouring.read_many([(r, bytearray(8), 0) for r, _ in pipes]))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            for i, (_, w) in enumerate(pipes):
                await trio.testing.wait_all_tasks_blocked()
                os.write(w, b"pipe%d" % i)
    finally:
        for r, w in pipes:
            os.close(r)
            os.close(w)
    assert [bytes(buf[:n]) for buf, n in results] == [b"pipe0", b"pipe1", b"pipe2"]
    assert len(parks) == 1


@pytest.mark.parametrize(
    ("requests", "exc", "match"),
    [
        (lambda fd, a, b: [(fd, a, 0), (fd, b, -1)], ValueError, "explicit offsets"),
        (lambda fd, a, b: [(fd, a, 0), (fd, b)], TypeError, r"\(fd, buffer, offset\) tuples"),
        (lambda fd, a, b: [(fd, a, 0), (fd, a, 8)], ouring.BufferInUseError, "lent"),
        (lambda fd, a, b: [(fd, a, 0), (fd, b"ro", 0)], TypeError, "writable"),
        (lambda fd, a, b: [(fd, a, 0), (fd, b, "0")], TypeError, "as an integer"),
    ],
)
async def test_read_many_refuses_a_bad_request_and_keeps_nothing(
    tmp_path: Path, requests: Any, exc: type[Exception], match: str
) -> None:
    path = tmp_path / "data"
    path.write_bytes(b"x" * 64)
    fd = os.open(path, os.O_RDONLY)
    a, b = bytearray(8), bytearray(8)
    try:
        before = ouring.current_ring().statistics()
        with pytest.raises(exc, match=match):
            await ouring.read_many(requests(fd, a, b))
        assert ouring.current_ring().statistics().submitted == before.submitted
    finally:
        os.close(fd)
    assert not is_lent(a)
    assert not is_lent(b)


async def test_read_many_raises_the_first_failure_with_its_buffer(tmp_path: Path) -> None:
    path = tmp_path / "data"
    path.write_bytes(b"x" * 64)
    fd = os.open(path, os.O_RDONLY)
    dir_fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    good, bad = bytearray(8), bytearray(8)
    try:
        with pytest.raises(IsADirectoryError) as info:
            await ouring.read_many([(fd, good, 0), (dir_fd, bad, 0)])
    finally:
        os.close(fd)
        os.close(dir_fd)
    assert info.value.buffer is bad  # type: ignore[attr-defined]
    assert not is_lent(good)
    assert not is_lent(bad)


async def test_a_cancelled_read_many_raises_once_every_buffer_is_back() -> None:
    pipes = [os.pipe() for _ in range(4)]
    bufs = [bytearray(8) for _ in pipes]
    try:
        with trio.CancelScope() as scope:

            async def cancel_when_parked() -> None:
                await trio.testing.wait_all_tasks_blocked()
                scope.cancel()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(cancel_when_parked)
                await ouring.read_many(
                    [(r, buf, 0) for (r, _), buf in zip(pipes, bufs, strict=True)]
                )
        assert scope.cancelled_caught
        assert not any(is_lent(buf) for buf in bufs)
        assert ouring.current_ring().statistics().inflight == 0
        os.write(pipes[0][1], b"kept")
        assert os.read(pipes[0][0], 8) == b"kept"  # the cancelled read took nothing
    finally:
        for r, w in pipes:
            os.close(r)
            os.close(w)


async def test_a_pre_cancelled_read_many_submits_nothing(tmp_path: Path) -> None:
    path = tmp_path / "data"
    path.write_bytes(b"x" * 64)
    fd = os.open(path, os.O_RDONLY)
    buf = bytearray(8)
    try:
        before = ouring.current_ring().statistics()
        with trio.CancelScope() as scope:
            scope.cancel()
            await ouring.read_many([(fd, buf, 0)])
        assert scope.cancelled_caught
        assert ouring.current_ring().statistics().submitted == before.submitted
    finally:
        os.close(fd)
    assert not is_lent(buf)


async def test_read_many_of_nothing_is_a_checkpoint() -> None:
    with trio.testing.assert_checkpoints():
        assert await ouring.read_many([]) == []


# -- a closed ring's reaper and the fd number it no longer owns ------------------------
#
# io_uring_queue_exit closes the ring fd, so the next ring usually gets the same
# number. trio allows one wait_readable per fd number: a closed ring's reaper that
# waits on the number (or still holds trio's registration for it) makes the new
# ring's reaper raise BusyResourceError in a system task, and the run dies with
# TrioInternalError. Which reaper runs first varies on purpose (trio reverses half
# of its batches; under Hypothesis it shuffles them), so the scenarios that depend
# on the order repeat. Each failed before the fix (io_uring rings; a thread ring
# has no fd and runs the same scenarios as a check that it is unaffected).

RING_KINDS = [None, "always-threads"]  # None: io_uring (or $OURING_FALLBACK's choice)
ROUNDS = 8


def assert_fd_reused(rings: list[ouring.Ring]) -> None:
    """The scenario really hands the closed ring's fd number to the next ring
    (a thread ring has no fd: nothing to check)."""
    numbers = {ring.fd for ring in rings}
    assert len(numbers) == 1 or -1 in numbers, numbers


async def test_the_runs_ring_made_right_after_an_open_ring_block() -> None:
    """The report's reproduction: the block ends before its reaper ever ran,
    and the run's ring is made on the same fd number in the same pass."""
    async with ouring.open_ring() as inner:
        assert ouring.current_ring() is inner
    outer = ouring.current_ring()
    assert outer is not inner
    assert inner.closed
    assert_fd_reused([inner, outer])


def test_the_runs_ring_made_right_after_an_open_ring_block_in_fresh_runs() -> None:
    """The same in many runs: at the start of a run the bad order comes up in
    about one run in ten (measured: 4 of 60 runs crashed before the fix)."""

    async def reproduction() -> None:
        async with ouring.open_ring() as inner:
            assert ouring.current_ring() is inner
        assert_fd_reused([inner, ouring.current_ring()])

    for _ in range(100):
        trio.run(reproduction)


@pytest.mark.parametrize("fallback", RING_KINDS)
async def test_open_ring_blocks_back_to_back_without_a_checkpoint(fallback: str | None) -> None:
    for _ in range(ROUNDS):
        closed = []
        for _ in range(10):
            async with ouring.open_ring(8, fallback=fallback) as ring:
                closed.append(ring)
        async with ouring.open_ring(8, fallback=fallback) as live:
            assert_fd_reused([*closed, live])
            # The ten reapers that never ran and the live ring's, in one batch.
            await trio.testing.wait_all_tasks_blocked()
            await live.nop()
        assert all(ring.closed for ring in closed)


@pytest.mark.parametrize("fallback", RING_KINDS)
async def test_a_ring_closed_while_its_reaper_is_parked(fallback: str | None) -> None:
    """Ring.close() itself (not the end of open_ring) while the reaper is in
    wait_readable: the registration must go before the fd does."""
    for _ in range(ROUNDS):
        async with ouring.open_ring(8, fallback=fallback) as ring:
            await trio.testing.wait_all_tasks_blocked()  # the reaper is parked
            ring.close()
            async with ouring.open_ring(8, fallback=fallback) as again:
                assert_fd_reused([ring, again])
                await trio.testing.wait_all_tasks_blocked()
                await again.nop()


async def test_a_ring_closed_while_its_reaper_was_just_woken(
    socketpair: tuple[socket.socket, socket.socket],
) -> None:
    """The reaper is runnable (its fd polled readable) when a task of the same
    batch closes the ring and opens another on the same fd number."""
    a, b = socketpair
    for _ in range(ROUNDS):
        async with ouring.open_ring(8) as ring:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ring.recv, a, bytearray(1))
                await trio.testing.wait_all_tasks_blocked()  # recv and reaper parked
                b.send(b"x")
            # The recv's CQE made the ring fd readable: the reaper is runnable
            # (or parked again) when this task closes the ring.
            ring.close()
            async with ouring.open_ring(8) as again:
                assert_fd_reused([ring, again])
                await trio.testing.wait_all_tasks_blocked()
                await again.nop()


async def test_a_run_ring_closed_after_a_kernel_failure_is_replaced_on_its_fd_number() -> None:
    """A failed io_uring_enter makes the driver close the run's ring; the next
    operation of the run gets a new ring, in the same pass."""
    from ouring import _trio

    for _ in range(ROUNDS):
        # A ring whose reaper has not run yet: the run's ring of the last
        # round (or of the run) is closed and replaced in this same pass.
        ouring.current_ring()
        _trio._run_driver.get().close()
        old = ouring.current_ring()
        _trio._run_driver.get().close()  # what a failed io_uring_enter leads to
        new = ouring.current_ring()
        assert new is not old
        assert old.closed
        assert_fd_reused([old, new])
        await trio.testing.wait_all_tasks_blocked()
        await new.nop()
