"""Bad input, table-driven, across every callable in ``ouring.__all__``.

Each row is ``bad(name, call, raises, errno)``: ``call(env)`` makes one bad
call through ``env.api``, which is the ``ouring`` module or, for names the
Ring also has, a ring (``test_every_row_through_a_ring``). The test asserts
the exact exception type (and errno), and that no fd, buffer lease, or
operation is left behind. Adding a function means adding rows here;
``test_every_public_callable_has_rows`` fails until it has some.
tests/test_ops.py keeps the per-operation table in depth; this one is the
cross-cutting sweep."""

from __future__ import annotations

import errno
import inspect
import io
import os
import socket
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

import ouring
import ouring.trio
from ouring.trio import SocketListener, SocketStream

from ._helpers import fd_count, is_lent


@dataclass
class Env:
    api: Any  # the ouring module, or a ring (see RingApi)
    r: int  # a pipe's read end
    w: int  # its write end
    sock: socket.socket  # one end of a socketpair
    tcp: socket.socket  # unconnected TCP socket
    file_fd: int  # a regular file, read-write
    dead: socket.socket  # a closed socket object
    closed: int  # an fd number that is closed
    dir: Path
    buf: bytearray
    ro: bytes  # a read-only buffer


HUGE = 1 << 64
M: Any = ouring  # wrong types are passed on purpose
MT: Any = ouring.trio
NUL = "bad\0path"

Row = Any


def bad(
    name: str,
    call: Callable[[Env], Any],
    raises: type[BaseException],
    code: int | None = None,
    *,
    id: str,  # noqa: A002 - pytest.param's name
) -> Row:
    return pytest.param(name, call, raises, code, id=f"{name}-{id}")


