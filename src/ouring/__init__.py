"""ouring: completion-based I/O on Linux io_uring with owned buffers.

A buffer handed to an operation belongs to the kernel until the operation's
final completion; the library keeps it alive and pinned until then, whatever
happens to the caller, and hands it back with the result::

    buf, n = await ouring.read(fd, bytearray(4096), offset)
"""

from typing import TYPE_CHECKING, Any

from . import _generated_api
from ._api import (
    close,
    connect,
    current_ring,
    open_ring,
    read_fixed,
    read_many,
    send_zc,
    sendmsg,
    wait_all_ops_completed,
    write_fixed,
)
from ._errors import BufferInUseError, RingClosedError, UnsupportedError
from ._files import AsyncFile, open_file
from ._generated_api import *  # noqa: F403 - the operations _ops.py declares public
from ._pool import BufferPool, PoolBuffer, PoolExhaustedError
from ._ring import DEFAULT_SETUP_FLAGS, Ring, RingStatistics

__all__ = [
    "DEFAULT_SETUP_FLAGS",
    "AsyncFile",
    "BufferInUseError",
    "BufferPool",
    "Path",
    "PoolBuffer",
    "PoolExhaustedError",
    "Ring",
    "RingClosedError",
    "RingStatistics",
    "UnsupportedError",
    "close",
    "connect",
    "current_ring",
    "open_file",
    "open_ring",
    "read_fixed",
    "read_many",
    "send_zc",
    "sendfile",
    "sendmsg",
    "wait_all_ops_completed",
    "write_fixed",
    *_generated_api.__all__,
]
__version__ = "0.1.0"


if TYPE_CHECKING:
    from ._path import Path
    from ._sendfile import sendfile


def __getattr__(name: str) -> Any:
    # ouring.Path subclasses trio.Path, and sendfile speaks trio's streams:
    # each is imported at its first use, so that importing ouring (the core,
    # the backends, the executors' common parts) imports no event loop, and
    # an asyncio program that never touches them never imports trio.
    if name == "Path":
        from ._path import Path

        globals()[name] = Path
        return Path
    if name == "sendfile":
        from ._sendfile import sendfile

        globals()[name] = sendfile
        return sendfile
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
