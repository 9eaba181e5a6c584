"""``ouring.Path``: a ``trio.Path`` whose file-system methods go through the ring.

It subclasses ``trio.Path`` (and ``pathlib.PurePosixPath``), so it is a drop-in:
``isinstance(p, trio.Path)`` holds, pure-path operations (``/``, ``parent``,
``with_name``...) return ``ouring.Path``, and every method not listed below runs
``pathlib``'s in a worker thread, as trio's version does (through
``_sync.to_thread``: trio's threads under trio, the loop's default executor
under asyncio, so that no method needs a trio run).

These are io_uring operations instead, with ``pathlib.Path``'s signatures,
results and exceptions for the running Python (3.11+):

==================  =====================================================
``stat``, ``lstat``  statx
``exists``           statx (``follow_symlinks=`` on Python 3.12+)
``samefile``         statx of both paths
``mkdir``            mkdirat; ``parents``/``exist_ok`` as pathlib does them
``unlink``           unlinkat (``missing_ok=``)
``rmdir``            unlinkat with ``AT_REMOVEDIR``
``rename``,          renameat (on Linux ``os.rename`` and ``os.replace`` are
``replace``          both ``renameat``); return the new path
``symlink_to``       symlinkat
``hardlink_to``      linkat
``read_bytes``       openat, statx of the fd, reads at explicit offsets until
                     one returns 0, close
``write_bytes``      openat (``O_CREAT | O_TRUNC``), writes at explicit offsets
                     until every byte is written, close
``read_text``,       the same, decoded / encoded by ``io.TextIOWrapper`` over
``write_text``       ``io.BytesIO`` with the same arguments pathlib passes to
                     ``open``: the same codecs, BOMs, newline translation and
                     errors as the builtin file
``open``             ``ouring.open_file``
==================  =====================================================

pathlib's argument checks happen at the same points relative to the I/O:
``write_bytes`` checks for the buffer interface before truncating; text
arguments that ``open`` rejects by type fail before anything is opened; an
unknown encoding or illegal ``newline`` fails after the file is opened (and,
for ``write_text``, truncated), as ``io.open`` fails there.

Every fd opened here is closed through the ring, shielded from cancellation,
whatever happens to the caller.

Each call is atomic with respect to cancellation, as ``trio.Path``'s (one
worker thread per call) are: it raises ``Cancelled`` having changed nothing on
disk and left no fd open, or it completes and returns, and trio raises
``Cancelled`` at the next checkpoint. A call of one operation has it from the
ring. A composite call is cancellable at each operation that changes nothing
(statx, a failing mkdirat, a read of a regular file), and finishes in a
shielded scope from the first operation with an effect: an openat with
``O_CREAT``/``O_TRUNC`` (``write_bytes``, ``write_text``), a mkdirat that made
a directory (``mkdir(parents=True)``), a read that consumed bytes from a FIFO
(``read_bytes``, ``read_text``: nothing could give them back). On regular files
and directories that is bounded work; on a FIFO it waits for the peer, as
trio's worker thread does.
"""

from __future__ import annotations

import errno
import io
import os
import pathlib
import stat as stat_module
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar, Self, TypeVar, overload

import trio

from . import _api, _sync
from ._errors import RingClosedError
from ._ops import fs_path

if TYPE_CHECKING:
    from _typeshed import (
        OpenBinaryMode,
        OpenTextMode,
        ReadableBuffer,
        StrOrBytesPath,
        StrPath,
    )

    from ._files import AsyncFile

__all__ = ["Path"]

T = TypeVar("T")

# pathlib's _IGNORED_ERRNOS: what exists() and is_dir() read as "no such path".
_IGNORED_ERRNOS = (errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP)
# First read of a file whose size stat cannot tell (pipes, /proc); doubled as it fills.
_CHUNK = 64 * 1024
# The kernel moves at most this many bytes per read or write call.
_MAX_IO = 0x7FFFF000
_READ_FLAGS = os.O_RDONLY  # io.open(mode="rb"); ouring.open adds O_CLOEXEC
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC  # io.open(mode="wb")
# Whether os.link(src, dst) follows a symlink src on Linux (see hardlink_to).
_LINK_FOLLOWS = sys.version_info >= (3, 14)


def _ignore_error(exc: OSError) -> bool:
    return exc.errno in _IGNORED_ERRNOS


def _check_text_args(encoding: Any, errors: Any, newline: Any) -> None:
    """What ``io.open`` checks before it opens anything, with its messages."""
    for name, value in (("encoding", encoding), ("errors", errors), ("newline", newline)):
        if value is not None and not isinstance(value, str):
            raise TypeError(
                f"open() argument '{name}' must be str or None, not {type(value).__name__}"
            )


