"""The benchmark suite of ``make bench``: ouring against its peers, side by side.

Runs the file rows (``bench_files.py``: random 4 KiB and sequential 128 KiB
reads of a page-cache-hot 256 MiB file at 1 and 32 tasks, 4 KiB appends with
fsync every 64) and the TCP echo rows (``bench_echo.py``: 50 connections
ping-ponging 64 B and 16 KiB messages, server and C load generator pinned to
different CPUs), the idle rows (``bench_idle.py``: the echo servers' RSS with
10,000 idle TCP connections, one repeat with ``--quick``), then, in the full run,
the memory check (``bench_memory.py``: RSS over 10 million ouring reads).

Method: every cell (one row, one repeat) runs in a fresh process; rows are
interleaved across repeats (for each repeat every row once), so that drift of
the machine (other work, frequency, page cache) spreads over all rows alike;
each row shows the median and the min-max spread of its repeats. The echo rows
get more repeats (5 against 3): two processes and the loopback stack on a VM
spread a 1.5-second echo cell by up to +-30% from one cell to the next, where
file cells spread far less, and a median of 3 still moves with one outlier. Ratios are
taken against ``trio.open_file`` / ``trio.serve_tcp`` (same workload, same
number of tasks; the one-thread rows against one task) and, for file rows,
against the synchronous ``os.preadv`` / ``os.write`` loop. The asyncio tables
(issue 15) put ouring under asyncio beside asyncio's own peers in the same run:
random 4 KiB reads against ``aiofiles`` and ``aiofile`` (caio), TCP echo
against asyncio streams on the default loop and on uvloop; ouring's rows there
say "not available" until its asyncio executor and ``ouring.asyncio`` exist,
and their targets say SKIP meanwhile. The table is printed
and written to ``benchmarks/results/bench.md``, with a bar chart in
``benchmarks/results/bench.png``.

``--check`` compares ouring's ratios with the must-reach values of
:data:`TARGETS`, prints each as PASS or FAIL, and exits 1 if any fails. A cell
whose checks fail (a wrong byte, a short read) is shown as FAILED and makes
the run exit 1 as well; it never posts a number.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import bench_echo
import bench_files
import bench_idle
import bench_static
from _harness import (
    MIB,
    RESULTS_DIR,
    BrokenPathError,
    CellFailedError,
    CellResult,
    Row,
    human,
    machine,
    optional_module,
    run_python_cell,
)

TASKS = 32  #: concurrent tasks of the wide file rows


@dataclass(frozen=True)
class Target:
    """ouring's row must reach ``limit`` times the ``versus`` row: at least
    that for a rate, at most that when ``lower`` is better (memory).

    ``optional``: the target is SKIP, not FAIL, while one of its two rows is
    unavailable (ouring's asyncio executor not there yet, a peer that does not
    install here); a row whose checks failed still makes it FAIL. ``quick``:
    ``--quick --check`` (``make bench-check``) measures it; the full run always."""

    what: str
    row: str
    versus: str
    limit: float
    lower: bool = False
    optional: bool = False
    quick: bool = True

    def met(self, got: float) -> bool:
        return got <= self.limit if self.lower else got >= self.limit


IDLE = bench_idle.CONNECTIONS

#: The must-reach values of issues 5, 14, 15 and 16, checked by ``make bench-check``. Issue 14's:
#: plain ``trio.serve_tcp`` on ouring's installed socket factory must beat the same program
#: on trio's own sockets (the socket path must never be slower than trio's own). Issue 16's:
#: with 10,000 idle connections ouring's server holds no more memory than trio's.
TARGETS = (
    Target("rand 4 KiB, 32 tasks", f"rand4k/ouring/{TASKS}", f"rand4k/trio.open_file/{TASKS}", 30),
    Target("rand 4 KiB, 32 tasks", f"rand4k/ouring/{TASKS}", "rand4k/os/1", 0.25),
    Target("rand 4 KiB, 1 task", "rand4k/ouring/1", "rand4k/trio.open_file/1", 10),
    Target("seq 128 KiB, 32 tasks (MB/s)", f"seq128k/ouring/{TASKS}", "seq128k/os/1", 0.6),
    Target("echo 64 B", "echo64/ouring/50", "echo64/trio/50", 1.0),
    Target("echo 16 KiB", "echo16k/ouring/50", "echo16k/trio/50", 1.0),
    Target("echo 64 B, ouring factory", "echo64/ouring-factory/50", "echo64/trio/50", 1.2),
    Target("echo 16 KiB, ouring factory", "echo16k/ouring-factory/50", "echo16k/trio/50", 1.0),
    # Issue 16: ouring's own stream class (ouring.trio.SocketListener's streams).
    Target("echo 64 B, ouring's stream", "echo64/ouring-own/50", "echo64/trio/50", 1.5),
    Target("echo 16 KiB, ouring's stream", "echo16k/ouring-own/50", "echo16k/trio/50", 1.5),
    # Issue 16: the static file server, 1 MiB files at 50 connections.
    Target("static 1 MiB, splice", "static1m/ouring-splice/50", "static1m/trio/50", 2.0),
    Target("static 1 MiB, splice", "static1m/ouring-splice/50", "static1m/ouring-copy/50", 1.3),
    Target("idle conns RSS", f"idle/ouring/{IDLE}", f"idle/trio/{IDLE}", 1.0, lower=True),
    Target(
        "idle conns RSS, ouring factory",
        f"idle/ouring-factory/{IDLE}",
        f"idle/trio/{IDLE}",
        1.0,
        lower=True,
    ),
    # Issue 15: ouring under asyncio, against asyncio's file libraries and streams.
    Target(
        "asyncio rand 4 KiB, 32 tasks",
        f"rand4k/ouring-asyncio/{TASKS}",
        f"rand4k/aiofiles/{TASKS}",
        30,
        optional=True,
    ),
    Target(
        "asyncio rand 4 KiB, 32 tasks",
        f"rand4k/ouring-asyncio/{TASKS}",
        f"rand4k/aiofile/{TASKS}",
        1.0,
        optional=True,
    ),
    Target(
        "asyncio echo 64 B",
        "echo64/ouring-asyncio/50",
        "echo64/asyncio/50",
        1.0,
        optional=True,
    ),
    Target(
        "asyncio echo 16 KiB",
        "echo16k/ouring-asyncio/50",
        "echo16k/asyncio/50",
        1.0,
        optional=True,
        quick=False,
    ),
)


@dataclass(frozen=True)
class Versus:
    """A ratio column: each row against the row of ``impl`` (None: no such
    ratio, the column shows "-") with the same tasks, or with ``tasks``."""

    header: str
    impl: str | None
    tasks: int | None = None
    digits: int = 2


@dataclass(frozen=True)
class Group:
    """One table: the rows of ``workload`` whose impl is in ``impls`` (in that
    order; None: all of them but ``exclude``), compared with ``versus``. ``cpu``:
    what the last column shows, the server's CPU ("server CPU", echo and static
    cells) or the cell's whole process ("CPU", the asyncio read cells)."""

    workload: str
    title: str
    versus: tuple[Versus, Versus]
    impls: tuple[str, ...] | None = None
    exclude: frozenset[str] = frozenset()
    cpu: str = "server CPU"

    def members(self, rows: Sequence[Row]) -> list[Row]:
        mine = [r for r in rows if r.workload == self.workload and r.impl not in self.exclude]
        if self.impls is None:
            return mine
        order = {impl: i for i, impl in enumerate(self.impls)}
        return sorted((r for r in mine if r.impl in order), key=lambda r: order[r.impl])


