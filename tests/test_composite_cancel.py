"""Composite calls (several ring operations in one public call: open_file's
openat + statx, Path.write_bytes's openat + writes + close, mkdir's parents...)
under cancellation at every checkpoint.

trio's rule, for the whole call: either it raises ``Cancelled`` and nothing
changed (no file created, truncated or written, no directory made, no fd left
open), or it completes and returns (or raises its own error), leaving what the
same call of the builtin / pathlib leaves. The cancel is injected by an
instrument that counts the calling task's steps from the start of the call and
cancels the scope at step k, for every k until the call ends first: before the
step (the task wakes to a pending cancel and meets it at its next checkpoint:
a completed ring operation is returned, the next one raises) and after it (the
task has just parked: its abort runs at once, withdrawing or cancelling the
operation in flight); and once with the scope cancelled before the call.
Everything runs on an io_uring ring and on the thread fallback, whose steps
differ (worker threads). Real files in tmp_path; nothing is mocked.
"""

from __future__ import annotations

import fcntl
import functools
import os
import pathlib
import stat
import struct
import termios
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
import trio
import trio.testing

import ouring

DATA = b"0123456789"
ROOT = "<root>"
MAX_STEPS = 200  # far more than any case takes: a call that never ends is a failure

RING_KINDS = ["io_uring", "threads"]


def ring_for(kind: str) -> AbstractAsyncContextManager[Any]:
    """A ring of its own for the test: io_uring, or the thread fallback."""
    return ouring.open_ring(fallback="always-threads" if kind == "threads" else None)


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def build_tree(root: pathlib.Path) -> None:
    root.mkdir()
    (root / "file").write_bytes(DATA)
    (root / "empty").write_bytes(b"")
    (root / "dir").mkdir()
    (root / "dir" / "inner").write_bytes(b"inner")
    (root / "emptydir").mkdir()
    (root / "link").symlink_to("file")


def tree(root: pathlib.Path, *, times: bool) -> dict[str, Any]:
    """What a call can change under ``root``: names, kinds, modes, link
    counts, sizes, contents, link targets, and with ``times`` the
    modification and change times (of the root too: a name created or
    removed changes its directory's). Access times are left out: a read
    moves them, and reading is not an effect."""
    seen: dict[str, Any] = {}
    paths = [root]
    for dirpath, dirnames, filenames in os.walk(root):
        paths += [pathlib.Path(dirpath, name) for name in dirnames + filenames]
    for path in paths:
        st = path.lstat()
        entry: tuple[Any, ...] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_nlink)
        if stat.S_ISLNK(st.st_mode):
            entry += (os.readlink(path),)
        elif stat.S_ISREG(st.st_mode):
            entry += (st.st_size, path.read_bytes())
        if times:
            entry += (st.st_mtime_ns, st.st_ctime_ns)
        seen[str(path.relative_to(root))] = entry
    return seen


def normalize(value: Any, root: pathlib.Path) -> Any:
    if isinstance(value, os.stat_result):
        return ("stat", stat.S_IFMT(value.st_mode), stat.S_IMODE(value.st_mode), value.st_size)
    if isinstance(value, pathlib.PurePath):
        return ("path", normalize(str(value), root))
    if isinstance(value, str):
        return value.replace(str(root), ROOT)
    if isinstance(value, tuple):
        return tuple(normalize(item, root) for item in value)
    return value


def error(exc: BaseException, root: pathlib.Path) -> tuple[Any, ...]:
    out: tuple[Any, ...] = ("raises", type(exc), normalize(exc.args, root))
    if isinstance(exc, OSError):
        out += (normalize(exc.filename, root),)
    return out


# -- the cases ------------------------------------------------------------------------------


class Api:
    """What a case calls: pathlib and the builtin ``open`` (the reference), or
    ouring.Path and ouring.open_file (awaitables)."""

    def __init__(self, root: pathlib.Path, path: type[Any], open_: Callable[..., Any]) -> None:
        self.root = root
        self._path = path
        self._open = open_

    def path(self, name: str) -> Any:
        return self._path(self.root, name)

    def open(self, name: str, mode: str, **kwargs: Any) -> Any:
        return self._open(self.root / name, mode, **kwargs)


Case = Callable[[Api], Any]


def opener(path: Any, flags: int) -> int:
    return os.open(path, flags, 0o666)


