"""Buffer leases: memory lent to the kernel is pinned until the final CQE,
memory the kernel writes into is lent exclusively, memory it only reads may be
shared, and every lease comes back: on success, on error and on cancellation.
First through the API against the real kernel, then ``Lease`` directly."""

from __future__ import annotations

import array
import errno
import gc
import mmap
import os
import socket
import struct
import weakref
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import trio
import trio.testing
from ouring._native import ffi

import ouring
from ouring._buffers import Lease
from ouring._ops import Read, RecvBytes


def inflight() -> int:
    return ouring.current_ring().statistics().inflight


async def park(nursery: trio.Nursery, call: Callable[[], Awaitable[Any]]) -> list[Any]:
    """Start ``call`` in a task of ``nursery`` and return once it is parked
    (its operation is in the kernel: the ring flushes before trio idles).
    The list gets the call's result, or the OSError it raised."""
    outcome: list[Any] = []

    async def run() -> None:
        try:
            outcome.append(await call())
        except OSError as exc:
            outcome.append(exc)

    before = inflight()
    nursery.start_soon(run)
    await trio.testing.wait_all_tasks_blocked()
    assert inflight() == before + 1, "the operation did not park"
    assert outcome == []
    return outcome


def fill(fd: int) -> int:
    """Write to a pipe or socket until the kernel takes no more; the byte count."""
    os.set_blocking(fd, False)
    total = 0
    try:
        while True:
            total += os.write(fd, bytes(65536))
    except BlockingIOError:
        return total
    finally:
        os.set_blocking(fd, True)


def drain(fd: int, count: int) -> bytes:
    """Read exactly ``count`` bytes that are already there."""
    chunks = []
    while count:
        chunk = os.read(fd, min(count, 65536))
        assert chunk
        chunks.append(chunk)
        count -= len(chunk)
    return b"".join(chunks)


def assert_empty(fd: int) -> None:
    os.set_blocking(fd, False)
    try:
        with pytest.raises(BlockingIOError):
            os.read(fd, 1)
    finally:
        os.set_blocking(fd, True)


@pytest.fixture
def other_pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    yield r, w
    os.close(r)
    os.close(w)


@dataclass
class Full:
    """A pipe and a socketpair whose write sides the kernel has no room on."""

    r: int
    w: int
    pipe_filled: int
    a: socket.socket  # the full side
    b: socket.socket
    sock_filled: int

    def make_room(self) -> None:
        """Read back what filled them: parked writes and sends then complete."""
        assert drain(self.r, self.pipe_filled) == bytes(self.pipe_filled)
        assert drain(self.b.fileno(), self.sock_filled) == bytes(self.sock_filled)


@pytest.fixture
def full(pipe: tuple[int, int], socketpair: tuple[socket.socket, socket.socket]) -> Full:
    r, w = pipe
    a, b = socketpair
    return Full(r, w, fill(w), a, b, fill(a.fileno()))


# -- pinning --------------------------------------------------------------------------


async def test_an_in_flight_read_pins_its_bytearray(pipe: tuple[int, int]) -> None:
    r, w = pipe
    buf = bytearray(8)
    async with trio.open_nursery() as nursery:
        outcome = await park(nursery, lambda: ouring.read(r, buf))
        with pytest.raises(BufferError):
            buf.extend(b"x")
        with pytest.raises(BufferError):
            buf.clear()
        with pytest.raises(BufferError):
            del buf[:4]
        assert buf == bytes(8)
        os.write(w, b"data")
    assert outcome == [(buf, 4)]
    assert outcome[0][0] is buf
    assert buf == b"data" + bytes(4)
    buf.extend(b"x")  # the completion gave it back
    assert len(buf) == 9


async def test_an_in_flight_write_pins_its_bytearray(full: Full) -> None:
    payload = bytearray(b"payload")
    async with trio.open_nursery() as nursery:
        outcome = await park(nursery, lambda: ouring.write(full.w, payload))
        with pytest.raises(BufferError):
            payload.extend(b"x")
        full.make_room()
    assert outcome == [(payload, 7)]
    payload.extend(b"x")
    assert drain(full.r, 7) == b"payload"