# fmt: off
ROWS: list[Row] = [
    # read / write / readv / writev / recv / send
    bad("read", lambda e: e.api.read(e.r, e.ro), TypeError, id="read-only-buffer"),
    bad("read", lambda e: e.api.read(e.r, None), TypeError, id="none-buffer"),
    bad("read", lambda e: e.api.read(None, e.buf), TypeError, id="none-fd"),
    bad("read", lambda e: e.api.read(e.r, e.buf, -5), ValueError, id="negative-offset"),
    bad("read", lambda e: e.api.read(e.r, e.buf, HUGE), OverflowError, id="huge-offset"),
    bad("read", lambda e: e.api.read(HUGE, e.buf), OSError, errno.EBADF, id="huge-fd"),
    bad("read", lambda e: e.api.read(e.closed, e.buf), OSError, errno.EBADF, id="closed-fd"),
    bad("write", lambda e: e.api.write(e.w, None), TypeError, id="none-buffer"),
    # read_fixed / write_fixed / BufferPool (tests/test_pool.py has the rest)
    bad("read_fixed", lambda e: e.api.read_fixed(e.r, e.buf), TypeError, id="not-a-pool-buffer"),
    bad("read_fixed", lambda e: e.api.read_fixed(None, _pool_buffer()), TypeError, id="none-fd"),
    bad("read_fixed", lambda e: e.api.read_fixed(e.r, _pool_buffer(), -5), ValueError,
        id="negative-offset"),
    bad("read_fixed", lambda e: e.api.read_fixed(e.closed, _pool_buffer()), OSError,
        errno.EBADF, id="closed-fd"),
    bad("read_fixed", lambda e: e.api.read_fixed(e.r, _released_pool_buffer()), BufferError,
        id="released-buffer"),
    bad("write_fixed", lambda e: e.api.write_fixed(e.w, e.ro), TypeError, id="not-a-pool-buffer"),
    bad("write_fixed", lambda e: e.api.write_fixed(e.w, _pool_buffer(), -2), ValueError,
        id="negative-offset"),
    bad("read_many", lambda e: e.api.read_many([(e.file_fd, _pool_buffer(), -1)]), ValueError,
        id="pool-buffer-at-minus-one"),
    bad("BufferPool", lambda e: M.BufferPool(0, 4096), ValueError, id="zero-count"),
    bad("BufferPool", lambda e: M.BufferPool(1, "4096"), TypeError, id="str-size"),
    bad("BufferPool", lambda e: M.BufferPool(1, 1 << 31), ValueError, id="over-1-gib"),
    bad("write", lambda e: e.api.write(e.w, e.buf, -2), ValueError, id="negative-offset"),
    bad("write", lambda e: e.api.write(e.r, e.buf), OSError, errno.EBADF, id="read-end"),
    bad("read_many", lambda e: e.api.read_many([(e.r, e.buf, 0), (e.r, e.ro, 0)]), TypeError,
        id="read-only-buffer"),
    bad("read_many", lambda e: e.api.read_many([(e.r, e.buf, -1)]), ValueError,
        id="file-position"),
    bad("read_many", lambda e: e.api.read_many([(e.r, e.buf)]), TypeError, id="pair"),
    bad("read_many", lambda e: e.api.read_many(None), TypeError, id="none"),
    bad("read_many", lambda e: e.api.read_many([(e.file_fd, e.buf, 0), (e.file_fd, e.buf, 8)]),
        ouring.BufferInUseError, id="same-buffer-twice"),
    bad("read_many", lambda e: e.api.read_many([(e.closed, e.buf, 0)]), OSError, errno.EBADF,
        id="closed-fd"),
    bad("readv", lambda e: e.api.readv(e.r, [e.buf, e.ro]), TypeError, id="read-only-buffer"),
    bad("readv", lambda e: e.api.readv(e.r, None), TypeError, id="none"),
    bad("readv", lambda e: e.api.readv(e.r, [e.buf, e.buf]), ouring.BufferInUseError,
        id="same-buffer-twice"),
    bad("writev", lambda e: e.api.writev(e.w, [None]), TypeError, id="none-buffer"),
    bad("writev", lambda e: e.api.writev(e.w, [e.ro], -3), ValueError, id="negative-offset"),
    bad("recv", lambda e: e.api.recv(e.sock, e.ro), TypeError, id="read-only-buffer"),
    bad("recv", lambda e: e.api.recv(e.r, e.buf), OSError, errno.ENOTSOCK, id="pipe"),
    bad("recv", lambda e: e.api.recv(e.dead, e.buf), OSError, errno.EBADF, id="closed-socket"),
    bad("recv", lambda e: e.api.recv(e.sock, e.buf, HUGE), ValueError, id="huge-flags"),
    bad("send", lambda e: e.api.send(e.w, e.buf), OSError, errno.ENOTSOCK, id="pipe"),
    bad("send", lambda e: e.api.send(e.sock, None), TypeError, id="none-buffer"),
    bad("send", lambda e: e.api.send(e.sock, e.buf, -1), ValueError, id="negative-flags"),
    bad("send_zc", lambda e: e.api.send_zc(e.w, e.buf), OSError, errno.ENOTSOCK, id="pipe"),
    bad("send_zc", lambda e: e.api.send_zc(e.tcp, None), TypeError, id="none-buffer"),
    bad("send_zc", lambda e: e.api.send_zc(e.tcp, e.buf, -1), ValueError, id="negative-flags"),
    bad("send_zc", lambda e: e.api.send_zc(e.dead, e.buf), OSError, errno.EBADF,
        id="closed-socket"),
    bad("recvmsg", lambda e: e.api.recvmsg(e.sock, [e.buf, e.ro]), TypeError,
        id="read-only-buffer"),
    bad("recvmsg", lambda e: e.api.recvmsg(e.sock, None), TypeError, id="none"),
    bad("recvmsg", lambda e: e.api.recvmsg(e.sock, e.buf), TypeError, id="bare-bytearray"),
    bad("recvmsg", lambda e: e.api.recvmsg(e.sock, [e.buf, e.buf]), ouring.BufferInUseError,
        id="same-buffer-twice"),
    bad("recvmsg", lambda e: e.api.recvmsg(e.sock, [bytearray(1)] * 1025), OSError,
        errno.EMSGSIZE, id="1025-buffers"),
    bad("recvmsg", lambda e: e.api.recvmsg(e.sock, [e.buf], -1), ValueError,
        id="negative-ancbufsize"),
    bad("recvmsg", lambda e: e.api.recvmsg(e.sock, [e.buf], HUGE), ValueError,
        id="huge-ancbufsize"),
    bad("recvmsg", lambda e: e.api.recvmsg(e.sock, [e.buf], 1.0), TypeError,
        id="float-ancbufsize"),
    bad("recvmsg", lambda e: e.api.recvmsg(e.sock, [e.buf], 0, -1), ValueError,
        id="negative-flags"),
    bad("recvmsg", lambda e: e.api.recvmsg(e.r, [e.buf]), OSError, errno.ENOTSOCK, id="pipe"),
    bad("recvmsg", lambda e: e.api.recvmsg(e.dead, [e.buf]), OSError, errno.EBADF,
        id="closed-socket"),
    bad("recvmsg", lambda e: e.api.recvmsg(e.closed, [e.buf]), OSError, errno.EBADF,
        id="closed-fd"),
    bad("recvmsg", lambda e: e.api.recvmsg(e.tcp, [e.buf]), OSError, errno.ENOTCONN,
        id="unconnected"),
    bad("sendmsg", lambda e: e.api.sendmsg(e.sock, None), TypeError, id="none"),
    bad("sendmsg", lambda e: e.api.sendmsg(e.sock, [e.buf, None]), TypeError,
        id="none-buffer"),
    bad("sendmsg", lambda e: e.api.sendmsg(e.sock, [e.buf] * 1025), OSError, errno.EMSGSIZE,
        id="1025-buffers"),
    bad("sendmsg", lambda e: e.api.sendmsg(e.sock, [e.buf], 5), TypeError, id="int-ancdata"),
    bad("sendmsg", lambda e: e.api.sendmsg(e.sock, [e.buf], [(1, 2)]), TypeError,
        id="ancdata-pair"),
    bad("sendmsg", lambda e: e.api.sendmsg(e.sock, [e.buf], [(1, 2, 3)]), TypeError,
        id="ancdata-int-data"),
    bad("sendmsg", lambda e: e.api.sendmsg(e.sock, [e.buf], [("1", 2, b"")]), TypeError,
        id="ancdata-str-level"),
    bad("sendmsg", lambda e: e.api.sendmsg(e.sock, [e.buf], [(HUGE, 2, b"")]), OverflowError,
        id="ancdata-huge-level"),
    bad("sendmsg", lambda e: e.api.sendmsg(e.sock, [e.buf], (), 1 << 32), ValueError,
        id="huge-flags"),
    bad("sendmsg", lambda e: e.api.sendmsg(e.tcp, [e.buf], (), 0, "127.0.0.1:80"), TypeError,
        id="str-address"),
    bad("sendmsg", lambda e: e.api.sendmsg(e.tcp, [e.buf], (), 0, ("127.0.0.1", HUGE)),
        OverflowError, id="huge-port"),
    bad("sendmsg", lambda e: e.api.sendmsg(e.w, [e.buf]), OSError, errno.ENOTSOCK, id="pipe"),
    bad("sendmsg", lambda e: e.api.sendmsg(e.dead, [e.buf]), OSError, errno.EBADF,
        id="closed-socket"),
    bad("sendmsg", lambda e: e.api.sendmsg(e.tcp, [e.buf]), BrokenPipeError, errno.EPIPE,
        id="unconnected"),
    # sockets
    bad("accept", lambda e: e.api.accept(e.r), OSError, errno.ENOTSOCK, id="pipe"),
    bad("accept", lambda e: e.api.accept(None), TypeError, id="none"),
    bad("accept", lambda e: e.api.accept(e.tcp), OSError, errno.EINVAL, id="not-listening"),
    bad("connect", lambda e: e.api.connect(e.tcp, None), TypeError, id="none-address"),
    bad("connect", lambda e: e.api.connect(e.r, ("127.0.0.1", 1)), OSError, errno.ENOTSOCK,
        id="pipe"),
    bad("connect", lambda e: e.api.connect(e.tcp, ("127.0.0.1", HUGE)), OverflowError,
        id="huge-port"),
    bad("shutdown", lambda e: e.api.shutdown(e.sock, 7), ValueError, id="bad-how"),
    bad("shutdown", lambda e: e.api.shutdown(e.sock, None), TypeError, id="none-how"),
    bad("shutdown", lambda e: e.api.shutdown(e.r, socket.SHUT_RD), OSError, errno.ENOTSOCK,
        id="pipe"),
    bad("shutdown", lambda e: e.api.shutdown(e.closed, socket.SHUT_RD), OSError, errno.EBADF,
        id="closed-fd"),
    bad("shutdown", lambda e: e.api.shutdown(e.tcp, socket.SHUT_RD), OSError, errno.ENOTCONN,
        id="unconnected"),
    # fds and files
    bad("open", lambda e: e.api.open(None), TypeError, id="none"),
    bad("open", lambda e: e.api.open(NUL), ValueError, id="nul"),
    bad("open", lambda e: e.api.open(e.dir / "missing"), FileNotFoundError, errno.ENOENT,
        id="missing"),
    bad("open", lambda e: e.api.open(e.dir, os.O_WRONLY), IsADirectoryError, errno.EISDIR,
        id="dir-for-writing"),
    bad("open", lambda e: e.api.open("x", HUGE), ValueError, id="huge-flags"),
    bad("close", lambda e: e.api.close(None), TypeError, id="none"),
    bad("close", lambda e: e.api.close(-1), OSError, errno.EBADF, id="negative"),
    bad("close", lambda e: e.api.close(e.closed), OSError, errno.EBADF, id="closed-fd"),
    bad("fsync", lambda e: e.api.fsync(None), TypeError, id="none"),
    bad("fsync", lambda e: e.api.fsync(e.closed), OSError, errno.EBADF, id="closed-fd"),
    bad("splice", lambda e: e.api.splice(None, 0, e.w, -1, 1), TypeError, id="none"),
    bad("splice", lambda e: e.api.splice(e.file_fd, -2, e.w, -1, 1), ValueError,
        id="negative-offset"),
    bad("splice", lambda e: e.api.splice(e.file_fd, 0, e.w, -1, -1), ValueError,
        id="negative-nbytes"),
    bad("splice", lambda e: e.api.splice(e.file_fd, 0, e.w, -1, 1, 1 << 20), ValueError,
        id="bad-flags"),
    bad("splice", lambda e: e.api.splice(e.closed, 0, e.w, -1, 1), OSError, errno.EBADF,
        id="closed-fd"),
    bad("splice", lambda e: e.api.splice(e.file_fd, 0, e.w, 3, 1), OSError, errno.ESPIPE,
        id="offset-on-a-pipe"),
    bad("sendfile", lambda e: e.api.sendfile(e.file_fd, e.file_fd), TypeError,
        id="not-a-socket"),
    bad("sendfile", lambda e: e.api.sendfile(e.sock, None), TypeError, id="none-file"),
    bad("sendfile", lambda e: e.api.sendfile(e.sock, e.file_fd, -1), ValueError,
        id="negative-offset"),
    bad("sendfile", lambda e: e.api.sendfile(e.sock, e.file_fd, 0, -1), ValueError,
        id="negative-count"),
    bad("sendfile", lambda e: e.api.sendfile(e.dead, e.file_fd), OSError, errno.EBADF,
        id="closed-socket"),
    bad("sendfile", lambda e: e.api.sendfile(e.sock, e.closed, 0, 10), OSError, errno.EBADF,
        id="closed-file"),
    bad("stat", lambda e: e.api.stat(None), TypeError, id="none"),
    bad("stat", lambda e: e.api.stat(e.dir / "missing"), FileNotFoundError, errno.ENOENT,
        id="missing"),
    bad("fallocate", lambda e: e.api.fallocate(e.file_fd, -1, 10), ValueError,
        id="negative-offset"),
    bad("fallocate", lambda e: e.api.fallocate(e.file_fd, 0, -1), ValueError,
        id="negative-length"),
    bad("fallocate", lambda e: e.api.fallocate(e.file_fd, 0, 0), ValueError, id="zero-length"),
    bad("fallocate", lambda e: e.api.fallocate(e.file_fd, HUGE, 1), OverflowError, id="huge"),
    bad("fallocate", lambda e: e.api.fallocate(None, 0, 1), TypeError, id="none-fd"),
    bad("fallocate", lambda e: e.api.fallocate(e.w, 0, 1), OSError, errno.ESPIPE, id="pipe"),
    bad("fadvise", lambda e: e.api.fadvise(e.file_fd, -1, 1, os.POSIX_FADV_NORMAL), ValueError,
        id="negative-offset"),
    bad("fadvise", lambda e: e.api.fadvise(e.file_fd, 0, 1, -1), ValueError,
        id="negative-advice"),
    bad("fadvise", lambda e: e.api.fadvise(e.closed, 0, 1, os.POSIX_FADV_NORMAL), OSError,
        errno.EBADF, id="closed-fd"),
    bad("ftruncate", lambda e: e.api.ftruncate(e.file_fd, -1), ValueError, id="negative"),
    bad("ftruncate", lambda e: e.api.ftruncate(e.file_fd, None), TypeError, id="none-length"),
    bad("ftruncate", lambda e: e.api.ftruncate(e.file_fd, HUGE), OverflowError, id="huge"),
    bad("ftruncate", lambda e: e.api.ftruncate(e.closed, 0), OSError, errno.EBADF,
        id="closed-fd"),
    # paths
    bad("unlink", lambda e: e.api.unlink(None), TypeError, id="none"),
    bad("unlink", lambda e: e.api.unlink(NUL), ValueError, id="nul"),
    bad("unlink", lambda e: e.api.unlink(e.dir / "missing"), FileNotFoundError, errno.ENOENT,
        id="missing"),
    bad("unlink", lambda e: e.api.unlink(e.dir), IsADirectoryError, errno.EISDIR, id="dir"),
    bad("unlink", lambda e: e.api.unlink("x", dir_fd=e.closed), OSError, errno.EBADF,
        id="closed-dir-fd"),
    bad("rmdir", lambda e: e.api.rmdir(e.dir / "file"), NotADirectoryError, errno.ENOTDIR,
        id="file"),
    bad("rmdir", lambda e: e.api.rmdir(None), TypeError, id="none"),
    bad("mkdir", lambda e: e.api.mkdir(e.dir), FileExistsError, errno.EEXIST, id="exists"),
    bad("mkdir", lambda e: e.api.mkdir(e.dir / "new", -1), ValueError, id="negative-mode"),
    bad("mkdir", lambda e: e.api.mkdir(NUL), ValueError, id="nul"),
    bad("rename", lambda e: e.api.rename(e.dir / "missing", e.dir / "b"), FileNotFoundError,
        errno.ENOENT, id="missing"),
    bad("rename", lambda e: e.api.rename(None, "b"), TypeError, id="none"),
    bad("rename", lambda e: e.api.rename("a", NUL), ValueError, id="nul"),
    bad("symlink", lambda e: e.api.symlink("target", e.dir / "file"), FileExistsError,
        errno.EEXIST, id="exists"),
    bad("symlink", lambda e: e.api.symlink(None, "x"), TypeError, id="none"),
    bad("link", lambda e: e.api.link(e.dir / "missing", e.dir / "l"), FileNotFoundError,
        errno.ENOENT, id="missing"),
    bad("link", lambda e: e.api.link(e.dir / "file", e.dir / "file"), FileExistsError,
        errno.EEXIST, id="exists"),
    # the ring itself
    bad("Ring", lambda e: M.Ring(-1), ValueError, id="negative-entries"),
    bad("Ring", lambda e: M.Ring(None), TypeError, id="none-entries"),
    bad("Ring", lambda e: M.Ring(HUGE), ValueError, id="huge-entries"),
    bad("Ring", lambda e: M.Ring(8, teardown_timeout=-1), ValueError, id="negative-timeout"),
    bad("open_ring", lambda e: M.open_ring(0).__aenter__(), ValueError, id="zero-entries"),
    bad("open_ring", lambda e: M.open_ring(8, cq_entries=4).__aenter__(), ValueError,
        id="cq-smaller-than-sq"),
    bad("current_ring", lambda e: M.current_ring(1), TypeError, id="an-argument"),
    bad("wait_all_ops_completed", lambda e: M.wait_all_ops_completed(3), AttributeError,
        id="not-a-ring"),
    bad("RingStatistics", lambda e: M.RingStatistics(), TypeError, id="no-fields"),
    bad("Path", lambda e: M.Path(None), TypeError, id="none"),
    bad("open_file", lambda e: M.open_file(e.dir / "missing"), FileNotFoundError,
        errno.ENOENT, id="missing"),
    bad("open_file", lambda e: M.open_file(e.dir / "file", "rz"), ValueError,
        id="bad-mode"),
    bad("open_file", lambda e: M.open_file(None), TypeError, id="none"),
]
# fmt: on

