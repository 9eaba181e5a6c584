"""A model-based test of ``ouring.asyncio``'s streams against asyncio's own
(issue 15).

Two ends of one connection (a socketpair or a TCP pair on 127.0.0.1), each
asyncio's own ``StreamReader``/``StreamWriter`` over ``ouring.asyncio``'s
ring-driven transport, on the default loop or on uvloop. One driver task makes
a random sequence of calls on either end: ``write``, ``writelines``,
``drain``, ``read(n)``, ``readexactly``, ``readuntil``, ``readline``,
``write_eof``, ``at_eof``, and a peer that closes. Random small reader limits
and write-buffer high-water marks (down to 0) keep both ends' flow control
(``pause_reading``/``resume_reading``, ``pause_writing``) busy, and a small
bound on the transport's multishot receive queue makes the ring cancel that
receive while the reader is paused and arm it again after: receives that
complete despite that cancel are in play. The transport receives through
that multishot, or through one receive operation at a time (as on a ring
without provided buffers).

An end may also leave a ``read(n)`` or ``readexactly(n)`` waiting in a task
of its own while the driver goes on (the peer's writes reach it as they
arrive), to be collected later or cancelled then, after a few passes of the
loop: a cancelled one took nothing.

Each other awaitable call is attempted under an injected cancellation until an
attempt returns: ``Task.cancel()`` of a task running the call after k passes
of the loop, for k = 0, 1, 2, ... (every point at which the call can be
suspended), ``asyncio.timeout(0)``, or random short ``asyncio.timeout``
deadlines. asyncio's rule for its streams: a cancelled ``read(n)``,
``readexactly``, ``readuntil``, ``readline`` or ``drain`` did not happen
(what arrived stays in the reader's buffer). So only the calls that returned
make the log, and the log is replayed, without cancellations, on a new
connection of the same kind whose ends are asyncio's own streams over the
selector transport of asyncio's default loop. Every returned value (or
raised error) must be the reference's, and each end must have seen exactly
the bytes the other wrote: nothing lost, nothing repeated.

Where asyncio leaves an outcome to timing, the generator or the comparison
keeps to what is determined:

- ``read(n)`` returns what has arrived, up to ``n``: how much is the
  transport's chunking. The replay asks the reference for exactly that many
  bytes (``readexactly``), which must be the same bytes.
- ``readuntil``'s ``LimitOverrunError`` says where it gave up, which depends
  on what had arrived: compared by type (the bytes stay, either way).
  ``readline`` discards a timing-dependent amount on an overrun: it is only
  called where the newline (or the end of the stream) lies within the limit.
- ``read(-1)`` is not atomic in asyncio (a cancel drops the blocks it had
  read): it is never called under a cancellation.
- ``wait_closed`` awaits the protocol's shared close future, which a cancel
  cancels for good (in asyncio's own streams too): awaited without one.
- ``at_eof()`` is true once the end has arrived: compared when true (and
  not asked while a read waits: that read may hold the last bytes).
- A read waits only for bytes the peer has written (or its end), a peer
  closes only once it has read everything sent to it and nothing more will
  be sent (a close with unread data resets the connection, at a time of the
  kernel's choosing), and at most 48 KiB wait unread in each direction (the
  kernel holds them: no drain waits for a read the driver cannot make).

A failure names the seed, the configuration and the log of returned calls.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import random
import socket
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from conftest import run_under, tcp_pair

import ouring.asyncio as oa
from ouring._ring import Ring

EXECUTORS = ["asyncio", "uvloop"]
SEPARATORS = (b"\n", b"\r\n", b"xy")
ALPHABET = b"abcdxy\r\n0123456789"
UNREAD_BOUND = 48 << 10  # bytes waiting unread in one direction, at most
HANG_GUARD = 5.0  # seconds for one call and its attempts: a hang, never a wait

Outcome = tuple[Any, ...]


@dataclass
class Call:
    side: int  # 0 or 1: which end makes the call
    name: str
    args: tuple[Any, ...] = ()


@dataclass
class Returned:
    call: Call
    outcome: Outcome


@dataclass
class Case:
    """One configuration and seed."""

    seed: int
    transport: str  # "socketpair" or "tcp"
    receive: str  # "multishot" or "oneshot" (ouring's transport; the reference has one)
    calls: int
    limits: tuple[int, int] = (0, 0)  # each end's StreamReader limit
    highs: tuple[int, int] = (0, 0)  # each end's write-buffer high-water mark
    queue: int = 0  # the multishot queue's bound (Receiver.limit); 0: the default

    def __post_init__(self) -> None:
        rng = random.Random(self.seed)
        self.limits = (rng.choice([8, 100, 1000, 1 << 16]), rng.choice([8, 100, 1000, 1 << 16]))
        self.highs = (rng.choice([0, 64, 4096, 1 << 16]), rng.choice([0, 64, 4096, 1 << 16]))
        self.queue = rng.choice([0, 1, 300, 5000])

    def __str__(self) -> str:
        return (
            f"seed={self.seed} {self.transport} {self.receive} limits={self.limits} "
            f"highs={self.highs} queue={self.queue}"
        )


@dataclass
class Model:
    """What each end has written, read, and may still read: the generator's
    view, updated from the calls that returned."""

    written: list[bytearray] = field(default_factory=lambda: [bytearray(), bytearray()])
    seen: list[bytearray] = field(default_factory=lambda: [bytearray(), bytearray()])
    eof_written: list[bool] = field(default_factory=lambda: [False, False])
    closed: list[bool] = field(default_factory=lambda: [False, False])

    def unread(self, side: int) -> bytes:
        """The bytes written to ``side`` that it has not read yet."""
        return bytes(self.written[1 - side][len(self.seen[side]) :])

    def ended(self, side: int) -> bool:
        """Whether nothing more will ever be sent to ``side``."""
        return self.eof_written[1 - side] or self.closed[1 - side]


# -- running one call under injected cancellations ------------------------------------------


async def outcome_of(make: Callable[[], Any]) -> Outcome:
    """The call's outcome as compared with the reference's; a cancellation
    propagates (the attempt did not happen)."""
    try:
        result = make()
        if asyncio.iscoroutine(result):
            result = await result
    except asyncio.IncompleteReadError as exc:
        return ("IncompleteReadError", exc.partial, exc.expected)
    except asyncio.LimitOverrunError:
        return ("LimitOverrunError",)  # where it gave up is timing (see the docstring)
    except (OSError, RuntimeError, ValueError) as exc:
        return (type(exc).__name__, str(exc))
    return ("ok", result)


async def until_it_returns(
    make: Callable[[], Any], how: str, rng: random.Random
) -> tuple[Outcome, int]:
    """Attempt ``make()`` under the injection ``how`` until an attempt
    returns; (its outcome, how many attempts were cancelled)."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    cancelled = 0
    if how == "timeout0":
        try:
            async with asyncio.timeout(0):
                return await outcome_of(make), cancelled
        except TimeoutError:
            cancelled += 1
        assert task.cancelling() == 0
        how = "steps"
    if how == "timeouts":
        for _ in range(20):
            try:
                async with asyncio.timeout(rng.choice([1e-6, 1e-5, 1e-4, 1e-3])):
                    return await outcome_of(make), cancelled
            except TimeoutError:
                cancelled += 1
            assert task.cancelling() == 0
        how = "none"
    if how == "steps":
        deadline = loop.time() + HANG_GUARD
        for k in itertools.count():
            if loop.time() > deadline:
                raise AssertionError(f"not done after {k} attempts and {HANG_GUARD} s")
            # The call in a task of its own, cancelled after k passes of the
            # loop: at k = 0 before it starts, then at each later suspension.
            attempt = loop.create_task(outcome_of(make))
            for _ in range(k):
                if attempt.done():
                    break
                await asyncio.sleep(0)
            attempt.cancel()
            try:
                return await attempt, cancelled
            except asyncio.CancelledError:
                cancelled += 1
            assert task.cancelling() == 0
    try:
        async with asyncio.timeout(HANG_GUARD):
            return await outcome_of(make), cancelled
    except TimeoutError:
        raise AssertionError(f"hung for {HANG_GUARD} s without a cancellation") from None


