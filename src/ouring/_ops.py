"""Operations: one small class per opcode.

An operation is built from the caller's arguments. Its constructor validates
them and acquires everything the kernel will touch (buffer leases, iovec
arrays, paths, sockaddrs, statx structs), so bad input raises at the call and
nothing is half-acquired. It describes its SQE as five fields that the ring
writes with one native call, and turns its CQE result into the caller's value
(``result``). Whatever it owns stays referenced by the operation, and the
operation stays referenced by its ring, until the final CQE; then the ring
calls ``release`` exactly once.

The lifecycle fields (``state``, ``res``, ``cancel_by``, ``waiter``,
``abandoned``, ``user_data``) are C fields of ``_ringcore.Operation``, written only
by the ring core (``RingCore``, native/core.c): every state change lives
there; ``_ring.py`` and the executors call it.
"""

from __future__ import annotations

import contextlib
import errno
import operator
import os
import socket
import struct
import sys
import warnings
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar, Generic, NamedTuple, Protocol, TypeVar

from . import _ringcore, _sockaddr
from ._buffers import MAX_RW, Lease
from ._errors import FdClosedError, RingClosedError, os_error
from ._native import ffi, lib
from ._ringcore import (
    CALLER,
    CANCELLING,
    CLOSED,
    CREATED,
    DONE,
    LEAKED,
    PENDING,
    RING,
    SUBMITTED,
    PoolBuffer,
)

__all__ = [
    "CALLER",
    "CANCELLING",
    "CLOSED",
    "CREATED",
    "DONE",
    "LEAKED",
    "PENDING",
    "RING",
    "SUBMITTED",
    "Accept",
    "AcceptMulti",
    "AcceptSink",
    "Close",
    "Connect",
    "Fadvise",
    "Fallocate",
    "Fsync",
    "Ftruncate",
    "LinkAt",
    "MkdirAt",
    "MultishotReceive",
    "Nop",
    "OpenAt",
    "Operation",
    "Public",
    "Read",
    "ReadFixed",
    "ReadV",
    "Recv",
    "RecvBytes",
    "RecvMsg",
    "RenameAt",
    "RmdirAt",
    "Send",
    "SendCount",
    "SendMsg",
    "SendZC",
    "Shutdown",
    "Splice",
    "Statx",
    "SymlinkAt",
    "UnlinkAt",
    "Write",
    "WriteFixed",
    "WriteV",
]

T = TypeVar("T")
B = TypeVar("B")
S = TypeVar("S")

# Operation.state, defined once in native/internal.h (the ring core changes it):
# CREATED    built: owns its resources; no ring has it
# PENDING    queued in a ring, not yet in the SQ: the kernel has not seen it
# SUBMITTED  its SQE is in the SQ: the kernel owns its memory until the final CQE
# CANCELLING SUBMITTED, and an IORING_OP_ASYNC_CANCEL is requested for it
# DONE       final CQE reaped, or withdrawn while PENDING; resources released
# LEAKED     the ring closed before the final CQE: its memory is kept forever
# Operation.cancel_by, who asked for a cancel: CALLER (the waiting task was
# cancelled: trio's abort), RING (the ring is closing), CLOSED (its fd is
# being closed through the ring); 0 when nobody did.
STATE_NAMES = ("CREATED", "PENDING", "SUBMITTED", "CANCELLING", "DONE", "LEAKED")

_CQE_F_NOTIF = lib.IORING_CQE_F_NOTIF
# What a CQE says when a requested cancel won (op_cancelled in native/ops.c).
_CANCELLED = frozenset(-code for code in (errno.ECANCELED, errno.EINTR, 512, 513, 514, 516))
_U64 = 0xFFFF_FFFF_FFFF_FFFF
_U32 = 0xFFFF_FFFF
_OFFSET_MAX = (1 << 63) - 1
_FD_MAX = 0x7FFFFFFF
_IOV_MAX = 1024
_NULL = ffi.NULL


class Public(NamedTuple):
    """Makes an operation class a public call, declared on the class as
    ``public = Public("name", "doc")``: ``ouring.name(...)`` and
    ``Ring.name(...)`` take its constructor's parameters, build it and return
    the awaitable of its result. tools/gen_ops.py writes both from this
    module (``make generate``; a test checks they are current)."""

    name: str
    doc: str


class Operation(_ringcore.Operation, Generic[T]):
    """Base of every operation. ``T`` is what awaiting it returns.

    The SQE image and the lifecycle are C fields of ``_ringcore.Operation``:
    ``Operation(fd, addr, length, offset, op_flags)`` fills the SQE image (see
    ouring_prep in native/shim.h for each opcode's use); ``addr`` is an address
    as an int, and the memory it points at is held by the operation's own
    fields (buffer, path, sockaddr, iovecs, statx). ``sqe_flags`` starts at 0;
    the lifecycle (``user_data``, ``state``, ``res``, ``cancel_by``,
    ``waiter``, ``abandoned``) starts CREATED and is written by the ring only.
    ``ioprio``, ``buf_index`` and ``file_index`` are the SQE fields of those
    names (0 unless a subclass sets them); ``cqe_flags`` is the final CQE's.
    """

    __slots__ = ()
    opcode: ClassVar[int]
    # Usually completes inside the io_uring_enter that submits it (no wait
    # for a device or a peer): executors may look for the CQE before parking.
    completes_inline: ClassVar[bool] = False

    # release(), discard() and _more(res, flags), which the ring calls, are
    # the C base's (nothing to give back, nothing to undo, no multishot);
    # subclasses that own memory, make an fd or ask for several CQEs override
    # them (native/internal.h lists what C calls).

    def result(self) -> T:
        """The caller's value for ``self.res``, or the exception to raise."""
        raise NotImplementedError

    def outcome(self) -> T:
        """The value to hand the waiter once the operation is DONE (or
        LEAKED: the ring closed before its CQE)."""
        if self.state == LEAKED:
            raise RingClosedError(
                "the ring was closed before the operation completed; the kernel "
                "may still use its memory, which is kept alive forever"
            )
        if self.cancel_by > CALLER and self.cancelled():
            if self.cancel_by == RING:
                raise RingClosedError("the ring was closed before the operation completed")
            raise FdClosedError(errno.EBADF, f"fd {self.fd} was closed while in use")
        return self.result()

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} fd={self.fd} user_data={self.user_data} "
            f"state={STATE_NAMES[self.state]} res={self.res}>"
        )


