"""The syscalls the thread backend runs instead of io_uring, keyed by
operation class in one table (``SYSCALLS``). Loop-neutral: nothing here waits
for an event loop; the thread ring (``_fallback.py``) decides where each
call runs, from the entry's ``run``.

Each call runs on the operation's SQE image (``fd, addr, length, offset,
op_flags``, read as the kernel reads them for that opcode: see ``ouring_prep``
in native/shim.h) and returns what the CQE would hold: the result, or
``-errno``. ctypes calls release the GIL, take plain addresses (the leased
memory the SQE would point at), and report errno per thread.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Final

from ._native import ffi, lib
from ._ops import (
    SUBMITTED,
    Accept,
    Close,
    Connect,
    Fadvise,
    Fallocate,
    Fsync,
    Ftruncate,
    LinkAt,
    MkdirAt,
    Nop,
    OpenAt,
    Operation,
    Read,
    ReadV,
    Recv,
    RecvBytes,
    RecvMsg,
    RenameAt,
    RmdirAt,
    Send,
    SendCount,
    SendMsg,
    Shutdown,
    Splice,
    Statx,
    SymlinkAt,
    UnlinkAt,
    Write,
    WriteV,
    address_of,
)

__all__ = ["EAGAIN", "FILE", "INLINE", "READY", "SPLICE", "SYSCALLS", "THREAD", "Syscall"]

EAGAIN: Final = -errno.EAGAIN
_OFFSET_CURRENT = (1 << 64) - 1  # an SQE offset of -1: the file position

_libc = ctypes.CDLL(None, use_errno=True)
_int, _uint, _ptr = ctypes.c_int, ctypes.c_uint, ctypes.c_void_p
_size, _ssize, _off = ctypes.c_size_t, ctypes.c_ssize_t, ctypes.c_int64


def _c(name: str, restype: Any, *argtypes: Any) -> Any:
    function = getattr(_libc, name)
    function.restype = restype
    function.argtypes = argtypes
    return function


_read = _c("read", _ssize, _int, _ptr, _size)
_pread = _c("pread64", _ssize, _int, _ptr, _size, _off)
_write = _c("write", _ssize, _int, _ptr, _size)
_pwrite = _c("pwrite64", _ssize, _int, _ptr, _size, _off)
_readv = _c("readv", _ssize, _int, _ptr, _int)
_preadv = _c("preadv64", _ssize, _int, _ptr, _int, _off)
_preadv2 = _c("preadv64v2", _ssize, _int, _ptr, _int, _off, _int)
_writev = _c("writev", _ssize, _int, _ptr, _int)
_pwritev = _c("pwritev64", _ssize, _int, _ptr, _int, _off)
_pwritev2 = _c("pwritev64v2", _ssize, _int, _ptr, _int, _off, _int)
_recv = _c("recv", _ssize, _int, _ptr, _size, _int)
_send = _c("send", _ssize, _int, _ptr, _size, _int)
_recvmsg = _c("recvmsg", _ssize, _int, _ptr, _int)
_sendmsg = _c("sendmsg", _ssize, _int, _ptr, _int)
_accept4 = _c("accept4", _int, _int, _ptr, _ptr, _int)
_connect = _c("connect", _int, _int, _ptr, _uint)
_getsockopt = _c("getsockopt", _int, _int, _int, _int, _ptr, _ptr)
_shutdown = _c("shutdown", _int, _int, _int)
_close = _c("close", _int, _int)
_fsync = _c("fsync", _int, _int)
_fdatasync = _c("fdatasync", _int, _int)
_openat = _c("openat", _int, _int, _ptr, _int, _uint)
_statx = _c("statx", _int, _int, _ptr, _int, _uint, _ptr)
_fallocate = _c("fallocate64", _int, _int, _int, _off, _off)
_fadvise = _c("posix_fadvise64", _int, _int, _off, _off, _int)  # returns the errno
_ftruncate = _c("ftruncate64", _int, _int, _off)
_unlinkat = _c("unlinkat", _int, _int, _ptr, _int)
_mkdirat = _c("mkdirat", _int, _int, _ptr, _uint)
_renameat2 = _c("renameat2", _int, _int, _ptr, _int, _ptr, _uint)
_linkat = _c("linkat", _int, _int, _ptr, _int, _ptr, _int)
_symlinkat = _c("symlinkat", _int, _ptr, _int, _ptr)


def _sys(function: Any, *args: Any) -> int:
    """Call, retrying EINTR (a signal, not a cancel: io_uring retries too)."""
    while True:
        res: int = function(*args)
        if res >= 0:
            return res
        code = ctypes.get_errno()
        if code != errno.EINTR:
            return -code


def _offset(op: Operation[Any]) -> int | None:
    return None if op.offset == _OFFSET_CURRENT else op.offset


def _i32(value: int) -> int:
    """A dir fd that travelled in a 32-bit SQE field (AT_FDCWD is negative)."""
    return value - (1 << 32) if value >= 1 << 31 else value


# -- blocking: run in a worker thread ------------------------------------------------------


def _rw_blocking(op: Operation[Any]) -> int:
    """read/write/readv/writev on a regular file, in a worker thread."""
    fd, addr, length, offset = op.fd, op.addr, op.length, _offset(op)
    if isinstance(op, Read):
        return (
            _sys(_read, fd, addr, length)
            if offset is None
            else _sys(_pread, fd, addr, length, offset)
        )
    if isinstance(op, Write):
        return (
            _sys(_write, fd, addr, length)
            if offset is None
            else _sys(_pwrite, fd, addr, length, offset)
        )
    if isinstance(op, ReadV):
        return (
            _sys(_readv, fd, addr, length)
            if offset is None
            else _sys(_preadv, fd, addr, length, offset)
        )
    return (
        _sys(_writev, fd, addr, length)
        if offset is None
        else _sys(_pwritev, fd, addr, length, offset)
    )


def _close_fd(op: Operation[Any]) -> int:
    # Linux closes the fd even when close(2) reports EINTR: never retry it.
    if _close(op.fd) == 0:
        return 0
    code = ctypes.get_errno()
    return 0 if code == errno.EINTR else -code


def _fadvise_op(op: Operation[Any]) -> int:
    length = op.length if op.addr == 0 else op.addr
    return -int(_fadvise(op.fd, op.offset, length, op.op_flags))


# -- non-blocking attempts: in the event loop's thread, between readiness waits ----------


class NonBlocking:
    """``O_NONBLOCK`` on ``fd`` for the duration of one syscall, then the
    caller's mode again; for syscalls with no per-call non-blocking flag."""

    __slots__ = ("fd", "was_blocking")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.was_blocking = False

    def __enter__(self) -> None:
        try:
            self.was_blocking = os.get_blocking(self.fd)
            if self.was_blocking:
                os.set_blocking(self.fd, False)
        except OSError:
            self.was_blocking = False  # a bad fd: the syscall itself reports it

    def __exit__(self, *exc_info: object) -> None:
        if self.was_blocking:
            os.set_blocking(self.fd, True)