OPEN_CASES: dict[str, Case] = {
    # creates: O_CREAT | O_EXCL
    "x-new": lambda api: api.open("new", "x", encoding="utf-8"),
    "xb-new": lambda api: api.open("new", "xb"),
    "x+-new": lambda api: api.open("new", "x+", encoding="utf-8"),
    "xb-unbuffered-new": lambda api: api.open("new", "xb", buffering=0),
    "x-exists": lambda api: api.open("file", "x", encoding="utf-8"),
    "x-opener": lambda api: api.open("new", "x", encoding="utf-8", opener=opener),
    # truncates (or creates): O_CREAT | O_TRUNC
    "w-truncates": lambda api: api.open("file", "w", encoding="utf-8"),
    "wb-truncates": lambda api: api.open("file", "wb"),
    "w+-truncates": lambda api: api.open("file", "w+", encoding="utf-8", newline=""),
    "wb-unbuffered-truncates": lambda api: api.open("file", "wb", buffering=0),
    "w-through-link": lambda api: api.open("link", "w", encoding="utf-8"),
    "w-new": lambda api: api.open("new", "w", encoding="utf-8"),
    "w-opener": lambda api: api.open("file", "wb", opener=opener),
    "w-unknown-codec-truncates": lambda api: api.open("file", "w", encoding="no-such-codec"),
    "w-dir": lambda api: api.open("dir", "w", encoding="utf-8"),
    "w-missing-dir": lambda api: api.open("nodir/new", "w", encoding="utf-8"),
    # appends (or creates): O_CREAT | O_APPEND
    "a-exists": lambda api: api.open("file", "a", encoding="utf-8"),
    "ab-new": lambda api: api.open("new", "ab"),
    "a+-exists": lambda api: api.open("file", "a+", encoding="utf-8"),
    "ab-unbuffered-new": lambda api: api.open("new", "ab", buffering=0),
    # no O_CREAT: nothing happens on disk
    "r": lambda api: api.open("file", "r", encoding="utf-8"),
    "rb": lambda api: api.open("file", "rb"),
    "r+": lambda api: api.open("file", "r+", encoding="utf-8"),
    "rb+-unbuffered": lambda api: api.open("file", "rb+", buffering=0),
    "r-opener": lambda api: api.open("file", "rb", opener=opener),
    "r-missing": lambda api: api.open("missing", "r", encoding="utf-8"),
    "r-dir": lambda api: api.open("dir", "rb"),
    "r+-dir": lambda api: api.open("dir", "r+b"),
}

PATH_CASES: dict[str, Case] = {
    "write_bytes-truncates": lambda api: api.path("file").write_bytes(b"ab"),
    "write_bytes-new": lambda api: api.path("new").write_bytes(DATA * 1000),
    "write_bytes-empty": lambda api: api.path("file").write_bytes(b""),
    "write_bytes-through-link": lambda api: api.path("link").write_bytes(b"via link"),
    "write_bytes-dir": lambda api: api.path("dir").write_bytes(b"x"),
    "write_text-truncates": lambda api: api.path("file").write_text("héllo\n", "utf-16"),
    "write_text-new": lambda api: api.path("new").write_text("a\nb\n", "utf-8", None, "\r\n"),
    "write_text-unknown-codec": lambda api: api.path("file").write_text("x", "no-such-codec"),
    "write_text-unencodable": lambda api: api.path("file").write_text("é", "ascii"),
    "read_bytes": lambda api: api.path("file").read_bytes(),
    "read_bytes-empty": lambda api: api.path("empty").read_bytes(),
    "read_bytes-dir": lambda api: api.path("dir").read_bytes(),
    "read_bytes-missing": lambda api: api.path("missing").read_bytes(),
    "read_text": lambda api: api.path("file").read_text("utf-8"),
    "read_text-unknown-codec": lambda api: api.path("file").read_text("no-such-codec"),
    "mkdir": lambda api: api.path("new").mkdir(),
    "mkdir-exists": lambda api: api.path("dir").mkdir(),
    "mkdir-exist-ok": lambda api: api.path("dir").mkdir(exist_ok=True),
    "mkdir-file-exist-ok": lambda api: api.path("file").mkdir(exist_ok=True),
    "mkdir-parents": lambda api: api.path("a/b/c").mkdir(0o700, parents=True),
    "mkdir-parents-inside-existing": lambda api: api.path("dir/x/y").mkdir(parents=True),
    "mkdir-parents-exist-ok": lambda api: api.path("dir/inner2").mkdir(parents=True, exist_ok=True),
    "mkdir-parents-through-file": lambda api: api.path("file/a/b").mkdir(parents=True),
    "open-w": lambda api: api.path("file").open("w", encoding="utf-8"),
    "open-x": lambda api: api.path("new").open("xb"),
    "open-r": lambda api: api.path("file").open("rb"),
    "rename": lambda api: api.path("file").rename(api.path("new")),
    "replace": lambda api: api.path("file").replace(api.path("empty")),
    "unlink": lambda api: api.path("file").unlink(),
    "unlink-missing-ok": lambda api: api.path("missing").unlink(missing_ok=True),
    "rmdir": lambda api: api.path("emptydir").rmdir(),
    "symlink_to": lambda api: api.path("new").symlink_to("file"),
    "hardlink_to": lambda api: api.path("new").hardlink_to(api.path("file")),
    "touch": lambda api: api.path("new").touch(),
    "chmod": lambda api: api.path("file").chmod(0o600),
    "stat": lambda api: api.path("link").stat(),
    "exists": lambda api: api.path("file").exists(),
    "is_dir": lambda api: api.path("dir").is_dir(),
    "samefile": lambda api: api.path("link").samefile(api.path("file")),
}