class _Status(Operation[None]):
    """An operation whose result is only success or an ``OSError``."""

    __slots__ = ()

    def result(self) -> None:
        if self.res < 0:
            raise os_error(self.res)


class Nop(_Status):
    """IORING_OP_NOP: a round trip through the ring and nothing else."""

    __slots__ = ()
    opcode = lib.IORING_OP_NOP

    def __init__(self) -> None:
        super().__init__(-1, 0, 0, 0, 0)


class _FileOperation(_ringcore.FileOperation, Operation[tuple[B, int]]):
    """read/write: ``(fd, buf, offset=-1)``, -1 meaning the file position.
    Built in one C call (this is the hottest constructor): it checks the
    arguments, lends ``buf`` (``writes_buffer`` says how) and fills the SQE
    image. ``release`` gives the buffer back; ``result`` is ``(buf, count)``."""

    __slots__ = ()
    writes_buffer: ClassVar[bool]
    completes_inline = True  # from and into the page cache

    if TYPE_CHECKING:  # built by _ringcore.FileOperation's __new__; typed here for B

        def __init__(self, fd: Any, buf: B, offset: int = -1) -> None: ...


class Read(_FileOperation[B]):
    """IORING_OP_READ into ``buf`` at ``offset`` (-1: the file position)."""

    __slots__ = ()
    opcode = lib.IORING_OP_READ
    public = Public(
        "read",
        """Read into ``buf`` (a writable buffer) at ``offset``, or at the file
        position when it is -1. Returns the same buffer and the byte count.""",
    )
    writes_buffer = True


class Write(_FileOperation[B]):
    """IORING_OP_WRITE from ``buf`` at ``offset`` (-1: the file position)."""

    __slots__ = ()
    opcode = lib.IORING_OP_WRITE
    public = Public(
        "write",
        """Write from ``buf`` at ``offset`` (-1: the file position). Returns the
        same buffer and the byte count.""",
    )
    writes_buffer = False


class ReadFixed(Read[B]):
    """IORING_OP_READ_FIXED into a buffer of the ring's registered pool (or a
    memoryview of one); ``buf_index`` names the registered buffer. The kernel
    skips pinning the pages per operation: they were pinned at registration."""

    __slots__ = ()
    opcode = lib.IORING_OP_READ_FIXED


class WriteFixed(Write[B]):
    """IORING_OP_WRITE_FIXED from a buffer of the ring's registered pool."""

    __slots__ = ()
    opcode = lib.IORING_OP_WRITE_FIXED


def pool_slot(buf: Any) -> PoolBuffer:
    """The pool buffer behind ``buf`` (a PoolBuffer or a memoryview of one),
    or TypeError: read_fixed and write_fixed take nothing else."""
    target = buf.obj if type(buf) is memoryview else buf
    if type(target) is not PoolBuffer:
        raise TypeError(
            "read_fixed/write_fixed take a buffer from an ouring.BufferPool (or a memoryview "
            f"of one), not {type(buf).__name__}; use read/write for other buffers"
        )
    return target


def fixed_or_plain(
    pool: object,
    fixed: type[Read[B]] | type[Write[B]],
    plain: type[Read[B]] | type[Write[B]],
    fd: Any,
    buf: B,
    offset: int,
) -> Read[B] | Write[B]:
    """The fixed operation when ``buf`` belongs to ``pool`` (the ring's
    registered pool), else the plain one: a pool buffer on another ring, on
    a pool that could not register, or under the thread fallback, is memory
    like any other."""
    slot = pool_slot(buf)
    if slot.pool is pool and pool is not None:
        op = fixed(fd, buf, offset)
        op.buf_index = slot.index
        return op
    return plain(fd, buf, offset)


class _MessageOperation(_ringcore.MessageOperation, Operation[tuple[B, int]]):
    """recv/send: ``(sock, buf, flags=0)`` with ``MSG_*`` flags; built in C
    like ``_FileOperation``."""

    __slots__ = ()
    writes_buffer: ClassVar[bool]

    if TYPE_CHECKING:  # built by _ringcore.MessageOperation's __new__; typed here for B

        def __init__(self, sock: Any, buf: B, flags: int = 0) -> None: ...


class Recv(_MessageOperation[B]):
    """IORING_OP_RECV into ``buf`` with ``MSG_*`` flags."""

    __slots__ = ()
    opcode = lib.IORING_OP_RECV
    public = Public(
        "recv",
        """Receive into ``buf`` with ``MSG_*`` flags; returns the same buffer and
        the byte count, 0 when the peer closed its side.""",
    )
    writes_buffer = True


class RecvBytes(_ringcore.ReceiveOperation, Operation[bytes]):
    """IORING_OP_RECV into a new bytes object of up to ``size`` bytes, handed
    out cut to the received count: what ``socket.recv`` returns, with no copy
    out of a reused buffer (the kernel writes into the bytes themselves).
    Built in C: ``(sock, size, flags=0)``; the bytes are lent like any buffer
    until the final CQE and ``result`` hands them out once."""

    __slots__ = ()
    opcode = lib.IORING_OP_RECV

    if TYPE_CHECKING:  # built by _ringcore.ReceiveOperation's __new__

        def __init__(self, sock: Any, size: int, flags: int = 0) -> None: ...


class MultishotReceive(_ringcore.MultishotReceive, Operation[None]):
    """``MultishotReceive(fd, receiver, group)``: a multishot recv into the
    ring's provided buffers (group ``group``, see ``Ring.recv_group``). Armed
    once, it puts every arrival into its ``Receiver`` (a ``_ringcore.Receiver``,
    one per socket) until the kernel ends it; the CQEs are handled in C
    (native/receive.c). It owns no memory: the buffers are the ring's, and
    each is copied out and given back in the dispatch of its CQE."""

    __slots__ = ()
    opcode = lib.IORING_OP_RECV


class Send(_MessageOperation[B]):
    """IORING_OP_SEND from ``buf`` with ``MSG_*`` flags."""

    __slots__ = ()
    opcode = lib.IORING_OP_SEND
    public = Public(
        "send",
        """Send from ``buf`` with ``MSG_*`` flags; returns the same buffer and the
        byte count, which may be less than all of it.""",
    )
    writes_buffer = False
    completes_inline = True


class SendCount(_ringcore.SendOperation, Operation[int]):
    """IORING_OP_SEND, as :class:`Send`, whose result is the count alone
    (``socket.send``'s value)."""

    __slots__ = ()
    opcode = lib.IORING_OP_SEND
    writes_buffer = False
    completes_inline = True