X_TRIO_FILE = Versus("x trio", "trio.open_file")
X_OS = Versus("x os loop", "os", tasks=1, digits=3)
X_TRIO = Versus("x trio", "trio")
NO_RATIO = Versus("x os loop", None)
#: The rows of the asyncio tables that the trio tables leave out (aiofiles, anyio,
#: asyncio and uvloop streams are in both: each table compares with its own peers).
ASYNCIO_ONLY = frozenset(
    {*bench_files.ASYNCIO_READ_IMPLS, *bench_echo.ASYNCIO_LOOPS, "ouring-asyncio"}
) - {"asyncio", "uvloop"}
ASYNCIO_READS = ("ouring-asyncio", "aiofile", "aiofiles", "anyio", "run_in_executor")
ASYNCIO_ECHO = ("ouring-asyncio", "asyncio", "uvloop", "uringcore", "rsloop")

GROUPS = (
    Group(
        "rand4k",
        "Random 4 KiB reads, page-cache-hot file (ops/s)",
        (X_TRIO_FILE, X_OS),
        exclude=ASYNCIO_ONLY,
    ),
    Group(
        "rand4k",
        "Random 4 KiB reads under asyncio, page-cache-hot file (ops/s)",
        (Versus("x aiofiles", "aiofiles"), Versus("x aiofile", "aiofile")),
        impls=ASYNCIO_READS,
        cpu="CPU",
    ),
    Group("seq128k", "Sequential 128 KiB reads, page-cache-hot file (MiB/s)", (X_TRIO_FILE, X_OS)),
    Group("append", "4 KiB appends, fsync every 64 writes (writes/s)", (X_TRIO_FILE, X_OS)),
    *(
        group
        for workload, size in (("echo64", "64 B"), ("echo16k", "16 KiB"))
        for group in (
            Group(
                workload,
                f"TCP echo, 50 connections, {size} messages (requests/s)",
                (X_TRIO, NO_RATIO),
                exclude=ASYNCIO_ONLY,
            ),
            Group(
                workload,
                f"TCP echo under asyncio, 50 connections, {size} messages (requests/s)",
                (Versus("x asyncio", "asyncio"), Versus("x uvloop", "uvloop")),
                impls=ASYNCIO_ECHO,
            ),
        )
    ),
    Group(
        "static1m",
        "Static file server, 1 MiB files, 50 keep-alive connections (requests/s)",
        (X_TRIO, NO_RATIO),
    ),
)


