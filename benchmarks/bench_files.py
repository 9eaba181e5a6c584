"""File rows of the suite: reads of a page-cache-hot file, and appends with fsync.

Workloads (run by ``benchmarks/run.py``):

- ``rand4k``: 4 KiB reads at random 4 KiB-aligned offsets of a 256 MiB file
  that the suite writes once and reads through so that it sits in the page
  cache; 1 and 32 concurrent tasks;
- ``seq128k``: 128 KiB reads of the same file in order; with N tasks the file
  is cut into N stripes and each task reads its own stripe in order, wrapping;
- ``append``: 4 KiB appends (``O_APPEND``) to a fresh file, ``fsync`` after
  every 64 writes, one task (appends are ordered by nature).

Rows: ouring under trio (``buf, n = await ouring.read(fd, buf, off)``, each task
reusing its own bytearray); ``trio.open_file`` (seek + read on an unbuffered
file object per task); ``trio.to_thread.run_sync(os.pread)``; asyncio +
aiofiles and anyio ``open_file`` (asyncio backend), both seek + read like
``trio.open_file``; a synchronous ``os.preadv`` / ``os.write`` loop in one
thread (the ceiling for one Python thread); and ``fio`` with
``ioengine=io_uring`` and ``psync`` (the C ceiling, ``--invalidate=0`` so the
cache is kept).

The asyncio rows of ``rand4k`` (:data:`ASYNCIO_READ_IMPLS`, in a table of their
own): ouring under ``asyncio.run`` (the same loop as under trio; "unavailable"
while ``ouring.read`` refuses to run outside trio), ``aiofile`` (``AIOFile.read
(size, offset)`` on caio's default context for the loop, whichever backend caio
picks here: the cell reports it), aiofiles and anyio as above, and
``loop.run_in_executor(None, os.pread, ...)`` on the loop's default thread pool.
These cells also report their process's CPU time over wall time: caio's
io_uring backend polls its submission queue from a kernel thread (SQPOLL) when
the kernel allows it, and that thread's time is the process's.

Why it is fair: every row reads the same file, every task draws the same
offsets (a list precomputed from a seeded ``random.Random``, so generating
offsets costs nothing inside the timed loop and the same for every row), each
cell runs in a fresh process with a warm-up before a fixed measuring window.
Every read is checked to return the full block, every 1024th block and each
task's last one are compared with ``os.pread``; appends stamp a sequence number
in every block and the file is checked afterwards (its size, and a sample of
blocks in order), so a broken path cannot post a fast number. fio rows are
checked to report no error and the I/O count their byte count implies.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import random
import shutil
import struct
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from itertools import chain, repeat
from pathlib import Path
from typing import Any

import trio
from _harness import (
    MIB,
    RESULTS_DIR,
    BrokenPathError,
    CellResult,
    Counter,
    Row,
    optional_module,
    timed_asyncio,
    timed_trio,
)

import ouring

SEED = 20240601
RANDOM_OFFSETS = 1 << 15  #: offsets drawn per task for random reads
CHECK_EVERY = 1024  #: reads between two content checks against os.pread
APPEND_BLOCK = 4096
FSYNC_EVERY = 64
STAMP = struct.Struct("<QQ")  #: (magic, sequence number) at the start of each appended block
MAGIC = 0x6F7572696E67  # "ouring"


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    block: int
    kind: str  #: "random", "sequential" or "append"


WORKLOADS = {
    w.name: w
    for w in (
        Workload("rand4k", "random 4 KiB reads", 4096, "random"),
        Workload("seq128k", "sequential 128 KiB reads", 128 * 1024, "sequential"),
        Workload("append", "4 KiB appends, fsync every 64", APPEND_BLOCK, "append"),
    )
}

READ_MANY = 32  #: reads per ouring.read_many call (one task: the concurrency of 32 tasks)

#: Implementations and the table labels; the Python ones run in run_cell.
READ_IMPLS = {
    "ouring": "ouring",
    "ouring.read_many": f"ouring.read_many, {READ_MANY} per call",
    "ouring.read_many-fixed": f"ouring.read_many, {READ_MANY} per call, BufferPool",
    "trio.open_file": "trio.open_file",
    "to_thread": "trio.to_thread(os.pread)",
    "aiofiles": "asyncio + aiofiles",
    "anyio": "anyio.open_file (asyncio)",
    "os": "os.preadv loop, 1 thread",
    "fio-io_uring": "fio io_uring",
    "fio-psync": "fio psync",
}
#: The rows of random reads under asyncio besides aiofiles and anyio (which every
#: workload has): only ``rand4k``, the workload of issue 15's table.
ASYNCIO_READ_IMPLS: dict[str, str] = {
    "ouring-asyncio": "ouring under asyncio",
    "aiofile": "aiofile (caio)",
    "run_in_executor": "loop.run_in_executor(os.pread)",
}
#: The rows whose cells run under asyncio.run.
ASYNCIO = {"aiofiles", "anyio", *ASYNCIO_READ_IMPLS}
#: Peers of the bench extra that a row needs: module to import, distribution to name.
PEERS = {"aiofiles": "aiofiles", "anyio": "anyio", "aiofile": "aiofile"}
APPEND_LABELS = {
    "to_thread": "trio.to_thread(os.write)",
    "os": "os.write loop, 1 thread",
}
SYNCHRONOUS = {
    "os",
    "fio-psync",
    "ouring.read_many",
    "ouring.read_many-fixed",
}  #: rows that only exist with one task


def rows(tasks: int) -> list[Row]:
    """Every file row, workload by workload."""
    out: list[Row] = []
    for workload in WORKLOADS.values():
        counts = [1] if workload.kind == "append" else sorted({1, tasks})
        impls = dict(READ_IMPLS)
        if workload.name == "rand4k":
            impls.update(ASYNCIO_READ_IMPLS)
        for impl, label in impls.items():
            if workload.kind == "append":
                if impl.startswith("ouring.read_many"):
                    continue
                label = APPEND_LABELS.get(impl, label)
            for n in counts:
                if n > 1 and impl in SYNCHRONOUS:
                    continue
                if impl.startswith("fio"):
                    text = f"{label}, iodepth {n}"
                elif impl == "os":
                    text = label
                else:
                    text = f"{label}, {n} task{'s' if n > 1 else ''}"
                out.append(Row(workload.name, impl, n, text))
    return out


# -- offsets and checks --------------------------------------------------------------------


def task_offsets(workload: Workload, seed: int, task: int, tasks: int, size: int) -> list[int]:
    """The offsets task ``task`` of ``tasks`` reads, the same for every row."""
    blocks = size // workload.block
    if workload.kind == "random":
        rng = random.Random(seed * 1_000_003 + task)
        return [b * workload.block for b in rng.choices(range(blocks), k=RANDOM_OFFSETS)]
    stripe = blocks // tasks
    if stripe < 1:
        raise SystemExit(f"the file is too small for {tasks} sequential stripes")
    return [(task * stripe + b) * workload.block for b in range(stripe)]


def forever(offsets: list[int]) -> Iterator[int]:
    """``offsets`` over and over. Not ``itertools.cycle``, which keeps a copy of
    what it has yielded: memory that grows during the first pass would show in
    the memory check as if ouring leaked it."""
    return chain.from_iterable(repeat(offsets))


def check_block(fd: int, got: bytes | bytearray | memoryview, offset: int) -> None:
    if bytes(got) != os.pread(fd, len(got), offset):
        raise BrokenPathError(f"the block read at offset {offset} does not match the file")


def short_read(n: int, offset: int, want: int) -> BrokenPathError:
    return BrokenPathError(f"read at offset {offset} returned {n} bytes, not {want}")


# -- read rows -----------------------------------------------------------------------------


Worker = Callable[[], Awaitable[None]]


async def read_loop(
    counter: Counter,
    fd: int,
    offsets: list[int],
    block: int,
    read_at: Callable[[int], Awaitable[bytes]],
) -> None:
    """The measured loop of the rows whose read returns a new bytes object:
    ``data = await read_at(off)`` for each offset, over and over, until
    ``counter.stop``. Each block is checked to be whole, every CHECK_EVERY-th and
    the last one against ``os.pread`` on ``fd``. ``read_at`` is called once an
    operation and does the row's own calls, nothing more: the loop adds no await
    and no allocation of its own. (ouring's row keeps its own loop: it reads into
    a buffer it hands over and gets back, and reports a count.)"""
    data = b""
    last = -1
    for off in forever(offsets):
        if counter.stop:
            break
        data = await read_at(off)
        if len(data) != block:
            raise short_read(len(data), off, block)
        counter.ops += 1
        last = off
        if not counter.ops % CHECK_EVERY:
            check_block(fd, data, off)
    if last >= 0:
        check_block(fd, data, last)


def seek_and_read(f: Any, block: int) -> Callable[[int], Awaitable[bytes]]:
    """``read_at`` for an async file object: ``await f.seek(off)``, then
    ``await f.read(block)``, the two calls (and thread hops) a user writes. The
    wrapper costs one coroutine an operation, well under 1% of two thread hops."""

    async def read_at(off: int) -> bytes:
        await f.seek(off)
        data: bytes = await f.read(block)
        return data

    return read_at


def read_workers(
    impl: str, path: Path, workload: Workload, tasks: int, seed: int, counter: Counter, fd: int
) -> list[Worker]:
    """The ``tasks`` read loops of one Python row. ``fd`` is open for reading
    (used by the rows that take a raw descriptor, and by the checks)."""
    size = path.stat().st_size
    block = workload.block

    def make(task: int) -> Worker:
        offsets = task_offsets(workload, seed, task, tasks, size)

        async def with_ouring() -> None:
            buf = bytearray(block)
            read = ouring.read
            last = -1
            for off in forever(offsets):
                if counter.stop:
                    break
                buf, n = await read(fd, buf, off)
                if n != block:
                    raise short_read(n, off, block)
                counter.ops += 1
                last = off
                if not counter.ops % CHECK_EVERY:
                    check_block(fd, buf, off)
            if last >= 0:
                check_block(fd, buf, last)

        async def with_read_many(fixed: bool = False) -> None:
            # One task, READ_MANY reads per call: one checkpoint per batch.
            # With fixed, the buffers come from a pool registered with the
            # run's ring: fixed reads (READ_FIXED), same workload otherwise.
            bufs: list[Any]
            if fixed:
                pool = ouring.BufferPool(READ_MANY, block)
                if not pool.registered:
                    raise BrokenPathError(f"the pool did not register: {pool.reason}")
                bufs = [pool.get() for _ in range(READ_MANY)]
            else:
                bufs = [bytearray(block) for _ in range(READ_MANY)]
            read_many = ouring.read_many
            it = forever(offsets)
            last = -1
            while not counter.stop:
                chunk = [next(it) for _ in range(READ_MANY)]
                results = await read_many(list(zip(repeat(fd), bufs, chunk)))
                for (_, n), off in zip(results, chunk, strict=True):
                    if n != block:
                        raise short_read(n, off, block)
                counter.ops += READ_MANY
                last = chunk[-1]
                if not counter.ops % CHECK_EVERY:
                    check_block(fd, bufs[-1], last)
            if last >= 0:
                check_block(fd, bufs[-1], last)

        async def with_read_many_fixed() -> None:
            await with_read_many(fixed=True)

        async def with_trio_open_file() -> None:
            # Unbuffered: each seek and read is one syscall in a worker thread.
            async with await trio.open_file(path, "rb", buffering=0) as f:
                await read_loop(counter, fd, offsets, block, seek_and_read(f, block))

        async def with_to_thread() -> None:
            run_sync, pread = trio.to_thread.run_sync, os.pread

            def read_at(off: int) -> Awaitable[bytes]:
                # A plain function: it hands back run_sync's coroutine, no await of its own.
                return run_sync(pread, fd, block, off)

            await read_loop(counter, fd, offsets, block, read_at)

        async def with_aiofiles() -> None:
            aiofiles: Any = optional_module("aiofiles")
            async with aiofiles.open(path, "rb", buffering=0) as f:
                await read_loop(counter, fd, offsets, block, seek_and_read(f, block))

        async def with_anyio() -> None:
            anyio: Any = optional_module("anyio")
            async with await anyio.open_file(path, "rb", buffering=0) as f:
                await read_loop(counter, fd, offsets, block, seek_and_read(f, block))

        async def with_aiofile() -> None:
            # The positional read aiofile offers, AIOFile.read(size, offset): one
            # request on caio's context for the running loop, no seek, no thread hop.
            aiofile: Any = optional_module("aiofile")
            async with aiofile.AIOFile(path, "rb") as f:
                await read_loop(counter, fd, offsets, block, functools.partial(f.read, block))

        async def with_executor() -> None:
            run_in_executor, pread = asyncio.get_running_loop().run_in_executor, os.pread

            def read_at(off: int) -> Awaitable[bytes]:
                # A plain function: it hands back the executor's future, no await of its own.
                return run_in_executor(None, pread, fd, block, off)

            await read_loop(counter, fd, offsets, block, read_at)

        return {
            "ouring": with_ouring,
            "ouring-asyncio": with_ouring,
            "aiofile": with_aiofile,
            "run_in_executor": with_executor,
            "ouring.read_many": with_read_many,
            "ouring.read_many-fixed": with_read_many_fixed,
            "trio.open_file": with_trio_open_file,
            "to_thread": with_to_thread,
            "aiofiles": with_aiofiles,
            "anyio": with_anyio,
        }[impl]

    return [make(t) for t in range(tasks)]


def preadv_loop(
    path: Path, workload: Workload, seed: int, warmup: float, seconds: float
) -> CellResult:
    """The synchronous ceiling: one thread, one reused bytearray."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    offsets = task_offsets(workload, seed, 0, 1, path.stat().st_size)
    block = workload.block
    buf = bytearray(block)
    bufs = [buf]
    preadv = os.preadv
    clock = time.perf_counter
    it = forever(offsets)
    chunk = 64  # reads between looks at the clock

    def loop(duration: float) -> tuple[int, float]:
        ops = 0
        start = clock()
        end = start + duration
        now = start
        off = 0
        while now < end:
            for _ in range(chunk):
                off = next(it)
                n = preadv(fd, bufs, off)
                if n != block:
                    raise short_read(n, off, block)
            ops += chunk
            if not ops % CHECK_EVERY:
                check_block(fd, buf, off)
            now = clock()
        check_block(fd, buf, off)
        return ops, now - start

    try:
        loop(warmup)
        ops, elapsed = loop(seconds)
    finally:
        os.close(fd)
    return CellResult("", ops, elapsed, ops / elapsed, block)