# The files-and-streams objects: constructors and methods. Each helper makes
# the object, makes the one bad call, and closes the object (even when the
# call raised), so "nothing left behind" covers the object's own fd too.


async def _on_file(e: Env, call: Callable[[Any], Any], mode: str = "rb+", **kw: Any) -> Any:
    async with await ouring.open_file(e.dir / "file", mode, **kw) as f:
        return await call(f)


async def _read_detached(f: Any) -> Any:
    raw = await f.detach()
    try:
        return await f.read()
    finally:
        await raw.aclose()  # the fd is the raw file's now (f's aclose raises, as the builtin's)


async def _on_stream(e: Env, call: Callable[[Any], Any]) -> Any:
    a, b = socket.socketpair()
    with b:
        async with SocketStream(a) as stream:
            return await call(stream)


async def _on_socket(e: Env, call: Callable[[Any], Any]) -> Any:
    a, b = socket.socketpair()
    with b, MT.UringSocket(a) as sock:
        return await call(sock)


async def _on_listener(call: Callable[[Any], Any]) -> Any:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    async with SocketListener(sock) as listener:
        return await call(listener)


async def _receive_into_empty(stream: Any, e: Env) -> Any:
    """An empty view of e.buf, released after the call: if the refused call
    kept an export of it, releasing it raises BufferError instead."""
    with memoryview(e.buf) as whole, whole[:0] as empty:
        return await stream.receive_into(empty)


