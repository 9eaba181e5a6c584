"""``ouring.open_file`` and ``ouring.AsyncFile``: Python file objects whose I/O
goes through the ring.

The layers are Python's io layers, rebuilt on ring operations:

- ``_RawFile`` (``FileIO``): the fd, the position, one ring operation per call.
  A seekable file (a regular file, a block device: anything ``lseek`` accepts)
  tracks its own position and passes it as an explicit offset to every read
  and write, so no operation depends on the kernel's file position (and two
  tasks cannot race on it). Pipes, FIFOs, ttys and sockets use offset -1.
  An ``O_APPEND`` fd writes at offset -1 too (the kernel appends wherever the
  offset says) and reads the kernel's position back with ``lseek``, which is
  where the builtin's ``tell()`` is after such a write. ``buffering=0`` binary
  files use this layer directly.
- ``_BufferedFile`` (``BufferedReader``/``BufferedWriter``/``BufferedRandom``):
  a port of CPython's ``Modules/_io/bufferedio.c``: one buffer shared by
  reads and writes, the same read sizes, the same fast paths, so ``read1`` and
  ``readline`` return what the builtin returns for the same calls.
- ``_TextFile`` (``TextIOWrapper``): a port of CPython's ``_pyio.TextIOWrapper``
  (``Lib/_pyio.py``) with the C implementation's chunk size, write batching
  and ``tell()``/``seek()`` cookie arithmetic (``Modules/_io/textio.c``), so
  cookies, universal newlines and decoder state match the builtin's.

Portions of this module are derived from CPython's ``Lib/_pyio.py`` and
``Modules/_io/*.c``, Copyright (c) 2001-2024 Python Software Foundation, used
under the Python Software Foundation License Version 2.

Cancellation. Each public call on an ``AsyncFile`` is atomic with respect to
cancellation: it raises ``Cancelled`` having changed nothing a later call can
observe (contents, position, buffers, read-ahead, decoder state, bytes taken
from a pipe), or it completes and returns, and trio raises ``Cancelled`` at
the next checkpoint. Every stateful method enters its layer through
``AsyncFile._call``, whose entry (the FIFO lock, then
``checkpoint_if_cancelled``) is the call's cancel point. Then:

- a seekable file (bounded work) runs the whole call shielded, as
  ``trio.open_file``'s thread runs to the end once started;
- a pipe, FIFO, tty or socket (a wait that can last forever) stays
  cancellable, and each layer keeps what a cancelled call consumed. Its cancel
  points are its ring operations (each one either happened, its result
  accounted for before the next checkpoint, or did not: ``Cancelled``, buffer
  untouched):

  - raw: ``read``/``readinto``/``write`` are one operation; ``readall``,
    ``readline`` (a byte per operation) and ``readlines`` push what they took
    back (``_RawFile.pushback``), and the next read returns it first;
  - buffered: a read that took bytes gives them back in order (buffer rest,
    then push-back); ``write`` raises before any of its bytes was accepted or
    accepts all (what the kernel did not take stays buffered); ``flush``
    advances by what the kernel took;
  - text: encoded text stays pending until the buffered write took it; a
    ``write`` whose text was accepted returns even if its flush is cancelled;
    a cancelled read gives every chunk it took back to the buffered layer and
    restores the decoder, decoded characters and snapshot (``readlines`` and
    ``__anext__`` as one read).

``aclose`` waits for the calls in progress on a seekable file, ends those on a
pipe (``trio.ClosedResourceError``), then flushes and closes; cancelled, it
still closes, then raises ``Cancelled`` (trio's ``aclose`` semantics).
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import fcntl
import io
import locale
import operator
import os
import stat as stat_module
import sys
import warnings
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, AnyStr, ClassVar, Generic, Self, TypeVar, cast, overload

import trio

from . import _api
from ._ops import fs_path

if TYPE_CHECKING:
    from types import TracebackType

    from _typeshed import OpenBinaryMode, OpenTextMode, StrOrBytesPath

__all__ = ["AsyncFile", "open_file"]

_T = TypeVar("_T")

DEFAULT_BUFFER_SIZE = io.DEFAULT_BUFFER_SIZE
_CLOSED = "I/O operation on closed file."
_RAW_CLOSED = "I/O operation on closed file"
_SEEK_FLAGS = {0, 1, 2}
if hasattr(os, "SEEK_HOLE"):
    _SEEK_FLAGS |= {os.SEEK_HOLE, os.SEEK_DATA}
_UnsupportedOperation = io.UnsupportedOperation
_TEXT_WRITE_KEEPS_UNTOLD_READAHEAD = sys.version_info >= (3, 13)


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


def _c_int(value: Any) -> int:
    """``value`` as an argument-clinic ``int`` parameter reads it."""
    n: int = operator.index(value)
    if not -(1 << 31) <= n < 1 << 31:
        raise OverflowError("Python int too large to convert to C int")
    return n


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


def _is_line(line: Any, text: bool) -> bool:
    """Whether the layer's write() takes ``line`` (str for text, a buffer else)."""
    if text:
        return isinstance(line, str)
    if isinstance(line, str):
        return False
    try:
        memoryview(line).release()
    except TypeError:
        return False
    return True


def _einval() -> OSError:
    return OSError(errno.EINVAL, os.strerror(errno.EINVAL))


def _espipe() -> OSError:
    return OSError(errno.ESPIPE, os.strerror(errno.ESPIPE))


# -- raw layer ---------------------------------------------------------------------------


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


# -- buffered layer --------------------------------------------------------------------------