def reference(case: Case, root: pathlib.Path) -> tuple[Any, dict[str, Any]]:
    """The builtin's / pathlib's outcome and the tree it leaves."""
    build_tree(root)
    try:
        value = case(Api(root, pathlib.Path, open))
    except Exception as exc:  # noqa: BLE001 - the exception is the outcome
        got: Any = error(exc, root)
    else:
        if hasattr(value, "close"):  # a file: it was opened, as its mode says
            value.close()
            value = ("file", value.mode)
        got = ("returns", normalize(value, root))
    return got, tree(root, times=False)


# -- cancelling at a step --------------------------------------------------------------------


class CancelAtStep(trio.abc.Instrument):
    """Cancels ``scope`` at the ``k``-th step of ``task`` counted from now:
    just before it (``after=False``: the task resumes to a pending cancel,
    delivered at its next checkpoint) or just after it (``after=True``: the
    task has just parked or yielded; a parked task's abort runs at once)."""

    def __init__(self, task: trio.lowlevel.Task, scope: trio.CancelScope, k: int, after: bool):
        self.task, self.scope, self.k, self.after = task, scope, k, after
        self.steps = 0
        self.fired = False

    def _step(self) -> None:
        if self.steps == self.k:
            self.scope.cancel()
            self.fired = True
        self.steps += 1

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task and not self.after:
            self._step()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task and self.after:
            self._step()


async def close_result(value: Any) -> Any:
    """A file the call returned is closed here (shielded: the scope may be
    cancelled); the outcome keeps its mode."""
    if isinstance(value, ouring.AsyncFile):
        with trio.CancelScope(shield=True):
            await value.aclose()
        return ("file", value.mode)
    return value


async def attempt(
    call: Callable[[], Awaitable[Any]], root: pathlib.Path, k: int | None, after: bool
) -> tuple[Any, bool]:
    """One call with a cancel injected at step ``k`` (``None``: the scope is
    cancelled before the call). Returns the outcome and whether the cancel
    was injected before the call ended."""
    instrument = CancelAtStep(trio.lowlevel.current_task(), trio.CancelScope(), k or 0, after)
    outcome: Any = "cancelled"
    with instrument.scope:
        if k is None:
            instrument.scope.cancel()
            instrument.fired = True
        else:
            trio.lowlevel.add_instrument(instrument)
        try:
            value = await call()
        except trio.Cancelled:
            raise
        except Exception as exc:  # noqa: BLE001 - the exception is the outcome
            outcome = error(exc, root)
        else:
            outcome = ("returns", normalize(await close_result(value), root))
        finally:
            if k is not None:
                trio.lowlevel.remove_instrument(instrument)
    return outcome, instrument.fired


async def check_every_step(case: Case, tmp_path: pathlib.Path) -> list[Any]:
    """The property of the module docstring, for a cancel before the call and
    at every step on both sides, until the call ends before the step comes.
    Returns the outcomes seen."""
    expected, expected_tree = reference(case, tmp_path / "reference")
    ring = ouring.current_ring()
    seen: list[Any] = []

    async def run(k: int | None, after: bool) -> bool:
        root = tmp_path / f"attempt-{len(seen)}"
        build_tree(root)
        before, fds = tree(root, times=True), fd_count()
        api = Api(root, ouring.Path, ouring.open_file)
        outcome, fired = await attempt(functools.partial(case, api), root, k, after)
        where = f"cancel {'after' if after else 'before'} step {k}: {outcome}"
        if outcome == "cancelled":
            assert tree(root, times=True) == before, where
        else:
            assert outcome == expected, where
            assert tree(root, times=False) == expected_tree, where
        assert fd_count() == fds, where
        assert ring.statistics().inflight == 0, where
        seen.append(outcome)
        return fired

    await run(None, False)
    # trio's rule for a cancelled scope: the call is a checkpoint (none of
    # these calls rejects its arguments before it).
    assert seen == ["cancelled"]
    for after in (False, True):
        for k in range(MAX_STEPS):
            if not await run(k, after):
                break  # the call ended before step k: every later k is the same run
        else:
            raise AssertionError(f"the call did not end in {MAX_STEPS} steps")
    return seen