async def test_an_mmap_cannot_be_closed_while_lent(pipe: tuple[int, int]) -> None:
    r, w = pipe
    region = mmap.mmap(-1, mmap.PAGESIZE)
    async with trio.open_nursery() as nursery:
        outcome = await park(nursery, lambda: ouring.read(r, region))
        with pytest.raises(BufferError):
            region.close()
        assert not region.closed
        os.write(w, b"mapped")
    assert outcome == [(region, 6)]
    assert region[:6] == b"mapped"
    region.close()
    assert region.closed


# -- exclusive and shared leases --------------------------------------------------------

# A second operation on memory that a parked read (into view[4:12] of a
# 16-byte bytearray) is writing. ``o`` is another pipe with data to read and
# room to write, ``s`` a socket with data to receive: were the call allowed,
# it would complete at once instead of hanging the test.
Second = Callable[[bytearray, tuple[int, int], socket.socket], Awaitable[Any]]
OVERLAPPING: dict[str, Second] = {
    "read-same-slice": lambda buf, o, s: ouring.read(o[0], memoryview(buf)[4:12]),
    "read-whole": lambda buf, o, s: ouring.read(o[0], buf),
    "read-overlapping-start": lambda buf, o, s: ouring.read(o[0], memoryview(buf)[0:5]),
    "read-overlapping-end": lambda buf, o, s: ouring.read(o[0], memoryview(buf)[11:16]),
    "read-inside": lambda buf, o, s: ouring.read(o[0], memoryview(buf)[6:7]),
    "recv-whole": lambda buf, o, s: ouring.recv(s, buf),
    "readv-containing": lambda buf, o, s: ouring.readv(
        o[0], [bytearray(2), memoryview(buf)[10:13]]
    ),
    "write-whole": lambda buf, o, s: ouring.write(o[1], buf),
    "write-overlapping": lambda buf, o, s: ouring.write(o[1], memoryview(buf)[2:6]),
    "write-read-only-view": lambda buf, o, s: ouring.write(o[1], memoryview(buf).toreadonly()),
    "send-inside": lambda buf, o, s: ouring.send(s, memoryview(buf)[8:9]),
    "writev-containing": lambda buf, o, s: ouring.writev(o[1], [b"ok", memoryview(buf)[4:5]]),
}


@pytest.mark.parametrize("second", OVERLAPPING.values(), ids=OVERLAPPING.keys())
async def test_memory_an_in_flight_read_holds_cannot_be_lent_again(
    pipe: tuple[int, int],
    other_pipe: tuple[int, int],
    socketpair: tuple[socket.socket, socket.socket],
    second: Second,
) -> None:
    r, w = pipe
    a, b = socketpair
    os.write(other_pipe[1], bytes(16))
    b.sendall(bytes(16))
    buf = bytearray(b"ABCDEFGHIJKLMNOP")
    async with trio.open_nursery() as nursery:
        outcome = await park(nursery, lambda: ouring.read(r, memoryview(buf)[4:12]))
        with pytest.raises(ouring.BufferInUseError, match="lent to an in-flight operation"):
            await second(buf, other_pipe, a)
        assert inflight() == 1  # the refused call never reached the ring
        os.write(w, b"12345678")
    assert outcome[0][1] == 8
    assert buf == b"ABCD12345678MNOP"
    # the read completed: the same call is allowed now
    _, n = await second(buf, other_pipe, a)
    assert n > 0


def test_buffer_in_use_error_is_a_buffer_error() -> None:
    assert issubclass(ouring.BufferInUseError, BufferError)


async def test_non_overlapping_slices_can_be_read_into_concurrently(
    pipe: tuple[int, int],
    other_pipe: tuple[int, int],
    socketpair: tuple[socket.socket, socket.socket],
) -> None:
    buf = bytearray(12)
    view = memoryview(buf)
    async with trio.open_nursery() as nursery:
        first = await park(nursery, lambda: ouring.read(pipe[0], view[0:4]))
        second = await park(nursery, lambda: ouring.read(other_pipe[0], view[4:8]))
        third = await park(nursery, lambda: ouring.recv(socketpair[0], view[8:12]))
        # a zero-length slice overlaps nothing, even inside a lent range
        empty, n = await ouring.read(pipe[0], view[2:2])
        assert n == 0
        empty.release()
        os.write(other_pipe[1], b"efgh")
        os.write(pipe[1], b"abcd")
        socketpair[1].sendall(b"ijkl")
    assert [first[0][1], second[0][1], third[0][1]] == [4, 4, 4]
    assert buf == b"abcdefghijkl"
    for outcome in (first, second, third):
        outcome.pop()[0].release()  # the slices that came back
    view.release()
    buf.extend(b"!")


