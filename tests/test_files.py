"""ouring.open_file against the builtin open: the same calls on two identical
files must give the same results, the same exceptions and the same bytes on
disk. Real files in tmp_path, real pipes and FIFOs; nothing is mocked."""

from __future__ import annotations

import errno
import io
import itertools
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import anyio
import anyio.lowlevel
import hypothesis
import pytest
import trio
import trio.testing
from conftest import EXECUTORS, run_under
from hypothesis import strategies as st

import ouring

# A call: (method name, args). Special forms, resolved by the driver:
#   ("readinto", (size,))         -> readinto(bytearray(size)); result (n, bytes of it)
#   ("seek", (("cookie", k), 0))  -> seek to the k-th earlier tell() result (text cookies)
Call = tuple[str, tuple[Any, ...]]
Outcome = tuple[Any, ...]

TEXT = "héllo wörld\r\nsecond line\rthird € line\nfourth\r\n\nlast without newline 𝄞"
BINARY = b"hello world\nsecond line\r\nthird\n\n" + bytes(range(256)) + b"\nlast"
MODES = [
    "r",
    "rb",
    "r+",
    "r+b",
    "w",
    "wb",
    "w+",
    "w+b",
    "a",
    "ab",
    "a+",
    "a+b",
    "x",
    "xb",
    "x+",
    "x+b",
]


def snapshot(exc: BaseException) -> Outcome:
    return ("raises", type(exc), exc.args)


def prepare(path: Path, mode: str, initial: bytes) -> None:
    if "x" in mode:
        path.unlink(missing_ok=True)
    else:
        path.write_bytes(initial)


def resolve(args: tuple[Any, ...], tells: list[Any]) -> tuple[Any, ...]:
    out = []
    for arg in args:
        if isinstance(arg, tuple) and arg and arg[0] == "cookie":
            arg = tells[arg[1] % len(tells)] if tells else 0
        out.append(arg)
    return tuple(out)


def with_cpython_311_workaround(mode: str, calls: Sequence[Call]) -> list[Call]:
    """CPython 3.11's BufferedRandom.read1 reads from the raw position without
    flushing the write buffer (gh-115059, fixed in 3.12.3/3.13): it returns stale
    bytes and the buffered write lands elsewhere; text reads use read1 too.
    ouring flushes first (the fixed behaviour), so the driver adds the flush
    the fixed CPython does implicitly before such reads."""
    if "+" not in mode:
        return list(calls)
    text = "b" not in mode
    risky = {"read", "readline", "readlines"} if text else {"read1"}
    out: list[Call] = []
    dirty = False
    for name, args in calls:
        if name in risky and dirty:
            out.append(("flush", ()))
            dirty = False
        out.append((name, args))
        if name in ("write", "writelines"):
            dirty = True
        elif name in ("flush", "truncate") or (text and name in ("seek", "tell")):
            dirty = False
    return out


def run_builtin(path: Path, mode: str, kwargs: dict[str, Any], calls: Sequence[Call]) -> Any:
    results: list[Outcome] = []
    tells: list[Any] = []
    try:
        f = open(path, mode, **kwargs)  # noqa: SIM115 - closed below, after the calls
    except Exception as exc:  # noqa: BLE001 - compared with ouring's
        return [snapshot(exc)], path.read_bytes() if path.exists() else None
    with f:
        for name, args in calls:
            try:
                if name == "readinto":
                    buf = bytearray(args[0])
                    result: Any = (cast(Any, f).readinto(buf), bytes(buf))
                else:
                    result = getattr(f, name)(*resolve(args, tells))
                    if name == "tell":
                        tells.append(result)
                results.append(("ok", result))
            except Exception as exc:  # noqa: BLE001
                results.append(snapshot(exc))
    return results, path.read_bytes() if path.exists() else None


async def run_ouring(
    path: Path, mode: str, kwargs: dict[str, Any], calls: Sequence[Call]
) -> list[Outcome]:
    results: list[Outcome] = []
    tells: list[Any] = []
    try:
        f = await ouring.open_file(path, mode, **kwargs)
    except Exception as exc:  # noqa: BLE001
        return [snapshot(exc)]
    async with f:
        for name, args in calls:
            try:
                if name == "readinto":
                    buf = bytearray(args[0])
                    result: Any = (await f.readinto(buf), bytes(buf))
                else:
                    result = await getattr(f, name)(*resolve(args, tells))
                    if name == "tell":
                        tells.append(result)
                results.append(("ok", result))
            except Exception as exc:  # noqa: BLE001
                results.append(snapshot(exc))
    return results


def compare(
    tmp: Path,
    mode: str,
    kwargs: dict[str, Any],
    calls: Sequence[Call],
    initial: bytes,
    executor: str = "trio",
) -> None:
    calls = with_cpython_311_workaround(mode, calls)
    a, b = tmp / "builtin.dat", tmp / "ouring.dat"
    prepare(a, mode, initial)
    prepare(b, mode, initial)
    expected = run_builtin(a, mode, kwargs, calls)
    got = run_under(executor, run_ouring, b, mode, kwargs, calls)
    for i, (call, want, have) in enumerate(zip(calls, expected[0], got, strict=True)):
        assert have == want, f"call {i} {call} in mode {mode!r} {kwargs}"
    contents = b.read_bytes() if b.exists() else None
    assert contents == expected[1], f"file contents in mode {mode!r} {kwargs}"


# -- scripted sequences over every mode, buffering and text setting ------------------------