def run_read_cell(row: Row, path: Path, seed: int, warmup: float, seconds: float) -> CellResult:
    workload = WORKLOADS[row.workload]
    if row.impl == "os":
        return preadv_loop(path, workload, seed, warmup, seconds)
    missing = PEERS.get(row.impl)
    if missing and optional_module(missing) is None:
        return CellResult("", unavailable=f"{missing} is not installed (pip install '.[bench]')")
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    counter = Counter()
    try:
        workers = read_workers(row.impl, path, workload, row.tasks, seed, counter, fd)
        per_batch: float | None = None
        if row.impl in ASYNCIO:
            return run_asyncio_read_cell(
                row.impl, workers, counter, fd, workload.block, warmup, seconds
            )
        if row.impl.startswith("ouring"):

            async def main() -> tuple[int, float, float]:
                ops, elapsed = await timed_trio(counter, workers, warmup, seconds)
                stats = ouring.current_ring().statistics()
                if stats.completed < counter.ops or stats.cancelled or stats.inflight:
                    raise BrokenPathError(f"ring counters disagree with the reads done: {stats}")
                return ops, elapsed, stats.completed / max(stats.batches, 1)

            ops, elapsed, per_batch = trio.run(main)
        else:
            ops, elapsed = trio.run(timed_trio, counter, workers, warmup, seconds)
    finally:
        os.close(fd)
    return CellResult("", ops, elapsed, ops / elapsed, workload.block, per_batch)