async def test_in_flight_writes_and_sends_may_share_one_bytes_object(full: Full) -> None:
    data = b"shared by four in-flight operations"
    async with trio.open_nursery() as nursery:
        outcomes = [
            await park(nursery, lambda: ouring.write(full.w, data)),
            await park(nursery, lambda: ouring.write(full.w, memoryview(data)[7:])),
            await park(nursery, lambda: ouring.send(full.a, data)),
            await park(nursery, lambda: ouring.send(full.a, data)),
        ]
        assert inflight() == 4
        full.make_room()
    assert [outcome[0][1] for outcome in outcomes] == [len(data), len(data) - 7] + [len(data)] * 2
    assert outcomes[0][0][0] is data
    assert drain(full.r, 2 * len(data) - 7) in (data + data[7:], data[7:] + data)
    assert drain(full.b.fileno(), 2 * len(data)) == data * 2


async def test_memory_an_in_flight_write_holds_can_be_read_not_written(
    full: Full, other_pipe: tuple[int, int]
) -> None:
    """A write lends memory the kernel only reads: other writes may share it,
    but nothing may write into it until the write completes."""
    payload = bytearray(b"kernel reads this")
    os.write(other_pipe[1], b"x" * 32)
    async with trio.open_nursery() as nursery:
        first = await park(nursery, lambda: ouring.write(full.w, payload))
        with pytest.raises(ouring.BufferInUseError):
            await ouring.read(other_pipe[0], payload)
        with pytest.raises(ouring.BufferInUseError):
            await ouring.recv(full.b, memoryview(payload)[16:])
        with pytest.raises(ouring.BufferInUseError):
            await ouring.readv(other_pipe[0], [bytearray(1), memoryview(payload)[:1]])
        assert inflight() == 1
        _, n = await ouring.write(other_pipe[1], memoryview(payload)[:6])  # shared: allowed
        assert n == 6
        full.make_room()
    assert first[0][1] == len(payload)
    assert drain(full.r, len(payload)) == b"kernel reads this"
    _, n = await ouring.read(other_pipe[0], payload)  # the write is done: writable again
    assert n == 17
    assert payload == b"x" * 17


async def test_one_vector_may_not_hold_one_buffer_twice_for_reading(
    pipe: tuple[int, int],
) -> None:
    r, w = pipe
    buf = bytearray(8)
    first = bytearray(4)
    with pytest.raises(ouring.BufferInUseError):
        await ouring.readv(r, [first, buf, memoryview(buf)[6:]])
    assert inflight() == 0
    first.extend(b"x")  # the leases taken before the refusal were given back
    buf.extend(b"x")
    data = b"twice"
    got, n = await ouring.writev(w, [data, data, memoryview(data)[1:3]])  # reading: fine
    assert n == 12
    assert got[0] is got[1] is data
    assert os.read(r, 100) == b"twicetwicewi"


async def test_a_lease_excludes_operations_of_every_ring(pipe: tuple[int, int]) -> None:
    """The registry is per process: another ring may not write into it either."""
    r, w = pipe
    buf = bytearray(4)
    async with ouring.open_ring(8) as ring, trio.open_nursery() as nursery:
        outcome: list[Any] = []

        async def on_own_ring() -> None:
            outcome.append(await ring.read(r, buf))

        nursery.start_soon(on_own_ring)
        await trio.testing.wait_all_tasks_blocked()
        assert ring.statistics().inflight == 1
        async with ouring.open_ring(8) as other:
            with pytest.raises(ouring.BufferInUseError):
                await other.read(r, buf)
        os.write(w, b"ring")
    assert outcome == [(buf, 4)]
    assert buf == b"ring"


# -- leases come back on errors and cancellation -------------------------------------