def _text_wrapper(
    buffer: io.BytesIO, encoding: str, errors: str | None, newline: str | None
) -> io.TextIOWrapper:
    """The ``TextIOWrapper`` that ``io.open`` would put over the file, over
    ``buffer`` instead: it raises what ``io.open`` raises after opening (an
    unknown or non-text encoding, an illegal newline)."""
    return io.TextIOWrapper(buffer, encoding, errors, newline)


async def _close(fd: int) -> None:
    """Close an fd this module opened, even when the caller is cancelled."""
    await _sync.shielded(_close_now, fd)


async def _close_now(fd: int) -> None:
    try:
        await _api.close(fd)
    except RingClosedError:
        os.close(fd)  # the ring is gone; nothing of it uses the fd any more


async def _with_fd(path: Path, flags: int, body: Callable[[int, _sync.Scope], Awaitable[T]]) -> T:
    """Open ``path``, run ``body(fd, effect)``, close the fd whatever happens.

    The openat is the call's cancel point: if it raised ``Cancelled``, it did
    not happen. One that returned with ``O_CREAT``/``O_TRUNC`` in ``flags``
    may have created or truncated the file, which no close undoes: ``effect``
    (a scope around the body) is then shielded, so the call finishes its
    bounded work and returns, and trio raises ``Cancelled`` at the caller's
    next checkpoint. ``body`` shields it too once it makes an effect of its
    own (bytes consumed from a FIFO)."""
    fs_path(path, None)  # pathlib opens with io.open, whose message differs from os.open's
    fd = await _api.open(path, flags, 0o666)
    # No checkpoint between the openat's return and the shield. The scope is
    # never cancelled itself (no cancel()): its run raises nothing of its own.
    effect = _sync.open_scope(shield=bool(flags & (os.O_CREAT | os.O_TRUNC)))
    return await effect.run(_then_close, fd, body, effect)


async def _then_close(
    fd: int, body: Callable[[int, _sync.Scope], Awaitable[T]], effect: _sync.Scope
) -> T:
    try:
        return await body(fd, effect)
    finally:
        await _close(fd)


async def _read_to_end(
    fd: int, filename: str, before_read: Callable[[], object], effect: _sync.Scope
) -> bytes:
    """``FileIO(filename, "rb").readall()`` on an open fd: refuse a directory
    as ``FileIO`` does, then read until a read returns 0. A regular file is
    read at explicit offsets, starting with one buffer of its size plus one
    byte (as ``readall`` sizes it); other files at the file position.

    Reading a regular file changes nothing: a cancel anywhere raises
    ``Cancelled`` (the caller closes the fd). Bytes read from a FIFO, a pipe or
    a tty are gone from it, and this call has no object to keep them in for a
    later call: after the first of them, it reads on to EOF shielded (as
    ``trio.Path.read_bytes``, a worker thread, does from its start), so that
    ``Cancelled`` still means nothing was consumed."""
    st = await _api.stat(fd)
    if stat_module.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), filename)
    before_read()
    positional = stat_module.S_ISREG(st.st_mode) or stat_module.S_ISBLK(st.st_mode)
    size = min(st.st_size + 1, _MAX_IO) if stat_module.S_ISREG(st.st_mode) else _CHUNK
    chunks: list[bytearray] = []
    total = 0
    while True:
        # A fresh buffer per read: the ring leases it until the CQE, and no
        # view of it outlives the call, so it can be trimmed right after.
        buf, n = await _api.read(fd, bytearray(size), total if positional else -1)
        if n == 0:
            break
        if not positional:
            effect.shield = True  # consumed: see the docstring
        del buf[n:]
        chunks.append(buf)
        total += n
        size = min(max(_CHUNK, total), _MAX_IO)  # the file grew past its size, or is unsized
    if len(chunks) == 1:
        return bytes(chunks[0])
    return b"".join(chunks)


async def _write_all(fd: int, view: memoryview) -> int:
    """``BufferedWriter.write(view)`` then flush: every byte, short writes
    continued, at explicit offsets (the file was just truncated: it starts
    at 0). A file that is not seekable (a FIFO) is written at its position."""
    if not view.c_contiguous:
        raise BufferError("memoryview: underlying buffer is not C-contiguous")
    nbytes = view.nbytes
    data = view.cast("B") if view.ndim != 1 or view.format != "B" else view
    written = 0
    offset = 0
    while written < nbytes:
        chunk = data[written:] if written else data
        try:
            _, n = await _api.write(fd, chunk, offset)
        except OSError as exc:
            if exc.errno != errno.ESPIPE or offset == -1:
                raise
            offset = -1  # not seekable: nothing was written; use the file position
            continue
        if n == 0:
            raise OSError(errno.EIO, "write returned 0 bytes")  # never loop forever
        written += n
        if offset != -1:
            offset += n
    return nbytes


