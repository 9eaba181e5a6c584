"""Issue 4 for the files-and-streams objects: ``ouring.open_file`` /
``AsyncFile``, ``ouring.Path``, and the streams (``ouring.trio``'s
``SocketStream`` / ``SocketListener`` under trio, asyncio's own
``StreamReader`` over ``ouring.asyncio``'s transport under asyncio).
Scenarios 1, 3, 4, 5, 9 and 12 again, through the objects a user holds rather
than the module-level operations: the objects must keep the core's promises
(buffers owned until the CQE, nothing lost to a cancel, no fd leaked, a closed
object's operations end with ClosedResourceError).

The file and path tests take the ``executor`` fixture (trio, asyncio, uvloop)
and use anyio for scopes and task groups. Tests of ``ouring.trio``'s stream
and listener objects stay trio-only: asyncio has no such objects (its
streams hand out no owned buffers, and a server accepts in a task of its
own); the asyncio side of the same promises is the stream fuzz below (through
an adapter) and tests/test_asyncio_streams.py."""

from __future__ import annotations

import contextlib
import gc
import os
import random
import socket
import sys
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import trio
import trio.testing
from conftest import run_under

import ouring
from ouring import _sync
from ouring._current import current_library
from ouring.trio import SocketListener, SocketStream

from ._helpers import (
    Buffer,
    all_ops_completed,
    drop_in_own_task,
    drop_on_cancel,
    fd_count,
    is_lent,
    wait_cqe_ready,
    wait_parked,
)
from .test_races import connected, pattern, stream_from_another_process


def inflight() -> int:
    return ouring.current_ring().statistics().inflight


def closed_resource_error() -> type[Exception]:
    """What a call ended by the object's close raises under the running
    library (``_sync.closed_error``)."""
    return trio.ClosedResourceError if current_library() == "trio" else _sync.ClosedResourceError


@contextlib.contextmanager
def listening_socket(backlog: int = 64) -> Iterator[socket.socket]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(backlog)
    with sock:
        yield sock


@contextlib.contextmanager
def accept_path(multishot: bool) -> Iterator[None]:
    """Listeners of this block accept through one multishot accept per
    listener (``multishot``), or through one accept operation per call."""
    ring = ouring.current_ring()
    has = ring.features()["multishot_accept"]
    if multishot and not has:
        pytest.skip("this ring has no multishot accept")
    if has and not multishot:
        ring._features["multishot_accept"] = False
    try:
        yield
    finally:
        if has:
            ring._features["multishot_accept"] = True


ACCEPT_PATHS = pytest.mark.parametrize("multishot", [True, False], ids=["multishot", "oneshot"])


# -- 1. a cancelled read keeps its buffer until the CQE ------------------------------


async def owned_buffer_survives_a_dropped_call(
    call: Callable[[Buffer], Awaitable[object]], drop: Any = drop_on_cancel
) -> weakref.ref[Buffer]:
    """``call(buf)`` parks in the kernel; its task is cancelled and the
    coroutine dropped, and the caller keeps no reference to ``buf``. Until
    the CQE the ring keeps it alive and pinned; after it, nothing does."""
    ring = ouring.current_ring()

    async def caller(buf: Buffer) -> None:
        await drop(call(buf))

    buf = Buffer(b"untouched")
    ref = weakref.ref(buf)
    start = ring.statistics().submitted
    async with anyio.create_task_group() as nursery:
        nursery.start_soon(caller, buf)
        del buf
        await wait_parked(ring, start + 1)
        assert ring.statistics().inflight == 1
        # Under trio the coroutine is closed right here (drop_on_cancel's
        # abort function); under asyncio when the task next runs.
        nursery.cancel_scope.cancel()
        gc.collect()
        alive = ref()
        assert alive is not None, "freed while the kernel owns it"
        assert is_lent(alive)
        with pytest.raises(BufferError):
            alive.extend(b"more")  # resizing a lent buffer raises
        assert alive == b"untouched"
        del alive
    await all_ops_completed()
    # Under asyncio a pipe file's call runs in a task of its own, which ends
    # (cancelled) when the CQE wakes it; the done-callback that ending
    # queues holds that task, whose exception's traceback holds the frames
    # that held the buffer, until the loop's next iteration runs it.
    await anyio.lowlevel.checkpoint()
    gc.collect()
    assert ref() is None, "kept after its CQE"
    return ref