BINARY_SCRIPT: list[Call] = [
    ("read", (5,)),
    ("read1", (3,)),
    ("readline", ()),
    ("tell", ()),
    ("readinto", (10,)),
    ("write", (b"ABC\nDEF",)),
    ("tell", ()),
    ("seek", (0,)),
    ("readline", (4,)),
    ("read1", (-1,)),
    ("seek", (-3, 2)),
    ("read", ()),
    ("seek", (2, 1)),
    ("write", (b"tail" * 9,)),
    ("seek", (7,)),
    ("readlines", ()),
    ("truncate", (20,)),
    ("tell", ()),
    ("seek", (0,)),
    ("read", (-1,)),
    ("writelines", ([b"x\n", bytearray(b"yz"), memoryview(b"!")],)),
    ("truncate", ()),
    ("seek", (0, 2)),
    ("read", (100,)),
    ("flush", ()),
    ("seek", (-1,)),
    ("seek", (0, 7)),
    ("read", (-2,)),
    ("write", ("str",)),
    ("tell", ()),
]

TEXT_SCRIPT: list[Call] = [
    ("read", (3,)),
    ("tell", ()),
    ("readline", ()),
    ("tell", ()),
    ("read", (7,)),
    ("tell", ()),
    ("seek", (("cookie", 1), 0)),
    ("readline", (5,)),
    ("readlines", ()),
    ("write", ("new\nlines\r\nhere € 𝄞\r",)),
    ("tell", ()),
    ("seek", (("cookie", 2), 0)),
    ("read", ()),
    ("seek", (0, 2)),
    ("write", ("end\n",)),
    ("seek", (0,)),
    ("readlines", ()),
    ("seek", (0, 1)),
    ("truncate", ()),
    ("seek", (("cookie", 0), 0)),
    ("truncate", ()),
    ("read", ()),
    ("writelines", (["a\n", "b"],)),
    ("flush", ()),
    ("seek", (1, 1)),
    ("seek", (-1,)),
    ("write", (b"bytes",)),
    ("read", (-1,)),
    ("tell", ()),
]

BINARY_BUFFERINGS = [-1, 0, 7, 64]
TEXT_SETTINGS: list[dict[str, Any]] = [
    {},
    {"encoding": "utf-8", "newline": None},
    {"encoding": "utf-8", "newline": ""},
    {"encoding": "utf-8", "newline": "\n"},
    {"encoding": "utf-8", "newline": "\r\n", "buffering": 1},
    {"encoding": "utf-8", "newline": "\r", "buffering": 7},
    {"encoding": "utf-16", "newline": None, "buffering": 7},
    {"encoding": "utf-16", "newline": ""},
    {"encoding": "latin-1", "errors": "replace", "buffering": 64},
    {"encoding": "ascii", "errors": "strict"},
]


@pytest.mark.parametrize("buffering", BINARY_BUFFERINGS)
@pytest.mark.parametrize("mode", [m for m in MODES if "b" in m])
def test_binary_modes_match_the_builtin(
    tmp_path: Path, mode: str, buffering: int, executor: str
) -> None:
    script = BINARY_SCRIPT
    if buffering == 0:  # FileIO has no read1
        script = [call for call in script if call[0] != "read1"]
    compare(tmp_path, mode, {"buffering": buffering}, script, BINARY * 3, executor)


@pytest.mark.parametrize("settings", TEXT_SETTINGS, ids=repr)
@pytest.mark.parametrize("mode", [m for m in MODES if "b" not in m])
def test_text_modes_match_the_builtin(
    tmp_path: Path, mode: str, settings: dict[str, Any], executor: str
) -> None:
    encoding = settings.get("encoding", "utf-8")
    initial = TEXT.encode(encoding, errors="replace") * 3
    compare(tmp_path, mode, settings, TEXT_SCRIPT, initial, executor)


def test_large_text_spanning_many_chunks(tmp_path: Path, executor: str) -> None:
    initial = (TEXT * 2000).encode("utf-8")
    calls: list[Call] = [("read", (9000,)), ("tell", ()), ("readline", ()), ("tell", ())]
    calls += [("read", (5000,)), ("write", ("X" * 20000,)), ("tell", ()), ("seek", (0,))]
    calls += [("seek", (("cookie", 0), 0)), ("read", (10,)), ("readlines", ()), ("tell", ())]
    for mode in ("r", "r+", "a+"):
        compare(tmp_path, mode, {"encoding": "utf-8"}, calls, initial, executor)
        utf16 = (TEXT * 2000).encode("utf-16")
        compare(tmp_path, mode, {"encoding": "utf-16"}, calls, utf16, executor)


def test_large_binary_reads_and_writes(tmp_path: Path, executor: str) -> None:
    initial = os.urandom(300_000)
    calls: list[Call] = [("read", (70_000,)), ("read1", (100_000,)), ("readinto", (50_000,))]
    calls += [("write", (b"w" * 100_000,)), ("tell", ()), ("seek", (1000,)), ("read", ())]
    calls += [("seek", (-5000, 2)), ("read1", (-1,)), ("readline", ())]
    for mode in ("rb", "r+b", "a+b"):
        for buffering in (-1, 0, 4096, 10_000):
            script = [c for c in calls if buffering or c[0] != "read1"]
            compare(tmp_path, mode, {"buffering": buffering}, script, initial, executor)


# -- hypothesis: random sequences ---------------------------------------------------------