def all_rows() -> list[Row]:
    return bench_files.rows(TASKS) + bench_echo.rows() + bench_static.rows() + bench_idle.rows()


def is_echo(row: Row) -> bool:
    return row.workload in bench_echo.SIZES


def is_static(row: Row) -> bool:
    return row.workload in bench_static.WORKLOADS


def is_net(row: Row) -> bool:
    """A server row (echo, static files): a server process and a load generator."""
    return is_echo(row) or is_static(row)


def is_idle(row: Row) -> bool:
    return row.workload == bench_idle.WORKLOAD


def is_file(row: Row) -> bool:
    return not is_net(row) and not is_idle(row)


# -- one cell --------------------------------------------------------------------------------


def cell_main(args: argparse.Namespace) -> None:
    """Inside the fresh process of a Python file cell: run it, print its JSON."""
    row = {r.key: r for r in all_rows()}[args.cell]
    result = bench_files.run_cell(row, args.file, args.seed, args.warmup, args.seconds)
    print(replace(result, key=row.key).to_json(), flush=True)


def run_one(row: Row, args: argparse.Namespace) -> CellResult:
    """One cell of ``row`` in fresh processes; a failed check becomes FAILED."""
    try:
        if is_echo(row):
            return bench_echo.run_cell(row, args.echo_warmup, args.echo_seconds)
        if is_static(row):
            return bench_static.run_cell(row, args.echo_warmup, args.echo_seconds)
        if is_idle(row):
            return bench_idle.run_cell(row, args.idle_connections)
        if row.impl.startswith("fio"):
            result = bench_files.fio_cell(row, args.file, args.warmup, args.seconds)
            return replace(result, key=row.key)
        options = [
            *("--file", str(args.file), "--seed", str(args.seed)),
            *("--seconds", repr(args.seconds), "--warmup", repr(args.warmup)),
        ]
        return run_python_cell(row, options, timeout=args.seconds + args.warmup + 120)
    except (CellFailedError, BrokenPathError, subprocess.SubprocessError) as exc:
        return CellResult(row.key, unavailable=f"FAILED: {exc}")