class Path(trio.Path, pathlib.PurePosixPath):
    """A ``trio.Path`` whose file-system methods are io_uring operations.

    ``stat``, ``lstat``, ``exists``, ``samefile``, ``mkdir``, ``unlink``,
    ``rmdir``, ``rename``, ``replace``, ``symlink_to``, ``hardlink_to``,
    ``read_bytes``, ``write_bytes``, ``read_text``, ``write_text`` and ``open``
    go through the ring, with ``pathlib.Path``'s signatures, results and
    exceptions; every other method is pathlib's in a worker thread, as
    trio's. A call that
    raises ``Cancelled`` changed nothing (see the module docstring)."""

    __slots__ = ()

    _wrapped_cls: ClassVar[type[pathlib.Path]] = pathlib.PosixPath

    def __repr__(self) -> str:
        return f"ouring.Path({str(self)!r})"

    # -- stat ---------------------------------------------------------------------------

    async def stat(self, *, follow_symlinks: bool = True) -> os.stat_result:
        """Like :meth:`pathlib.Path.stat`, through statx."""
        return await _api.stat(self, follow_symlinks=follow_symlinks)

    async def lstat(self) -> os.stat_result:
        """Like :meth:`pathlib.Path.lstat`, through statx."""
        return await self.stat(follow_symlinks=False)

    if sys.version_info >= (3, 12):

        async def exists(self, *, follow_symlinks: bool = True) -> bool:
            """Like :meth:`pathlib.Path.exists`, through statx."""
            return await self._exists(follow_symlinks)

    else:

        async def exists(self) -> bool:
            """Like :meth:`pathlib.Path.exists`, through statx."""
            return await self._exists(True)

    async def samefile(self, other_path: StrPath) -> bool:
        """Like :meth:`pathlib.Path.samefile`: statx of both, same device and
        inode. (trio's version hands ``other_path`` to pathlib in a thread,
        which calls its ``stat()``: a coroutine for a ``trio.Path``.)"""
        st = await self.stat()
        if isinstance(other_path, (pathlib.Path, trio.Path)):
            other = await _api.stat(other_path)  # what its stat() does
        else:
            other = await type(self)(other_path).stat()  # pathlib's type check
        return os.path.samestat(st, other)

    async def _exists(self, follow_symlinks: bool) -> bool:
        try:
            await self.stat(follow_symlinks=follow_symlinks)
        except OSError as exc:
            if not _ignore_error(exc):
                raise
            return False
        except ValueError:  # a null byte in the path
            return False
        return True

    async def _is_dir(self) -> bool:
        """``pathlib.Path.is_dir()`` through statx, for ``mkdir(exist_ok=True)``."""
        try:
            return stat_module.S_ISDIR((await self.stat()).st_mode)
        except OSError as exc:
            if not _ignore_error(exc):
                raise
            return False
        except ValueError:
            return False

    # -- directories and names -------------------------------------------------------------

    async def mkdir(self, mode: int = 0o777, parents: bool = False, exist_ok: bool = False) -> None:
        """Like :meth:`pathlib.Path.mkdir`, through mkdirat.

        With ``parents``, each mkdirat that fails (the parent is missing, or
        exists already) changes nothing, and a cancel there raises
        ``Cancelled``; once one has made a directory, the call finishes
        shielded (bounded: a few mkdirat), so that it never raises
        ``Cancelled`` after making only some of them."""
        try:
            await _api.mkdir(self, mode)
        except FileNotFoundError:
            if not parents or self.parent == self:
                raise
            effect = _sync.open_scope()
            await effect.run(self._mkdir_below_missing, mode, exist_ok, effect)
        except OSError:
            # As pathlib: not only EEXIST, since the kernel may report another
            # error first (EACCES, EROFS) for a directory that exists.
            if not exist_ok or not await self._is_dir():
                raise

    async def _mkdir_below_missing(self, mode: int, exist_ok: bool, effect: _sync.Scope) -> None:
        """The missing parents, then this directory, in ``effect``: the
        region that the first mkdirat to make a directory shields."""
        await self.parent._mkdir(0o777, True, True, effect)
        await self._mkdir(mode, False, exist_ok, effect)

    async def _mkdir(self, mode: int, parents: bool, exist_ok: bool, effect: _sync.Scope) -> None:
        """``mkdir`` below a missing parent: ``effect`` is shielded by the
        first mkdirat that makes a directory."""
        try:
            await _api.mkdir(self, mode)
            effect.shield = True  # made: the rest of the call finishes
        except FileNotFoundError:
            if not parents or self.parent == self:
                raise
            await self.parent._mkdir(0o777, True, True, effect)
            await self._mkdir(mode, False, exist_ok, effect)
        except OSError:
            # As pathlib: not only EEXIST, since the kernel may report another
            # error first (EACCES, EROFS) for a directory that exists.
            if not exist_ok or not await self._is_dir():
                raise

    async def rmdir(self) -> None:
        """Like :meth:`pathlib.Path.rmdir`, through unlinkat."""
        await _api.rmdir(self)

    async def unlink(self, missing_ok: bool = False) -> None:
        """Like :meth:`pathlib.Path.unlink`, through unlinkat."""
        try:
            await _api.unlink(self)
        except FileNotFoundError:
            if not missing_ok:
                raise

    async def rename(self, target: StrPath) -> Self:
        """Like :meth:`pathlib.Path.rename`, through renameat: replaces an
        existing ``target`` as ``os.rename`` does on Linux. Returns the new path."""
        await _api.rename(self, target)
        return type(self)(target)

    async def replace(self, target: StrPath) -> Self:
        """Like :meth:`pathlib.Path.replace`, through renameat (``os.replace``
        and ``os.rename`` are the same call on Linux). Returns the new path."""
        fs_path(self, "replace", "src")  # a NUL gets os.replace's message, not os.rename's
        fs_path(target, "replace", "dst")
        await _api.rename(self, target)
        return type(self)(target)

    async def symlink_to(self, target: StrOrBytesPath, target_is_directory: bool = False) -> None:
        """Like :meth:`pathlib.Path.symlink_to`, through symlinkat.
        ``target_is_directory`` matters only on Windows."""
        await _api.symlink(target, self)

    async def hardlink_to(self, target: StrOrBytesPath) -> None:
        """Like :meth:`pathlib.Path.hardlink_to`, through linkat.

        pathlib calls ``os.link(target, self)``, which on Linux links a
        symlink ``target`` itself before Python 3.14 (it calls ``link(2)``,
        which does not follow; CPython gh-81793) and the file it points to
        since; this does the same for the running Python."""
        await _api.link(target, self, follow_symlinks=_LINK_FOLLOWS)

    # -- contents --------------------------------------------------------------------------

    async def read_bytes(self) -> bytes:
        """Like :meth:`pathlib.Path.read_bytes`: openat, statx, reads until
        EOF at explicit offsets, close; no worker thread."""
        filename = os.fspath(self)

        def body(fd: int, effect: _sync.Scope) -> Awaitable[bytes]:
            return _read_to_end(fd, filename, _nothing, effect)

        return await _with_fd(self, _READ_FLAGS, body)

    async def write_bytes(self, data: ReadableBuffer) -> int:
        """Like :meth:`pathlib.Path.write_bytes`: openat (create, truncate),
        writes at explicit offsets until all is written, close."""
        view = memoryview(data)  # type-check for the buffer interface before truncating
        return await _with_fd(self, _WRITE_FLAGS, lambda fd, _: _write_all(fd, view))

    async def _read_text(self, encoding: Any, errors: Any, newline: Any) -> str:
        _check_text_args(encoding, errors, newline)
        filename = os.fspath(self)

        def check() -> None:  # where io.open builds its TextIOWrapper
            _text_wrapper(io.BytesIO(), encoding, errors, newline).detach()

        def body(fd: int, effect: _sync.Scope) -> Awaitable[bytes]:
            return _read_to_end(fd, filename, check, effect)

        data = await _with_fd(self, _READ_FLAGS, body)
        return _text_wrapper(io.BytesIO(data), encoding, errors, newline).read()

    if sys.version_info >= (3, 13):

        async def read_text(
            self, encoding: str | None = None, errors: str | None = None, newline: str | None = None
        ) -> str:
            """Like :meth:`pathlib.Path.read_text`; the bytes are read as by
            :meth:`read_bytes` and decoded by ``io.TextIOWrapper``."""
            encoding = io.text_encoding(encoding)
            return await self._read_text(encoding, errors, newline)

    else:

        async def read_text(self, encoding: str | None = None, errors: str | None = None) -> str:
            """Like :meth:`pathlib.Path.read_text`; the bytes are read as by
            :meth:`read_bytes` and decoded by ``io.TextIOWrapper`` (universal
            newlines)."""
            encoding = io.text_encoding(encoding)
            return await self._read_text(encoding, errors, None)

    async def write_text(
        self,
        data: str,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
    ) -> int:
        """Like :meth:`pathlib.Path.write_text`: encoded by ``io.TextIOWrapper``
        (BOM, newline translation, errors as the builtin file), then written as
        by :meth:`write_bytes`. Returns the number of characters written."""
        if not isinstance(data, str):
            raise TypeError(f"data must be str, not {data.__class__.__name__}")
        encoding = io.text_encoding(encoding)
        _check_text_args(encoding, errors, newline)

        async def body(fd: int, effect: _sync.Scope) -> int:
            buffer = io.BytesIO()
            text = _text_wrapper(buffer, encoding, errors, newline)
            count = text.write(data)
            text.flush()
            text.detach()
            # No `with`: if this coroutine is abandoned mid-write, the ring
            # still holds an export of the view until the CQE.
            await _write_all(fd, buffer.getbuffer())
            return count

        return await _with_fd(self, _WRITE_FLAGS, body)

    # -- open ------------------------------------------------------------------------------

    @overload  # type: ignore[override]
    async def open(
        self,
        mode: OpenTextMode = "r",
        buffering: int = -1,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
    ) -> AsyncFile[str]: ...

    @overload
    async def open(
        self,
        mode: OpenBinaryMode,
        buffering: int = -1,
        encoding: None = None,
        errors: None = None,
        newline: None = None,
    ) -> AsyncFile[bytes]: ...

    @overload
    async def open(
        self,
        mode: str,
        buffering: int = -1,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
    ) -> AsyncFile[Any]: ...

    async def open(
        self,
        mode: str = "r",
        buffering: int = -1,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
    ) -> AsyncFile[Any]:
        """Like :meth:`pathlib.Path.open`: ``await ouring.open_file(self, ...)``,
        a file whose I/O goes through the ring."""
        from ._files import open_file  # lazily: _files may import this module

        if "b" not in mode:
            encoding = io.text_encoding(encoding)
        return await open_file(self, mode, buffering, encoding, errors, newline)