def _datagram(make: Callable[[socket.socket], Any]) -> Any:
    with socket.socket(type=socket.SOCK_DGRAM) as sock:
        return make(sock)


async def _serve(**kw: Any) -> None:
    async def handler(stream: Any) -> None:
        pass

    await ouring.trio.serve_tcp(handler, **kw)


# fmt: off
OBJECT_ROWS: list[Row] = [
    bad("open_file", lambda e: M.open_file(e.dir / "file", "rb", buffering=0, encoding="x"),
        ValueError, id="binary-with-encoding"),
    bad("open_file", lambda e: M.open_file(e.dir / "file", "w", buffering=0), ValueError,
        id="unbuffered-text"),
    bad("open_file", lambda e: M.open_file(e.dir / "file", 3), TypeError, id="int-mode"),
    bad("open_file", lambda e: M.open_file(-1), ValueError, id="negative-fd"),
    bad("open_file", lambda e: M.open_file(e.dir, "rb"), IsADirectoryError, errno.EISDIR,
        id="directory"),
    bad("open_file", lambda e: M.open_file(e.dir / "file", closefd=False), ValueError,
        id="closefd-false-with-name"),
    bad("open_file", lambda e: M.open_file(NUL), ValueError, id="nul"),
    bad("AsyncFile", lambda e: _on_file(e, lambda f: f.read_at(e.buf, -1)), ValueError,
        id="read_at-negative-offset"),
    bad("AsyncFile", lambda e: _on_file(e, lambda f: f.read_at(e.ro, 0)), TypeError,
        id="read_at-read-only-buffer"),
    bad("AsyncFile", lambda e: _on_file(e, lambda f: f.read_into(e.ro)), TypeError,
        id="read_into-read-only-buffer"),
    bad("AsyncFile", lambda e: _on_file(e, lambda f: f.write_from(None)), TypeError,
        id="write_from-none"),
    bad("AsyncFile", lambda e: _on_file(e, lambda f: f.write_at(e.buf, -1)), ValueError,
        id="write_at-negative-offset"),
    bad("AsyncFile", lambda e: _on_file(e, lambda f: f.write("text")), TypeError,
        id="write-str-to-binary"),
    bad("AsyncFile", lambda e: _on_file(e, lambda f: f.seek(-1)), OSError, errno.EINVAL,
        id="seek-negative"),
    bad("AsyncFile", lambda e: _on_file(e, lambda f: f.write(b"x"), "rb"),
        io.UnsupportedOperation, id="write-read-only-file"),
    bad("AsyncFile", lambda e: _on_file(e, lambda f: f.read_into(e.buf), "r"),
        io.UnsupportedOperation, id="read_into-text-file"),
    bad("AsyncFile", lambda e: _on_file(e, lambda f: f.peek("x")), TypeError, id="peek-str"),
    bad("AsyncFile", lambda e: _on_file(e, lambda f: f.peek(), "wb"), AttributeError,
        id="peek-write-only"),
    bad("AsyncFile", lambda e: _on_file(e, lambda f: f.readinto1(e.ro)), TypeError,
        id="readinto1-read-only"),
    bad("AsyncFile", lambda e: _on_file(e, lambda f: f.readinto1(e.buf), "wb"),
        io.UnsupportedOperation, id="readinto1-write-only"),
    bad("AsyncFile", lambda e: _on_file(e, lambda f: f.readall(), "wb", buffering=0),
        OSError, errno.EBADF, id="readall-write-only"),
    bad("AsyncFile", lambda e: _on_file(e, lambda f: f.read1(), "r"), AttributeError,
        id="read1-text-file"),
    bad("AsyncFile", lambda e: _on_file(e, lambda f: f.encoding), AttributeError,
        id="encoding-binary-file"),
    bad("AsyncFile", lambda e: _on_file(e, lambda f: f.detach(), buffering=0),
        AttributeError, id="detach-unbuffered"),
    bad("AsyncFile", lambda e: _on_file(e, _read_detached), ValueError, id="read-detached"),
    bad("Path", lambda e: M.Path(e.dir / "missing").read_bytes(), FileNotFoundError,
        errno.ENOENT, id="read_bytes-missing"),
    bad("Path", lambda e: M.Path(e.dir).read_bytes(), IsADirectoryError, errno.EISDIR,
        id="read_bytes-directory"),
    bad("Path", lambda e: M.Path(e.dir / "new").write_bytes("str"), TypeError,
        id="write_bytes-str"),
    bad("Path", lambda e: M.Path(e.dir / "new").write_text(b"bytes"), TypeError,
        id="write_text-bytes"),
    bad("Path", lambda e: M.Path(e.dir / "file").open("rz"), ValueError, id="open-bad-mode"),
    bad("Path", lambda e: M.Path(e.dir / "file").mkdir(), FileExistsError, errno.EEXIST,
        id="mkdir-exists"),
    bad("SocketStream", lambda e: MT.SocketStream(None), TypeError, id="none"),
    bad("SocketStream", lambda e: MT.SocketStream(e.r), TypeError, id="an-int-fd"),
    bad("SocketStream", lambda e: _datagram(SocketStream), ValueError, id="datagram"),
    bad("SocketListener", lambda e: _datagram(SocketListener), ValueError, id="datagram"),
    bad("SocketStream", lambda e: _on_stream(e, lambda s: s.receive_some(0)), ValueError,
        id="receive_some-zero"),
    bad("SocketStream", lambda e: _on_stream(e, lambda s: s.receive_some("x")), TypeError,
        id="receive_some-str"),
    bad("SocketStream", lambda e: _on_stream(e, lambda s: s.receive_into(e.ro)), TypeError,
        id="receive_into-read-only"),
    bad("SocketStream", lambda e: _on_stream(e, lambda s: _receive_into_empty(s, e)),
        ValueError, id="receive_into-empty"),
    bad("SocketStream", lambda e: _on_stream(e, lambda s: s.send_all(None)), TypeError,
        id="send_all-none"),
    bad("SocketListener", lambda e: MT.SocketListener(e.sock), ValueError, id="not-listening"),
    bad("UringSocket", lambda e: MT.UringSocket(None), TypeError, id="none"),
    bad("UringSocket", lambda e: MT.UringSocket(e.r), TypeError, id="an-int-fd"),
    bad("UringSocket", lambda e: _on_socket(e, lambda s: s.recv(-1)), ValueError,
        id="recv-negative"),
    bad("UringSocket", lambda e: _on_socket(e, lambda s: s.recv("x")), TypeError,
        id="recv-str"),
    bad("UringSocket", lambda e: _on_socket(e, lambda s: s.recv_into(e.ro)), TypeError,
        id="recv_into-read-only"),
    bad("UringSocket", lambda e: _on_socket(e, lambda s: s.recv_into(e.buf, len(e.buf) + 1)),
        ValueError, id="recv_into-too-many"),
    bad("UringSocket", lambda e: _on_socket(e, lambda s: s.receive_into(e.ro)), TypeError,
        id="receive_into-read-only"),
    bad("UringSocket", lambda e: _on_socket(e, lambda s: _receive_into_empty(s, e)),
        ValueError, id="receive_into-empty"),
    bad("UringSocket", lambda e: _on_socket(e, lambda s: s.send(None)), TypeError,
        id="send-none"),
    bad("UringSocket", lambda e: _on_socket(e, lambda s: s.connect(("::1", 1))),
        TypeError, id="connect-unix-to-a-tuple"),
    bad("SocketFactory", lambda e: MT.SocketFactory().socket(12345), OSError,
        errno.EAFNOSUPPORT, id="bad-family"),
    bad("SocketListener", lambda e: MT.SocketListener(None), TypeError, id="none"),
    bad("open_tcp_stream", lambda e: MT.open_tcp_stream("127.0.0.1", "80"),
        TypeError, id="str-port"),
    bad("open_tcp_stream", lambda e: MT.open_tcp_stream(None, 80), ValueError,
        id="none-host"),
    bad("open_tcp_listeners", lambda e: MT.open_tcp_listeners("0"), TypeError,
        id="str-port"),
    bad("open_tcp_listeners", lambda e: MT.open_tcp_listeners(0, backlog="x"),
        TypeError, id="str-backlog"),
    bad("serve_tcp", lambda e: _serve(port="0"), TypeError, id="str-port"),
    bad("open_unix_socket", lambda e: MT.open_unix_socket(e.dir / "missing"),
        FileNotFoundError, errno.ENOENT, id="missing"),
    bad("open_unix_socket", lambda e: MT.open_unix_socket(None), TypeError,
        id="none"),
]
# fmt: on


