"""The idle-connections bench row (benchmarks/bench_idle.py) on a few connections, so it
cannot rot: a real server process per row, a real client process, real sockets on 127.0.0.1."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import bench_idle  # noqa: E402
import run  # noqa: E402
from _harness import CellResult  # noqa: E402

CONNECTIONS = 20


@pytest.mark.io_uring_only
@pytest.mark.parametrize("impl", list(bench_idle.SERVERS))
def test_cell_holds_the_connections_and_reads_the_servers_rss(impl: str) -> None:
    row = next(r for r in bench_idle.rows() if r.impl == impl)
    cell = bench_idle.run_cell(row, CONNECTIONS)
    assert cell.unavailable is None
    extra = cell.extra
    assert extra["connections"] == CONNECTIONS
    # Real readings of the server process: a Python process with trio holds
    # megabytes, and its peak is at least what it holds.
    assert extra["rss0"] > 8 * bench_idle.MIB
    assert extra["hwm"] >= extra["rss"]
    # Every connection's handler is alive and parked: the objects grew with them.
    assert extra["objects"] - extra["objects0"] >= CONNECTIONS


def test_rows_are_in_the_suite_with_lower_is_better_targets() -> None:
    keys = {r.key for r in run.all_rows()}
    idle = [t for t in run.TARGETS if t.row.startswith("idle/")]
    assert idle
    for target in idle:
        assert {target.row, target.versus} <= keys
        assert target.lower
        assert target.met(0.9)
        assert not target.met(1.1)
    args = run.parse_args(["--quick", "--check"])
    assert {r.key for r in run.select(args) if run.is_idle(r)} == {t.row for t in idle} | {
        t.versus for t in idle
    }


def test_table_shows_bytes_per_connection_and_the_ratio() -> None:
    rows = bench_idle.rows()
    results = {
        r.key: [
            CellResult(
                r.key,
                ops=1000,
                extra={
                    "connections": 1000,
                    "rss0": 40 * bench_idle.MIB,
                    "rss": 40 * bench_idle.MIB + 1000 * (4096 if r.impl == "trio" else 2048),
                    "hwm": 50 * bench_idle.MIB,
                    "objects0": 100,
                    "objects": 100 + 1000 * 25,
                },
            )
        ]
        for r in rows
    }
    text = "\n".join(bench_idle.table(rows, results, 1000))
    assert "server RSS with 1,000 open" in text
    assert "4.00 KiB" in text  # trio's bytes per connection
    assert "2.00 KiB" in text
    assert "25.0" in text  # objects per connection
    # ouring's RSS over trio's: (40 MiB + 2,048,000 B) / (40 MiB + 4,096,000 B) = 0.956
    assert " 0.96 " in text
    assert "RLIMIT_NOFILE" not in text
    assert "allows 1,000, not 2,000" in "\n".join(bench_idle.table(rows, results, 2000))