@pytest.mark.parametrize("buffering", [0, -1], ids=["raw", "buffered"])
async def test_async_file_read_into_keeps_its_buffer_until_the_cqe(
    executor: str, pipe: tuple[int, int], buffering: int
) -> None:
    r, w = pipe
    async with await ouring.open_file(r, "rb", buffering=buffering, closefd=False) as f:
        await owned_buffer_survives_a_dropped_call(f.read_into, drop_in_own_task)
        await owned_buffer_survives_a_dropped_call(lambda buf: f.read_at(buf, 0))
        os.write(w, b"next")
        assert await f.read(4) == b"next"  # the dropped read consumed nothing


# ouring.trio's SocketStream (owned-buffer receive_into): trio only.
async def test_stream_receive_into_keeps_its_buffer_until_the_cqe() -> None:
    a, b = socket.socketpair()
    with b:
        async with SocketStream(a) as stream:
            await owned_buffer_survives_a_dropped_call(stream.receive_into)
            b.send(b"next")
            assert await stream.receive_some() == b"next"


async def test_cancelled_stream_receive_into_is_pinned_until_its_cqe() -> None:
    """A plain trio cancel (no dropped coroutine): the task stays parked
    until the CQE, and the buffer is lent until then, untouched after."""
    a, b = socket.socketpair()
    buf = bytearray(b"untouched")
    lent_at_cancel: list[bool] = []
    with b:
        async with SocketStream(a) as stream:
            scope = trio.CancelScope()

            async def receiver() -> None:
                with scope:
                    await stream.receive_into(buf)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(receiver)
                await trio.testing.wait_all_tasks_blocked()
                scope.cancel()
                lent_at_cancel.append(is_lent(buf))
            assert lent_at_cancel == [True]
            assert scope.cancelled_caught
            assert buf == b"untouched"
            assert not is_lent(buf)
            b.send(b"kept")
            assert await stream.receive_some() == b"kept"


# -- 3. data-loss fuzz through the objects ---------------------------------------------


async def fuzz_receive(
    receive: Callable[[int], Awaitable[bytes]],
    feed: Callable[[], Coroutine[Any, Any, None]],
    seed: int,
) -> tuple[bytes, int, int]:
    """``receive(max_bytes)`` in a loop until it returns b"", each call under a
    random tiny deadline, another task cancelling its scope at random; a call
    that returns is consumed. Returns (bytes, rounds, returns that won the
    race against a cancel)."""
    rng = random.Random(seed)
    chaos = random.Random(seed + 1)
    received = bytearray()
    rounds = won = 0
    current: list[anyio.CancelScope] = []

    async def canceller() -> None:
        while True:
            await anyio.sleep(chaos.choice([0, 0, 1e-5, 1e-4, 5e-4]))
            if current:
                current[-1].cancel()

    with anyio.fail_after(60):
        async with anyio.create_task_group() as nursery:
            nursery.start_soon(feed)
            nursery.start_soon(canceller)
            done = False
            while not done:
                rounds += 1
                deadline = rng.choice([0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1])
                with anyio.move_on_after(deadline) as scope:
                    current.append(scope)
                    chunk = await receive(rng.randrange(1, 256))
                    done = not chunk
                    received += chunk
                    won += scope.cancel_called
                current.pop()
            nursery.cancel_scope.cancel()
    return bytes(received), rounds, won


def first_difference(got: bytes, want: bytes) -> str:
    at = next(
        (i for i, (x, y) in enumerate(zip(got, want, strict=False)) if x != y),
        min(len(got), len(want)),
    )
    return f"differs at byte {at} (received {len(got)} of {len(want)})"


@contextlib.asynccontextmanager
async def receiving_stream(sock: socket.socket) -> AsyncIterator[Callable[[int], Awaitable[bytes]]]:
    """``receive(max_bytes)`` on the running library's stream over ``sock``:
    ``ouring.trio.SocketStream.receive_some`` under trio; under asyncio,
    asyncio's own ``StreamReader.read`` over ``ouring.asyncio``'s transport
    (the ring's multishot receive feeds it; a cancelled read leaves what
    arrived in the reader's buffer)."""
    if current_library() == "trio":
        async with SocketStream(sock) as stream:
            yield stream.receive_some
        return
    import ouring.asyncio

    reader, writer = await ouring.asyncio.open_connection(sock=sock)
    try:
        yield reader.read
    finally:
        writer.close()
        await writer.wait_closed()