class Unavailable(Exception):
    """A row that cannot run here; its message is the table's note."""


def caio_backend() -> str:
    """Which of caio's backends ``aiofile`` uses here, as the table's note says it."""
    caio: Any = optional_module("caio")
    if caio is None:
        return "caio is not installed"
    backend = caio.AsyncioContext.__module__.removeprefix("caio.").removesuffix("_asyncio")
    what = {
        "linux_uring": "io_uring",
        "linux_aio": "Linux AIO (io_submit)",
        "thread_aio": "a C thread pool",
        "python_aio": "a Python thread pool",
    }.get(backend, backend)
    version = getattr(caio, "__version__", "?")
    return f"caio {version}, backend {backend} ({what})"


async def ouring_refused(fd: int) -> str | None:
    """Why ``ouring.read`` cannot run under the running asyncio loop, or None
    when it can: a read of the file's first byte. Until ouring has its asyncio
    executor the call raises RuntimeError, and ouring's asyncio rows say so."""
    try:
        buf, n = await ouring.read(fd, bytearray(1), 0)
    except RuntimeError:
        return "ouring under asyncio not available"
    if n != 1 or bytes(buf) != os.pread(fd, 1, 0):
        raise BrokenPathError("ouring's first read under asyncio returned the wrong byte")
    return None


