"""Buffer leases: how a caller's memory is lent to the kernel and comes back.

A lease holds a strong reference to the object and a buffer export of it
(``ffi.from_buffer``), so a ``bytearray`` cannot be resized or freed and an
``mmap`` cannot be closed while the kernel may touch it. A lease is released
exactly once, by the operation that owns it, after the operation's final CQE
(or when the operation is withdrawn before the kernel saw it).

Memory the kernel writes into (read, recv, readv) is lent exclusively: no
other in-flight operation may hold any byte of it. Memory the kernel only
reads (write, send) may be shared by any number of in-flight readers, but not
with a writer. The table of lent ranges lives in the native shim
(``ouring_lease``): it is per process because memory is (two rings must not
write into one buffer either), and a sorted array in C answers "is any byte
of this already lent?" in O(log n) for well under a microsecond.
"""

from __future__ import annotations

from typing import Any

from ._errors import BufferInUseError
from ._native import ffi, lib

__all__ = ["MAX_RW", "Lease"]

# One SQE length is 32 bits and the kernel moves at most MAX_RW_COUNT
# (INT_MAX & PAGE_MASK) bytes per read or write: longer buffers get a short
# count, never a silently truncated 32-bit length.
MAX_RW = 0x7FFFF000


class Lease:
    """One buffer lent to the kernel. ``ptr`` is what the SQE points at;
    ``length`` is already capped at what one read or write may move."""

    __slots__ = ("_size", "_writable", "length", "obj", "ptr")

    obj: Any
    ptr: Any
    length: int

    def __init__(self, obj: Any, writable: bool) -> None:
        try:
            ptr = _from_buffer("char[]", obj, writable)
        except (TypeError, BufferError) as exc:
            raise _unlendable(obj, writable) from exc
        size = len(ptr)
        if size and _lease(ptr, size, writable):
            _release(ptr)
            raise BufferInUseError(
                f"this {type(obj).__name__} (or memory overlapping it) is lent to an "
                "in-flight operation; it comes back when that operation completes"
            )
        self.obj = obj
        self.ptr = ptr
        self.length = size if size < MAX_RW else MAX_RW
        self._size = size
        self._writable = writable

    def release(self) -> None:
        """Give the memory back: drop the table entry and the export.
        Called once, after the final CQE of the operation that holds it."""
        if self._size:
            _unlease(self.ptr, self._size, self._writable)
        _release(self.ptr)


_from_buffer = ffi.from_buffer
_release = ffi.release
_lease = lib.ouring_lease
_unlease = lib.ouring_unlease


def _unlendable(obj: Any, writable: bool) -> Exception:
    kind = type(obj).__name__
    try:
        view = memoryview(obj)
    except TypeError:
        return TypeError(f"a buffer-protocol object is required, not {kind}")
    with view:
        if writable and view.readonly:
            return TypeError(
                f"the kernel writes into this buffer, so it must be writable; "
                f"{kind} is read-only (use a bytearray)"
            )
        if not view.c_contiguous:
            return BufferError(f"the buffer must be C-contiguous ({kind} is not)")
    return TypeError(f"cannot lend {kind} to the kernel")