@pytest.mark.parametrize("kind", RING_KINDS)
@pytest.mark.parametrize("case", OPEN_CASES.values(), ids=OPEN_CASES.keys())
async def test_open_file_is_atomic_under_cancellation(
    case: Case, kind: str, tmp_path: pathlib.Path
) -> None:
    async with ring_for(kind):
        seen = await check_every_step(case, tmp_path)
    assert "cancelled" in seen


@pytest.mark.parametrize("kind", RING_KINDS)
@pytest.mark.parametrize("case", PATH_CASES.values(), ids=PATH_CASES.keys())
async def test_path_methods_are_atomic_under_cancellation(
    case: Case, kind: str, tmp_path: pathlib.Path
) -> None:
    async with ring_for(kind):
        seen = await check_every_step(case, tmp_path)
    assert "cancelled" in seen


# -- the symptoms of issue 13, item 8 ---------------------------------------------------------


async def outcomes_at_every_step(
    call: Callable[[], Awaitable[Any]], root: pathlib.Path, check: Callable[[Any], None]
) -> None:
    """``call`` with a cancel before it and at every step on both sides;
    ``check(outcome)`` after each (it also resets what the call changed)."""
    check((await attempt(call, root, None, False))[0])
    for after in (False, True):
        for k in range(MAX_STEPS):
            outcome, fired = await attempt(call, root, k, after)
            check(outcome)
            if not fired:
                break