class _BufferedFile:
    """A port of CPython's ``bufferedio.c`` (BufferedReader, BufferedWriter and
    BufferedRandom in one class, as there) on top of ``_RawFile``."""

    def __init__(self, raw: _RawFile, buffer_size: int) -> None:
        if buffer_size <= 0:
            raise ValueError("buffer size must be strictly positive")
        self.raw = raw
        self.readable = raw.readable
        self.writable = raw.writable
        self.buffer_size = buffer_size
        self.buffer = bytearray(buffer_size)
        n = buffer_size - 1
        while n & 1:
            n >>= 1
        self.buffer_mask = buffer_size - 1 if n == 0 else 0
        self.pos = 0  # logical position in the buffer
        self.raw_pos = 0  # position of the raw stream in the buffer
        self.read_end = -1  # end of valid read data, or -1
        self.write_pos = 0
        self.write_end = -1  # end of data waiting to be written, or -1

    # -- C's macros

    def _valid_read(self) -> bool:
        return self.readable and self.read_end != -1

    def _valid_write(self) -> bool:
        return self.writable and self.write_end != -1

    def _readahead(self) -> int:
        return self.read_end - self.pos if self._valid_read() else 0

    def _raw_offset(self) -> int:
        if (self._valid_read() or self._valid_write()) and self.raw_pos >= 0:
            return self.raw_pos - self.pos
        return 0

    def _minus_last_block(self, size: int) -> int:
        if self.buffer_mask:
            return size & ~self.buffer_mask
        return self.buffer_size * (size // self.buffer_size)

    def _adjust_position(self, new_pos: int) -> None:
        self.pos = new_pos
        if self._valid_read() and self.read_end < self.pos:
            self.read_end = self.pos

    def _reset_read_buf(self) -> None:
        self.read_end = -1

    def _reset_write_buf(self) -> None:
        self.write_pos = 0
        self.write_end = -1

    def _is_closed(self) -> bool:
        return self.raw.closed

    def _check_closed(self, msg: str) -> None:
        if self.raw.closed and self._readahead() == 0:
            raise ValueError(msg)

    def _raw_seek_cur(self, delta: int) -> None:
        # Only ever a relative move of the tracked position: no syscall.
        if self.raw.positional:
            self.raw.pos += delta
        elif delta:
            raise _espipe()

    def _logical_pos(self) -> int:
        return self.raw.pos - self._raw_offset()

    @property
    def name(self) -> Any:
        return self.raw.name

    @property
    def mode(self) -> str:
        return self.raw.mode

    # -- the raw helpers

    async def _raw_read(self, view: memoryview) -> int:
        return await self.raw.readinto_raw(view)

    async def _fill_buffer(self) -> int:
        start = self.read_end if self._valid_read() else 0
        with _lent_view(self.buffer, start, self.buffer_size) as view:
            n = await self._raw_read(view)
        if n <= 0:
            return n
        self.read_end = start + n
        self.raw_pos = start + n
        return n

    async def _flush_unlocked(self) -> None:
        if not self._valid_write() or self.write_pos == self.write_end:
            self._reset_write_buf()
            return
        rewind = self._raw_offset() + (self.pos - self.write_pos)
        if rewind != 0:
            self._raw_seek_cur(-rewind)
            self.raw_pos -= rewind
        while self.write_pos < self.write_end:
            with _lent_view(self.buffer, self.write_pos, self.write_end) as view:
                _, n = await self.raw.write_op(view)
            if n == 0:
                raise OSError(errno.EIO, "write() wrote 0 bytes")
            self.write_pos += n
            self.raw_pos = self.write_pos
        self._reset_write_buf()

    async def _flush_and_rewind(self) -> None:
        await self._flush_unlocked()
        if self.readable:
            self._raw_seek_cur(-self._raw_offset())
            self._reset_read_buf()

    def _give_back(self, got: bytes, saved_pos: int, start: int) -> None:
        """A read failed (or was cancelled) after consuming ``got`` from logical
        position ``start``: undo it, so that the next read returns those bytes."""
        if self._valid_write() and self.write_pos != self.write_end:
            # The flush before any raw read did not finish: only the buffer's
            # own bytes were consumed, and the buffer is intact.
            self.pos = saved_pos
            return
        if self.raw.positional:
            self._reset_read_buf()
            self._reset_write_buf()
            self.raw.pos = start  # the bytes are still in the file
            return
        rest = bytes(self.buffer[self.pos : self.read_end]) if self._valid_read() else b""
        self._reset_read_buf()
        self.raw.unread(got + rest, 0)

    def _entry(self) -> tuple[int, int]:
        start = self._logical_pos() if self.raw.positional else 0
        return self.pos, start

    def unread(self, data: bytes) -> None:
        """Give back ``data``, the bytes just consumed (for the text layer)."""
        n = len(data)
        if not n:
            return
        if self._valid_read() and self.pos >= n and self.buffer[self.pos - n : self.pos] == data:
            self.pos -= n
            return
        if self.raw.positional:
            start = self._logical_pos() - n
            self._reset_read_buf()
            self._reset_write_buf()
            self.raw.pos = start
            return
        rest = bytes(self.buffer[self.pos : self.read_end]) if self._valid_read() else b""
        self._reset_read_buf()
        self.raw.unread(data + rest, 0)

    # -- reading

    def _check_readable(self, name: str = "read", size: Any = -1) -> None:
        if not self.readable:
            if sys.version_info >= (3, 12):
                # A BufferedWriter's read/read1 are BufferedIOBase's, which
                # convert the size to a C int before refusing since 3.12.
                _c_int(size)
            raise _UnsupportedOperation(name)

    def _read_fast(self, n: int) -> bytes | None:
        if n <= self._readahead():
            res = bytes(self.buffer[self.pos : self.pos + n])
            self.pos += n
            return res
        return None

    async def read(self, size: Any = -1) -> bytes:
        self._check_readable("read", size)
        n = _optional_size(size)
        if n < -1:
            raise ValueError("read length must be non-negative or -1")
        self._check_closed("read of closed file")
        if n == -1:
            return await self._read_all()
        res = self._read_fast(n)
        if res is not None:
            return res
        return await self._read_generic(n)

    async def _read_all(self) -> bytes:
        saved_pos, start = self._entry()
        data = b""
        current = self._readahead()
        if current:
            data = bytes(self.buffer[self.pos : self.pos + current])
            self.pos += current
        try:
            if self.writable:
                await self._flush_and_rewind()
            self._reset_read_buf()
            tail = await self.raw.readall()
        except BaseException:
            self._give_back(data, saved_pos, start)
            raise
        return data + tail

    async def _read_generic(self, n: int) -> bytes:
        current = self._readahead()
        if n <= current:
            return self._read_fast(n) or b""
        saved_pos, start = self._entry()
        out = bytearray(n)
        written = 0
        remaining = n
        if current > 0:
            out[:current] = self.buffer[self.pos : self.pos + current]
            remaining -= current
            written += current
            self.pos += current
        try:
            if self.writable:
                await self._flush_and_rewind()
            self._reset_read_buf()
            eof = False
            with memoryview(out) as mv:
                while remaining > 0:
                    r = self._minus_last_block(remaining)
                    if r == 0:
                        break
                    with _lent_view(mv, written, written + r) as view:
                        r = await self._raw_read(view)
                    if r == 0:
                        eof = True
                        break
                    remaining -= r
                    written += r
            if eof:
                del out[written:]
                return bytes(out)
            self.pos = 0
            self.raw_pos = 0
            self.read_end = 0
            while remaining > 0 and self.read_end < self.buffer_size:
                r = await self._fill_buffer()
                if r == 0:
                    del out[written:]
                    return bytes(out)
                take = min(r, remaining)
                out[written : written + take] = self.buffer[self.pos : self.pos + take]
                written += take
                self.pos += take
                remaining -= take
        except BaseException:
            self._give_back(bytes(out[:written]), saved_pos, start)
            raise
        return bytes(out)

    async def read1(self, size: Any = -1) -> bytes:
        self._check_readable("read1", size)
        n = operator.index(size)
        if n < 0:
            n = self.buffer_size
        self._check_closed("read of closed file")
        if n == 0:
            return b""
        have = self._readahead()
        if have > 0:
            return self._read_fast(min(have, n)) or b""
        # gh-115059: the write buffer goes first (CPython 3.11 reads stale data here).
        if self.writable:
            await self._flush_and_rewind()
        self._reset_read_buf()
        out = bytearray(n)
        with _lent_view(out) as view:
            r = await self._raw_read(view)
        del out[r:]
        return bytes(out)

    async def readinto(self, b: Any, readinto1: bool = False) -> int:
        self._check_readable()
        with _lent_view(b) as dst:
            self._check_closed("readinto of closed file")
            return await self._readinto(dst, readinto1)

    async def _readinto(self, buf: memoryview, readinto1: bool) -> int:
        length = len(buf)
        written = 0
        n = self._readahead()
        if n > 0:
            if n >= length:
                buf[:] = self.buffer[self.pos : self.pos + length]
                self.pos += length
                return length
            buf[:n] = self.buffer[self.pos : self.pos + n]
            self.pos += n
            written = n
        saved_pos, start = self.pos - written, self._logical_pos() - written
        if not self.raw.positional:
            start = 0
        try:
            if self.writable:
                await self._flush_and_rewind()
            self._reset_read_buf()
            self.pos = 0
            remaining = length - written
            while remaining > 0:
                if remaining > self.buffer_size:
                    with _lent_view(buf, written) as view:
                        n = await self._raw_read(view)
                elif not (readinto1 and written):
                    n = await self._fill_buffer()
                    if n > 0:
                        n = min(n, remaining)
                        buf[written : written + n] = self.buffer[self.pos : self.pos + n]
                        self.pos += n
                        written += n
                        remaining -= n
                        continue
                else:
                    n = 0
                if n == 0:
                    break
                written += n
                remaining -= n
                if readinto1:
                    break
        except BaseException:
            self._give_back(bytes(buf[:written]), saved_pos, start)
            raise
        return written

    async def readinto1(self, b: Any) -> int:
        # The builtin's argument conversion (a writable buffer) comes first;
        # BufferedWriter inherits BufferedIOBase.readinto1, which calls read1.
        with _lent_view(b) as dst:
            if dst.readonly:
                raise TypeError(
                    "readinto1() argument must be read-write bytes-like object, "
                    f"not {type(b).__name__}"
                )
            self._check_readable("read1")
            self._check_closed("readinto of closed file")
            return await self._readinto(dst, True)

    async def peek(self, size: Any = 0) -> bytes:
        """bufferedio.c's peek: the buffered bytes without moving the position;
        with none buffered, one raw read fills the buffer (which keeps them for
        the next read). ``size`` is checked and ignored, as there."""
        operator.index(size)
        self._check_closed("peek of closed file")
        if self.writable:
            await self._flush_and_rewind()
        have = self._readahead()
        if have > 0:
            return bytes(self.buffer[self.pos : self.pos + have])
        # Nothing is buffered here, so nothing is lost if this read is
        # cancelled: the operation did not happen and the state is as on entry.
        self._reset_read_buf()
        n = await self._fill_buffer()
        self.pos = 0
        return bytes(self.buffer[:n]) if n > 0 else b""

    async def readline(self, size: Any = -1) -> bytes:
        limit = _optional_size(size)
        if not self.readable and limit == 0:
            return b""  # IOBase.readline: the loop never reads
        self._check_readable()
        self._check_closed("readline of closed file")
        return await self._readline(limit)

    async def _readline(self, limit: int) -> bytes:
        n = self._readahead()
        if limit >= 0 and n > limit:
            n = limit
        start_index = self.pos
        nl = self.buffer.find(b"\n", start_index, start_index + n)
        if nl >= 0:
            self.pos = nl + 1
            return bytes(self.buffer[start_index : nl + 1])
        if n == limit:
            self.pos += n
            return bytes(self.buffer[start_index : start_index + n])
        saved_pos, start = self._entry()
        chunks: list[bytes] = []
        if n > 0:
            chunks.append(bytes(self.buffer[start_index : start_index + n]))
            self.pos += n
            if limit >= 0:
                limit -= n
        try:
            if self.writable:
                await self._flush_and_rewind()
            while True:
                self._reset_read_buf()
                n = await self._fill_buffer()
                if n <= 0:
                    break
                if limit >= 0 and n > limit:
                    n = limit
                nl = self.buffer.find(b"\n", 0, n)
                if nl >= 0:
                    chunks.append(bytes(self.buffer[: nl + 1]))
                    self.pos = nl + 1
                    break
                chunks.append(bytes(self.buffer[:n]))
                if n == limit:
                    self.pos = n
                    break
                self.pos = n  # consumed (C leaves it for the next reset)
                if limit >= 0:
                    limit -= n
        except BaseException:
            self._give_back(b"".join(chunks), saved_pos, start)
            raise
        return b"".join(chunks)

    async def next_line(self) -> bytes:
        return await self.readline()

    async def readlines(self, hint: Any = None) -> list[bytes]:
        n = _optional_size(hint)
        self.raw.check_closed(_CLOSED)
        lines: list[bytes] = []
        try:
            await _collect_lines(self, n, lines)
        except BaseException:
            # The failed readline gave back its own bytes; these go before them.
            self.unread(b"".join(lines))
            raise
        return lines

    # -- writing

    async def write(self, b: Any) -> int:
        if not self.writable:
            raise _UnsupportedOperation("write")
        if isinstance(b, str):
            raise TypeError("a bytes-like object is required, not 'str'")
        with _lent_view(b) as data:
            if self._is_closed():
                raise ValueError("write to closed file")
            return await self._write(data)

    async def _write(self, data: memoryview) -> int:
        length = len(data)
        if not self._valid_read() and not self._valid_write():
            self.pos = 0
            self.raw_pos = 0
        avail = self.buffer_size - self.pos
        if length <= avail:
            self.buffer[self.pos : self.pos + length] = data
            if not self._valid_write() or self.write_pos > self.pos:
                self.write_pos = self.pos
            self._adjust_position(self.pos + length)
            if self.pos > self.write_end:
                self.write_end = self.pos
            return length
        # First write the current buffer. Nothing of ``data`` is written yet:
        # if this raises, the write did not happen.
        await self._flush_unlocked()
        offset = self._raw_offset()
        if offset != 0:
            self._raw_seek_cur(-offset)
            self.raw_pos -= offset
        written = 0
        if length > self.buffer_size:
            # One write straight from the caller's memory. Whatever it leaves
            # is buffered below, so from here on the write cannot fail halfway.
            _, written = await self.raw.write_op(data)
        if self.readable:
            self._reset_read_buf()
        remaining = length - written
        if remaining > len(self.buffer):
            self.buffer = bytearray(remaining)  # no operation holds it now
        self.buffer[:remaining] = data[written:]
        self.write_pos = 0
        self.write_end = remaining
        self._adjust_position(remaining)
        self.raw_pos = 0
        return length

    async def flush(self) -> None:
        if not self.writable:
            self.raw.check_closed(_CLOSED)
            return
        self._check_closed("flush of closed file")
        await self._flush_and_rewind()

    # -- positioning

    async def seek(self, target: Any, whence: int = 0) -> int:
        whence = operator.index(whence)
        if whence not in _SEEK_FLAGS:
            raise ValueError(f"whence value {whence} unsupported")
        self._check_closed("seek of closed file")
        if not self.raw.seekable():
            raise _UnsupportedOperation("File or stream is not seekable.")
        target = int(operator.index(target))
        if whence in (0, 1) and self.readable:
            current = self.raw.pos
            avail = self._readahead()
            if avail > 0:
                offset = target - (current - self._raw_offset()) if whence == 0 else target
                if -self.pos <= offset <= avail:
                    self.pos += offset
                    return int(current - avail + offset)
        if self.writable:
            await self._flush_unlocked()
        if whence == 1:
            target -= self._raw_offset()
        n = await self.raw.raw_seek(target, whence)
        self.raw_pos = -1
        if self.readable:
            self._reset_read_buf()
        return n

    def tell_sync(self) -> int:
        return self.raw.tell_sync() - self._raw_offset()

    async def tell(self) -> int:
        return self.tell_sync()

    async def truncate(self, pos: Any = None) -> int:
        self._check_closed("truncate of closed file")
        if not self.writable:
            raise _UnsupportedOperation("truncate")
        await self._flush_and_rewind()
        return await self.raw.truncate(pos)

    async def close(self) -> None:
        if self.raw.closed:
            return
        try:
            await self.flush()
        finally:
            await self.raw.close()
            self.read_end = 0
            self.pos = 0

    def seekable(self) -> bool:
        return self.raw.seekable()

    # -- owned buffers

    async def read_into(self, buf: Any) -> tuple[Any, int]:
        self._check_readable()
        self._check_closed("readinto of closed file")
        have = self._readahead()
        if have > 0:
            with memoryview(buf) as view, view.cast("B") as dst:
                n = min(have, len(dst))
                dst[:n] = self.buffer[self.pos : self.pos + n]
            self.pos += n
            return buf, n
        if self.writable:
            await self._flush_and_rewind()
        self._reset_read_buf()
        return await self.raw.read_op(buf)

    async def write_from(self, buf: Any) -> tuple[Any, int]:
        if not self.writable:
            raise _UnsupportedOperation("write")
        if self._is_closed():
            raise ValueError("write to closed file")
        await self._flush_and_rewind()
        self._reset_write_buf()
        return await self.raw.write_op(buf)


# -- text layer ----------------------------------------------------------------------------


class _TextFile:
    """``TextIOWrapper``: ``_pyio.TextIOWrapper`` made async, with the C
    implementation's chunking, write batching and cookie arithmetic."""

    _CHUNK_SIZE = 8192

    def __init__(
        self,
        buffer: _BufferedFile,
        encoding: str,
        errors: str | None,
        newline: str | None,
        line_buffering: bool,
        mode: str,
    ) -> None:
        if newline is not None and newline not in ("", "\n", "\r", "\r\n"):
            raise ValueError(f"illegal newline value: {newline}")
        if not codecs.lookup(encoding)._is_text_encoding:
            raise LookupError(
                f"{encoding!r} is not a text encoding; use codecs.open() to handle arbitrary codecs"
            )
        if errors is None:
            errors = "strict"
        elif sys.flags.dev_mode:
            codecs.lookup_error(errors)
        self.buffer = buffer
        self.mode = mode
        self.encoding = encoding
        self.errors = errors
        self.line_buffering = line_buffering
        self._readuniversal = not newline
        self._readtranslate = newline is None
        self._readnl = newline
        self._writetranslate = newline != ""
        self._writenl = newline or os.linesep
        self._decoded_chars = ""
        self._decoded_chars_used = 0
        self._snapshot: tuple[int, bytes] | None = None
        self._seekable = self._telling = buffer.raw.positional
        self._b2cratio = 0.0
        self._pending: list[bytes] = []
        self._pending_count = 0
        self._consumed: list[bytes] | None = None
        # A codecs incremental decoder, or io.IncrementalNewlineDecoder around one.
        self._decoder: Any = None
        self._encoder: codecs.IncrementalEncoder | None = None
        if buffer.readable:
            decoder: Any = codecs.getincrementaldecoder(encoding)(errors)
            if self._readuniversal:
                decoder = io.IncrementalNewlineDecoder(decoder, self._readtranslate)
            self._decoder = decoder
        if buffer.writable:
            self._encoder = codecs.getincrementalencoder(encoding)(errors)
            # Don't write a BOM in the middle of a file.
            if self._seekable and buffer.tell_sync() != 0:
                self._encoder.setstate(0)

    @property
    def name(self) -> Any:
        return self.buffer.name

    @property
    def newlines(self) -> Any:
        return getattr(self._decoder, "newlines", None) if self._decoder else None

    def _check_closed(self) -> None:
        if self.buffer.raw.closed:
            raise ValueError(_CLOSED)

    def seekable(self) -> bool:
        self._check_closed()
        return self._seekable

    # -- writing

    async def _writeflush(self) -> None:
        if not self._pending:
            return
        data = b"".join(self._pending)
        # The buffered write takes all of ``data`` or nothing: the text stays
        # pending until it returns, so a cancelled or failed flush loses none.
        await self.buffer.write(data)
        self._pending = []
        self._pending_count = 0

    async def write(self, s: Any) -> int:
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        self._check_closed()
        if self._encoder is None:
            raise _UnsupportedOperation("not writable")
        length = len(s)
        haslf = (self._writetranslate or self.line_buffering) and "\n" in s
        if haslf and self._writetranslate and self._writenl != "\n":
            s = s.replace("\n", self._writenl)
        needflush = self.line_buffering and (haslf or "\r" in s)
        state = self._encoder.getstate()
        b = self._encoder.encode(s)
        if self._pending_count + len(b) > self._CHUNK_SIZE:
            try:
                await self._writeflush()
            except BaseException:
                self._encoder.setstate(state)  # this text was not written
                raise
        # From here the text is accepted: it reaches the buffer, whatever happens.
        self._pending.append(b)
        self._pending_count += len(b)
        # As the builtin: the decoded read-ahead is dropped (the write lands
        # after the bytes it came from, and reading resumes after the write).
        # Since 3.13 (C io and _pyio, measured on 3.13.0; 3.12.1 still drops
        # it) only while a snapshot exists: with telling off (next(),
        # readlines()) the decoded characters are kept and read next.
        if self._snapshot is not None or not _TEXT_WRITE_KEEPS_UNTOLD_READAHEAD:
            self._set_decoded_chars("")
        self._snapshot = None
        if self._decoder:
            self._decoder.reset()
        if self._pending_count >= self._CHUNK_SIZE or needflush:
            await self._accepted(self._writeflush())
        if needflush:
            await self._accepted(self.buffer.flush())
        return length

    @staticmethod
    async def _accepted(flushing: Any) -> None:
        """Run a flush after the data was accepted. If it is cancelled, the
        write still happened (its bytes are buffered and flushed later): the
        count is returned, and trio raises Cancelled at the next checkpoint."""
        with contextlib.suppress(trio.Cancelled):
            await flushing

    # -- reading

    def _set_decoded_chars(self, chars: str) -> None:
        self._decoded_chars = chars
        self._decoded_chars_used = 0

    def _get_decoded_chars(self, n: int | None = None) -> str:
        offset = self._decoded_chars_used
        if n is None:
            chars = self._decoded_chars[offset:]
        else:
            chars = self._decoded_chars[offset : offset + n]
        self._decoded_chars_used += len(chars)
        return chars

    async def _read_chunk(self, size_hint: int) -> bool:
        decoder = self._decoder
        if decoder is None:
            raise _UnsupportedOperation("not readable")
        if self._telling:
            dec_buffer, dec_flags = decoder.getstate()
        if size_hint > 0:
            size_hint = int(max(self._b2cratio, 1.0) * size_hint)
        input_chunk = await self.buffer.read1(max(self._CHUNK_SIZE, size_hint))
        if self._consumed is not None:
            self._consumed.append(input_chunk)
        eof = not input_chunk
        decoded = decoder.decode(input_chunk, eof)
        self._set_decoded_chars(decoded)
        if decoded:
            self._b2cratio = len(input_chunk) / len(decoded)
            eof = False
        else:
            self._b2cratio = 0.0
        if self._telling:
            self._snapshot = (dec_flags, dec_buffer + input_chunk)
        return not eof

    def _save(self) -> tuple[Any, ...]:
        return (
            self._decoded_chars,
            self._decoded_chars_used,
            self._snapshot,
            self._decoder.getstate() if self._decoder else None,
            self._b2cratio,
        )

    def _restore(self, saved: tuple[Any, ...]) -> None:
        (chars, used, self._snapshot, state, self._b2cratio) = saved
        self._decoded_chars = chars
        self._decoded_chars_used = used
        if self._decoder and state is not None:
            self._decoder.setstate(state)
        consumed = b"".join(self._consumed or ())
        self._consumed = None
        self.buffer.unread(consumed)

    async def _rollback_on_error(self, coro: Any) -> Any:
        """Run a read; if it is cancelled (or fails in the kernel), give back
        every chunk it took from the buffer and restore the decoder, as if it
        never ran."""
        if self._consumed is not None:
            # Inside an enclosing rollback (readlines): that one records and
            # gives back everything.
            return await coro
        saved = self._save()
        self._consumed = []
        try:
            result = await coro
        except UnicodeError:
            # As the builtin: the undecodable bytes are consumed.
            self._consumed = None
            raise
        except BaseException:
            self._restore(saved)
            raise
        self._consumed = None
        return result

    async def read(self, size: Any = -1) -> str:
        n = _optional_size(size)
        self._check_closed()
        if self._decoder is None:
            raise _UnsupportedOperation("not readable")
        await self._writeflush()
        result: str = await self._rollback_on_error(self._read(n))
        return result

    async def _read(self, n: int) -> str:
        decoder = self._decoder
        assert decoder is not None
        if n < 0:
            data = await self.buffer.read()
            if self._consumed is not None:
                self._consumed.append(data)
            decoded: str = decoder.decode(data, final=True)
            result = self._get_decoded_chars() + decoded
            self._set_decoded_chars("")
            self._snapshot = None
            return result
        result = self._get_decoded_chars(n)
        remaining = n - len(result)
        chunks = [result]
        while remaining > 0:
            if not await self._read_chunk(remaining):
                break
            got = self._get_decoded_chars(remaining)
            chunks.append(got)
            remaining -= len(got)
        return "".join(chunks)

    async def readline(self, size: Any = -1) -> str:
        limit = operator.index(size)
        self._check_closed()
        await self._writeflush()
        result: str = await self._rollback_on_error(self._readline(limit))
        return result

    def _find_line_ending(self, line: str, start: int) -> tuple[int, int]:
        """(endpos, consumed) as C's ``_PyIO_find_line_ending``: endpos is the
        index just past the line ending, or -1 with consumed = where the search
        may resume."""
        if self._readtranslate:
            pos = line.find("\n", start)
            return (pos + 1, 0) if pos >= 0 else (-1, len(line))
        if self._readuniversal:
            nlpos = line.find("\n", start)
            crpos = line.find("\r", start)
            if crpos == -1:
                return (nlpos + 1, 0) if nlpos >= 0 else (-1, len(line))
            if nlpos == -1 or crpos < nlpos:
                if crpos + 1 < len(line) and line[crpos + 1] == "\n":
                    return crpos + 2, 0
                return crpos + 1, 0
            return nlpos + 1, 0
        readnl = self._readnl
        assert readnl
        pos = line.find(readnl, start)
        if pos >= 0:
            return pos + len(readnl), 0
        # A partial separator at the end may complete with the next chunk.
        cr = line.find(readnl[0], max(start, len(line) - len(readnl) + 1))
        return -1, (cr if cr >= 0 else len(line))

    async def _readline(self, limit: int) -> str:
        chunks: list[str] = []
        chunked = 0
        remaining: str | None = None
        line: str | None = None
        start = endpos = offset_to_buffer = 0
        while True:
            res = True
            while not self._decoded_chars:
                res = await self._read_chunk(0)
                if not res:
                    break
            if not res:
                self._set_decoded_chars("")
                self._snapshot = None
                start = endpos = offset_to_buffer = 0
                line = None
                break
            if remaining is None:
                line = self._decoded_chars
                start = self._decoded_chars_used
                offset_to_buffer = 0
            else:
                line = remaining + self._decoded_chars
                start = 0
                offset_to_buffer = len(remaining)
                remaining = None
            found, consumed = self._find_line_ending(line, start)
            if found >= 0:
                endpos = found
                if limit >= 0 and (endpos - start) + chunked >= limit:
                    endpos = start + limit - chunked
                break
            endpos = consumed
            if limit >= 0 and (endpos - start) + chunked >= limit:
                endpos = start + limit - chunked
                break
            if endpos > start:
                chunks.append(line[start:endpos])
                chunked += endpos - start
            if endpos < len(line):
                remaining = line[endpos:]
            line = None
            self._set_decoded_chars("")
        if line is not None:
            self._decoded_chars_used = endpos - offset_to_buffer
            line = line[start:endpos]
        if remaining is not None:
            chunks.append(remaining)
        if line is not None:
            chunks.append(line)
        return "".join(chunks)

    async def next_line(self) -> str:
        self._telling = False
        line = await self.readline()
        if not line:
            self._snapshot = None
            self._telling = self._seekable
        return line

    async def readlines(self, hint: Any = None) -> list[str]:
        n = _optional_size(hint)
        self._check_closed()
        lines: list[str] = []
        # One rollback around every line: if a later line is cancelled, the
        # lines already taken are given back too (bytes and decoder state).
        await self._rollback_on_error(_collect_lines(self, n, lines))
        return lines

    # -- flush, seek, tell

    async def flush(self) -> None:
        self._check_closed()
        self._telling = self._seekable
        await self._writeflush()
        await self.buffer.flush()

    def _decoder_setstate(self, start_pos: int, dec_flags: int) -> None:
        assert self._decoder is not None
        # At the start of the stream reset(), not setstate(): some decoders
        # (utf-16) expect a BOM there, which (b"", 0) would deny.
        if start_pos == 0 and dec_flags == 0:
            self._decoder.reset()
        else:
            self._decoder.setstate((b"", dec_flags))

    def _encoder_setstate(self, start_pos: int, dec_flags: int) -> None:
        assert self._encoder is not None
        if start_pos == 0 and dec_flags == 0:
            self._encoder.reset()
        else:
            self._encoder.setstate(0)

    # The C implementation's cookie layout (textio.c, COOKIE_BUF_LEN): a 64-bit
    # start position, then 32-bit dec_flags, bytes_to_feed and chars_to_skip,
    # then a need_eof byte. _pyio spaces the fields 64 bits apart; the builtin's
    # tell() values are the C ones.

    @staticmethod
    def _pack_cookie(
        position: int, dec_flags: int = 0, bytes_to_feed: int = 0, need_eof: bool = False,
        chars_to_skip: int = 0,
    ) -> int:  # fmt: skip
        return (
            position
            | (dec_flags << 64)
            | (bytes_to_feed << 96)
            | (chars_to_skip << 128)
            | bool(need_eof) << 160
        )

    @staticmethod
    def _unpack_cookie(bigint: int) -> tuple[int, int, int, bool, int]:
        rest, position = divmod(bigint, 1 << 64)
        rest, dec_flags = divmod(rest, 1 << 32)
        rest, bytes_to_feed = divmod(rest, 1 << 32)
        rest, chars_to_skip = divmod(rest, 1 << 32)
        need_eof = rest & 0xFF
        return position, dec_flags, bytes_to_feed, bool(need_eof), chars_to_skip

    async def tell(self) -> int:
        self._check_closed()
        if not self._seekable:
            raise _UnsupportedOperation("underlying stream is not seekable")
        if not self._telling:
            raise OSError("telling position disabled by next() call")
        await self._writeflush()
        await self.flush()
        position = self.buffer.tell_sync()
        decoder = self._decoder
        if decoder is None or self._snapshot is None:
            return position
        dec_flags, next_input = self._snapshot
        start_pos = position - len(next_input)
        chars_to_skip = self._decoded_chars_used
        if chars_to_skip == 0:
            return self._pack_cookie(start_pos, dec_flags)
        saved_state = decoder.getstate()
        try:
            skip_bytes = int(self._b2cratio * chars_to_skip)
            skip_back = 1
            while skip_bytes > 0:
                self._decoder_setstate(start_pos, dec_flags)
                n = len(decoder.decode(next_input[:skip_bytes]))
                if n <= chars_to_skip:
                    b, d = decoder.getstate()
                    if not b:
                        dec_flags = d
                        chars_to_skip -= n
                        break
                    skip_bytes -= len(b)
                    skip_back = 1
                else:
                    skip_bytes -= skip_back
                    skip_back *= 2
            if skip_bytes <= 0:
                skip_bytes = 0
                self._decoder_setstate(start_pos, dec_flags)
            start_pos += skip_bytes
            if chars_to_skip == 0:
                return self._pack_cookie(start_pos, dec_flags)
            bytes_to_feed = 0
            need_eof = False
            chars_decoded = 0
            i = skip_bytes
            while i < len(next_input):
                chars_decoded += len(decoder.decode(next_input[i : i + 1]))
                bytes_to_feed += 1
                dec_buffer, d = decoder.getstate()
                if not dec_buffer and chars_decoded <= chars_to_skip:
                    start_pos += bytes_to_feed
                    chars_to_skip -= chars_decoded
                    dec_flags, bytes_to_feed, chars_decoded = d, 0, 0
                if chars_decoded >= chars_to_skip:
                    break
                i += 1
            if i == len(next_input):
                chars_decoded += len(decoder.decode(b"", final=True))
                need_eof = True
                if chars_decoded < chars_to_skip:
                    raise OSError("can't reconstruct logical file position")
            return self._pack_cookie(start_pos, dec_flags, bytes_to_feed, need_eof, chars_to_skip)
        finally:
            decoder.setstate(saved_state)

    async def truncate(self, pos: Any = None) -> int:
        await self.flush()
        return await self.buffer.truncate(pos)

    def _reset_encoder_for(self, position: int) -> None:
        if self._encoder is not None:
            if position == 0:
                self._encoder.reset()
            else:
                self._encoder.setstate(0)

    async def seek(self, cookie: Any, whence: int = 0) -> int:
        self._check_closed()
        if not self._seekable:
            raise _UnsupportedOperation("underlying stream is not seekable")
        if whence == 1:
            if cookie != 0:
                raise _UnsupportedOperation("can't do nonzero cur-relative seeks")
            cookie = await self.tell()
        elif whence == 2:
            if cookie != 0:
                raise _UnsupportedOperation("can't do nonzero end-relative seeks")
            await self.flush()
            position = await self.buffer.seek(0, 2)
            self._set_decoded_chars("")
            self._snapshot = None
            if self._decoder:
                self._decoder.reset()
            self._reset_encoder_for(position)
            return position
        elif whence != 0:
            raise ValueError(f"invalid whence ({whence}, should be 0, 1 or 2)")
        if cookie < 0:
            raise ValueError(f"negative seek position {cookie!r}")
        await self.flush()
        start_pos, dec_flags, bytes_to_feed, need_eof, chars_to_skip = self._unpack_cookie(
            int(cookie)
        )
        saved_text = self._save()
        saved_pos = self.buffer.tell_sync()
        try:
            await self.buffer.seek(start_pos)
            self._set_decoded_chars("")
            self._snapshot = None
            if self._decoder:
                self._decoder_setstate(start_pos, dec_flags)
            if chars_to_skip:
                input_chunk = await self.buffer.read(bytes_to_feed)
                assert self._decoder is not None
                self._snapshot = (dec_flags, input_chunk)
                self._set_decoded_chars(self._decoder.decode(input_chunk, need_eof))
                if len(self._decoded_chars) < chars_to_skip:
                    raise OSError("can't restore logical file position")
                self._decoded_chars_used = chars_to_skip
            else:
                self._snapshot = (dec_flags, b"")
        except BaseException:
            # Nothing was written (flushed above) and a failed read gave its
            # bytes back: the old position is restored as it was.
            self._consumed = None
            self._restore(saved_text)
            self.buffer._reset_read_buf()
            self.buffer.raw.pos = saved_pos
            raise
        if self._encoder is not None:
            self._encoder_setstate(start_pos, dec_flags)
        return int(cookie)

    async def close(self) -> None:
        if self.buffer.raw.closed:
            return
        try:
            await self.flush()
        finally:
            await self.buffer.close()


# -- the public file object -----------------------------------------------------------------

_Layer = _RawFile | _BufferedFile | _TextFile


class _Detached:
    """What an :class:`AsyncFile` holds in place of its layers after
    ``detach()``: every use raises the builtin's ``ValueError``, except the
    attributes a detached ``TextIOWrapper`` still answers (``kept``) and the
    methods a detached ``BufferedReader``/``BufferedWriter`` still refuses
    without looking at its stream (``unsupported``: method -> message)."""

    # AsyncFile._call asks this before it enters a layer: a detached file
    # does no I/O (every call raises at once), so it takes the bounded path.
    positional = True

    def __init__(self, message: str, kept: dict[str, Any], unsupported: dict[str, str]) -> None:
        self.message = message
        self.kept = kept
        self.unsupported = unsupported

    def __getattr__(self, name: str) -> Any:
        if name in self.kept:
            return self.kept[name]
        if name in self.unsupported:
            return self._refuse(self.unsupported[name])
        raise ValueError(self.message)

    @staticmethod
    def _refuse(message: str) -> Callable[..., Any]:
        async def method(*args: Any) -> Any:
            raise _UnsupportedOperation(message)

        return method


# What the builtin's BufferedIOBase methods raise on a BufferedWriter (reads)
# or BufferedReader (writes), detached or not.
_REFUSED = {
    "BufferedWriter": {
        "read": "read",
        "readinto": "read",
        "readline": "read",
        "next_line": "read",
        "read1": "read1",
        "readinto1": "read1",
    },
    "BufferedReader": {"write": "write"},
}


class _Absent:
    """A member that the builtin file object of this kind does not have
    (``encoding`` on a binary file, ``read1`` on a text file...): reading it
    raises ``AttributeError`` as on the builtin, so ``hasattr`` is False."""

    def __init__(self, builtin: str) -> None:
        self.builtin = builtin
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: object, objtype: type | None = None) -> Any:
        raise AttributeError(
            f"'AsyncFile' object has no attribute '{self.name}' "
            f"(the builtin {self.builtin} has none)",
            name=self.name,
            obj=obj,
        )


