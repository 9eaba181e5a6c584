"""ouring.Path against pathlib.Path: each overridden method runs on two
identical trees in tmp_path, pathlib on one and ouring on the other, and must
give the same result or the same exception (type, args, filename, filename2)
and leave the same tree behind. Plus: the I/O goes through the ring (counted
operations, no worker thread), cancellation closes what it opened, and
ouring.Path is a drop-in trio.Path. Real files, FIFOs; nothing is mocked."""

from __future__ import annotations

import array
import asyncio
import errno
import inspect
import os
import pathlib
import pwd
import stat
import sys
from collections.abc import Callable
from typing import Any

import anyio
import pytest
import trio
import trio.testing

import ouring

DATA = b"0123456789"
ROOT = "<root>"

# A case gets `at(name)`: that name in its tree, as the class under test
# (pathlib.Path or ouring.Path), and returns the method call: a value for
# pathlib, an awaitable for ouring.
At = Callable[[str], Any]
Case = Callable[[At], Any]
Outcome = tuple[Any, ...]


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def contents(path: pathlib.Path) -> bytes:
    """A file's bytes, read the plain way: ouring is what is under test."""
    return path.read_bytes()


def build_tree(root: pathlib.Path) -> None:
    root.mkdir()
    (root / "file").write_bytes(DATA)
    (root / "empty").write_bytes(b"")
    (root / "dir").mkdir()
    (root / "dir" / "inner").write_bytes(b"inner")
    (root / "emptydir").mkdir()
    (root / "link").symlink_to("file")
    (root / "dirlink").symlink_to("dir")
    (root / "dangling").symlink_to("missing")
    (root / "loop").symlink_to("loop")


def listing(root: pathlib.Path) -> dict[str, Any]:
    """Everything a method could have changed: names, kinds, modes, link
    counts, contents and link targets."""
    seen: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = pathlib.Path(dirpath, name)
            st = path.lstat()
            entry: tuple[Any, ...] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode))
            if path.is_symlink():
                entry += (os.readlink(path).replace(str(root), ROOT),)
            elif path.is_file():
                entry += (st.st_nlink, path.read_bytes())
            seen[str(path.relative_to(root))] = entry
    return seen


def normalize(value: Any, root: pathlib.Path) -> Any:
    """Tree-independent form of a result or filename: the root becomes <root>,
    a stat result the fields that two identical trees share."""
    if isinstance(value, os.stat_result):
        return (stat.S_IFMT(value.st_mode), stat.S_IMODE(value.st_mode), value.st_size)
    if isinstance(value, pathlib.PurePath):
        return ("path", normalize(str(value), root))
    if isinstance(value, str):
        return value.replace(str(root), ROOT)
    if isinstance(value, bytes):
        return value.replace(os.fsencode(root), ROOT.encode())
    if isinstance(value, tuple):
        return tuple(normalize(item, root) for item in value)
    return value


def snapshot(exc: BaseException, root: pathlib.Path) -> Outcome:
    out: Outcome = ("raises", type(exc), normalize(exc.args, root))
    if isinstance(exc, OSError):
        out += (normalize(exc.filename, root), normalize(exc.filename2, root))
    return out


def run_pathlib(case: Case, root: pathlib.Path) -> Outcome:
    try:
        value = case(lambda name: pathlib.Path(root, name))
    except Exception as exc:  # noqa: BLE001 - the exception is the outcome
        return snapshot(exc, root)
    kind = type(value) if isinstance(value, pathlib.PurePath) else None
    return ("returns", kind, normalize(value, root))


async def run_ouring(case: Case, root: pathlib.Path) -> Outcome:
    try:
        value = await case(lambda name: ouring.Path(root, name))
    except Exception as exc:  # noqa: BLE001
        return snapshot(exc, root)
    kind = pathlib.PosixPath if isinstance(value, ouring.Path) else None  # same role
    return ("returns", kind, normalize(value, root))


async def assert_same(case: Case, tmp_path: pathlib.Path) -> Outcome:
    """Run ``case`` with pathlib and with ouring on identical trees; same
    outcome, same tree afterwards, no fd and no operation left behind."""
    expected_root, got_root = tmp_path / "pathlib", tmp_path / "ouring"
    build_tree(expected_root)
    build_tree(got_root)
    ring = ouring.current_ring()
    before = fd_count()
    expected = run_pathlib(case, expected_root)
    got = await run_ouring(case, got_root)
    assert got == expected
    assert listing(got_root) == listing(expected_root)
    assert fd_count() == before
    assert ring.statistics().inflight == 0
    return got


