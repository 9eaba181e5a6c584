"""The buffered layer of ``ouring.open_file``.

``_BufferedFile`` (``BufferedReader``/``BufferedWriter``/``BufferedRandom``):
a port of CPython's ``Modules/_io/bufferedio.c``: one buffer shared by
reads and writes, the same read sizes, the same fast paths, so ``read1`` and
``readline`` return what the builtin returns for the same calls.

``_files.py`` has the overview of the layers and their cancellation rule.

Portions of this module are derived from CPython's ``Lib/_pyio.py`` and
``Modules/_io/*.c``, Copyright (c) 2001-2024 Python Software Foundation, used
under the Python Software Foundation License Version 2.
"""

from __future__ import annotations

import errno
import operator
import os
import sys
from typing import Any

from ._file_raw import (
    _CLOSED,
    _collect_lines,
    _espipe,
    _lent_view,
    _optional_size,
    _RawFile,
    _UnsupportedOperation,
)

_SEEK_FLAGS = {0, 1, 2}
if hasattr(os, "SEEK_HOLE"):
    _SEEK_FLAGS |= {os.SEEK_HOLE, os.SEEK_DATA}


def _c_int(value: Any) -> int:
    """``value`` as an argument-clinic ``int`` parameter reads it."""
    n: int = operator.index(value)
    if not -(1 << 31) <= n < 1 << 31:
        raise OverflowError("Python int too large to convert to C int")
    return n


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