class AsyncFile(Generic[AnyStr]):
    """A file opened by :func:`open_file`: the methods of Python's file objects,
    awaited, plus owned-buffer methods (:meth:`read_into`, :meth:`write_from`,
    :meth:`read_at`, :meth:`write_at`).

    Stateful methods take a per-file lock, so tasks sharing the file see each
    call happen whole, in arrival order. ``read_at``/``write_at`` take no lock:
    like ``os.pread``/``os.pwrite`` they neither use nor move the position, and
    bypass the file's buffers (``flush()`` first to see buffered writes).

    The members are those of the object the builtin ``open`` returns for the
    same arguments (``FileIO``, ``BufferedReader``, ``BufferedWriter``,
    ``BufferedRandom`` or ``TextIOWrapper``), as ``trio.open_file`` forwards
    them: a member that object lacks is absent here too (``AttributeError``);
    one it has but that the mode forbids raises ``io.UnsupportedOperation``.
    ``raw``, ``buffer`` and ``detach()`` give the layer below as an
    ``AsyncFile`` sharing this one's state and lock. There is no ``wrapped``:
    no synchronous file object exists underneath. docs/files.md has the table.
    """

    # Which builtin class this file mirrors, and the members it lacks: set on
    # the per-kind subclasses that __new__ picks (see _SURFACES below).
    _builtin: ClassVar[str] = ""
    _absent: ClassVar[frozenset[str]] = frozenset()
    # The layer below as an AsyncFile (raw, buffer, detach()), made once; and
    # on that one, the file above it.
    _lower_file: AsyncFile[bytes] | None = None
    _upper_file: AsyncFile[Any] | None = None

    def __new__(cls, layer: _Layer, *args: Any, **kwargs: Any) -> Self:
        # A subclass per kind of builtin object, whose absent members are
        # _Absent descriptors: the members that exist stay plain class
        # attributes, with no per-access check on the hot paths. (The other
        # arguments are __init__'s.)
        target = _SURFACES[_builtin_kind(layer)] if cls is AsyncFile else cls
        return cast(Self, object.__new__(target))

    def __init__(self, layer: _Layer, raw: _RawFile) -> None:
        # Any: the layers share their method names, and the AnyStr of this file
        # is the text-or-binary choice open_file made.
        self._layer: Any = layer
        self._raw = raw
        self._lock = trio.StrictFIFOLock()
        # The scopes of the calls in progress or queued on a pipe-like file
        # (see _call), which aclose cancels.
        self._calls: set[trio.CancelScope] = set()

    def __dir__(self) -> Iterable[str]:
        absent = self._absent
        return [name for name in super().__dir__() if name not in absent]

    def __repr__(self) -> str:
        if isinstance(self._layer, _Detached) or isinstance(self._raw, _Detached):
            return "<ouring.AsyncFile detached>"
        state = "closed" if self.closed else f"fd={self._raw.fd}"
        return f"<ouring.AsyncFile name={self.name!r} mode={self.mode!r} {state}>"

    # -- attributes

    @property
    def name(self) -> Any:
        """The path as given (``os.fspath`` of a path-like), or the int fd."""
        return self._raw.name

    @property
    def mode(self) -> str:
        """As the builtin reports it: the mode given for text files; the
        binary ``FileIO`` mode (``'rb+'``, ``'ab'``...) for binary files."""
        return str(self._layer.mode)

    @property
    def closed(self) -> bool:
        return self._raw.closed

    @property
    def closefd(self) -> bool:
        """Unbuffered binary files only (``FileIO``)."""
        return self._raw.closefd

    @property
    def encoding(self) -> str:
        """Text files only."""
        return str(self._layer.encoding)

    @property
    def errors(self) -> str:
        """Text files only."""
        return str(self._layer.errors)

    @property
    def newlines(self) -> Any:
        """Text files only."""
        return self._layer.newlines

    @property
    def line_buffering(self) -> bool:
        """Text files only."""
        return bool(self._layer.line_buffering)

    @property
    def raw(self) -> AsyncFile[bytes]:
        """Buffered binary files only: the unbuffered file (``FileIO``) below,
        as an ``AsyncFile`` sharing this file's position, buffers and lock
        (reading it skips what this one has buffered, as on the builtin).
        ``None`` after ``detach()``, as on the builtin."""
        if isinstance(self._layer, _Detached):
            return cast("AsyncFile[bytes]", None)  # the builtin's answer
        return self._lower()

    @property
    def buffer(self) -> AsyncFile[bytes]:
        """Text files only: the buffered binary file below, as an ``AsyncFile``
        sharing this file's state and lock (bytes this one decoded ahead are
        no longer in it, as on the builtin). ``None`` after ``detach()``."""
        if isinstance(self._layer, _Detached):
            return cast("AsyncFile[bytes]", None)  # the builtin's answer
        return self._lower()

    def _lower(self) -> AsyncFile[bytes]:
        lower = self._lower_file
        if lower is None:
            layer = self._layer
            below = layer.buffer if isinstance(layer, _TextFile) else layer.raw
            lower = AsyncFile(below, self._raw)
            # One lock for the layers of one file: a call on either runs whole
            # before the next, so no call sees another's half-updated state.
            lower._lock = self._lock
            lower._calls = self._calls  # so that closing either ends the other's calls
            lower._upper_file = self
            self._lower_file = lower
        return lower

    def fileno(self) -> int:
        self._raw.check_closed()
        return self._raw.fd

    def isatty(self) -> bool:
        self._raw.check_closed()
        return os.isatty(self._raw.fd)

    def readable(self) -> bool:
        # The builtin's BufferedWriter (and a TextIOWrapper on one) says False
        # without asking its raw file, so even when closed or detached.
        if self._builtin == "BufferedWriter" or (
            self._builtin == "TextIOWrapper" and not self._layer.buffer.readable
        ):
            return False
        self._raw.check_closed()
        return self._raw.readable

    def writable(self) -> bool:
        # Likewise BufferedReader (and a TextIOWrapper on one).
        if self._builtin == "BufferedReader" or (
            self._builtin == "TextIOWrapper" and not self._layer.buffer.writable
        ):
            return False
        self._raw.check_closed()
        return self._raw.writable

    def seekable(self) -> bool:
        # Every builtin layer asks FileIO (its closed message has no period).
        return self._raw.seekable()

    # -- the entry path of every stateful call

    async def _call(self, method: Callable[..., Awaitable[_T]], *args: Any) -> _T:
        """Run ``method(*args)`` (a layer's method) as one public call, atomic
        with respect to cancellation. EVERY stateful ``AsyncFile`` method enters
        its layer through here (new ones too): that is what makes the rule hold.

        The only cancel point is the entry: taking the FIFO lock (cancellable
        while queued) and ``checkpoint_if_cancelled`` once it is ours. From
        there on:

        - a seekable file (regular file, block device): the work is bounded, so
          the whole call runs shielded and completes, as ``trio.open_file``'s
          thread does; trio raises ``Cancelled`` at the caller's next checkpoint.
        - a pipe, FIFO, tty or socket may wait forever, so the call stays
          cancellable, and each layer keeps what a cancelled call consumed
          (push-back, pending text, the write buffer). Its scope is registered
          so that ``aclose`` can end it: the call then raises
          ``trio.ClosedResourceError``.
        """
        if self._raw.positional:
            await self._lock.acquire()
            try:
                await trio.lowlevel.checkpoint_if_cancelled()
                with trio.CancelScope(shield=True):
                    return await method(*args)
            finally:
                self._lock.release()
        scope = trio.CancelScope()
        self._calls.add(scope)
        try:
            with scope:
                async with self._lock:
                    await trio.lowlevel.checkpoint_if_cancelled()
                    return await method(*args)
        finally:
            self._calls.discard(scope)
        # Only aclose cancels this scope: the call was ended by the close.
        raise trio.ClosedResourceError("the file was closed during the call")

    # -- reading

    async def read(self, size: int | None = -1) -> AnyStr:
        data: AnyStr = await self._call(self._layer.read, size)
        return data

    async def read1(self, size: int = -1) -> bytes:
        """At most one read from the kernel (binary files only)."""
        return bytes(await self._call(self._layer.read1, size))

    async def readinto(self, buffer: Any) -> int:
        return int(await self._call(self._layer.readinto, buffer))

    async def readinto1(self, buffer: Any, /) -> int:
        """Buffered binary files only: ``readinto`` with at most one read from
        the kernel."""
        return int(await self._call(self._layer.readinto1, buffer))

    async def peek(self, size: int = 0, /) -> bytes:
        """Readable buffered binary files only: the buffered bytes, without
        moving the position; if none, one read from the kernel fills the
        buffer first. ``size`` is ignored, as by the builtin."""
        return bytes(await self._call(self._layer.peek, size))

    async def readall(self) -> bytes:
        """Unbuffered binary files only: read to the end of the file."""
        return bytes(await self._call(self._readall))

    async def _readall(self) -> bytes:
        # FileIO.readall checks only that the file is open: on a write-only
        # file the kernel's read fails (EBADF), as the builtin's does.
        self._raw.check_closed()
        return bytes(await self._layer.readall())

    async def readline(self, size: int | None = -1) -> AnyStr:
        line: AnyStr = await self._call(self._layer.readline, size)
        return line

    async def readlines(self, hint: int | None = None) -> list[AnyStr]:
        lines: list[AnyStr] = await self._call(self._layer.readlines, hint)
        return lines

    def __aiter__(self) -> Self:
        self._raw.check_closed(_CLOSED)
        return self

    async def __anext__(self) -> AnyStr:
        line: AnyStr = await self._call(self._layer.next_line)
        if not line:
            raise StopAsyncIteration
        return line

    # -- writing

    async def write(self, data: AnyStr | bytearray | memoryview) -> int:
        return int(await self._call(self._layer.write, data))

    async def writelines(self, lines: Iterable[AnyStr | bytearray | memoryview]) -> None:
        await self._call(self._writelines, lines)

    async def _writelines(self, lines: Iterable[Any]) -> None:
        self._raw.check_closed(_CLOSED)
        if self._raw.positional:
            # Shielded whole (see _call): line by line, as the builtin.
            for line in lines:
                await self._layer.write(line)
            return
        # A pipe: a cancel may land in any write, and the lines before it
        # would be written while the call raises Cancelled. One write of all
        # the lines instead: a layer's write takes all of its data or nothing.
        text = isinstance(self._layer, _TextFile)
        good: list[Any] = []
        bad: list[Any] = []
        for line in lines:
            if not _is_line(line, text):
                bad.append(line)  # written after the good ones: raises the builtin's error
                break
            good.append(line)
        if good:
            await self._layer.write(("" if text else b"").join(good))
        if bad:
            await self._layer.write(bad[0])

    async def flush(self) -> None:
        """Write Python's buffers to the kernel (like the builtin: no fsync)."""
        await self._call(self._layer.flush)

    async def detach(self) -> AsyncFile[bytes]:
        """Buffered and text files: flush, then hand over the layer below (the
        same object as ``raw``/``buffer``); this file is unusable afterwards
        (``ValueError``), as the builtin is after its ``detach()``."""
        return await self._call(self._detach)

    async def _detach(self) -> AsyncFile[bytes]:
        await self._layer.flush()
        lower = self._lower()
        layer = self._layer
        kept: dict[str, Any] = {}
        if isinstance(layer, _TextFile):
            message = "underlying buffer has been detached"
            kept = {
                "mode": layer.mode,
                "encoding": layer.encoding,
                "errors": layer.errors,
                "line_buffering": layer.line_buffering,
            }
        else:
            message = "raw stream has been detached"
        detached = _Detached(message, kept, _REFUSED.get(self._builtin, {}))
        # No checkpoint since the flush: detaching is part of this call.
        self._layer = self._raw = cast(_RawFile, detached)
        upper = self._upper_file
        if upper is not None and isinstance(upper._layer, _TextFile):
            # f.buffer.detach(): the builtin text file above now uses a
            # detached buffer, and every use of it raises; so does ours.
            upper._layer.buffer = cast(_BufferedFile, detached)
            upper._raw = cast(_RawFile, detached)
        return lower

    # -- positioning

    async def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return int(await self._call(self._layer.seek, offset, whence))

    async def tell(self) -> int:
        return int(await self._call(self._layer.tell))

    async def truncate(self, size: int | None = None) -> int:
        return int(await self._call(self._layer.truncate, size))

    # -- owned buffers

    async def read_into(self, buf: Any) -> tuple[Any, int]:
        """``buf, n = await f.read_into(buf)``: read at the position, straight
        into ``buf`` when nothing is buffered, with at most one kernel read
        (binary files). ``n == 0`` means end of file."""
        return await self._call(self._read_into, buf)

    async def _read_into(self, buf: Any) -> tuple[Any, int]:
        layer = self._binary_layer()
        if isinstance(layer, _RawFile):
            layer.check_closed()
            layer.check_readable()
            return await layer.read_op(buf)
        return await layer.read_into(buf)

    async def write_from(self, buf: Any) -> tuple[Any, int]:
        """``buf, n = await f.write_from(buf)``: one kernel write from ``buf``
        at the position, after the buffered data (binary files). Like
        ``os.write``, ``n`` may be less than ``len(buf)``."""
        return await self._call(self._write_from, buf)

    async def _write_from(self, buf: Any) -> tuple[Any, int]:
        layer = self._binary_layer()
        if isinstance(layer, _RawFile):
            layer.check_closed()
            layer.check_writable()
            return await layer.write_op(buf)
        return await layer.write_from(buf)

    def _binary_layer(self) -> _RawFile | _BufferedFile:
        layer = self._layer
        if isinstance(layer, _RawFile | _BufferedFile):
            return layer
        raise _UnsupportedOperation("owned-buffer methods need a binary file")

    async def read_at(self, buf: Any, offset: int) -> tuple[Any, int]:
        """``pread``: one read into ``buf`` at ``offset``; no lock, no position."""
        self._raw.check_closed(_CLOSED)
        self._raw.check_readable()
        if offset < 0:
            raise ValueError(f"offset must be >= 0, not {offset}")
        return await _api.read(self._raw.fd, buf, offset)

    async def write_at(self, buf: Any, offset: int) -> tuple[Any, int]:
        """``pwrite``: one write from ``buf`` at ``offset``; no lock, no position
        (an ``O_APPEND`` file appends anyway, as ``pwrite`` does on Linux)."""
        self._raw.check_closed(_CLOSED)
        self._raw.check_writable()
        if offset < 0:
            raise ValueError(f"offset must be >= 0, not {offset}")
        return await _api.write(self._raw.fd, buf, offset)

    # -- closing

    async def aclose(self) -> None:
        """Flush and close, like the builtin's ``close()``; closing again does
        nothing.

        As with ``trio.open_file``, a cancelled ``aclose`` still closes: a
        regular file is flushed and closed shielded from cancellation, then
        ``Cancelled`` is raised. A pipe, FIFO, tty or socket may never take its
        buffered bytes (nobody reads the other end), so its flush runs under
        the caller's cancellation: if cancelled, the unflushed bytes are
        dropped and the fd is closed anyway.

        Calls of other tasks on a regular file are bounded: they finish
        first, and what they wrote is flushed. Calls on a pipe-like file,
        in progress or queued, are ended: they raise
        ``trio.ClosedResourceError`` (having kept what they consumed).
        Closing again waits for the first close to end, then does nothing.
        """
        if isinstance(self._raw, _Detached):
            # As the builtin's close(), every time: ValueError, nothing to close.
            raise ValueError(self._raw.message)
        if self._raw.closing:
            # Closed, or being closed by another task (through any layer):
            # return once it is. Not shielded: the first close may wait
            # forever on a pipe nobody reads, and this one must stay
            # cancellable (the first still closes the file).
            async with self._lock:
                pass
            return
        self._raw.closing = True
        # Calls on a pipe may wait forever: end them (they raise
        # ClosedResourceError, having kept what they consumed). Calls on a
        # regular file are bounded and shielded: they finish first, so what
        # they wrote is flushed below.
        for scope in list(self._calls):
            scope.cancel()
        with trio.CancelScope(shield=True):
            await self._lock.acquire()
        try:
            if self._raw.positional:
                with trio.CancelScope(shield=True):
                    await self._layer.close()
            else:
                try:
                    await self._layer.flush()
                finally:
                    with trio.CancelScope(shield=True):
                        await self._raw.close()
        finally:
            self._lock.release()
        await trio.lowlevel.checkpoint_if_cancelled()

    async def __aenter__(self) -> Self:
        self._raw.check_closed(_CLOSED)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


