"""Issue 4, scenario 8: signals. A 1 ms interval timer with a Python handler
while tasks wait on the ring: no completion lost, -EINTR retried without
stretching a bounded wait, and Ctrl-C (SIGINT) delivered promptly. Anything
that could hang runs in a subprocess with a bound."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import anyio

import ouring


@contextmanager
def interval_timer(seconds: float) -> Iterator[list[int]]:
    fired: list[int] = []
    previous = signal.signal(signal.SIGALRM, lambda signum, frame: fired.append(signum))
    signal.setitimer(signal.ITIMER_REAL, seconds, seconds)
    try:
        yield fired
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


async def test_no_completion_lost_under_a_1ms_timer(executor: str) -> None:
    with ExitStack() as stack:
        pairs = [socket.socketpair() for _ in range(8)]
        for a, b in pairs:
            stack.enter_context(a)
            stack.enter_context(b)
        got = [bytearray() for _ in pairs]
        fired = stack.enter_context(interval_timer(0.001))

        async def receiver(i: int) -> None:
            while len(got[i]) < 200:
                buf, n = await ouring.recv(pairs[i][0], bytearray(7))
                assert n > 0
                got[i] += buf[:n]

        with anyio.fail_after(20):
            async with anyio.create_task_group() as nursery:
                for i in range(len(pairs)):
                    nursery.start_soon(receiver, i)
                for k in range(200):
                    await anyio.sleep(0.0005)
                    for _, b in pairs:
                        b.send(bytes([k]))
        # The timer really interrupted the waits. CPython runs a Python signal
        # handler once per trip however many signals arrived meanwhile, and
        # uvloop's libuv loop returns to Python less often: fewer are counted.
        assert len(fired) > (10 if executor != "uvloop" else 0)
    for g in got:
        assert g == bytes(range(200))
    assert ouring.current_ring().statistics().inflight == 0


def run_child(code: str, *, sigint_after_ready: bool = False, bound: float = 10.0) -> str:
    """Run ``code`` in a fresh interpreter; if asked, send SIGINT once it
    prints 'ready'. Fails (never hangs) if it does not exit within ``bound``."""
    # SIGINT may be inherited as ignored (a background job of a shell), and
    # then Python installs no KeyboardInterrupt handler: install it first.
    prologue = "import signal; signal.signal(signal.SIGINT, signal.default_int_handler)\n"
    proc = subprocess.Popen(
        [sys.executable, "-c", prologue + textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    try:
        if sigint_after_ready:
            assert proc.stdout.readline().strip() == "ready"
            proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=bound)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(f"the child hung (killed after {bound}s); output:\n{out}") from None
    assert proc.returncode == 0, f"exit status {proc.returncode}; output:\n{out}"
    return out


def test_a_bounded_wait_stays_bounded_under_a_1ms_timer() -> None:
    """Ring.wait(timeout) interrupted every millisecond must still return
    after about ``timeout``, not restart its full wait on every -EINTR."""
    out = run_child(
        """
        import signal, socket, time
        import ouring
        from ouring._ops import Recv
        signal.signal(signal.SIGALRM, lambda *a: None)
        signal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)
        a, b = socket.socketpair()
        with ouring.Ring(8) as ring:
            op = Recv(a, bytearray(4))
            ring.submit(op)
            ring.flush()
            start = time.monotonic()
            assert ring.wait(0.05) == 0
            assert time.monotonic() - start < 2
            signal.setitimer(signal.ITIMER_REAL, 0)  # (a late SIGALRM at exit would kill us)
            b.send(b"x")
            while ring.statistics().inflight:
                ring.wait(5)
            assert op.outcome()[1] == 1
        print("ok")
        """,
        bound=10,
    )
    assert out.strip() == "ok"


def test_ctrl_c_reaches_trio_tasks_parked_on_the_ring() -> None:
    out = run_child(
        """
        import socket, sys, trio, ouring
        a, b = socket.socketpair()
        buf = bytearray(b"untouched")
        async def main():
            async with trio.open_nursery() as nursery:
                for _ in range(10):
                    nursery.start_soon(ouring.recv, a, bytearray(4))
                await trio.testing.wait_all_tasks_blocked()
                print("ready", flush=True)
                await ouring.recv(a, buf)
        import trio.testing
        try:
            trio.run(main)
        except* KeyboardInterrupt:  # raised through the nursery, so grouped
            b.send(b"kept")
            assert a.recv(10) == b"kept"  # no cancelled recv consumed it
            assert buf == b"untouched"
            buf.extend(b"!")  # released
            print("KeyboardInterrupt")
        """,
        sigint_after_ready=True,
        bound=5,
    )
    assert out.strip() == "KeyboardInterrupt"


def test_ctrl_c_interrupts_a_blocking_ring_wait() -> None:
    """Driving a ring without an event loop: Ring.wait() with no timeout on
    an idle recv must let SIGINT raise KeyboardInterrupt promptly."""
    out = run_child(
        """
        import socket, ouring
        from ouring._ops import Recv
        a, b = socket.socketpair()
        ring = ouring.Ring(8)
        op = Recv(a, bytearray(4))
        ring.submit(op)
        ring.flush()
        # "ready" only once this thread is inside io_uring_enter (syscall 426
        # on x86_64; elsewhere, once it is sleeping): a SIGINT that arrived
        # just before the wait would only be handled when the wait returns.
        import os, threading, time
        main = threading.get_native_id()
        def announce():
            while True:
                with open(f"/proc/self/task/{main}/syscall") as f:
                    words = f.read().split()
                with open(f"/proc/self/task/{main}/stat") as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
                if state == "S" and (words[0] == "426" or os.uname().machine != "x86_64"):
                    break
                time.sleep(0.001)
            print("ready", flush=True)
        threading.Thread(target=announce, daemon=True).start()
        try:
            ring.wait()
        except KeyboardInterrupt:
            ring.close()
            print("KeyboardInterrupt")
        """,
        sigint_after_ready=True,
        bound=5,
    )
    assert out.strip() == "KeyboardInterrupt"


def test_teardown_under_a_1ms_timer_reaps_everything() -> None:
    """Ring.close() waits (bounded) for its cancels while signals arrive."""
    a, b = socket.socketpair()
    with a, b, interval_timer(0.001):
        ring = ouring.Ring(8)
        from ouring._ops import Recv

        ops = [Recv(a, bytearray(1)) for _ in range(50)]
        for op in ops:
            ring.submit(op)
        ring.flush()
        os.kill(os.getpid(), signal.SIGALRM)
        ring.close()
        assert all(op.cancelled() for op in ops)
        assert ring.statistics().leaked == 0


def test_an_interrupted_wait_returns_only_with_a_completion(
    socketpair: tuple[socket.socket, socket.socket],
) -> None:
    """-EINTR from io_uring_enter is retried by Ring.wait: under a 1 ms timer,
    wait() (bounded or not) returns when the CQE arrives, never early with
    nothing, which a loop like ``while not ring.wait(t)`` would misread."""
    import threading

    from ouring._ops import Recv

    a, b = socketpair
    with interval_timer(0.001) as fired, ouring.Ring(8) as ring:
        for timeout in (30.0, None):
            op = Recv(a, bytearray(1))
            ring.submit(op)
            ring.flush()
            before = len(fired)
            sender = threading.Timer(0.05, b.send, (b"x",))  # after many timer signals
            sender.start()
            try:
                assert ring.wait(timeout) == 1, "wait returned without the completion"
            finally:
                sender.join()
            assert len(fired) > before  # the wait really was interrupted
            assert op.outcome()[1] == 1
