"""Issue 4, scenario 9: an fd closed through the library (``ouring.close``)
while operations are in flight or queued on it. Those that did not happen
raise ``trio.ClosedResourceError``; one that completed first returns its
result; a new file that reuses the fd number never sees the old ops' data."""

from __future__ import annotations

import socket

import trio
import trio.testing

import ouring

from ._helpers import is_lent, wait_cqe_ready


async def test_ops_in_flight_end_with_closed_resource_error() -> None:
    a, b = socket.socketpair()
    fd = a.detach()
    ring = ouring.current_ring()
    bufs = [bytearray(b"untouched") for _ in range(3)]
    errors: list[BaseException] = []

    async def receiver(buf: bytearray) -> None:
        try:
            await ouring.recv(fd, buf)
        except trio.ClosedResourceError as exc:
            errors.append(exc)

    with b, trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            for buf in bufs:
                nursery.start_soon(receiver, buf)
            await trio.testing.wait_all_tasks_blocked()
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


async def test_queued_op_is_withdrawn_by_close(
    socketpair: tuple[socket.socket, socket.socket],
) -> None:
    """The recv is still queued in Python (the ring's one kernel slot is
    taken by an idle recv elsewhere): close withdraws it; it never reaches
    the kernel."""
    idle, _ = socketpair
    a, b = socket.socketpair()
    fd = a.detach()
    errors: list[BaseException] = []
    async with ouring.open_ring(1, cq_entries=2) as ring:

        async def receiver() -> None:
            try:
                await ring.recv(fd, bytearray(4))
            except trio.ClosedResourceError as exc:
                errors.append(exc)

        idle_scope = trio.CancelScope()

        async def idle_recv() -> None:
            with idle_scope:
                await ring.recv(idle, bytearray(1))

        with b, trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(idle_recv)
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(receiver)
                await trio.testing.wait_all_tasks_blocked()
                assert ring.statistics().pending == 1
                submitted = ring.statistics().submitted
                nursery.start_soon(ring.close_fd, fd)
                await trio.testing.wait_all_tasks_blocked()
                assert len(errors) == 1  # withdrawn at once, before the kernel saw it
                idle_scope.cancel()  # frees the kernel slot for the close itself
            # The idle recv's cancel and the close went in; the recv never did.
            assert ring.statistics().submitted == submitted + 1
    assert len(errors) == 1


async def test_an_op_that_completed_first_returns_its_result() -> None:
    a, b = socket.socketpair()
    fd = a.detach()
    ring = ouring.current_ring()
    got: list[bytes] = []

    async def receiver() -> None:
        buf, n = await ouring.recv(fd, bytearray(16))
        got.append(bytes(buf[:n]))

    with b, trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(receiver)
            await trio.testing.wait_all_tasks_blocked()
            b.send(b"first")
            wait_cqe_ready(ring)  # completed, not yet reaped
            await ouring.close(fd)
    assert got == [b"first"]


async def test_closing_a_socket_object_detaches_it_and_fails_its_ops() -> None:
    a, b = socket.socketpair()
    errors: list[BaseException] = []

    async def receiver() -> None:
        try:
            await ouring.recv(a, bytearray(4))
        except trio.ClosedResourceError as exc:
            errors.append(exc)

    with b, trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(receiver)
            await trio.testing.wait_all_tasks_blocked()
            await ouring.close(a)
    assert len(errors) == 1
    assert a.fileno() == -1