_BUFFERED = frozenset({"BufferedReader", "BufferedWriter", "BufferedRandom"})
# The AsyncFile members that only some of the builtin's classes have, and which
# classes those are (tests/test_files_surface.py checks this against the
# builtin objects and trio.open_file's wrappers, on every Python it runs on).
_ONLY_ON: dict[str, frozenset[str]] = {
    "closefd": frozenset({"FileIO"}),
    "readall": frozenset({"FileIO"}),
    "readinto": _BUFFERED | {"FileIO"},
    "read1": _BUFFERED,
    "readinto1": _BUFFERED,
    "raw": _BUFFERED,
    "peek": frozenset({"BufferedReader", "BufferedRandom"}),
    "detach": _BUFFERED | {"TextIOWrapper"},
    "buffer": frozenset({"TextIOWrapper"}),
    "encoding": frozenset({"TextIOWrapper"}),
    "errors": frozenset({"TextIOWrapper"}),
    "newlines": frozenset({"TextIOWrapper"}),
    "line_buffering": frozenset({"TextIOWrapper"}),
    # trio's AsyncIOWrapper.wrapped is the synchronous file object: there is
    # none here (the layers are private and bypass the lock), so it is absent.
    "wrapped": frozenset(),
}


def _builtin_kind(layer: _Layer) -> str:
    """The class of the object the builtin ``open`` returns for this layer."""
    if isinstance(layer, _TextFile):
        return "TextIOWrapper"
    if isinstance(layer, _RawFile):
        return "FileIO"
    if layer.readable and layer.writable:
        return "BufferedRandom"
    return "BufferedReader" if layer.readable else "BufferedWriter"