@pytest.mark.parametrize("transport", ["tcp", "socketpair"])
async def test_stream_receive_loses_no_byte_under_random_cancels(
    executor: str, transport: str
) -> None:
    size = 768 << 10
    with connected(transport) as (sender, receiver):
        async with receiving_stream(receiver) as receive:
            got, rounds, won = await fuzz_receive(
                receive,
                lambda: stream_from_another_process(sender, size, seed=7),
                seed=5,
            )
    assert got == pattern(size), first_difference(got, pattern(size))
    assert rounds > 1000
    assert won > 0  # chunks that won the race against a cancel were returned
    await all_ops_completed()  # (the asyncio transport's close ends its receive)
    assert inflight() == 0


# A writer process for pipes: random chunks, random gaps, then EOF.
_PIPE_WRITER = """
import os, random, sys, time
fd, size, seed = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
data = b"".join(i.to_bytes(4, "big") for i in range(size // 4))
rng = random.Random(seed)
view = memoryview(data)
while view:
    n = os.write(fd, view[: rng.randrange(1, 3000)])
    view = view[n:]
    time.sleep(rng.choice([0, 0, 0, 2e-5, 1e-4]))
"""


@pytest.mark.parametrize("buffering", [0, -1], ids=["raw", "buffered"])
async def test_async_file_read_from_a_pipe_loses_no_byte_under_random_cancels(
    executor: str, buffering: int
) -> None:
    """A read cancelled after it collected bytes gives them back (the file's
    push-back buffer); one that completed despite the cancel returns them."""
    size = 256 << 10
    r, w = os.pipe()
    try:
        proc = await anyio.open_process(
            [sys.executable, "-c", _PIPE_WRITER, str(w), str(size), "9"], pass_fds=(w,)
        )
    finally:
        os.close(w)  # the writer's copy is the only one: EOF when it exits

    async def feed() -> None:
        await proc.wait()

    try:
        async with await ouring.open_file(r, "rb", buffering=buffering) as f:
            got, rounds, _ = await fuzz_receive(f.read, feed, seed=buffering + 11)
    finally:
        with contextlib.suppress(ProcessLookupError):  # (asyncio's, once it exited)
            proc.kill()
        await proc.aclose()
    assert got == pattern(size), first_difference(got, pattern(size))
    assert rounds > 500
    assert inflight() == 0


# -- 4. a cancelled accept or open: delivered or closed, never leaked ------------------


# ouring.trio's SocketListener: trio only (under asyncio a server accepts in
# its own task; test_asyncio_streams.py cancels connects and accepts there).
@ACCEPT_PATHS
async def test_cancelled_listener_accepts_leak_no_fd(multishot: bool) -> None:
    rng = random.Random(4)
    ring = ouring.current_ring()
    rounds = 1000
    with accept_path(multishot), listening_socket(rounds + 8) as sock:
        address = sock.getsockname()
        listener = SocketListener(sock)
        before = fd_count()
        delivered = 0
        clients: list[socket.socket] = []
        for _ in range(rounds):
            scope = trio.CancelScope()
            streams: list[SocketStream] = []

            async def acceptor(scope: trio.CancelScope, streams: list[SocketStream]) -> None:
                with scope:
                    streams.append(await listener.accept())  # received, cancel or not
                    await trio.lowlevel.checkpoint()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(acceptor, scope, streams)
                await trio.testing.wait_all_tasks_blocked()
                clients.append(socket.create_connection(address))
                how = rng.randrange(3)
                if how == 1:
                    wait_cqe_ready(ring)  # the accept completed before the cancel
                elif how == 2:
                    await trio.lowlevel.checkpoint()
                scope.cancel()
            for stream in streams:
                await stream.aclose()
                delivered += 1
        # Connections no accept took are still there, for the next accepts:
        # queued by the multishot accept, or in the kernel's backlog.
        queued = 0
        while delivered + queued < rounds:
            with trio.fail_after(10):  # a lost connection would leave this waiting
                stream = await listener.accept()
            await stream.aclose()
            queued += 1
        for client in clients:
            client.close()
        assert delivered > 0
        assert fd_count() == before
        await listener.aclose()
    await all_ops_completed()


