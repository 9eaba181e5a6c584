"""Every operation against the real kernel: files in tmp_path, pipes,
socketpairs, TCP on loopback (IPv4 and IPv6) and AF_UNIX paths; the errors
they raise (with ``.buffer`` and ``.filename``); and a table of bad input
that must raise at the call and leave nothing behind."""

from __future__ import annotations

import array
import errno
import mmap
import os
import select
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from conftest import tcp_pair

import ouring

DATA = b"0123456789"
LOOPBACK: dict[int, str] = {socket.AF_INET: "127.0.0.1", socket.AF_INET6: "::1"}


def has_ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


HAS_IPV6 = has_ipv6_loopback()
needs_ipv6 = pytest.mark.skipif(not HAS_IPV6, reason="this host has no IPv6 loopback")


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def assert_idle() -> None:
    assert ouring.current_ring().statistics().inflight == 0


def contents(path: Path) -> bytes:
    """A file's bytes, read the plain way: ouring is what is under test."""
    return path.read_bytes()


def position(fd: int) -> int:
    return os.lseek(fd, 0, os.SEEK_CUR)


@contextmanager
def opened(path: Path, flags: int = os.O_RDONLY) -> Iterator[int]:
    fd = os.open(path, flags)
    try:
        yield fd
    finally:
        os.close(fd)


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.write_bytes(DATA)
    return path


# -- read and write ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "size", "expected"),
    [
        (0, 4, b"0123"),
        (3, 4, b"3456"),
        (6, 10, b"6789"),  # short read at EOF
        (10, 4, b""),  # at EOF
        (1000, 4, b""),  # past EOF
        (0, 0, b""),  # zero-length buffer
    ],
)
async def test_read_at_an_offset(
    executor: str, data_file: Path, offset: int, size: int, expected: bytes
) -> None:
    with opened(data_file) as fd:
        buf = bytearray(b"-" * size)
        got, n = await ouring.read(fd, buf, offset)
        assert got is buf
        assert n == len(expected)
        assert bytes(buf[:n]) == expected
        assert buf[n:] == b"-" * (size - n)
        assert position(fd) == 0  # a positional read leaves the file position alone


async def test_read_and_write_at_minus_one_use_the_file_position(
    executor: str, data_file: Path
) -> None:
    with opened(data_file, os.O_RDWR) as fd:
        buf, n = await ouring.read(fd, bytearray(3))
        assert (bytes(buf), n, position(fd)) == (b"012", 3, 3)
        buf, n = await ouring.read(fd, bytearray(3), -1)
        assert (bytes(buf), n, position(fd)) == (b"345", 3, 6)
        _, n = await ouring.write(fd, b"ab")
        assert (n, position(fd)) == (2, 8)
        _, n = await ouring.write(fd, b"XYZ", -1)  # extends the file
        assert (n, position(fd)) == (3, 11)
        buf, n = await ouring.read(fd, bytearray(4))
        assert n == 0  # at the end of the file now
    assert contents(data_file) == b"012345abXYZ"


async def test_write_at_offsets_leaves_the_position(executor: str, tmp_path: Path) -> None:
    path = tmp_path / "out"
    with opened(path, os.O_RDWR | os.O_CREAT) as fd:
        data = b"hello"
        got, n = await ouring.write(fd, data, 0)
        assert (got, n) == (data, 5)
        assert got is data
        _, n = await ouring.write(fd, bytearray(b"world"), 8)  # leaves a hole
        assert n == 5
        _, n = await ouring.write(fd, b"", 100)  # zero-length: nothing, not even a hole
        assert n == 0
        assert position(fd) == 0
    assert contents(path) == b"hello\0\0\0world"


async def test_read_into_a_memoryview_slice_fills_only_the_slice(
    executor: str, data_file: Path
) -> None:
    backing = bytearray(b"........")
    view = memoryview(backing)[2:6]
    with opened(data_file) as fd:
        got, n = await ouring.read(fd, view, 5)
    assert got is view
    assert n == 4
    assert backing == b"..5678.."
    view.release()
    backing.extend(b"!")  # nothing of the read still holds it


@dataclass
class HasFileno:
    """Anything with fileno() stands for its fd."""

    fd: Any

    def fileno(self) -> Any:
        return self.fd


async def test_fd_may_be_any_object_with_fileno(data_file: Path) -> None:
    with opened(data_file, os.O_RDWR) as fd:
        buf, n = await ouring.read(HasFileno(fd), bytearray(4), 2)
        assert bytes(buf[:n]) == b"2345"
        _, n = await ouring.write(HasFileno(fd), b"ab", 0)
        await ouring.fsync(HasFileno(fd))
        assert_same_stat(await ouring.stat(fd), os.fstat(fd))
    assert contents(data_file) == b"ab23456789"


async def test_read_into_an_array(data_file: Path) -> None:
    values = array.array("H", [0, 0, 0])
    with opened(data_file) as fd:
        got, n = await ouring.read(fd, values, 0)
    assert got is values
    assert n == 6  # a byte count, not an item count
    assert values.tobytes() == b"012345"


