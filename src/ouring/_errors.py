"""Exceptions of ouring, and the one place errno results become exceptions."""

from __future__ import annotations

import errno
import os
import resource

__all__ = [
    "BufferInUseError",
    "FdClosedError",
    "RingClosedError",
    "UnsupportedError",
    "os_error",
]


class UnsupportedError(OSError):
    """io_uring, or an operation of it, is not available on this system.

    The message names the cause and the fix; ``errno`` is the kernel's answer.
    """


class BufferInUseError(BufferError):
    """The buffer, or memory overlapping it, is lent to an in-flight operation
    that the kernel writes into; it comes back when that operation completes."""


class RingClosedError(RuntimeError):
    """The ring was closed (or belongs to a finished run, another thread or
    another process) before the operation could complete."""


class FdClosedError(OSError):
    """The fd was closed through the ring (``close``) while this operation was
    in flight on it, and the operation did not happen. Event-loop adapters
    translate it (trio: ``trio.ClosedResourceError``)."""


def os_error(
    res: int, *, buffer: object = None, filename: object = None, filename2: object = None
) -> OSError:
    """``OSError`` of the right subclass for a negative CQE result.

    For operations that carry a buffer, the exception's ``buffer`` attribute
    holds it: ownership returns to the caller on failure too.
    """
    code = -res
    exc = OSError(code, os.strerror(code), filename, None, filename2)
    if buffer is not None:
        exc.buffer = buffer  # type: ignore[attr-defined]
    return exc


_SETUP_FIXES = {
    errno.ENOSYS: (
        "this kernel has no io_uring (it needs Linux 5.6 or later, built with "
        "CONFIG_IO_URING), or a seccomp filter answers ENOSYS for io_uring_setup",
        "upgrade the kernel, or allow io_uring_setup, io_uring_enter and io_uring_register",
    ),
    errno.EPERM: (
        "a seccomp filter (Docker's default profile has one) blocks io_uring_setup",
        "run with a seccomp profile that allows io_uring_setup, io_uring_enter and "
        "io_uring_register (docker run --security-opt seccomp=PROFILE)",
    ),
    errno.ENOMEM: (
        "the kernel could not allocate the ring: RLIMIT_MEMLOCK ({memlock}) is too low "
        "(kernels before 5.12 charge the ring to it)",
        "raise the locked-memory limit (ulimit -l, or LimitMEMLOCK= in a systemd unit, "
        "or docker run --ulimit memlock=-1) or ask for fewer entries",
    ),
}
# Every message ends with the way to keep going without io_uring.
_FALLBACK_HINT = (
    "; or set OURING_FALLBACK=threads (or open_ring(fallback='threads')) to run the "
    "same operations on worker threads"
)

_DISABLED_SYSCTL = "/proc/sys/kernel/io_uring_disabled"


def _memlock() -> str:
    soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    return "unlimited" if soft == resource.RLIM_INFINITY else f"{soft // 1024} KiB"


def setup_error(res: int) -> UnsupportedError | OSError:
    """The exception for a failed ``io_uring_setup``: for the causes that
    mean "no io_uring here", an ``UnsupportedError`` naming cause and fix."""
    code = -res
    if code == errno.EPERM:
        # EPERM comes from the sysctl (checked first: it is readable) or from
        # a seccomp filter, which leaves no other trace.
        try:
            with open(_DISABLED_SYSCTL) as f:
                disabled = f.read().strip()
        except OSError:
            disabled = "0"
        if disabled in ("1", "2"):
            who = "all processes" if disabled == "2" else "processes outside kernel.io_uring_group"
            return UnsupportedError(
                code,
                f"io_uring is unavailable: kernel.io_uring_disabled={disabled} forbids it "
                f"for {who}; fix: sysctl -w kernel.io_uring_disabled=0"
                + (" (or add this user to kernel.io_uring_group)" if disabled == "1" else "")
                + _FALLBACK_HINT,
            )
    if code in _SETUP_FIXES:
        cause, fix = _SETUP_FIXES[code]
        if code == errno.ENOMEM:
            cause = cause.format(memlock=_memlock())
        return UnsupportedError(
            code, f"io_uring is unavailable: {cause}; fix: {fix}{_FALLBACK_HINT}"
        )
    return os_error(res)
