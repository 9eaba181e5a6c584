"""The fallback when io_uring is unavailable (``ouring._fallback``).

io_uring is made unavailable for real: a subprocess installs a seccomp filter
(``seccomp_helper.py``, what Docker's default profile does) before it imports
ouring. The in-process tests force the thread ring with
``fallback="always-threads"`` and check that ownership and cancellation keep
the io_uring path's rules.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import json
import os
import socket
import subprocess
import sys
import weakref
from pathlib import Path
from typing import Any

import outcome
import pytest
import trio
import trio.testing
from conftest import run_under
from safety._helpers import is_lent, wait_parked

import ouring
from ouring._errors import FdClosedError
from ouring._fallback import ThreadRing, _leaked_forever, fallback_mode, make_ring
from ouring._ops import OpenAt

HERE = Path(__file__).resolve().parent
SECCOMP = HERE / "seccomp_helper.py"
ROOT = HERE.parent


class Buffer(bytearray):
    """A bytearray that can be weakly referenced (a plain one cannot)."""


def open_fds() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/fd")}


def run_python(
    program: str, *, block: str | None = None, env: dict[str, str] | None = None, timeout: int = 60
) -> subprocess.CompletedProcess[str]:
    """``python -c program``; with ``block``, under a seccomp filter that
    answers the io_uring syscalls with that errno."""
    command = [sys.executable, "-c", program]
    if block is not None:
        command = [sys.executable, str(SECCOMP), block, "--", *command]
    full_env = {k: v for k, v in os.environ.items() if k != "OURING_FALLBACK"}
    full_env.update(env or {})
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, env=full_env, cwd=ROOT
    )


def io_uring_disabled() -> str:
    try:
        return Path("/proc/sys/kernel/io_uring_disabled").read_text().strip()
    except OSError:
        return "0"


# -- io_uring unavailable: UnsupportedError, with the cause and the fix ------------------

REFUSED = """
import errno, os, trio, ouring
import tests.seccomp_helper as helper
print("SETUP", errno.errorcode[helper.io_uring_setup_errno()])
try:
    ouring.Ring()
except ouring.UnsupportedError as exc:
    print("RING", errno.errorcode[exc.errno], exc.strerror)
async def main():
    r, w = os.pipe()
    try:
        await ouring.read(r, bytearray(1))
    except ouring.UnsupportedError as exc:
        print("TRIO", errno.errorcode[exc.errno], exc.strerror)
trio.run(main)
"""


@pytest.mark.parametrize("code", ["EPERM", "ENOSYS"])
def test_blocked_io_uring_raises_unsupported_error_naming_cause_and_fix(code: str) -> None:
    done = run_python(REFUSED, block=code)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"SETUP {code}"  # the filter is in place
    assert [line.split()[:2] for line in lines[1:]] == [["RING", code], ["TRIO", code]]
    for line in lines[1:]:
        message = line.split(" ", 2)[2]
        assert message.startswith("io_uring is unavailable: ")
        assert "fix: " in message
        assert "OURING_FALLBACK=threads" in message
        if code == "ENOSYS":
            assert "Linux 5.6" in message
            assert "seccomp" in message
        elif io_uring_disabled() in ("1", "2"):
            assert "kernel.io_uring_disabled" in message
        else:
            assert "seccomp" in message
            assert "Docker" in message
            assert "--security-opt seccomp=" in message


def test_unsupported_error_for_a_low_memlock_limit_names_it() -> None:
    from ouring._errors import setup_error

    exc = setup_error(-errno.ENOMEM)
    assert isinstance(exc, ouring.UnsupportedError)
    assert "RLIMIT_MEMLOCK" in str(exc)
    assert "ulimit -l" in str(exc)
    assert "OURING_FALLBACK=threads" in str(exc)


# -- io_uring unavailable, OURING_FALLBACK=threads: the same program, the same results ----

PROGRAM = """
import functools, json, os, socket, sys, tempfile
import trio, trio.testing
import ouring, ouring.trio