sizes = st.one_of(st.integers(0, 40), st.just(-1))
binary_calls = st.one_of(
    st.tuples(st.just("read"), st.tuples(sizes)),
    st.tuples(st.just("read"), st.just(())),
    st.tuples(st.just("read1"), st.tuples(sizes)),
    st.tuples(st.just("readline"), st.tuples(sizes)),
    st.tuples(st.just("readlines"), st.tuples(st.integers(-1, 30))),
    st.tuples(st.just("readinto"), st.tuples(st.integers(0, 30))),
    st.tuples(st.just("seek"), st.tuples(st.integers(0, 60), st.just(0))),
    st.tuples(st.just("seek"), st.tuples(st.integers(-20, 20), st.sampled_from([1, 2]))),
    st.tuples(st.just("tell"), st.just(())),
    st.tuples(st.just("write"), st.tuples(st.binary(max_size=30))),
    st.tuples(st.just("truncate"), st.one_of(st.just(()), st.tuples(st.integers(0, 60)))),
    st.tuples(st.just("flush"), st.just(())),
)
text_calls = st.one_of(
    st.tuples(st.just("read"), st.tuples(sizes)),
    st.tuples(st.just("readline"), st.tuples(sizes)),
    st.tuples(st.just("readlines"), st.tuples(st.integers(-1, 30))),
    st.tuples(
        st.just("seek"), st.tuples(st.tuples(st.just("cookie"), st.integers(0, 9)), st.just(0))
    ),
    st.tuples(st.just("seek"), st.sampled_from([(0,), (0, 1), (0, 2)])),
    st.tuples(st.just("tell"), st.just(())),
    st.tuples(
        st.just("write"),
        st.tuples(st.text(alphabet=st.sampled_from("ab\r\n €é𝄞"), max_size=20)),
    ),
    st.tuples(st.just("truncate"), st.just(())),
    st.tuples(st.just("flush"), st.just(())),
)
SETTINGS = hypothesis.settings(
    max_examples=150, derandomize=True, database=None, deadline=None, print_blob=True
)


@SETTINGS
@hypothesis.given(
    mode=st.sampled_from([m for m in MODES if "b" in m and "x" not in m]),
    buffering=st.sampled_from([-1, 0, 1 << 12, 5, 16]),
    initial=st.binary(max_size=80),
    calls=st.lists(binary_calls, max_size=25),
    executor=st.sampled_from(EXECUTORS),
)
def test_random_binary_sequences_match_the_builtin(
    tmp_path_factory: pytest.TempPathFactory,
    mode: str,
    buffering: int,
    initial: bytes,
    calls: list[Call],
    executor: str,
) -> None:
    if buffering == 0:
        calls = [c for c in calls if c[0] != "read1"]
    tmp = tmp_path_factory.mktemp("b")
    compare(tmp, mode, {"buffering": buffering}, calls, initial, executor)


@SETTINGS
@hypothesis.given(
    mode=st.sampled_from([m for m in MODES if "b" not in m and "x" not in m]),
    encoding=st.sampled_from(["utf-8", "utf-16", "latin-1"]),
    newline=st.sampled_from([None, "", "\n", "\r\n", "\r"]),
    buffering=st.sampled_from([-1, 1, 3, 16]),
    initial=st.text(alphabet=st.sampled_from("xy\r\n €é𝄞"), max_size=40),
    calls=st.lists(text_calls, max_size=25),
    executor=st.sampled_from(EXECUTORS),
)
def test_random_text_sequences_match_the_builtin(
    tmp_path_factory: pytest.TempPathFactory,
    mode: str,
    encoding: str,
    newline: str | None,
    buffering: int,
    initial: str,
    calls: list[Call],
    executor: str,
) -> None:
    kwargs = {"encoding": encoding, "newline": newline, "buffering": buffering}
    raw = initial.encode(encoding, errors="replace")
    compare(tmp_path_factory.mktemp("t"), mode, kwargs, calls, raw, executor)


# -- opening: arguments, errors, attributes --------------------------------------------------

BAD_OPENS: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
    (("rr",), {}),
    (("rw",), {}),
    (("",), {}),
    (("+",), {}),
    (("b",), {}),
    (("rbt",), {}),
    (("rU",), {}),
    (("rb+b",), {}),
    (("z",), {}),
    (("wb",), {"encoding": "utf-8"}),
    (("wb",), {"errors": "strict"}),
    (("wb",), {"newline": ""}),
    (("w",), {"buffering": 0}),
    ((1,), {}),
    (("r",), {"encoding": 5}),
    (("r",), {"errors": 5}),
    (("r",), {"newline": 5}),
    (("w",), {"newline": "x"}),
    (("w",), {"encoding": "bogus"}),
    (("w",), {"encoding": "rot13"}),
    (("r",), {"closefd": False}),
    (("x",), {}),
    (("r",), {"opener": lambda path, flags: "x"}),
    (("r",), {"opener": lambda path, flags: -1}),
]


@pytest.mark.parametrize(("args", "kwargs"), BAD_OPENS, ids=repr)
async def test_bad_open_arguments_raise_as_the_builtin_does(
    tmp_path: Path,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    executor: str,
) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"data")
    with pytest.raises(Exception) as builtin:  # noqa: PT011 - compared below
        open(path, *args, **kwargs)  # noqa: SIM115, ASYNC230 - the reference
    builtin_contents = path.read_bytes()
    path.write_bytes(b"data")
    with pytest.raises(type(builtin.value)) as ours:
        await ouring.open_file(path, *args, **kwargs)
    assert ours.value.args == builtin.value.args
    assert path.read_bytes() == builtin_contents


@pytest.mark.parametrize("opener", [None, os.open])
@pytest.mark.parametrize("target", [None, 1.5, -1, "bad\0name", b"bad\0name"])
async def test_bad_files_raise_as_the_builtin_does(target: Any, opener: Any, executor: str) -> None:
    # A name with a NUL gets io.open's message, which differs from os.open's
    # on some Pythons, before any opener is called.
    with pytest.raises(Exception) as builtin:  # noqa: PT011
        open(target, opener=opener)  # noqa: SIM115, ASYNC230 - the reference
    with pytest.raises(type(builtin.value)) as ours:
        await ouring.open_file(target, opener=opener)
    assert ours.value.args == builtin.value.args