NUL = "bad\0name"

STAT_CASES: dict[str, Case] = {
    "stat-file": lambda at: at("file").stat(),
    "stat-dir": lambda at: at("dir").stat(),
    "stat-follows-link": lambda at: at("link").stat(),
    "stat-dirlink": lambda at: at("dirlink").stat(),
    "stat-nofollow": lambda at: at("link").stat(follow_symlinks=False),
    "stat-dangling": lambda at: at("dangling").stat(),
    "stat-missing": lambda at: at("missing").stat(),
    "stat-through-file": lambda at: at("file/x").stat(),
    "stat-loop": lambda at: at("loop").stat(),
    "stat-nul": lambda at: at(NUL).stat(),
    "lstat-nul": lambda at: at(NUL).lstat(),
    "lstat-link": lambda at: at("link").lstat(),
    "lstat-dangling": lambda at: at("dangling").lstat(),
    "lstat-file": lambda at: at("file").lstat(),
    "lstat-missing": lambda at: at("missing").lstat(),
    "exists-file": lambda at: at("file").exists(),
    "exists-dir": lambda at: at("dir").exists(),
    "exists-link": lambda at: at("link").exists(),
    "exists-missing": lambda at: at("missing").exists(),
    "exists-dangling": lambda at: at("dangling").exists(),
    "exists-through-file": lambda at: at("file/x").exists(),
    "exists-loop": lambda at: at("loop").exists(),
    "exists-nul": lambda at: at(NUL).exists(),
    "samefile-link": lambda at: at("link").samefile(at("file")),
    "samefile-itself": lambda at: at("file").samefile(at("file")),
    "samefile-other": lambda at: at("file").samefile(at("empty")),
    "samefile-str": lambda at: at("dirlink").samefile(str(at("dir"))),
    "samefile-relative-str": lambda at: at("file").samefile("file"),
    "samefile-missing": lambda at: at("missing").samefile(at("file")),
    "samefile-missing-other": lambda at: at("file").samefile(at("missing")),
    "samefile-bytes": lambda at: at("file").samefile(os.fsencode(at("file"))),
    "samefile-int": lambda at: at("file").samefile(3),
    "samefile-nul": lambda at: at("file").samefile(NUL),
}
if sys.version_info >= (3, 12):
    STAT_CASES["exists-dangling-nofollow"] = lambda at: at("dangling").exists(follow_symlinks=False)

MKDIR_CASES: dict[str, Case] = {
    "new": lambda at: at("new").mkdir(),
    "mode-0o700": lambda at: at("new").mkdir(0o700),
    "mode-0o777-under-umask": lambda at: at("new").mkdir(mode=0o777),
    "mode-0o1777": lambda at: at("new").mkdir(0o1777),
    "exists": lambda at: at("dir").mkdir(),
    "exists-exist-ok": lambda at: at("dir").mkdir(exist_ok=True),
    "file-exist-ok": lambda at: at("file").mkdir(exist_ok=True),
    "dirlink-exist-ok": lambda at: at("dirlink").mkdir(exist_ok=True),
    "dangling-exist-ok": lambda at: at("dangling").mkdir(exist_ok=True),
    "no-parent": lambda at: at("a/b").mkdir(),
    "no-parent-exist-ok": lambda at: at("a/b").mkdir(exist_ok=True),
    "parents": lambda at: at("a/b/c").mkdir(parents=True),
    "parents-mode": lambda at: at("a/b/c").mkdir(0o700, parents=True),
    "parents-exists": lambda at: at("dir").mkdir(parents=True),
    "parents-exists-exist-ok": lambda at: at("dir").mkdir(parents=True, exist_ok=True),
    "parents-inside-existing": lambda at: at("dir/x/y").mkdir(parents=True),
    "parents-through-file": lambda at: at("file/a/b").mkdir(parents=True),
    "parents-through-file-exist-ok": lambda at: at("file/a").mkdir(parents=True, exist_ok=True),
    "parents-through-dangling": lambda at: at("dangling/a").mkdir(parents=True),
    "nul": lambda at: at(NUL).mkdir(),
    "float-mode": lambda at: at("new").mkdir(1.0),
}