class SendZC(_MessageOperation[B]):
    """IORING_OP_SEND_ZC (Linux 6.0): send from ``buf`` without copying it
    into the socket buffer; the network stack reads the caller's pages.

    The kernel posts two CQEs. The first (``IORING_CQE_F_MORE``) carries the
    byte count, but the stack may still read ``buf`` after it; the second,
    the notification (``IORING_CQE_F_NOTIF``), says it no longer does. So the
    operation stays in flight, lease and all, until the notification: that is
    the final CQE the ring settles, and the lease goes back then. A send that
    fails before the kernel set up the notification posts one CQE only, with
    the error and no ``F_MORE``: that one is final."""

    __slots__ = ("sent",)
    opcode = lib.IORING_OP_SEND_ZC
    writes_buffer = False

    if TYPE_CHECKING:

        def __init__(self, sock: Any, buf: B, flags: int = 0) -> None: ...

    def _more(self, res: int, flags: int) -> None:
        # The result CQE: the count (or error), before the notification.
        self.sent = res

    def _res(self) -> int:
        """The send's result: the first CQE's when a notification followed."""
        if self.cqe_flags & _CQE_F_NOTIF:
            sent: int = self.sent
            return sent
        return self.res

    def cancelled(self) -> bool:
        # The notification's own res is 0: whether the cancel won is in the
        # result CQE's.
        return bool(self.cancel_by) and self._res() in _CANCELLED

    def result(self) -> tuple[B, int]:
        res = self._res()
        if res < 0:
            raise os_error(res, buffer=self.buffer)
        return self.buffer, res


def _lease_iovecs(items: list[Any], writes: bool) -> tuple[list[Lease], Any]:
    """Lease every buffer of ``items`` (all or none: a failing one releases the
    others) and an iovec array pointing at them, for readv/writev and
    recvmsg/sendmsg. The caller keeps both referenced until the final CQE."""
    leases: list[Lease] = []
    try:
        for item in items:
            leases.append(Lease(item, writes))
    except BaseException:
        for lease in leases:
            lease.release()
        raise
    iovecs = ffi.new("struct iovec[]", len(leases))
    for iov, lease in zip(iovecs, leases, strict=True):
        iov.iov_base = ffi.cast("void *", lease.ptr)
        iov.iov_len = lease.length
    return leases, iovecs


class _VectorOperation(Operation[tuple[S, int]]):
    """readv/writev: the sequence of buffers comes back as the same object."""

    __slots__ = ("buffers", "iovecs", "leases")
    writes_buffer: ClassVar[bool]

    def __init__(self, fd: Any, bufs: S, offset: int = -1) -> None:
        fd = fileno_for(fd, bufs)
        offset = file_offset(offset)
        try:
            items = list(bufs)  # type: ignore[call-overload]
        except TypeError:
            raise TypeError(
                f"a sequence of buffers is required, not {type(bufs).__name__}"
            ) from None
        if len(items) > _IOV_MAX:
            raise ValueError(f"at most {_IOV_MAX} buffers (IOV_MAX), got {len(items)}")
        leases, iovecs = _lease_iovecs(items, self.writes_buffer)
        super().__init__(fd, address_of(iovecs), len(leases), offset, 0)
        self.buffers = bufs
        self.leases = leases
        self.iovecs = iovecs

    def release(self) -> None:
        for lease in self.leases:
            lease.release()

    def result(self) -> tuple[S, int]:
        if self.res < 0:
            raise os_error(self.res, buffer=self.buffers)
        return self.buffers, self.res


class ReadV(_VectorOperation[S]):
    __slots__ = ()
    opcode = lib.IORING_OP_READV
    public = Public(
        "readv",
        """Scatter-read into a sequence of writable buffers at ``offset`` (-1: the
        file position). Returns the same sequence and the byte count.""",
    )
    writes_buffer = True
    completes_inline = True


class WriteV(_VectorOperation[S]):
    __slots__ = ()
    opcode = lib.IORING_OP_WRITEV
    public = Public(
        "writev",
        """Gather-write from a sequence of buffers at ``offset`` (-1: the file
        position). Returns the same sequence and the byte count.""",
    )
    writes_buffer = False
    completes_inline = True


# struct cmsghdr is (size_t cmsg_len, int cmsg_level, int cmsg_type); CMSG_ALIGN
# rounds to sizeof(size_t). CMSG_LEN(0) is the aligned header size.
_CMSG = struct.Struct("@Nii")
_CMSG_HEADER = socket.CMSG_LEN(0)
_CMSG_ALIGN = struct.calcsize("@N")
_SOCKLEN_MAX = 0x7FFFFFFF  # socklen_t lengths, as the socket module bounds them


def _cmsg_align(length: int) -> int:
    return (length + _CMSG_ALIGN - 1) & ~(_CMSG_ALIGN - 1)


def parse_ancillary(control: bytes, warn: bool = True) -> list[tuple[int, int, bytes]]:
    """``[(level, type, data), ...]`` from the control buffer the kernel filled
    (``msg_controllen`` bytes), walked as CPython's ``socket.recvmsg`` walks
    it with glibc's CMSG_FIRSTHDR/CMSG_NXTHDR: a header that does not fit ends
    the walk, a data part cut short by the buffer's end is returned cut, and
    either is reported with the same ``RuntimeWarning``."""
    items: list[tuple[int, int, bytes]] = []
    end = len(control)
    pos = 0
    while pos + _CMSG_HEADER <= end:
        length, level, kind = _CMSG.unpack_from(control, pos)
        if length < _CMSG_HEADER:
            _malformed(warn)
            break
        size = length - _CMSG_HEADER
        room = end - pos - _CMSG_HEADER
        if size > room:
            _malformed(warn)
            size = room
        items.append((level, kind, control[pos + _CMSG_HEADER : pos + _CMSG_HEADER + size]))
        # CMSG_NXTHDR: the next header must fit, and its aligned length too.
        pos += _cmsg_align(length)
        if pos + _CMSG_HEADER > end:
            break
        (following,) = struct.unpack_from("@N", control, pos)
        if pos + _cmsg_align(following) > end:
            break
    return items


def _malformed(warn: bool) -> None:
    if warn:
        warnings.warn(
            "received malformed or improperly-truncated ancillary data",
            RuntimeWarning,
            stacklevel=4,
        )