@pytest.mark.parametrize("kind", RING_KINDS)
async def test_open_file_x_that_raises_cancelled_created_no_file(
    kind: str, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "new"
    seen = set()

    def check(outcome: Any) -> None:
        seen.add(outcome)
        if outcome == "cancelled":
            assert not path.exists()
        else:
            assert outcome == ("returns", ("file", "x"))
            path.unlink()

    async with ring_for(kind):
        await outcomes_at_every_step(
            lambda: ouring.open_file(path, "x", encoding="utf-8"), tmp_path, check
        )
    assert seen == {"cancelled", ("returns", ("file", "x"))}


@pytest.mark.parametrize("kind", RING_KINDS)
async def test_open_file_w_that_raises_cancelled_truncated_nothing(
    kind: str, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "file"
    path.write_bytes(DATA)
    seen = set()

    def check(outcome: Any) -> None:
        seen.add(outcome)
        if outcome == "cancelled":
            assert path.read_bytes() == DATA
        else:
            assert outcome == ("returns", ("file", "wb"))
            assert path.read_bytes() == b""
            path.write_bytes(DATA)

    async with ring_for(kind):
        await outcomes_at_every_step(lambda: ouring.open_file(path, "wb"), tmp_path, check)
    assert seen == {"cancelled", ("returns", ("file", "wb"))}


@pytest.mark.parametrize("kind", RING_KINDS)
async def test_write_bytes_that_raises_cancelled_left_the_file_as_it_was(
    kind: str, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "file"
    path.write_bytes(DATA)
    seen = set()

    def check(outcome: Any) -> None:
        seen.add(outcome)
        if outcome == "cancelled":
            assert path.read_bytes() == DATA
        else:
            assert outcome == ("returns", 3)
            assert path.read_bytes() == b"new"
            path.write_bytes(DATA)

    async with ring_for(kind):
        await outcomes_at_every_step(lambda: ouring.Path(path).write_bytes(b"new"), tmp_path, check)
    assert seen == {"cancelled", ("returns", 3)}


# -- FIFOs: waits that can last forever ---------------------------------------------------------


@pytest.fixture
def fifo(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


def waiting_for_a_fifo_peer(io_wq: bool) -> bool:
    """Whether an io-wq worker (``io_wq``; its name starts with ``iou-wrk``)
    or another thread of this process (a worker thread of the fallback)
    sleeps in open(2) of a FIFO: the kernel's answer, from /proc. The kind
    matters: an io-wq worker of an earlier test's ring may still be on its
    way out of such a wait."""
    for task in pathlib.Path("/proc/self/task").iterdir():
        try:
            is_io_wq = (task / "comm").read_text().startswith("iou-")
            if is_io_wq == io_wq and (task / "wchan").read_text() == "wait_for_partner":
                return True
        except FileNotFoundError:  # the thread ended meanwhile
            continue
    return False


async def wait_for_a_fifo_open(io_wq: bool) -> None:
    with trio.fail_after(10):  # a failure, not a synchronization
        while not waiting_for_a_fifo_peer(io_wq):
            await trio.testing.wait_all_tasks_blocked()


FIFO_OPENS: dict[str, Callable[[pathlib.Path], Awaitable[object]]] = {
    "open_file-w": lambda fifo: ouring.open_file(fifo, "w"),
    "open_file-ab": lambda fifo: ouring.open_file(fifo, "ab"),
    "write_bytes": lambda fifo: ouring.Path(fifo).write_bytes(b"x"),
    "write_text": lambda fifo: ouring.Path(fifo).write_text("x", "utf-8"),
}


@pytest.mark.io_uring_only  # the thread fallback's open(2) waits for the peer (next test)
@pytest.mark.parametrize("call", FIFO_OPENS.values(), ids=FIFO_OPENS.keys())
async def test_an_open_waiting_for_a_fifo_s_reader_is_cancellable(
    call: Callable[[pathlib.Path], Awaitable[object]], fifo: pathlib.Path
) -> None:
    # open(2) of a FIFO for writing waits for a reader; io_uring's openat waits
    # there too (in an io-wq worker: O_CREAT), and a cancel wakes it with
    # -ERESTARTSYS: nothing was opened or changed, so Cancelled.
    async with ouring.open_ring() as ring:
        before = fd_count()
        raised: list[BaseException] = []

        async def open_it() -> None:
            try:
                await call(fifo)
            except BaseException as exc:
                raised.append(exc)
                raise

        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(open_it)
                await wait_for_a_fifo_open(io_wq=True)
                scope.cancel()
        assert [type(exc) for exc in raised] == [trio.Cancelled]
        assert scope.cancelled_caught
        assert fd_count() == before
        assert ring.statistics().inflight == 0


async def test_on_the_thread_fallback_a_fifo_open_waits_for_its_reader(
    fifo: pathlib.Path,
) -> None:
    # The fallback's openat is open(2) in a worker thread, which no cancel
    # interrupts (trio.open_file's is the same): the call waits for the peer
    # and returns the file it opened; trio raises Cancelled at the next checkpoint.
    async with ouring.open_ring(fallback="always-threads"):
        before = fd_count()
        got: list[ouring.AsyncFile[bytes]] = []

        async def open_it() -> None:
            got.append(await ouring.open_file(fifo, "wb"))

        reader = -1
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(open_it)
                try:
                    await wait_for_a_fifo_open(io_wq=False)
                    scope.cancel()
                    with trio.CancelScope(shield=True):
                        await trio.testing.wait_all_tasks_blocked()
                    assert got == []  # still waiting in open(2)
                finally:
                    # The peer, whatever happened above: without it the
                    # worker thread (which nothing cancels) and so this
                    # nursery would wait forever instead of failing.
                    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        try:
            assert not scope.cancelled_caught
            assert len(got) == 1
            assert await got[0].write(b"x") == 1
            await got[0].aclose()
            assert os.read(reader, 10) == b"x"
        finally:
            os.close(reader)
        assert fd_count() == before


def bytes_in_pipe(fd: int) -> int:
    """FIONREAD: what the pipe behind ``fd`` holds (either end answers)."""
    count: int = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0]
    return count


@pytest.mark.parametrize("kind", RING_KINDS)
async def test_read_bytes_of_a_fifo_keeps_what_it_consumed_when_cancelled(
    kind: str, fifo: pathlib.Path
) -> None:
    # Bytes read from a FIFO are gone from it, and read_bytes has no object
    # to keep them in: once it consumed some, a cancel lets it finish (to EOF),
    # and the call returns everything; Cancelled would have dropped them.
    keep = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # lets the writer open at once
    writer = os.open(fifo, os.O_WRONLY)
    os.write(writer, b"first ")  # stays in the pipe: `writer` keeps it open
    os.close(keep)
    got: list[bytes] = []
    try:
        async with ring_for(kind):
            before = fd_count() - 1  # once `writer` is closed, below

            async def read() -> None:
                got.append(await ouring.Path(fifo).read_bytes())

            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(read)
                    with trio.fail_after(10):  # a failure, not a synchronization
                        while bytes_in_pipe(writer):  # the kernel's answer: consumed
                            await trio.testing.wait_all_tasks_blocked()
                    scope.cancel()
                    os.write(writer, b"second")
                    os.close(writer)  # EOF after it
                    writer = -1
            assert not scope.cancelled_caught  # read_bytes returned
            assert got == [b"first second"]
            assert fd_count() == before
    finally:
        if writer != -1:
            os.close(writer)
