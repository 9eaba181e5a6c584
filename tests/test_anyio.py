"""ouring's files and paths from code written against anyio, on each of its
backends (``anyio.run(..., backend=...)``): the same calls, the same results.
Real files in tmp_path; nothing is mocked."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import anyio
import pytest

import ouring


@pytest.fixture(params=["asyncio", "trio"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_open_file_reads_writes_and_seeks(tmp_path: Path, backend: str) -> None:
    path = tmp_path / "data"

    async def main() -> tuple[bytes, int, bytes, int]:
        async with await ouring.open_file(path, "w+b") as f:
            assert await f.write(b"0123456789") == 10
            assert await f.seek(2) == 2
            head = await f.read(3)
            at = await f.tell()
            await f.seek(-2, os.SEEK_END)
            tail = await f.read()
        return head, at, tail, len(path.read_bytes())

    assert anyio.run(main, backend=backend) == (b"234", 5, b"89", 10)


def test_path_text_stat_mkdir_unlink(tmp_path: Path, backend: str) -> None:
    async def main() -> None:
        root = ouring.Path(tmp_path)
        sub = root / "sub"
        await sub.mkdir()
        with pytest.raises(FileExistsError):
            await sub.mkdir()
        assert stat.S_ISDIR((await sub.stat()).st_mode)
        text = sub / "t.txt"
        assert await text.write_text("é and a line\n", encoding="utf-8") == 13
        assert await text.read_text(encoding="utf-8") == "é and a line\n"
        assert (await text.stat()).st_size == len("é and a line\n".encode())
        await text.unlink()
        with pytest.raises(FileNotFoundError):
            await text.stat()

    anyio.run(main, backend=backend)
    assert os.listdir(tmp_path / "sub") == []


def test_cancel_scope_around_a_parked_pipe_read(backend: str) -> None:
    """anyio's cancel scope ends a read parked on an empty pipe; the read did
    not happen, and the bytes written afterwards go to the next read."""

    async def main() -> bytes:
        r, w = os.pipe()
        try:
            async with await ouring.open_file(r, "rb", buffering=0, closefd=False) as f:
                with anyio.move_on_after(0.05) as scope:
                    await f.read(10)
                assert scope.cancelled_caught
                os.write(w, b"later")
                return await f.read(10)
        finally:
            os.close(r)
            os.close(w)

    assert anyio.run(main, backend=backend) == b"later"