async def test_cancelled_open_file_and_path_io_leak_no_fd(executor: str, tmp_path: Path) -> None:
    """open_file (O_CREAT: io-wq, so cancels race it for real) and the Path
    methods that open and close an fd, under random tiny deadlines."""
    rng = random.Random(4)
    ring = ouring.current_ring()
    before = fd_count()
    finished = 0

    async def user(i: int) -> None:
        nonlocal finished
        path = tmp_path / f"f{i % 13}"
        with anyio.move_on_after(rng.choice([0, 1e-6, 1e-5, 1e-4, 1e-3])):
            kind = i % 3
            if kind == 0:
                f = await ouring.open_file(path, "ab")
                await f.aclose()  # closes even when cancelled
            elif kind == 1:
                await ouring.Path(path).write_bytes(b"data")
            else:
                async with await ouring.Path(path).open("a") as text:
                    await text.write("x")
            finished += 1

    for r in range(125):
        start = ring.statistics().submitted
        async with anyio.create_task_group() as nursery:
            for j in range(8):
                nursery.start_soon(user, r * 8 + j)
            if rng.randrange(2):
                await wait_parked(ring, start + 8)
            nursery.cancel_scope.cancel()
    await all_ops_completed()
    assert ring.statistics().inflight == 0
    assert fd_count() == before
    assert finished > 0


# -- 5. a coroutine closed while parked in an object's method --------------------------


async def close_parked_coroutines(
    call: Callable[[], Awaitable[object]], rounds: int = 20, drop: Any = drop_on_cancel
) -> list[BaseException]:
    """Run ``call()`` until it parks in the kernel, then close its coroutine
    (``drop_on_cancel``); returns what came out of the caller each time."""
    ring = ouring.current_ring()
    outcomes: list[BaseException] = []

    async def caller() -> None:
        try:
            await drop(call())
        except BaseException as exc:
            outcomes.append(exc)
            raise

    for _ in range(rounds):
        start = ring.statistics().submitted
        async with anyio.create_task_group() as nursery:
            nursery.start_soon(caller)
            await wait_parked(ring, start + 1)
            assert ring.statistics().inflight == 1
            nursery.cancel_scope.cancel()
        await all_ops_completed()
        assert ring.statistics().inflight == 0
    return outcomes


def only_cancelled(outcomes: list[BaseException], rounds: int = 20) -> None:
    """Nothing escaped the closed coroutines but the running library's own
    cancellation."""
    assert len(outcomes) == rounds
    cancelled = anyio.get_cancelled_exc_class()
    bad = [e for e in outcomes if not isinstance(e, cancelled)]
    assert not bad, f"escaped coro.close(): {bad[0]!r}"


async def test_closed_receive_some_no_escape_no_armed_recv() -> None:
    a, b = socket.socketpair()
    with b:
        async with SocketStream(a) as stream:
            only_cancelled(await close_parked_coroutines(stream.receive_some))
            b.send(b"kept")
            assert await stream.receive_some() == b"kept"  # no abandoned recv ate it


@pytest.mark.parametrize("buffering", [0, -1], ids=["raw", "buffered"])
async def test_closed_async_file_read_no_escape_no_armed_read(
    executor: str, pipe: tuple[int, int], buffering: int
) -> None:
    """Under asyncio a read of a pipe-like file runs in a task of its own
    (``_sync._AsyncioScope``, so that ``aclose`` can end it); closing the
    caller's coroutine must end that task too. It did not: the task stayed
    parked in the kernel's read, holding the file's lock, so the read stayed
    in flight (``all_ops_completed`` fails) and an ``aclose`` waited for the
    lock forever (shielded: no deadline ends it). Hence no ``async with``
    here: the test fails rather than hangs."""
    r, w = pipe
    f = await ouring.open_file(r, "rb", buffering=buffering, closefd=False)
    only_cancelled(await close_parked_coroutines(lambda: f.read(10), drop=drop_in_own_task))
    only_cancelled(await close_parked_coroutines(lambda: f.read_at(bytearray(10), 0)))
    os.write(w, b"kept")
    with anyio.fail_after(5):
        assert await f.read(4) == b"kept"  # no abandoned read ate it
        await f.aclose()


