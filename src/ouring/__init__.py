"""ouring: completion-based I/O on Linux io_uring with owned buffers.

A buffer handed to an operation belongs to the kernel until the operation's
final completion; the library keeps it alive and pinned until then, whatever
happens to the caller, and hands it back with the result::

    buf, n = await ouring.read(fd, bytearray(4096), offset)
"""

from typing import TYPE_CHECKING, Any

from ._api import (
    accept,
    close,
    connect,
    current_ring,
    fadvise,
    fallocate,
    fsync,
    ftruncate,
    link,
    mkdir,
    open,  # noqa: A004 - ouring.open mirrors os.open
    open_ring,
    read,
    read_fixed,
    read_many,
    readv,
    recv,
    recvmsg,
    rename,
    rmdir,
    send,
    send_zc,
    sendmsg,
    shutdown,
    splice,
    stat,
    symlink,
    unlink,
    wait_all_ops_completed,
    write,
    write_fixed,
    writev,
)
from ._errors import BufferInUseError, RingClosedError, UnsupportedError
from ._files import AsyncFile, open_file
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
    "accept",
    "close",
    "connect",
    "current_ring",
    "fadvise",
    "fallocate",
    "fsync",
    "ftruncate",
    "link",
    "mkdir",
    "open",
    "open_file",
    "open_ring",
    "read",
    "read_fixed",
    "read_many",
    "readv",
    "recv",
    "recvmsg",
    "rename",
    "rmdir",
    "send",
    "send_zc",
    "sendfile",
    "sendmsg",
    "shutdown",
    "splice",
    "stat",
    "symlink",
    "unlink",
    "wait_all_ops_completed",
    "write",
    "write_fixed",
    "writev",
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