REMOVE_CASES: dict[str, Case] = {
    "unlink-file": lambda at: at("file").unlink(),
    "unlink-link-only": lambda at: at("link").unlink(),
    "unlink-dangling": lambda at: at("dangling").unlink(),
    "unlink-missing": lambda at: at("missing").unlink(),
    "unlink-missing-ok": lambda at: at("missing").unlink(missing_ok=True),
    "unlink-missing-ok-positional": lambda at: at("missing").unlink(True),
    "unlink-dir": lambda at: at("dir").unlink(),
    "unlink-dir-missing-ok": lambda at: at("dir").unlink(missing_ok=True),
    "unlink-through-file-missing-ok": lambda at: at("file/x").unlink(missing_ok=True),
    "unlink-nul": lambda at: at(NUL).unlink(missing_ok=True),
    "rmdir-empty": lambda at: at("emptydir").rmdir(),
    "rmdir-not-empty": lambda at: at("dir").rmdir(),
    "rmdir-file": lambda at: at("file").rmdir(),
    "rmdir-dirlink": lambda at: at("dirlink").rmdir(),
    "rmdir-missing": lambda at: at("missing").rmdir(),
    "rmdir-nul": lambda at: at(NUL).rmdir(),
}

NAME_CASES: dict[str, Case] = {
    "rename-new": lambda at: at("file").rename(at("new")),
    "rename-str-target": lambda at: at("file").rename(str(at("new"))),
    "rename-over-file": lambda at: at("file").rename(at("empty")),
    "rename-dir-over-empty-dir": lambda at: at("dir").rename(at("emptydir")),
    "rename-dir-over-full-dir": lambda at: at("emptydir").rename(at("dir")),
    "rename-file-over-dir": lambda at: at("file").rename(at("dir")),
    "rename-dir-over-file": lambda at: at("dir").rename(at("file")),
    "rename-missing": lambda at: at("missing").rename(at("new")),
    "rename-into-missing-dir": lambda at: at("file").rename(at("nodir/new")),
    "rename-link": lambda at: at("link").rename(at("new")),
    "rename-nul-target": lambda at: at("file").rename(NUL),
    "rename-nul-source": lambda at: at(NUL).rename(at("new")),
    "replace-new": lambda at: at("file").replace(at("new")),
    "replace-over-file": lambda at: at("file").replace(at("empty")),
    "replace-file-over-dir": lambda at: at("file").replace(at("dir")),
    "replace-missing": lambda at: at("missing").replace(at("new")),
    "replace-nul-target": lambda at: at("file").replace(NUL),
    "replace-nul-source": lambda at: at(NUL).replace(at("new")),
    "symlink-to-file": lambda at: at("new").symlink_to("file"),
    "symlink-to-path": lambda at: at("new").symlink_to(pathlib.PurePosixPath("dir", "inner")),
    "symlink-to-missing": lambda at: at("new").symlink_to("nowhere"),
    "symlink-to-absolute": lambda at: at("new").symlink_to(at("file")),
    "symlink-target-is-directory": lambda at: at("new").symlink_to("dir", True),
    "symlink-exists": lambda at: at("file").symlink_to("dir"),
    "symlink-in-missing-dir": lambda at: at("nodir/new").symlink_to("file"),
    "symlink-empty-target": lambda at: at("new").symlink_to(""),
    "symlink-nul-target": lambda at: at("new").symlink_to(NUL),
    "symlink-nul-name": lambda at: at(NUL).symlink_to("file"),
    "hardlink-to-file": lambda at: at("new").hardlink_to(at("file")),
    "hardlink-to-link-follows": lambda at: at("new").hardlink_to(at("link")),
    "hardlink-exists": lambda at: at("empty").hardlink_to(at("file")),
    "hardlink-to-missing": lambda at: at("new").hardlink_to(at("missing")),
    "hardlink-to-dir": lambda at: at("new").hardlink_to(at("dir")),
    "hardlink-to-dangling": lambda at: at("new").hardlink_to(at("dangling")),
    "hardlink-nul-target": lambda at: at("new").hardlink_to(NUL),
    "hardlink-nul-name": lambda at: at(NUL).hardlink_to(at("file")),
}

strided = memoryview(bytearray(b"abcdefgh"))[::2]