# -- the generator -------------------------------------------------------------------------


def some_bytes(rng: random.Random) -> bytes:
    size = rng.choice([rng.randint(1, 40), rng.randint(1, 600), rng.randint(1, 9000)])
    return bytes(rng.choices(ALPHABET, k=size))


def next_call(
    rng: random.Random, model: Model, limits: tuple[int, int], waiting: list[Call | None]
) -> Call | None:
    """A call that the model allows (see the module docstring), or None when
    neither end can do anything more than the final phase. ``waiting[side]``
    is the read that end has left waiting in a task of its own, if any:
    asyncio's reader takes one waiter at a time."""
    open_sides = [side for side in (0, 1) if not model.closed[side]]
    if not open_sides:
        return None
    side = rng.choice(open_sides)
    unread = model.unread(side)
    ended = model.ended(side)
    limit = limits[side]
    peer_open = not model.closed[1 - side]
    choices: list[tuple[int, Callable[[], Call]]] = []

    def add(weight: int, name: str, *args: Any) -> None:
        choices.append((weight, lambda: Call(side, name, args)))

    if waiting[side] is not None:
        # The end's read waits while the driver goes on (the peer's writes
        # reach it as they arrive); collected later, or cancelled then.
        add(4, "collect")
        unread, ended = b"", False  # no other read, and no close, meanwhile
    elif rng.random() < 0.15:
        if rng.random() < 0.5:
            add(100, "start", "read", rng.randint(1, 4096))
        else:
            add(100, "start", "readexactly", rng.randint(1, len(unread) + 2000))

    can_write = peer_open and len(model.unread(1 - side)) < UNREAD_BOUND
    if not model.eof_written[side] and can_write:
        add(6, "write", some_bytes(rng))
        add(2, "writelines", [some_bytes(rng) for _ in range(rng.randint(0, 4))])
        add(1, "write_eof")
    elif model.eof_written[side]:
        add(1, "write", b"after eof")  # a RuntimeError, as asyncio's
    add(2, "drain")
    if waiting[side] is None:  # (a waiting read may hold the last bytes, done but not collected)
        add(1, "at_eof")
    if unread or ended:
        n = rng.choice([0, 1, rng.randint(1, 64), rng.randint(1, 8192)])
        add(5, "read", n)
        if ended:
            add(1, "read_all")
    if unread:
        add(3, "readexactly", rng.randint(0, len(unread)))
    if ended:
        add(1, "readexactly", len(unread) + rng.randint(0, 50))  # IncompleteReadError
    for sep in SEPARATORS:
        at = unread.find(sep)
        # Found within the limit, or never to arrive: determined outcomes.
        if at != -1 or ended or len(unread) > limit + len(sep):
            add(1, "readuntil", sep)
    at = unread.find(b"\n")
    if (at != -1 and at <= limit) or (at == -1 and ended and len(unread) <= limit):
        add(2, "readline")
    if not unread and ended and waiting[side] is None:
        add(1, "close")
    total = sum(weight for weight, _ in choices)
    pick = rng.uniform(0, total)
    for weight, make in choices:
        pick -= weight
        if pick <= 0:
            return make()
    return choices[-1][1]()


