"""Static file rows: ``examples/static_server.py`` serving a 1 MiB file to 50
keep-alive connections.

The same server program (h11, one task per connection) in its three modes:

- ``splice``: ouring's streams, bodies by ``ouring.sendfile`` (file -> pipe ->
  socket with IORING_OP_SPLICE, never copied through Python);
- ``copy``: ouring's streams, bodies by ``AsyncFile.read_at`` into one 256 KiB
  buffer per connection and ``send_all``;
- ``trio``: trio's own ``serve_tcp`` and ``trio.open_file`` (worker threads),
  256 KiB reads and ``send_all``.

Why it is fair: the same program and handler, each mode in a fresh process
pinned to one CPU, loaded by ``wrk`` (C, one thread, 50 connections, HTTP/1.1
keep-alive) pinned to the other. The file is page-cache hot (read once before
the run). Before the load, a plain HTTP client downloads the file and compares
it byte for byte; ``wrk`` then reports any non-2xx answer or socket error, and
either fails the cell. The server's CPU use over the measured run is shown.
"""

from __future__ import annotations

import http.client
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _harness import BENCH_DIR, BrokenPathError, CellResult, Row, cpu_pair, pinned

HOST = "127.0.0.1"
CONNECTIONS = 50
FILE_SIZE = 1 << 20
SERVER = BENCH_DIR.parent / "examples" / "static_server.py"
SERVERS = {
    "ouring-splice": ("splice", "ouring, sendfile (splice)"),
    "ouring-copy": ("copy", "ouring, read + send"),
    "trio": ("trio", "trio streams + trio.open_file"),
}
WORKLOADS = {"static1m": FILE_SIZE}


def rows() -> list[Row]:
    return [
        Row(workload, impl, CONNECTIONS, label)
        for workload in WORKLOADS
        for impl, (_, label) in SERVERS.items()
    ]


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wrk(port: int, seconds: float, cpu: int | None) -> dict[str, float]:
    done = subprocess.run(
        [
            "wrk",
            *("-t1", f"-c{CONNECTIONS}", f"-d{max(1, round(seconds))}s", "--timeout", "10s"),
            f"http://{HOST}:{port}/file.bin",
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        preexec_fn=pinned(cpu),
        check=False,
    )
    if done.returncode != 0:
        raise BrokenPathError(f"wrk failed: {done.stderr.strip() or done.stdout.strip()}")
    out = done.stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise BrokenPathError(f"the server answered badly under load:\n{out}")
    found = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
    if not found:
        raise BrokenPathError(f"cannot read wrk's output:\n{out}")
    elapsed = float(found[2]) / (1000 if found[3] == "ms" else 1)
    return {"requests": int(found[1]), "elapsed": elapsed}


def run_cell(row: Row, warmup: float, seconds: float) -> CellResult:
    if shutil.which("wrk") is None:
        return CellResult(row.key, unavailable="wrk is not installed (apt-get install wrk)")
    mode = SERVERS[row.impl][0]
    size = WORKLOADS[row.workload]
    cpus = cpu_pair()
    server_cpu, client_cpu = cpus if cpus else (None, None)
    with tempfile.TemporaryDirectory(prefix="ouring-static-") as root:
        data = random.Random(7).randbytes(size)
        Path(root, "file.bin").write_bytes(data)
        server = subprocess.Popen(
            [sys.executable, str(SERVER), "--mode", mode, root, "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=pinned(server_cpu),
        )
        assert server.stdout is not None
        try:
            line = server.stdout.readline()
            if not line.startswith("listening on "):
                raise BrokenPathError(f"{row.key}: the server did not start: {line}")
            port = int(line.rsplit(":", 1)[1])
            check = http.client.HTTPConnection(HOST, port, timeout=30)
            check.request("GET", "/file.bin")
            body = check.getresponse().read()
            check.close()
            if body != data:
                raise BrokenPathError(f"{row.key}: the download differs from the file")
            if warmup > 0:
                _wrk(port, warmup, client_cpu)
            cpu0 = _cpu_seconds(server.pid)
            got = _wrk(port, seconds, client_cpu)
            cpu = _cpu_seconds(server.pid) - cpu0
        finally:
            server.terminate()
            try:
                _, err = server.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                _, err = server.communicate()
    if server.returncode != 0:
        raise BrokenPathError(f"{row.key}: the server failed (exit {server.returncode}):\n{err}")
    requests, elapsed = int(got["requests"]), got["elapsed"]
    return CellResult(
        row.key, requests, elapsed, requests / elapsed, size, server_cpu=cpu / elapsed
    )


if __name__ == "__main__":
    import run

    run.main(["--only", "static", *sys.argv[1:]])