async def main(tmp):
    out = {}
    ring = ouring.current_ring()
    kind = type(ring).__name__
    path = os.path.join(tmp, "f")
    fd = await ouring.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    _, n = await ouring.write(fd, b"hello world", 0)
    buf, m = await ouring.read(fd, bytearray(5), 6)
    bufs, k = await ouring.readv(fd, [bytearray(5), bytearray(6)], 0)
    _, w = await ouring.writev(fd, [b"HELLO", b"!"], 0)
    await ouring.fsync(fd)
    await ouring.fallocate(fd, 0, 4096)
    await ouring.ftruncate(fd, 100)
    st = await ouring.stat(fd)
    await ouring.close(fd)
    out["fd"] = [n, m, buf.decode(), k, [b.decode() for b in bufs], w, st.st_size]
    fd, (r, w) = os.open(path, os.O_RDONLY), os.pipe()
    a, b = socket.socketpair()
    with a, b:
        spliced = await ouring.splice(fd, 0, w, -1, 5)
        sent = await ouring.sendfile(a, fd, 6, 5)
        out["splice"] = [spliced, os.read(r, 5).decode(), sent, b.recv(5).decode()]
    for each in (fd, r, w):
        os.close(each)
    try:
        await ouring.open(os.path.join(tmp, "missing"))
    except FileNotFoundError as exc:
        out["missing"] = [exc.errno, os.path.basename(exc.filename)]

    async with await ouring.open_file(os.path.join(tmp, "t.txt"), "w+") as f:
        await f.write("line one\\nline two\\n")
        await f.seek(0)
        out["open_file"] = [await f.readline(), await f.read(), await f.tell()]

    p = ouring.Path(tmp) / "g.txt"
    await p.write_text("via Path")
    await (ouring.Path(tmp) / "d").mkdir()
    await p.rename(ouring.Path(tmp) / "d" / "h.txt")
    q = ouring.Path(tmp) / "d" / "h.txt"
    out["path"] = [await q.read_text(), await p.exists(), (await q.stat()).st_size]
    await q.unlink()
    await (ouring.Path(tmp) / "d").rmdir()
    out["listing"] = sorted(os.listdir(tmp))

    a, b = socket.socketpair()
    with a, b:
        got = []
        async def receiver():
            got.append(await ouring.recv(a, bytearray(16)))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(receiver)
            await trio.testing.wait_all_tasks_blocked()
            _, sent = await ouring.send(b, b"ping")
        out["socketpair"] = [sent, got[0][0][: got[0][1]].decode()]
        await ouring.shutdown(b, socket.SHUT_WR)
        out["eof"] = (await ouring.recv(a, bytearray(4)))[1]

    with socket.socket() as lst:
        lst.bind(("127.0.0.1", 0))
        lst.listen(1)
        c = socket.create_connection(lst.getsockname())
        s, _ = lst.accept()
    with c, s:
        _, zc = await ouring.send_zc(c, b"z" * 100000)  # a plain send on the fallback
        got = b""
        while len(got) < zc:
            got += s.recv(1 << 20)
        out["send_zc"] = [zc, got == b"z" * zc]

    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with rx, tx:
        rx.bind(("127.0.0.1", 0))
        rx.setsockopt(socket.IPPROTO_IP, socket.IP_RECVTOS, 1)
        _, sent = await ouring.sendmsg(tx, [b"data", b"gram"], (), 0, rx.getsockname())
        bufs, got, ancdata, msg_flags, address = await ouring.recvmsg(
            rx, [bytearray(3), bytearray(3)], socket.CMSG_SPACE(1)
        )
        out["msg"] = [sent, got, [b.decode() for b in bufs], [list(a[:2]) + [a[2].hex()]
                      for a in ancdata], msg_flags, address == tx.getsockname()]

    async def echo(stream):
        async for chunk in stream:
            await stream.send_all(chunk)

    payload = bytes(range(256)) * 4096
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(ouring.trio.serve_tcp, echo, 0, host="127.0.0.1")
        )
        port = listeners[0].socket.getsockname()[1]
        async with await ouring.trio.open_tcp_stream("127.0.0.1", port) as stream:
            async def send():
                await stream.send_all(payload)
                await stream.send_eof()
            nursery.start_soon(send)
            echoed = bytearray()
            async for chunk in stream:
                echoed += chunk
        out["echo"] = [len(echoed), bytes(echoed) == payload]
        nursery.cancel_scope.cancel()
    out["inflight"] = ring.statistics().inflight
    print(json.dumps(out))
    print(kind)

with tempfile.TemporaryDirectory() as tmp:
    trio.run(main, tmp)