# -- the calls, on any pair of asyncio streams ---------------------------------------------

Ends = list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]


def invoke(ends: Ends, call: Call) -> Callable[[], Any]:
    """``call`` on ``ends`` (as made by the system under test; the replay
    maps some calls, see ``replay``)."""
    reader, writer = ends[call.side]
    name, args = call.name, call.args
    if name == "read_all":
        return lambda: reader.read(-1)
    if name in ("read", "readexactly", "readuntil", "readline"):
        return lambda: getattr(reader, name)(*args)
    if name == "at_eof":
        return reader.at_eof
    if name == "close":
        return writer.close
    return lambda: getattr(writer, name)(*args)


def read_bytes(outcome: Outcome) -> bytes | None:
    """The bytes a read took (an IncompleteReadError takes its partial)."""
    if outcome[0] in ("ok", "IncompleteReadError") and isinstance(outcome[1], bytes):
        return outcome[1]
    return None


def check_and_update(model: Model, call: Call, outcome: Outcome, log: str) -> None:
    """The model's view of a returned call: what a read took must be the
    next unread bytes (nothing lost, nothing repeated)."""
    side, name = call.side, call.name
    unread = model.unread(side)
    status = outcome[0]
    got = read_bytes(outcome)
    if got is not None:
        assert unread.startswith(got), f"{name} returned bytes that were not next\n{log}"
        if name == "read" and call.args[0] > 0 and not got:
            assert not unread, f"read returned b'' with bytes unread\n{log}"
            assert model.ended(side), f"read returned b'' before the end\n{log}"
        model.seen[side] += got
    if status == "ok" and name in ("write", "writelines"):
        data = call.args[0] if name == "write" else b"".join(call.args[0])
        model.written[side] += data
    if name == "write_eof":
        model.eof_written[side] = True
    if name == "close":
        model.closed[side] = True