CONTENT_CASES: dict[str, Case] = {
    "read-file": lambda at: at("file").read_bytes(),
    "read-empty": lambda at: at("empty").read_bytes(),
    "read-link": lambda at: at("link").read_bytes(),
    "read-dir": lambda at: at("dir").read_bytes(),
    "read-dirlink": lambda at: at("dirlink").read_bytes(),
    "read-missing": lambda at: at("missing").read_bytes(),
    "read-dangling": lambda at: at("dangling").read_bytes(),
    "read-loop": lambda at: at("loop").read_bytes(),
    "read-through-file": lambda at: at("file/x").read_bytes(),
    "read-nul": lambda at: at(NUL).read_bytes(),
    "write-new": lambda at: at("new").write_bytes(b"new data"),
    "write-truncates": lambda at: at("file").write_bytes(b"ab"),
    "write-empty": lambda at: at("file").write_bytes(b""),
    "write-bytearray": lambda at: at("file").write_bytes(bytearray(b"\0\1\2")),
    "write-memoryview": lambda at: at("file").write_bytes(memoryview(b"0123456789")[2:5]),
    "write-array-counts-bytes": lambda at: at("file").write_bytes(array.array("i", [1, -1, 7])),
    "write-2d-view": lambda at: at("file").write_bytes(
        memoryview(bytes(range(12))).cast("B", [3, 4])
    ),
    "write-through-link": lambda at: at("link").write_bytes(b"via link"),
    "write-dangling-creates": lambda at: at("dangling").write_bytes(b"created"),
    "write-str-leaves-the-file": lambda at: at("file").write_bytes("text"),
    "write-none": lambda at: at("file").write_bytes(None),
    "write-strided-truncates": lambda at: at("file").write_bytes(strided),
    "write-dir": lambda at: at("dir").write_bytes(b"x"),
    "write-missing-dir": lambda at: at("nodir/x").write_bytes(b"x"),
    "write-nul": lambda at: at(NUL).write_bytes(b"x"),
    "read-text-nul": lambda at: at(NUL).read_text(),
    "write-text-nul": lambda at: at(NUL).write_text("x"),
    "read-text-missing": lambda at: at("missing").read_text(),
    "read-text-dir": lambda at: at("dir").read_text(encoding="no-such-codec"),
    "read-text-unknown-codec": lambda at: at("file").read_text(encoding="no-such-codec"),
    "read-text-not-a-text-codec": lambda at: at("file").read_text(encoding="hex"),
    "read-text-int-encoding": lambda at: at("missing").read_text(encoding=5),
    "read-text-int-errors": lambda at: at("missing").read_text("utf-8", 5),
    "write-text-new": lambda at: at("new").write_text("héllo\n"),
    "write-text-bytes": lambda at: at("file").write_text(b"bytes"),
    "write-text-int-encoding": lambda at: at("new").write_text("x", encoding=5),
    "write-text-int-newline": lambda at: at("new").write_text("x", "utf-8", None, 5),
    "write-text-unknown-codec-truncates": lambda at: at("file").write_text("x", "no-such-codec"),
    "write-text-illegal-newline": lambda at: at("file").write_text("x", "utf-8", None, "\n\n"),
    "write-text-unencodable": lambda at: at("file").write_text("héllo", "ascii"),
    "write-text-dir": lambda at: at("dir").write_text("x"),
    "write-text-missing-dir": lambda at: at("nodir/x").write_text("x", "utf-8"),
}


@pytest.mark.parametrize("case", STAT_CASES.values(), ids=STAT_CASES.keys())
async def test_stat_lstat_exists_match_pathlib(
    case: Case, tmp_path: pathlib.Path, executor: str
) -> None:
    await assert_same(case, tmp_path)


@pytest.mark.parametrize("case", MKDIR_CASES.values(), ids=MKDIR_CASES.keys())
async def test_mkdir_matches_pathlib(case: Case, tmp_path: pathlib.Path, executor: str) -> None:
    await assert_same(case, tmp_path)


@pytest.mark.parametrize("case", REMOVE_CASES.values(), ids=REMOVE_CASES.keys())
async def test_unlink_and_rmdir_match_pathlib(
    case: Case, tmp_path: pathlib.Path, executor: str
) -> None:
    await assert_same(case, tmp_path)


@pytest.mark.parametrize("case", NAME_CASES.values(), ids=NAME_CASES.keys())
async def test_rename_replace_and_links_match_pathlib(
    case: Case, tmp_path: pathlib.Path, executor: str
) -> None:
    await assert_same(case, tmp_path)


@pytest.mark.parametrize("case", CONTENT_CASES.values(), ids=CONTENT_CASES.keys())
async def test_reading_and_writing_match_pathlib(
    case: Case, tmp_path: pathlib.Path, executor: str
) -> None:
    await assert_same(case, tmp_path)