def run_asyncio_read_cell(
    impl: str,
    workers: list[Worker],
    counter: Counter,
    fd: int,
    block: int,
    warmup: float,
    seconds: float,
) -> CellResult:
    """One cell of a read row under ``asyncio.run`` (the default loop). Every
    cell reports its process's CPU time over wall time (``extra["cpu"]``: the
    threads of a pool and a kernel SQPOLL thread count); ouring's row its
    ring's batches; aiofile's, caio's backend and whether its ring uses SQPOLL."""
    extra: dict[str, Any] = {}

    async def main() -> tuple[int, float, float | None, float]:
        loop = asyncio.get_running_loop()
        if impl == "ouring-asyncio" and (why := await ouring_refused(fd)) is not None:
            raise Unavailable(why)
        if impl == "aiofile":
            aiofile_aio: Any = optional_module("aiofile.aio")
            context = aiofile_aio.get_default_context()
            sqpoll = bool(getattr(context.context, "sqpoll", False))
            extra["caio"] = caio_backend() + (", SQPOLL" if sqpoll else "")
        cpu0, wall0 = time.process_time(), loop.time()
        ops, elapsed = await timed_asyncio(counter, workers, warmup, seconds)
        cpu = (time.process_time() - cpu0) / (loop.time() - wall0)
        per_batch: float | None = None
        if impl == "ouring-asyncio":
            stats = ouring.current_ring().statistics()
            if stats.completed < counter.ops or stats.cancelled or stats.inflight:
                raise BrokenPathError(f"ring counters disagree with the reads done: {stats}")
            per_batch = stats.completed / max(stats.batches, 1)
        return ops, elapsed, per_batch, cpu

    try:
        ops, elapsed, per_batch, cpu = asyncio.run(main())
    except Unavailable as exc:
        return CellResult("", unavailable=str(exc))
    extra["cpu"] = cpu
    return CellResult("", ops, elapsed, ops / elapsed, block, per_batch, extra=extra)