def build_ancillary(ancdata: Any) -> bytes:
    """The control buffer for ``sendmsg``'s ``[(level, type, data), ...]``:
    each message CMSG_SPACE long, as ``socket.sendmsg`` lays them out."""
    try:
        items = list(ancdata)
    except TypeError:
        raise TypeError(
            f"ancdata must be an iterable of (level, type, data), not {type(ancdata).__name__}"
        ) from None
    parts: list[bytes] = []
    for item in items:
        try:
            level, kind, data = item
        except (TypeError, ValueError):
            raise TypeError(
                f"ancillary data items are (level, type, data) sequences, not {item!r}"
            ) from None
        level, kind = _c_int(level, "level"), _c_int(kind, "type")
        try:
            with memoryview(data) as view:
                payload = view.tobytes()
        except TypeError:
            raise TypeError(
                f"ancillary data must be a bytes-like object, not {type(data).__name__}"
            ) from None
        length = _CMSG_HEADER + len(payload)
        parts.append(_CMSG.pack(length, level, kind).ljust(_CMSG_HEADER, b"\0"))
        parts.append(payload.ljust(_cmsg_align(length) - _CMSG_HEADER, b"\0"))
    control = b"".join(parts)
    if len(control) > _SOCKLEN_MAX:
        raise OSError(errno.ENOBUFS, "too much ancillary data")
    return control


def _c_int(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"ancillary {name} must be an int, not {type(value).__name__}")
    if not -0x80000000 <= value <= 0x7FFFFFFF:
        raise OverflowError(f"ancillary {name} {value} does not fit in a C int")
    return value


def _received_fds(control: bytes) -> list[int]:
    """The fds an SCM_RIGHTS message installed in this process."""
    fds: list[int] = []
    for level, kind, data in parse_ancillary(control, warn=False):
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(data) - len(data) % 4
            fds.extend(struct.unpack(f"@{usable // 4}i", data[:usable]))
    return fds


class _MsgOperation(Operation[T]):
    """recvmsg/sendmsg: a ``struct msghdr`` that points at the iovecs of the
    caller's buffers (leased like readv/writev's), a name buffer (the peer's
    address, written or read by the kernel) and a control buffer (ancillary
    data). All of it is owned by the operation until its final CQE."""

    __slots__ = ("buffers", "control", "iovecs", "leases", "msghdr", "name")
    writes_buffer: ClassVar[bool]

    def _build(self, sock: Any, bufs: Any, flags: Any) -> tuple[int, list[Any], int]:
        """Check the socket, the flags and the buffer sequence (before anything
        is acquired)."""
        fd = fileno_for(sock, bufs)
        flags = u32(flags, "flags")
        try:
            items = list(bufs)
        except TypeError:
            raise TypeError(
                f"a sequence of buffers is required, not {type(bufs).__name__}"
            ) from None
        if len(items) > _IOV_MAX:
            # What socket.sendmsg/recvmsg_into report: the kernel's EMSGSIZE.
            message = f"at most {_IOV_MAX} buffers (IOV_MAX), not {len(items)}"
            error = OSError(errno.EMSGSIZE, message)
            error.buffer = bufs  # type: ignore[attr-defined]
            raise error
        return fd, items, flags

    def _lend(self, bufs: Any, items: list[Any], name: Any, control: Any, size: int) -> None:
        """Lease the buffers and point a msghdr at everything (the last step
        of a constructor: nothing fails after it)."""
        leases, iovecs = _lease_iovecs(items, self.writes_buffer)
        msg = ffi.new("struct msghdr *")
        msg.msg_name = name
        msg.msg_namelen = 0 if name == _NULL else len(name)
        msg.msg_iov = iovecs if leases else _NULL
        msg.msg_iovlen = len(leases)
        msg.msg_control = control
        msg.msg_controllen = size
        self.buffers = bufs
        self.leases = leases
        self.iovecs = iovecs
        self.name = name
        self.control = control
        self.msghdr = msg

    def release(self) -> None:
        for lease in self.leases:
            lease.release()


class RecvMsg(_MsgOperation[tuple[S, int, list[tuple[int, int, bytes]], int, Any]]):
    """IORING_OP_RECVMSG into a sequence of writable buffers:
    ``socket.recvmsg_into``. Up to ``ancbufsize`` bytes of ancillary data are
    received; the result is ``(bufs, nbytes, ancdata, msg_flags, address)``
    with ``ancdata``, ``msg_flags`` (``MSG_TRUNC``, ``MSG_CTRUNC``...) and
    ``address`` as the socket module returns them. Like ``socket.recvmsg``,
    received fds (SCM_RIGHTS) are inheritable unless ``flags`` has
    ``MSG_CMSG_CLOEXEC``; if nobody receives the result they are closed."""

    __slots__ = ()
    opcode = lib.IORING_OP_RECVMSG
    public = Public(
        "recvmsg",
        """``socket.recvmsg_into`` with owned buffers: receive into a sequence of
        writable buffers and up to ``ancbufsize`` bytes of ancillary data. Returns
        ``(bufs, nbytes, ancdata, msg_flags, address)``: the same sequence, then
        what ``recvmsg_into`` returns (``ancdata`` as ``[(level, type, data)]``,
        ``msg_flags`` with ``MSG_TRUNC``/``MSG_CTRUNC``, the sender's address or
        None).""",
    )
    writes_buffer = True

    def __init__(self, sock: Any, bufs: S, ancbufsize: int = 0, flags: int = 0) -> None:
        fd, items, flags = self._build(sock, bufs, flags)
        size: int = operator.index(ancbufsize)
        if not 0 <= size <= _SOCKLEN_MAX:
            raise ValueError(f"ancbufsize must be in 0..{_SOCKLEN_MAX}, not {size}")
        # Written by the kernel at completion, with their lengths in the msghdr.
        name = ffi.new("char[]", _sockaddr.MAX_SOCKADDR)
        control = ffi.new("char[]", size) if size else _NULL
        self._lend(bufs, items, name, control, size)
        # liburing's io_uring_prep_recvmsg: addr is the msghdr, len 1.
        super().__init__(fd, address_of(self.msghdr), 1, 0, flags)

    def _control(self) -> bytes:
        if self.control == _NULL:
            return b""
        used = min(self.msghdr.msg_controllen, len(self.control))
        return bytes(ffi.buffer(self.control, used))

    def result(self) -> tuple[S, int, list[tuple[int, int, bytes]], int, Any]:
        if self.res < 0:
            raise os_error(self.res, buffer=self.buffers)
        msg = self.msghdr
        namelen = min(msg.msg_namelen, _sockaddr.MAX_SOCKADDR)
        # No address (a connected stream socket, an unbound peer): None, as
        # the socket module says.
        address = _sockaddr.decode(ffi.buffer(self.name, namelen)[:]) if namelen else None
        ancdata = parse_ancillary(self._control())
        return self.buffers, self.res, ancdata, msg.msg_flags, address

    def discard(self) -> None:
        if self.res >= 0:
            for fd in _received_fds(self._control()):
                with contextlib.suppress(OSError):
                    os.close(fd)