async def test_stat_is_the_same_stat_result(tmp_path: pathlib.Path, executor: str) -> None:
    path = tmp_path / "file"
    path.write_bytes(DATA)
    assert await ouring.Path(path).stat() == path.stat()
    os.symlink(path, tmp_path / "link")
    assert await ouring.Path(tmp_path / "link").lstat() == (tmp_path / "link").lstat()


async def test_mkdir_modes_are_those_of_pathlib_under_any_umask(
    tmp_path: pathlib.Path, executor: str
) -> None:
    old = os.umask(0o027)
    try:
        for mode in (0o777, 0o755, 0o700, 0o2777, 0):
            expected, got = tmp_path / f"p{mode:o}", tmp_path / f"o{mode:o}"
            expected.mkdir(mode)
            await ouring.Path(got).mkdir(mode)
            assert got.stat().st_mode == expected.stat().st_mode
        # parents are made with the default mode, the leaf with the given one
        (tmp_path / "pa" / "pb").mkdir(0o700, parents=True)
        await ouring.Path(tmp_path, "oa", "ob").mkdir(0o700, parents=True)
        assert (tmp_path / "oa").stat().st_mode == (tmp_path / "pa").stat().st_mode
        assert (tmp_path / "oa/ob").stat().st_mode == (tmp_path / "pa/pb").stat().st_mode
    finally:
        os.umask(old)


async def test_rename_and_replace_return_an_ouring_path(
    tmp_path: pathlib.Path, executor: str
) -> None:
    (tmp_path / "a").write_bytes(DATA)
    source = ouring.Path(tmp_path / "a")
    moved = await source.rename(tmp_path / "b")
    assert type(moved) is ouring.Path
    assert moved == pathlib.PurePosixPath(tmp_path / "b")
    replaced = await moved.replace(str(tmp_path / "c"))
    assert type(replaced) is ouring.Path
    assert (tmp_path / "c").read_bytes() == DATA
    relative = await ouring.Path(tmp_path / "c").rename("relative-name-is-not-resolved")
    assert relative == ouring.Path("relative-name-is-not-resolved")
    assert (pathlib.Path.cwd() / "relative-name-is-not-resolved").exists()
    os.unlink("relative-name-is-not-resolved")


# -- text -------------------------------------------------------------------------------

TRICKY_BYTES = [
    b"",
    b"plain",
    b"crlf\r\nline\r\n",
    b"lone\rcr\rat end\r",
    b"mixed\r\n\n\r\r\n\n\r",
    b"cr at the very end\r",
    "héllo wörld € 𝄞\r\n".encode(),
    b"\xef\xbb\xbfbom then text\r\n",
    "utf16\r\nwith bom\r".encode("utf-16"),
    "utf16-le no bom\r\n".encode("utf-16-le"),
    b"bad \xff\xfe utf-8 \xc3",
    b"\x00\x01\x02 binary\r\n",
    b"x" * 70000 + b"\r" + b"\n" + b"y" * 10,  # a \r\n pair split across decoder chunks
]
TEXT_READ_ARGS: list[dict[str, Any]] = [
    {"encoding": "utf-8"},
    {"encoding": "utf-8", "errors": "replace"},
    {"encoding": "utf-8", "errors": "surrogateescape"},
    {"encoding": "utf-8-sig"},
    {"encoding": "utf-16"},
    {"encoding": "utf-16", "errors": "replace"},
    {"encoding": "latin-1"},
    {"encoding": "ascii", "errors": "backslashreplace"},
    {},  # the locale's encoding, as io.text_encoding(None) selects it
]


@pytest.mark.parametrize("kwargs", TEXT_READ_ARGS, ids=repr)
@pytest.mark.parametrize("raw", TRICKY_BYTES, ids=lambda raw: repr(raw[:24]))
async def test_read_text_decodes_as_pathlib(
    raw: bytes,
    kwargs: dict[str, Any],
    tmp_path: pathlib.Path,
    executor: str,
) -> None:
    path = tmp_path / "text"
    path.write_bytes(raw)
    try:
        expected: Outcome = ("returns", path.read_text(**kwargs))
    except UnicodeError as exc:
        expected = ("raises", type(exc), exc.args)
    try:
        got: Outcome = ("returns", await ouring.Path(path).read_text(**kwargs))
    except UnicodeError as exc:
        got = ("raises", type(exc), exc.args)
    assert got == expected


