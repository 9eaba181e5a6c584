"""cat: copy files to standard output through io_uring.

Usage: ``python examples/cat.py FILE...``

Each file is opened with ``ouring.open`` and read with ``ouring.read`` at an
explicit offset into one 64 KiB bytearray that every read reuses: the buffer is
lent to the kernel for the read and comes back with the byte count. The bytes
go to fd 1 with ``ouring.write``, which may write less than asked (a pipe, a
signal), so the rest is written until the chunk is out. Like cat(1), a file
that cannot be read is reported (``cat: FILE: No such file or directory``) and
the next one is copied; the exit status is then 1. A failed write to standard
output stops the copy.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Sequence

import trio

import ouring

CHUNK = 64 * 1024
STDOUT = 1


class OutputError(Exception):
    """Writing to standard output failed: no later file can be copied."""

    def __init__(self, error: OSError) -> None:
        super().__init__(error)
        self.error = error


def describe(error: OSError) -> str:
    return error.strerror or os.strerror(error.errno or errno.EIO)


async def write_all(fd: int, buf: bytearray, n: int) -> None:
    """Write ``buf[:n]`` to ``fd`` at its file position, however many writes
    that takes."""
    done = 0
    with memoryview(buf) as view:
        while done < n:
            try:
                _, written = await ouring.write(fd, view[done:n])
            except OSError as exc:
                raise OutputError(exc) from exc
            if written == 0:  # no progress and no error: do not spin
                raise OutputError(OSError(errno.EIO, os.strerror(errno.EIO)))
            done += written


async def copy(path: str, buf: bytearray) -> bytearray:
    """Copy the file at ``path`` to standard output through ``buf``."""
    fd = await ouring.open(path, os.O_RDONLY)
    try:
        offset = 0
        while True:
            buf, n = await ouring.read(fd, buf, offset)
            if n == 0:
                return buf
            await write_all(STDOUT, buf, n)
            offset += n
    finally:
        await ouring.close(fd)


async def cat(paths: Sequence[str]) -> int:
    """Copy every file in turn; returns the exit status."""
    status = 0
    buf = bytearray(CHUNK)
    for path in paths:
        try:
            buf = await copy(path, buf)
        except OutputError as exc:
            print(f"cat: write error: {describe(exc.error)}", file=sys.stderr)
            return 1
        except OSError as exc:
            print(f"cat: {path}: {describe(exc)}", file=sys.stderr)
            status = 1
    return status


def main(argv: Sequence[str]) -> int:
    if not argv:
        print("usage: cat.py FILE...", file=sys.stderr)
        return 2
    try:
        os.fstat(STDOUT)  # if closed, the next fd opened (a file, trio's epoll) would be fd 1
    except OSError as exc:
        print(f"cat: write error: {describe(exc)}", file=sys.stderr)
        return 1
    return trio.run(cat, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