# -- append rows ---------------------------------------------------------------------------


def append_path() -> Path:
    return RESULTS_DIR / f"append-{os.getpid()}.dat"


def verify_appends(path: Path, writes: int, seed: int) -> None:
    """The file holds ``writes`` blocks stamped 0, 1, 2, ... in order."""
    size = path.stat().st_size
    if size != writes * APPEND_BLOCK:
        raise BrokenPathError(f"{writes} appends of {APPEND_BLOCK} B left {size} bytes")
    rng = random.Random(seed)
    sample = {0, writes - 1, *rng.sample(range(writes), min(writes, 1000))}
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        for seq in sorted(sample):
            magic, got = STAMP.unpack(os.pread(fd, STAMP.size, seq * APPEND_BLOCK))
            if magic != MAGIC or got != seq:
                raise BrokenPathError(f"block {seq} of the appended file holds write {got}")
    finally:
        os.close(fd)


def run_append_cell(row: Row, seed: int, warmup: float, seconds: float) -> CellResult:
    """4 KiB appends with fsync every 64 writes; ``ops`` counts writes."""
    path = append_path()
    counter = Counter()
    filler = random.Random(seed).randbytes(APPEND_BLOCK)
    fsyncs = 0

    def block_for(seq: int, buf: bytearray) -> bytearray:
        STAMP.pack_into(buf, 0, MAGIC, seq)
        return buf

    async def with_ouring() -> None:
        nonlocal fsyncs
        fd = await ouring.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        buf = bytearray(filler)
        write, fsync = ouring.write, ouring.fsync
        try:
            while not counter.stop:
                buf, n = await write(fd, block_for(counter.ops, buf), -1)
                if n != APPEND_BLOCK:
                    raise short_read(n, -1, APPEND_BLOCK)
                counter.ops += 1
                if not counter.ops % FSYNC_EVERY:
                    await fsync(fd)
                    fsyncs += 1
        finally:
            await ouring.close(fd)

    async def append_loop(
        write: Callable[[bytearray], Awaitable[int]], fsync: Callable[[], Awaitable[object]]
    ) -> None:
        """The measured loop of the rows whose write takes the block and returns a
        count: ``n = await write(block)`` until ``counter.stop``, each write checked
        to be whole, ``await fsync()`` after every FSYNC_EVERY of them. ``write`` and
        ``fsync`` do the row's own calls; the loop adds no await of its own. (ouring's
        row keeps its own loop: it hands its bytearray over and gets it back.)"""
        nonlocal fsyncs
        buf = bytearray(filler)
        while not counter.stop:
            n = await write(block_for(counter.ops, buf))
            if n != APPEND_BLOCK:
                raise short_read(n, -1, APPEND_BLOCK)
            counter.ops += 1
            if not counter.ops % FSYNC_EVERY:
                await fsync()
                fsyncs += 1

    async def with_trio_open_file() -> None:
        async with await trio.open_file(path, "wb", buffering=0) as f:
            pass
        async with await trio.open_file(path, "ab", buffering=0) as f:
            # trio's file objects have no fsync: the thread hop a user writes.
            await append_loop(f.write, lambda: trio.to_thread.run_sync(os.fsync, f.fileno()))

    async def with_to_thread() -> None:
        run_sync = trio.to_thread.run_sync
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        try:
            # Plain functions: they hand back run_sync's coroutine, no await of their own.
            await append_loop(
                lambda block: run_sync(os.write, fd, block), lambda: run_sync(os.fsync, fd)
            )
        finally:
            os.close(fd)

    async def with_aiofiles() -> None:
        aiofiles: Any = optional_module("aiofiles")
        aiofiles_os: Any = optional_module("aiofiles.os")
        fsync_async = aiofiles_os.wrap(os.fsync)
        async with aiofiles.open(path, "wb", buffering=0) as f:
            pass
        async with aiofiles.open(path, "ab", buffering=0) as f:
            await append_loop(f.write, lambda: fsync_async(f.fileno()))

    async def with_anyio() -> None:
        anyio: Any = optional_module("anyio")
        async with await anyio.open_file(path, "wb", buffering=0) as f:
            pass
        async with await anyio.open_file(path, "ab", buffering=0) as f:
            await append_loop(
                f.write, lambda: anyio.to_thread.run_sync(os.fsync, f.wrapped.fileno())
            )

    def os_loop(warmup: float, seconds: float) -> tuple[int, float]:
        nonlocal fsyncs
        buf = bytearray(filler)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        clock = time.perf_counter
        write, fsync = os.write, os.fsync
        try:
            marks: list[tuple[int, float]] = []
            for duration in (warmup, seconds):
                start = clock()
                end = start + duration
                marks.append((counter.ops, start))
                while clock() < end:
                    for _ in range(FSYNC_EVERY):
                        n = write(fd, block_for(counter.ops, buf))
                        if n != APPEND_BLOCK:
                            raise short_read(n, -1, APPEND_BLOCK)
                        counter.ops += 1
                    fsync(fd)
                    fsyncs += 1
            now = clock()
        finally:
            os.close(fd)
        return counter.ops - marks[1][0], now - marks[1][1]

    missing = {"aiofiles": "aiofiles", "anyio": "anyio"}.get(row.impl)
    if missing and optional_module(missing) is None:
        return CellResult("", unavailable=f"{missing} is not installed (pip install '.[bench]')")
    per_batch: float | None = None
    try:
        if row.impl == "os":
            ops, elapsed = os_loop(warmup, seconds)
        elif row.impl in ("aiofiles", "anyio"):
            worker = with_aiofiles if row.impl == "aiofiles" else with_anyio
            ops, elapsed = asyncio.run(timed_asyncio(counter, [worker], warmup, seconds))
        elif row.impl == "ouring":

            async def main() -> tuple[int, float, float]:
                ops, elapsed = await timed_trio(counter, [with_ouring], warmup, seconds)
                stats = ouring.current_ring().statistics()
                if stats.cancelled or stats.inflight:
                    raise BrokenPathError(f"ring counters disagree with the writes done: {stats}")
                return ops, elapsed, stats.completed / max(stats.batches, 1)

            ops, elapsed, per_batch = trio.run(main)
        else:
            worker = with_trio_open_file if row.impl == "trio.open_file" else with_to_thread
            ops, elapsed = trio.run(timed_trio, counter, [worker], warmup, seconds)
        verify_appends(path, counter.ops, seed)
        if fsyncs != counter.ops // FSYNC_EVERY:
            raise BrokenPathError(f"{fsyncs} fsyncs for {counter.ops} writes")
    finally:
        path.unlink(missing_ok=True)
    return CellResult("", ops, elapsed, ops / elapsed, APPEND_BLOCK, per_batch)


