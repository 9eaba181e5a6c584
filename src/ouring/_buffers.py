"""Buffer leases: how a caller's memory is lent to the kernel and comes back.

A lease holds a strong reference to the object and a buffer export of it
(``PyObject_GetBuffer``), so a ``bytearray`` cannot be resized or freed and an
``mmap`` cannot be closed while the kernel may touch it. A lease is released
exactly once, by the operation that owns it, after the operation's final CQE
(or when the operation is withdrawn before the kernel saw it).

Memory the kernel writes into (read, recv, readv) is lent exclusively: no
other in-flight operation may hold any byte of it. Memory the kernel only
reads (write, send) may be shared by any number of in-flight readers, but not
with a writer. The table of lent ranges lives in C (``native/lease.c``): it is
per process because memory is (two rings must not write into one buffer
either), and a sorted array answers "is any byte of this already lent?" in
O(log n). Read, write, recv and send embed their lend in the operation
(``_ringcore.BufferOperation``), and so does a receive into new bytes
(``RecvBytes``); ``Lease`` is the same lend as an object of its own, for
operations that carry several buffers (readv, writev). The functions here
build the exceptions of a refused lend.
"""

from __future__ import annotations

from typing import Any

from ._errors import BufferInUseError
from ._ringcore import MAX_RW, Lease

__all__ = ["MAX_RW", "Lease", "in_use", "unlendable"]


def in_use(obj: Any) -> Exception:
    return BufferInUseError(
        f"this {type(obj).__name__} (or memory overlapping it) is lent to an "
        "in-flight operation; it comes back when that operation completes"
    )


def unlendable(obj: Any, writable: bool) -> Exception:
    kind = type(obj).__name__
    try:
        view = memoryview(obj)
    except TypeError:
        return TypeError(f"a buffer-protocol object is required, not {kind}")
    except BufferError as exc:  # a released pool buffer says why
        return BufferError(str(exc))
    with view:
        if writable and view.readonly:
            return TypeError(
                f"the kernel writes into this buffer, so it must be writable; "
                f"{kind} is read-only (use a bytearray)"
            )
        if not view.c_contiguous:
            return BufferError(f"the buffer must be C-contiguous ({kind} is not)")
    return TypeError(f"cannot lend {kind} to the kernel")