async def test_missing_file_and_directory(tmp_path: Path, executor: str) -> None:
    with pytest.raises(FileNotFoundError) as exc:
        await ouring.open_file(tmp_path / "missing")
    assert exc.value.filename == str(tmp_path / "missing")
    with pytest.raises(IsADirectoryError) as exc2:
        await ouring.open_file(tmp_path)
    assert exc2.value.args == (errno.EISDIR, os.strerror(errno.EISDIR))
    with pytest.raises(IsADirectoryError):
        await ouring.open_file(tmp_path, "w")


async def test_attributes_match_the_builtin(tmp_path: Path, executor: str) -> None:
    path = tmp_path / "f"
    for mode in MODES:
        for buffering in (-1, 0) if "b" in mode else (-1,):
            prepare(path, mode, b"data")
            with open(path, mode, buffering=buffering) as b:  # noqa: ASYNC230 - the reference
                expected = (b.name, b.mode, b.readable(), b.writable(), b.seekable())
                expected_text = getattr(b, "encoding", None), getattr(b, "errors", None)
            prepare(path, mode, b"data")
            async with await ouring.open_file(path, mode, buffering=buffering) as f:
                got = (f.name, f.mode, f.readable(), f.writable(), f.seekable())
                assert got == expected
                assert (getattr(f, "encoding", None), getattr(f, "errors", None)) == expected_text
                assert not f.isatty()
                assert not f.closed
                assert f.fileno() >= 0
            assert f.closed
    async with await ouring.open_file(Path(path), "rb") as f:
        assert f.name == str(path)  # a path-like's fspath, as the builtin keeps it


async def test_default_buffer_size_is_the_block_size(tmp_path: Path, executor: str) -> None:
    path = tmp_path / "f"
    path.write_bytes(bytes(100_000))
    blksize = os.stat(path).st_blksize
    async with await ouring.open_file(path, "rb") as f:
        assert await f.read(1) == b"\0"
        assert len(await f.read1(-1)) == blksize - 1


async def test_binary_line_buffering_warns_like_the_builtin(tmp_path: Path, executor: str) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x")
    with pytest.warns(RuntimeWarning, match="line buffering"):
        f = await ouring.open_file(path, "rb", buffering=1)
    await f.aclose()


async def test_opener_is_called_with_the_builtin_flags(tmp_path: Path, executor: str) -> None:
    seen: list[tuple[Any, int]] = []

    def opener(path: Any, flags: int) -> int:
        seen.append((path, flags))
        return os.open(path, flags, 0o600)

    path = tmp_path / "f"
    with open(path, "a+", opener=opener):  # noqa: ASYNC230 - the reference
        pass
    async with await ouring.open_file(path, "a+", opener=opener) as f:
        await f.write("x")
    assert seen[0] == seen[1]
    assert seen[0][1] & (os.O_APPEND | os.O_CREAT | os.O_RDWR | os.O_CLOEXEC) == (
        os.O_APPEND | os.O_CREAT | os.O_RDWR | os.O_CLOEXEC
    )
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


async def test_int_fd_with_closefd_false_keeps_the_fd_and_its_position(
    tmp_path: Path, executor: str
) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"0123456789")
    fd = os.open(path, os.O_RDWR)
    try:
        os.lseek(fd, 3, os.SEEK_SET)
        async with await ouring.open_file(fd, "r+b", closefd=False) as f:
            assert f.name == fd
            assert await f.tell() == 3
            assert await f.read(2) == b"34"
            await f.write(b"XY")
        assert os.lseek(fd, 0, os.SEEK_CUR) == 7  # where the builtin would leave it
        assert os.read(fd, 10) == b"789"
    finally:
        os.close(fd)
    assert path.read_bytes() == b"01234XY789"


# -- exceptions on misuse ---------------------------------------------------------------------


async def test_reading_a_file_opened_for_writing_raises_unsupported(
    tmp_path: Path, executor: str
) -> None:
    path = tmp_path / "f"
    async with await ouring.open_file(path, "w") as f:
        with pytest.raises(io.UnsupportedOperation, match="not readable"):
            await f.read()
    async with await ouring.open_file(path, "wb") as fb:
        with pytest.raises(io.UnsupportedOperation, match="read"):
            await fb.read()
        with pytest.raises(TypeError, match="bytes-like"):
            await fb.write("text")  # type: ignore[arg-type]
    async with await ouring.open_file(path, "rb", buffering=0) as fr:
        with pytest.raises(io.UnsupportedOperation, match="File not open for writing"):
            await fr.write(b"x")
        with pytest.raises(io.UnsupportedOperation):
            await fr.read_at(bytearray(1), 0) and await fr.write_at(b"x", 0)


async def test_operations_after_close_raise_value_error(tmp_path: Path, executor: str) -> None:
    path = tmp_path / "f"
    path.write_text("x\n")
    for mode, buffering in (("r", -1), ("rb", -1), ("r+b", 0)):
        f: ouring.AsyncFile[Any] = await ouring.open_file(path, mode, buffering=buffering)
        await f.aclose()
        await f.aclose()  # closing again does nothing
        assert f.closed
        with pytest.raises(ValueError, match="closed file"):
            await f.read()
        with pytest.raises(ValueError, match="closed file"):
            await f.readlines()
        with pytest.raises(ValueError, match=r"^I/O operation on closed file\.$"):
            await f.writelines([])
        with pytest.raises(ValueError, match="closed file"):
            f.fileno()
        with pytest.raises(ValueError, match=r"^I/O operation on closed file\.$"):
            f.__aiter__()
        with pytest.raises(ValueError, match=r"^I/O operation on closed file\.$"):
            await f.__aenter__()
        with pytest.raises(ValueError, match="closed file"):
            await f.read_at(bytearray(1), 0)


