"""Issue 4, scenario 9: an fd closed through the library (``ouring.close``)
while operations are in flight or queued on it. Those that did not happen
raise ``trio.ClosedResourceError`` (under asyncio the library's
``FdClosedError``); one that completed first returns its
result; a new file that reuses the fd number never sees the old ops' data."""

from __future__ import annotations

import select
import socket
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable

import anyio
import pytest
import trio
import trio.testing

import ouring

from ._helpers import (
    fd_closed_error,
    fd_count,
    is_lent,
    wait_cqe_ready,
    wait_parked,
    wait_until,
)


async def test_ops_in_flight_end_with_closed_resource_error(executor: str) -> None:
    a, b = socket.socketpair()
    fd = a.detach()
    ring = ouring.current_ring()
    bufs = [bytearray(b"untouched") for _ in range(3)]
    errors: list[BaseException] = []

    async def receiver(buf: bytearray) -> None:
        try:
            await ouring.recv(fd, buf)
        except fd_closed_error() as exc:
            errors.append(exc)

    start = ring.statistics().submitted
    with b, anyio.fail_after(5):
        async with anyio.create_task_group() as nursery:
            for buf in bufs:
                nursery.start_soon(receiver, buf)
            await wait_parked(ring, start + 3)
            await ouring.close(fd)
        assert len(errors) == 3
        assert all(buf == b"untouched" and not is_lent(buf) for buf in bufs)
        assert ring.statistics().inflight == 0
        # The fd number is reused by a new socket: the old peer's data never
        # reaches it, and no old recv is left armed to eat the new data.
        c, d = socket.socketpair()
        with c, d:
            reused = c if c.fileno() == fd else d
            other = d if reused is c else c
            assert reused.fileno() == fd
            b.settimeout(5)
            assert b.recv(4) == b""  # the old socket is really closed: its peer sees EOF
            other.send(b"new")
            buf, n = await ouring.recv(reused, bytearray(16))
            assert buf[:n] == b"new"


# An operation queued in Python behind a full kernel: the thread ring has no queue.
@pytest.mark.io_uring_only
async def test_queued_op_is_withdrawn_by_close(
    executor: str, socketpair: tuple[socket.socket, socket.socket]
) -> None:
    """The recv is still queued in Python (the ring's one kernel slot is
    taken by an idle recv elsewhere): close withdraws it; it never reaches
    the kernel."""
    idle, _ = socketpair
    a, b = socket.socketpair()
    fd = a.detach()
    errors: list[BaseException] = []
    async with ouring.open_ring(1, cq_entries=2) as ring:
        ring._max_inflight = 1  # the cap of a pre-NODROP kernel: the next op waits PENDING

        async def receiver() -> None:
            try:
                await ring.recv(fd, bytearray(4))
            except fd_closed_error() as exc:
                errors.append(exc)

        idle_scope = anyio.CancelScope()

        async def idle_recv() -> None:
            with idle_scope:
                await ring.recv(idle, bytearray(1))

        with b, anyio.fail_after(5):
            async with anyio.create_task_group() as nursery:
                nursery.start_soon(idle_recv)
                await wait_parked(ring, 1)
                nursery.start_soon(receiver)
                await wait_parked(ring, 0, inflight=2)
                assert ring.statistics().pending == 1
                submitted = ring.statistics().submitted
                nursery.start_soon(ring.close_fd, fd)
                await wait_until(
                    lambda: len(errors) == 1
                )  # withdrawn at once, before the kernel saw it
                idle_scope.cancel()  # frees the kernel slot for the close itself
            # The idle recv's cancel and the close went in; the recv never did.
            assert ring.statistics().submitted == submitted + 1
    assert len(errors) == 1


@pytest.mark.io_uring_only  # a CQE posted, not yet reaped: the thread ring has no CQ
async def test_an_op_that_completed_first_returns_its_result(executor: str) -> None:
    a, b = socket.socketpair()
    fd = a.detach()
    ring = ouring.current_ring()
    got: list[bytes] = []

    async def receiver() -> None:
        buf, n = await ouring.recv(fd, bytearray(16))
        got.append(bytes(buf[:n]))

    start = ring.statistics().submitted
    with b, anyio.fail_after(5):
        async with anyio.create_task_group() as nursery:
            nursery.start_soon(receiver)
            await wait_parked(ring, start + 1)
            b.send(b"first")
            wait_cqe_ready(ring)  # completed, not yet reaped
            await ouring.close(fd)
    assert got == [b"first"]


async def test_closing_a_socket_object_detaches_it_and_fails_its_ops(executor: str) -> None:
    a, b = socket.socketpair()
    ring = ouring.current_ring()
    start = ring.statistics().submitted
    errors: list[BaseException] = []

    async def receiver() -> None:
        try:
            await ouring.recv(a, bytearray(4))
        except fd_closed_error() as exc:
            errors.append(exc)

    with b, anyio.fail_after(5):
        async with anyio.create_task_group() as nursery:
            nursery.start_soon(receiver)
            await wait_parked(ring, start + 1)
            await ouring.close(a)
    assert len(errors) == 1
    assert a.fileno() == -1


