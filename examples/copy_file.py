"""copy_file: copy a file with ``ouring.open_file``.

Usage: ``python examples/copy_file.py SOURCE DEST [--text]``

The binary copy (the default) opens both files unbuffered (``buffering=0``) and
moves the bytes with the owned-buffer methods: ``read_into`` lends one 256 KiB
bytearray to the kernel and gets it back with the byte count, ``write_from``
lends the filled part to the kernel for the write and may write less than
asked, so the rest is written until the chunk is out. No thread does the I/O
and no bytes are copied in Python.

``--text`` copies line by line through the text layer instead (UTF-8, newlines
kept as they are with ``newline=""``), the way one would with the builtin
``open``: ``async for line in src: await dst.write(line)``.

Like cp(1), a file that cannot be read or written is reported as
``copy_file: PATH: reason`` and the exit status is 1.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import trio

import ouring

CHUNK = 256 * 1024


async def copy_binary(source: str, dest: str) -> int:
    """Copy ``source`` to ``dest``; returns the number of bytes copied."""
    total = 0
    async with (
        await ouring.open_file(source, "rb", buffering=0) as src,
        await ouring.open_file(dest, "wb", buffering=0) as dst,
    ):
        buf = bytearray(CHUNK)
        while True:
            buf, n = await src.read_into(buf)
            if n == 0:
                return total
            with memoryview(buf) as view:
                done = 0
                while done < n:
                    _, written = await dst.write_from(view[done:n])
                    done += written
            total += n


async def copy_text(source: str, dest: str) -> int:
    """Copy ``source`` to ``dest`` line by line; returns the number of lines."""
    lines = 0
    async with (
        await ouring.open_file(source, encoding="utf-8", newline="") as src,
        await ouring.open_file(dest, "w", encoding="utf-8", newline="") as dst,
    ):
        async for line in src:
            await dst.write(line)
            lines += 1
    return lines


async def main(argv: Sequence[str]) -> int:
    args = [arg for arg in argv if arg != "--text"]
    if len(args) != 2:
        print("usage: copy_file.py SOURCE DEST [--text]", file=sys.stderr)
        return 2
    source, dest = args
    try:
        if "--text" in argv:
            await copy_text(source, dest)
        else:
            await copy_binary(source, dest)
    except OSError as exc:
        print(f"copy_file: {exc.filename or dest}: {exc.strerror}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(trio.run(main, sys.argv[1:]))