# -- the table -------------------------------------------------------------------------------


def rate(result: CellResult, row: Row) -> float:
    """What the table shows: MiB/s for sequential reads, the server's RSS in
    bytes for the idle rows, operations/s otherwise."""
    if is_idle(row):
        return float(result.extra["rss"])
    return (
        result.ops_per_s * result.op_bytes / MIB if row.workload == "seq128k" else result.ops_per_s
    )


def shown(result: CellResult, row: Row) -> str:
    """A cell's figure in the progress lines."""
    if result.unavailable:
        return result.unavailable
    if is_idle(row):
        return f"{rate(result, row) / MIB:>7.1f} MiB RSS, {result.extra['connections']:,} conns"
    return f"{human(rate(result, row)):>8}"


@dataclass
class Line:
    row: Row
    median: float | None
    low: float | None
    high: float | None
    note: str  #: why there is no number


def summarize(rows: list[Row], results: dict[str, list[CellResult]]) -> dict[str, Line]:
    lines: dict[str, Line] = {}
    for row in rows:
        cells = results[row.key]
        bad = [c.unavailable for c in cells if c.unavailable]
        if bad:
            note = bad[0] or ""
            lines[row.key] = Line(
                row, None, None, None, note if len(note) < 120 else note[:117] + "..."
            )
            continue
        rates = [rate(c, row) for c in cells]
        lines[row.key] = Line(row, statistics.median(rates), min(rates), max(rates), "")
    return lines


def ratio(lines: dict[str, Line], key: str, versus: str) -> float | None:
    a, b = lines.get(key), lines.get(versus)
    if a is None or b is None or a.median is None or not b.median:
        return None
    return a.median / b.median


def versus_key(row: Row, versus: Versus) -> str | None:
    """The key of the row that ``row`` is compared with in ``versus``'s column."""
    if versus.impl is None:
        return None
    return f"{row.workload}/{versus.impl}/{versus.tasks or row.tasks}"


def cpu_of(cell: CellResult, group: Group) -> float | None:
    if group.cpu == "CPU":
        cpu: float | None = cell.extra.get("cpu")
        return cpu
    return cell.server_cpu


def notes(group: Group, members: list[Row], results: dict[str, list[CellResult]]) -> list[str]:
    """What the asyncio tables say under themselves: which backend caio chose."""
    out: list[str] = []
    for row in members:
        if row.impl == "aiofile":
            chosen = {c.extra["caio"] for c in results[row.key] if "caio" in c.extra}
            if chosen:
                out.append(f"aiofile here: {', '.join(sorted(chosen))}.")
                break
    return out


