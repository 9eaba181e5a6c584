"""Buffer pools: buffers registered with a ring for fixed reads and writes.

``io_uring_register_buffers`` pins a set of buffers once; READ_FIXED and
WRITE_FIXED then name one by index (the SQE's ``buf_index``) and the kernel
skips pinning and unpinning the pages on every operation. The memory is
ouring's own (one anonymous mmap, page-aligned, so O_DIRECT works), cut into
``count`` buffers of ``size`` bytes, each starting on a page.

Who owns what (native/pool.c): the mapping lives as long as the pool object,
and every ``PoolBuffer`` references its pool; an operation lends a
``PoolBuffer`` like any buffer and holds it until its final CQE (forever if
its ring leaks it), so the memory is never unmapped while the kernel may
write into it. ``release()`` gives a buffer back, but its slot is handed out
again only once no operation and no memoryview still holds it.

A ring has one table of registered buffers, so one registered pool at a
time. A pool that cannot register (no READ_FIXED in the kernel, the ring has
a pool already, ``RLIMIT_MEMLOCK`` too low, the thread fallback) is a pool
of plain buffers: every call still works, with plain reads and writes, and
``reason`` says why in one line.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Self

from ._ringcore import PoolBuffer, PoolCore

if TYPE_CHECKING:
    from ._backend import Backend

__all__ = ["BufferPool", "PoolBuffer", "PoolExhaustedError"]


class PoolExhaustedError(RuntimeError):
    """``BufferPool.get()`` found every buffer out."""


class BufferPool(PoolCore):
    """``count`` buffers of ``size`` bytes, registered with ``ring`` (by
    default the current ring, :func:`ouring.current_ring`) for
    :func:`ouring.read_fixed`/:func:`ouring.write_fixed` and fixed reads in
    :func:`ouring.read_many`.

    ``registered`` says whether the kernel has the buffers; when it does not,
    ``reason`` says why and the buffers work as plain ones. When the ring
    closes, the pool is unregistered and its buffers stay valid memory (plain
    buffers from then on). :meth:`close` unregisters it at once if every
    buffer is back, else when the ring closes.
    """

    registered: bool
    reason: str | None

    def __new__(cls, count: int, size: int, *, ring: Backend | None = None) -> Self:
        return super().__new__(cls, count, size)

    def __init__(self, count: int, size: int, *, ring: Backend | None = None) -> None:
        if ring is None:
            from ._api import current_ring

            ring = current_ring()
        self._ring: weakref.ref[Backend] = weakref.ref(ring)
        self._closed = False
        self.registered = False
        self.reason = ring._register_pool(self)
        self.registered = self.reason is None

    def get(self) -> PoolBuffer:
        """A buffer of the pool, yours until you release it (``buf.release()``,
        :meth:`release`, or ``with pool.get() as buf:``). Raises
        :class:`PoolExhaustedError` when every buffer is out: it never waits,
        and no operation ever fails in the kernel for want of a buffer."""
        if self._closed:
            raise ValueError("this BufferPool is closed")
        buf = self._take()
        if buf is None:
            raise PoolExhaustedError(
                f"all {self.count} buffers of this pool are out (a released one comes back "
                "once no operation holds it): release one or make a bigger pool"
            )
        return buf

    def release(self, buf: PoolBuffer) -> None:
        """``buf.release()``, after checking that ``buf`` came from this pool."""
        if type(buf) is not PoolBuffer or buf.pool is not self:
            raise ValueError(f"{buf!r} is not a buffer of this pool")
        buf.release()

    @property
    def ring(self) -> Backend | None:
        """The ring the pool was made for (None once that ring is gone)."""
        return self._ring()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """No more ``get()``. Unregisters the buffers now if every one is
        back in the pool (the ring can then register another pool); buffers
        still out stay usable, and stay registered until the ring closes.
        Idempotent."""
        if self._closed:
            return
        self._closed = True
        ring = self._ring()
        if ring is not None and self.registered and self.available == self.count:
            ring._unregister_pool(self)

    def _unregistered(self, reason: str) -> None:
        """The ring no longer has these buffers: plain buffers from now on."""
        self.registered = False
        self.reason = reason

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "registered" if self.registered else f"plain: {self.reason}"
        return (
            f"<ouring.BufferPool {self.count}x{self.size} available={self.available} "
            f"{'closed ' if self._closed else ''}{state}>"
        )
