"""Issue 4, scenario 10: os.fork() with operations in flight. The child
cannot use the parent's ring (a clear error, never a crash: the ring memory
is MADV_DONTFORK, absent in the child); the parent's operations are
unaffected. The child always leaves with os._exit."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

import pytest

import ouring
from ouring._ops import Nop, Read, Recv

CLEAR_ERROR, WRONG, CRASHED_OR_OTHER = 10, 11, 12


def in_child(action: Callable[[], object]) -> int:
    """Run ``action`` in a forked child; its exit code says how it ended."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = CRASHED_OR_OTHER
        try:
            action()
            code = WRONG
        except ouring.RingClosedError:
            code = CLEAR_ERROR
        except BaseException:  # noqa: BLE001 - reported through the exit code
            code = CRASHED_OR_OTHER
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.parametrize(
    "use",
    [
        "wait",
        "flush",
        "reap",
        "submit_and_flush",
    ],
)
def test_the_child_cannot_use_the_parents_ring(
    socketpair: tuple[socket.socket, socket.socket], use: str
) -> None:
    a, b = socketpair
    buf = bytearray(b"untouched")
    with ouring.Ring(8) as ring:
        op = Recv(a, buf)
        ring.submit(op)
        ring.flush()

        def action() -> None:
            if use == "wait":
                ring.wait(0.1)
            elif use == "flush":
                ring.submit(Nop())
                ring.flush()
            elif use == "reap":
                ring.reap()
            else:
                r, _ = os.pipe()
                ring.submit(Read(r, bytearray(1)))
                ring.flush()

        code = in_child(action)
        assert code == CLEAR_ERROR, f"the child ended with {code} (negative: killed by a signal)"
        # The parent's recv is unaffected: still armed, and it gets the data.
        assert op.state != 4  # not DONE
        b.send(b"parent")
        while ring.statistics().inflight:
            assert ring.wait(5)
        assert op.outcome() == (buf, 6)
        assert buf[:6] == b"parent"


def io_uring_mappings() -> int:
    with open("/proc/self/maps") as maps:
        return sum("io_uring" in line for line in maps)


def test_the_child_has_no_ring_memory() -> None:
    """io_uring_ring_dontfork: the SQ/CQ mappings are MAP_SHARED with the
    kernel; without MADV_DONTFORK a child would share them and could
    corrupt the parent's ring. The child must not have them at all."""
    with ouring.Ring(8) as ring:
        assert io_uring_mappings() > 0
        pid = os.fork()
        if pid == 0:
            os._exit(min(io_uring_mappings(), 100))
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "the child inherited the ring mappings"
        assert not ring.closed