async def test_leases_come_back_on_error_completions(pipe: tuple[int, int]) -> None:
    r, w = pipe
    buf = bytearray(4)
    bufs = [bytearray(2), memoryview(buf)[2:]]
    with pytest.raises(OSError, match="Bad file descriptor") as info:
        await ouring.read(w, buf)  # the write end: EBADF from the kernel
    assert info.value.buffer is buf  # type: ignore[attr-defined]
    with pytest.raises(OSError, match="Bad file descriptor") as info:
        await ouring.readv(w, bufs)
    assert info.value.buffer is bufs  # type: ignore[attr-defined]
    bufs[1].release()
    buf.extend(b"x")
    bufs[0].extend(b"x")
    os.write(w, b"again")
    assert await ouring.read(r, buf) == (buf, 5)  # lendable again
    assert buf == b"again"


async def test_a_lease_comes_back_when_an_in_flight_send_fails(full: Full) -> None:
    payload = bytearray(b"never delivered")
    async with trio.open_nursery() as nursery:
        outcome = await park(nursery, lambda: ouring.send(full.a, payload))
        full.b.close()  # the peer goes away: the parked send fails
    [exc] = outcome
    assert isinstance(exc, BrokenPipeError)
    assert exc.buffer is payload  # type: ignore[attr-defined]
    payload.extend(b"!")
    assert inflight() == 0


async def test_a_lease_comes_back_when_an_in_flight_recv_is_reset() -> None:
    with socket.socket() as listener, socket.socket() as client:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client.connect(listener.getsockname())
        server, _ = listener.accept()
        buf = bytearray(16)
        async with trio.open_nursery() as nursery:
            outcome = await park(nursery, lambda: ouring.recv(client, buf))
            server.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            server.close()  # a reset
        [exc] = outcome
        assert isinstance(exc, ConnectionResetError)
        assert exc.buffer is buf  # type: ignore[attr-defined]
        buf.extend(b"!")


async def test_a_lease_comes_back_on_cancellation(pipe: tuple[int, int]) -> None:
    r, w = pipe
    buf = bytearray(b"untouched")
    before = ouring.current_ring().statistics()
    with trio.move_on_after(0.05) as scope:
        await ouring.read(r, buf)  # an idle pipe: only the deadline ends it
    assert scope.cancelled_caught
    assert buf == b"untouched"
    buf.extend(b"!")
    after = ouring.current_ring().statistics()
    assert after.cancelled == before.cancelled + 1
    assert after.inflight == 0
    os.write(w, b"later")
    assert await ouring.read(r, buf) == (buf, 5)  # lent again; the cancelled read took nothing
    assert buf == b"laterched!"


async def test_cancelled_vector_read_and_write_give_back_every_lease(
    full: Full, other_pipe: tuple[int, int]
) -> None:
    bufs = [bytearray(3), bytearray(5)]
    payload = bytearray(b"not written")
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            await park(nursery, lambda: ouring.readv(other_pipe[0], bufs))
            await park(nursery, lambda: ouring.write(full.w, payload))
            scope.cancel()
    assert scope.cancelled_caught
    assert inflight() == 0
    for buf in [*bufs, payload]:
        buf.extend(b"!")
    full.make_room()
    assert_empty(full.r)  # a write that raised Cancelled did not happen
    os.write(other_pipe[1], b"abcdefgh")
    assert await ouring.readv(other_pipe[0], bufs) == (bufs, 8)
    assert bufs == [b"abcd", b"efgh\0!"]


# -- Lease directly -------------------------------------------------------------------


@contextmanager
def leased(obj: Any, writable: bool) -> Iterator[Lease]:
    lease = Lease(obj, writable)
    try:
        yield lease
    finally:
        lease.release()


def address(obj: Any) -> int:
    with ffi.from_buffer(obj) as ptr:
        return int(ffi.cast("uintptr_t", ptr))


@pytest.mark.parametrize("writable", [True, False])
def test_lease_points_at_the_buffer(writable: bool) -> None:
    backing = bytearray(b"0123456789")
    view = memoryview(backing)[3:7]
    with leased(view, writable) as lease:
        assert lease.obj is view
        assert lease.length == 4
        assert ffi.buffer(ffi.cast("char *", lease.ptr), lease.length)[:] == b"3456"
        assert lease.ptr == address(backing) + 3
    values = array.array("i", [1, 2, 3])
    with leased(values, writable) as lease:
        assert lease.length == 3 * values.itemsize  # bytes, not items
    view.release()
    backing.extend(b"x")  # released: no export left