"""


@pytest.fixture(scope="module")
def on_io_uring() -> list[str]:
    done = run_python(PROGRAM)
    assert done.returncode == 0, done.stderr
    lines: list[str] = done.stdout.splitlines()
    assert lines[1] == "Ring"
    return lines


@pytest.mark.parametrize("code", ["EPERM", "ENOSYS"])
def test_blocked_io_uring_with_the_fallback_gives_the_same_results(
    code: str, on_io_uring: list[str]
) -> None:
    done = run_python(PROGRAM, block=code, env={"OURING_FALLBACK": "threads"})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[1] == "ThreadRing"
    assert json.loads(lines[0]) == json.loads(on_io_uring[0])
    assert json.loads(lines[0])["echo"] == [1048576, True]


OPEN_RING = """
import os, trio, ouring
async def main():
    async with ouring.open_ring(fallback="threads") as ring:
        r, w = os.pipe()
        await ring.write(w, b"keyword")
        buf, n = await ring.read(r, bytearray(16))
        print(type(ring).__name__, type(ring.reason).__name__, ring.reason.errno, buf[:n].decode())
    try:
        async with ouring.open_ring():
            pass
    except ouring.UnsupportedError:
        print("off by default")
trio.run(main)
"""


def test_open_ring_fallback_keyword() -> None:
    done = run_python(OPEN_RING, block="EPERM")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"ThreadRing UnsupportedError {errno.EPERM} keyword",
        "off by default",
    ]


async def test_open_ring_fallback_threads_uses_io_uring_where_it_works() -> None:
    async with ouring.open_ring(fallback="threads") as ring:
        assert type(ring) is ouring.Ring
    async with ouring.open_ring(fallback="always-threads") as ring:
        assert isinstance(ring, ThreadRing)
        assert ring.reason is None


def test_bad_fallback_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="fallback='thread'"):
        make_ring(fallback="thread")
    monkeypatch.setenv("OURING_FALLBACK", "yes")
    with pytest.raises(ValueError, match="OURING_FALLBACK='yes'"):
        fallback_mode()
    monkeypatch.setenv("OURING_FALLBACK", "")
    assert fallback_mode() == "off"


def test_the_suite_passes_on_the_thread_ring() -> None:
    """Every operation, file object, Path method, stream and safety test
    again, on worker threads and readiness waits instead of io_uring, under
    each executor (trio, asyncio, uvloop: the ``executor`` fixture)."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-m",
            "not slow and not io_uring_only",
            "tests/test_ops.py",
            "tests/test_files.py",
            "tests/test_path.py",
            "tests/test_streams.py",
            "tests/test_trio_socket.py",
            "tests/test_buffers.py",
            "tests/test_pool.py",
            "tests/test_splice.py",
            "tests/test_files_model.py",
            "tests/test_files_surface.py",
            "tests/test_composite_cancel.py",
            "tests/test_asyncio.py",
            "tests/test_anyio.py",
            # The safety suites whose subject is not the kernel's ownership of a
            # parked buffer (test_objects, test_ownership: a cancelled readiness
            # wait on threads gives its buffer back at once).
            "tests/safety/test_bad_input.py",
            "tests/safety/test_close_fd.py",
            "tests/safety/test_fork.py",
            "tests/safety/test_limits.py",
            "tests/safety/test_misuse.py",
            "tests/safety/test_pressure.py",
            "tests/safety/test_races.py",
            "tests/safety/test_signals.py",
        ],
        capture_output=True,
        text=True,
        timeout=420,
        cwd=ROOT,
        env={**os.environ, "OURING_FALLBACK": "always-threads"},
    )
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-2000:]
    assert " passed" in done.stdout