class SendMsg(_MsgOperation[tuple[S, int]]):
    """IORING_OP_SENDMSG from a sequence of buffers with ancillary data
    ``[(level, type, data), ...]`` (copied into a control buffer at the call)
    to ``address`` (None: the connected peer): ``socket.sendmsg``. The result
    is ``(bufs, nbytes)``; a stream socket may send less than all."""

    __slots__ = ()
    opcode = lib.IORING_OP_SENDMSG
    writes_buffer = False
    completes_inline = True  # with room in the socket buffer, like send

    def __init__(
        self, sock: Any, bufs: S, ancdata: Any = (), flags: int = 0, address: Any = None
    ) -> None:
        fd, items, flags = self._build(sock, bufs, flags)
        data = build_ancillary(ancdata)
        if address is None:
            name = _NULL
        else:
            name = ffi.new("char[]", _sockaddr.encode(socket_family(sock, fd), address))
        control = ffi.new("char[]", data) if data else _NULL
        self._lend(bufs, items, name, control, len(data))
        super().__init__(fd, address_of(self.msghdr), 1, 0, flags)

    def result(self) -> tuple[S, int]:
        if self.res < 0:
            raise os_error(self.res, buffer=self.buffers)
        return self.buffers, self.res


class Accept(Operation[tuple[socket.socket, Any]]):
    """IORING_OP_ACCEPT; the new fd is close-on-exec, like ``socket.accept``'s."""

    __slots__ = ("addrlen", "sockaddr")
    opcode = lib.IORING_OP_ACCEPT
    public = Public("accept", """Accept a connection: ``(socket.socket, address)``.""")

    def __init__(self, sock: Any) -> None:
        fd = fileno(sock)
        # The kernel writes the peer address and its length here at completion.
        self.sockaddr = ffi.new("char[]", _sockaddr.MAX_SOCKADDR)
        self.addrlen = ffi.new("uint32_t *", _sockaddr.MAX_SOCKADDR)
        super().__init__(
            fd, address_of(self.sockaddr), 0, address_of(self.addrlen), lib.SOCK_CLOEXEC
        )

    def result(self) -> tuple[socket.socket, Any]:
        if self.res < 0:
            raise os_error(self.res)
        conn = socket.socket(fileno=self.res)
        return conn, _sockaddr.decode(ffi.buffer(self.sockaddr, self.addrlen[0])[:])

    def discard(self) -> None:
        if self.res >= 0:
            os.close(self.res)


class AcceptSink(Protocol):
    """Where an ``AcceptMulti`` puts what the kernel hands over. Both methods
    run inside the ring's reap (an event-loop hook) and must never raise."""

    def accepted(self, fd: int) -> None:
        """A new connection's fd (close-on-exec); the sink owns it now."""

    def ended(self, op: AcceptMulti) -> None:
        """The final CQE: the multishot is over. ``op.res`` is one last fd
        (>= 0; the sink owns it), or an error, or a cancel
        (``op.cancelled()``)."""


class AcceptMulti(Operation[None]):
    """IORING_OP_ACCEPT with ``IORING_ACCEPT_MULTISHOT`` (Linux 5.19): one SQE
    that accepts every connection until it is cancelled or fails. Each CQE
    with ``IORING_CQE_F_MORE`` is a new fd, given to ``sink.accepted``; the
    final CQE (no ``F_MORE``: an error such as ``EMFILE``, a cancel, or a full
    CQ, which ends it with one more fd) goes to ``sink.ended`` once the ring
    settled the operation. The kernel writes no peer address for a multishot
    accept (one buffer would serve every connection), so the SQE has none:
    ask the new socket (``getpeername``). Nobody awaits the operation itself:
    it is submitted with no waiter and owns no memory the kernel touches."""

    __slots__ = ("sink",)
    opcode = lib.IORING_OP_ACCEPT

    def __init__(self, sock: Any, sink: AcceptSink) -> None:
        fd = fileno(sock)
        super().__init__(fd, 0, 0, 0, lib.SOCK_CLOEXEC)
        self.ioprio = lib.IORING_ACCEPT_MULTISHOT
        self.sink = sink

    def _more(self, res: int, flags: int) -> None:
        # The kernel posts F_MORE only with a new fd; an error ends the
        # multishot (a final CQE).
        self.sink.accepted(res)

    def release(self) -> None:
        # Called exactly once; in DONE after the final CQE (or a withdraw
        # before the kernel saw it), in CREATED when it was never submitted.
        if self.state == DONE:
            self.sink.ended(self)

    def result(self) -> None:
        if self.res < 0:
            raise os_error(self.res)


class Connect(_Status):
    """IORING_OP_CONNECT to a numeric address in the socket's family."""

    __slots__ = ("sockaddr",)
    opcode = lib.IORING_OP_CONNECT

    def __init__(self, sock: Any, address: Any) -> None:
        fd = fileno(sock)
        data = _sockaddr.encode(socket_family(sock, fd), address)
        self.sockaddr = ffi.new("char[]", data)
        super().__init__(fd, address_of(self.sockaddr), 0, len(data), 0)


class OpenAt(Operation[int]):
    """IORING_OP_OPENAT; the fd is close-on-exec, as ``os.open`` makes it."""

    __slots__ = ("filename", "path")
    opcode = lib.IORING_OP_OPENAT
    public = Public("open", """``os.open`` through io_uring: returns a close-on-exec fd.""")

    def __init__(
        self, path: Any, flags: int = os.O_RDONLY, mode: int = 0o666, *, dir_fd: Any = None
    ) -> None:
        raw = fs_path(path, "open")
        flags = u32(flags, "flags") | os.O_CLOEXEC
        mode = u32(mode, "mode")
        dfd = dir_fd_of(dir_fd)
        self.filename = os.fspath(path)  # as os.open reports it: bytes stay bytes
        self.path = ffi.new("char[]", raw)
        super().__init__(dfd, address_of(self.path), mode, 0, flags)

    def result(self) -> int:
        if self.res < 0:
            raise os_error(self.res, filename=self.filename)
        return self.res

    def discard(self) -> None:
        if self.res >= 0:
            os.close(self.res)