def _pool_buffer() -> Any:
    """A buffer of a new pool (registered with the current ring if it can)."""
    return M.BufferPool(1, 64).get()


def _released_pool_buffer() -> Any:
    buf = _pool_buffer()
    buf.release()
    return buf


# Public callables that take no input worth a row, and why.
NO_ROWS = {
    "BufferInUseError": "an exception class",
    "PoolExhaustedError": "an exception class",
    "PoolBuffer": "no constructor: BufferPool.get() makes them (tests/test_pool.py: misuse)",
    "RingClosedError": "an exception class",
    "UnsupportedError": "an exception class",
    "install": "takes no arguments (tests/test_trio_socket.py tests it)",
}

# Module functions whose Ring method has another name.
RING_NAMES = {"close": "close_fd"}


class RingApi:
    """``env.api`` for the ring variant: module names mapped to Ring methods."""

    def __init__(self, ring: ouring.Ring) -> None:
        self._ring = ring

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ring, RING_NAMES.get(name, name))


def row_names() -> set[str]:
    return {p.values[0] for p in ROWS + OBJECT_ROWS}


@pytest.mark.parametrize("module", [ouring, ouring.trio], ids=["ouring", "ouring.trio"])
def test_every_public_callable_has_rows(module: Any) -> None:
    public = {n for n in module.__all__ if callable(getattr(module, n))}
    missing = public - row_names() - set(NO_ROWS)
    assert not missing, f"add bad-input rows for {sorted(missing)} to {__name__}.ROWS"