TRICKY_TEXT = [
    "",
    "plain",
    "lf\nlines\n",
    "crlf\r\nlines\r\n",
    "lone\rcr\r",
    "mixed\r\n\n\r\r\n",
    "héllo wörld € 𝄞\n",
    "surrogate \udcff escape",
    "\ufeffstarts with a bom",
]
TEXT_WRITE_ARGS: list[dict[str, Any]] = [
    {"encoding": "utf-8"},
    {"encoding": "utf-8", "newline": ""},
    {"encoding": "utf-8", "newline": "\n"},
    {"encoding": "utf-8", "newline": "\r"},
    {"encoding": "utf-8", "newline": "\r\n"},
    {"encoding": "utf-8", "errors": "replace"},
    {"encoding": "utf-8", "errors": "surrogateescape"},
    {"encoding": "utf-8-sig"},
    {"encoding": "utf-16"},
    {"encoding": "utf-16", "newline": "\r\n"},
    {"encoding": "utf-32-be"},
    {"encoding": "ascii", "errors": "xmlcharrefreplace"},
    {"encoding": "latin-1", "errors": "replace"},
    {},
]


@pytest.mark.parametrize("kwargs", TEXT_WRITE_ARGS, ids=repr)
@pytest.mark.parametrize("text", TRICKY_TEXT, ids=repr)
async def test_write_text_encodes_as_pathlib(
    text: str,
    kwargs: dict[str, Any],
    tmp_path: pathlib.Path,
    executor: str,
) -> None:
    expected_path, got_path = tmp_path / "expected", tmp_path / "got"
    try:
        expected: Outcome = ("returns", expected_path.write_text(text, **kwargs))
    except UnicodeError as exc:
        expected = ("raises", type(exc), exc.args)
    try:
        got: Outcome = ("returns", await ouring.Path(got_path).write_text(text, **kwargs))
    except UnicodeError as exc:
        got = ("raises", type(exc), exc.args)
    assert got == expected
    assert got_path.read_bytes() == expected_path.read_bytes()


async def test_signatures_are_pathlibs(executor: str) -> None:
    for name in (
        "stat",
        "lstat",
        "exists",
        "mkdir",
        "unlink",
        "rmdir",
        "rename",
        "replace",
        "symlink_to",
        "hardlink_to",
        "samefile",
        "read_bytes",
        "read_text",
        "write_bytes",
        "write_text",
        "open",
    ):
        ours = inspect.signature(getattr(ouring.Path, name))
        theirs = inspect.signature(getattr(pathlib.Path, name))
        assert list(ours.parameters) == list(theirs.parameters), name
        for param, expected in zip(
            ours.parameters.values(), theirs.parameters.values(), strict=True
        ):
            assert (param.kind, param.default) == (expected.kind, expected.default), name
        assert inspect.iscoroutinefunction(getattr(ouring.Path, name)), name


# -- through the ring -----------------------------------------------------------------------


async def test_each_method_is_its_ring_operations_and_no_worker_thread(
    tmp_path: pathlib.Path,
) -> None:
    ring = ouring.current_ring()
    base = ouring.Path(tmp_path)
    (tmp_path / "file").write_bytes(DATA)
    calls: list[tuple[Callable[[], Any], int]] = [
        (lambda: (base / "file").stat(), 1),  # statx
        (lambda: (base / "file").lstat(), 1),
        (lambda: (base / "file").exists(), 1),
        (lambda: (base / "missing").exists(), 1),
        (lambda: (base / "file").samefile(base / "file"), 2),  # statx, statx
        (lambda: (base / "d").mkdir(), 1),  # mkdirat
        (lambda: (base / "d").mkdir(exist_ok=True), 2),  # mkdirat (EEXIST), statx
        (lambda: (base / "a" / "b").mkdir(parents=True), 3),  # ENOENT, a, b again
        (lambda: (base / "d").rmdir(), 1),  # unlinkat
        (lambda: (base / "file").read_bytes(), 5),  # openat, statx, read, read (EOF), close
        (lambda: (base / "w").write_bytes(DATA), 3),  # openat, write, close
        (lambda: (base / "w").write_text("text"), 3),
        (lambda: (base / "w").read_text(), 5),
        (lambda: (base / "s").symlink_to("w"), 1),  # symlinkat
        (lambda: (base / "h").hardlink_to(base / "w"), 1),  # linkat
        (lambda: (base / "h").rename(base / "h2"), 1),  # renameat
        (lambda: (base / "h2").replace(base / "w"), 1),
        (lambda: (base / "s").unlink(), 1),  # unlinkat
        (lambda: (base / "s").unlink(missing_ok=True), 1),
    ]
    # Every worker-thread token of this run is held: a method that used
    # trio.to_thread would wait forever (the deadline turns that into a failure).
    limiter = trio.to_thread.current_default_thread_limiter()
    limiter.total_tokens = 1
    async with limiter:
        with trio.fail_after(20):
            for call, ops in calls:
                before = ring.statistics().submitted
                await call()
                assert ring.statistics().submitted - before == ops
    assert limiter.statistics().tasks_waiting == 0
    assert (tmp_path / "w").read_bytes() == b"text"