# -- fio -----------------------------------------------------------------------------------


def fio_cell(row: Row, path: Path, warmup: float, seconds: float) -> CellResult:
    """Run fio once for ``row``; it is a fresh process of its own."""
    fio = shutil.which("fio")
    if fio is None:
        return CellResult("", unavailable="not installed")
    workload = WORKLOADS[row.workload]
    engine = row.impl.removeprefix("fio-")
    common = [
        fio,
        "--name=b",
        f"--bs={workload.block}",
        f"--ioengine={engine}",
        f"--iodepth={row.tasks}",
        "--direct=0",
        f"--runtime={round(seconds * 1000)}ms",
        f"--ramp_time={round(warmup * 1000)}ms",
        "--time_based",
        "--gtod_reduce=1",
        "--output-format=json",
    ]
    target = path
    if workload.kind == "append":
        target = append_path()
        # A fresh file grown by appends; fio has no O_APPEND, it writes at the end.
        command = [
            *common,
            f"--filename={target}",
            "--rw=write",
            "--file_append=1",
            f"--fsync={FSYNC_EVERY}",
            "--size=16g",
            "--fallocate=none",
        ]
        target.unlink(missing_ok=True)
    else:
        command = [
            *common,
            f"--filename={path}",
            "--rw=randread" if workload.kind == "random" else "--rw=read",
            "--invalidate=0",
            f"--size={path.stat().st_size}",
            "--norandommap=1",
        ]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=seconds + warmup + 60, check=False
        )
    finally:
        if workload.kind == "append":
            target.unlink(missing_ok=True)
    if done.returncode != 0:
        raise SystemExit(f"{row.key}: fio failed (exit {done.returncode}):\n{done.stderr}")
    job: dict[str, Any] = json.loads(done.stdout[done.stdout.index("{") :])["jobs"][0]
    side: dict[str, Any] = job["write" if workload.kind == "append" else "read"]
    ios = int(side["total_ios"])
    # io_bytes and total_ios may disagree by the I/Os in flight when the ramp ended.
    slack = row.tasks * workload.block
    if job["error"] or ios <= 0 or abs(side["io_bytes"] - ios * workload.block) > slack:
        raise BrokenPathError(
            f"fio reported error {job['error']}, {ios} I/Os, {side['io_bytes']} bytes"
        )
    elapsed = side["runtime"] / 1000
    return CellResult("", ios, elapsed, float(side["iops"]), workload.block)