@pytest.fixture
def env(pipe: tuple[int, int], tmp_path: Path) -> Iterator[Env]:
    (tmp_path / "file").write_bytes(b"data")
    with ExitStack() as stack:
        a, b = socket.socketpair()
        for s in (a, b):
            stack.enter_context(s)
        dead = socket.socket()
        dead.close()
        file_fd = os.open(tmp_path / "file", os.O_RDWR)
        stack.callback(os.close, file_fd)
        yield Env(
            api=ouring,
            r=pipe[0],
            w=pipe[1],
            sock=a,
            tcp=stack.enter_context(socket.socket()),
            file_fd=file_fd,
            dead=dead,
            closed=-1,
            dir=tmp_path,
            buf=bytearray(b"buffer"),
            ro=b"read-only",
        )


async def check(
    env: Env,
    ring: ouring.Ring,
    call: Callable[[Env], Any],
    raises: type[BaseException],
    code: int | None,
) -> None:
    env.closed = os.dup(env.r)
    os.close(env.closed)
    before = fd_count()
    listing = sorted(p.name for p in env.dir.iterdir())
    with pytest.raises(BaseException) as info, anyio.fail_after(5):  # noqa: PT011, PT012
        result = call(env)  # the bad call: raises here, or when awaited
        if inspect.isawaitable(result):
            await result
    assert type(info.value) is raises, f"{type(info.value).__name__}: {info.value}"
    if code is not None:
        assert isinstance(info.value, OSError)
        assert info.value.errno == code
    stats = ring.statistics()
    assert (stats.inflight, stats.pending) == (0, 0)
    assert fd_count() == before
    assert sorted(p.name for p in env.dir.iterdir()) == listing
    assert not is_lent(env.buf)  # no export left
    os.write(env.w, b"ok")  # no table entry left either: it can be lent again
    buf, n = await ouring.read(env.r, env.buf)
    assert bytes(buf[:n]) == b"ok"