def table(
    rows: list[Row], results: dict[str, list[CellResult]], wanted: int | None = None
) -> list[str]:
    """The sections of the table; ``wanted``: the idle rows' connections."""
    lines = summarize(rows, results)
    out: list[str] = []
    for group in GROUPS:
        members = group.members(rows)
        if not members:
            continue
        header = (
            "row",
            "median",
            "min-max",
            *(v.header for v in group.versus),
            "ops/batch",
            group.cpu,
        )
        body: list[tuple[str, ...]] = []
        for row in members:
            line = lines[row.key]
            cells = results[row.key]
            if line.median is None or line.low is None or line.high is None:
                body.append((row.label, line.note, "", "", "", "", ""))
                continue
            ratios = []
            for versus in group.versus:
                key = versus_key(row, versus)
                x = ratio(lines, row.key, key) if key else None
                ratios.append(f"{x:.{versus.digits}f}" if x is not None else "-")
            batches = [c.ops_per_batch for c in cells if c.ops_per_batch is not None]
            cpu = [x for c in cells if (x := cpu_of(c, group)) is not None]
            body.append(
                (
                    row.label,
                    human(line.median),
                    f"{human(line.low)}-{human(line.high)}",
                    *ratios,
                    f"{statistics.median(batches):.1f}" if batches else "-",
                    f"{statistics.median(cpu):.0%}" if cpu else "-",
                )
            )
        # A row without a number spans the line with its reason: its label sizes the
        # first column, its reason no column.
        sized = [header, *(b for b in body if any(b[2:]))]
        widths = [max(len(b[0]) for b in [header, *body])]
        widths += [max(len(b[i]) for b in sized) for i in range(1, len(header))]

        def fmt(cells: Sequence[str], widths: list[int] = widths) -> str:
            if not any(cells[2:]):  # a row without a number: the reason spans the line
                return f"| {cells[0].ljust(widths[0])} | {cells[1]}"
            first = cells[0].ljust(widths[0])
            rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
            return "| " + " | ".join([first, *rest]) + " |"

        out += ["", f"### {group.title}", "", fmt(header)]
        out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        out += [fmt(b) for b in body]
        if extra := notes(group, members, results):
            out += ["", *extra]
    out += [
        "",
        "x trio: against trio.open_file (files), trio.serve_tcp (echo) or the static",
        "server on trio's streams and trio.open_file, with the same number of tasks (1 for",
        "the one-thread rows); x os loop: against the synchronous os.preadv / os.write",
        "loop. ops/batch: ouring completions per io_uring_enter that submitted. server",
        "CPU: the server's CPU time over its wall time. The asyncio tables: x aiofiles,",
        "x aiofile, x asyncio (streams on the default loop), x uvloop (streams on uvloop)",
        "with the same tasks; CPU: the cell's process CPU time over wall time (its thread",
        "pools and a kernel SQPOLL thread included).",
    ]
    idle = [r for r in rows if is_idle(r)]
    out += bench_idle.table(idle, results, wanted)
    return out


def check(rows: list[Row], results: dict[str, list[CellResult]]) -> tuple[list[str], bool]:
    lines = summarize(rows, results)
    out = ["", "Targets (issues 5, 14, 15 and 16; x against the row named):"]
    ok = True
    for target in TARGETS:
        if target.row not in results or target.versus not in results:
            continue  # a quick check leaves out the full run's targets
        got = ratio(lines, target.row, target.versus)
        versus = target.versus.split("/")[1]
        if target.row.startswith("static"):
            versus = {"trio": "trio streams + open_file"}.get(versus, versus)
        elif target.row.split("/")[1] == "ouring-asyncio":
            versus = {"asyncio": "asyncio streams"}.get(versus, versus)
        else:
            versus = {"os": "os loop", "trio": "trio.serve_tcp"}.get(versus, versus)
        bound = f"<= {target.limit:g}x" if target.lower else f">= {target.limit:g}x"
        if got is None:
            # Why a row has no number: ouring's own note as it is, the peer's named.
            notes = [
                (lines[key].note, "" if key == target.row else f"{versus}: ")
                for key in (target.row, target.versus)
                if key in lines and lines[key].note
            ]
            why = "; ".join(prefix + note for note, prefix in notes) or "not measured"
            failed = not notes or any(note.startswith("FAILED") for note, _ in notes)
            verdict = "SKIP" if target.optional and not failed else "FAIL"
            shown = f"({why})"
        else:
            verdict = "PASS" if target.met(got) else "FAIL"
            shown = f"{got:.2f}x"
        ok = ok and verdict != "FAIL"
        out.append(f"  {verdict}  {target.what:<32} ouring {shown} {versus}, must reach {bound}")
    return out, ok