@ACCEPT_PATHS
async def test_closed_listener_accept_closes_a_completed_connection(multishot: bool) -> None:
    """An accept whose coroutine is closed after the kernel accepted: with
    one accept operation per call, the ring closes the connection nobody
    will receive; with a multishot accept the connection was never the
    closed call's: it stays queued, and the next accept gets it."""
    ring = ouring.current_ring()
    with accept_path(multishot), listening_socket() as sock:
        listener = SocketListener(sock)
        before = fd_count()
        outcomes: list[BaseException] = []

        async def acceptor() -> None:
            try:
                await drop_on_cancel(listener.accept())
            except BaseException as exc:
                outcomes.append(exc)
                raise

        for _ in range(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(acceptor)
                await trio.testing.wait_all_tasks_blocked()
                client = socket.create_connection(sock.getsockname())
                wait_cqe_ready(ring)  # the accept completed; nobody reaped it yet
                nursery.cancel_scope.cancel()  # closed before it got the connection
            if multishot:
                with trio.fail_after(5):
                    stream = await listener.accept()
                await stream.send_all(b"!")
                await stream.aclose()
                client.settimeout(5)
                assert client.recv(2) == b"!"  # the very connection, handed to the next accept
            else:
                await all_ops_completed()
            client.settimeout(5)
            assert client.recv(1) == b""  # closed: by the ring, or after its delivery
            client.close()
        only_cancelled(outcomes)
        assert fd_count() == before
        await listener.aclose()
        await all_ops_completed()
        assert ring.statistics().inflight == 0


# -- 9. closing an object while a task is blocked in it ---------------------------------


async def blocked_then_closed(
    blocked: Callable[[], Awaitable[object]], aclose: Callable[[], Awaitable[None]]
) -> None:
    """A task blocks in ``blocked()`` (in the kernel); ``aclose()`` must end
    it with ClosedResourceError, leaving no operation in flight."""
    outcome: list[object] = []
    closed = closed_resource_error()
    ring = ouring.current_ring()
    start = ring.statistics().submitted

    async def task() -> None:
        try:
            outcome.append(await blocked())
        except closed as exc:
            outcome.append(exc)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as nursery:
            nursery.start_soon(task)
            await wait_parked(ring, start + 1)
            assert inflight() == 1
            await aclose()
    assert len(outcome) == 1
    assert isinstance(outcome[0], closed), outcome[0]
    assert inflight() == 0  # the old operation is over: it can read for nobody


# ouring.trio's SocketStream and SocketListener: trio only.
async def test_aclose_of_a_stream_and_a_reused_fd_number() -> None:
    a, b = socket.socketpair()
    stream = SocketStream(a)
    old_fd = a.fileno()
    with b:
        await blocked_then_closed(stream.receive_some, stream.aclose)
        c, d = socket.socketpair()
        with c, d:
            assert c.fileno() == old_fd
            with pytest.raises(BrokenPipeError):
                b.send(b"OLD")  # the old socket is gone, not just its fd
            d.send(b"NEW")
            async with SocketStream(c) as new:
                assert await new.receive_some() == b"NEW"
        with pytest.raises(trio.ClosedResourceError):
            await stream.receive_some()


async def test_aclose_of_a_listener_and_a_reused_fd_number() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    address = sock.getsockname()
    listener = SocketListener(sock)
    old_fd = sock.fileno()
    await blocked_then_closed(listener.accept, listener.aclose)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address).close()  # nothing listens there any more
    with listening_socket() as new_sock:
        assert new_sock.fileno() == old_fd
        async with SocketListener(new_sock) as new:
            with socket.create_connection(new_sock.getsockname()) as client:
                client.send(b"NEW")
                async with await new.accept() as conn:
                    assert await conn.receive_some() == b"NEW"
    with pytest.raises(trio.ClosedResourceError):
        await listener.accept()


@pytest.mark.parametrize("buffering", [0, -1], ids=["raw", "buffered"])
async def test_aclose_of_an_async_file_and_a_reused_fd_number(
    executor: str, buffering: int
) -> None:
    r, w = os.pipe()
    f = await ouring.open_file(r, "rb", buffering=buffering)
    try:
        await blocked_then_closed(lambda: f.read(4), f.aclose)
        with pytest.raises(BrokenPipeError):
            os.write(w, b"OLD")  # the old pipe's read end is gone, not just its fd
        r2, w2 = os.pipe()
        try:
            assert r2 == r
            os.write(w2, b"NEW")
            async with await ouring.open_file(r2, "rb", buffering=buffering) as new:
                assert await new.read(3) == b"NEW"
        finally:
            os.close(w2)
        with pytest.raises(ValueError, match="closed file"):
            await f.read(1)
    finally:
        os.close(w)