# -- across rings: ouring.close cancels the fd's operations on every ring ------------------
#
# A recv parked on one ring, the close run on another: inside open_ring() (the
# same thread and run), through the thread fallback's ring, and from a trio run
# in another thread. Each recv ends with ClosedResourceError, and a new socket
# that reuses the fd number gets its own data, which no old recv eats.

# open_ring(fallback=...) for the ring each test parks on or closes through.
RING_KINDS: dict[str, str | None] = {"io_uring": None, "threads": "always-threads"}


async def _close_while_parked_elsewhere(
    park: Callable[[int], Awaitable[object]], close: Callable[[int], Awaitable[None]]
) -> None:
    ouring.current_ring()  # the run's ring exists before the fds are counted
    before = fd_count()
    a, b = socket.socketpair()
    fd = a.detach()
    errors: list[BaseException] = []

    async def receiver() -> None:
        try:
            await park(fd)
        except fd_closed_error() as exc:
            errors.append(exc)

    with b, trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(receiver)
            await trio.testing.wait_all_tasks_blocked()
            await close(fd)
        assert len(errors) == 1
        await _reused_fd_number_gets_only_new_data(fd, b)
    assert fd_count() == before


async def _reused_fd_number_gets_only_new_data(fd: int, old_peer: socket.socket) -> None:
    # The old socket is really closed once no operation holds it any more:
    # its peer sees EOF (a recv left armed would keep it open, and eat data).
    assert select.select([old_peer], [], [], 5)[0], "the old socket was not closed"
    assert old_peer.recv(4) == b""
    c, d = socket.socketpair()
    with c, d:
        reused, other = (c, d) if c.fileno() == fd else (d, c)
        assert reused.fileno() == fd
        other.send(b"new")
        buf, n = await ouring.recv(reused, bytearray(16))
        assert buf[:n] == b"new"


@pytest.mark.parametrize("kind", RING_KINDS)
async def test_close_inside_open_ring_ends_a_recv_parked_on_the_run_s_ring(kind: str) -> None:
    async def close(fd: int) -> None:
        async with ouring.open_ring(fallback=RING_KINDS[kind]):
            await ouring.close(fd)

    await _close_while_parked_elsewhere(lambda fd: ouring.recv(fd, bytearray(4)), close)


@pytest.mark.parametrize("kind", RING_KINDS)
async def test_close_on_the_run_s_ring_ends_a_recv_parked_inside_open_ring(kind: str) -> None:
    async def park(fd: int) -> None:
        async with ouring.open_ring(fallback=RING_KINDS[kind]):
            await ouring.recv(fd, bytearray(4))

    await _close_while_parked_elsewhere(park, ouring.close)


# An operation queued in Python behind a full kernel: the thread ring has no queue.
@pytest.mark.io_uring_only
async def test_a_queued_recv_of_another_ring_is_withdrawn_before_the_close(
    executor: str,
) -> None:
    """The recv is still queued in Python on a full ring (its one kernel slot
    holds an idle recv): the close, run on the run's ring, withdraws it at
    once; it never reaches the kernel, where the fd number could by then name
    another file."""
    run_ring = ouring.current_ring()
    idle_a, idle_b = socket.socketpair()
    a, b = socket.socketpair()
    fd = a.detach()
    errors: list[BaseException] = []
    with idle_a, idle_b, b, anyio.fail_after(5):
        async with ouring.open_ring(1, cq_entries=2) as ring:
            ring._max_inflight = 1  # the cap of a pre-NODROP kernel: the next op waits PENDING
            idle_scope = anyio.CancelScope()

            async def idle_recv() -> None:
                with idle_scope:
                    await ring.recv(idle_a, bytearray(1))

            async def receiver() -> None:
                try:
                    await ring.recv(fd, bytearray(4))
                except fd_closed_error() as exc:
                    errors.append(exc)

            async with anyio.create_task_group() as nursery:
                nursery.start_soon(idle_recv)
                await wait_parked(ring, 1)
                nursery.start_soon(receiver)
                await wait_parked(ring, 0, inflight=2)
                assert ring.statistics().pending == 1
                submitted = ring.statistics().submitted
                await run_ring.close_fd(fd)
                assert ring.statistics().pending == 0  # withdrawn before close(2)
                await wait_until(lambda: len(errors) == 1)
                idle_scope.cancel()
            assert ring.statistics().submitted == submitted  # the recv never went in
        await _reused_fd_number_gets_only_new_data(fd, b)