class Close(Operation[None]):
    """IORING_OP_CLOSE. A ``socket.socket`` is detached only once the close
    happened, so a cancelled close leaves it owning its fd."""

    __slots__ = ("sock",)
    opcode = lib.IORING_OP_CLOSE

    def __init__(self, fd: Any) -> None:
        self.sock = fd if isinstance(fd, socket.socket) else None
        if self.sock is None and not isinstance(fd, int):
            raise TypeError(
                f"close() takes an int fd or a socket.socket, not {type(fd).__name__}; "
                "close file objects with their own close()"
            )
        super().__init__(fileno(fd), 0, 0, 0, 0)

    def result(self) -> None:
        if self.res < 0:
            raise os_error(self.res)
        if self.sock is not None:
            self.sock.detach()


class Fsync(_Status):
    __slots__ = ()
    opcode = lib.IORING_OP_FSYNC
    public = Public("fsync", """``os.fsync`` (or ``os.fdatasync`` with ``datasync=True``).""")

    def __init__(self, fd: Any, *, datasync: bool = False) -> None:
        super().__init__(fileno(fd), 0, 0, 0, lib.IORING_FSYNC_DATASYNC if datasync else 0)


class Statx(Operation[os.stat_result]):
    """IORING_OP_STATX, returned as a real ``os.stat_result``."""

    __slots__ = ("filename", "path", "statx")
    opcode = lib.IORING_OP_STATX
    public = Public("stat", """``os.stat`` through statx; ``path`` may also be an open fd.""")

    def __init__(self, path: Any, *, dir_fd: Any = None, follow_symlinks: bool = True) -> None:
        flags = lib.AT_STATX_SYNC_AS_STAT
        if isinstance(path, int) and not isinstance(path, bool):
            if dir_fd is not None:
                raise ValueError("stat: can't specify both dir_fd and fd")
            dfd, raw = fileno(path), b""
            flags |= lib.AT_EMPTY_PATH
        else:
            raw = fs_path(path, "stat")
            dfd = dir_fd_of(dir_fd)
        if not follow_symlinks:
            flags |= lib.AT_SYMLINK_NOFOLLOW
        self.filename = path if isinstance(path, int) else os.fspath(path)
        self.path = ffi.new("char[]", raw)
        self.statx = ffi.new("struct statx *")  # written by the kernel at completion
        super().__init__(
            dfd, address_of(self.path), lib.STATX_BASIC_STATS, address_of(self.statx), flags
        )

    def result(self) -> os.stat_result:
        if self.res < 0:
            raise os_error(self.res, filename=self.filename)
        sx = self.statx
        seq = (
            sx.stx_mode,
            sx.stx_ino,
            os.makedev(sx.stx_dev_major, sx.stx_dev_minor),
            sx.stx_nlink,
            sx.stx_uid,
            sx.stx_gid,
            sx.stx_size,
            sx.stx_atime.tv_sec,
            sx.stx_mtime.tv_sec,
            sx.stx_ctime.tv_sec,
        )
        extra: dict[str, Any] = {
            "st_blksize": sx.stx_blksize,
            "st_blocks": sx.stx_blocks,
            "st_rdev": os.makedev(sx.stx_rdev_major, sx.stx_rdev_minor),
        }
        for name in ("atime", "mtime", "ctime"):
            ts = getattr(sx, "stx_" + name)
            extra["st_" + name] = ts.tv_sec + ts.tv_nsec * 1e-9  # as CPython computes it
            extra[f"st_{name}_ns"] = ts.tv_sec * 1_000_000_000 + ts.tv_nsec
        return os.stat_result(seq, extra)


class Fallocate(_Status):
    """IORING_OP_FALLOCATE: ``fallocate(2)``; the length travels in addr."""

    __slots__ = ()
    opcode = lib.IORING_OP_FALLOCATE
    public = Public(
        "fallocate",
        """``fallocate(2)``: ``os.posix_fallocate`` with mode 0, or ``FALLOC_FL_*`` flags.""",
    )

    def __init__(self, fd: Any, offset: int, length: int, *, mode: int = 0) -> None:
        fd = fileno(fd)
        offset, length = file_range(offset, length)
        if length == 0:
            raise ValueError("fallocate: length must be > 0")
        super().__init__(fd, length, u32(mode, "mode"), offset, 0)


class Fadvise(_Status):
    """IORING_OP_FADVISE: ``posix_fadvise``. A length over 32 bits travels in
    addr, which kernels since 6.7 read first."""

    __slots__ = ()
    opcode = lib.IORING_OP_FADVISE
    public = Public("fadvise", """``os.posix_fadvise``.""")

    def __init__(self, fd: Any, offset: int, length: int, advice: int) -> None:
        fd = fileno(fd)
        offset, length = file_range(offset, length)
        small = length <= 0xFFFFFFFF
        addr = 0 if small else length
        super().__init__(fd, addr, length if small else 0, offset, u32(advice, "advice"))


class Ftruncate(_Status):
    """IORING_OP_FTRUNCATE (Linux 6.9): ``os.ftruncate``."""

    __slots__ = ()
    opcode = lib.OURING_OP_FTRUNCATE
    public = Public(
        "ftruncate",
        """``os.ftruncate`` (needs Linux 6.9; ``UnsupportedError`` before).""",
    )

    def __init__(self, fd: Any, length: int) -> None:
        fd = fileno(fd)
        _, length = file_range(0, length)
        super().__init__(fd, 0, 0, length, 0)


class Shutdown(_Status):
    """IORING_OP_SHUTDOWN: ``socket.shutdown(how)``. Unlike ``close``, it ends
    the operations in flight on the socket (a pending recv completes with 0)."""

    __slots__ = ()
    opcode = lib.IORING_OP_SHUTDOWN
    public = Public(
        "shutdown",
        """``socket.shutdown``; unlike ``close``, it ends operations in flight on
        the socket (a pending recv returns 0).""",
    )

    def __init__(self, sock: Any, how: int) -> None:
        how = operator.index(how)
        if how not in (socket.SHUT_RD, socket.SHUT_WR, socket.SHUT_RDWR):
            raise ValueError(f"how must be SHUT_RD, SHUT_WR or SHUT_RDWR, not {how}")
        super().__init__(fileno(sock), 0, how, 0, 0)