# The socket objects of ouring.trio (trio's socket and stream interfaces over
# the ring) exist under trio only; the files and paths layers run under every
# executor.
TRIO_ONLY = {
    "SocketFactory", "SocketListener", "SocketStream", "UringSocket",
    "open_tcp_listeners", "open_tcp_stream", "open_unix_socket", "serve_tcp",
}  # fmt: skip
NEUTRAL_OBJECT_ROWS = [p for p in OBJECT_ROWS if p.values[0] not in TRIO_ONLY]
TRIO_OBJECT_ROWS = [p for p in OBJECT_ROWS if p.values[0] in TRIO_ONLY]


@pytest.mark.parametrize(("name", "call", "raises", "code"), ROWS + NEUTRAL_OBJECT_ROWS)
async def test_bad_input(
    executor: str,
    env: Env,
    name: str,
    call: Callable[[Env], Awaitable[object]],
    raises: type[BaseException],
    code: int | None,
) -> None:
    await check(env, ouring.current_ring(), call, raises, code)


@pytest.mark.parametrize(("name", "call", "raises", "code"), TRIO_OBJECT_ROWS)
async def test_bad_input_to_trio_objects(
    env: Env,
    name: str,
    call: Callable[[Env], Awaitable[object]],
    raises: type[BaseException],
    code: int | None,
) -> None:
    await check(env, ouring.current_ring(), call, raises, code)


@pytest.mark.parametrize(
    ("name", "call", "raises", "code"),
    [p for p in ROWS if hasattr(ouring.Ring, RING_NAMES.get(p.values[0], p.values[0]))],
)
async def test_every_row_through_a_ring(
    executor: str,
    env: Env,
    name: str,
    call: Callable[[Env], Awaitable[object]],
    raises: type[BaseException],
    code: int | None,
) -> None:
    async with ouring.open_ring(8) as ring:
        env.api = RingApi(ring)
        await check(env, ring, call, raises, code)