def chart(rows: list[Row], results: dict[str, list[CellResult]], path: Path) -> str:
    """A bar chart of the medians (min-max whiskers), one panel per workload."""
    matplotlib = optional_module("matplotlib")
    if matplotlib is None:
        return "no chart: matplotlib is not installed (pip install '.[bench]')"
    matplotlib.use("Agg")
    plt = optional_module("matplotlib.pyplot")
    assert plt is not None
    lines = summarize(rows, results)
    panels: list[tuple[str, list[Line]]] = []
    for group in GROUPS:
        mine = group.members(rows)
        counts = sorted({r.tasks for r in mine})
        for n in counts if group.workload in ("rand4k", "seq128k") else [None]:
            members = [
                lines[r.key]
                for r in mine
                if (n is None or r.tasks == n or r.impl in ("os", "fio-psync"))
                and lines[r.key].median is not None
            ]
            if members:
                suffix = f" - {n} task{'s' if n and n > 1 else ''}" if n else ""
                panels.append((group.title + suffix, members))
    if not panels:
        return "no chart: no row has a number"
    fig, axes = plt.subplots(
        len(panels), 1, figsize=(10, 2.0 + 0.9 * sum(len(m) for _, m in panels) / 2)
    )
    for ax, (title, members) in zip([axes] if len(panels) == 1 else axes, panels, strict=True):
        medians = [m.median or 0.0 for m in members]
        lows = [(m.median or 0.0) - (m.low or 0.0) for m in members]
        highs = [(m.high or 0.0) - (m.median or 0.0) for m in members]
        colors = ["tab:orange" if m.row.impl.startswith("ouring") else "tab:blue" for m in members]
        y = range(len(members))
        ax.barh(y, medians, xerr=[lows, highs], color=colors, capsize=2)
        ax.set_yticks(list(y), [m.row.label for m in members], fontsize=7)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_title(title, fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
        for i, value in enumerate(medians):
            ax.text(value, i, f" {human(value)}", va="center", fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"chart: {path}"


# -- the driver ------------------------------------------------------------------------------


def select(args: argparse.Namespace) -> list[Row]:
    rows = all_rows()
    if args.check and not args.rows:
        # The check needs only the rows its targets compare: fewer cells, so
        # each can be repeated and a median (not one cell that a noisy
        # neighbour slowed down) decides the verdict.
        wanted = {
            key
            for target in TARGETS
            if target.quick or not args.quick
            for key in (target.row, target.versus)
        }
        rows = [r for r in rows if r.key in wanted]
    if args.only == "files":
        rows = [r for r in rows if is_file(r)]
    elif args.only == "echo":
        rows = [r for r in rows if is_echo(r)]
    elif args.only == "static":
        rows = [r for r in rows if is_static(r)]
    elif args.only == "idle":
        rows = [r for r in rows if is_idle(r)]
    if args.rows:
        wanted = args.rows.split(",")
        rows = [r for r in rows if any(r.key.startswith(w) for w in wanted)]
        if not rows:
            raise SystemExit(f"--rows matches none of {[r.key for r in all_rows()]}")
    return rows


def run_suite(args: argparse.Namespace) -> int:
    start = time.monotonic()
    rows = select(args)
    if any(is_file(r) for r in rows) or args.memory:
        how = bench_files.prepare_file(args.file, args.file_size, args.seed)
        print(f"data file {args.file}: {how}, read through once ({time.monotonic() - start:.1f} s)")
    results: dict[str, list[CellResult]] = {r.key: [] for r in rows}
    rounds = max(args.repeats, args.echo_repeats) if any(map(is_echo, rows)) else args.repeats
    for repeat in range(rounds):
        for row in rows:
            done = results[row.key]
            if done and done[0].unavailable:
                continue  # unavailable or failed once: not run again
            if is_idle(row) and repeat >= args.idle_repeats:
                continue  # RSS does not vary with the machine's load as speed does
            wanted = args.echo_repeats if is_echo(row) else args.repeats
            if repeat >= wanted:
                continue
            result = run_one(row, args)
            done.append(result)
            print(f"  {repeat + 1}/{wanted}  {row.label:<44} {shown(result, row)}", flush=True)

    text = [
        f"machine: {machine()}",
        f"file cells: {args.seconds:g} s after {args.warmup:g} s warm-up; echo cells: "
        f"{args.echo_seconds:g} s after {args.echo_warmup:g} s; {args.repeats} repeat(s), "
        f"echo {args.echo_repeats}; each cell a fresh process, rows interleaved",
        *table(rows, results, args.idle_connections),
    ]
    ok = True
    if args.check or not args.only:
        # The whole suite shows the targets too (only --check fails on them).
        lines, ok = check(rows, results)
        text += lines
    print("\n".join(text))
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "bench.md").write_text("\n".join(text) + "\n")
    print(f"\ntable: {RESULTS_DIR / 'bench.md'}")
    print(chart(rows, results, RESULTS_DIR / "bench.png"))
    failed = [
        k
        for k, cells in results.items()
        if any((c.unavailable or "").startswith("FAILED") for c in cells)
    ]
    if failed:
        print(f"FAILED cells (their checks did not pass): {', '.join(failed)}")
    if args.memory:
        memory = subprocess.run(
            [
                sys.executable,
                str(Path(__file__).with_name("bench_memory.py")),
                "--ops",
                str(args.memory),
                "--file",
                str(args.file),
            ],
            check=False,
        )
        ok = ok and memory.returncode == 0
    print(f"\ntotal time {time.monotonic() - start:.1f} s")
    if args.check and not ok:
        print("bench-check: some targets FAIL")
    return 1 if failed or (args.check and not ok) else 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the ~30-second version: short cells, 1 repeat (with --check: 3 repeats "
        "of only the rows the targets compare)",
    )
    parser.add_argument("--check", action="store_true", help="check ouring against TARGETS")
    parser.add_argument(
        "--only", choices=("files", "echo", "static", "idle"), help="one section of the suite"
    )
    parser.add_argument("--rows", default="", help="comma-separated prefixes of row keys")
    parser.add_argument("--seconds", type=float, help="measured seconds per file cell (1)")
    parser.add_argument("--echo-seconds", type=float, help="measured seconds per echo cell (1.5)")
    parser.add_argument("--repeats", type=int, help="cells per row (3)")
    parser.add_argument("--echo-repeats", type=int, help="cells per echo row (5)")
    parser.add_argument(
        "--idle-connections", type=int, help="connections of the idle rows (10,000)"
    )
    parser.add_argument(
        "--memory", type=int, help="ouring reads of the memory check (10 million; quick: 0 = off)"
    )
    parser.add_argument("--file-size", type=int, default=256 * MIB, help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, default=None, help="data file (in results/)")
    parser.add_argument("--seed", type=int, default=bench_files.SEED, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--cell", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {
        "seconds": 0.25 if quick else 1.0,
        "warmup": 0.1 if quick else 0.3,
        # The check's echo cells are longer than a quick look's: their ratios
        # decide PASS or FAIL, and a half-second cell spreads too far here.
        "echo_seconds": (1.0 if args.check else 0.5) if quick else 1.5,
        "repeats": 1 if quick and not args.check else 3,
        "memory": 0 if quick else 10_000_000,
        "idle_connections": bench_idle.QUICK_CONNECTIONS if quick else bench_idle.CONNECTIONS,
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.echo_repeats is None:
        args.echo_repeats = args.repeats if quick and not args.check else max(args.repeats, 5)
    args.echo_warmup = min(0.5, args.echo_seconds / 3)
    # The idle rows' RSS is the same from one repeat to the next: quick runs one.
    args.idle_repeats = 1 if quick else args.repeats
    if args.file is None:
        args.file = RESULTS_DIR / f"bench_files-{args.file_size // MIB}MiB.dat"
    if (
        args.seconds <= 0
        or args.echo_seconds <= 0
        or args.repeats < 1
        or args.echo_repeats < 1
        or args.memory < 0
    ):
        parser.error(
            "--seconds and --echo-seconds must be > 0, --repeats and --echo-repeats >= 1, "
            "--memory >= 0"
        )
    if args.idle_connections < 1:
        parser.error("--idle-connections must be >= 1")
    if args.only in ("echo", "static", "idle"):
        args.memory = 0
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.cell is not None:
        cell_main(args)
        return
    sys.exit(run_suite(args))


if __name__ == "__main__":
    main()
