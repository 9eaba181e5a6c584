"""Idle connections: the server's resident memory with 10,000 open, quiet TCP connections.

The servers are the echo rows' trio servers with the same handler (a
``receive_some`` loop that writes back what it got), each in a fresh process:

- ``trio.serve_tcp`` with trio's socket streams;
- the same ``trio.serve_tcp`` program under ``ouring.trio.install()``;
- ``ouring.trio.serve_tcp``.

A client process (plain non-blocking sockets and epoll, in waves of
``WAVE`` connects so the listen backlog never overflows) opens N connections
to 127.0.0.1, sends one small message on each and checks its echo byte for
byte, so every handler has done one receive and is parked in the next; then it
holds them idle. The server, asked over its stdin, waits until it has echoed
on all N connections and every task is blocked, lets them settle for
``SETTLE`` seconds, and reports VmRSS and VmHWM (the peak) from
``/proc/self/status`` and the number of objects the garbage collector tracks.
It reports the same before the first connection, so the row shows the bytes
per connection: (RSS with N - RSS with 0) / N.

Both processes raise RLIMIT_NOFILE's soft limit to the hard limit; where the
hard limit is too low for N, the row runs the largest N it allows and says so.
Lower is better: the ratio is the server's RSS with N connections over
``trio.serve_tcp``'s.

``python benchmarks/bench_idle.py --connections 1000`` runs the rows alone;
``--tracemalloc`` adds, for each server, the Python allocations that grew
between 0 and N connections, by line (tracemalloc's own overhead then inflates
the RSS, so its figures are for looking, not for the table).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import gc
import importlib
import json
import os
import resource
import select
import selectors
import socket
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import trio
import trio.testing

if TYPE_CHECKING:
    from _harness import CellResult, Row

# _harness imports ouring: the parent and the client import it where they need
# it, so that the trio server's process never loads ouring (its RSS would count).

HOST = "127.0.0.1"
CONNECTIONS = 10_000
#: --quick runs the same count: ouring's fixed cost (the library, the ring, its
#: provided buffers: about 6 MiB) is repaid by ~1 KiB less per connection only
#: past about 6,000 connections, so fewer would not test the target.
QUICK_CONNECTIONS = CONNECTIONS
RECEIVE_SIZE = 65536  #: what the handler asks for, as in the echo rows
WAVE = 500  #: connects in flight at once: below any listen backlog (somaxconn)
WAVE_TIMEOUT = 20.0  #: a wave takes well under a second: past this the server has stalled
SETTLE = 0.5  #: seconds between "every handler is parked" and the reading
FD_MARGIN = 64  #: descriptors a process needs besides the connections
TIMEOUT = 60.0  #: seconds for any one step before the cell fails
MIB = 1 << 20

SERVERS = {
    "trio": "trio.serve_tcp",
    "ouring-factory": "trio.serve_tcp, ouring factory",
    "ouring": "ouring.trio.serve_tcp",
}
WORKLOAD = "idle"
BASELINE = "trio"


def rows(connections: int = CONNECTIONS) -> list[Row]:
    from _harness import Row

    return [Row(WORKLOAD, impl, connections, label) for impl, label in SERVERS.items()]


def raise_fd_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to the hard limit; returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def allowed_connections(wanted: int) -> int:
    """The connections each process can hold: ``wanted`` or what the hard
    RLIMIT_NOFILE leaves after ``FD_MARGIN`` (children inherit the limit)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, hard - FD_MARGIN))


