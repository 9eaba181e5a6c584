"""Random 4 KiB reads from a page-cache-hot file: ouring vs trio.open_file vs os.preadv.

Run by ``make bench``. Every cell (one row, one repeat) runs in a fresh
subprocess (``--cell NAME``) that prints one JSON line; the parent interleaves
rows across repeats (for each repeat, every row once) so that drift of the
machine spreads over all rows alike, then prints the median and the min-max
spread of each row.

Rows:

- ``ouring``: ``buf, n = await ouring.read(fd, buf, off)`` under ``trio.run``,
  each task reusing its own bytearray;
- ``trio.open_file``: ``await f.seek(off); await f.read(4096)``, one unbuffered
  file object per task (every call is a trip to trio's worker threads);
- ``os.preadv``: a plain synchronous loop in one thread with one reused
  bytearray, the ceiling for one Python thread.

Each task draws its offsets from a list precomputed with a seeded
``random.Random``, so generating them costs nothing inside the timed loop and
the same for every row. Each cell runs a short warm-up, then counts operations
over ``--seconds``. Every read is checked to return 4096 bytes and each task's
last block is compared with ``os.pread`` at the end, so a broken path cannot
post a fast number.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import trio

import ouring

BLOCK = 4096
MIB = 1 << 20
OFFSETS_PER_TASK = 1 << 15  # a power of two: the index wraps with a mask
RESULTS_DIR = Path(__file__).resolve().parent / "results"
SEED = 20240601


# -- the cells (each runs in its own process) ----------------------------------------------


@dataclass(frozen=True)
class Row:
    """One line of the table: an implementation at one concurrency."""

    name: str  #: the --cell name
    label: str  #: what the table shows
    impl: str  #: "ouring", "trio.open_file" or "os.preadv"
    tasks: int


@dataclass
class CellResult:
    row: str
    ops: int
    elapsed: float
    ops_per_s: float
    #: ouring rows: completions per io_uring_enter that submitted (the batch size)
    ops_per_batch: float | None = None


class Counter:
    """Operations done by every task of a cell; trio runs them on one thread."""

    __slots__ = ("ops", "stop")

    def __init__(self) -> None:
        self.ops = 0
        self.stop = False


class BrokenPathError(AssertionError):
    """A read returned something other than the file's bytes."""


