"""Memory over many operations: is ouring's RSS flat over 10 million reads?

Runs ouring random 4 KiB reads of the suite's page-cache-hot file with 32
tasks under one ``trio.run`` (one ring) for ``--ops`` operations, and samples
the process's resident set size (``/proc/self/statm``) and the number of
objects the garbage collector tracks every ``--ops / 10`` operations. Any
per-operation leak (a lease, a future, a cdata, a completion record kept
alive) grows both linearly with the count, so the growth between the first
sample (taken once the ring, the tasks and the allocator are warm) and the
last one is the verdict: flat when RSS grew by at most ``FLAT_RSS_BYTES``
(0.2 bytes per operation over 10 million) and the object count did not grow
by more than ``FLAT_OBJECTS``.

Every read is checked to return 4096 bytes and every 1024th block is compared
with ``os.pread``, as in the speed rows; the ring's counters must account for
every read at the end.
"""

from __future__ import annotations

import argparse
import builtins
import gc
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import trio
from _harness import MIB, RESULTS_DIR, BrokenPathError, Counter, machine
from bench_files import (
    CHECK_EVERY,
    SEED,
    WORKLOADS,
    check_block,
    forever,
    prepare_file,
    task_offsets,
)

import ouring

FULL_OPS = 10_000_000
FLAT_RSS_BYTES = 2 * MIB
FLAT_OBJECTS = 1000
TASKS = 32
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Sample:
    ops: int
    seconds: float
    rss: int
    objects: int


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def measure(path: Path, total: int, samples: int) -> tuple[list[Sample], ouring.RingStatistics]:
    workload = WORKLOADS["rand4k"]
    size = path.stat().st_size
    block = workload.block
    every = max(total // samples, 1)
    counter = Counter()
    taken: list[Sample] = []
    start = time.perf_counter()
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)

    def sample() -> None:
        taken.append(
            Sample(counter.ops, time.perf_counter() - start, rss_bytes(), len(gc.get_objects()))
        )

    async def worker(task: int) -> None:
        offsets = task_offsets(workload, SEED, task, TASKS, size)
        buf = bytearray(block)
        read = ouring.read
        for off in forever(offsets):
            if counter.ops >= total:
                break
            buf, n = await read(fd, buf, off)
            if n != block:
                raise BrokenPathError(f"read at offset {off} returned {n} bytes, not {block}")
            counter.ops += 1
            if not counter.ops % CHECK_EVERY:
                check_block(fd, buf, off)
            if not counter.ops % every:
                sample()

    async def main() -> ouring.RingStatistics:
        async with trio.open_nursery() as nursery:
            for task in range(TASKS):
                nursery.start_soon(worker, task)
        stats = ouring.current_ring().statistics()
        if stats.completed < counter.ops or stats.cancelled or stats.inflight or stats.leaked:
            raise BrokenPathError(f"ring counters disagree with the reads done: {stats}")
        return stats

    try:
        stats = trio.run(main)
    finally:
        os.close(fd)
    return taken, stats


def report(taken: list[Sample], stats: ouring.RingStatistics) -> bool:
    """Print the samples and the verdict, and keep them in results/memory.txt."""
    lines: list[str] = []
    print = lines.append  # noqa: A001 - the report goes to stdout and the file below
    print(f"{'ops':>12} {'seconds':>8} {'RSS MiB':>9} {'gc objects':>11}")
    for s in taken:
        print(f"{s.ops:>12,} {s.seconds:>8.1f} {s.rss / MIB:>9.2f} {s.objects:>11,}")
    first, last = taken[0], taken[-1]
    growth = last.rss - first.rss
    objects = last.objects - first.objects
    ops = last.ops - first.ops
    rate = ops / max(last.seconds - first.seconds, 1e-9)
    flat = growth <= FLAT_RSS_BYTES and objects <= FLAT_OBJECTS
    print(
        f"from {first.ops:,} to {last.ops:,} ops: RSS {growth / MIB:+.2f} MiB "
        f"({growth / max(ops, 1):+.3f} B/op), gc objects {objects:+,}; {human_rate(rate)} ops/s"
    )
    print(f"ring: {stats}")
    print(
        f"verdict: {'FLAT' if flat else 'GROWS'} (flat: RSS growth <= {FLAT_RSS_BYTES / MIB:g} MiB"
        f" and gc objects growth <= {FLAT_OBJECTS})"
    )
    text = "\n".join(lines)
    builtins.print(text, flush=True)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "memory.txt").write_text(f"{machine()}\n{text}\n")
    return flat


def human_rate(rate: float) -> str:
    return f"{rate / 1e3:.1f}k" if rate < 1e6 else f"{rate / 1e6:.2f}M"


def run(path: Path, total: int) -> bool:
    print(f"\nMemory: {total:,} ouring random 4 KiB reads, {TASKS} tasks, one ring")
    taken, stats = measure(path, total, 10)
    if len(taken) < 2:
        raise SystemExit("too few operations for two samples")
    return report(taken, stats)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--ops", type=int, default=FULL_OPS, help="operations (10 million)")
    parser.add_argument("--file", type=Path, default=RESULTS_DIR / "bench_files-256MiB.dat")
    parser.add_argument("--check", action="store_true", help="exit 1 unless RSS is flat")
    args = parser.parse_args(argv)
    prepare_file(args.file, 256 * MIB, SEED)
    flat = run(args.file, args.ops)
    if args.check and not flat:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