@pytest.mark.parametrize("closer", RING_KINDS)
@pytest.mark.parametrize("kind", RING_KINDS)
async def test_close_ends_a_recv_parked_in_a_trio_run_of_another_thread(
    kind: str, closer: str
) -> None:
    """Another thread runs its own trio.run with its own ring, where a recv
    is parked. ``ouring.close`` here asks that ring (through its own thread:
    no ring is touched from a foreign thread) and returns once it has
    withdrawn or asked the kernel to cancel its operations on the fd; the
    recv then ends with ClosedResourceError."""
    ouring.current_ring()  # the run's ring exists before the fds are counted
    before = fd_count()
    a, b = socket.socketpair()
    fd = a.detach()
    parked = threading.Event()
    outcome: list[BaseException | object] = []

    async def other_run() -> None:
        async def receiver() -> None:
            try:
                outcome.append(await ouring.recv(fd, bytearray(4)))
            except fd_closed_error() as exc:
                outcome.append(exc)

        with trio.fail_after(10):
            async with ouring.open_ring(fallback=RING_KINDS[kind]), trio.open_nursery() as nursery:
                nursery.start_soon(receiver)
                await trio.testing.wait_all_tasks_blocked()
                parked.set()

    thread = threading.Thread(target=trio.run, args=(other_run,))
    thread.start()
    try:
        with b, trio.fail_after(10):
            await trio.to_thread.run_sync(parked.wait)
            async with ouring.open_ring(fallback=RING_KINDS[closer]):
                await ouring.close(fd)
            await _reused_fd_number_gets_only_new_data(fd, b)
    finally:
        await trio.to_thread.run_sync(thread.join)
    assert len(outcome) == 1
    assert isinstance(outcome[0], trio.ClosedResourceError)
    assert fd_count() == before


# An operation queued in Python behind a full kernel: the thread ring has no queue.
@pytest.mark.io_uring_only
async def test_close_returns_once_another_thread_s_ring_withdrew_its_queued_op() -> None:
    """The other thread's ring is full (its one kernel slot holds an idle
    recv), so its recv on the fd is still queued in Python, named by fd
    number. ``ouring.close`` returns only after that ring's own thread has
    withdrawn it: it never reaches the kernel, where the number could by then
    name another file."""
    idle_a, idle_b = socket.socketpair()
    a, b = socket.socketpair()
    fd = a.detach()
    parked = threading.Event()
    finish = threading.Event()
    rings: list[ouring.Ring] = []
    outcome: list[BaseException | object] = []

    async def other_run() -> None:
        async def receiver(ring: ouring.Ring) -> None:
            try:
                outcome.append(await ring.recv(fd, bytearray(4)))
            except fd_closed_error() as exc:
                outcome.append(exc)

        with trio.fail_after(10):
            async with ouring.open_ring(1, cq_entries=2) as ring, trio.open_nursery() as nursery:
                ring._max_inflight = 1  # the cap of a pre-NODROP kernel: the next op waits PENDING
                rings.append(ring)
                idle_scope = trio.CancelScope()

                async def idle_recv() -> None:
                    with idle_scope:
                        await ring.recv(idle_a, bytearray(1))

                nursery.start_soon(idle_recv)
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(receiver, ring)
                await trio.testing.wait_all_tasks_blocked()
                parked.set()
                await trio.to_thread.run_sync(finish.wait)
                idle_scope.cancel()

    thread = threading.Thread(target=trio.run, args=(other_run,))
    thread.start()
    try:
        with idle_a, idle_b, b, trio.fail_after(10):
            await trio.to_thread.run_sync(parked.wait)
            [ring] = rings
            assert ring.statistics().pending == 1
            submitted = ring.statistics().submitted
            await ouring.close(fd)
            # Read from this thread while that ring waits: counters only.
            assert ring.statistics().pending == 0
            finish.set()
            await trio.to_thread.run_sync(thread.join)
            assert ring.statistics().submitted == submitted  # the queued recv never went in
            await _reused_fd_number_gets_only_new_data(fd, b)
    finally:
        finish.set()
        await trio.to_thread.run_sync(thread.join)
    assert len(outcome) == 1
    assert isinstance(outcome[0], trio.ClosedResourceError)


FINALIZED_IN_THE_REGISTRY_S_LOCK = """
import gc, warnings
import ouring, ouring._backend
from ouring._fallback import ThreadRing
warnings.simplefilter("ignore", ResourceWarning)
for make in (lambda: ouring.Ring(4), ThreadRing):
    ring = make()
    ring.cycle = ring  # only the cycle collector frees it, and never closed
    del ring
    with ouring._backend._registry_lock:  # a close in this thread lists the live rings...
        gc.collect()  # ...and an allocation there runs the collector: __del__
print("no deadlock")
"""


def test_a_ring_finalized_while_the_registry_is_locked_does_not_deadlock() -> None:
    """The garbage collector may finalize an unclosed ring inside any
    allocation, including one made while this thread holds the registry's
    lock: ``__del__`` must not take it."""
    done = subprocess.run(
        [sys.executable, "-c", FINALIZED_IN_THE_REGISTRY_S_LOCK],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout) == (0, "no deadlock\n"), done.stderr
