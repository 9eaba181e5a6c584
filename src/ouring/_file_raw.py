"""The raw layer of ``ouring.open_file``.

``_RawFile`` (``FileIO``): the fd, the position, one ring operation per call.
A seekable file (a regular file, a block device: anything ``lseek`` accepts)
tracks its own position and passes it as an explicit offset to every read
and write, so no operation depends on the kernel's file position (and two
tasks cannot race on it). Pipes, FIFOs, ttys and sockets use offset -1.
An ``O_APPEND`` fd writes at offset -1 too (the kernel appends wherever the
offset says) and reads the kernel's position back with ``lseek``, which is
where the builtin's ``tell()`` is after such a write. ``buffering=0`` binary
files use this layer directly.

This module also holds ``_open_raw`` (``FileIO.__init__``) and the argument
conversions and helpers that the layers above share; ``_files.py`` has the
overview of the layers and their cancellation rule.

Portions of this module are derived from CPython's ``Lib/_pyio.py`` and
``Modules/_io/*.c``, Copyright (c) 2001-2024 Python Software Foundation, used
under the Python Software Foundation License Version 2.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import operator
import os
import stat as stat_module
from collections.abc import Callable, Iterator
from typing import Any

from . import _api, _sync
from ._ops import fs_path

DEFAULT_BUFFER_SIZE = io.DEFAULT_BUFFER_SIZE
_CLOSED = "I/O operation on closed file."
_RAW_CLOSED = "I/O operation on closed file"
_UnsupportedOperation = io.UnsupportedOperation


@contextlib.contextmanager
def _lent_view(
    obj: Any, start: int = 0, stop: int | None = None, *, cast: bool = True
) -> Iterator[memoryview]:
    """A byte view of ``obj[start:stop]`` to lend to one ring operation,
    released on exit. If the coroutine is closed while that operation is in
    flight, the ring still holds an export of the view until the CQE, and
    releasing it would raise ``BufferError`` out of ``coro.close()``: the view
    is then left to the ring, and freed with the operation."""
    whole = memoryview(obj)
    view = whole.cast("B")[start:stop] if cast else whole
    try:
        yield view
    finally:
        with contextlib.suppress(BufferError):
            view.release()
            whole.release()


def _optional_size(size: Any) -> int:
    """``size`` as C's ``_Py_convert_optional_to_ssize_t`` reads it."""
    if size is None:
        return -1
    try:
        index = size.__index__
    except AttributeError:
        raise TypeError(
            f"argument should be integer or None, not '{type(size).__name__}'"
        ) from None
    value: int = index()
    return value


async def _collect_lines(layer: Any, hint: int, lines: list[Any]) -> None:
    """IOBase.readlines: lines until EOF, or until their total length passes
    ``hint`` (when > 0), appended to ``lines`` (the caller's, so that it can
    give them back if a later line raises)."""
    total = 0
    while True:
        line = await layer.next_line()
        if not line:
            return
        lines.append(line)
        total += len(line)
        if 0 < hint < total:
            return


def _einval() -> OSError:
    return OSError(errno.EINVAL, os.strerror(errno.EINVAL))


def _espipe() -> OSError:
    return OSError(errno.ESPIPE, os.strerror(errno.ESPIPE))