def task_offsets(seed: int, task: int, file_size: int) -> list[int]:
    """The offsets task ``task`` reads, the same for every row."""
    rng = random.Random(seed * 1_000_003 + task)
    blocks = range(file_size // BLOCK)
    return [block * BLOCK for block in rng.choices(blocks, k=OFFSETS_PER_TASK)]


def check_block(fd: int, got: bytes | bytearray, offset: int) -> None:
    if got != os.pread(fd, BLOCK, offset):
        raise BrokenPathError(f"the block read at offset {offset} does not match the file")


def short_read(n: int, offset: int) -> BrokenPathError:
    return BrokenPathError(f"read at offset {offset} returned {n} bytes, not {BLOCK}")


async def timed(
    counter: Counter,
    workers: Sequence[Callable[[], Awaitable[None]]],
    warmup: float,
    seconds: float,
) -> tuple[int, float]:
    """Run ``workers`` concurrently; count ``counter.ops`` over ``seconds``
    after ``warmup``. Returns (operations, elapsed seconds)."""
    async with trio.open_nursery() as nursery:
        for worker in workers:
            nursery.start_soon(worker)
        await trio.sleep(warmup)
        ops0, t0 = counter.ops, time.perf_counter()
        await trio.sleep(seconds)
        ops1, t1 = counter.ops, time.perf_counter()
        counter.stop = True
    return ops1 - ops0, t1 - t0


def run_ouring(path: Path, tasks: int, seed: int, warmup: float, seconds: float) -> CellResult:
    size = path.stat().st_size
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    counter = Counter()
    mask = OFFSETS_PER_TASK - 1

    def worker(task: int) -> Callable[[], Awaitable[None]]:
        offsets = task_offsets(seed, task, size)

        async def run() -> None:
            buf = bytearray(BLOCK)
            read = ouring.read
            i = 0
            off = 0
            while not counter.stop:
                off = offsets[i & mask]
                i += 1
                buf, n = await read(fd, buf, off)
                if n != BLOCK:
                    raise short_read(n, off)
                counter.ops += 1
            if i:
                check_block(fd, buf, off)

        return run

    async def main() -> tuple[int, float, float]:
        ops, elapsed = await timed(counter, [worker(t) for t in range(tasks)], warmup, seconds)
        stats = ouring.current_ring().statistics()
        if stats.completed < counter.ops or stats.cancelled or stats.inflight:
            raise BrokenPathError(f"ring counters disagree with the reads done: {stats}")
        return ops, elapsed, stats.completed / max(stats.batches, 1)

    try:
        ops, elapsed, per_batch = trio.run(main)
    finally:
        os.close(fd)
    return CellResult("", ops, elapsed, ops / elapsed, per_batch)


def run_trio_open_file(
    path: Path, tasks: int, seed: int, warmup: float, seconds: float
) -> CellResult:
    size = path.stat().st_size
    check_fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    counter = Counter()
    mask = OFFSETS_PER_TASK - 1

    def worker(task: int) -> Callable[[], Awaitable[None]]:
        offsets = task_offsets(seed, task, size)

        async def run() -> None:
            # Unbuffered: each seek and read is one syscall in a worker thread.
            async with await trio.open_file(path, "rb", buffering=0) as f:
                data = b""
                i = 0
                off = 0
                while not counter.stop:
                    off = offsets[i & mask]
                    i += 1
                    await f.seek(off)
                    data = await f.read(BLOCK)
                    if len(data) != BLOCK:
                        raise short_read(len(data), off)
                    counter.ops += 1
            if i:
                check_block(check_fd, data, off)

        return run

    async def main() -> tuple[int, float]:
        return await timed(counter, [worker(t) for t in range(tasks)], warmup, seconds)

    try:
        ops, elapsed = trio.run(main)
    finally:
        os.close(check_fd)
    return CellResult("", ops, elapsed, ops / elapsed)


def run_preadv(path: Path, tasks: int, seed: int, warmup: float, seconds: float) -> CellResult:
    if tasks != 1:
        raise ValueError("the os.preadv row is one synchronous loop")
    size = path.stat().st_size
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    offsets = task_offsets(seed, 0, size)
    mask = OFFSETS_PER_TASK - 1
    buf = bytearray(BLOCK)
    bufs = [buf]
    preadv = os.preadv
    clock = time.perf_counter
    chunk = 64  # reads between looks at the clock

    def loop(duration: float, i: int) -> tuple[int, int, float]:
        """Read until ``duration`` passes; returns (next index, ops, elapsed)."""
        ops = 0
        start = clock()
        end = start + duration
        now = start
        off = 0
        while now < end:
            for _ in range(chunk):
                off = offsets[i & mask]
                i += 1
                n = preadv(fd, bufs, off)
                if n != BLOCK:
                    raise short_read(n, off)
            ops += chunk
            now = clock()
        check_block(fd, buf, off)
        return i, ops, now - start

    try:
        i, _, _ = loop(warmup, 0)
        _, ops, elapsed = loop(seconds, i)
    finally:
        os.close(fd)
    return CellResult("", ops, elapsed, ops / elapsed)


RUNNERS: dict[str, Callable[[Path, int, int, float, float], CellResult]] = {
    "ouring": run_ouring,
    "trio.open_file": run_trio_open_file,
    "os.preadv": run_preadv,
}


def make_rows(tasks: int) -> list[Row]:
    rows: list[Row] = []
    for impl, short in (("ouring", "ouring"), ("trio.open_file", "trio")):
        for n in sorted({1, tasks}):
            rows.append(Row(f"{short}-{n}", f"{impl}, {n} task{'s' if n > 1 else ''}", impl, n))
    rows.append(Row("preadv-1", "os.preadv loop, 1 thread", "os.preadv", 1))
    return rows


def run_cell(args: argparse.Namespace) -> None:
    rows = {row.name: row for row in make_rows(args.tasks)}
    row = rows[args.cell]
    warmup = min(0.3, args.seconds / 4)
    result = RUNNERS[row.impl](args.file, row.tasks, args.seed, warmup, args.seconds)
    print(json.dumps(asdict(replace(result, row=row.name))), flush=True)


# -- the driver (the parent process) ---------------------------------------------------------


def prepare_file(path: Path, size: int, seed: int) -> str:
    """Create ``path`` with ``size`` pseudo-random bytes unless it already has
    that size, then read it through once so it is in the page cache."""
    if size % BLOCK or size < BLOCK:
        raise SystemExit(f"--file-size must be a positive multiple of {BLOCK}")
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


def spawn_cell(row: Row, args: argparse.Namespace) -> CellResult:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--cell",
        row.name,
        "--file",
        str(args.file),
        "--seconds",
        repr(args.seconds),
        "--tasks",
        str(args.tasks),
        "--seed",
        str(args.seed),
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=args.seconds + 120, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"cell {row.name} failed (exit {done.returncode}):\n{done.stderr}")
    data: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return CellResult(**data)


