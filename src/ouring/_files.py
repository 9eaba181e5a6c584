"""``ouring.open_file`` and ``ouring.AsyncFile``: Python file objects whose I/O
goes through the ring.

The layers are Python's io layers, rebuilt on ring operations, one module
each (each module's docstring says what its layer does):

- ``_file_raw``: ``_RawFile`` (``FileIO``), ``_open_raw`` (``FileIO.__init__``)
  and the helpers the layers share;
- ``_file_buffered``: ``_BufferedFile`` (``BufferedReader``/``BufferedWriter``/
  ``BufferedRandom``);
- ``_file_text``: ``_TextFile`` (``TextIOWrapper``).

This module has what users get: ``open_file`` (``io.open``: the arguments,
then the layers for the mode) and ``AsyncFile``, the public object over a
layer, which takes each call through the lock and the cancellation rule
below. The file layers use only ``_sync``'s primitives for that (a FIFO lock,
a checkpoint, shielded and cancellable regions), so the same code runs under
trio and asyncio.

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
pipe (``trio.ClosedResourceError``; under asyncio ``_sync.ClosedResourceError``),
then flushes and closes; cancelled, it still closes, then raises ``Cancelled``
(trio's ``aclose`` semantics).

Under asyncio, read ``Cancelled`` as ``CancelledError`` and "trio raises
``Cancelled`` at the next checkpoint" as "the task raises ``CancelledError``
at its next await" (``_sync`` re-arms the cancel on the task).
"""

from __future__ import annotations

import locale
import operator
import os
import sys
import warnings
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, AnyStr, ClassVar, Generic, Self, TypeVar, cast, overload

from . import _api, _sync
from ._file_buffered import _BufferedFile
from ._file_raw import _CLOSED, _open_raw, _RawFile, _UnsupportedOperation
from ._file_text import _TextFile

if TYPE_CHECKING:
    from types import TracebackType

    from _typeshed import OpenBinaryMode, OpenTextMode, StrOrBytesPath

__all__ = ["AsyncFile", "open_file"]

_T = TypeVar("_T")


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
        self._lock = _sync.fifo_lock()
        # The scopes of the calls in progress or queued on a pipe-like file
        # (see _call), which aclose cancels.
        self._calls: set[_sync.Scope] = set()

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
          ``trio.ClosedResourceError`` (``_sync.closed_error``).
        """
        if self._raw.positional:
            await self._lock.acquire()
            try:
                await _sync.checkpoint_if_cancelled()
                return await _sync.shielded(method, *args)
            finally:
                self._lock.release()
        scope = _sync.open_scope()
        self._calls.add(scope)
        try:
            # Only aclose cancels this scope: the call, queued or in progress,
            # is then ended by the close (closed_error).
            return await scope.run(self._locked_call, method, args)
        finally:
            self._calls.discard(scope)

    async def _locked_call(self, method: Callable[..., Awaitable[_T]], args: tuple[Any, ...]) -> _T:
        async with self._lock:
            await _sync.checkpoint_if_cancelled()
            return await method(*args)

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
            scope.cancel("the file was closed during the call")
        await _sync.shielded(self._lock.acquire)
        try:
            if self._raw.positional:
                await _sync.shielded(self._layer.close)
            else:
                try:
                    await self._layer.flush()
                finally:
                    await _sync.shielded(self._raw.close)
        finally:
            self._lock.release()
        await _sync.checkpoint_if_cancelled()

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
