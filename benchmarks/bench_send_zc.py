"""send_zc against send on 127.0.0.1: does zero-copy pay, and from what size?

Two workloads, each with ``ouring.send`` and ``ouring.send_zc`` (the same
loop otherwise), every cell in a fresh process and the two kinds interleaved
across repeats:

- ``bulk CHUNK``: one connection, ouring sends 256 MiB in CHUNK-sized sends
  (16 KiB to 1 MiB) to a plain blocking reader in another process (MiB/s).
- ``echo SIZE``: ouring's echo server (one task per connection: recv into a
  reused buffer, then send the message back) under 50 connections of the C
  load generator (``echo_client``) ping-ponging SIZE-byte messages
  (requests/s).

Run: ``python benchmarks/bench_send_zc.py [--repeats 3] [--seconds 2]``
(needs ``benchmarks/results/echo_client``: ``make benchmarks/results/echo_client``).
Prints one line per cell and a median table; the numbers in DESIGN.md and the
threshold in ouring come from it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import trio

import ouring

HERE = Path(__file__).resolve().parent
ECHO_CLIENT = HERE / "results" / "echo_client"
BULK_TOTAL = 256 << 20
BULK_CHUNKS = (16 << 10, 32 << 10, 64 << 10, 256 << 10, 1 << 20)
ECHO_SIZES = (16 << 10, 64 << 10)
KINDS = ("send", "send_zc")

READER = """
import socket, sys
sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
buf = bytearray(1 << 20)
total = 0
while n := sock.recv_into(buf):
    total += n
print(total)
"""


async def send_all(kind: str, sock: socket.socket, data: memoryview) -> None:
    send = ouring.send_zc if kind == "send_zc" else ouring.send
    offset = 0
    while offset < len(data):
        _, n = await send(sock, data[offset:])
        offset += n


async def bulk_cell(kind: str, chunk: int) -> float:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        # Started before the timed part; nothing else runs in this trio.run.
        reader = subprocess.Popen(  # noqa: ASYNC220
            [sys.executable, "-c", READER, str(port)], stdout=subprocess.PIPE, text=True
        )
        conn, _ = listener.accept()
    payload = memoryview(bytearray(b"\xab" * chunk))
    with conn:
        start = time.perf_counter()
        for _ in range(BULK_TOTAL // chunk):
            await send_all(kind, conn, payload)
        conn.shutdown(socket.SHUT_WR)
        out, _ = reader.communicate(timeout=120)
        elapsed = time.perf_counter() - start
    if int(out) != BULK_TOTAL // chunk * chunk:
        raise RuntimeError(f"the reader got {out.strip()} bytes")
    return BULK_TOTAL / elapsed / (1 << 20)


async def echo_cell(kind: str, size: int, seconds: float) -> float:
    async def serve(conn: socket.socket) -> None:
        buf = bytearray(size)
        with conn, contextlib.suppress(OSError):  # the client resets when it is done
            while True:
                got = 0
                while got < size:
                    with memoryview(buf)[got:] as rest:
                        _, n = await ouring.recv(conn, rest)
                    if not n:
                        return
                    got += n
                with memoryview(buf) as whole:
                    await send_all(kind, conn, whole)

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        port = listener.getsockname()[1]
        client = await trio.lowlevel.open_process(
            [
                *(str(ECHO_CLIENT), "--host", "127.0.0.1", "--port", str(port), "--conns", "50"),
                *("--size", str(size), "--warmup", "0.5", "--seconds", str(seconds)),
            ],
            stdout=subprocess.PIPE,
        )
        async with trio.open_nursery() as nursery:
            for _ in range(50):
                conn, _ = await ouring.accept(listener)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                nursery.start_soon(serve, conn)
            assert client.stdout is not None
            out = b""
            async for chunk in client.stdout:
                out += chunk
            await client.wait()
            nursery.cancel_scope.cancel()
    result = json.loads(out)
    return float(result["requests"]) / float(result["elapsed"])


def run_cell(cell: str, seconds: float) -> float:
    done = subprocess.run(
        [sys.executable, __file__, "--cell", cell, "--seconds", str(seconds)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return float(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--cell")
    args = parser.parse_args()
    if args.cell:
        workload, kind, size = args.cell.split(":")
        if workload == "bulk":
            value = trio.run(bulk_cell, kind, int(size))
        else:
            value = trio.run(echo_cell, kind, int(size), args.seconds)
        print(value)
        return
    cells = [f"bulk:{k}:{c}" for c in BULK_CHUNKS for k in KINDS]
    cells += [f"echo:{k}:{s}" for s in ECHO_SIZES for k in KINDS]
    results: dict[str, list[float]] = {cell: [] for cell in cells}
    for _ in range(args.repeats):
        for cell in cells:
            value = run_cell(cell, args.seconds)
            results[cell].append(value)
            print(f"{cell:24} {value:12.1f}", flush=True)
    print()
    print("| workload | size | send | send_zc | send_zc / send |")
    print("|---|---|---|---|---|")
    for cell in cells[::2]:
        workload, _, size = cell.split(":")
        plain = statistics.median(results[cell])
        zc = statistics.median(results[cell.replace(":send:", ":send_zc:")])
        unit = "MiB/s" if workload == "bulk" else "req/s"
        print(
            f"| {workload} | {int(size) >> 10} KiB | {plain:.0f} {unit} | {zc:.0f} {unit} "
            f"| {zc / plain:.2f} |"
        )


if __name__ == "__main__":
    main()