async def test_negative_seek_raises_like_the_builtin(tmp_path: Path, executor: str) -> None:
    path = tmp_path / "f"
    path.write_text("abc")
    async with await ouring.open_file(path, "rb") as f:
        with pytest.raises(OSError, match="Invalid argument") as exc:
            await f.seek(-1)
        assert exc.value.errno == errno.EINVAL
        assert await f.tell() == 0
    async with await ouring.open_file(path) as t:
        with pytest.raises(ValueError, match="negative seek position -1"):
            await t.seek(-1)


# -- iteration, owned buffers, pread/pwrite -----------------------------------------------------


async def test_async_iteration_yields_lines(tmp_path: Path, executor: str) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"a\r\nb\rc\nd")
    async with await ouring.open_file(path) as f:
        assert [line async for line in f] == ["a\n", "b\n", "c\n", "d"]
        assert f.newlines == ("\r", "\n", "\r\n")
    async with await ouring.open_file(path, "rb") as fb:
        assert [line async for line in fb] == [b"a\r\n", b"b\rc\n", b"d"]


async def test_text_tell_is_disabled_while_iterating_as_in_the_builtin(
    tmp_path: Path, executor: str
) -> None:
    path = tmp_path / "f"
    path.write_text("a\nb\nc\n")
    with open(path) as b:  # noqa: ASYNC230 - the reference
        next(b)
        with pytest.raises(OSError, match="telling position disabled") as builtin:
            b.tell()
    async with await ouring.open_file(path) as f:
        await f.__anext__()
        with pytest.raises(OSError, match="telling position disabled") as ours:
            await f.tell()
        assert ours.value.args == builtin.value.args
        assert await f.readline() == "b\n"


async def test_owned_buffer_methods(tmp_path: Path, executor: str) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"0123456789")
    for buffering in (-1, 0, 4):
        async with await ouring.open_file(path, "r+b", buffering=buffering) as f:
            buf = bytearray(4)
            buf2, n = await f.read_into(buf)
            assert buf2 is buf
            assert (n, bytes(buf)) == (4, b"0123")
            assert await f.read(2) == b"45"
            out = b"ab"
            out2, n = await f.write_from(out)
            assert out2 is out
            assert n == 2
            assert await f.tell() == 8
            assert await f.read() == b"89"
            buf, n = await f.read_at(bytearray(3), 5)
            assert (n, bytes(buf)) == (3, b"5ab")
            _, n = await f.write_at(b"Z", 0)
            assert n == 1
            assert await f.tell() == 10
        assert path.read_bytes() == b"Z12345ab89"
        path.write_bytes(b"0123456789")
    async with await ouring.open_file(path) as t:
        with pytest.raises(io.UnsupportedOperation):
            await t.read_into(bytearray(1))


async def test_append_mode_writes_at_the_end_and_tells_the_end(
    tmp_path: Path, executor: str
) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"start")
    async with await ouring.open_file(path, "a+b") as f:
        assert await f.tell() == 5
        await f.seek(0)
        assert await f.read(2) == b"st"
        await f.write(b"END")
        await f.flush()
        assert await f.tell() == 8
        _, n = await f.write_at(b"!", 0)  # pwrite on O_APPEND appends on Linux
        assert n == 1
    assert path.read_bytes() == b"startEND!"


async def test_text_files_flush_on_newline_with_line_buffering(
    tmp_path: Path, executor: str
) -> None:
    path = tmp_path / "f"
    async with await ouring.open_file(path, "w", buffering=1) as f:
        assert f.line_buffering
        await f.write("no newline")
        assert path.read_bytes() == b""
        await f.write(" now\n")
        assert path.read_bytes() == b"no newline now\n"


# -- pipes and FIFOs -------------------------------------------------------------------------------


async def test_pipe_fds_read_and_write_at_the_current_position(
    pipe: tuple[int, int], executor: str
) -> None:
    r, w = pipe
    reader = await ouring.open_file(r, "rb", closefd=False)
    writer = await ouring.open_file(w, "wb", closefd=False)
    assert not reader.seekable()
    with pytest.raises(io.UnsupportedOperation, match="not seekable"):
        await reader.seek(0)
    with pytest.raises(OSError, match="Illegal seek"):
        await reader.tell()
    await writer.write(b"line one\nline two\npartial")
    await writer.flush()
    assert await reader.readline() == b"line one\n"
    assert await reader.read1(100) == b"line two\npartial"
    await writer.write(b"rest")
    await writer.aclose()
    os.close(w)
    assert await reader.read() == b"rest"
    await reader.aclose()


async def test_update_modes_on_a_pipe_need_a_seekable_file(
    pipe: tuple[int, int], executor: str
) -> None:
    r, _ = pipe
    with pytest.raises(io.UnsupportedOperation) as builtin:
        open(r, "r+b", closefd=False)  # noqa: SIM115, ASYNC230 - the reference
    with pytest.raises(io.UnsupportedOperation) as ours:
        await ouring.open_file(r, "r+b", closefd=False)
    assert ours.value.args == builtin.value.args