def memory() -> dict[str, int]:
    """VmRSS and VmHWM of this process, in bytes."""
    found: dict[str, int] = {}
    with open("/proc/self/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                found[name] = int(value.split()[0]) * 1024  # the kernel says kB
    return {"rss": found["VmRSS"], "hwm": found["VmHWM"]}


# -- the server (its own process: bench_idle.py --serve IMPL) --------------------------------


class Stats:
    __slots__ = ("connections", "echoed")

    def __init__(self) -> None:
        self.connections = 0  #: handlers started
        self.echoed = 0  #: handlers that have written back their first message


def serve(impl: str, trace: bool, cq_entries: int | None) -> None:
    raise_fd_limit()
    stats = Stats()
    serve_tcp: Any = trio.serve_tcp
    install: Any = None
    module: Any = None
    if impl != "trio":
        with contextlib.suppress(ImportError):
            module = importlib.import_module("ouring.trio")
    if impl == "ouring-factory":
        install = getattr(module, "install", None)
        if install is None:
            print("UNAVAILABLE ouring.trio has no install()", flush=True)
            return
    elif impl == "ouring":
        serve_tcp = getattr(module, "serve_tcp", None)
        if serve_tcp is None:
            print("UNAVAILABLE ouring.trio has no serve_tcp", flush=True)
            return

    async def echo_some(stream: Any) -> None:
        # The echo rows' handler; the count after the first write is what
        # tells the measurement that this connection is parked in a receive.
        stats.connections += 1
        first = True
        try:
            while data := await stream.receive_some(RECEIVE_SIZE):
                await stream.send_all(data)
                if first:
                    stats.echoed += 1
                    first = False
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # the client went away with an echo in flight

    async def reading(wanted: int) -> dict[str, Any]:
        deadline = trio.current_time() + TIMEOUT
        while stats.echoed < wanted:
            if trio.current_time() > deadline:
                raise RuntimeError(f"echoed on {stats.echoed} of {wanted} connections")
            await trio.sleep(0.01)
        await trio.testing.wait_all_tasks_blocked()
        await trio.sleep(SETTLE)
        gc.collect()
        return {**memory(), "objects": len(gc.get_objects()), **progress()}

    def progress() -> dict[str, Any]:
        found: dict[str, Any] = {"connections": stats.connections, "echoed": stats.echoed}
        # Whether ouring is loaded at all: the trio row's process must not be.
        found["ouring"] = "ouring" in sys.modules
        if found["ouring"]:
            ring = sys.modules["ouring"].current_ring()
            found["ring"] = str(ring.statistics())
            found["max_inflight"] = getattr(ring, "_max_inflight", None)
        return found

    async def commands(nursery: trio.Nursery, port: int) -> None:
        print(f"READY {port}", flush=True)
        pending = b""
        baseline: tracemalloc.Snapshot | None = None
        while True:
            await trio.lowlevel.wait_readable(sys.stdin.fileno())
            chunk = os.read(sys.stdin.fileno(), 4096)
            if not chunk:  # EOF: the parent is done
                nursery.cancel_scope.cancel()
                return
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                if line == b"PROGRESS":
                    print(json.dumps(progress()), flush=True)
                    continue
                answer = await reading(int(line.split()[1]))  # "MEASURE N"
                if trace:
                    snapshot = tracemalloc.take_snapshot()
                    if baseline is None:
                        baseline = snapshot
                    else:
                        answer["top"] = [
                            str(stat) for stat in snapshot.compare_to(baseline, "lineno")[:25]
                        ]
                print(json.dumps(answer), flush=True)

    async def main() -> None:
        if install is not None:
            # From here on trio.socket.socket(), and so serve_tcp's listener and
            # the connections it accepts, are ouring's sockets.
            install()
        if trace:
            tracemalloc.start(1)
        async with contextlib.AsyncExitStack() as stack:
            if cq_entries is not None:
                ouring: Any = importlib.import_module("ouring")
                await stack.enter_async_context(ouring.open_ring(cq_entries=cq_entries))
            nursery = await stack.enter_async_context(trio.open_nursery())
            listeners = await nursery.start(functools.partial(serve_tcp, echo_some, 0, host=HOST))
            port = listeners[0].socket.getsockname()[1]
            await commands(nursery, port)

    trio.run(main)


# -- the client (its own process: bench_idle.py --client PORT N) -----------------------------


def message(i: int) -> bytes:
    return b"idle %07d\n" % i


def open_idle(port: int, count: int, held: list[socket.socket]) -> list[socket.socket]:
    """``count`` connections to ``port`` in ``held``, each having sent one
    message and read its echo back, byte for byte."""
    from _harness import BrokenPathError

    with selectors.DefaultSelector() as sel:
        while len(held) < count:
            wave: dict[int, tuple[socket.socket, bytes, bytearray]] = {}
            for i in range(len(held), min(count, len(held) + WAVE)):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                held.append(sock)  # closed by the caller, even when this fails
                sock.setblocking(False)
                err = sock.connect_ex((HOST, port))
                if err not in (0, errno.EINPROGRESS):
                    raise OSError(err, f"connect #{i}: {os.strerror(err)}")
                wave[sock.fileno()] = (sock, message(i), bytearray())
                sel.register(sock, selectors.EVENT_WRITE)
            deadline = time.monotonic() + WAVE_TIMEOUT
            while wave:
                events = sel.select(timeout=max(0.0, deadline - time.monotonic()))
                if not events:
                    stuck = len(wave)
                    raise TimeoutError(f"{stuck} connections unanswered after {WAVE_TIMEOUT:g} s")
                for key, mask in events:
                    sock, sent, got = wave[key.fd]
                    if mask & selectors.EVENT_WRITE:
                        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                        if err:
                            raise OSError(err, f"connect: {os.strerror(err)}")
                        sock.send(sent)  # 13 bytes into an empty socket buffer: all of it
                        sel.modify(sock, selectors.EVENT_READ)
                        continue
                    chunk = sock.recv(64)
                    got += chunk
                    if not chunk or not sent.startswith(got):
                        raise BrokenPathError(f"sent {sent!r}, the echo was {bytes(got)!r}")
                    if len(got) == len(sent):
                        sel.unregister(sock)
                        del wave[key.fd]
    return held


def client(port: int, count: int) -> None:
    raise_fd_limit()
    held: list[socket.socket] = []
    try:
        try:
            held = open_idle(port, count, held)
        except (OSError, AssertionError) as exc:
            # Kept open, so that the server's state can be read as it stalled.
            print(f"STALLED {type(exc).__name__}: {exc}", flush=True)
            sys.stdin.read()
            raise
        print(f"HELD {len(held)}", flush=True)
        sys.stdin.read()  # EOF: the parent has taken its reading
    finally:
        for sock in held:
            sock.close()


# -- the parent side -------------------------------------------------------------------------


def read_line(stream: IO[str], what: str, timeout: float = TIMEOUT) -> str:
    """One line a child prints (each prints one per request, so nothing waits
    in the pipe's buffer behind it)."""
    from _harness import BrokenPathError

    ready, _, _ = select.select([stream], [], [], timeout)
    line = stream.readline() if ready else ""
    if not line:
        raise BrokenPathError(f"{what}: no answer within {timeout:.0f} s")
    return line


def ask(server: subprocess.Popen[str], wanted: int) -> dict[str, Any]:
    assert server.stdin is not None
    assert server.stdout is not None
    server.stdin.write(f"MEASURE {wanted}\n")
    server.stdin.flush()
    answer: dict[str, Any] = json.loads(read_line(server.stdout, "the server's reading"))
    return answer


def spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop(process: subprocess.Popen[str], what: str) -> None:
    """Close its stdin (it ends), and fail if it did not end well."""
    from _harness import BrokenPathError

    try:
        _, err = process.communicate(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    if process.returncode != 0:
        raise BrokenPathError(f"{what} failed (exit {process.returncode}):\n{err}")


def stalled(server: subprocess.Popen[str]) -> str:
    """What a server that stopped answering connections says of itself."""
    assert server.stdin is not None
    assert server.stdout is not None
    server.stdin.write("PROGRESS\n")
    server.stdin.flush()
    found = json.loads(read_line(server.stdout, "the server's progress"))
    text = f"{found['connections']} connections accepted, {found['echoed']} echoed"
    if "ring" in found:
        text += f"; ring: {found['ring']}, at most {found['max_inflight']} in the kernel"
    return text


def run_cell(
    row: Row, connections: int | None = None, trace: bool = False, cq_entries: int | None = None
) -> CellResult:
    """One cell: the server of ``row`` with ``connections`` (default
    ``row.tasks``) idle connections, or the most the hard RLIMIT_NOFILE allows."""
    from _harness import BrokenPathError, CellResult

    raise_fd_limit()
    count = allowed_connections(connections or row.tasks)
    options = ["--tracemalloc"] if trace else []
    if cq_entries is not None and row.impl.startswith("ouring"):
        options += ["--cq-entries", str(cq_entries)]
    server = spawn("--serve", row.impl, *options)
    client_process: subprocess.Popen[str] | None = None
    try:
        assert server.stdout is not None
        first = read_line(server.stdout, f"{row.key}: the server's start").split(maxsplit=1)
        if first and first[0] == "UNAVAILABLE":
            return CellResult(row.key, unavailable=first[1].strip())
        if len(first) != 2 or first[0] != "READY":
            raise BrokenPathError(f"{row.key}: the server did not start: {first}")
        empty = ask(server, 0)
        client_process = spawn("--client", first[1].strip(), str(count))
        assert client_process.stdout is not None
        assert client_process.stderr is not None
        said = client_process.stdout.readline()
        if said.split() != ["HELD", str(count)]:
            raise BrokenPathError(
                f"{row.key}: the client: {said.strip() or 'no answer'}; "
                f"the server: {stalled(server)}"
            )
        full = ask(server, count)
        stop(client_process, f"{row.key}: the client")
        stop(server, f"{row.key}: the server")
    finally:
        for process in (client_process, server):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
    if full["connections"] != count or full["echoed"] != count:
        raise BrokenPathError(f"{row.key}: {count} connections held, the server saw {full}")
    if row.impl == "trio" and (empty["ouring"] or full["ouring"]):
        raise BrokenPathError(f"{row.key}: the trio server has ouring loaded: not trio alone")
    return CellResult(
        row.key,
        ops=count,
        extra={
            "connections": count,
            "rss0": empty["rss"],
            "rss": full["rss"],
            "hwm": full["hwm"],
            "objects0": empty["objects"],
            "objects": full["objects"],
            **({"top": full["top"]} if "top" in full else {}),
        },
    )


# -- the table -------------------------------------------------------------------------------


def table(
    rows: Sequence[Row], results: dict[str, list[CellResult]], wanted: int | None = None
) -> list[str]:
    """The idle section: medians over the repeats of each figure; ``wanted``
    is the number of connections asked for (default: the rows' own)."""
    if not rows:
        return []
    header = ("row", "RSS", "min-max", "x trio", "RSS, 0 conns", "per conn", "VmHWM", "objs/conn")
    body: list[tuple[str, ...]] = []
    medians: dict[str, float] = {}
    counts: set[int] = set()
    for row in rows:
        cells = results[row.key]
        bad = [c.unavailable for c in cells if c.unavailable]
        if bad or not cells:
            body.append((row.label, bad[0] if bad else "not measured"))
            continue
        counts.update(c.extra["connections"] for c in cells)
        rss = sorted(c.extra["rss"] for c in cells)
        medians[row.impl] = median(rss)
        per_conn = median(
            [(c.extra["rss"] - c.extra["rss0"]) / c.extra["connections"] for c in cells]
        )
        objects = median(
            [(c.extra["objects"] - c.extra["objects0"]) / c.extra["connections"] for c in cells]
        )
        body.append(
            (
                row.label,
                f"{medians[row.impl] / MIB:.1f} MiB",
                f"{rss[0] / MIB:.1f}-{rss[-1] / MIB:.1f}",
                "",
                f"{median([c.extra['rss0'] for c in cells]) / MIB:.1f} MiB",
                f"{per_conn / 1024:.2f} KiB",
                f"{median([c.extra['hwm'] for c in cells]) / MIB:.1f} MiB",
                f"{objects:.1f}",
            )
        )
    base = medians.get(BASELINE)
    for i, row in enumerate(rows):
        if len(body[i]) > 2:
            mine = medians[row.impl]
            body[i] = (*body[i][:3], f"{mine / base:.2f}" if base else "-", *body[i][4:])
    widths = [max(len(b[i]) for b in [header, *body] if len(b) > i) for i in range(len(header))]

    def fmt(cells: Sequence[str]) -> str:
        if len(cells) == 2:
            return f"| {cells[0].ljust(widths[0])} | {cells[1]}"
        first = cells[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return "| " + " | ".join([first, *rest]) + " |"

    wanted = wanted or rows[0].tasks
    shown = ", ".join(f"{n:,}" for n in sorted(counts)) or f"{wanted:,}"
    title = f"Idle TCP connections: server RSS with {shown} open (lower is better)"
    out = ["", f"### {title}", "", fmt(header)]
    out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    out += [fmt(b) for b in body]
    if counts and max(counts) < wanted:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        out.append(f"(RLIMIT_NOFILE's hard limit {hard} allows {max(counts):,}, not {wanted:,})")
    out += [
        "",
        "Each connection sent one message and got its echo, then stays idle; the server's",
        f"VmRSS after a {SETTLE:g} s settle. x trio: RSS over trio.serve_tcp's (lower is better).",
        "per conn: (RSS with N - RSS with 0) / N; VmHWM: the peak; objs/conn: objects the",
        "garbage collector tracks, per connection.",
    ]
    for row in rows:
        for cell in results[row.key][:1]:
            if "top" in cell.extra:
                out += ["", f"tracemalloc, {row.label}: growth from 0 to N connections"]
                out += [f"    {line}" for line in cell.extra["top"]]
    return out


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return float(ordered[middle])
    return (ordered[middle - 1] + ordered[middle]) / 2


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--connections", type=int, default=CONNECTIONS)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--tracemalloc", action="store_true", help="where the memory goes")
    parser.add_argument("--cq-entries", type=int, help="ouring servers on a ring this large")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--client", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.tracemalloc, args.cq_entries)
        return
    if args.client:
        client(*args.client)
        return
    selected = rows()
    results: dict[str, list[CellResult]] = {r.key: [] for r in selected}
    for _ in range(args.repeats):
        for row in selected:
            cell = run_cell(row, args.connections, args.tracemalloc, args.cq_entries)
            results[row.key].append(cell)
    print("\n".join(table(selected, results, args.connections)))


if __name__ == "__main__":
    main()
