"""Issue 4, scenario 11: short reads at and across EOF, zero-length buffers,
buffers over 2 and 4 GiB (one call moves at most 0x7ffff000 bytes: a short
count, never a length silently truncated to 32 bits), a write that returns 0."""

from __future__ import annotations

import mmap
import os
import socket
from pathlib import Path

import pytest

import ouring
from ouring._buffers import MAX_RW

from ._helpers import is_lent

DATA = bytes(range(100))


@pytest.fixture
def data_fd(tmp_path: Path) -> int:
    path = tmp_path / "data"
    path.write_bytes(DATA)
    return os.open(path, os.O_RDWR)


@pytest.mark.parametrize(
    ("offset", "size", "expected"),
    [(90, 32, DATA[90:]), (99, 1, DATA[99:]), (100, 32, b""), (4096, 8, b""), (0, 200, DATA)],
    ids=["across-eof", "last-byte", "at-eof", "past-eof", "whole-file-short"],
)
async def test_short_reads_at_and_across_eof(
    executor: str, data_fd: int, offset: int, size: int, expected: bytes
) -> None:
    try:
        buf = bytearray(b"\xee") * size
        buf, n = await ouring.read(data_fd, buf, offset)
        assert n == len(expected)
        assert buf[:n] == expected
        assert buf[n:] == b"\xee" * (size - n)  # nothing past the count is written
        bufs = [bytearray(b"\xee") * 7, bytearray(b"\xee") * (size // 2 + 1)]
        bufs, n = await ouring.readv(data_fd, bufs, offset)
        assert n == min(len(expected), 7 + size // 2 + 1)
        assert (bufs[0] + bufs[1])[:n] == expected[:n]
        assert not any(is_lent(b) for b in [buf, *bufs])
    finally:
        os.close(data_fd)


async def test_zero_length_buffers(
    executor: str, data_fd: int, socketpair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = socketpair
    try:
        empty = bytearray()
        assert await ouring.read(data_fd, empty, 0) == (empty, 0)
        assert await ouring.write(data_fd, b"", 0) == (b"", 0)  # a write that returns 0
        assert await ouring.readv(data_fd, [empty], 0) == ([empty], 0)
        assert await ouring.send(b, b"") == (b"", 0)
        assert await ouring.read(data_fd, memoryview(bytearray(4))[2:2], 0) is not None
        # Two zero-length leases of the same object never conflict.
        buf = bytearray(8)
        assert (await ouring.read(data_fd, memoryview(buf)[3:3], 0))[1] == 0
        b.send(b"x")
        assert (await ouring.recv(a, bytearray(1)))[1] == 1
        assert os.pread(data_fd, 200, 0) == DATA  # the empty write changed nothing
    finally:
        os.close(data_fd)


async def test_a_buffer_over_4_gib_is_capped_not_truncated(
    data_fd: int, socketpair: tuple[socket.socket, socket.socket]
) -> None:
    """(4 GiB + 100) truncated to 32 bits would be 100: reading a 100-byte
    file would not tell, so the file is 8 KiB and a truncated length would
    return 100. The mapping is never touched past what the kernel writes, so
    it costs no memory."""
    _, b = socketpair
    big = mmap.mmap(-1, (4 << 30) + 100)
    try:
        os.pwrite(data_fd, bytes(range(256)) * 32, 0)
        buf, n = await ouring.read(data_fd, big, 0)
        assert buf is big
        assert n == 8192
        assert big[:8192] == bytes(range(256)) * 32
        # A send of untouched (zero-page) memory: the socket takes what fits,
        # far more than 100 bytes.
        b.setblocking(False)
        _, sent = await ouring.send(b, big, socket.MSG_DONTWAIT)
        assert 100 < sent < MAX_RW
    finally:
        big.close()
        os.close(data_fd)


@pytest.mark.slow
async def test_a_read_over_2_gib_returns_a_short_count(tmp_path: Path) -> None:
    """A 3 GiB sparse file: one read moves exactly 0x7ffff000 bytes and says
    so; the tail of the buffer is untouched. ~2 GiB of RAM for a moment."""
    size = MAX_RW + (1 << 20)
    path = tmp_path / "sparse"
    path.touch()
    os.truncate(path, 3 << 30)
    big = mmap.mmap(-1, size)
    fd = os.open(path, os.O_RDONLY)
    try:
        big[MAX_RW:] = b"\xee" * (1 << 20)
        big[:4096] = b"\xee" * 4096
        _, n = await ouring.read(fd, big, 0)
        assert n == MAX_RW
        assert big[:4096] == bytes(4096)
        assert big[MAX_RW:] == b"\xee" * (1 << 20)
    finally:
        os.close(fd)
        big.close()
