"""Buffer leases: how a caller's memory is lent to the kernel and comes back.

A lease holds a strong reference to the object and a buffer export of it
(``ffi.from_buffer``), so a ``bytearray`` cannot be resized or freed and an
``mmap`` cannot be closed while the kernel may touch it. A lease is released
exactly once, by the operation that owns it, after the operation's final CQE
(or when the operation is withdrawn before the kernel saw it).

Memory the kernel writes into (read, recv, readv) is lent exclusively: no
other in-flight operation may hold any byte of it. Memory the kernel only
reads (write, send) may be shared by any number of in-flight readers, but not
with a writer. The registry is per process because memory is: two rings must
not write into one buffer either.
"""

from __future__ import annotations

import threading
from bisect import bisect_left, bisect_right, insort
from typing import Any

from ._errors import BufferInUseError
from ._native import ffi

__all__ = ["MAX_RW", "Lease"]

# One SQE length is 32 bits and the kernel moves at most MAX_RW_COUNT
# (INT_MAX & PAGE_MASK) bytes per read or write: longer buffers get a short
# count, never a silently truncated 32-bit length.
MAX_RW = 0x7FFFF000


class _Registry:
    """Address ranges lent out, kept sorted for O(log n) overlap checks."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        # Write leases never overlap each other: starts and ends sort together.
        self.write_starts: list[int] = []
        self.write_ends: list[int] = []
        # Read leases may overlap; sorted by start, with the longest length
        # seen bounding how far back an overlapping range can start.
        self.reads: list[tuple[int, int]] = []
        self.longest_read = 0

    def overlaps_write(self, start: int, end: int) -> bool:
        i = bisect_right(self.write_starts, start)
        if i and self.write_ends[i - 1] > start:
            return True
        return i < len(self.write_starts) and self.write_starts[i] < end

    def overlaps_read(self, start: int, end: int) -> bool:
        reads = self.reads
        k = bisect_left(reads, (end, 0)) - 1
        floor = start - self.longest_read
        while k >= 0 and reads[k][0] >= floor:
            if reads[k][1] > start:
                return True
            k -= 1
        return False

    def add(self, start: int, end: int, writable: bool) -> bool:
        with self.lock:
            if self.overlaps_write(start, end):
                return False
            if writable:
                if self.overlaps_read(start, end):
                    return False
                i = bisect_left(self.write_starts, start)
                self.write_starts.insert(i, start)
                self.write_ends.insert(i, end)
            else:
                insort(self.reads, (start, end))
                self.longest_read = max(self.longest_read, end - start)
            return True

    def remove(self, start: int, end: int, writable: bool) -> None:
        with self.lock:
            if writable:
                i = bisect_left(self.write_starts, start)
                del self.write_starts[i]
                del self.write_ends[i]
            else:
                del self.reads[bisect_left(self.reads, (start, end))]


_registry = _Registry()


class Lease:
    """One buffer lent to the kernel. ``ptr`` is what the SQE points at;
    ``length`` is already capped at what one read or write may move."""

    __slots__ = ("_end", "_start", "_writable", "length", "obj", "ptr")

    obj: Any
    ptr: Any
    length: int

    def __init__(self, obj: Any, writable: bool) -> None:
        try:
            ptr = ffi.from_buffer("char[]", obj, require_writable=writable)
        except (TypeError, BufferError) as exc:
            raise _unlendable(obj, writable) from exc
        size = len(ptr)
        start = int(ffi.cast("uintptr_t", ptr)) if size else 0
        if size and not _registry.add(start, start + size, writable):
            ffi.release(ptr)
            raise BufferInUseError(
                f"this {type(obj).__name__} (or memory overlapping it) is lent to an "
                "in-flight operation; it comes back when that operation completes"
            )
        self.obj = obj
        self.ptr = ptr
        self.length = min(size, MAX_RW)
        self._start = start
        self._end = start + size
        self._writable = writable

    def release(self) -> None:
        """Give the memory back: drop the export and the registry entry.
        Called once, after the final CQE of the operation that holds it."""
        if self._end > self._start:
            _registry.remove(self._start, self._end, self._writable)
        ffi.release(self.ptr)


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
