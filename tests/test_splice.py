"""``ouring.splice`` (IORING_OP_SPLICE) and ``ouring.sendfile`` (``_sendfile.py``),
on real pipes, files, socketpairs and TCP sockets. The suite runs again on the
thread ring (tests/test_fallback.py), where both are ``os.splice`` attempts."""

from __future__ import annotations

import errno
import os
import random
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from conftest import open_fds

import ouring
import ouring.trio

DATA = random.Random(16).randbytes(300_000)


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "data.bin"
    path.write_bytes(DATA)
    return path


def read_all(fd: int) -> bytes:
    """What a pipe holds now (it must not be empty: a blocking read)."""
    os.set_blocking(fd, False)
    chunks = []
    try:
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
    except BlockingIOError:
        pass
    finally:
        os.set_blocking(fd, True)
    return b"".join(chunks)


# -- ouring.splice ---------------------------------------------------------------------


async def test_splice_from_a_file_at_an_offset_into_a_pipe(
    data_file: Path, pipe: tuple[int, int]
) -> None:
    r, w = pipe
    fd = os.open(data_file, os.O_RDONLY)
    try:
        n = await ouring.splice(fd, 1000, w, -1, 5000)
        assert n == 5000
        assert read_all(r) == DATA[1000:6000]
        assert os.lseek(fd, 0, os.SEEK_CUR) == 0  # an explicit offset moves no position
    finally:
        os.close(fd)


async def test_splice_from_a_pipe_into_a_file_at_an_offset(
    tmp_path: Path, pipe: tuple[int, int]
) -> None:
    r, w = pipe
    target = tmp_path / "out.bin"
    target.write_bytes(b"." * 10)
    fd = os.open(target, os.O_WRONLY)
    try:
        os.write(w, b"spliced")
        n = await ouring.splice(r, -1, fd, 4, 100)  # moves what the pipe holds
        assert n == 7
        assert target.read_bytes() == b"....spliced"
        assert os.lseek(fd, 0, os.SEEK_CUR) == 0
    finally:
        os.close(fd)


async def test_offset_minus_one_uses_and_moves_the_file_position(
    data_file: Path, pipe: tuple[int, int]
) -> None:
    r, w = pipe
    with data_file.open("rb") as f:
        f.seek(777)
        assert await ouring.splice(f, -1, w, -1, 100) == 100
        assert await ouring.splice(f.fileno(), -1, w, -1, 100) == 100
        assert os.lseek(f.fileno(), 0, os.SEEK_CUR) == 977
    assert read_all(r) == DATA[777:977]


async def test_splice_at_the_end_of_input_returns_zero(
    data_file: Path, pipe: tuple[int, int]
) -> None:
    r, w = pipe
    fd = os.open(data_file, os.O_RDONLY)
    try:
        assert await ouring.splice(fd, len(DATA) - 3, w, -1, 100) == 3
        assert await ouring.splice(fd, len(DATA), w, -1, 100) == 0
        assert await ouring.splice(fd, 0, w, -1, 0) == 0
    finally:
        os.close(fd)
    other_r, other_w = os.pipe()
    try:
        os.close(w)  # no writer left: the pipe's end of input
        assert read_all(r) == DATA[-3:]
        assert await ouring.splice(r, -1, other_w, -1, 100) == 0
    finally:
        os.close(other_r)
        os.close(other_w)


async def test_splice_reports_the_kernel_s_errors(
    tmp_path: Path, data_file: Path, pipe: tuple[int, int]
) -> None:
    r, w = pipe
    fd = os.open(data_file, os.O_RDONLY)
    out = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with pytest.raises(OSError, match="Bad file descriptor") as info:
            await ouring.splice(fd, 0, 1_000_000, -1, 10)  # no such fd
        assert info.value.errno == errno.EBADF
        with pytest.raises(OSError, match="Invalid argument") as info:
            await ouring.splice(fd, 0, out, 0, 10)  # neither end is a pipe
        assert info.value.errno == errno.EINVAL
        with pytest.raises(OSError, match="Illegal seek") as info:
            await ouring.splice(fd, 0, w, 5, 10)  # a pipe has no offset
        assert info.value.errno == errno.ESPIPE
        with pytest.raises(OSError, match="Bad file descriptor") as info:
            await ouring.splice(out, 0, w, -1, 10)  # not open for reading
        assert info.value.errno == errno.EBADF
    finally:
        os.close(fd)
        os.close(out)
    assert read_all(r) == b""