class Splice(Operation[int]):
    """IORING_OP_SPLICE: ``splice(2)``, moving up to ``nbytes`` from ``fd_in``
    to ``fd_out`` without copying through user memory; one of them must be a
    pipe. Offsets are -1 for "no offset" (a pipe's, or the file position).

    The SQE as liburing's ``io_uring_prep_splice`` writes it: ``fd`` is
    fd_out, ``off`` off_out, ``addr`` (splice_off_in) off_in, ``len`` nbytes,
    ``splice_fd_in`` (``file_index``) fd_in and the splice flags in the
    per-opcode flags. It owns no memory: the kernel only takes its own
    references to the two files. The kernel always runs it in an io-wq
    worker, which a cancel interrupts: a splice waiting on an empty pipe
    then ends with -EINTR/-ERESTARTSYS (nothing moved), one that moved bytes
    returns the count."""

    __slots__ = ()
    opcode = lib.IORING_OP_SPLICE
    public = Public(
        "splice",
        """``os.splice`` through io_uring: move up to ``nbytes`` from ``fd_in`` at
        ``off_in`` to ``fd_out`` at ``off_out`` without copying through user
        memory; one of the two must be a pipe, and a pipe's offset is -1 (so is
        a file's to use and move its position). ``flags`` are ``os.SPLICE_F_*``.
        Returns the count moved, 0 at the end of the input. Cancelled while it
        waits (an empty pipe, a full socket), nothing moved.""",
    )

    def __init__(
        self, fd_in: Any, off_in: int, fd_out: Any, off_out: int, nbytes: int, flags: int = 0
    ) -> None:
        source = fileno(fd_in)
        target = fileno(fd_out)
        off_in = file_offset(off_in)
        off_out = file_offset(off_out)
        count: int = operator.index(nbytes)
        if count < 0:
            raise ValueError(f"nbytes must be >= 0, not {count}")
        flags = u32(flags, "flags")
        if flags & ~_SPLICE_FLAGS:
            raise ValueError(
                f"flags must be a combination of os.SPLICE_F_MOVE, SPLICE_F_NONBLOCK "
                f"and SPLICE_F_MORE, not {flags:#x}"
            )
        # One splice moves at most what one read does (MAX_RW_COUNT).
        super().__init__(target, off_in, min(count, MAX_RW), off_out, flags)
        self.file_index = source

    @property
    def fd_in(self) -> int:
        return int(self.file_index)

    def result(self) -> int:
        if self.res < 0:
            raise os_error(self.res)
        return self.res


_SPLICE_FLAGS = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK | os.SPLICE_F_MORE


_NO_PATH: Any = object()  # an *at operation on one path only


class _PathOperation(Operation[None]):
    """An ``*at`` operation on one or two paths. The kernel copies the paths
    when it consumes the SQE; they stay referenced until the CQE anyway."""

    __slots__ = ("filename", "filename2", "path", "path2")

    def __init__(
        self, function: str, dir_fd: Any, path: Any, length: int, path2: Any, op_flags: int
    ) -> None:
        first, second_name = ("path", "") if path2 is _NO_PATH else ("src", "dst")
        raw = fs_path(path, function, first)
        self.filename = os.fspath(path)  # as os reports it: bytes stay bytes
        self.path = ffi.new("char[]", raw)
        if path2 is _NO_PATH:  # not None: a None path is a TypeError, as in os
            self.filename2: str | bytes | None = None
            self.path2 = _NULL
            second = 0
        else:
            raw2 = fs_path(path2, function, second_name)
            self.filename2 = os.fspath(path2)
            self.path2 = ffi.new("char[]", raw2)
            second = address_of(self.path2)
        super().__init__(dir_fd_of(dir_fd), address_of(self.path), length, second, op_flags)

    def result(self) -> None:
        if self.res < 0:
            raise os_error(self.res, filename=self.filename, filename2=self.filename2)


class UnlinkAt(_PathOperation):
    """IORING_OP_UNLINKAT: ``os.unlink``."""

    __slots__ = ()
    opcode = lib.IORING_OP_UNLINKAT
    public = Public("unlink", """``os.unlink``.""")

    def __init__(self, path: Any, *, dir_fd: Any = None) -> None:
        super().__init__("unlink", dir_fd, path, 0, _NO_PATH, 0)


class RmdirAt(_PathOperation):
    """IORING_OP_UNLINKAT with ``AT_REMOVEDIR``: ``os.rmdir``."""

    __slots__ = ()
    opcode = lib.IORING_OP_UNLINKAT
    public = Public("rmdir", """``os.rmdir``.""")

    def __init__(self, path: Any, *, dir_fd: Any = None) -> None:
        super().__init__("rmdir", dir_fd, path, 0, _NO_PATH, lib.AT_REMOVEDIR)


class MkdirAt(_PathOperation):
    """IORING_OP_MKDIRAT: ``os.mkdir``."""

    __slots__ = ()
    opcode = lib.IORING_OP_MKDIRAT
    public = Public("mkdir", """``os.mkdir``.""")

    def __init__(self, path: Any, mode: int = 0o777, *, dir_fd: Any = None) -> None:
        super().__init__("mkdir", dir_fd, path, u32(mode, "mode"), _NO_PATH, 0)


class RenameAt(_PathOperation):
    """IORING_OP_RENAMEAT: ``os.rename`` (which replaces ``dst``, as
    ``os.replace`` does). The second dir fd travels in the length field."""

    __slots__ = ()
    opcode = lib.IORING_OP_RENAMEAT
    public = Public(
        "rename",
        """``os.rename``, which on Linux replaces ``dst`` as ``os.replace`` does.""",
    )

    def __init__(
        self, src: Any, dst: Any, *, src_dir_fd: Any = None, dst_dir_fd: Any = None
    ) -> None:
        super().__init__("rename", src_dir_fd, src, dir_fd_of(dst_dir_fd) & 0xFFFFFFFF, dst, 0)


class LinkAt(_PathOperation):
    """IORING_OP_LINKAT: ``os.link``."""

    __slots__ = ()
    opcode = lib.IORING_OP_LINKAT
    public = Public("link", """``os.link``: make ``dst`` a hard link to ``src``.""")

    def __init__(
        self,
        src: Any,
        dst: Any,
        *,
        src_dir_fd: Any = None,
        dst_dir_fd: Any = None,
        follow_symlinks: bool = True,
    ) -> None:
        flags = lib.AT_SYMLINK_FOLLOW if follow_symlinks else 0
        dst_dfd = dir_fd_of(dst_dir_fd) & 0xFFFFFFFF
        super().__init__("link", src_dir_fd, src, dst_dfd, dst, flags)