class _RawFile:
    """``FileIO`` on the ring: one operation per call, an explicit offset for
    seekable files."""

    def __init__(
        self,
        fd: int,
        name: Any,
        *,
        readable: bool,
        writable: bool,
        appending: bool,
        created: bool,
        closefd: bool,
        positional: bool,
        kernel_appends: bool,
        pos: int,
        blksize: int,
    ) -> None:
        self.fd = fd
        self.name = name
        self.readable = readable
        self.writable = writable
        self.appending = appending
        self.created = created
        self.closefd = closefd
        # Set by the first aclose of any layer of this file (they share this
        # object, their lock and their registered calls).
        self.closing = False
        self.positional = positional  # seekable: explicit offsets, tracked position
        self.kernel_appends = kernel_appends  # O_APPEND: the kernel picks the offset
        self.pos = pos
        self.blksize = blksize
        self.closed = False
        # Bytes a cancelled read took from a pipe: returned first by the next read.
        self.pushback = b""

    # -- checks

    def check_closed(self, msg: str = _RAW_CLOSED) -> None:
        if self.closed:
            raise ValueError(msg)

    def check_readable(self) -> None:
        if not self.readable:
            raise _UnsupportedOperation("File not open for reading")

    def check_writable(self) -> None:
        if not self.writable:
            raise _UnsupportedOperation("File not open for writing")

    @property
    def mode(self) -> str:
        if self.created:
            return "xb+" if self.readable else "xb"
        if self.appending:
            return "ab+" if self.readable else "ab"
        if self.readable:
            return "rb+" if self.writable else "rb"
        return "wb"

    # -- the ring operations; the closed check right before each one means no
    # operation is ever sent on an fd number this file no longer owns.

    async def read_op(self, buf: Any) -> tuple[Any, int]:
        """One read into ``buf`` (any writable buffer) at the position."""
        if self.pushback:
            with memoryview(buf) as view, view.cast("B") as dst:
                n = min(len(dst), len(self.pushback))
                dst[:n] = self.pushback[:n]
            self.pushback = self.pushback[n:]
            return buf, n
        self.check_closed()
        buf, n = await _api.read(self.fd, buf, self.pos if self.positional else -1)
        if self.positional:
            self.pos += n
        return buf, n

    async def write_op(self, buf: Any) -> tuple[Any, int]:
        """One write from ``buf`` at the position (the end, for O_APPEND)."""
        self.check_closed()
        offset = self.pos if self.positional and not self.kernel_appends else -1
        if self.positional and self.kernel_appends:
            # Where the kernel's position stays if nothing is appended (an empty
            # write), as after the builtin's seek.
            os.lseek(self.fd, self.pos, os.SEEK_SET)
        buf, n = await _api.write(self.fd, buf, offset)
        if self.positional:
            if self.kernel_appends:
                # The kernel wrote at the end and moved its own position there.
                self.pos = os.lseek(self.fd, 0, os.SEEK_CUR)
            else:
                self.pos += n
        return buf, n

    async def readinto_raw(self, view: memoryview) -> int:
        return (await self.read_op(view))[1]

    def unread(self, data: bytes, start: int) -> None:
        """Give back bytes a cancelled or failed read consumed from ``start``."""
        if self.positional:
            self.pos = start
        elif data:
            self.pushback = data + self.pushback

    async def readall(self) -> bytes:
        start = self.pos
        chunks: list[bytes] = []
        try:
            bufsize = DEFAULT_BUFFER_SIZE
            if self.positional and not self.pushback:
                self.check_closed()
                end = (await _api.stat(self.fd)).st_size
                if end >= self.pos:
                    bufsize = end - self.pos + 1
            while True:
                buf = bytearray(bufsize)
                _, n = await self.read_op(buf)
                if n == 0:
                    break
                del buf[n:]
                chunks.append(bytes(buf))
                bufsize = max(bufsize, DEFAULT_BUFFER_SIZE)
        except BaseException:
            self.unread(b"".join(chunks), start)
            raise
        return b"".join(chunks)

    # -- FileIO's methods

    async def read(self, size: Any = -1) -> bytes:
        n = _optional_size(size)
        self.check_closed()
        self.check_readable()
        if n < 0:
            return await self.readall()
        buf = bytearray(n)
        _, got = await self.read_op(buf) if n else (buf, 0)
        del buf[got:]
        return bytes(buf)

    async def readinto(self, b: Any) -> int:
        self.check_closed()
        self.check_readable()
        with _lent_view(b) as dst:
            if not len(dst):
                return 0
            return (await self.read_op(dst))[1]

    async def readline(self, size: Any = -1) -> bytes:
        # IOBase.readline: FileIO has no peek, so one byte per read. Each byte
        # is one operation; a cancel between two of them gives back what the
        # line took so far (push-back on a pipe, the position on a file).
        limit = _optional_size(size)
        start = self.pos
        res = bytearray()
        try:
            while limit < 0 or len(res) < limit:
                b = await self.read(1)
                if not b:
                    break
                res += b
                if res.endswith(b"\n"):
                    break
        except BaseException:
            self.unread(bytes(res), start)
            raise
        return bytes(res)

    async def next_line(self) -> bytes:
        return await self.readline()

    async def readlines(self, hint: Any = None) -> list[bytes]:
        n = _optional_size(hint)
        self.check_closed(_CLOSED)
        start = self.pos
        lines: list[bytes] = []
        try:
            await _collect_lines(self, n, lines)
        except BaseException:
            self.unread(b"".join(lines), start)  # not one line was taken
            raise
        return lines

    async def write(self, b: Any) -> int:
        if isinstance(b, str):
            raise TypeError("a bytes-like object is required, not 'str'")
        with _lent_view(b, cast=False) as view:
            self.check_closed()
            self.check_writable()
            return (await self.write_op(view))[1]

    async def seek(self, pos: Any, whence: int = 0) -> int:
        if isinstance(pos, float):
            raise TypeError("an integer is required")
        self.check_closed()
        pos = operator.index(pos)
        return await self.raw_seek(pos, whence)

    async def raw_seek(self, pos: int, whence: int) -> int:
        if not self.positional:
            raise _espipe()
        if whence == os.SEEK_SET:
            new = pos
        elif whence == os.SEEK_CUR:
            new = self.pos + pos
        elif whence == os.SEEK_END:
            self.check_closed()
            new = (await _api.stat(self.fd)).st_size + pos
        else:  # SEEK_DATA/SEEK_HOLE (or invalid): the kernel's answer
            self.check_closed()
            new = os.lseek(self.fd, pos, whence)
        if new < 0:
            raise _einval()
        self.pos = new
        return new

    def tell_sync(self) -> int:
        self.check_closed()
        if not self.positional:
            raise _espipe()
        return self.pos

    async def tell(self) -> int:
        return self.tell_sync()

    async def truncate(self, size: Any = None) -> int:
        self.check_closed()
        self.check_writable()
        size = self.tell_sync() if size is None else operator.index(size)
        if size < 0:
            raise _einval()
        self.check_closed()
        await _api.ftruncate(self.fd, size)
        return int(size)

    async def flush(self) -> None:
        self.check_closed(_CLOSED)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.closefd:
            await _api.close(self.fd)
        elif self.positional:
            # The fd stays open for its owner: leave the kernel's position where
            # this file's position is, as the builtin (which uses it) would.
            os.lseek(self.fd, self.pos, os.SEEK_SET)

    def seekable(self) -> bool:
        self.check_closed()
        return self.positional