@pytest.mark.parametrize(
    ("args", "exception", "message"),
    [
        (("x", 0, 1, -1, 1), TypeError, "fileno"),
        ((-1, 0, 1, -1, 1), OSError, "Bad file descriptor"),
        ((0, -2, 1, -1, 1), ValueError, "offset must be >= 0"),
        ((0, 0, 1, 1 << 63, 1), OverflowError, "64-bit"),
        ((0, 0, 1, -1, -1), ValueError, "nbytes must be >= 0"),
        ((0, 0, 1, -1, 1.5), TypeError, "integer"),
        ((0, 0, 1, -1, 1, 0x100), ValueError, "SPLICE_F_"),
    ],
)
async def test_bad_arguments_raise_at_the_call(
    args: tuple[Any, ...], exception: type[Exception], message: str
) -> None:
    before = ouring.current_ring().statistics()
    with pytest.raises(exception, match=message):
        ouring.splice(*args)  # type: ignore[unused-coroutine]  # raises before a coroutine exists
    assert ouring.current_ring().statistics() == before


async def test_a_cancelled_splice_parked_on_an_empty_pipe_moved_nothing(
    tmp_path: Path, pipe: tuple[int, int]
) -> None:
    r, w = pipe
    target = tmp_path / "out.bin"
    fd = os.open(target, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:

                async def parked() -> None:
                    await ouring.splice(r, -1, fd, 0, 100)
                    raise AssertionError("the splice completed")

                nursery.start_soon(parked)
                await trio.testing.wait_all_tasks_blocked()
                scope.cancel()
        assert scope.cancelled_caught
        await ouring.wait_all_ops_completed()
        assert ouring.current_ring().statistics().inflight == 0
        os.write(w, b"after")  # nobody left to take it: it stays in the pipe
        assert read_all(r) == b"after"
        assert target.read_bytes() == b""
    finally:
        os.close(fd)


async def test_closing_the_input_pipe_ends_a_parked_splice(
    tmp_path: Path, pipe: tuple[int, int]
) -> None:
    r, _ = pipe
    fd = os.open(tmp_path / "out.bin", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        async with trio.open_nursery() as nursery:

            async def parked() -> None:
                with pytest.raises(trio.ClosedResourceError):
                    await ouring.splice(r, -1, fd, 0, 100)

            nursery.start_soon(parked)
            await trio.testing.wait_all_tasks_blocked()
            # The splice's fd is fd_out: closing fd_in must end it as well.
            await ouring.close(r)
    finally:
        os.close(fd)


# -- ouring.sendfile ---------------------------------------------------------------------


async def receive_all(sock: socket.socket, into: bytearray) -> None:
    """The peer's side, on trio's own socket: everything until EOF."""
    peer = trio.socket.from_stdlib_socket(sock)
    while chunk := await peer.recv(1 << 20):
        into += chunk


@pytest.mark.parametrize("blocking", [True, False])
async def test_sendfile_sends_a_range_of_a_file_to_a_socket(
    data_file: Path, blocking: bool
) -> None:
    a, b = socket.socketpair()
    a.setblocking(blocking)  # a blocking socket waits in io-wq; O_NONBLOCK waits for POLLOUT
    got = bytearray()
    with a, b, data_file.open("rb") as f:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive_all, b, got)
            assert await ouring.sendfile(a, f, 12345, 200_000) == 200_000
            assert await ouring.sendfile(a, f.fileno(), len(DATA) - 10) == 10  # to the end
            assert await ouring.sendfile(a, f, len(DATA) - 5, 100) == 5  # the file ends
            assert await ouring.sendfile(a, f, 0, 0) == 0
            a.shutdown(socket.SHUT_WR)
        assert f.tell() == 0
    assert got == DATA[12345:212345] + DATA[-10:] + DATA[-5:]


def trio_stream(sock: socket.socket) -> trio.SocketStream:
    return trio.SocketStream(ouring.trio.UringSocket(sock))


def ouring_stream(sock: socket.socket) -> ouring.trio.SocketStream:
    return ouring.trio.SocketStream(sock)


def plain_trio_stream(sock: socket.socket) -> trio.SocketStream:
    return trio.SocketStream(trio.socket.from_stdlib_socket(sock))


@pytest.mark.parametrize("make", [trio_stream, ouring_stream, plain_trio_stream])
async def test_sendfile_to_streams_from_an_async_file(
    data_file: Path, make: Callable[[socket.socket], trio.abc.HalfCloseableStream]
) -> None:
    client, server = socket.socketpair()
    stream = make(client)
    got = bytearray()
    with server:
        async with stream, await ouring.open_file(data_file, "rb") as f:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(receive_all, server, got)
                assert await ouring.sendfile(stream, f) == len(DATA)
                await stream.send_all(b"tail")
                await stream.send_eof()
            assert await f.read(4) == DATA[:4]  # its position did not move
    assert got == DATA + b"tail"


async def test_sendfile_of_a_file_that_cannot_be_spliced_reads_and_sends() -> None:
    with open("/proc/self/cmdline", "rb") as f:  # noqa: ASYNC230 - the reference
        expected = f.read()  # procfs: no splice_read (EINVAL)
    a, b = socket.socketpair()
    got = bytearray()
    with a, b:
        fd = os.open("/proc/self/cmdline", os.O_RDONLY)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(receive_all, b, got)
                assert await ouring.sendfile(a, fd, 3, 1 << 20) == len(expected) - 3
                a.shutdown(socket.SHUT_WR)
        finally:
            os.close(fd)
    assert got == expected[3:]


async def test_sendfile_to_a_closed_peer_raises_broken_on_a_stream(data_file: Path) -> None:
    client, server = socket.socketpair()
    server.close()
    stream = trio_stream(client)
    async with stream:
        with pytest.raises(trio.BrokenResourceError), data_file.open("rb") as f:
            await ouring.sendfile(stream, f)
    a, b = socket.socketpair()
    b.close()
    with a, pytest.raises(OSError, match=r"pipe|reset") as info, data_file.open("rb") as f:
        await ouring.sendfile(a, f)
    assert info.value.errno in (errno.EPIPE, errno.ECONNRESET)


async def test_sendfile_to_a_closed_stream_raises_closed(data_file: Path) -> None:
    a, b = socket.socketpair()
    stream = trio_stream(a)
    await stream.aclose()
    with b, data_file.open("rb") as f, pytest.raises(trio.ClosedResourceError):
        await ouring.sendfile(stream, f)


async def test_sendfile_refuses_bad_arguments(data_file: Path) -> None:
    a, b = socket.socketpair()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with a, b, udp, data_file.open("rb") as f:
        with pytest.raises(TypeError, match="SOCK_STREAM"):
            await ouring.sendfile(f, f)
        with pytest.raises(TypeError, match="SOCK_STREAM"):
            await ouring.sendfile(udp, f)
        with pytest.raises(TypeError, match="fileno"):
            await ouring.sendfile(a, "data.bin")
        with pytest.raises(ValueError, match="offset"):
            await ouring.sendfile(a, f, -1)
        with pytest.raises(ValueError, match="count"):
            await ouring.sendfile(a, f, 0, -5)


async def test_a_cancelled_sendfile_leaves_no_fd_and_no_operation(data_file: Path) -> None:
    """The peer reads nothing, so the transfer stalls once the socket buffer
    is full; the cancel ends it with part of the file sent."""
    big = data_file.parent / "big.bin"
    big.write_bytes(DATA * 20)
    a, b = socket.socketpair()
    with a, b, big.open("rb") as f:
        ouring.current_ring()  # the run's ring and its fd exist before the count
        before = open_fds()
        with trio.move_on_after(0.3) as scope:
            await ouring.sendfile(a, f)
        assert scope.cancelled_caught
        await ouring.wait_all_ops_completed()
        assert open_fds() == before  # the pipe pair is closed
        assert ouring.current_ring().statistics().inflight == 0
        # What reached the socket is a prefix of the file, never bytes a
        # later call sent: the next sendfile's bytes follow it exactly.
        a.setblocking(True)
        b.setblocking(False)
        prefix = bytearray()
        while True:
            try:
                prefix += b.recv(1 << 20)
            except BlockingIOError:
                break
        assert 0 < len(prefix) < len(DATA) * 20
        assert prefix == (DATA * 20)[: len(prefix)]
        got = bytearray()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive_all, b, got)
            assert await ouring.sendfile(a, f, 0, 1000) == 1000
            a.shutdown(socket.SHUT_WR)
        assert got == DATA[:1000]


async def test_sendfile_into_a_full_nonblocking_socket_under_every_executor(
    executor: str, data_file: Path
) -> None:
    """300 kB into an O_NONBLOCK socketpair (far more than its buffer): the
    socket splices return EAGAIN and sendfile waits for POLLOUT with the
    running executor's own poller; a thread reads the peer side. A zero
    count is a checkpoint of that executor too."""
    a, b = socket.socketpair()
    a.setblocking(False)
    got = bytearray()

    def drain() -> None:
        while chunk := b.recv(1 << 16):
            got.extend(chunk)

    reader = threading.Thread(target=drain)
    with a, b, data_file.open("rb") as f:
        reader.start()
        try:
            assert await ouring.sendfile(a, f, 0) == len(DATA)
            assert await ouring.sendfile(a, f, 0, 0) == 0
        finally:
            a.shutdown(socket.SHUT_WR)
            reader.join()
    assert got == DATA