# -- the system under test: ouring.asyncio, with injected cancellations ------------------------


@contextmanager
def receive_path(case: Case) -> Iterator[None]:
    """ouring's transport receives through the ring's multishot receive, or,
    as on a ring without provided buffers, one receive operation at a time."""
    if case.receive == "multishot":
        yield
        return
    original = Ring.recv_group
    Ring.recv_group = lambda self: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        Ring.recv_group = original  # type: ignore[method-assign]


@contextmanager
def connection(transport: str) -> Iterator[tuple[socket.socket, socket.socket]]:
    if transport == "socketpair":
        a, b = socket.socketpair()
    else:
        a, b = tcp_pair()
    with a, b:
        yield a, b


OpenConnection = Callable[
    ..., Coroutine[Any, Any, tuple[asyncio.StreamReader, asyncio.StreamWriter]]
]


async def open_ends(
    case: Case, socks: tuple[socket.socket, socket.socket], open_connection: OpenConnection
) -> Ends:
    ends: Ends = []
    for side in (0, 1):
        reader, writer = await open_connection(sock=socks[side], limit=case.limits[side])
        writer.transport.set_write_buffer_limits(high=case.highs[side])
        ends.append((reader, writer))
    return ends


def format_log(case: Case, log: list[Returned]) -> str:
    lines = [f"case {case}; calls that returned:"]
    for i, entry in enumerate(log[-40:], start=max(0, len(log) - 40)):
        args = ", ".join(_short(arg) for arg in entry.call.args)
        lines.append(
            f"  {i}: side {entry.call.side} {entry.call.name}({args}) -> {_short(entry.outcome)}"
        )
    return "\n".join(lines)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:60] + f"...({len(text)} chars)"


async def run_system(case: Case) -> tuple[list[Returned], Model, int]:
    """The random sequence on ouring.asyncio's streams; (the log of calls
    that returned, the model at the end, cancelled attempts)."""
    rng = random.Random(case.seed)
    model = Model()
    log: list[Returned] = []
    cancelled = 0

    waiting: list[Call | None] = [None, None]
    tasks: list[asyncio.Task[Outcome] | None] = [None, None]

    async def do(call: Call, how: str) -> Outcome:
        nonlocal cancelled
        if call.name in ("read_all", "close") or call.name not in AWAITED:
            how = "none"  # see the module docstring
        outcome, n = await until_it_returns(invoke(ends, call), how, rng)
        cancelled += n
        returned(call, outcome)
        if call.name == "close":
            await do(Call(call.side, "wait_closed"), "none")
        return outcome

    def returned(call: Call, outcome: Outcome) -> None:
        log.append(Returned(call, outcome))
        check_and_update(model, call, outcome, format_log(case, log))

    async def collect(side: int, cancel: bool) -> None:
        """The waiting read of ``side``: cancelled after a few passes of the
        loop if not done by then (``cancel``), else awaited."""
        nonlocal cancelled
        task, call = tasks[side], waiting[side]
        assert task is not None
        assert call is not None
        tasks[side] = waiting[side] = None
        if cancel:
            for _ in range(rng.randint(0, 3)):
                if task.done():
                    break
                await asyncio.sleep(0)
            task.cancel()
        try:
            async with asyncio.timeout(HANG_GUARD):
                outcome = await asyncio.shield(task)
        except asyncio.CancelledError:
            assert cancel
            assert task.cancelled()
            cancelled += 1  # it did not happen: what it waited for stays unread
            return
        returned(call, outcome)

    with connection(case.transport) as socks:
        ends = await open_ends(case, socks, oa.open_connection)
        for _, writer in ends:
            rx = writer.transport._rx  # type: ignore[attr-defined]
            if rx is not None and case.queue:
                # Past this many queued bytes the ring cancels the multishot
                # receive (backpressure while the reader is paused) and arms
                # it again once the queue is taken: receives that complete
                # despite that cancel must still be queued, in order.
                rx.limit = case.queue
        for _ in range(case.calls):
            call = next_call(rng, model, case.limits, waiting)
            if call is None:
                break
            if call.name == "start":
                name, *args = call.args
                started = Call(call.side, name, tuple(args))
                waiting[call.side] = started
                tasks[call.side] = asyncio.create_task(outcome_of(invoke(ends, started)))
            elif call.name == "collect":
                read = waiting[call.side]
                assert read is not None
                unread = model.unread(call.side)
                ready = model.ended(call.side) or (
                    len(unread) >= read.args[0] if read.name == "readexactly" else bool(unread)
                )
                await collect(call.side, cancel=not ready or rng.random() < 0.5)
            else:
                await do(call, rng.choice(["steps", "steps", "timeout0", "timeouts"]))
        # The end: each open end writes its EOF, collects its waiting read,
        # reads everything to the peer's end (still under cancellations),
        # and closes.
        for side in (0, 1):
            if not model.closed[side] and not model.eof_written[side]:
                await do(Call(side, "write_eof"), "none")
        for side in (0, 1):
            if waiting[side] is not None:
                await collect(side, cancel=False)
        for side in (0, 1):
            while not model.closed[side]:
                outcome = await do(Call(side, "read", (rng.randint(1, 5000),)), "steps")
                assert outcome[0] == "ok", f"read {outcome!r}\n{format_log(case, log)}"
                if outcome == ("ok", b""):
                    await do(Call(side, "at_eof"), "none")
                    await do(Call(side, "close"), "none")
    return log, model, cancelled