async def test_text_over_a_fifo(tmp_path: Path, executor: str) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    received: list[str] = []

    async def read_side() -> None:
        async with await ouring.open_file(fifo, encoding="utf-8") as f:
            received.extend([line async for line in f])

    async with anyio.create_task_group() as nursery:
        nursery.start_soon(read_side)
        async with await ouring.open_file(fifo, "w", encoding="utf-8") as w:
            await w.write("first €\n")
            await w.flush()
            await w.writelines(["second\n", "third"])
    assert received == ["first €\n", "second\n", "third"]


# -- cancellation and concurrency ---------------------------------------------------------------


async def cancel_when_parked(call: Any) -> None:
    """Run ``call()`` in a task until it parks in the kernel, then cancel it;
    it must end with Cancelled (caught by its scope)."""
    scope = anyio.CancelScope()

    async def run() -> None:
        with scope:
            await call()
        assert scope.cancelled_caught

    async with anyio.create_task_group() as nursery:
        nursery.start_soon(run)
        await anyio.wait_all_tasks_blocked()
        scope.cancel()


async def test_cancelled_read_on_an_idle_pipe_loses_nothing(
    pipe: tuple[int, int], executor: str
) -> None:
    r, w = pipe
    for buffering in (0, -1):
        async with await ouring.open_file(r, "rb", buffering=buffering, closefd=False) as f:
            await cancel_when_parked(lambda: f.read(10))
            os.write(w, b"after the cancel")
            assert await f.read(16) == b"after the cancel"


async def test_cancelled_multi_read_gives_back_what_it_collected(
    pipe: tuple[int, int], executor: str
) -> None:
    r, w = pipe
    async with await ouring.open_file(r, "rb", buffering=4, closefd=False) as f:
        os.write(w, b"0123456789")
        await cancel_when_parked(lambda: f.read(30))  # gets 10 bytes, then parks for more
        os.write(w, b"abc")
        assert await f.read(13) == b"0123456789abc"
    async with await ouring.open_file(r, "rb", buffering=0, closefd=False) as raw:
        os.write(w, b"all of it")
        await cancel_when_parked(raw.read)  # readall: gets 9 bytes, parks for EOF
        os.write(w, b"!")
        assert await raw.read(10) == b"all of it"  # a raw read may be short
        assert await raw.read(10) == b"!"
    async with await ouring.open_file(r, closefd=False) as t:
        os.write(w, "é and a half line".encode())
        await cancel_when_parked(t.readline)
        os.write(w, b" and the end\n")
        assert await t.readline() == "é and a half line and the end\n"


async def test_cancelled_read_of_a_file_keeps_the_position(tmp_path: Path) -> None:
    # trio only: trio's scope.cancel() makes the next checkpoint raise, so the
    # read never starts. anyio's scope under asyncio cancels a running task
    # only at its next yield, which the read's own wait is: the (bounded,
    # shielded) read then completes and is returned, and on 3.11/3.12 the
    # cancellation it re-arms outlives the scope (see ouring/_asyncio.py).
    path = tmp_path / "f"
    path.write_bytes(bytes(range(256)) * 100)
    async with await ouring.open_file(path, "rb", buffering=16) as f:
        assert await f.read(5) == bytes(range(5))
        with trio.CancelScope() as scope:
            scope.cancel()
            await f.read(1000)
        assert await f.tell() == 5
        assert await f.read(3) == bytes(range(5, 8))


async def test_aclose_closes_even_when_cancelled(tmp_path: Path, executor: str) -> None:
    path = tmp_path / "f"
    f = await ouring.open_file(path, "w")
    await f.write("buffered")
    fd = f.fileno()
    with anyio.CancelScope() as scope:
        scope.cancel()
        await f.aclose()
    assert f.closed
    assert path.read_text() == "buffered"  # a regular file is flushed, shielded
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(fd)


async def test_aclose_ends_a_read_parked_on_a_pipe(pipe: tuple[int, int]) -> None:
    r, _ = pipe
    f = await ouring.open_file(os.dup(r), "rb")

    async def reader() -> None:
        with pytest.raises(trio.ClosedResourceError):
            await f.read(1)

    async with anyio.create_task_group() as nursery:
        nursery.start_soon(reader)
        await anyio.wait_all_tasks_blocked()
        await f.aclose()
    assert f.closed


async def test_32_tasks_read_at_the_same_file(tmp_path: Path, executor: str) -> None:
    path = tmp_path / "f"
    data = os.urandom(32 * 4096)
    path.write_bytes(data)
    got: dict[int, bytes] = {}
    async with await ouring.open_file(path, "rb") as f:

        async def read_block(i: int) -> None:
            buf, n = await f.read_at(bytearray(4096), i * 4096)
            got[i] = bytes(buf[:n])

        async with anyio.create_task_group() as nursery:
            for i in range(32):
                nursery.start_soon(read_block, i)
        assert await f.tell() == 0
    assert b"".join(got[i] for i in range(32)) == data


async def test_concurrent_reads_do_not_corrupt_the_position(tmp_path: Path, executor: str) -> None:
    path = tmp_path / "f"
    data = os.urandom(64 * 1000)
    path.write_bytes(data)
    for buffering in (0, 100, -1):
        pieces: list[tuple[int, bytes]] = []
        async with await ouring.open_file(path, "rb", buffering=buffering) as f:

            async def take(task: int, f: ouring.AsyncFile[bytes], out: list[Any]) -> None:
                while chunk := await f.read(1000):
                    out.append((task, chunk))

            async with anyio.create_task_group() as nursery:
                nursery.start_soon(take, 0, f, pieces)
                nursery.start_soon(take, 1, f, pieces)
        assert {task for task, _ in pieces} == {0, 1}
        assert b"".join(chunk for _, chunk in pieces) == data