async def _open_raw(
    file: Any,
    creating: bool,
    reading: bool,
    writing: bool,
    appending: bool,
    updating: bool,
    closefd: bool,
    opener: Callable[[Any, int], int] | None,
) -> _RawFile:
    """``FileIO.__init__``: open (or adopt) the fd, check it, find its kind."""
    if isinstance(file, int):
        if file < 0:
            raise ValueError("negative file descriptor")
        fd = file
    else:
        fs_path(file, None)  # FileIO checks the name (io.open's message) before any opener
        fd = -1
    readable = reading or updating
    writable = creating or writing or appending or updating
    if creating:
        flags = os.O_EXCL | os.O_CREAT
    elif reading:
        flags = 0
    elif writing:
        flags = os.O_CREAT | os.O_TRUNC
    else:
        flags = os.O_APPEND | os.O_CREAT
    if readable and writable:
        flags |= os.O_RDWR
    elif readable:
        flags |= os.O_RDONLY
    else:
        flags |= os.O_WRONLY
    flags |= os.O_CLOEXEC
    owned = False
    if fd < 0:
        if not closefd:
            raise ValueError("Cannot use closefd=False with file name")
        if opener is None:
            fd = await _api.open(file, flags, 0o666)
        else:
            await _sync.checkpoint_if_cancelled()  # before the opener acts
            fd = opener(file, flags)
            if not isinstance(fd, int):
                raise TypeError("expected integer from opener")
            if fd < 0:
                raise ValueError(f"opener returned {fd}")
        owned = True

    async def inspect() -> _RawFile:
        """Check the fd and find its kind (closing it if that fails)."""
        try:
            st = await _api.stat(fd)
            if stat_module.S_ISDIR(st.st_mode):
                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), file)
            blksize = st.st_blksize if st.st_blksize > 1 else DEFAULT_BUFFER_SIZE
            # The kernel's answer to "is this seekable" is lseek's, as FileIO asks.
            try:
                pos = os.lseek(fd, 0, os.SEEK_END if appending else os.SEEK_CUR)
            except OSError as exc:
                if exc.errno != errno.ESPIPE:
                    raise
                positional, pos = False, 0
            else:
                positional = True
            kernel_appends = bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_APPEND)
        except BaseException:
            if owned:
                os.close(fd)
            raise
        return _RawFile(
            fd,
            file,
            readable=readable,
            writable=writable,
            appending=appending,
            created=creating,
            closefd=closefd,
            positional=positional,
            kernel_appends=kernel_appends,
            pos=pos,
            blksize=blksize,
        )

    # The open is the call's cancel point (trio.open_file's is before its worker
    # thread starts). An openat that raised Cancelled did not happen. One that
    # returned an fd with O_CREAT or O_TRUNC may have created or truncated the
    # file, which closing the fd does not undo: from then on the call finishes,
    # shielded (statx of the fd, lseek, fcntl: bounded work; no checkpoint
    # comes between the openat's return and the shield), and trio raises
    # Cancelled at the caller's next checkpoint. Without those flags the open
    # changed nothing on disk, so a cancelled statx closes the fd and raises.
    # An open of a FIFO waits for its peer inside the openat, so that wait
    # stays cancellable (on the thread fallback it is a worker thread's open(2),
    # which, like trio.open_file's, waits for the peer whatever the cancel).
    if owned and flags & (os.O_CREAT | os.O_TRUNC):
        return await _sync.shielded(inspect)
    return await inspect()