async def test_read_into_and_write_from_an_mmap(data_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with mmap.mmap(-1, mmap.PAGESIZE) as region:
        with opened(data_file) as fd:
            got, n = await ouring.read(fd, region, 0)
        assert got is region
        assert n == len(DATA)
        assert region[:n] == DATA
        with opened(out, os.O_WRONLY | os.O_CREAT) as fd:
            view = memoryview(region)[2:7]
            _, n = await ouring.write(fd, view, 0)
            view.release()
        assert n == 5
        region.close()  # raises BufferError if an export of it were left behind
    assert contents(out) == b"23456"


@pytest.mark.parametrize(
    "make",
    [
        bytes,
        bytearray,
        lambda data: memoryview(b"??" + data + b"??")[2:-2],
        lambda data: array.array("B", data),
        lambda data: memoryview(bytearray(data)).toreadonly(),
    ],
    ids=["bytes", "bytearray", "memoryview-slice", "array", "read-only-view"],
)
async def test_write_from_any_buffer(tmp_path: Path, make: Callable[[bytes], Any]) -> None:
    path = tmp_path / "out"
    source = make(DATA)
    with opened(path, os.O_WRONLY | os.O_CREAT) as fd:
        got, n = await ouring.write(fd, source, 3)
    assert got is source
    assert n == len(DATA)
    assert contents(path) == b"\0\0\0" + DATA


async def test_readv_scatters_across_buffers(executor: str, data_file: Path) -> None:
    backing = bytearray(b"......")
    bufs = [bytearray(3), bytearray(0), memoryview(backing)[1:3], bytearray(10)]
    with opened(data_file) as fd:
        got, n = await ouring.readv(fd, bufs, 1)
        assert got is bufs
        assert n == 9  # short at EOF: the last buffer is only partly filled
        assert position(fd) == 0
    assert bufs[0] == b"123"
    assert backing == b".45..."
    assert bufs[3] == b"6789" + bytes(6)


async def test_readv_and_writev_at_minus_one_use_the_file_position(data_file: Path) -> None:
    with opened(data_file, os.O_RDWR) as fd:
        bufs = (bytearray(2), bytearray(3))  # any sequence; the same object comes back
        got, n = await ouring.readv(fd, bufs)
        assert got is bufs
        assert (n, position(fd)) == (5, 5)
        assert bufs == (bytearray(b"01"), bytearray(b"234"))
        parts = [b"ab", bytearray(b"cd"), memoryview(b"xefx")[1:3]]
        got_parts, n = await ouring.writev(fd, parts, -1)
        assert got_parts is parts
        assert (n, position(fd)) == (6, 11)
    assert contents(data_file) == b"01234abcdef"


async def test_writev_at_an_offset_and_empty_vectors(executor: str, tmp_path: Path) -> None:
    path = tmp_path / "out"
    with opened(path, os.O_RDWR | os.O_CREAT) as fd:
        _, n = await ouring.writev(fd, [b"abc", b"", b"def"], 2)
        assert n == 6
        assert position(fd) == 0
        assert await ouring.writev(fd, [], 0) == ([], 0)
        assert await ouring.readv(fd, [], 0) == ([], 0)
    assert contents(path) == b"\0\0abcdef"


@pytest.mark.parametrize("datasync", [False, True])
async def test_write_then_fsync(executor: str, tmp_path: Path, datasync: bool) -> None:
    path = tmp_path / "out"
    with opened(path, os.O_WRONLY | os.O_CREAT) as fd:
        await ouring.write(fd, b"durable", 0)
        await ouring.fsync(fd, datasync=datasync)
    with opened(path) as fd:
        await ouring.fsync(fd)  # a read-only fd may be synced too
    assert contents(path) == b"durable"


# -- open, close, stat ---------------------------------------------------------------


async def test_open_creates_with_the_mode_and_close_on_exec(executor: str, tmp_path: Path) -> None:
    path = tmp_path / "new"
    fd = await ouring.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        assert not os.get_inheritable(fd)
        umask = os.umask(0)
        os.umask(umask)
        assert os.fstat(fd).st_mode & 0o777 == 0o640 & ~umask
        os.write(fd, b"via os")
    finally:
        os.close(fd)
    assert contents(path) == b"via os"


async def test_open_reads_an_existing_file(data_file: Path) -> None:
    fd = await ouring.open(str(data_file))  # O_RDONLY by default
    try:
        assert not os.get_inheritable(fd)
        assert os.read(fd, 100) == DATA
        with pytest.raises(OSError, match="Bad file descriptor"):
            os.write(fd, b"x")
    finally:
        os.close(fd)


async def test_open_exclusive_twice_raises_file_exists_with_the_filename(
    executor: str, tmp_path: Path
) -> None:
    path = str(tmp_path / "once")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    fd = await ouring.open(path, flags)
    os.close(fd)
    before = fd_count()
    with pytest.raises(FileExistsError) as info:
        await ouring.open(path, flags)
    assert info.value.errno == errno.EEXIST
    assert info.value.filename == path
    assert fd_count() == before


@pytest.mark.parametrize(
    ("name", "flags", "exc"),
    [
        ("missing", os.O_RDONLY, FileNotFoundError),
        ("data/below", os.O_RDONLY, NotADirectoryError),
        (".", os.O_WRONLY, IsADirectoryError),
    ],
)
async def test_open_errors_carry_the_filename(
    executor: str, data_file: Path, name: str, flags: int, exc: type[OSError]
) -> None:
    path = os.path.join(data_file.parent, name)
    with pytest.raises(exc) as info:
        await ouring.open(path, flags)
    assert info.value.filename == path


async def test_open_relative_to_dir_fd(executor: str, tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "inside").write_bytes(b"found")
    with opened(tmp_path / "sub", os.O_RDONLY | os.O_DIRECTORY) as dir_fd:
        fd = await ouring.open("inside", dir_fd=dir_fd)
        try:
            assert os.read(fd, 10) == b"found"
        finally:
            os.close(fd)
        fd = await ouring.open(b"created", os.O_WRONLY | os.O_CREAT, dir_fd=dir_fd)
        os.close(fd)
        with pytest.raises(FileNotFoundError):
            await ouring.open("sub", dir_fd=dir_fd)  # not relative to the cwd
    assert (tmp_path / "sub" / "created").exists()


async def test_close_closes_an_int_fd(executor: str, data_file: Path) -> None:
    ouring.current_ring()  # the run's ring has its fd before counting
    fd = os.open(data_file, os.O_RDONLY)
    before = fd_count()
    await ouring.close(fd)
    assert fd_count() == before - 1
    with pytest.raises(OSError, match="Bad file descriptor") as info:
        os.fstat(fd)
    assert info.value.errno == errno.EBADF


async def test_close_of_a_socket_detaches_it(
    socketpair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = socketpair
    fd = a.fileno()
    await ouring.close(a)
    assert a.fileno() == -1  # detached: the socket object no longer owns the fd
    with pytest.raises(OSError, match="Bad file descriptor") as info:
        os.fstat(fd)
    assert info.value.errno == errno.EBADF
    assert b.recv(10) == b""  # the peer sees the close
    a.close()  # a no-op now, and no ResourceWarning later


def stat_fields(st: os.stat_result) -> dict[str, Any]:
    """Every attribute, not just the ten that stat_result equality compares."""
    return {name: getattr(st, name) for name in dir(st) if name.startswith("st_")}


def assert_same_stat(got: os.stat_result, expected: os.stat_result) -> None:
    assert isinstance(got, os.stat_result)
    assert tuple(got) == tuple(expected)
    assert stat_fields(got) == stat_fields(expected)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A file, a directory, a symlink to each, and a dangling symlink."""
    (tmp_path / "file").write_bytes(DATA * 1000)
    (tmp_path / "dir").mkdir()
    (tmp_path / "link-to-file").symlink_to("file")
    (tmp_path / "link-to-dir").symlink_to("dir")
    (tmp_path / "dangling").symlink_to("nowhere")
    os.utime(tmp_path / "file", ns=(1_000_000_123, 2_000_000_456))  # nanoseconds kept
    return tmp_path


@pytest.mark.parametrize("name", ["file", "dir", "link-to-file", "link-to-dir"])
@pytest.mark.parametrize("follow_symlinks", [True, False])
async def test_stat_matches_os_stat(
    executor: str, tree: Path, name: str, follow_symlinks: bool
) -> None:
    path = tree / name
    got = await ouring.stat(path, follow_symlinks=follow_symlinks)
    assert_same_stat(got, os.stat(path, follow_symlinks=follow_symlinks))


async def test_stat_of_a_symlink_without_following_is_lstat(tree: Path) -> None:
    got = await ouring.stat(tree / "link-to-file", follow_symlinks=False)
    assert_same_stat(got, os.lstat(tree / "link-to-file"))
    assert got.st_size == len("file")  # the link itself
    dangling = await ouring.stat(str(tree / "dangling"), follow_symlinks=False)
    assert_same_stat(dangling, os.lstat(tree / "dangling"))
    with pytest.raises(FileNotFoundError) as info:
        await ouring.stat(str(tree / "dangling"))
    assert info.value.filename == str(tree / "dangling")


async def test_stat_keeps_nanoseconds(tree: Path) -> None:
    st = await ouring.stat(tree / "file")
    assert (st.st_atime_ns, st.st_mtime_ns) == (1_000_000_123, 2_000_000_456)
    assert st.st_size == len(DATA) * 1000


async def test_stat_of_an_fd_and_a_device(tree: Path) -> None:
    with opened(tree / "file") as fd:
        assert_same_stat(await ouring.stat(fd), os.fstat(fd))
    with opened(tree / "dir", os.O_RDONLY | os.O_DIRECTORY) as dir_fd:
        assert_same_stat(await ouring.stat(dir_fd), os.fstat(dir_fd))
    with opened(tree, os.O_RDONLY | os.O_DIRECTORY) as dir_fd:
        relative = await ouring.stat("link-to-file", dir_fd=dir_fd, follow_symlinks=False)
        assert_same_stat(relative, os.lstat(tree / "link-to-file"))
    null = await ouring.stat("/dev/null")
    assert_same_stat(null, os.stat("/dev/null"))
    assert null.st_rdev != 0


async def test_stat_of_a_missing_path_raises_with_the_filename(
    executor: str, tmp_path: Path
) -> None:
    path = str(tmp_path / "missing")
    with pytest.raises(FileNotFoundError) as info:
        await ouring.stat(path)
    assert info.value.errno == errno.ENOENT
    assert info.value.filename == path


# -- sockets ---------------------------------------------------------------------


def listening(family: int, tmp_path: Path) -> socket.socket:
    listener = socket.socket(family)
    if family == socket.AF_UNIX:
        listener.bind(str(tmp_path / "listener"))
    else:
        listener.bind((LOOPBACK[family], 0))
    listener.listen()
    return listener


# How the client of an accept test is made: its family, and what it binds to.
CLIENTS: dict[str, tuple[int, Callable[[Path], Any] | None]] = {
    "inet": (socket.AF_INET, None),
    "inet6": (socket.AF_INET6, None),
    "unix": (socket.AF_UNIX, None),  # unbound: the peer address is ''
    "unix-bound": (socket.AF_UNIX, lambda tmp_path: str(tmp_path / "client")),
    "unix-abstract": (
        socket.AF_UNIX,
        lambda _: b"\0ouring-test-" + os.urandom(8).hex().encode(),
    ),
}


@dataclass
class Connection:
    client: socket.socket
    server: socket.socket  # from ouring.accept
    listener: socket.socket
    address: Any  # what ouring.accept returned with the server socket


async def connected(kind: str, tmp_path: Path, stack: ExitStack) -> Connection:
    """A client and a server connected through ouring.connect and ouring.accept."""
    family, bind_to = CLIENTS[kind]
    listener = stack.enter_context(listening(family, tmp_path))
    client = stack.enter_context(socket.socket(family))
    if bind_to is not None:
        client.bind(bind_to(tmp_path))
    await ouring.connect(client, listener.getsockname())
    server, address = await ouring.accept(listener)
    stack.enter_context(server)
    return Connection(client, server, listener, address)


STREAM_KINDS = [
    "socketpair",
    "inet",
    pytest.param("inet6", marks=needs_ipv6),
    "unix",
]
ACCEPT_KINDS = [
    "inet",
    pytest.param("inet6", marks=needs_ipv6),
    "unix",
    "unix-bound",
    "unix-abstract",
]


@pytest.fixture(params=STREAM_KINDS)
async def stream(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[socket.socket, socket.socket]]:
    """Two connected stream sockets of the kind named by the parameter."""
    with ExitStack() as stack:
        if request.param == "socketpair":
            a, b = socket.socketpair()
            stack.enter_context(a)
            stack.enter_context(b)
        else:
            connection = await connected(request.param, tmp_path, stack)
            a, b = connection.client, connection.server
        yield a, b


@pytest.mark.parametrize("kind", ACCEPT_KINDS)
async def test_accept_returns_a_working_socket_and_the_peer_address(
    executor: str, kind: str, tmp_path: Path
) -> None:
    with ExitStack() as stack:
        connection = await connected(kind, tmp_path, stack)
        client, server, listener = connection.client, connection.server, connection.listener
        assert connection.address == client.getsockname()
        assert isinstance(server, socket.socket)
        assert server.family == listener.family
        assert server.type == socket.SOCK_STREAM
        assert server.getpeername() == client.getsockname()
        assert server.getsockname() == listener.getsockname()
        assert not os.get_inheritable(server.fileno())  # close-on-exec, like socket.accept
        assert server.gettimeout() is None  # blocking, like socket.accept's
        client.sendall(b"ping")
        assert server.recv(10) == b"ping"
        server.sendall(b"pong")
        assert client.recv(10) == b"pong"


@pytest.mark.parametrize("kind", ACCEPT_KINDS)
async def test_accept_address_is_what_socket_accept_returns(kind: str, tmp_path: Path) -> None:
    family, bind_to = CLIENTS[kind]
    with listening(family, tmp_path) as listener:
        clients = []
        with ExitStack() as stack:
            for i in range(2):
                client = stack.enter_context(socket.socket(family))
                if bind_to is not None:
                    (tmp_path / str(i)).mkdir()
                    client.bind(bind_to(tmp_path / str(i)))
                client.connect(listener.getsockname())
                clients.append(client)
            conn, address = await ouring.accept(listener)
            stack.enter_context(conn)
            expected_conn, expected_address = listener.accept()
            stack.enter_context(expected_conn)
            assert address == clients[0].getsockname()
            assert expected_address == clients[1].getsockname()
            assert type(address) is type(expected_address)


async def test_send_and_recv(stream: tuple[socket.socket, socket.socket]) -> None:
    a, b = stream
    data = b"over the stream"
    got, n = await ouring.send(a, data)
    assert (got, n) == (data, len(data))
    assert got is data
    buf = bytearray(64)
    got_buf, n = await ouring.recv(b, buf)
    assert got_buf is buf
    assert bytes(buf[:n]) == data
    # the other direction, with a memoryview slice on both ends
    backing = bytearray(b"[.....]")
    _, n = await ouring.send(b, memoryview(b"xhellox")[1:6])
    assert n == 5
    _, n = await ouring.recv(a, memoryview(backing)[1:6])
    assert (n, backing) == (5, bytearray(b"[hello]"))


async def test_recv_returns_zero_after_the_peer_closes(
    stream: tuple[socket.socket, socket.socket],
) -> None:
    a, b = stream
    b.sendall(b"last")
    b.close()
    buf, n = await ouring.recv(a, bytearray(16))
    assert bytes(buf[:n]) == b"last"
    assert (await ouring.recv(a, bytearray(16)))[1] == 0
    assert (await ouring.recv(a, bytearray(16)))[1] == 0  # and stays at EOF


async def test_recv_parked_until_data_arrives(
    stream: tuple[socket.socket, socket.socket],
) -> None:
    a, b = stream
    got: list[bytes] = []

    async def receiver() -> None:
        buf, n = await ouring.recv(a, bytearray(16))
        got.append(bytes(buf[:n]))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receiver)
        await trio.testing.wait_all_tasks_blocked()
        assert ouring.current_ring().statistics().inflight == 1
        assert got == []
        await ouring.send(b, b"late")
    assert got == [b"late"]


async def test_recv_with_msg_peek_leaves_the_data(
    stream: tuple[socket.socket, socket.socket],
) -> None:
    a, b = stream
    b.sendall(b"peek")
    buf, n = await ouring.recv(a, bytearray(16), socket.MSG_PEEK)
    assert bytes(buf[:n]) == b"peek"
    buf, n = await ouring.recv(a, bytearray(16))
    assert bytes(buf[:n]) == b"peek"  # still there after the peek
    buf = bytearray(4)
    with pytest.raises(BlockingIOError) as info:
        await ouring.recv(a, buf, socket.MSG_DONTWAIT)  # and now gone
    assert info.value.buffer is buf  # type: ignore[attr-defined]


async def test_send_to_a_closed_socketpair_peer_is_a_broken_pipe(
    socketpair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = socketpair
    b.close()
    data = b"nobody listens"
    with pytest.raises(BrokenPipeError) as info:
        await ouring.send(a, data)
    assert info.value.buffer is data  # type: ignore[attr-defined]
    assert_idle()


@pytest.mark.parametrize("kind", ["inet", pytest.param("inet6", marks=needs_ipv6)])
async def test_send_after_a_tcp_reset_is_connection_reset(kind: str, tmp_path: Path) -> None:
    with ExitStack() as stack:
        connection = await connected(kind, tmp_path, stack)
        client, server = connection.client, connection.server
        server.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        server.close()  # linger 0: a reset, not a FIN
        readable, _, _ = select.select([client], [], [], 5)  # the kernel saw the reset
        assert readable
        buf = bytearray(b"after the reset")
        with pytest.raises((ConnectionResetError, BrokenPipeError)) as info:
            await ouring.send(client, buf)
        assert info.value.buffer is buf  # type: ignore[attr-defined]
        buf.extend(b"!")  # the lease came back with the error


@pytest.mark.parametrize(
    "family", [socket.AF_INET, pytest.param(socket.AF_INET6, marks=needs_ipv6)]
)
async def test_connect_to_a_closed_port_is_refused(executor: str, family: int) -> None:
    with socket.socket(family) as bound, socket.socket(family) as client:
        bound.bind((LOOPBACK[family], 0))  # bound but not listening: the port refuses
        ouring.current_ring()
        before = fd_count()
        with pytest.raises(ConnectionRefusedError) as info:
            await ouring.connect(client, bound.getsockname())
        assert info.value.errno == errno.ECONNREFUSED
        assert fd_count() == before
        assert_idle()


async def test_connect_resolves_a_host_name(executor: str, tmp_path: Path) -> None:
    with listening(socket.AF_INET, tmp_path) as listener, socket.socket() as client:
        port = listener.getsockname()[1]
        await ouring.connect(client, ("localhost", port))
        assert client.getpeername() == ("127.0.0.1", port)
        conn, address = await ouring.accept(listener)
        with conn:
            assert address == client.getsockname()


async def test_connect_and_accept_take_an_fd_or_a_fileno_object(tmp_path: Path) -> None:
    with listening(socket.AF_UNIX, tmp_path) as listener, socket.socket(socket.AF_UNIX) as client:
        await ouring.connect(client.fileno(), str(tmp_path / "listener"))
        conn, address = await ouring.accept(listener.fileno())
        with conn:
            assert address == ""
            await ouring.send(conn.fileno(), b"by fd")
            assert client.recv(10) == b"by fd"
        assert client.fileno() != -1  # probing the family did not take the fd over


async def test_trio_sockets_and_non_blocking_fds_park_instead_of_failing() -> None:
    """trio's sockets are O_NONBLOCK: operations on them wait for readiness
    in the kernel, never fail with EAGAIN."""
    with trio.socket.socket() as listener, trio.socket.socket() as client:
        await listener.bind(("127.0.0.1", 0))
        listener.listen()
        accepted: list[tuple[socket.socket, Any]] = []

        async def acceptor() -> None:
            accepted.append(await ouring.accept(listener))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(acceptor)
            await trio.testing.wait_all_tasks_blocked()
            assert accepted == []
            assert ouring.current_ring().statistics().inflight == 1
            await ouring.connect(client, listener.getsockname())
        [(conn, address)] = accepted
        with conn:
            assert address == client.getsockname()
            conn.setblocking(False)
            received: list[bytes] = []

            async def receiver() -> None:
                buf, n = await ouring.recv(conn, bytearray(8))
                received.append(bytes(buf[:n]))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(receiver)
                await trio.testing.wait_all_tasks_blocked()
                assert received == []
                await ouring.send(client, b"trio")
            assert received == [b"trio"]


@pytest.mark.parametrize(
    "name", ["read", "write", "readv", "writev", "recv", "send", "recvmsg", "sendmsg"]
)
async def test_a_closed_socket_object_fails_with_the_buffer(name: str) -> None:
    """A closed socket.socket has fileno() == -1: the EBADF is raised at the
    call, and like every error of a buffer-carrying operation it should hand
    the buffer back in ``.buffer``."""
    dead = socket.socket()
    dead.close()
    buf = bytearray(4)
    arg: Any = [buf] if name in ("readv", "writev", "recvmsg", "sendmsg") else buf
    with pytest.raises(OSError, match="Bad file descriptor") as info:
        await getattr(ouring, name)(dead, arg)
    assert info.value.errno == errno.EBADF
    assert getattr(info.value, "buffer", None) is arg


async def test_nop_on_a_ring_of_its_own() -> None:
    async with ouring.open_ring(4) as ring:
        await ring.nop()
        stats = ring.statistics()
        assert (stats.completed, stats.inflight) == (1, 0)


# -- recvmsg and sendmsg -----------------------------------------------------------------
#
# Each result is compared with what the socket module returns for the same
# datagram: the stdlib receives one copy, ouring an identical one.

Ancillary = list[tuple[int, int, bytes]]


@contextmanager
def udp_pair(family: int) -> Iterator[tuple[socket.socket, socket.socket]]:
    """A bound receiver and a bound sender on the loopback of ``family``."""
    with (
        socket.socket(family, socket.SOCK_DGRAM) as rx,
        socket.socket(family, socket.SOCK_DGRAM) as tx,
    ):
        rx.bind((LOOPBACK[family], 0))
        tx.bind((LOOPBACK[family], 0))
        yield rx, tx


def received_fds(ancdata: Ancillary) -> list[int]:
    fds = array.array("i")
    for level, kind, data in ancdata:
        if (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS):
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    return list(fds)


UDP_FAMILIES = [socket.AF_INET, pytest.param(socket.AF_INET6, marks=needs_ipv6)]


@pytest.mark.parametrize("family", UDP_FAMILIES)
async def test_udp_sendmsg_to_an_address_and_recvmsg_as_the_socket_module(
    executor: str, family: int
) -> None:
    with udp_pair(family) as (rx, tx):
        for _ in range(2):
            _, n = await ouring.sendmsg(tx, [b"da", memoryview(b"tagram")], (), 0, rx.getsockname())
            assert n == 8
        expected = rx.recvmsg_into([bytearray(3), bytearray(10)])
        scatter = [bytearray(3), bytearray(10)]
        got_bufs, *rest = await ouring.recvmsg(rx, scatter)
        assert got_bufs is scatter
        assert tuple(rest) == expected
        assert rest[3] == tx.getsockname()
        assert (bytes(scatter[0]), bytes(scatter[1][:5])) == (b"dat", b"agram")
        assert_idle()


@pytest.mark.parametrize("family", UDP_FAMILIES)
async def test_udp_recvmsg_of_a_longer_datagram_says_msg_trunc(family: int) -> None:
    with udp_pair(family) as (rx, tx):
        for _ in range(2):
            tx.sendto(b"0123456789", rx.getsockname())
        expected = rx.recvmsg_into([bytearray(4)])
        buf = bytearray(4)
        _, *rest = await ouring.recvmsg(rx, [buf])
        assert tuple(rest) == expected
        n, ancdata, msg_flags, _ = rest
        assert (n, bytes(buf), ancdata) == (4, b"0123", [])
        assert msg_flags & socket.MSG_TRUNC
        # MSG_TRUNC in flags: the datagram's real length, as recvmsg_into says
        for _ in range(2):
            tx.sendto(b"0123456789", rx.getsockname())
        expected = rx.recvmsg_into([bytearray(4)], 0, socket.MSG_TRUNC)
        _, *rest = await ouring.recvmsg(rx, [bytearray(4)], 0, socket.MSG_TRUNC)
        assert tuple(rest) == expected
        assert rest[0] == 10


async def test_recvmsg_parses_several_control_messages_as_the_socket_module() -> None:
    """Two control messages (TTL, then TOS) back to back, CMSG-aligned; then a
    control buffer with room for only the first: MSG_CTRUNC."""
    ip_recvttl, ip_ttl = 12, 2  # linux/in.h; the socket module does not export them
    with udp_pair(socket.AF_INET) as (rx, tx):
        rx.setsockopt(socket.IPPROTO_IP, socket.IP_RECVTOS, 1)
        rx.setsockopt(socket.IPPROTO_IP, ip_recvttl, 1)
        tx.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 0x10)
        tx.setsockopt(socket.IPPROTO_IP, ip_ttl, 33)
        ttl = (socket.IPPROTO_IP, ip_ttl, struct.pack("@i", 33))
        tos = (socket.IPPROTO_IP, socket.IP_TOS, b"\x10")
        rounds = [
            (socket.CMSG_SPACE(4) + socket.CMSG_SPACE(1), [ttl, tos], 0),
            (socket.CMSG_SPACE(4), [ttl], socket.MSG_CTRUNC),
        ]
        for ancbufsize, ancdata, msg_flags in rounds:
            for _ in range(2):
                tx.sendto(b"ttl and tos", rx.getsockname())
            expected = rx.recvmsg_into([bytearray(16)], ancbufsize)
            _, *rest = await ouring.recvmsg(rx, [bytearray(16)], ancbufsize)
            assert tuple(rest) == expected
            assert (rest[1], rest[2]) == (ancdata, msg_flags)


async def test_recvmsg_on_a_stream_has_no_address_and_honours_msg_peek(
    stream: tuple[socket.socket, socket.socket],
) -> None:
    a, b = stream
    b.sendall(b"peeked")
    buf = bytearray(16)
    _, n, ancdata, msg_flags, address = await ouring.recvmsg(a, [buf], 0, socket.MSG_PEEK)
    assert (bytes(buf[:n]), ancdata, msg_flags) == (b"peeked", [], 0)
    assert address == a.recvmsg(16, 0, socket.MSG_PEEK)[3]  # None or '', as socket says
    _, n, *_ = await ouring.recvmsg(a, [bytearray(16)])
    assert n == 6
    _, n = await ouring.sendmsg(a, [b"x", b"", b"yz"])
    assert n == 3
    assert b.recv(16) == b"xyz"


@pytest.mark.parametrize("kind", [socket.SOCK_DGRAM, socket.SOCK_STREAM])
async def test_sendmsg_and_recvmsg_pass_fds_with_scm_rights(kind: int) -> None:
    ouring.current_ring()  # the run's ring exists before the fds are counted
    before = fd_count()
    r, w = os.pipe()
    a, b = socket.socketpair(socket.AF_UNIX, kind)
    with a, b:
        rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [r, w]))]
        _, n = await ouring.sendmsg(a, [b"fds"], rights)
        assert n == 3
        a.sendmsg([b"fds"], rights)  # the same again for the socket module
        os.close(r)
        os.close(w)
        buf = bytearray(3)
        _, n, ancdata, msg_flags, address = await ouring.recvmsg(b, [buf], socket.CMSG_SPACE(8))
        expected = b.recvmsg_into([bytearray(3)], socket.CMSG_SPACE(8))
        try:
            assert (bytes(buf), n, msg_flags, address) == (b"fds", *expected[:1], *expected[2:])
            assert [(level, kind, len(data)) for level, kind, data in ancdata] == [
                (level, kind, len(data)) for level, kind, data in expected[1]
            ]
            got_r, got_w = received_fds(ancdata)
            assert [os.get_inheritable(fd) for fd in (got_r, got_w)] == [
                os.get_inheritable(fd) for fd in received_fds(expected[1])
            ]
            os.write(got_w, b"through a passed fd")
            assert os.read(got_r, 64) == b"through a passed fd"
        finally:
            for fd in received_fds(ancdata) + received_fds(expected[1]):
                os.close(fd)
    assert fd_count() == before


async def test_recvmsg_with_room_for_one_fd_of_two_says_msg_ctrunc() -> None:
    ouring.current_ring()  # the run's ring exists before the fds are counted
    before = fd_count()
    r, w = os.pipe()
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with a, b:
        rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [r, w]))]
        a.sendmsg([b"1"], rights)
        a.sendmsg([b"2"], rights)
        os.close(r)
        os.close(w)
        _, _, ancdata, msg_flags, _ = await ouring.recvmsg(b, [bytearray(1)], socket.CMSG_LEN(4))
        expected = b.recvmsg_into([bytearray(1)], socket.CMSG_LEN(4))
        try:
            assert msg_flags == expected[2]
            assert msg_flags & socket.MSG_CTRUNC
            assert len(received_fds(ancdata)) == len(received_fds(expected[1])) == 1
        finally:
            for fd in received_fds(ancdata) + received_fds(expected[1]):
                os.close(fd)
    assert fd_count() == before


@pytest.mark.parametrize("name", ["recvmsg", "sendmsg"])
async def test_more_buffers_than_iov_max_is_emsgsize_with_the_buffers(
    name: str, socketpair: tuple[socket.socket, socket.socket]
) -> None:
    """What socket.recvmsg_into and socket.sendmsg raise, at the call; like
    every error of a buffer-carrying operation it hands the buffers back."""
    bufs = [bytearray(1) for _ in range(1025)]
    with pytest.raises(OSError, match="IOV_MAX") as info:
        await getattr(ouring, name)(socketpair[0], bufs)
    assert info.value.errno == errno.EMSGSIZE
    assert info.value.buffer is bufs  # type: ignore[attr-defined]
    assert_idle()


async def test_sendmsg_resolves_a_host_name(
    executor: str,
) -> None:
    with udp_pair(socket.AF_INET) as (rx, tx):
        _, n = await ouring.sendmsg(tx, [b"named"], (), 0, ("localhost", rx.getsockname()[1]))
        assert n == 5
        assert rx.recvfrom(16) == (b"named", tx.getsockname())


async def test_a_cancelled_parked_recvmsg_consumes_nothing() -> None:
    with udp_pair(socket.AF_INET) as (rx, tx):
        buf = bytearray(b"untouched")
        with trio.CancelScope() as scope:

            async def cancel_when_parked() -> None:
                await trio.testing.wait_all_tasks_blocked()
                assert ouring.current_ring().statistics().inflight == 1
                scope.cancel()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(cancel_when_parked)
                await ouring.recvmsg(rx, [buf], 64)
                raise AssertionError("the cancelled recvmsg returned")
        assert scope.cancelled_caught
        assert_idle()
        assert buf == b"untouched"
        buf.extend(b"!")  # no export left: the buffer is the caller's again
        tx.sendto(b"after", rx.getsockname())
        assert rx.recvfrom(16) == (b"after", tx.getsockname())  # nothing was eaten


@pytest.mark.io_uring_only  # steps the ring by hand (flush); the fallback has its own
async def test_a_recvmsg_nobody_receives_closes_the_fds_it_got() -> None:
    ring = ouring.current_ring()
    before = fd_count()
    r, w = os.pipe()
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with a, b:
        first = ring.nop()
        first.send(None)  # a lone task's first op goes at once: this one
        coro = ouring.recvmsg(b, [bytearray(4)], socket.CMSG_SPACE(8))
        coro.send(None)  # parked: queued behind the nop
        ring.flush()  # the kernel has the recvmsg
        a.sendmsg([b"fds"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [r, w]))])
        os.close(r)
        os.close(w)
        readable, _, _ = select.select([ring.wait_fd], [], [], 5)
        assert readable  # the recvmsg completed with two new fds...
        coro.close()  # ...that nobody will receive
        first.close()
        await ouring.wait_all_ops_completed()
    assert fd_count() == before  # discard() closed them


# -- errors carry the buffer --------------------------------------------------------------


def two_buffers(size: int) -> list[bytearray]:
    return [bytearray(size), bytearray(size)]


@pytest.mark.parametrize(
    ("call", "make", "code"),
    [
        (lambda p, buf: ouring.read(p[1], buf), bytearray, errno.EBADF),
        (lambda p, buf: ouring.write(p[0], buf), bytes, errno.EBADF),
        (lambda p, buf: ouring.readv(p[1], buf), two_buffers, errno.EBADF),
        (lambda p, buf: ouring.writev(p[0], buf), lambda n: [bytes(n), b"x"], errno.EBADF),
        (lambda p, buf: ouring.recv(p[0], buf), bytearray, errno.ENOTSOCK),
        (lambda p, buf: ouring.send(p[1], buf), bytes, errno.ENOTSOCK),
        (lambda p, buf: ouring.recvmsg(p[0], buf), two_buffers, errno.ENOTSOCK),
        (lambda p, buf: ouring.sendmsg(p[1], buf), lambda n: [bytes(n)], errno.ENOTSOCK),
    ],
    ids=[
        "read-write-end",
        "write-read-end",
        "readv",
        "writev",
        "recv-pipe",
        "send-pipe",
        "recvmsg-pipe",
        "sendmsg-pipe",
    ],
)
async def test_error_completions_carry_the_buffer(
    executor: str,
    pipe: tuple[int, int],
    call: Callable[[tuple[int, int], Any], Awaitable[tuple[Any, int]]],
    make: Callable[[int], Any],
    code: int,
) -> None:
    buf = make(4)
    with pytest.raises(OSError, match=os.strerror(code)) as info:
        await call(pipe, buf)
    assert info.value.errno == code
    assert info.value.buffer is buf  # type: ignore[attr-defined]
    assert_idle()


# -- bad input ------------------------------------------------------------------------


@dataclass
class Env:
    """What the bad calls are made with."""

    r: int  # a pipe's read end
    w: int  # its write end
    sock: socket.socket  # one end of a socketpair
    tcp: socket.socket  # an unconnected, unbound TCP socket
    udp: socket.socket
    tcp6: socket.socket | None  # None when the host has no IPv6
    unix: socket.socket  # an unconnected AF_UNIX stream socket
    dead: socket.socket  # a closed socket.socket
    path: Path  # an existing file
    closed: int  # an fd number that is closed
    buf: bytearray


# Called through Any: the table passes wrong types on purpose.
api: Any = ouring
NUL_PATH = "bad\0path"


def bad(
    call: Callable[[Env], Awaitable[object]],
    raises: type[BaseException] | tuple[type[BaseException], ...],
    code: int | None = None,
    *,
    id: str,  # noqa: A002 - pytest.param's name
    carries_buffer: bool = False,
) -> Any:
    marks = [needs_ipv6] if id.startswith("connect6") else []
    return pytest.param(call, raises, code, carries_buffer, id=id, marks=marks)


def kernel(call: Callable[[Env], Awaitable[object]], code: int, *, id: str) -> Any:  # noqa: A002
    """A call the kernel fails: an OSError of the errno's own class, with the buffer."""
    raises = type(OSError(code, os.strerror(code)))
    return bad(call, raises, code, id=id, carries_buffer=True)


BAD_INPUT = [
    # read
    bad(lambda e: api.read("3", e.buf), TypeError, id="read-str-fd"),
    bad(lambda e: api.read(float(e.r), e.buf), TypeError, id="read-float-fd"),
    bad(lambda e: api.read(e.r, e.buf, 1.0), TypeError, id="read-float-offset"),
    bad(lambda e: api.read(e.r, e.buf, "0"), TypeError, id="read-str-offset"),
    bad(lambda e: api.read(e.r, None), TypeError, id="read-none-buffer"),
    bad(lambda e: api.read(e.r, b"bytes"), TypeError, id="read-bytes-buffer"),
    bad(lambda e: api.read(e.r, "text"), TypeError, id="read-str-buffer"),
    bad(lambda e: api.read(e.r, memoryview(bytearray(8))[::2]), BufferError, id="read-strided"),
    bad(lambda e: api.read(e.r, e.buf, -2), ValueError, id="read-offset-minus-2"),
    bad(lambda e: api.read(e.r, e.buf, 1 << 63), OverflowError, id="read-offset-2**63"),
    bad(lambda e: api.read(HasFileno("3"), e.buf), TypeError, id="read-fileno-returns-str"),
    bad(lambda e: api.read(HasFileno(-1), e.buf), OSError, errno.EBADF, id="read-fileno-minus-1"),
    bad(lambda e: api.read(-1, e.buf), OSError, errno.EBADF, id="read-negative-fd"),
    bad(lambda e: api.read(1 << 31, e.buf), OSError, errno.EBADF, id="read-fd-2**31"),
    kernel(lambda e: api.read(e.closed, e.buf), errno.EBADF, id="read-closed-fd"),
    # write
    bad(lambda e: api.write("4", e.buf), TypeError, id="write-str-fd"),
    bad(lambda e: api.write(e.w, e.buf, 0.5), TypeError, id="write-float-offset"),
    bad(lambda e: api.write(e.w, None), TypeError, id="write-none-buffer"),
    bad(lambda e: api.write(e.w, "text"), TypeError, id="write-str-buffer"),
    bad(lambda e: api.write(e.w, e.buf, -5), ValueError, id="write-offset-minus-5"),
    bad(lambda e: api.write(-3, e.buf), OSError, errno.EBADF, id="write-negative-fd"),
    kernel(lambda e: api.write(e.closed, e.buf), errno.EBADF, id="write-closed-fd"),
    # readv
    bad(lambda e: api.readv("3", [e.buf]), TypeError, id="readv-str-fd"),
    bad(lambda e: api.readv(e.r, None), TypeError, id="readv-none"),
    bad(lambda e: api.readv(e.r, 7), TypeError, id="readv-int"),
    bad(lambda e: api.readv(e.r, [e.buf, None]), TypeError, id="readv-none-buffer"),
    bad(lambda e: api.readv(e.r, [e.buf, b"ro"]), TypeError, id="readv-bytes-buffer"),
    bad(lambda e: api.readv(e.r, e.buf), TypeError, id="readv-bare-bytearray"),
    bad(lambda e: api.readv(e.r, [e.buf], 2.0), TypeError, id="readv-float-offset"),
    bad(lambda e: api.readv(e.r, [e.buf], -2), ValueError, id="readv-offset-minus-2"),
    bad(
        lambda e: api.readv(e.r, [bytearray(1) for _ in range(1025)]),
        ValueError,
        id="readv-1025-buffers",
    ),
    bad(lambda e: api.readv(-1, [e.buf]), OSError, errno.EBADF, id="readv-negative-fd"),
    bad(lambda e: api.readv(e.closed, [e.buf]), OSError, errno.EBADF, id="readv-closed-fd"),
    # writev
    bad(lambda e: api.writev(e.w, None), TypeError, id="writev-none"),
    bad(lambda e: api.writev(e.w, [e.buf, None]), TypeError, id="writev-none-buffer"),
    bad(lambda e: api.writev(e.w, [e.buf, 1]), TypeError, id="writev-int-buffer"),
    bad(lambda e: api.writev(e.w, [e.buf], -7), ValueError, id="writev-offset-minus-7"),
    bad(lambda e: api.writev(-1, [e.buf]), OSError, errno.EBADF, id="writev-negative-fd"),
    bad(lambda e: api.writev(e.closed, [e.buf]), OSError, errno.EBADF, id="writev-closed-fd"),
    # recv
    bad(lambda e: api.recv("5", e.buf), TypeError, id="recv-str-sock"),
    bad(lambda e: api.recv(e.sock, None), TypeError, id="recv-none-buffer"),
    bad(lambda e: api.recv(e.sock, b"ro"), TypeError, id="recv-bytes-buffer"),
    bad(lambda e: api.recv(e.sock, e.buf, 1.0), TypeError, id="recv-float-flags"),
    bad(lambda e: api.recv(e.sock, e.buf, -1), ValueError, id="recv-negative-flags"),
    bad(lambda e: api.recv(-1, e.buf), OSError, errno.EBADF, id="recv-negative-fd"),
    bad(lambda e: api.recv(e.dead, e.buf), OSError, errno.EBADF, id="recv-closed-socket"),
    kernel(lambda e: api.recv(e.closed, e.buf), errno.EBADF, id="recv-closed-fd"),
    kernel(lambda e: api.recv(e.r, e.buf), errno.ENOTSOCK, id="recv-pipe"),
    kernel(lambda e: api.recv(e.tcp, e.buf), errno.ENOTCONN, id="recv-unconnected"),
    # send
    bad(lambda e: api.send("5", e.buf), TypeError, id="send-str-sock"),
    bad(lambda e: api.send(e.sock, None), TypeError, id="send-none-buffer"),
    bad(lambda e: api.send(e.sock, "text"), TypeError, id="send-str-buffer"),
    bad(lambda e: api.send(e.sock, e.buf, 1 << 32), ValueError, id="send-flags-2**32"),
    bad(lambda e: api.send(-1, e.buf), OSError, errno.EBADF, id="send-negative-fd"),
    kernel(lambda e: api.send(e.closed, e.buf), errno.EBADF, id="send-closed-fd"),
    kernel(lambda e: api.send(e.w, e.buf), errno.ENOTSOCK, id="send-pipe"),
    kernel(lambda e: api.send(e.tcp, e.buf), errno.EPIPE, id="send-unconnected"),
    # accept
    bad(lambda e: api.accept("6"), TypeError, id="accept-str"),
    bad(lambda e: api.accept(None), TypeError, id="accept-none"),
    bad(lambda e: api.accept(-1), OSError, errno.EBADF, id="accept-negative-fd"),
    bad(lambda e: api.accept(e.closed), OSError, errno.EBADF, id="accept-closed-fd"),
    bad(lambda e: api.accept(e.dead), OSError, errno.EBADF, id="accept-closed-socket"),
    bad(lambda e: api.accept(e.r), OSError, errno.ENOTSOCK, id="accept-pipe"),
    bad(lambda e: api.accept(e.tcp), OSError, errno.EINVAL, id="accept-not-listening"),
    bad(lambda e: api.accept(e.udp), OSError, errno.EOPNOTSUPP, id="accept-udp"),
    # connect
    bad(lambda e: api.connect("6", ("127.0.0.1", 1)), TypeError, id="connect-str-sock"),
    bad(lambda e: api.connect(-1, ("127.0.0.1", 1)), OSError, errno.EBADF, id="connect-neg-fd"),
    bad(
        lambda e: api.connect(e.closed, ("127.0.0.1", 1)),
        OSError,
        errno.EBADF,
        id="connect-closed-fd",
    ),
    bad(
        lambda e: api.connect(e.r, ("127.0.0.1", 1)),
        OSError,
        errno.ENOTSOCK,
        id="connect-pipe",
    ),
    bad(lambda e: api.connect(e.tcp, ("127.0.0.1",)), TypeError, id="connect-1-tuple"),
    bad(lambda e: api.connect(e.tcp, ("127.0.0.1", 1, 2)), TypeError, id="connect-3-tuple"),
    bad(lambda e: api.connect(e.tcp, "127.0.0.1:80"), TypeError, id="connect-str-address"),
    bad(lambda e: api.connect(e.tcp, None), TypeError, id="connect-none-address"),
    bad(lambda e: api.connect(e.tcp, (0x7F000001, 80)), TypeError, id="connect-int-host"),
    bad(lambda e: api.connect(e.tcp, ("127.0.0.1", "80")), TypeError, id="connect-str-port"),
    bad(lambda e: api.connect(e.tcp, ("127.0.0.1", 1.0)), TypeError, id="connect-float-port"),
    bad(lambda e: api.connect(e.tcp, ("127.0.0.1", -1)), OverflowError, id="connect-port-minus-1"),
    bad(lambda e: api.connect(e.tcp, ("127.0.0.1", 65536)), OverflowError, id="connect-port-65536"),
    bad(lambda e: api.connect(e.tcp6, ("::1",)), TypeError, id="connect6-1-tuple"),
    bad(lambda e: api.connect(e.tcp6, ("::1", 1, 0, 0, 0)), TypeError, id="connect6-5-tuple"),
    bad(lambda e: api.connect(e.tcp6, ("::1", 1, "0")), TypeError, id="connect6-str-flowinfo"),
    bad(lambda e: api.connect(e.tcp6, ("::1", 1, 0, "0")), TypeError, id="connect6-str-scope"),
    bad(
        lambda e: api.connect(e.tcp6, ("::1", 1, 1 << 32)),
        (OverflowError, ValueError),
        id="connect6-flowinfo-2**32",
    ),
    bad(
        lambda e: api.connect(e.tcp6, ("::1", 1, 0, -1)),
        (OverflowError, ValueError),
        id="connect6-scope-minus-1",
    ),
    bad(lambda e: api.connect(e.unix, 5), TypeError, id="connect-unix-int-address"),
    bad(lambda e: api.connect(e.unix, None), TypeError, id="connect-unix-none-address"),
    bad(lambda e: api.connect(e.unix, "x" * 200), ValueError, id="connect-unix-path-too-long"),
    # open
    bad(lambda e: api.open(None), TypeError, id="open-none-path"),
    bad(lambda e: api.open(1.0), TypeError, id="open-float-path"),
    bad(lambda e: api.open(NUL_PATH), ValueError, id="open-nul-path"),
    bad(lambda e: api.open(NUL_PATH.encode()), ValueError, id="open-nul-bytes-path"),
    bad(lambda e: api.open(e.path, "r"), TypeError, id="open-str-flags"),
    bad(lambda e: api.open(e.path, -1), ValueError, id="open-negative-flags"),
    bad(lambda e: api.open(e.path, os.O_RDONLY, 1.5), TypeError, id="open-float-mode"),
    bad(lambda e: api.open(e.path, os.O_RDONLY, -1), ValueError, id="open-negative-mode"),
    bad(lambda e: api.open("x", dir_fd="3"), TypeError, id="open-str-dir-fd"),
    bad(lambda e: api.open("x", dir_fd=-1), OSError, errno.EBADF, id="open-negative-dir-fd"),
    bad(lambda e: api.open("x", dir_fd=e.closed), OSError, errno.EBADF, id="open-closed-dir-fd"),
    bad(lambda e: api.open("x", dir_fd=e.r), NotADirectoryError, id="open-pipe-dir-fd"),
    bad(lambda e: api.open(""), FileNotFoundError, errno.ENOENT, id="open-empty-path"),
    # close
    bad(lambda e: api.close("3"), TypeError, id="close-str"),
    bad(lambda e: api.close(3.0), TypeError, id="close-float"),
    bad(lambda e: api.close(None), TypeError, id="close-none"),
    bad(lambda e: api.close(-1), OSError, errno.EBADF, id="close-negative-fd"),
    bad(lambda e: api.close(e.closed), OSError, errno.EBADF, id="close-closed-fd"),
    bad(lambda e: api.close(e.dead), OSError, errno.EBADF, id="close-closed-socket"),
    # fsync
    bad(lambda e: api.fsync("3"), TypeError, id="fsync-str"),
    bad(lambda e: api.fsync(-1), OSError, errno.EBADF, id="fsync-negative-fd"),
    bad(lambda e: api.fsync(e.closed), OSError, errno.EBADF, id="fsync-closed-fd"),
    bad(lambda e: api.fsync(e.r), OSError, errno.EINVAL, id="fsync-pipe"),
    # stat
    bad(lambda e: api.stat(None), TypeError, id="stat-none"),
    bad(lambda e: api.stat(1.0), TypeError, id="stat-float"),
    bad(lambda e: api.stat(NUL_PATH), ValueError, id="stat-nul-path"),
    bad(lambda e: api.stat(-1), OSError, errno.EBADF, id="stat-negative-fd"),
    bad(lambda e: api.stat(e.closed), OSError, errno.EBADF, id="stat-closed-fd"),
    bad(lambda e: api.stat(e.r, dir_fd=e.r), ValueError, id="stat-fd-and-dir-fd"),
    bad(lambda e: api.stat("x", dir_fd="3"), TypeError, id="stat-str-dir-fd"),
    bad(lambda e: api.stat("x", dir_fd=e.closed), OSError, errno.EBADF, id="stat-closed-dir-fd"),
    bad(lambda e: api.stat(""), FileNotFoundError, errno.ENOENT, id="stat-empty-path"),
]


@pytest.fixture
def env(pipe: tuple[int, int], tmp_path: Path) -> Iterator[Env]:
    path = tmp_path / "file"
    path.write_bytes(DATA)
    with ExitStack() as stack:
        a, b = socket.socketpair()
        stack.enter_context(a)
        stack.enter_context(b)
        dead = socket.socket()
        dead.close()
        yield Env(
            r=pipe[0],
            w=pipe[1],
            sock=a,
            tcp=stack.enter_context(socket.socket()),
            udp=stack.enter_context(socket.socket(type=socket.SOCK_DGRAM)),
            tcp6=stack.enter_context(socket.socket(socket.AF_INET6)) if HAS_IPV6 else None,
            unix=stack.enter_context(socket.socket(socket.AF_UNIX)),
            dead=dead,
            path=path,
            closed=-1,  # set in the test, once the ring has its fd
            buf=bytearray(b"buffer"),
        )


@pytest.mark.parametrize(("call", "raises", "code", "carries_buffer"), BAD_INPUT)
async def test_bad_input_raises_and_leaves_nothing_behind(
    executor: str,
    env: Env,
    call: Callable[[Env], Awaitable[object]],
    raises: type[BaseException] | tuple[type[BaseException], ...],
    code: int | None,
    carries_buffer: bool,
) -> None:
    ring = ouring.current_ring()  # the run's ring exists before the fds are counted
    env.closed = os.dup(env.r)
    os.close(env.closed)  # the lowest free number; nothing opens an fd before the call
    before = fd_count()
    with pytest.raises(raises) as info:
        await call(env)
    if code is not None:
        assert isinstance(info.value, OSError)
        assert info.value.errno == code
    if carries_buffer:
        assert info.value.buffer is env.buf  # type: ignore[attr-defined]
    assert ring.statistics().inflight == 0
    assert fd_count() == before
    env.buf.extend(b"x")  # no export of the buffer is left...
    os.write(env.w, b"ok")
    buf, n = await ouring.read(env.r, env.buf)  # ...nor a registry entry: it can be lent
    assert bytes(buf[:n]) == b"ok"


# -- path, space and socket operations against os ------------------------------------------
#
# unlink, rmdir, mkdir, rename, symlink, link, fallocate, fadvise, ftruncate and
# shutdown: each call runs with os on one tree and with ouring on an identical
# one; the results, the exceptions (type, errno, filename, filename2) and the
# trees afterwards must be the same.

FALLOC_FL_KEEP_SIZE = 0x01  # linux/falloc.h; os has no constant for it
ROOT = "<root>"
# A call gets `at(name)` (that name in its tree, a str) and the tree's open dir fd.
TreeCall = Callable[[Callable[[str], str], int], Any]


def build_tree(root: Path) -> None:
    root.mkdir()
    (root / "file").write_bytes(DATA)
    (root / "empty").write_bytes(b"")
    (root / "dir").mkdir()
    (root / "dir" / "inner").write_bytes(b"inner")
    (root / "emptydir").mkdir()
    (root / "link").symlink_to("file")
    (root / "dangling").symlink_to("missing")


def tree_listing(root: Path) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            st = path.lstat()
            entry: tuple[Any, ...] = (st.st_mode,)
            if path.is_symlink():
                entry += (os.readlink(path).replace(str(root), ROOT),)
            elif path.is_file():
                entry += (st.st_nlink, contents(path))
            seen[str(path.relative_to(root))] = entry
    return seen


def outcome_of(exc: BaseException, root: Path) -> tuple[Any, ...]:
    def norm(value: Any) -> Any:
        if isinstance(value, str):
            return value.replace(str(root), ROOT)
        if isinstance(value, bytes):
            return value.replace(os.fsencode(root), ROOT.encode())
        return value

    if isinstance(exc, OSError):
        return (type(exc), exc.errno, exc.strerror, norm(exc.filename), norm(exc.filename2))
    return (type(exc),)  # TypeError/ValueError: the messages are ouring's own


def tree_case(
    os_call: TreeCall,
    ring_call: TreeCall,
    *,
    id: str,  # noqa: A002 - pytest.param's name
) -> Any:
    return pytest.param(os_call, ring_call, id=id)


TREE_CASES = [
    # unlink
    tree_case(
        lambda at, d: os.unlink(at("file")), lambda at, d: ouring.unlink(at("file")), id="unlink"
    ),
    tree_case(
        lambda at, d: os.unlink(at("link")),
        lambda at, d: ouring.unlink(at("link")),
        id="unlink-symlink-only",
    ),
    tree_case(
        lambda at, d: os.unlink(at("missing")),
        lambda at, d: ouring.unlink(at("missing")),
        id="unlink-missing",
    ),
    tree_case(
        lambda at, d: os.unlink(at("dir")), lambda at, d: ouring.unlink(at("dir")), id="unlink-dir"
    ),
    tree_case(
        lambda at, d: os.unlink(at("file/x")),
        lambda at, d: ouring.unlink(at("file/x")),
        id="unlink-through-file",
    ),
    tree_case(
        lambda at, d: os.unlink("file", dir_fd=d),
        lambda at, d: ouring.unlink("file", dir_fd=d),
        id="unlink-dir-fd",
    ),
    tree_case(
        lambda at, d: os.unlink(Path(at("file"))),
        lambda at, d: ouring.unlink(Path(at("file"))),
        id="unlink-pathlike",
    ),
    tree_case(
        lambda at, d: os.unlink(os.fsencode(at("file"))),
        lambda at, d: ouring.unlink(os.fsencode(at("file"))),
        id="unlink-bytes",
    ),
    tree_case(
        lambda at, d: os.unlink(os.fsencode(at("missing"))),
        lambda at, d: ouring.unlink(os.fsencode(at("missing"))),
        id="unlink-bytes-missing",
    ),
    # rmdir
    tree_case(
        lambda at, d: os.rmdir(at("emptydir")),
        lambda at, d: ouring.rmdir(at("emptydir")),
        id="rmdir",
    ),
    tree_case(
        lambda at, d: os.rmdir(at("dir")),
        lambda at, d: ouring.rmdir(at("dir")),
        id="rmdir-not-empty",
    ),
    tree_case(
        lambda at, d: os.rmdir(at("file")), lambda at, d: ouring.rmdir(at("file")), id="rmdir-file"
    ),
    tree_case(
        lambda at, d: os.rmdir(at("missing")),
        lambda at, d: ouring.rmdir(at("missing")),
        id="rmdir-missing",
    ),
    tree_case(
        lambda at, d: os.rmdir("emptydir", dir_fd=d),
        lambda at, d: ouring.rmdir("emptydir", dir_fd=d),
        id="rmdir-dir-fd",
    ),
    # mkdir
    tree_case(lambda at, d: os.mkdir(at("new")), lambda at, d: ouring.mkdir(at("new")), id="mkdir"),
    tree_case(
        lambda at, d: os.mkdir(at("new"), 0o700),
        lambda at, d: ouring.mkdir(at("new"), 0o700),
        id="mkdir-0o700",
    ),
    tree_case(
        lambda at, d: os.mkdir(at("new"), 0o3777),
        lambda at, d: ouring.mkdir(at("new"), 0o3777),
        id="mkdir-0o3777",
    ),
    tree_case(
        lambda at, d: os.mkdir(at("dir")), lambda at, d: ouring.mkdir(at("dir")), id="mkdir-exists"
    ),
    tree_case(
        lambda at, d: os.mkdir(at("dangling")),
        lambda at, d: ouring.mkdir(at("dangling")),
        id="mkdir-dangling",
    ),
    tree_case(
        lambda at, d: os.mkdir(at("a/b")),
        lambda at, d: ouring.mkdir(at("a/b")),
        id="mkdir-no-parent",
    ),
    tree_case(
        lambda at, d: os.mkdir("new", dir_fd=d),
        lambda at, d: ouring.mkdir("new", dir_fd=d),
        id="mkdir-dir-fd",
    ),
    # rename (replaces an existing destination, as os.replace does)
    tree_case(
        lambda at, d: os.rename(at("file"), at("new")),
        lambda at, d: ouring.rename(at("file"), at("new")),
        id="rename",
    ),
    tree_case(
        lambda at, d: os.rename(at("file"), at("empty")),
        lambda at, d: ouring.rename(at("file"), at("empty")),
        id="rename-replaces-a-file",
    ),
    tree_case(
        lambda at, d: os.rename(at("dir"), at("emptydir")),
        lambda at, d: ouring.rename(at("dir"), at("emptydir")),
        id="rename-replaces-an-empty-dir",
    ),
    tree_case(
        lambda at, d: os.rename(at("emptydir"), at("dir")),
        lambda at, d: ouring.rename(at("emptydir"), at("dir")),
        id="rename-onto-a-full-dir",
    ),
    tree_case(
        lambda at, d: os.rename(at("file"), at("dir")),
        lambda at, d: ouring.rename(at("file"), at("dir")),
        id="rename-file-onto-dir",
    ),
    tree_case(
        lambda at, d: os.rename(at("dir"), at("file")),
        lambda at, d: ouring.rename(at("dir"), at("file")),
        id="rename-dir-onto-file",
    ),
    tree_case(
        lambda at, d: os.rename(at("dir"), at("dir/inner/x")),
        lambda at, d: ouring.rename(at("dir"), at("dir/inner/x")),
        id="rename-into-itself",
    ),
    tree_case(
        lambda at, d: os.rename(at("missing"), at("new")),
        lambda at, d: ouring.rename(at("missing"), at("new")),
        id="rename-missing",
    ),
    tree_case(
        lambda at, d: os.rename("file", "new", src_dir_fd=d, dst_dir_fd=d),
        lambda at, d: ouring.rename("file", "new", src_dir_fd=d, dst_dir_fd=d),
        id="rename-dir-fds",
    ),
    tree_case(
        lambda at, d: os.rename("missing", at("new"), src_dir_fd=d),
        lambda at, d: ouring.rename("missing", at("new"), src_dir_fd=d),
        id="rename-src-dir-fd-missing",
    ),
    tree_case(
        lambda at, d: os.replace(at("file"), at("empty")),
        lambda at, d: ouring.rename(at("file"), at("empty")),
        id="rename-is-os-replace",
    ),
    # symlink
    tree_case(
        lambda at, d: os.symlink("file", at("new")),
        lambda at, d: ouring.symlink("file", at("new")),
        id="symlink",
    ),
    tree_case(
        lambda at, d: os.symlink("nowhere", at("new")),
        lambda at, d: ouring.symlink("nowhere", at("new")),
        id="symlink-dangling",
    ),
    tree_case(
        lambda at, d: os.symlink(at("file"), at("new")),
        lambda at, d: ouring.symlink(at("file"), at("new")),
        id="symlink-absolute",
    ),
    tree_case(
        lambda at, d: os.symlink("file", at("empty")),
        lambda at, d: ouring.symlink("file", at("empty")),
        id="symlink-exists",
    ),
    tree_case(
        lambda at, d: os.symlink("file", at("a/b")),
        lambda at, d: ouring.symlink("file", at("a/b")),
        id="symlink-no-parent",
    ),
    tree_case(
        lambda at, d: os.symlink("", at("new")),
        lambda at, d: ouring.symlink("", at("new")),
        id="symlink-empty-target",
    ),
    tree_case(
        lambda at, d: os.symlink("file", "new", dir_fd=d),
        lambda at, d: ouring.symlink("file", "new", dir_fd=d),
        id="symlink-dir-fd",
    ),
    tree_case(
        lambda at, d: os.symlink(b"file", os.fsencode(at("empty"))),
        lambda at, d: ouring.symlink(b"file", os.fsencode(at("empty"))),
        id="symlink-bytes-exists",
    ),
    # link
    tree_case(
        lambda at, d: os.link(at("file"), at("new")),
        lambda at, d: ouring.link(at("file"), at("new")),
        id="link",
    ),
    tree_case(
        lambda at, d: os.link(at("file"), at("empty")),
        lambda at, d: ouring.link(at("file"), at("empty")),
        id="link-exists",
    ),
    tree_case(
        lambda at, d: os.link(at("missing"), at("new")),
        lambda at, d: ouring.link(at("missing"), at("new")),
        id="link-missing",
    ),
    tree_case(
        lambda at, d: os.link(at("dir"), at("new")),
        lambda at, d: ouring.link(at("dir"), at("new")),
        id="link-dir",
    ),
    tree_case(
        lambda at, d: os.link(at("link"), at("new"), follow_symlinks=False),
        lambda at, d: ouring.link(at("link"), at("new"), follow_symlinks=False),
        id="link-nofollow-links-the-symlink",
    ),
    tree_case(
        lambda at, d: os.link("link", "new", src_dir_fd=d, dst_dir_fd=d),
        lambda at, d: ouring.link("link", "new", src_dir_fd=d, dst_dir_fd=d),
        id="link-follows-with-dir-fds",
    ),
    tree_case(
        lambda at, d: os.link("dangling", "new", src_dir_fd=d),
        lambda at, d: ouring.link("dangling", "new", src_dir_fd=d),
        id="link-follows-dangling",
    ),
    tree_case(
        lambda at, d: os.link(at("dangling"), at("new"), follow_symlinks=False),
        lambda at, d: ouring.link(at("dangling"), at("new"), follow_symlinks=False),
        id="link-nofollow-dangling",
    ),
    # ouring.link follows a symlink source by default, as os.link does from
    # Python 3.14 on; before it, os.link() without dir fds called link(2),
    # which does not follow (CPython gh-81793), even with follow_symlinks=True:
    # a dir fd (ignored for absolute paths) makes it call linkat(2) with
    # AT_SYMLINK_FOLLOW.
    tree_case(
        lambda at, d: os.link(at("link"), at("new"), src_dir_fd=d, follow_symlinks=True),
        lambda at, d: ouring.link(at("link"), at("new")),
        id="link-default-follow",
    ),
]


def names_in(root: Path) -> Callable[[str], str]:
    return lambda rel: str(root / rel)


@pytest.mark.parametrize(("os_call", "ring_call"), TREE_CASES)
async def test_path_operations_match_os(
    executor: str, os_call: TreeCall, ring_call: TreeCall, tmp_path: Path
) -> None:
    ring = ouring.current_ring()
    results = []
    for name in ("os", "ring"):
        root = tmp_path / name
        build_tree(root)
        dir_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        before = fd_count()
        try:
            if name == "os":
                value = ("returns", os_call(names_in(root), dir_fd))
            else:
                value = ("returns", await ring_call(names_in(root), dir_fd))
        except Exception as exc:  # noqa: BLE001 - the exception is the outcome
            value = outcome_of(exc, root)
        finally:
            os.close(dir_fd)
        assert fd_count() == before - 1
        results.append((value, tree_listing(root)))
    assert results[1] == results[0]
    assert ring.statistics().inflight == 0


async def test_mkdir_mode_is_honoured_under_the_umask_as_os_mkdir(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        for mode in (0o777, 0o755, 0o700, 0o1777, 0o2770, 0):
            os.mkdir(tmp_path / f"os-{mode:o}", mode)
            await ouring.mkdir(tmp_path / f"ring-{mode:o}", mode)
            expected = os.stat(tmp_path / f"os-{mode:o}").st_mode
            assert os.stat(tmp_path / f"ring-{mode:o}").st_mode == expected
    finally:
        os.umask(old)


async def test_link_follow_symlinks_links_the_target_or_the_symlink(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(DATA)
    (tmp_path / "sym").symlink_to("file")
    await ouring.link(tmp_path / "sym", tmp_path / "follows")
    await ouring.link(tmp_path / "sym", tmp_path / "itself", follow_symlinks=False)
    assert os.lstat(tmp_path / "follows").st_ino == os.stat(tmp_path / "file").st_ino
    assert os.lstat(tmp_path / "itself").st_ino == os.lstat(tmp_path / "sym").st_ino
    assert os.stat(tmp_path / "file").st_nlink == 2


def fd_call_outcome(call: Callable[[], Any]) -> tuple[Any, ...]:
    try:
        return ("returns", call())
    except Exception as exc:  # noqa: BLE001
        return outcome_of(exc, Path("/"))


async def ring_fd_call_outcome(call: Callable[[], Awaitable[Any]]) -> tuple[Any, ...]:
    try:
        return ("returns", await call())
    except Exception as exc:  # noqa: BLE001
        return outcome_of(exc, Path("/"))


def needs_ftruncate() -> None:
    if not ouring.current_ring().supports(ouring._ops.Ftruncate.opcode):
        pytest.skip("IORING_OP_FTRUNCATE needs Linux 6.9")


@pytest.mark.parametrize(
    ("offset", "length"), [(0, 100), (0, 1 << 20), (4096, 10), (5, 3), (1 << 20, 1)]
)
async def test_fallocate_grows_the_file_as_posix_fallocate(
    executor: str, tmp_path: Path, offset: int, length: int
) -> None:
    for name in ("os", "ring"):
        (tmp_path / name).write_bytes(DATA)
    with opened(tmp_path / "os", os.O_RDWR) as a, opened(tmp_path / "ring", os.O_RDWR) as b:
        os.posix_fallocate(a, offset, length)
        await ouring.fallocate(b, offset, length)
        assert os.fstat(b).st_size == os.fstat(a).st_size == max(len(DATA), offset + length)
        assert os.fstat(b).st_blocks == os.fstat(a).st_blocks
    assert contents(tmp_path / "ring") == contents(tmp_path / "os")


async def test_fallocate_keep_size_allocates_without_growing(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(DATA)
    with opened(path, os.O_RDWR) as fd:
        blocks = os.fstat(fd).st_blocks
        await ouring.fallocate(fd, 0, 1 << 20, mode=FALLOC_FL_KEEP_SIZE)
        st = os.fstat(fd)
        assert st.st_size == len(DATA)
        assert st.st_blocks * 512 >= 1 << 20 > blocks * 512
    assert contents(path) == DATA


ADVICE = [
    os.POSIX_FADV_NORMAL,
    os.POSIX_FADV_SEQUENTIAL,
    os.POSIX_FADV_RANDOM,
    os.POSIX_FADV_NOREUSE,
    os.POSIX_FADV_WILLNEED,
    os.POSIX_FADV_DONTNEED,
]


@pytest.mark.parametrize("advice", ADVICE)
@pytest.mark.parametrize(("offset", "length"), [(0, 0), (0, 10), (3, 1 << 40), (1 << 40, 5)])
async def test_fadvise_accepts_every_advice_as_posix_fadvise(
    data_file: Path, advice: int, offset: int, length: int
) -> None:
    with opened(data_file) as fd:
        expected = fd_call_outcome(lambda: os.posix_fadvise(fd, offset, length, advice))
        got = await ring_fd_call_outcome(lambda: ouring.fadvise(fd, offset, length, advice))
    assert got == expected == ("returns", None)


@pytest.mark.parametrize("length", [0, 3, 10, 4096, 1 << 33])
async def test_ftruncate_grows_and_shrinks_as_os_ftruncate(
    executor: str, tmp_path: Path, length: int
) -> None:
    needs_ftruncate()
    for name in ("os", "ring"):
        (tmp_path / name).write_bytes(DATA)
    with opened(tmp_path / "os", os.O_RDWR) as a, opened(tmp_path / "ring", os.O_RDWR) as b:
        os.ftruncate(a, length)
        await ouring.ftruncate(b, length)
        assert os.fstat(b).st_size == os.fstat(a).st_size == length
        assert position(b) == 0
    if length <= 4096:
        assert contents(tmp_path / "ring") == contents(tmp_path / "os")


@dataclass
class FdKinds:
    file: int  # read-write regular file
    rdonly: int  # read-only regular file
    dir: int
    pipe_r: int
    pipe_w: int


# (name, os call, ouring call): kernel errors must be os's, errno for errno.
FD_ERROR_CASES: list[Any] = [
    (
        "fallocate-pipe",
        lambda k: os.posix_fallocate(k.pipe_w, 0, 10),
        lambda k: ouring.fallocate(k.pipe_w, 0, 10),
    ),
    (
        "fallocate-rdonly",
        lambda k: os.posix_fallocate(k.rdonly, 0, 10),
        lambda k: ouring.fallocate(k.rdonly, 0, 10),
    ),
    (
        "fallocate-dir",
        lambda k: os.posix_fallocate(k.dir, 0, 10),
        lambda k: ouring.fallocate(k.dir, 0, 10),
    ),
    (
        "fadvise-pipe",
        lambda k: os.posix_fadvise(k.pipe_r, 0, 10, os.POSIX_FADV_NORMAL),
        lambda k: ouring.fadvise(k.pipe_r, 0, 10, os.POSIX_FADV_NORMAL),
    ),
    (
        "fadvise-bad-advice",
        lambda k: os.posix_fadvise(k.file, 0, 10, 99),
        lambda k: ouring.fadvise(k.file, 0, 10, 99),
    ),
    (
        "ftruncate-pipe",
        lambda k: os.ftruncate(k.pipe_w, 1),
        lambda k: ouring.ftruncate(k.pipe_w, 1),
    ),
    (
        "ftruncate-rdonly",
        lambda k: os.ftruncate(k.rdonly, 1),
        lambda k: ouring.ftruncate(k.rdonly, 1),
    ),
    ("ftruncate-dir", lambda k: os.ftruncate(k.dir, 1), lambda k: ouring.ftruncate(k.dir, 1)),
]


@pytest.mark.parametrize(
    ("os_call", "ring_call"), [pytest.param(o, r, id=i) for i, o, r in FD_ERROR_CASES]
)
async def test_fd_operation_errors_are_os_errors(
    tmp_path: Path,
    os_call: Callable[[FdKinds], Any],
    ring_call: Callable[[FdKinds], Awaitable[Any]],
) -> None:
    if "ftruncate" in str(ring_call.__code__.co_names):
        needs_ftruncate()
    (tmp_path / "f").write_bytes(DATA)
    r, w = os.pipe()
    fds = [
        os.open(tmp_path / "f", os.O_RDWR),
        os.open(tmp_path / "f", os.O_RDONLY),
        os.open(tmp_path, os.O_RDONLY),
    ]
    kinds = FdKinds(file=fds[0], rdonly=fds[1], dir=fds[2], pipe_r=r, pipe_w=w)
    try:
        expected = fd_call_outcome(lambda: os_call(kinds))
        got = await ring_fd_call_outcome(lambda: ring_call(kinds))
    finally:
        for fd in (*fds, r, w):
            os.close(fd)
    assert expected[0] != "returns"  # every case fails
    assert got == expected
    assert contents(tmp_path / "f") == DATA
    assert_idle()


@pytest.mark.parametrize("how", [socket.SHUT_RD, socket.SHUT_WR, socket.SHUT_RDWR])
async def test_shutdown_errors_are_socket_shutdowns(how: int) -> None:
    with socket.socket() as unconnected:
        expected = fd_call_outcome(lambda: unconnected.shutdown(how))
        got = await ring_fd_call_outcome(lambda: ouring.shutdown(unconnected, how))
    assert got == expected
    assert expected[1] == errno.ENOTCONN


async def test_shutdown_wr_makes_the_peer_recv_return_zero(
    executor: str,
    socketpair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = socketpair
    await ouring.send(a, b"last words")
    await ouring.shutdown(a, socket.SHUT_WR)
    buf, n = await ouring.recv(b, bytearray(64))
    assert bytes(buf[:n]) == b"last words"
    _, n = await ouring.recv(b, bytearray(64))
    assert n == 0  # end of stream
    with pytest.raises(BrokenPipeError):
        await ouring.send(a, b"more")
    b.sendall(b"the other way still works")  # SHUT_WR left a's read side open
    buf, n = await ouring.recv(a, bytearray(64))
    assert bytes(buf[:n]) == b"the other way still works"
    c, d = socket.socketpair()  # what socket.shutdown does on the same sequence
    with c, d:
        c.shutdown(socket.SHUT_WR)
        assert d.recv(64) == b""


@pytest.mark.parametrize("how", [socket.SHUT_RD, socket.SHUT_RDWR])
async def test_shutdown_ends_a_pending_recv_on_the_socket_with_zero(
    socketpair: tuple[socket.socket, socket.socket], how: int
) -> None:
    a, _ = socketpair
    got: list[int] = []

    async def receive() -> None:
        _, n = await ouring.recv(a, bytearray(64))
        got.append(n)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive)
        await trio.testing.wait_all_tasks_blocked()
        assert ouring.current_ring().statistics().inflight == 1  # parked in the kernel
        await ouring.shutdown(a, how)
    assert got == [0]
    assert_idle()


BAD_PATH_AND_SPACE_INPUT = [
    # unlink / rmdir
    bad(lambda e: api.unlink(None), TypeError, id="unlink-none"),
    bad(lambda e: api.unlink(3), TypeError, id="unlink-int"),
    bad(lambda e: api.unlink(1.0), TypeError, id="unlink-float"),
    bad(lambda e: api.unlink(NUL_PATH), ValueError, id="unlink-nul-path"),
    bad(lambda e: api.unlink(NUL_PATH.encode()), ValueError, id="unlink-nul-bytes-path"),
    bad(lambda e: api.unlink("x", dir_fd="3"), TypeError, id="unlink-str-dir-fd"),
    bad(lambda e: api.unlink("x", dir_fd=-1), OSError, errno.EBADF, id="unlink-negative-dir-fd"),
    bad(
        lambda e: api.unlink("x", dir_fd=e.closed), OSError, errno.EBADF, id="unlink-closed-dir-fd"
    ),
    bad(lambda e: api.unlink("x", dir_fd=e.r), NotADirectoryError, id="unlink-pipe-dir-fd"),
    bad(lambda e: api.unlink(""), FileNotFoundError, errno.ENOENT, id="unlink-empty-path"),
    bad(lambda e: api.rmdir(None), TypeError, id="rmdir-none"),
    bad(lambda e: api.rmdir(NUL_PATH), ValueError, id="rmdir-nul-path"),
    bad(lambda e: api.rmdir("x", dir_fd=-1), OSError, errno.EBADF, id="rmdir-negative-dir-fd"),
    bad(lambda e: api.rmdir(e.path), NotADirectoryError, errno.ENOTDIR, id="rmdir-file"),
    # mkdir
    bad(lambda e: api.mkdir(None), TypeError, id="mkdir-none"),
    bad(lambda e: api.mkdir(NUL_PATH), ValueError, id="mkdir-nul-path"),
    bad(lambda e: api.mkdir("x", 1.5), TypeError, id="mkdir-float-mode"),
    bad(lambda e: api.mkdir("x", "777"), TypeError, id="mkdir-str-mode"),
    bad(lambda e: api.mkdir("x", -1), ValueError, id="mkdir-negative-mode"),
    bad(lambda e: api.mkdir("x", dir_fd=e.closed), OSError, errno.EBADF, id="mkdir-closed-dir-fd"),
    bad(lambda e: api.mkdir(e.path), FileExistsError, errno.EEXIST, id="mkdir-exists"),
    # rename
    bad(lambda e: api.rename(None, "x"), TypeError, id="rename-none-src"),
    bad(lambda e: api.rename(e.path, None), TypeError, id="rename-none-dst"),
    bad(lambda e: api.rename(e.path, 5), TypeError, id="rename-int-dst"),
    bad(lambda e: api.rename(NUL_PATH, "x"), ValueError, id="rename-nul-src"),
    bad(lambda e: api.rename(e.path, NUL_PATH), ValueError, id="rename-nul-dst"),
    bad(
        lambda e: api.rename("a", "b", src_dir_fd=-1),
        OSError,
        errno.EBADF,
        id="rename-neg-src-dir-fd",
    ),
    bad(lambda e: api.rename("a", "b", dst_dir_fd="3"), TypeError, id="rename-str-dst-dir-fd"),
    bad(
        lambda e: api.rename(e.path, "b", dst_dir_fd=e.closed),
        OSError,
        errno.EBADF,
        id="rename-closed-dst-dir-fd",
    ),
    # symlink
    bad(lambda e: api.symlink(None, "x"), TypeError, id="symlink-none-src"),
    bad(lambda e: api.symlink("x", 3), TypeError, id="symlink-int-dst"),
    bad(lambda e: api.symlink("x", None), TypeError, id="symlink-none-dst"),
    bad(lambda e: api.symlink(NUL_PATH, "x"), ValueError, id="symlink-nul-src"),
    bad(lambda e: api.symlink("x", NUL_PATH), ValueError, id="symlink-nul-dst"),
    bad(lambda e: api.symlink("x", "y", dir_fd=-1), OSError, errno.EBADF, id="symlink-neg-dir-fd"),
    bad(lambda e: api.symlink("x", e.path), FileExistsError, errno.EEXIST, id="symlink-exists"),
    # link
    bad(lambda e: api.link(None, "x"), TypeError, id="link-none-src"),
    bad(lambda e: api.link(e.path, 1.0), TypeError, id="link-float-dst"),
    bad(lambda e: api.link(e.path, None), TypeError, id="link-none-dst"),
    bad(lambda e: api.link(NUL_PATH, "x"), ValueError, id="link-nul-src"),
    bad(lambda e: api.link(e.path, NUL_PATH), ValueError, id="link-nul-dst"),
    bad(
        lambda e: api.link("a", "b", src_dir_fd=-1), OSError, errno.EBADF, id="link-neg-src-dir-fd"
    ),
    bad(
        lambda e: api.link(e.path, "b", dst_dir_fd=e.closed),
        OSError,
        errno.EBADF,
        id="link-closed-dir-fd",
    ),
    bad(lambda e: api.link(e.path, e.path), FileExistsError, errno.EEXIST, id="link-exists"),
    # fallocate
    bad(lambda e: api.fallocate("3", 0, 1), TypeError, id="fallocate-str-fd"),
    bad(lambda e: api.fallocate(e.w, 0.0, 1), TypeError, id="fallocate-float-offset"),
    bad(lambda e: api.fallocate(e.w, 0, "1"), TypeError, id="fallocate-str-length"),
    bad(lambda e: api.fallocate(e.w, 0, 1, mode=1.0), TypeError, id="fallocate-float-mode"),
    bad(lambda e: api.fallocate(e.w, -1, 1), ValueError, id="fallocate-negative-offset"),
    bad(lambda e: api.fallocate(e.w, 0, -1), ValueError, id="fallocate-negative-length"),
    bad(lambda e: api.fallocate(e.w, 0, 0), ValueError, id="fallocate-zero-length"),
    bad(lambda e: api.fallocate(e.w, 0, 1, mode=-1), ValueError, id="fallocate-negative-mode"),
    bad(lambda e: api.fallocate(e.w, 1 << 62, 1 << 62), OverflowError, id="fallocate-end-2**63"),
    bad(lambda e: api.fallocate(-1, 0, 1), OSError, errno.EBADF, id="fallocate-negative-fd"),
    bad(lambda e: api.fallocate(e.closed, 0, 1), OSError, errno.EBADF, id="fallocate-closed-fd"),
    bad(lambda e: api.fallocate(e.w, 0, 1), OSError, errno.ESPIPE, id="fallocate-pipe"),
    # fadvise
    bad(lambda e: api.fadvise("3", 0, 1, 0), TypeError, id="fadvise-str-fd"),
    bad(lambda e: api.fadvise(e.r, 0, 1, 0.0), TypeError, id="fadvise-float-advice"),
    bad(lambda e: api.fadvise(e.r, None, 1, 0), TypeError, id="fadvise-none-offset"),
    bad(lambda e: api.fadvise(e.r, -1, 1, 0), ValueError, id="fadvise-negative-offset"),
    bad(lambda e: api.fadvise(e.r, 0, -1, 0), ValueError, id="fadvise-negative-length"),
    bad(lambda e: api.fadvise(e.r, 0, 1, -1), ValueError, id="fadvise-negative-advice"),
    bad(lambda e: api.fadvise(-1, 0, 1, 0), OSError, errno.EBADF, id="fadvise-negative-fd"),
    bad(lambda e: api.fadvise(e.closed, 0, 1, 0), OSError, errno.EBADF, id="fadvise-closed-fd"),
    bad(lambda e: api.fadvise(e.r, 0, 1, 0), OSError, errno.ESPIPE, id="fadvise-pipe"),
    # ftruncate
    bad(lambda e: api.ftruncate("3", 0), TypeError, id="ftruncate-str-fd"),
    bad(lambda e: api.ftruncate(e.w, 1.0), TypeError, id="ftruncate-float-length"),
    bad(lambda e: api.ftruncate(e.w, None), TypeError, id="ftruncate-none-length"),
    bad(lambda e: api.ftruncate(e.w, -1), ValueError, id="ftruncate-negative-length"),
    bad(lambda e: api.ftruncate(e.w, 1 << 63), OverflowError, id="ftruncate-length-2**63"),
    bad(lambda e: api.ftruncate(-1, 0), OSError, errno.EBADF, id="ftruncate-negative-fd"),
    bad(lambda e: api.ftruncate(e.closed, 0), OSError, errno.EBADF, id="ftruncate-closed-fd"),
    bad(lambda e: api.ftruncate(e.w, 0), OSError, errno.EINVAL, id="ftruncate-pipe"),
    # shutdown
    bad(lambda e: api.shutdown("5", socket.SHUT_WR), TypeError, id="shutdown-str-sock"),
    bad(lambda e: api.shutdown(None, socket.SHUT_WR), TypeError, id="shutdown-none-sock"),
    bad(lambda e: api.shutdown(e.sock, 1.0), TypeError, id="shutdown-float-how"),
    bad(lambda e: api.shutdown(e.sock, "SHUT_WR"), TypeError, id="shutdown-str-how"),
    bad(lambda e: api.shutdown(e.sock, 3), ValueError, id="shutdown-how-3"),
    bad(lambda e: api.shutdown(e.sock, -1), ValueError, id="shutdown-how-minus-1"),
    bad(
        lambda e: api.shutdown(-1, socket.SHUT_WR), OSError, errno.EBADF, id="shutdown-negative-fd"
    ),
    bad(
        lambda e: api.shutdown(e.closed, socket.SHUT_WR),
        OSError,
        errno.EBADF,
        id="shutdown-closed-fd",
    ),
    bad(
        lambda e: api.shutdown(e.dead, socket.SHUT_WR),
        OSError,
        errno.EBADF,
        id="shutdown-closed-socket",
    ),
    bad(lambda e: api.shutdown(e.r, socket.SHUT_WR), OSError, errno.ENOTSOCK, id="shutdown-pipe"),
    bad(
        lambda e: api.shutdown(e.tcp, socket.SHUT_WR),
        OSError,
        errno.ENOTCONN,
        id="shutdown-unconnected",
    ),
]


@pytest.mark.parametrize(("call", "raises", "code", "carries_buffer"), BAD_PATH_AND_SPACE_INPUT)
async def test_bad_path_space_and_socket_input_raises_and_leaves_nothing_behind(
    executor: str,
    env: Env,
    call: Callable[[Env], Awaitable[object]],
    raises: type[BaseException] | tuple[type[BaseException], ...],
    code: int | None,
    carries_buffer: bool,
) -> None:
    if "ftruncate" in call.__code__.co_names:
        needs_ftruncate()
    # The same checks as the table above: the exception, no operation in
    # flight, no fd, no lease left behind.
    await test_bad_input_raises_and_leaves_nothing_behind(
        executor, env, call, raises, code, carries_buffer
    )


# Each path function beside the os function it mirrors, with the argument that
# gets the NUL. os converts paths before any syscall, so the os side only raises.
NUL_IN_PATH: dict[str, tuple[Callable[[Any], Awaitable[object]], Callable[[Any], object]]] = {
    "open": (lambda p: api.open(p), lambda p: os.open(p, os.O_RDONLY)),
    "stat": (lambda p: api.stat(p), lambda p: os.stat(p)),
    "stat-nofollow": (
        lambda p: api.stat(p, follow_symlinks=False),
        lambda p: os.stat(p, follow_symlinks=False),
    ),
    "unlink": (lambda p: api.unlink(p), lambda p: os.unlink(p)),
    "rmdir": (lambda p: api.rmdir(p), lambda p: os.rmdir(p)),
    "mkdir": (lambda p: api.mkdir(p), lambda p: os.mkdir(p)),
    "rename-src": (lambda p: api.rename(p, "x"), lambda p: os.rename(p, "x")),
    "rename-dst": (lambda p: api.rename("x", p), lambda p: os.rename("x", p)),
    "rename-both": (lambda p: api.rename(p, p), lambda p: os.rename(p, p)),
    "symlink-src": (lambda p: api.symlink(p, "x"), lambda p: os.symlink(p, "x")),
    "symlink-dst": (lambda p: api.symlink("x", p), lambda p: os.symlink("x", p)),
    "link-src": (lambda p: api.link(p, "x"), lambda p: os.link(p, "x")),
    "link-dst": (lambda p: api.link("x", p), lambda p: os.link("x", p)),
}


@pytest.mark.parametrize("kind", [str, bytes])
@pytest.mark.parametrize(("call", "os_call"), NUL_IN_PATH.values(), ids=NUL_IN_PATH.keys())
async def test_a_nul_in_a_path_raises_what_os_raises_on_this_python(
    call: Callable[[Any], Awaitable[object]],
    os_call: Callable[[Any], object],
    kind: type[str] | type[bytes],
) -> None:
    # The message depends on the interpreter (3.13 names the function and the
    # argument for str paths too): compare with this one's os, not with a text.
    path: str | bytes = NUL_PATH if kind is str else NUL_PATH.encode()
    with pytest.raises(ValueError, match="embedded null") as expected:
        os_call(path)
    with pytest.raises(ValueError, match="embedded null") as got:
        await call(path)
    assert got.value.args == expected.value.args


# -- send_zc ---------------------------------------------------------------------------


def needs_send_zc(ring: ouring.Ring) -> None:
    if not ring.features()["send_zc"]:
        pytest.skip("this kernel has no IORING_OP_SEND_ZC (Linux 6.0)")


def is_locked(buf: bytearray) -> bool:
    """Whether ``buf`` is exported (lent to the kernel): it cannot be resized."""
    try:
        buf.append(0)
    except BufferError:
        return True
    del buf[-1]
    return False


def test_send_zc_holds_the_buffer_until_the_notification_cqe() -> None:
    """The first CQE carries the count, but the stack still reads the pages
    until the notification: a receiver that does not read keeps the unsent
    part in the sender's queue, so the notification cannot come yet. Between
    the two the bytearray is still lent (resizing it raises BufferError) and
    the operation in flight; once the peer has read every byte (the ones
    submitted), the notification settles it and gives the buffer back."""
    with ouring.Ring() as ring:
        needs_send_zc(ring)
        a, b = tcp_pair()
        with a, b:
            # A fixed receive buffer far below the payload: the rest of what
            # the first CQE counts waits in the sender's queue.
            b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            payload = bytearray(os.urandom(1 << 20) * 4)
            op = ouring._ops.SendZC(a, payload)
            ring.submit(op)
            while not hasattr(op, "sent"):  # the first CQE
                assert ring.wait(10), "no CQE"
            sent = op.sent
            assert 0 < sent <= len(payload)
            assert op.state == ouring._ops.SUBMITTED  # no notification yet
            assert is_locked(payload)
            b.settimeout(10)
            received = bytearray()
            while len(received) < sent:
                received += b.recv(sent - len(received))
            assert received == payload[:sent]
            while op.state != ouring._ops.DONE:  # the notification
                assert ring.wait(10), "no notification"
            assert op.cqe_flags & ouring._native.lib.IORING_CQE_F_NOTIF
            assert op.result() == (payload, sent)
            assert not is_locked(payload)


async def test_send_zc_sends_the_bytes_and_gives_the_buffer_back() -> None:
    a, b = tcp_pair()
    with a, b:
        payload = bytearray(os.urandom(3 << 20))
        received = bytearray()

        async def receive() -> None:
            buf = bytearray(1 << 16)
            while len(received) < len(payload):
                buf, n = await ouring.recv(b, buf)
                assert n
                received.extend(buf[:n])

        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive)
            offset = 0
            while offset < len(payload):
                with memoryview(payload)[offset:] as chunk:
                    _, n = await ouring.send_zc(a, chunk)
                del _
                offset += n
        assert received == payload
        assert not is_locked(payload)
        assert_idle()


async def test_send_zc_on_a_unix_socket_is_a_plain_send() -> None:
    a, b = socket.socketpair()
    with a, b:
        buf, n = await ouring.send_zc(a, b"no zero-copy here")
        assert (buf, n) == (b"no zero-copy here", 17)
        assert b.recv(100) == b"no zero-copy here"


@pytest.mark.io_uring_only  # the thread ring has no send_zc: its send_zc is a plain send
async def test_a_cancelled_send_zc_sent_nothing_and_gives_the_buffer_back() -> None:
    """A send_zc waiting for room in a full socket buffer is cancelled: it
    raises Cancelled, the peer never gets its bytes, and the buffer is given
    back once the kernel is done (the cancel's CQE, then the notification)."""
    needs_send_zc(ouring.current_ring())
    a, b = tcp_pair()
    with a, b:
        for s in (a, b):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        a.setblocking(False)
        filled = 0
        try:
            while True:
                filled += a.send(b"f" * 65536)
        except BlockingIOError:
            pass
        payload = bytearray(b"z" * 65536)
        async with trio.open_nursery() as nursery:

            async def send() -> None:
                with pytest.raises(trio.Cancelled):
                    await ouring.send_zc(a, payload)

            nursery.start_soon(send)
            await trio.testing.wait_all_tasks_blocked()
            assert is_locked(payload)
            nursery.cancel_scope.cancel()
        await ouring.wait_all_ops_completed()
        assert not is_locked(payload)
        a.shutdown(socket.SHUT_WR)
        b.settimeout(10)
        received = bytearray()
        while chunk := b.recv(1 << 16):
            received += chunk
        assert received == b"f" * filled