ASYNCIO_FALLBACK = """
import asyncio, os, sys, tempfile, ouring, ouring.asyncio
async def main():
    ring = ouring.current_ring()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "f")
        async with await ouring.open_file(path, "w+b") as f:
            await f.write(b"hello")
            await f.seek(0)
            data = await f.read()
        size = (await ouring.Path(path).stat()).st_size
    r, w = os.pipe()
    await ouring.write(w, b"pipe")
    buf, n = await ouring.read(r, bytearray(8))
    os.close(r); os.close(w)
    try:
        await ouring.asyncio.open_connection("127.0.0.1", 9)
    except ouring.UnsupportedError as exc:
        refused = "thread fallback" in str(exc)
    print(type(ring).__name__, data.decode(), size, bytes(buf[:n]).decode(), refused)
if sys.argv[1] == "uvloop":
    import uvloop
    uvloop.run(main())
else:
    asyncio.run(main())
"""


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_asyncio_runs_on_the_fallback_where_io_uring_is_blocked(loop: str) -> None:
    """Under asyncio (the default loop and uvloop) a blocked io_uring with
    ``OURING_FALLBACK=threads`` gives a ThreadRing: module-level operations,
    files and paths work; ``ouring.asyncio``'s transports, built on the
    io_uring queue, refuse clearly before making a socket."""
    done = run_python(
        ASYNCIO_FALLBACK.replace("sys.argv[1]", repr(loop)),
        block="EPERM",
        env={"OURING_FALLBACK": "threads"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ThreadRing", "hello", "5", "pipe", "True"]


# -- ownership and cancellation on the thread ring ---------------------------------------


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    """A FIFO: opening it for reading blocks in the worker thread until a
    writer opens it, an operation held in the middle of its syscall."""
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


def unblock(fifo: Path) -> None:
    """Open the FIFO's write end: a reader blocked in open(2) returns. This
    open blocks until that reader's worker thread has reached open(2)."""
    os.close(os.open(fifo, os.O_WRONLY))


async def test_a_waiting_recv_pins_its_buffer_and_a_cancel_leaves_it_untouched(
    socketpair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = socketpair
    async with ouring.open_ring(fallback="always-threads") as ring:
        buf = Buffer(b"untouched")
        ref = weakref.ref(buf)
        async with trio.open_nursery() as nursery:

            async def receiver(buf: Buffer) -> None:
                await ring.recv(a, buf)

            nursery.start_soon(receiver, buf)
            await trio.testing.wait_all_tasks_blocked()
            assert ring.statistics().inflight == 1
            with pytest.raises(BufferError):
                buf.extend(b"!")
            del buf
            gc.collect()
            alive = ref()
            assert alive is not None
            assert is_lent(alive)
            del alive
            nursery.cancel_scope.cancel()
        gc.collect()
        assert ref() is None  # released when the recv ended, not leaked
        assert ring.statistics().inflight == 0
        assert ring.statistics().cancelled == 1
        b.send(b"next")
        assert a.recv(10) == b"next"  # the cancelled recv consumed nothing


async def test_a_cancelled_recv_raises_cancelled_and_consumes_nothing(
    socketpair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = socketpair
    async with ouring.open_ring(fallback="always-threads") as ring:
        buf = bytearray(b"untouched")
        raised: list[BaseException] = []

        async def receiver() -> None:
            try:
                await ring.recv(a, buf)
            except trio.Cancelled as exc:
                raised.append(exc)
                raise

        async with trio.open_nursery() as nursery:
            nursery.start_soon(receiver)
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
        assert len(raised) == 1
        assert buf == b"untouched"
        buf.extend(b"!")  # given back
        b.send(b"data")
        got, n = await ring.recv(a, bytearray(8))
        assert got[:n] == b"data"
        assert ring.statistics().inflight == 0


async def test_a_cancel_during_a_thread_syscall_returns_its_result(
    fifo: Path, tmp_path: Path
) -> None:
    """The open is blocked inside open(2) in a worker thread when its task is
    cancelled: the syscall is not abandoned, its fd is returned, and trio
    raises Cancelled at the next checkpoint."""
    async with ouring.open_ring(fallback="always-threads") as ring:
        got: list[int] = []
        reached: list[bool] = []

        async def opener() -> None:
            got.append(await ring.open(fifo, os.O_RDONLY))
            await trio.lowlevel.checkpoint()
            reached.append(True)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(opener)
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
            unblock(fifo)
        assert len(got) == 1
        assert not reached
        assert os.fstat(got[0]).st_ino == os.stat(fifo).st_ino
        os.close(got[0])
        assert ring.statistics().cancelled == 0
        assert ring.statistics().inflight == 0


async def test_a_thread_run_write_cancelled_mid_syscall_is_returned(tmp_path: Path) -> None:
    data = b"w" * (64 << 20)  # long enough to be running when the cancel lands
    fd = os.open(tmp_path / "big", os.O_WRONLY | os.O_CREAT)
    try:
        async with ouring.open_ring(fallback="always-threads") as ring:
            results: list[tuple[bytes, int]] = []
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:

                    async def writer() -> None:
                        results.append(await ring.write(fd, data, 0))

                    nursery.start_soon(writer)
                    await trio.testing.wait_all_tasks_blocked()
                    scope.cancel()
            assert len(results) == 1
            assert results[0][0] is data
            assert results[0][1] == len(data)  # it happened: not lost, not Cancelled
            assert ring.statistics().cancelled == 0
            assert ring.statistics().inflight == 0
        assert os.stat(tmp_path / "big").st_size == len(data)
    finally:
        os.close(fd)


async def test_a_closed_coroutine_leaves_its_buffer_to_the_ring_until_the_thread_ends(
    tmp_path: Path,
) -> None:
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT)
    try:
        async with ouring.open_ring(fallback="always-threads") as ring:
            buf = Buffer(b"x" * (8 << 20))
            ref = weakref.ref(buf)
            coro = ring.write(fd, buf, 0)
            # Step it by hand until it parks on its worker thread.
            trap: Any = coro.send(None)
            while not hasattr(trap, "abort_func"):
                trap = coro.send(outcome.Value(None))
            assert ring.statistics().inflight == 1
            coro.close()  # parked: GeneratorExit where it waits for the thread
            del coro, trap, buf
            gc.collect()
            alive = ref()
            assert alive is not None, "freed while a worker thread may write it"
            assert is_lent(alive)
            del alive
            await ouring.wait_all_ops_completed(ring)
            gc.collect()
            assert ref() is None
            assert ring.statistics().inflight == 0
        assert os.stat(tmp_path / "f").st_size == 8 << 20  # the write happened
    finally:
        os.close(fd)


async def test_a_closed_coroutine_s_opened_fd_is_closed_by_the_ring(fifo: Path) -> None:
    before = open_fds()
    async with ouring.open_ring(fallback="always-threads") as ring:
        coro = ring.open(fifo, os.O_RDONLY)
        trap: Any = coro.send(None)
        while not hasattr(trap, "abort_func"):
            trap = coro.send(outcome.Value(None))
        coro.close()
        unblock(fifo)
        await ouring.wait_all_ops_completed(ring)
        assert ring.statistics().inflight == 0
    assert open_fds() == before  # nobody received the fd: discard() closed it


async def test_closing_the_fd_through_the_ring_ends_a_waiting_recv(
    socketpair: tuple[socket.socket, socket.socket],
) -> None:
    a, _ = socketpair
    async with ouring.open_ring(fallback="always-threads") as ring:
        buf = bytearray(8)
        async with trio.open_nursery() as nursery:

            async def receiver() -> None:
                with pytest.raises(trio.ClosedResourceError):
                    await ring.recv(a, buf)

            nursery.start_soon(receiver)
            await trio.testing.wait_all_tasks_blocked()
            await ring.close_fd(a)
        assert a.fileno() == -1  # detached: closed by the ring
        buf.extend(b"!")
        assert ring.statistics().inflight == 0


async def test_ring_close_waits_for_a_running_thread(fifo: Path) -> None:
    got: list[int] = []
    async with trio.open_nursery() as nursery:
        async with ouring.open_ring(fallback="always-threads") as ring:

            async def opener() -> None:
                got.append(await ring.open(fifo, os.O_RDONLY))

            nursery.start_soon(opener)
            await trio.testing.wait_all_tasks_blocked()
            # From another OS thread, while close() waits for the worker.
            trio.lowlevel.start_thread_soon(lambda: unblock(fifo), lambda _: None)
        assert ring.statistics().leaked == 0
    assert len(got) == 1  # delivered by close(): it happened
    os.close(got[0])


async def test_ring_close_leaks_what_still_runs_after_the_timeout(fifo: Path) -> None:
    before = open_fds()
    raised: list[BaseException] = []
    rings: list[ouring.Ring] = []

    async def run_and_close(nursery: trio.Nursery) -> None:
        async with ouring.open_ring(fallback="always-threads", teardown_timeout=0.05) as ring:
            rings.append(ring)

            async def opener() -> None:
                try:
                    await ring.open(fifo, os.O_RDONLY)
                except ouring.RingClosedError as exc:
                    raised.append(exc)

            nursery.start_soon(opener)
            await trio.testing.wait_all_tasks_blocked()

    async with trio.open_nursery() as nursery:
        with pytest.warns(ResourceWarning, match="still ran in worker threads"):
            await run_and_close(nursery)
    assert len(raised) == 1  # its waiter is told, not left parked
    assert rings[0].statistics().leaked == 1
    assert rings[0].statistics().inflight == 0
    (leaked,) = [
        op for op in _leaked_forever if isinstance(op, OpenAt) and op.filename == str(fifo)
    ]
    unblock(fifo)  # the thread's open returns; the fd nobody receives is closed
    with trio.fail_after(5):
        while leaked in _leaked_forever:  # noqa: ASYNC110 - the thread sends no other signal
            await trio.sleep(0.001)
    assert open_fds() == before


async def test_operations_on_a_closed_thread_ring_are_refused() -> None:
    async with ouring.open_ring(fallback="always-threads") as ring:
        pass
    buf = bytearray(4)
    with pytest.raises(ouring.RingClosedError):
        await ring.read(0, buf)
    buf.extend(b"!")  # never lent


async def test_read_many_on_the_thread_ring(tmp_path: Path) -> None:
    path = tmp_path / "data"
    path.write_bytes(bytes(range(64)))
    fd = os.open(path, os.O_RDONLY)
    bufs = [bytearray(4) for _ in range(3)]
    try:
        async with ouring.open_ring(fallback="always-threads") as ring:
            results = await ouring.read_many([(fd, buf, 8 * i) for i, buf in enumerate(bufs)])
            assert ring.statistics().completed == 3
            with pytest.raises(ValueError, match="explicit offsets"):
                await ring.read_many([(fd, bytearray(4), -1)])
    finally:
        os.close(fd)
    assert [(bytes(buf), n) for buf, n in results] == [
        (bytes(range(8 * i, 8 * i + 4)), 4) for i in range(3)
    ]


# -- the same rules under asyncio (the default loop and uvloop) -------------------------

LOOPS = pytest.mark.parametrize("loop", ["asyncio", "uvloop"])


@LOOPS
def test_under_asyncio_a_cancel_during_a_thread_syscall_returns_its_result(
    loop: str, fifo: Path
) -> None:
    """As under trio: the open is not abandoned, its fd is returned, and the
    task raises CancelledError at its next await."""
    got: list[int] = []
    reached: list[bool] = []

    async def main() -> None:
        async with ouring.open_ring(fallback="always-threads") as ring:

            async def opener() -> None:
                got.append(await ring.open(fifo, os.O_RDONLY))
                await asyncio.sleep(0)
                reached.append(True)

            task = asyncio.create_task(opener())
            await wait_parked(ring, 1)  # its worker thread has started
            task.cancel()
            await asyncio.to_thread(unblock, fifo)
            with pytest.raises(asyncio.CancelledError):
                await task
            assert ring.statistics().cancelled == 0
            assert ring.statistics().inflight == 0

    run_under(loop, main)
    assert len(got) == 1
    assert not reached
    assert os.fstat(got[0]).st_ino == os.stat(fifo).st_ino
    os.close(got[0])


@LOOPS
def test_under_asyncio_a_cancelled_recv_consumed_nothing(
    loop: str, socketpair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = socketpair
    buf = Buffer(b"untouched")

    async def main() -> None:
        async with ouring.open_ring(fallback="always-threads") as ring:
            task = asyncio.create_task(ring.recv(a, buf))
            await wait_parked(ring, 1)
            assert is_lent(buf)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert ring.statistics().cancelled == 1
            assert ring.statistics().inflight == 0

    run_under(loop, main)
    b.send(b"data")
    assert a.recv(16) == b"data"  # still queued: the recv did not happen
    assert buf == b"untouched"
    buf.extend(b"!")  # given back


@LOOPS
def test_under_asyncio_closing_the_fd_ends_a_waiting_recv(
    loop: str, socketpair: tuple[socket.socket, socket.socket]
) -> None:
    a, _ = socketpair

    async def main() -> None:
        async with ouring.open_ring(fallback="always-threads") as ring:
            task = asyncio.create_task(ring.recv(a, bytearray(8)))
            await wait_parked(ring, 1)
            await ring.close_fd(a)
            with pytest.raises(FdClosedError):
                await task
            assert ring.statistics().inflight == 0

    run_under(loop, main)
    assert a.fileno() == -1  # detached: closed by the ring