AWAITED = {"drain", "read", "readexactly", "readuntil", "readline", "read_all", "wait_closed"}


# -- the reference: the same returned calls on asyncio's own streams ---------------------------


async def replay(case: Case, log: list[Returned]) -> list[bytearray]:
    """Each returned call again, in order, on asyncio's streams over the
    selector transport; every outcome must match. Returns what each end saw."""
    seen = [bytearray(), bytearray()]

    def at(i: int) -> str:
        call = log[i].call
        return f"call {i}: {call.name}{call.args!r}\n{format_log(case, log[: i + 1])}"

    with connection(case.transport) as socks:
        ends = await open_ends(case, socks, asyncio.open_connection)
        for i, entry in enumerate(log):
            call, outcome = entry.call, entry.outcome
            reader = ends[call.side][0]
            async with asyncio.timeout(HANG_GUARD):
                if call.name == "read" and outcome[0] == "ok" and outcome[1]:
                    # How much a read(n) returns is the transport's chunking:
                    # the same bytes, asked for exactly.
                    got = await outcome_of(functools.partial(reader.readexactly, len(outcome[1])))
                elif call.name == "at_eof" and outcome == ("ok", True):
                    # True once the end arrived: the reference reaches it too,
                    # with nothing left to read before it.
                    got = await outcome_of(functools.partial(reader.read, 1))
                    assert got == ("ok", b""), f"ouring saw the end early: {got!r} at {at(i)}"
                    got = await outcome_of(reader.at_eof)
                elif call.name == "at_eof":
                    continue
                else:
                    got = await outcome_of(invoke(ends, call))
            assert got == outcome, f"ouring {outcome!r} != asyncio {got!r} at {at(i)}"
            seen[call.side] += read_bytes(got) or b""
    return seen


# -- the tests ----------------------------------------------------------------------------------


def check_case(case: Case, executor: str) -> int:
    with receive_path(case):
        log, model, cancelled = run_under(executor, run_system, case)
    for side in (0, 1):
        assert model.seen[side] == model.written[1 - side], (
            f"end {side} saw {len(model.seen[side])} of the {len(model.written[1 - side])} "
            f"bytes written to it\n{format_log(case, log)}"
        )
    seen = asyncio.run(replay(case, log))
    for side in (0, 1):
        assert seen[side] == model.seen[side], (
            f"the reference saw other bytes\n{format_log(case, log)}"
        )
    return cancelled


@pytest.mark.parametrize("receive", ["multishot", "oneshot"])
@pytest.mark.parametrize("transport", ["socketpair", "tcp"])
@pytest.mark.parametrize("executor", EXECUTORS)
def test_streams_under_cancellation_match_asyncios_own(
    executor: str, transport: str, receive: str
) -> None:
    cancelled = 0
    for seed in range(12):
        cancelled += check_case(Case(seed, transport, receive, calls=60), executor)
    assert cancelled > 100  # the injections really cancelled calls


@pytest.mark.slow
@pytest.mark.parametrize("receive", ["multishot", "oneshot"])
@pytest.mark.parametrize("transport", ["socketpair", "tcp"])
@pytest.mark.parametrize("executor", EXECUTORS)
def test_streams_under_cancellation_match_asyncios_own_many(
    executor: str, transport: str, receive: str
) -> None:
    for seed in range(1000, 1300):
        check_case(Case(seed, transport, receive, calls=200), executor)