async def test_concurrent_writers_interleave_whole_writes(tmp_path: Path, executor: str) -> None:
    path = tmp_path / "f"
    async with await ouring.open_file(path, "w", buffering=16) as f:

        async def write(ch: str) -> None:
            for _ in range(50):
                await f.write(ch * 10 + "\n")

        async with anyio.create_task_group() as nursery:
            for ch in "abcd":
                nursery.start_soon(write, ch)
    lines = path.read_text().splitlines()
    assert sorted(lines) == sorted(ch * 10 for ch in "abcd" for _ in range(50))


# -- issue 13: each public call is atomic with respect to cancellation -----------------------


class _CancelAfterSteps(trio.abc.Instrument):
    """Cancels ``scope`` when ``task`` has run ``k`` steps (k >= 1): the k-th
    time it yields, parked in the kernel or at a schedule point."""

    def __init__(self, task: trio.lowlevel.Task, scope: trio.CancelScope, k: int) -> None:
        self.task, self.scope, self.k, self.steps = task, scope, k, 0

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.steps += 1
            if self.steps == self.k:
                self.scope.cancel()


async def cancelled_after(k: int, call: Any) -> tuple[bool, Any]:
    """Run ``call()`` with its scope cancelled after ``k`` steps of this task
    (k == 0: before it starts). (True, None) if it raised Cancelled, else
    (False, its result); a call that returns inside a cancelled scope meets
    the Cancelled at the checkpoint right after it. trio only (an
    instrument counts the steps); tests/test_files_model.py injects the same
    way under every executor."""
    scope = trio.CancelScope()
    if k == 0:
        scope.cancel()
    instrument = _CancelAfterSteps(trio.lowlevel.current_task(), scope, k)
    trio.lowlevel.add_instrument(instrument)
    result: Any = None
    returned = False
    try:
        with scope:
            result = await call()
            returned = True
            await trio.lowlevel.checkpoint()
    finally:
        trio.lowlevel.remove_instrument(instrument)
    return not returned, result


def fill_pipe(w: int) -> int:
    """Fill the pipe behind ``w``; returns how many bytes it took."""
    os.set_blocking(w, False)
    total = 0
    try:
        while True:
            total += os.write(w, b"." * 65536)
    except BlockingIOError:
        pass
    os.set_blocking(w, True)
    return total


def drain(r: int, n: int) -> bytes:
    out = b""
    while len(out) < n:
        out += os.read(r, n - len(out))
    return out


def read_to_eof(r: int) -> bytes:
    out = b""
    while chunk := os.read(r, 65536):
        out += chunk
    return out


async def test_text_accepted_by_write_survives_a_cancelled_flush(
    pipe: tuple[int, int], executor: str
) -> None:
    r, w = pipe
    f = await ouring.open_file(os.dup(w), "w", encoding="ascii")
    os.close(w)
    filled = fill_pipe(f.fileno())
    assert await f.write("A" * 5000) == 5000
    await cancel_when_parked(f.flush)  # the pipe is full: the flush parks
    assert drain(r, filled) == b"." * filled
    await f.write("C")
    await f.aclose()
    assert read_to_eof(r) == b"A" * 5000 + b"C"


async def test_text_write_returning_in_a_cancelled_scope_is_written(
    pipe: tuple[int, int],
    executor: str,
) -> None:
    r, w = pipe
    f = await ouring.open_file(os.dup(w), "w", encoding="ascii")
    os.close(w)
    filled = fill_pipe(f.fileno())
    returned: list[int] = []
    scope = anyio.CancelScope()

    async def write() -> None:
        with scope:
            returned.append(await f.write("B" * 9000))  # a full chunk: flushed at once
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as nursery:
        nursery.start_soon(write)
        await anyio.wait_all_tasks_blocked()
        scope.cancel()
    assert returned == [9000]
    assert scope.cancelled_caught
    assert drain(r, filled) == b"." * filled
    await f.aclose()
    assert read_to_eof(r) == b"B" * 9000


async def test_pending_text_survives_a_cancelled_read_on_an_update_file(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"initial")
    async with await ouring.open_file(path, "r+", encoding="ascii") as f:
        await f.write("P" * 5000)  # pending text, more than the buffer holds
        for k in range(4):
            cancelled, _ = await cancelled_after(k, f.read)
            if not cancelled:
                break
        await f.seek(0)
        assert await f.read() == "P" * 5000
    assert path.read_bytes() == b"P" * 5000


async def test_cancelled_unbuffered_readline_on_a_pipe_keeps_its_bytes(
    pipe: tuple[int, int],
    executor: str,
) -> None:
    r, w = pipe
    async with await ouring.open_file(r, "rb", buffering=0, closefd=False) as f:
        os.write(w, b"ab")
        await cancel_when_parked(f.readline)  # took a and b, parks for the third byte
        os.write(w, b"c\nd")
        assert await f.readline() == b"abc\n"
        assert await f.read(1) == b"d"


async def test_cancelled_unbuffered_readline_on_a_file_keeps_the_position(
    tmp_path: Path,
) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"first line\nsecond\n")
    async with await ouring.open_file(path, "rb", buffering=0) as f:
        for k in itertools.count():
            cancelled, line = await cancelled_after(k, f.readline)
            if not cancelled:
                assert line == b"first line\n"
                assert await f.tell() == 11
                break
            assert await f.tell() == 0, f"a readline cancelled after {k} steps moved"
        assert k > 0