# -- 12. objects used outside a run, from another thread, after their run -------------


def test_objects_outside_any_run_give_a_clear_error(tmp_path: Path) -> None:
    """Awaited with no trio run and no asyncio loop: RuntimeError, and
    nothing acquired (no buffer lent, no fd opened)."""
    a, b = socket.socketpair()
    stream = SocketStream(a)
    buf = bytearray(4)
    before = fd_count()
    calls: list[Callable[[], Any]] = [
        lambda: stream.receive_into(buf),
        lambda: stream.receive_some(4),
        lambda: stream.send_all(b"x"),
        lambda: ouring.open_file(tmp_path / "new", "wb"),
        lambda: ouring.Path(tmp_path / "new").write_bytes(b"x"),
    ]
    with b:
        for call in calls:
            coro = call()
            with pytest.raises(RuntimeError, match=r"trio\.run or a running asyncio loop"):
                coro.send(None)
            assert not is_lent(buf)
        assert fd_count() == before
        assert not (tmp_path / "new").exists()
        a.close()


def test_objects_in_a_run_in_another_thread_get_a_clear_error(
    executor: str, pipe: tuple[int, int]
) -> None:
    """A thread inherits the context of an ``open_ring`` (``to_thread``
    copies it): using an object there, in a run of its own, reaches that
    ring, which refuses another thread, clearly, without hanging or lending
    the buffer. (The stream is ouring.trio's: under trio only.)"""
    r, w = pipe
    buf = bytearray(4)
    a, b = socket.socketpair()

    async def main() -> None:
        async with ouring.open_ring(8), await ouring.open_file(r, "rb", closefd=False) as f:
            calls: list[Callable[[], Awaitable[object]]] = [lambda: f.read_into(buf)]
            stream = SocketStream(a) if executor == "trio" else None
            if stream is not None:
                calls.append(lambda: stream.receive_into(buf))

            def other() -> list[BaseException]:
                caught: list[BaseException] = []
                for call in calls:

                    async def use(call: Callable[[], Awaitable[object]] = call) -> None:
                        await call()

                    try:
                        run_under(executor, use)
                    except BaseException as exc:  # noqa: BLE001 - handed to the test
                        caught.append(exc)
                return caught

            caught = await anyio.to_thread.run_sync(other)
            assert len(caught) == len(calls)
            for exc in caught:
                assert isinstance(exc, ouring.RingClosedError), exc
                assert "another thread" in str(exc)
            assert not is_lent(buf)
            os.write(w, b"ok")
            assert await f.read(2) == b"ok"  # the file still works in its own thread
            if stream is not None:
                await stream.aclose()

    with a, b:
        run_under(executor, main)


def test_objects_outlive_the_run_that_made_them(executor: str, pipe: tuple[int, int]) -> None:
    """A file (and under trio a stream) does not belong to a ring: after its
    run ended (and its ring closed), a new run uses its own ring; an object
    whose ``open_ring`` has closed uses the run's (the loop's) ring. Nothing
    hangs."""
    r, w = pipe
    a, b = socket.socketpair()
    objects: dict[str, Any] = {}

    async def first() -> None:
        async with ouring.open_ring(8) as ring:
            if executor == "trio":
                objects["stream"] = SocketStream(a)
            objects["file"] = await ouring.open_file(r, "rb", buffering=0, closefd=False)
            objects["ring"] = ring
        assert objects["ring"].closed
        os.write(w, b"1")
        assert await objects["file"].read(1) == b"1"  # on the run's ring now
        if executor == "trio":
            b.send(b"1")
            assert await objects["stream"].receive_some() == b"1"

    async def second() -> None:
        with anyio.fail_after(5):
            os.write(w, b"3")
            assert await objects["file"].read(1) == b"3"
            await objects["file"].aclose()
            if executor == "trio":
                b.send(b"2")
                assert await objects["stream"].receive_some() == b"2"
                await objects["stream"].aclose()

    with a, b:
        run_under(executor, first)
        run_under(executor, second)