async def wait_for_fds(count: int) -> None:
    """Let the other tasks run until this process has ``count`` fds open."""
    with anyio.fail_after(10):  # a failure, not a synchronization
        while fd_count() != count:
            await anyio.wait_all_tasks_blocked()


async def test_a_cancelled_read_closes_its_fd(tmp_path: pathlib.Path, executor: str) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    # A reader-writer of our own: the ring's openat does not wait for a
    # writer, and the read_bytes parks, the FIFO being empty.
    keep = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    ouring.current_ring()  # the run's ring has its fd before they are counted
    try:
        before = fd_count()
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as nursery:
                nursery.start_soon(ouring.Path(fifo).read_bytes)
                await wait_for_fds(before + 1)  # opened: it is parked on the FIFO
                scope.cancel()
        assert fd_count() == before  # closed on the way out
        assert ouring.current_ring().statistics().inflight == 0
    finally:
        os.close(keep)


async def test_read_bytes_of_a_fifo_reads_until_eof(tmp_path: pathlib.Path, executor: str) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    keep = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    writer = os.open(fifo, os.O_WRONLY)  # does not block: `keep` is a reader
    os.write(writer, b"through the fifo")  # stays in the pipe: `writer` keeps it open
    os.close(keep)
    ouring.current_ring()
    before = fd_count()
    got: list[bytes] = []

    async def read() -> None:
        got.append(await ouring.Path(fifo).read_bytes())

    try:
        async with anyio.create_task_group() as nursery:
            nursery.start_soon(read)
            await wait_for_fds(before + 1)  # opened while a writer exists
            os.close(writer)  # EOF after the data
            writer = -1
    finally:
        if writer != -1:
            os.close(writer)
    assert got == [b"through the fifo"]


async def test_read_bytes_of_a_file_stat_cannot_size(executor: str) -> None:
    # /proc files report st_size 0: read until a read returns 0.
    path = pathlib.Path("/proc/version")
    assert await ouring.Path(path).read_bytes() == contents(path)


async def test_read_and_write_large_files(tmp_path: pathlib.Path, executor: str) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    path = ouring.Path(tmp_path / "big")
    assert await path.write_bytes(data) == len(data)
    assert (tmp_path / "big").read_bytes() == data
    assert await path.read_bytes() == data
    text = "é\r\n" * 100_000
    assert await path.write_text(text, newline="") == len(text)
    assert await path.read_text("utf-8") == text.replace("\r\n", "\n")


async def test_a_cancelled_call_never_reaches_the_kernel(tmp_path: pathlib.Path) -> None:
    # trio only: trio's scope.cancel() makes the call's first checkpoint
    # raise. anyio's scope under asyncio cancels a running task only at its
    # next yield, by which time the call has submitted its first operation.
    ring = ouring.current_ring()
    before = (ring.statistics().submitted, fd_count())
    with trio.CancelScope() as scope:
        scope.cancel()
        await ouring.Path(tmp_path / "new").write_bytes(DATA)
    assert (ring.statistics().submitted, fd_count()) == before
    assert not (tmp_path / "new").exists()


# -- open -----------------------------------------------------------------------------------