@pytest.mark.parametrize(
    ("mode", "buffering"), [("rb", 0), ("rb", -1), ("rb", 4), ("r", -1), ("r", 2)]
)
async def test_cancelled_readlines_keeps_the_lines_it_took(
    pipe: tuple[int, int],
    mode: str,
    buffering: int,
    executor: str,
) -> None:
    r, w = pipe
    f = await ouring.open_file(r, mode, buffering=buffering, closefd=False)
    os.write(w, b"one\ntwo\nthr")
    await cancel_when_parked(f.readlines)  # two lines and a half, then parks
    os.write(w, b"ee\n")
    os.close(w)
    lines = await f.readlines()
    await f.aclose()
    assert [line.encode() if isinstance(line, str) else line for line in lines] == [
        b"one\n",
        b"two\n",
        b"three\n",
    ]


def _builtin_seek_after_read_write(path: Path) -> tuple[int, bytes, bytes]:
    with open(path, "r+b") as g:
        g.read(1)
        g.write(b"X")
        pos = g.seek(100)
        got = g.read(5)
    return pos, got, path.read_bytes()


async def test_seek_after_a_read_cancelled_in_its_flush(tmp_path: Path) -> None:
    ref, path = tmp_path / "ref", tmp_path / "f"
    data = bytes(range(256)) * 40
    ref.write_bytes(data)
    want = _builtin_seek_after_read_write(ref)
    for k in itertools.count():
        path.write_bytes(data)
        async with await ouring.open_file(path, "r+b") as f:
            await f.read(1)
            await f.write(b"X")
            cancelled, _ = await cancelled_after(k, lambda: f.read(5000))
            if not cancelled:
                break
            pos = await f.seek(100)
            got = await f.read(5)
        assert (pos, got, path.read_bytes()) == want, f"read(5000) cancelled after {k} steps"


async def test_append_read_cancelled_after_its_flush_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "f"
    for k in itertools.count():
        path.write_bytes(b"y" * 100)
        async with await ouring.open_file(path, "a+b") as f:
            await f.seek(0)
            await f.write(b"XYZ")
            cancelled, got = await cancelled_after(k, f.read)
            if not cancelled:
                assert got == b""
                break
            assert await f.read() == b"", f"read() cancelled after {k} steps"
            assert await f.tell() == 103
        assert path.read_bytes() == b"y" * 100 + b"XYZ"


async def test_text_write_drops_the_decoded_read_ahead(tmp_path: Path, executor: str) -> None:
    ref, path = tmp_path / "ref", tmp_path / "f"
    for p in (ref, path):
        p.write_text("abcdefghi\n")
    with open(ref, "r+", encoding="ascii") as g:  # noqa: ASYNC230 - the reference
        want = [g.read(7), g.write("E"), g.readline(), g.tell()]
    async with await ouring.open_file(path, "r+", encoding="ascii") as f:
        got = [await f.read(7), await f.write("E"), await f.readline(), await f.tell()]
    assert got == want == ["abcdefg", 1, "", 11]
    assert path.read_bytes() == ref.read_bytes() == b"abcdefghi\nE"


async def test_aclose_waits_for_a_call_in_progress_and_flushes(
    tmp_path: Path, executor: str
) -> None:
    path = tmp_path / "f"
    f = await ouring.open_file(path, "wb", buffering=64)
    await f.write(b"abc")  # buffered

    async def writer() -> None:
        # Flushes abc, writes the d's from the caller's memory, buffers the e:
        # two kernel writes, so the call spans several scheduler passes.
        await f.writelines([b"d" * 100, b"e"])

    async with anyio.create_task_group() as nursery:
        nursery.start_soon(writer)
        for _ in range(1000):
            await anyio.lowlevel.checkpoint()
            if f._lock.locked():
                break
        assert f._lock.locked(), "the writer never entered its call"
        await f.aclose()  # must let the call finish, then flush its e
    assert path.read_bytes() == b"abc" + b"d" * 100 + b"e"


async def test_aclose_ends_every_call_waiting_on_a_pipe(pipe: tuple[int, int]) -> None:
    r, _ = pipe
    f = await ouring.open_file(os.dup(r), "rb")
    ended: list[type[BaseException]] = []

    async def reader() -> None:
        try:
            await f.read(1)
        except trio.ClosedResourceError as exc:
            ended.append(type(exc))

    async with anyio.create_task_group() as nursery:
        for _ in range(3):  # one parked in the kernel, two queued on the lock
            nursery.start_soon(reader)
        await anyio.wait_all_tasks_blocked()
        await f.aclose()
    assert ended == [trio.ClosedResourceError] * 3
    assert f.closed


async def test_a_second_aclose_stays_cancellable_and_any_layer_closes_once(executor: str) -> None:
    # The first aclose of a pipe writer flushes unshielded and may wait for a
    # reader forever; a second aclose (here through the raw layer, which
    # shares the file) must not wait shielded behind it, and once the file is
    # closed, closing any layer again does nothing, as the builtin's close().
    r, w = os.pipe()
    try:
        f = await ouring.open_file(w, "wb", closefd=False, buffering=1 << 20)
        await f.write(b"x" * (1 << 19))  # more than the pipe takes
        async with anyio.create_task_group() as nursery:
            nursery.start_soon(f.aclose)
            await anyio.wait_all_tasks_blocked()
            with anyio.move_on_after(0.2) as scope:
                await f.raw.aclose()
            assert scope.cancelled_caught  # the second close did not hang
            got = 0
            while got < 1 << 19:  # the reader comes: the first close finishes
                got += len(await anyio.to_thread.run_sync(os.read, r, 1 << 16))
        assert f.closed
        await f.raw.aclose()  # once closed: nothing, through any layer
        await f.aclose()
    finally:
        os.close(r)
        os.close(w)
