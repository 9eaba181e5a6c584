"""The asyncio tables of the bench suite (issue 15): real cells of the rows that need no
peer from the bench extra, on a small file and real sockets, so they cannot rot; and the
tables and targets built from them, with the skip rule for ouring's asyncio rows."""

from __future__ import annotations

import asyncio
import os
import random
import sys
from pathlib import Path

import pytest

import ouring

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import bench_echo  # noqa: E402
import bench_files  # noqa: E402
import run  # noqa: E402
from _harness import CellResult, Row, optional_module  # noqa: E402

TASKS = run.TASKS


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "data.bin"
    path.write_bytes(random.Random(7).randbytes(1 << 20))
    return path


def row(key: str) -> Row:
    return next(r for r in run.all_rows() if r.key == key)


def read_cell(key: str, path: Path) -> CellResult:
    return bench_files.run_cell(row(key), path, seed=1, warmup=0.05, seconds=0.2)


def ouring_runs_under_asyncio(path: Path) -> bool:
    """What the rows should find: does ``ouring.read`` work inside asyncio.run?"""

    async def probe() -> bool:
        fd = os.open(path, os.O_RDONLY)
        try:
            await ouring.read(fd, bytearray(1), 0)
        except RuntimeError:
            return False
        finally:
            os.close(fd)
        return True

    return asyncio.run(probe())


@pytest.mark.parametrize("tasks", [1, TASKS])
def test_run_in_executor_cell_reads_and_reports_its_cpu(data_file: Path, tasks: int) -> None:
    cell = read_cell(f"rand4k/run_in_executor/{tasks}", data_file)
    assert cell.unavailable is None
    assert cell.ops > 0
    assert cell.op_bytes == 4096
    assert cell.ops_per_s == pytest.approx(cell.ops / cell.elapsed)
    # The process's CPU over wall time: a thread pool doing reads is busy.
    assert 0.05 < cell.extra["cpu"] < (os.cpu_count() or 1) + 0.5


def test_ouring_asyncio_cell_runs_exactly_when_ouring_reads_under_asyncio(
    data_file: Path,
) -> None:
    cell = read_cell(f"rand4k/ouring-asyncio/{TASKS}", data_file)
    if ouring_runs_under_asyncio(data_file):
        assert cell.unavailable is None
        assert cell.ops > 0
        assert cell.ops_per_batch is not None
    else:
        assert cell.unavailable == "ouring under asyncio not available"


def test_aiofile_cell_measures_and_names_caios_backend_or_says_it_is_missing(
    data_file: Path,
) -> None:
    cell = read_cell("rand4k/aiofile/1", data_file)
    if optional_module("aiofile") is None:  # `make test` installs no bench extra
        assert cell.unavailable == "aiofile is not installed (pip install '.[bench]')"
        return
    assert cell.unavailable is None
    assert cell.ops > 0
    assert cell.extra["caio"].startswith("caio ")
    assert "backend " in cell.extra["caio"]


def test_asyncio_echo_rows_default_loop_measures_and_missing_servers_say_why() -> None:
    cell = bench_echo.run_cell(row("echo64/asyncio/50"), warmup=0.1, seconds=0.3)
    assert cell.unavailable is None
    assert cell.ops > 0
    assert cell.server_cpu is not None
    ours = bench_echo.run_cell(row("echo64/ouring-asyncio/50"), warmup=0.1, seconds=0.3)
    if optional_module("ouring.asyncio") is None:
        assert ours.unavailable == "ouring.asyncio does not exist yet"
    else:
        assert ours.unavailable is None or "start_server" in ours.unavailable
    for impl in ("uringcore", "rsloop"):
        cell = bench_echo.run_cell(row(f"echo64/{impl}/50"), warmup=0.1, seconds=0.3)
        if optional_module(impl) is None:
            assert cell.unavailable == bench_echo.MISSING[impl]
        else:
            assert cell.unavailable is None
            assert cell.ops > 0


def measured(key: str, rate: float) -> list[CellResult]:
    return [CellResult(key, 100, 1.0, rate * k, 4096) for k in (0.9, 1.0, 1.1)]


def asyncio_results(ouring_rate: float | None, note: str = "") -> dict[str, list[CellResult]]:
    rates = {"aiofile": 50_000.0, "aiofiles": 5_000.0, "anyio": 4_000.0, "run_in_executor": 6e3}
    results: dict[str, list[CellResult]] = {}
    for impl, rate in rates.items():
        for n in (1, TASKS):
            results[f"rand4k/{impl}/{n}"] = measured(f"rand4k/{impl}/{n}", rate)
    for n in (1, TASKS):
        key = f"rand4k/ouring-asyncio/{n}"
        if ouring_rate is None:
            results[key] = [CellResult(key, unavailable=note)]
        else:
            results[key] = measured(key, ouring_rate)
    for workload in ("echo64", "echo16k"):
        for impl, rate in {"asyncio": 20e3, "uvloop": 40e3, "ouring-asyncio": 30e3}.items():
            results[f"{workload}/{impl}/50"] = measured(f"{workload}/{impl}/50", rate)
    return results


