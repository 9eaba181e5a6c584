"""The text layer of ``ouring.open_file``.

``_TextFile`` (``TextIOWrapper``): a port of CPython's ``_pyio.TextIOWrapper``
(``Lib/_pyio.py``) with the C implementation's chunk size, write batching
and ``tell()``/``seek()`` cookie arithmetic (``Modules/_io/textio.c``), so
cookies, universal newlines and decoder state match the builtin's.

``_files.py`` has the overview of the layers and their cancellation rule.

Portions of this module are derived from CPython's ``Lib/_pyio.py`` and
``Modules/_io/*.c``, Copyright (c) 2001-2024 Python Software Foundation, used
under the Python Software Foundation License Version 2.
"""

from __future__ import annotations

import codecs
import io
import operator
import os
import sys
from typing import TYPE_CHECKING, Any

from . import _sync
from ._file_raw import _CLOSED, _collect_lines, _optional_size, _UnsupportedOperation

if TYPE_CHECKING:
    from ._file_buffered import _BufferedFile

_TEXT_WRITE_KEEPS_UNTOLD_READAHEAD = sys.version_info >= (3, 13)


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
        count is returned, and the cancellation is raised at the next checkpoint."""
        await _sync.deliver_later(flushing)

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