@pytest.mark.parametrize(
    "make",
    [bytearray, lambda: memoryview(bytearray(8))[4:4], lambda: array.array("b")],
    ids=["bytearray", "empty-slice", "array"],
)
def test_zero_length_buffers_are_lent_without_a_registry_entry(make: Callable[[], Any]) -> None:
    obj = make()
    with leased(obj, True) as first, leased(obj, True) as second:
        assert first.length == second.length == 0
    with leased(b"", False) as lease:
        assert lease.length == 0
    full = bytearray(8)
    with leased(full, True), leased(memoryview(full)[8:], True) as empty:
        assert empty.length == 0  # overlaps no byte of the lent range


def test_a_zero_length_bytearray_is_pinned_while_lent() -> None:
    buf = bytearray()
    with leased(buf, True), pytest.raises(BufferError):
        buf.extend(b"x")
    buf.extend(b"x")


@pytest.mark.parametrize(
    "make",
    [
        lambda: b"bytes",
        lambda: memoryview(bytearray(4)).toreadonly(),
        lambda: mmap.mmap(-1, mmap.PAGESIZE, access=mmap.ACCESS_READ),
        lambda: memoryview(bytearray(8)).toreadonly()[::2],  # read-only is what it reports
    ],
    ids=["bytes", "read-only-view", "read-only-mmap", "read-only-strided"],
)
def test_read_only_buffers_cannot_be_lent_for_writing(make: Callable[[], Any]) -> None:
    obj = make()
    with pytest.raises(TypeError, match="read-only"):
        Lease(obj, True)
    if isinstance(obj, mmap.mmap):
        obj.close()  # no export was left behind


def test_read_only_buffers_can_be_lent_for_reading() -> None:
    for obj in (b"bytes", memoryview(bytearray(4)).toreadonly()):
        with leased(obj, False) as lease:
            assert lease.length == len(obj)


@pytest.mark.parametrize("writable", [True, False])
@pytest.mark.parametrize(
    "make",
    [
        lambda: memoryview(bytearray(8))[::2],
        lambda: memoryview(bytearray(16)).cast("B", (4, 4))[::2],
    ],
    ids=["strided", "2d-strided"],
)
def test_non_contiguous_buffers_are_refused(make: Callable[[], Any], writable: bool) -> None:
    with pytest.raises(BufferError, match="C-contiguous"):
        Lease(make(), writable)


@pytest.mark.parametrize("writable", [True, False])
@pytest.mark.parametrize("obj", [None, 5, 1.5, "text", [1, 2], object()], ids=repr)
def test_non_buffers_are_refused(obj: Any, writable: bool) -> None:
    with pytest.raises(TypeError, match="buffer-protocol object is required"):
        Lease(obj, writable)


def test_a_contiguous_multidimensional_view_is_lent_whole() -> None:
    view = memoryview(bytearray(range(12))).cast("B", (3, 4))
    with leased(view, True) as lease:
        assert lease.length == 12
        assert ffi.buffer(ffi.cast("char *", lease.ptr), lease.length)[:] == bytes(range(12))


W, R = True, False  # writable: the kernel writes into it (read, recv, readv)
OVERLAP_RULES = [
    # (leases held, new lease, allowed)
    ([(0, 8, W)], (8, 16, W), True),  # adjacent
    ([(8, 16, W)], (0, 8, W), True),
    ([(0, 8, W)], (7, 9, W), False),
    ([(0, 8, W)], (0, 8, W), False),
    ([(0, 8, W)], (2, 4, R), False),
    ([(2, 4, R)], (0, 8, W), False),
    ([(0, 8, R)], (4, 12, R), True),  # shared reading
    ([(0, 8, R)], (8, 16, W), True),
    ([(0, 8, R)], (7, 16, W), False),
    ([(4, 12, W)], (0, 16, R), False),  # a superset
    ([(0, 16, R)], (5, 6, W), False),  # inside
    ([(0, 16, R), (10, 12, R)], (13, 14, W), False),  # inside the long one only
    ([(0, 2, R), (4, 6, R), (8, 10, R)], (2, 4, W), True),  # in a gap
    ([(0, 2, R), (4, 6, R), (8, 10, R)], (5, 9, W), False),
    ([(0, 2, W), (4, 6, W), (8, 10, W)], (6, 8, W), True),
    ([(0, 2, W), (4, 6, W), (8, 10, W)], (1, 5, R), False),
    ([(0, 2, W), (4, 6, W), (8, 10, W)], (10, 16, R), True),
]