def _nothing() -> None:
    pass


# The methods that stay pathlib's, in a worker thread: trio.Path's wrappers
# call trio.to_thread, which needs a trio run; these call _sync.to_thread,
# the same thread under trio and the loop's default executor under asyncio,
# and wrap results as trio's do (paths as this class; iterables listed in the
# thread). Each name is trio.Path's and keeps its docstring.
_RETURN_PATH = frozenset({"absolute", "expanduser", "readlink", "resolve"})
_RETURN_PATHS = frozenset({"glob", "iterdir", "rglob"})
_IN_THREAD = (
    _RETURN_PATH
    | _RETURN_PATHS
    | {
        "chmod",
        "full_match",
        "group",
        "is_block_device",
        "is_char_device",
        "is_dir",
        "is_fifo",
        "is_file",
        "is_junction",
        "is_mount",
        "is_socket",
        "is_symlink",
        "lchmod",
        "link_to",
        "owner",
        "touch",
    }
)


def _in_thread(name: str) -> Callable[..., Awaitable[Any]]:
    method = getattr(pathlib.Path, name)

    def call(path: Path, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        result = method(path._wrapped_cls(path), *args, **kwargs)
        if name in _RETURN_PATHS:
            return [*result]
        return result

    async def wrapper(self: Path, *args: Any, **kwargs: Any) -> Any:
        result = await _sync.to_thread(call, self, args, kwargs)
        if name in _RETURN_PATH:
            return type(self)(result)
        if name in _RETURN_PATHS:
            return map(type(self), result)
        return result

    wrapper.__name__ = name
    wrapper.__qualname__ = f"Path.{name}"
    wrapper.__doc__ = getattr(trio.Path, name).__doc__
    return wrapper


def _class_in_thread(name: str) -> classmethod[Path, [], Awaitable[Path]]:
    method = getattr(pathlib.Path, name)

    async def wrapper(cls: type[Path]) -> Path:
        return cls(await _sync.to_thread(method))

    wrapper.__name__ = name
    wrapper.__qualname__ = f"Path.{name}"
    wrapper.__doc__ = getattr(trio.Path, name).__doc__
    return classmethod(wrapper)


for _name in sorted(_IN_THREAD):
    if hasattr(trio.Path, _name):  # trio wraps what this Python's pathlib has
        setattr(Path, _name, _in_thread(_name))
for _name in ("cwd", "home"):
    setattr(Path, _name, _class_in_thread(_name))
del _name