def human(rate: float) -> str:
    if rate >= 1e6:
        return f"{rate / 1e6:.2f}M"
    if rate >= 1e3:
        return f"{rate / 1e3:.1f}k"
    return f"{rate:.0f}"


def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cpus = os.cpu_count()
    return (
        f"{cpus} CPUs{f' ({model})' if model else ''}, Linux {platform.release()}, "
        f"Python {platform.python_version()}, trio {trio.__version__}, ouring {ouring.__version__}"
    )


def print_table(
    rows: list[Row], results: dict[str, list[CellResult]], args: argparse.Namespace
) -> None:
    medians = {
        name: statistics.median(r.ops_per_s for r in cells) for name, cells in results.items()
    }
    preadv = medians.get("preadv-1")
    trio_by_tasks = {row.tasks: medians[row.name] for row in rows if row.impl == "trio.open_file"}

    header = ("row", "ops/s (median)", "min-max", "x trio.open_file", "x os.preadv", "ops/batch")
    lines: list[tuple[str, ...]] = []
    for row in rows:
        cells = results[row.name]
        median = medians[row.name]
        low = min(r.ops_per_s for r in cells)
        high = max(r.ops_per_s for r in cells)
        versus_trio = trio_by_tasks.get(row.tasks)
        batches = [r.ops_per_batch for r in cells if r.ops_per_batch is not None]
        lines.append(
            (
                row.label,
                human(median),
                f"{human(low)}-{human(high)}",
                f"{median / versus_trio:.2f}" if versus_trio else "-",
                f"{median / preadv:.3f}" if preadv else "-",
                f"{statistics.median(batches):.1f}" if batches else "-",
            )
        )
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header))]

    def fmt(line: Sequence[str]) -> str:
        first = line[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(line[1:], widths[1:], strict=True))
        return "| " + " | ".join([first, *rest]) + " |"

    print()
    print(f"Random {BLOCK // 1024} KiB reads at {BLOCK}-aligned offsets, page-cache-hot file")
    print(f"machine: {machine()}")
    print(
        f"file: {args.file_size / MIB:g} MiB ({args.file}), {args.seconds:g} s per cell, "
        f"{args.repeats} repeat(s), each cell a fresh process, rows interleaved"
    )
    print()
    print(fmt(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for line in lines:
        print(fmt(line))
    print()
    print("x trio.open_file: against the trio.open_file row with the same number of tasks")
    print("(1 for os.preadv). ops/batch: ouring completions per io_uring_enter that submitted.")


def run_all(args: argparse.Namespace) -> None:
    if args.file is None:
        args.file = RESULTS_DIR / f"bench_files-{args.file_size // MIB}MiB.dat"
    start = time.monotonic()
    how = prepare_file(args.file, args.file_size, args.seed)
    print(f"data file {args.file}: {how}, read through once ({time.monotonic() - start:.1f} s)")

    rows = make_rows(args.tasks)
    if args.rows:
        wanted = set(args.rows.split(","))
        rows = [row for row in rows if row.name in wanted]
        if not rows:
            raise SystemExit(f"--rows matches none of {[r.name for r in make_rows(args.tasks)]}")
    results: dict[str, list[CellResult]] = {row.name: [] for row in rows}
    for repeat in range(args.repeats):
        for row in rows:
            result = spawn_cell(row, args)
            results[row.name].append(result)
            print(
                f"  repeat {repeat + 1}/{args.repeats}  {row.label:<28} "
                f"{human(result.ops_per_s):>8} ops/s",
                flush=True,
            )
    print_table(rows, results, args)
    print(f"\ntotal time {time.monotonic() - start:.1f} s")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=2.0, help="measured time per cell")
    parser.add_argument("--repeats", type=int, default=3, help="cells per row")
    parser.add_argument("--quick", action="store_true", help="0.5 s per cell, 1 repeat")
    parser.add_argument("--tasks", type=int, default=32, help="concurrent tasks of the wide rows")
    parser.add_argument(
        "--file-size", type=int, default=256 * MIB, help="bytes in the data file (256 MiB)"
    )
    parser.add_argument(
        "--file", type=Path, default=None, help="data file (default: in benchmarks/results/)"
    )
    parser.add_argument("--rows", default="", help="comma-separated row names to run (all)")
    parser.add_argument("--seed", type=int, default=SEED, help=argparse.SUPPRESS)
    parser.add_argument("--cell", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.repeats = 0.5, 1
    if args.seconds <= 0 or args.repeats < 1 or args.tasks < 1:
        parser.error("--seconds must be > 0, --repeats and --tasks >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.cell is not None:
        run_cell(args)
    else:
        run_all(args)


if __name__ == "__main__":
    main()
