"""Shared pieces of the benchmark suite: results, timing loops, process helpers.

Every cell (one row of the table, one repeat) runs in a fresh process and
reports a :class:`CellResult` as one JSON line; :func:`run_python_cell` spawns
such a process and parses its answer. The timing loops :func:`timed_trio` and
:func:`timed_asyncio` start the workers, let them warm up, then count the
operations the workers report in a shared :class:`Counter` over a fixed
window, so that every Python row is measured by the same clock and the same
rule: operations *completed* inside the window.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import trio

import ouring

MIB = 1 << 20
BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
RUN_PY = BENCH_DIR / "run.py"


class BrokenPathError(AssertionError):
    """An operation returned something other than what the file or peer holds."""


class CellFailedError(RuntimeError):
    """A cell's process failed or printed no result."""


@dataclass(frozen=True)
class Row:
    """One line of the table: an implementation running one workload."""

    workload: str  #: "rand4k", "seq128k", "append", "echo64", "echo16k"
    impl: str  #: "ouring", "trio.open_file", "os.preadv", "fio-io_uring", ...
    tasks: int  #: concurrent tasks (iodepth for fio, connections for echo)
    label: str  #: what the table shows

    @property
    def key(self) -> str:
        return f"{self.workload}/{self.impl}/{self.tasks}"


@dataclass
class CellResult:
    """What one cell measured. ``unavailable`` set means the row could not run."""

    key: str
    ops: int = 0
    elapsed: float = 0.0
    ops_per_s: float = 0.0
    #: bytes moved per operation (0: the rate is shown in operations per second)
    op_bytes: int = 0
    #: ouring rows: completions per io_uring_enter that submitted (the batch size)
    ops_per_batch: float | None = None
    #: echo rows: server CPU time over wall time (1.0: one core fully busy)
    server_cpu: float | None = None
    unavailable: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, line: str) -> CellResult:
        data: dict[str, Any] = json.loads(line)
        return cls(**data)


class Counter:
    """Operations done by every worker of a cell; the workers share one thread."""

    __slots__ = ("ops", "stop")

    def __init__(self) -> None:
        self.ops = 0
        self.stop = False


def optional_module(name: str) -> ModuleType | None:
    """Import a peer that lives in the ``bench`` extra, or None when it is not
    installed (its rows then say "unavailable"). Imported by name so that the
    type check of the suite does not need the extra installed."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


async def timed_trio(
    counter: Counter,
    workers: Sequence[Callable[[], Awaitable[None]]],
    warmup: float,
    seconds: float,
) -> tuple[int, float]:
    """Run ``workers`` in a trio nursery; count ``counter.ops`` over ``seconds``
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


async def timed_asyncio(
    counter: Counter,
    workers: Sequence[Callable[[], Awaitable[None]]],
    warmup: float,
    seconds: float,
) -> tuple[int, float]:
    """:func:`timed_trio` for asyncio: the same window, the same rule."""
    tasks = [asyncio.ensure_future(worker()) for worker in workers]
    try:
        await asyncio.sleep(warmup)
        ops0, t0 = counter.ops, time.perf_counter()
        await asyncio.sleep(seconds)
        ops1, t1 = counter.ops, time.perf_counter()
        counter.stop = True
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
    return ops1 - ops0, t1 - t0


def run_python_cell(row: Row, options: Sequence[str], timeout: float) -> CellResult:
    """Run ``row`` in a fresh interpreter (``run.py --cell KEY OPTIONS``)."""
    command = [sys.executable, str(RUN_PY), "--cell", row.key, *options]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise CellFailedError(f"did not finish within {timeout:.0f} s") from None
    if done.returncode != 0:
        raise CellFailedError(f"exit {done.returncode}: {last_line(done.stderr)}")
    lines = done.stdout.strip().splitlines()
    if not lines:
        raise CellFailedError(f"printed nothing: {last_line(done.stderr)}")
    return CellResult.from_json(lines[-1])


def last_line(text: str) -> str:
    """The last non-empty line of a traceback: the exception."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "(no output)"


def cpu_pair() -> tuple[int, int] | None:
    """Two distinct CPUs this process may run on (server, load generator), or
    None on a one-CPU machine, where nothing is pinned."""
    cpus = sorted(os.sched_getaffinity(0))
    return (cpus[0], cpus[1]) if len(cpus) >= 2 else None


def pinned(cpu: int | None) -> Callable[[], None] | None:
    """A ``preexec_fn`` that pins the child process to ``cpu``."""
    if cpu is None:
        return None

    def pin() -> None:
        os.sched_setaffinity(0, {cpu})

    return pin


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