def _surface(kind: str) -> type[AsyncFile[Any]]:
    absent = frozenset(name for name, kinds in _ONLY_ON.items() if kind not in kinds)
    namespace: dict[str, Any] = {name: _Absent(kind) for name in absent}
    namespace.update(
        __module__=AsyncFile.__module__, __qualname__="AsyncFile", _builtin=kind, _absent=absent
    )
    return cast("type[AsyncFile[Any]]", type("AsyncFile", (AsyncFile,), namespace))


_SURFACES = {kind: _surface(kind) for kind in _BUFFERED | {"FileIO", "TextIOWrapper"}}


# -- open_file ------------------------------------------------------------------------------


@overload
async def open_file(
    file: StrOrBytesPath | int,
    mode: OpenTextMode = "r",
    buffering: int = -1,
    encoding: str | None = None,
    errors: str | None = None,
    newline: str | None = None,
    closefd: bool = True,
    opener: Callable[[str | bytes, int], int] | None = None,
) -> AsyncFile[str]: ...


@overload
async def open_file(
    file: StrOrBytesPath | int,
    mode: OpenBinaryMode,
    buffering: int = -1,
    encoding: None = None,
    errors: None = None,
    newline: None = None,
    closefd: bool = True,
    opener: Callable[[str | bytes, int], int] | None = None,
) -> AsyncFile[bytes]: ...