def verdicts(results: dict[str, list[CellResult]]) -> dict[tuple[str, str], str]:
    rows = [r for r in run.all_rows() if r.key in results]
    lines, _ = run.check(rows, results)
    targets = [t for t in run.TARGETS if t.row in results and t.versus in results]
    got = [line.split()[0] for line in lines[2:]]
    return {(t.row, t.versus): v for t, v in zip(targets, got, strict=True)}


def test_asyncio_read_table_compares_with_aiofiles_and_aiofile() -> None:
    results = asyncio_results(200_000.0)
    rows = [r for r in run.all_rows() if r.key in results]
    text = "\n".join(run.table(rows, results))
    section = text.split("### Random 4 KiB reads under asyncio")[1].split("###")[0]
    assert "x aiofiles" in section
    assert "x aiofile " in section
    line = next(x for x in section.splitlines() if x.startswith("| ouring under asyncio, 32"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[3:5] == ["40.00", "4.00"]  # 200k against aiofiles' 5k and aiofile's 50k
    # The trio table leaves ouring's asyncio rows out, keeps aiofiles for its own ratio.
    trio_section = text.split("### Random 4 KiB reads, page-cache-hot")[1].split("###")[0]
    assert "ouring under asyncio" not in trio_section
    assert "aiofile (caio)" not in trio_section
    assert "asyncio + aiofiles, 32 tasks" in trio_section
    echo = text.split("### TCP echo under asyncio, 50 connections, 64 B")[1].split("###")[0]
    line = next(x for x in echo.splitlines() if x.startswith("| ouring.asyncio streams"))
    assert [c.strip() for c in line.strip("|").split("|")][3:5] == ["1.50", "0.75"]
    # A row without a number: its label fits the first column, its reason spans the line.
    results["echo64/rsloop/50"] = [CellResult("echo64/rsloop/50", unavailable="not built here")]
    rows = [r for r in run.all_rows() if r.key in results]
    echo = "\n".join(run.table(rows, results)).split("### TCP echo under asyncio")[1]
    lines = [x for x in echo.split("###")[0].splitlines() if x.startswith("| ")]
    assert "| asyncio streams on rsloop | not built here" in lines
    assert len({x.index(" | ") for x in lines}) == 1


def test_asyncio_targets_pass_fail_or_skip_while_ouring_is_unavailable() -> None:
    reads32 = f"rand4k/ouring-asyncio/{TASKS}"
    aiofiles32, aiofile32 = f"rand4k/aiofiles/{TASKS}", f"rand4k/aiofile/{TASKS}"
    fast = verdicts(asyncio_results(200_000.0))
    assert fast[(reads32, aiofiles32)] == "PASS"  # 40x >= 30x
    assert fast[(reads32, aiofile32)] == "PASS"  # 4x >= 1x
    assert fast[("echo64/ouring-asyncio/50", "echo64/asyncio/50")] == "PASS"
    slow = verdicts(asyncio_results(100_000.0))
    assert slow[(reads32, aiofiles32)] == "FAIL"  # 20x < 30x
    assert slow[(reads32, aiofile32)] == "PASS"
    missing = asyncio_results(None, "ouring under asyncio not available")
    skipped = verdicts(missing)
    assert skipped[(reads32, aiofiles32)] == "SKIP"
    assert skipped[(reads32, aiofile32)] == "SKIP"
    _, ok = run.check([r for r in run.all_rows() if r.key in missing], missing)
    assert ok
    broken = asyncio_results(None, "FAILED: the block read at offset 0 does not match the file")
    assert verdicts(broken)[(reads32, aiofile32)] == "FAIL"


def test_quick_check_measures_one_asyncio_read_and_one_asyncio_echo_workload() -> None:
    quick = {r.key for r in run.select(run.parse_args(["--quick", "--check"]))}
    assert {f"rand4k/ouring-asyncio/{TASKS}", f"rand4k/aiofile/{TASKS}"} <= quick
    assert {f"rand4k/aiofiles/{TASKS}", "echo64/ouring-asyncio/50", "echo64/asyncio/50"} <= quick
    assert "echo16k/ouring-asyncio/50" not in quick
    assert "rand4k/ouring-asyncio/1" not in quick
    full = {r.key for r in run.select(run.parse_args(["--check"]))}
    assert {"echo16k/ouring-asyncio/50", "echo16k/asyncio/50"} <= full