def run_cell(row: Row, path: Path, seed: int, warmup: float, seconds: float) -> CellResult:
    if row.workload == "append":
        return run_append_cell(row, seed, warmup, seconds)
    return run_read_cell(row, path, seed, warmup, seconds)


# -- the data file -------------------------------------------------------------------------


def prepare_file(path: Path, size: int, seed: int) -> str:
    """Create ``path`` with ``size`` pseudo-random bytes unless it already has
    that size, then read it through once so that it is in the page cache."""
    block = max(w.block for w in WORKLOADS.values())
    if size % block or size < block:
        raise SystemExit(f"--file-size must be a positive multiple of {block}")
    try:
        reused = path.stat().st_size == size
    except FileNotFoundError:
        reused = False
    if not reused:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        rng = random.Random(seed)
        with tmp.open("wb") as f:
            left = size
            while left:
                n = min(left, 4 * MIB)
                f.write(rng.randbytes(n))
                left -= n
            # Written back now, so that no writeback runs under the first cells.
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        chunk = bytearray(4 * MIB)
        offset = 0
        while n := os.preadv(fd, [chunk], offset):
            offset += n
    finally:
        os.close(fd)
    return "reused" if reused else "created"


if __name__ == "__main__":
    import run

    run.main(["--only", "files"])