def _rw_nowait(op: Operation[Any], out: bool) -> int:
    """One non-blocking read/write on a pipe, socket or tty. Stream files have
    no position: io_uring ignores the offset there, and so does this."""
    if isinstance(op, Read | Write):
        iov = ffi.new("struct iovec *")
        iov.iov_base = ffi.cast("void *", op.addr)
        iov.iov_len = op.length
        iovecs, count = address_of(iov), 1
    else:
        iovecs, count = op.addr, op.length
    vectored = _pwritev2 if out else _preadv2
    res = _sys(vectored, op.fd, iovecs, count, -1, os.RWF_NOWAIT)
    if res == -errno.EOPNOTSUPP:  # no FMODE_NOWAIT (ttys): O_NONBLOCK for this call
        with NonBlocking(op.fd):
            res = _sys(_writev if out else _readv, op.fd, iovecs, count)
    return res


def _accept_nowait(op: Operation[Any]) -> int:
    with NonBlocking(op.fd):
        return _sys(_accept4, op.fd, op.addr, op.offset, op.op_flags)


def _socket_error(fd: int) -> int:
    value = ctypes.c_int(0)
    size = ctypes.c_uint(ctypes.sizeof(value))
    if _getsockopt(fd, socket.SOL_SOCKET, socket.SO_ERROR, ctypes.byref(value), ctypes.byref(size)):
        return -ctypes.get_errno()
    return -value.value


def _connect_attempt(op: Operation[Any]) -> int:
    """A blocking connect would block the loop; with O_NONBLOCK it returns
    EINPROGRESS and the handshake goes on in the kernel whatever the mode.
    Once the socket is writable, SO_ERROR says how the handshake ended (it is
    0 while it is still in progress, so it is only asked after a wait)."""
    if op.state == SUBMITTED and op.res == -errno.EINPROGRESS:
        return _socket_error(op.fd)
    with NonBlocking(op.fd):
        res = _sys(_connect, op.fd, op.addr, op.offset)
    op.res = res  # remembered between attempts (op is not DONE yet)
    return EAGAIN if res == -errno.EINPROGRESS else res


def _recv_nowait(op: Operation[Any]) -> int:
    return _sys(_recv, op.fd, op.addr, op.length, op.op_flags | socket.MSG_DONTWAIT)


def _send_nowait(op: Operation[Any]) -> int:
    # io_uring sends with MSG_NOSIGNAL: a closed peer is EPIPE, never SIGPIPE.
    flags = op.op_flags | socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL
    return _sys(_send, op.fd, op.addr, op.length, flags)


def _recvmsg_nowait(op: Operation[Any]) -> int:
    # op.addr is the operation's msghdr, as in its SQE; the kernel writes the
    # name and control lengths and msg_flags back into it, as io_uring does.
    return _sys(_recvmsg, op.fd, op.addr, op.op_flags | socket.MSG_DONTWAIT)


def _sendmsg_nowait(op: Operation[Any]) -> int:
    flags = op.op_flags | socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL
    return _sys(_sendmsg, op.fd, op.addr, flags)