@overload
async def open_file(
    file: StrOrBytesPath | int,
    mode: str,
    buffering: int = -1,
    encoding: str | None = None,
    errors: str | None = None,
    newline: str | None = None,
    closefd: bool = True,
    opener: Callable[[str | bytes, int], int] | None = None,
) -> AsyncFile[Any]: ...


async def open_file(
    file: Any,
    mode: str = "r",
    buffering: int = -1,
    encoding: str | None = None,
    errors: str | None = None,
    newline: str | None = None,
    closefd: bool = True,
    opener: Callable[[Any, int], int] | None = None,
) -> AsyncFile[Any]:
    """Open ``file`` like the builtin ``open`` (same arguments, modes, errors
    and defaults), doing the I/O through the ring. Returns an
    :class:`AsyncFile`; use it as ``async with await ouring.open_file(...) as f``.

    If it raises ``Cancelled``, nothing happened: no file was created or
    truncated and no fd is left open. Once the open itself has happened in a
    mode that may create or truncate (``w``, ``x``, ``a``), the call finishes
    and returns the file, and trio raises ``Cancelled`` at the next checkpoint
    (``trio.open_file`` does the same: its cancel point is before its worker
    thread starts).
    """
    # Argument checks in the builtin's order, with its messages.
    if not isinstance(mode, str):
        raise TypeError(f"open() argument 'mode' must be str, not {type(mode).__name__}")
    buffering = operator.index(buffering)
    for arg, value in (("encoding", encoding), ("errors", errors), ("newline", newline)):
        if value is not None and not isinstance(value, str):
            raise TypeError(
                f"open() argument '{arg}' must be str or None, not {type(value).__name__}"
            )
    if isinstance(file, float):
        raise TypeError("expected str, bytes or os.PathLike object, not float")
    if not isinstance(file, int):
        file = os.fspath(file)
    for i, c in enumerate(mode):
        if c not in "xrwa+tb" or c in mode[i + 1 :]:
            raise ValueError(f"invalid mode: {mode!r}")
    creating, reading, writing = "x" in mode, "r" in mode, "w" in mode
    appending, updating = "a" in mode, "+" in mode
    text, binary = "t" in mode, "b" in mode
    if text and binary:
        raise ValueError("can't have text and binary mode at once")
    if creating + reading + writing + appending > 1:
        raise ValueError("must have exactly one of create/read/write/append mode")
    if not (creating or reading or writing or appending):
        raise ValueError(
            "Must have exactly one of create/read/write/append mode and at most one plus"
        )
    if binary and encoding is not None:
        raise ValueError("binary mode doesn't take an encoding argument")
    if binary and errors is not None:
        raise ValueError("binary mode doesn't take an errors argument")
    if binary and newline is not None:
        raise ValueError("binary mode doesn't take a newline argument")
    if binary and buffering == 1:
        warnings.warn(
            "line buffering (buffering=1) isn't supported in binary mode, "
            "the default buffer size will be used",
            RuntimeWarning,
            stacklevel=2,
        )
    raw = await _open_raw(file, creating, reading, writing, appending, updating, closefd, opener)
    try:
        line_buffering = False
        if buffering == 1 or (buffering < 0 and os.isatty(raw.fd)):
            buffering = -1
            line_buffering = True
        if buffering < 0:
            buffering = raw.blksize
        if buffering == 0:
            if binary:
                return AsyncFile(raw, raw)
            raise ValueError("can't have unbuffered text I/O")
        if updating and not raw.positional:
            raise _UnsupportedOperation("File or stream is not seekable.")
        buffered = _BufferedFile(raw, buffering)
        if binary:
            return AsyncFile(buffered, raw)
        if encoding is None:
            encoding = "utf-8" if sys.flags.utf8_mode else locale.getencoding()
        elif encoding == "locale":
            encoding = locale.getencoding()
        return AsyncFile(_TextFile(buffered, encoding, errors, newline, line_buffering, mode), raw)
    except BaseException:
        raw.closed = True
        if raw.closefd:
            os.close(raw.fd)  # nothing else has seen it; closing it does not block
        raise


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
            await trio.lowlevel.checkpoint_if_cancelled()  # before the opener acts
            fd = opener(file, flags)
            if not isinstance(fd, int):
                raise TypeError("expected integer from opener")
            if fd < 0:
                raise ValueError(f"opener returned {fd}")
        owned = True
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
    with trio.CancelScope(shield=owned and bool(flags & (os.O_CREAT | os.O_TRUNC))):
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