@pytest.mark.parametrize(("held", "new", "allowed"), OVERLAP_RULES)
def test_overlap_rules(
    held: list[tuple[int, int, bool]], new: tuple[int, int, bool], allowed: bool
) -> None:
    buf = bytearray(16)
    view = memoryview(buf)
    with ExitStack() as stack:
        for start, end, writable in held:
            stack.enter_context(leased(view[start:end], writable))
        start, end, writable = new
        if allowed:
            stack.enter_context(leased(view[start:end], writable))
        else:
            with pytest.raises(ouring.BufferInUseError, match="memoryview"):
                Lease(view[start:end], writable)
    # every lease released: the whole buffer is lendable for writing again
    with leased(view, True):
        pass
    view.release()
    buf.extend(b"x")


def test_a_refused_lease_leaves_nothing_behind() -> None:
    buf = bytearray(8)
    first = Lease(buf, True)
    with pytest.raises(ouring.BufferInUseError, match="bytearray"):
        Lease(buf, True)
    with pytest.raises(ouring.BufferInUseError):
        Lease(buf, False)
    first.release()
    buf.extend(b"x")  # no export from the refused leases
    with leased(buf, True) as again:
        assert again.length == 9


def test_separate_buffers_never_conflict() -> None:
    one, two = bytearray(8), bytearray(8)
    with leased(one, True), leased(two, True), leased(bytes(8), False):
        pass


def _received(op: RecvBytes, data: bytes) -> None:
    """What the kernel does to a receive: write into its bytes, post the
    count; then the ring gives the bytes back (release)."""
    ffi.memmove(ffi.cast("char *", op.addr), data, len(data))
    op.res = len(data)
    op.release()


def test_a_receive_hands_out_its_new_bytes_cut_to_the_count() -> None:
    a, b = socket.socketpair()
    with a, b:
        op = RecvBytes(a, 64)
        assert op.length == 64
        assert len(op.buffer) == 64
        with pytest.raises(RuntimeError):
            op.result()  # still lent: the kernel may be writing
        _received(op, b"abc")
        assert op.result() == b"abc"
        assert op.buffer is None
        with pytest.raises(RuntimeError):
            op.result()  # handed out once


def test_a_receive_copies_when_someone_else_holds_its_bytes() -> None:
    a, b = socket.socketpair()
    with a, b:
        op = RecvBytes(a, 8)
        ffi.memmove(ffi.cast("char *", op.addr), b"12345678", 8)
        seen = op.buffer  # resizing in place would change this object
        _received(op, b"12")
        assert op.result() == b"12"
        assert seen == b"12345678"


@pytest.mark.parametrize("size", [0, -1, 0x7FFFF001])
def test_a_receive_refuses_sizes_one_receive_cannot_move(size: int) -> None:
    a, b = socket.socketpair()
    with a, b, pytest.raises(ValueError, match="size must be between 1 and"):
        RecvBytes(a, size)


def test_a_receive_checks_the_count() -> None:
    a, b = socket.socketpair()
    with a, b:
        op = RecvBytes(a, 4)
        op.release()
        op.res = 5
        with pytest.raises(ValueError, match="n must be between 0 and 4"):
            op.result()
        op.res = -errno.ECONNRESET  # a failed receive: its OSError, no bytes
        with pytest.raises(ConnectionResetError):
            op.result()
        op.res = 0
        assert op.result() == b""


class Weakrefable(bytearray):
    op: Any


def test_a_cycle_through_a_lease_is_collected() -> None:
    """A caller's object may refer back to the operation that holds it; the
    garbage collector must see through the lease (a C type) to free both."""
    r, w = os.pipe()
    try:
        buf = Weakrefable(8)
        op = Read(r, buf)
        buf.op = op  # buf -> op -> lease -> buf; never submitted
        ref = weakref.ref(buf)
        del buf, op
        gc.collect()
        assert ref() is None, "the cycle through the lease was never freed"
    finally:
        os.close(r)
        os.close(w)