def _splice_nowait(op: Operation[Any]) -> int:
    """One splice(2) that never waits for a pipe or a socket: SPLICE_F_NONBLOCK
    covers the pipe; a socket end gets O_NONBLOCK for the call (splice sends
    and receives with MSG_DONTWAIT only then)."""
    fd_in, fd_out = op.file_index, op.fd
    off_in = None if op.addr == _OFFSET_CURRENT else op.addr
    off_out = None if op.offset == _OFFSET_CURRENT else op.offset
    with NonBlocking(fd_in), NonBlocking(fd_out):
        while True:
            try:
                return os.splice(
                    fd_in, fd_out, op.length, off_in, off_out, op.op_flags | os.SPLICE_F_NONBLOCK
                )
            except InterruptedError:
                continue
            except OSError as exc:
                return -(exc.errno or errno.EIO)


# -- the table -------------------------------------------------------------------------------

#: ``Syscall.run``: where the thread ring runs the call.
INLINE: Final = "inline"  # never blocks: at once, in the loop's thread
THREAD: Final = "thread"  # may block (the disk, a FIFO's open): a worker thread
READY: Final = "ready"  # a non-blocking attempt, readiness waits in between
FILE: Final = "file"  # THREAD on regular files, block devices, dirs; READY with `nowait` else
SPLICE: Final = "splice"  # READY on the non-file ends, THREAD when an end is a file


@dataclass(frozen=True, slots=True)
class Syscall:
    """How the thread backend performs one operation class."""

    run: str
    #: The syscall on the operation's SQE image: its CQE result or -errno
    #: (EAGAIN from an attempt: not ready, wait and try again).
    call: Callable[[Operation[Any]], int]
    #: READY/FILE: the direction the readiness wait is for.
    out: bool = False
    #: READY: an explicit MSG_DONTWAIT in op_flags gets EAGAIN, not a wait.
    dontwait: bool = False
    #: FILE: the non-blocking attempt on a pipe, socket or tty.
    nowait: Callable[[Operation[Any]], int] | None = None


def _thread(call: Callable[[Operation[Any]], int]) -> Syscall:
    return Syscall(THREAD, call)


SYSCALLS: Final[dict[type[Operation[Any]], Syscall]] = {
    Nop: Syscall(INLINE, lambda op: 0),
    Shutdown: Syscall(INLINE, lambda op: _sys(_shutdown, op.fd, op.length)),
    Recv: Syscall(READY, _recv_nowait, dontwait=True),
    RecvBytes: Syscall(READY, _recv_nowait, dontwait=True),
    RecvMsg: Syscall(READY, _recvmsg_nowait, dontwait=True),
    Send: Syscall(READY, _send_nowait, out=True, dontwait=True),
    SendCount: Syscall(READY, _send_nowait, out=True, dontwait=True),
    SendMsg: Syscall(READY, _sendmsg_nowait, out=True, dontwait=True),
    Accept: Syscall(READY, _accept_nowait),
    Connect: Syscall(READY, _connect_attempt, out=True),
    Splice: Syscall(SPLICE, _splice_nowait),
    Read: Syscall(FILE, _rw_blocking, nowait=partial(_rw_nowait, out=False)),
    ReadV: Syscall(FILE, _rw_blocking, nowait=partial(_rw_nowait, out=False)),
    Write: Syscall(FILE, _rw_blocking, out=True, nowait=partial(_rw_nowait, out=True)),
    WriteV: Syscall(FILE, _rw_blocking, out=True, nowait=partial(_rw_nowait, out=True)),
    OpenAt: _thread(lambda op: _sys(_openat, op.fd, op.addr, op.op_flags, op.length)),
    Close: _thread(_close_fd),
    Fsync: _thread(
        lambda op: _sys(_fdatasync if op.op_flags & lib.IORING_FSYNC_DATASYNC else _fsync, op.fd)
    ),
    Statx: _thread(lambda op: _sys(_statx, op.fd, op.addr, op.op_flags, op.length, op.offset)),
    Fallocate: _thread(lambda op: _sys(_fallocate, op.fd, op.length, op.offset, op.addr)),
    Fadvise: _thread(_fadvise_op),
    Ftruncate: _thread(lambda op: _sys(_ftruncate, op.fd, op.offset)),
    UnlinkAt: _thread(lambda op: _sys(_unlinkat, op.fd, op.addr, op.op_flags)),
    RmdirAt: _thread(lambda op: _sys(_unlinkat, op.fd, op.addr, op.op_flags)),
    MkdirAt: _thread(lambda op: _sys(_mkdirat, op.fd, op.addr, op.length)),
    RenameAt: _thread(
        lambda op: _sys(_renameat2, op.fd, op.addr, _i32(op.length), op.offset, op.op_flags)
    ),
    LinkAt: _thread(
        lambda op: _sys(_linkat, op.fd, op.addr, _i32(op.length), op.offset, op.op_flags)
    ),
    # IORING_OP_SYMLINKAT: addr is the target, addr2 (offset) the new link.
    SymlinkAt: _thread(lambda op: _sys(_symlinkat, op.addr, op.fd, op.offset)),
}
