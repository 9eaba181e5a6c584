"""Which ring the module-level operations use: loop-neutral.

Imports neither trio nor asyncio at import time. Every operation asks
``ring_of_task()``: one ContextVar lookup in C (``_ringcore.cached_ring``) when the
task's context caches ``(ring, thread ident)`` for an open ring. On a miss
``_find_ring`` picks the innermost ``open_ring()`` of the context, else asks
the adapter of the library running this task for its own ring (trio: one per
run; asyncio: one per event loop), and caches the answer.

Detection, in this order (both libraries can be imported in one process, but
one thread runs one of them at a time):

- trio, if ``trio`` is imported and ``trio.lowlevel.in_trio_run()``;
- asyncio, if ``asyncio._get_running_loop()`` returns a loop (the C
  accessor behind ``asyncio.get_running_loop``, without its exception; uvloop
  sets it as the default loop does);
- else ``RuntimeError``.

The cache is per context: an asyncio task copies its creator's context, a
trio task its spawner's. A context carried into a worker thread, and from
there into another run or loop, carries the cache along: the thread check
catches that; a ring closed (at the end of its run or loop, or after a kernel
failure) fails the closed check; both go to ``_find_ring``.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from contextvars import ContextVar
from threading import get_ident
from typing import TYPE_CHECKING, Any

from . import _ringcore

if TYPE_CHECKING:
    from ._ring import Ring

__all__ = ["adapter", "current_library", "ring_of_task", "running_trio"]

#: The ring of the innermost ``open_ring()`` of this context, or None.
_innermost: ContextVar[Ring | None] = ContextVar("ouring_ring", default=None)
#: The cache ``ring_of_task`` reads: ``(ring, thread ident)``.
_task_ring: ContextVar[tuple[Ring, int] | None] = ContextVar("ouring_task_ring", default=None)

_NOT_IN_A_LOOP = "ouring operations must be awaited inside trio.run or a running asyncio loop"


def running_trio() -> Any:
    """The trio module if this thread runs inside ``trio.run``, else None. A
    dict lookup when trio was never imported; trio's thread-local check else."""
    trio = sys.modules.get("trio")
    if trio is not None and trio.lowlevel.in_trio_run():
        return trio
    return None


def current_library() -> str:
    """``"trio"`` or ``"asyncio"``: what runs the current task. Not cached
    (for open_ring and the rare paths); operations use ``ring_of_task``."""
    if running_trio() is not None:
        return "trio"
    asyncio = sys.modules.get("asyncio")
    if asyncio is not None and asyncio._get_running_loop() is not None:
        return "asyncio"
    raise RuntimeError(_NOT_IN_A_LOOP)


def adapter() -> Any:
    """The adapter module of the library running this task: ``_trio`` or
    ``_asyncio``. Each provides ``run_ring()`` (the run's or the loop's own
    ring, made on first use), ``drive(ring)`` (a driver with ``ring`` and
    ``close()``, for ``open_ring``) and ``Event`` (``set()``, ``await
    wait()``). Imported on first use: this module imports no event-loop
    library."""
    if current_library() == "trio":
        from . import _trio

        return _trio
    from . import _asyncio

    return _asyncio


def _find_ring() -> Ring:
    innermost = _innermost.get()
    if innermost is not None:
        return innermost  # even closed: its operations raise RingClosedError
    ring: Ring = adapter().run_ring()
    _task_ring.set((ring, get_ident()))
    return ring


#: The ring module-level operations use: the innermost ``open_ring()`` of this
#: task's context, else the run's (trio) or the loop's (asyncio). No Python
#: frame on a cache hit.
ring_of_task: Callable[[], Ring] = functools.partial(_ringcore.cached_ring, _task_ring, _find_ring)