class SymlinkAt(_PathOperation):
    """IORING_OP_SYMLINKAT: ``os.symlink(src, dst)`` makes ``dst`` point at
    ``src``, which is stored as is and never resolved."""

    __slots__ = ()
    opcode = lib.IORING_OP_SYMLINKAT
    public = Public("symlink", """``os.symlink``: make ``dst`` a symbolic link to ``src``.""")

    def __init__(self, src: Any, dst: Any, *, dir_fd: Any = None) -> None:
        super().__init__("symlink", dir_fd, src, 0, dst, 0)


def read_requests(requests: Iterable[tuple[Any, B, int]], pool: object = None) -> list[Read[B]]:
    """The Read operations of ``read_many``: ``(fd, buffer, offset)`` with an
    explicit offset (>= 0). A batch cancelled part way is then safe to drop:
    reading at an offset moves no file position, so reading again gives the
    same bytes. Nothing stays acquired if one request is bad. Buffers of
    ``pool`` (the ring's registered pool, if it has one) get fixed reads."""
    ops: list[Read[B]] = []
    try:
        for request in requests:
            try:
                fd, buf, offset = request
            except (TypeError, ValueError):
                raise TypeError(
                    f"read_many takes (fd, buffer, offset) tuples, not {request!r}"
                ) from None
            offset = file_offset(offset)
            if offset == _U64:
                raise ValueError("read_many reads at explicit offsets (>= 0), not -1")
            if pool is not None:
                target: Any = buf.obj if isinstance(buf, memoryview) else buf
                if type(target) is PoolBuffer and target.pool is pool:
                    op: Read[B] = ReadFixed(fd, buf, offset)
                    op.buf_index = target.index
                    ops.append(op)
                    continue
            ops.append(Read(fd, buf, offset))
    except BaseException:
        for op in ops:
            op.release()
        raise
    return ops


# Argument checks shared by the operations: each raises at the call, before
# anything is acquired.


def fileno(obj: Any) -> int:
    """An fd from an int or an object with ``fileno()``."""
    if isinstance(obj, int):
        fd = obj
    else:
        method = getattr(obj, "fileno", None)
        if method is None:
            raise TypeError(
                f"an fd (int) or an object with fileno() is required, not {type(obj).__name__}"
            )
        fd = method()
        if not isinstance(fd, int):
            raise TypeError(f"fileno() returned {type(fd).__name__}, not int")
    if not 0 <= fd <= _FD_MAX:
        raise OSError(errno.EBADF, f"{os.strerror(errno.EBADF)}: {fd} (is it closed?)")
    return fd


def uses_fd(op: Operation[Any], fd: int) -> bool:
    """Whether ``op`` names ``fd``: its SQE's fd, or a splice's fd_in."""
    return op.fd == fd or (type(op) is Splice and op.file_index == fd)


def fileno_for(obj: Any, buffer: object) -> int:
    """``fileno`` for buffer-carrying operations: a bad fd's ``OSError``
    carries the buffer too, as every error of theirs does."""
    try:
        return fileno(obj)
    except OSError as exc:
        exc.buffer = buffer  # type: ignore[attr-defined]
        raise


def file_offset(offset: Any) -> int:
    """A 64-bit SQE offset; -1 (all ones) means the file's current position."""
    value: int = operator.index(offset)
    if value < -1:
        raise ValueError(f"offset must be >= 0, or -1 for the current position, not {value}")
    if value >= 1 << 63:
        raise OverflowError(f"offset {value} does not fit in a 64-bit file offset")
    return value & _U64


def file_range(offset: Any, length: Any) -> tuple[int, int]:
    """A non-negative (offset, length) pair whose end fits in a 63-bit off_t."""
    start: int = operator.index(offset)
    size: int = operator.index(length)
    if start < 0 or size < 0:
        raise ValueError(f"offset and length must be >= 0, not {start} and {size}")
    if start + size >= 1 << 63:
        raise OverflowError("offset + length does not fit in a 64-bit file offset")
    return start, size


def dir_fd_of(dir_fd: Any) -> int:
    """A directory fd for ``*at`` operations; None means the current directory."""
    return lib.AT_FDCWD if dir_fd is None else fileno(dir_fd)


def u32(value: Any, name: str) -> int:
    number: int = operator.index(value)
    if not 0 <= number <= 0xFFFFFFFF:
        raise ValueError(f"{name} must fit in 32 unsigned bits, not {number}")
    return number


def fs_path(path: Any, function: str | None, argument: str = "path") -> bytes:
    """``path`` as the bytes the kernel reads up to their NUL terminator, refused
    (ValueError) when it holds a NUL, which would cut it short: with the message
    that ``os.<function>`` gives for its ``argument`` on the running Python, or
    ``io.open``'s when ``function`` is None."""
    raw: str | bytes = os.fspath(path)
    encoded = os.fsencode(raw) if isinstance(raw, str) else raw
    if b"\0" in encoded:
        raise ValueError(_nul_message(raw, function, argument))
    return encoded


def _nul_message(path: str | bytes, function: str | None, argument: str) -> str:
    # CPython's own messages (seen on 3.11.7, 3.12.1, 3.13.0). io.open converts the
    # name with PyUnicode_FSConverter: "embedded null byte" for str and bytes alike.
    # os functions convert in posixmodule.c's path_converter, which names the
    # function and the argument ("stat: embedded null character in path"); before
    # 3.13 it handed a str path to PyUnicode_FSConverter, hence the short message.
    if function is None or (isinstance(path, str) and sys.version_info < (3, 13)):
        return "embedded null byte"
    return f"{function}: embedded null character in {argument}"


def socket_family(sock: Any, fd: int) -> int:
    family = getattr(sock, "family", None)
    if isinstance(family, int):
        return family
    probe = socket.socket(fileno=fd)  # reads SO_DOMAIN; detached so fd stays open
    try:
        return probe.family
    finally:
        probe.detach()


def address_of(cdata: Any) -> int:
    """For SQE fields that carry a pointer in a 64-bit integer (addr2/off)."""
    return int(ffi.cast("uintptr_t", cdata))


def buffer_error(res: int, buffer: object) -> OSError:
    """The OSError of an operation on ``buffer`` that failed with ``res``
    (the extension's ``buffer_error`` hook)."""
    return os_error(res, buffer=buffer)