async def test_open_is_ouring_open_file(tmp_path: pathlib.Path, executor: str) -> None:
    ring = ouring.current_ring()
    path = ouring.Path(tmp_path / "f")
    before = ring.statistics().submitted
    async with await path.open("w", encoding="utf-8", newline="\r\n") as f:
        assert isinstance(f, ouring.AsyncFile)
        assert await f.write("one\ntwo\n") == 8
    assert (tmp_path / "f").read_bytes() == b"one\r\ntwo\r\n"
    async with await path.open() as f:
        assert await f.read() == (tmp_path / "f").read_text()
    async with await path.open("rb") as f:
        assert await f.read() == b"one\r\ntwo\r\n"
    assert ring.statistics().submitted > before
    with pytest.raises(FileNotFoundError) as info:
        await ouring.Path(tmp_path / "missing").open()
    assert info.value.filename == str(tmp_path / "missing")
    with pytest.raises(TypeError):
        await path.open(5)  # type: ignore[call-overload]


# -- a drop-in trio.Path --------------------------------------------------------------------


async def test_is_a_trio_path_and_pure_operations_stay_ouring(tmp_path: pathlib.Path) -> None:
    path = ouring.Path(tmp_path, "x")
    assert isinstance(path, trio.Path)
    assert isinstance(path, pathlib.PurePosixPath)
    assert not isinstance(path, pathlib.Path)
    assert repr(path) == f"ouring.Path({str(tmp_path / 'x')!r})"
    for derived in (
        path / "y",
        path.parent,
        path.with_name("z"),
        path.with_suffix(".txt"),
        path.joinpath("a", "b"),
        path.relative_to(tmp_path),
        ouring.Path("a") / pathlib.PurePath("b"),
        "a" / ouring.Path("b"),
    ):
        assert type(derived) is ouring.Path
    plain: pathlib.PurePath = pathlib.Path(tmp_path, "x")
    assert path == plain
    assert path == trio.Path(tmp_path, "x")
    assert hash(path) == hash(pathlib.PurePosixPath(tmp_path, "x"))
    assert os.fspath(path) == str(tmp_path / "x")
    assert ouring.Path is ouring._path.Path
    assert "Path" in ouring.__all__


async def other_methods(tmp_path: pathlib.Path) -> None:
    """The methods that run pathlib's in a worker thread: results as trio's."""
    (tmp_path / "f").write_bytes(DATA)
    (tmp_path / "link").symlink_to("f")
    base = ouring.Path(tmp_path)
    assert await (base / "f").is_file()
    assert not await (base / "f").is_dir()
    names = list(await base.iterdir())
    assert {type(p) for p in names} == {ouring.Path}
    assert sorted(p.name for p in names) == ["f", "link"]
    target = await (base / "link").readlink()
    assert (type(target), target) == (ouring.Path, ouring.Path("f"))
    resolved = await (base / "link").resolve()
    assert type(resolved) is ouring.Path
    assert type(await ouring.Path.cwd()) is ouring.Path
    await (base / "t").touch()
    assert (tmp_path / "t").exists()
    await (base / "t").chmod(0o600)
    assert (tmp_path / "t").stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in await base.glob("l*")) == ["link"]
    assert await (base / "link").is_symlink()
    assert await (base / "f").owner() == pwd.getpwuid(os.getuid()).pw_name


async def test_other_methods_run_in_a_worker_thread_and_return_ouring_paths(
    tmp_path: pathlib.Path,
) -> None:
    await other_methods(tmp_path)


def test_other_methods_run_under_asyncio_without_a_trio_run(tmp_path: pathlib.Path) -> None:
    asyncio.run(other_methods(tmp_path))


def test_no_method_is_left_to_trios_worker_threads() -> None:
    # trio.Path's own methods call trio.to_thread, which needs a trio run:
    # every one of them is ouring's (a ring operation or _sync.to_thread).
    for name, member in vars(trio.Path).items():
        if inspect.iscoroutinefunction(member) or isinstance(member, classmethod):
            assert getattr(ouring.Path, name) != getattr(trio.Path, name), name
            assert getattr(ouring.Path, name).__doc__, name


async def test_errors_carry_errno_and_filenames(tmp_path: pathlib.Path, executor: str) -> None:
    path = ouring.Path(tmp_path / "missing")
    with pytest.raises(FileNotFoundError) as info:
        await path.read_bytes()
    assert (info.value.errno, info.value.filename) == (errno.ENOENT, str(path))
    with pytest.raises(FileNotFoundError) as info:
        await path.rename(tmp_path / "other")
    assert (info.value.filename, info.value.filename2) == (str(path), str(tmp_path / "other"))
    with pytest.raises(FileNotFoundError) as info:
        await path.hardlink_to(tmp_path / "nowhere")
    assert (info.value.filename, info.value.filename2) == (str(tmp_path / "nowhere"), str(path))
