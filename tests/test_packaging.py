"""How ouring is built and shipped: the extensions carry liburing inside them
(so a wheel needs no liburing on the user's machine), and a build without
liburing's header stops with one line that names the package to install.

The build tests run setup.py from the source tree (OURING_SOURCE_TREE when the
suite runs from a copy, as `make test-wheel` does) against the real compiler,
with liburing's header hidden by include flags: nothing is mocked."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from ouring import _native, _ringcore

SOURCE = Path(os.environ.get("OURING_SOURCE_TREE", Path(__file__).resolve().parents[1]))
PACKAGES = ("liburing-dev", "Fedora: liburing-devel", "Alpine: liburing-dev", "Arch: liburing")


def compiler() -> list[str]:
    """The C compiler setup.py uses: $CC, else the one Python was built with."""
    return shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC"))


def readelf(option: str, path: str) -> str:
    return subprocess.run(
        ["readelf", option, "-W", path], capture_output=True, text=True, check=True
    ).stdout


def needed(path: str) -> list[str]:
    """The DT_NEEDED entries: the shared libraries the loader must find."""
    return [
        line.split("[", 1)[1].rstrip("]")
        for line in readelf("-d", path).splitlines()
        if "(NEEDED)" in line
    ]


def defined_dynamic_symbols(path: str) -> set[str]:
    """The symbols the extension exports to the process."""
    names = set()
    for line in readelf("--dyn-syms", path).splitlines():
        fields = line.split()
        if len(fields) >= 8 and fields[6] != "UND" and fields[0].endswith(":"):
            names.add(fields[7].split("@")[0])
    return names


def compiler_finds(name: str) -> bool:
    # gcc and clang print the bare name back when the file is not on their path.
    found = subprocess.run(
        [*compiler(), f"-print-file-name={name}"], capture_output=True, text=True, check=True
    ).stdout.strip()
    return os.path.isabs(found) and os.path.isfile(found)


@pytest.mark.parametrize("module", [_ringcore, _native], ids=["_native", "_ringcore"])
def test_the_extensions_carry_liburing_instead_of_needing_liburing_so(module: object) -> None:
    # setup.py links liburing.a whenever the compiler finds it (Debian's
    # liburing-dev ships it; `make wheel` requires it). The loader then has no
    # liburing.so to find, and liburing's symbols stay inside the extension.
    path = getattr(module, "__file__", "")
    assert path.endswith(".so")
    libraries = needed(path)
    assert libraries  # readelf read the dynamic section (libc at least)
    if compiler_finds("liburing.a"):
        assert [name for name in libraries if "liburing" in name] == []
        assert {name for name in defined_dynamic_symbols(path) if "uring" in name} == set()
    else:  # no archive: the build falls back to the shared library
        assert any(name.startswith("liburing.so") for name in libraries)


def include_flags_without_liburing(tmp_path: Path) -> tuple[list[str], list[Path]]:
    """Compiler flags that keep its usual include directories, in order, but
    hide liburing's header: each directory that holds it is replaced by a
    directory of symlinks to everything else in it (as if liburing-dev were
    not installed). Also returns the directories that held it."""
    probe = subprocess.run(
        [*compiler(), "-xc", "-E", "-v", "-"], input="", capture_output=True, text=True, check=True
    ).stderr.splitlines()
    start = probe.index("#include <...> search starts here:") + 1
    directories = [Path(line.strip()) for line in probe[start : probe.index("End of search list.")]]
    flags = ["-nostdinc"]
    holders = []
    for i, directory in enumerate(directories):
        if (directory / "liburing.h").exists():
            holders.append(directory)
            shadow = tmp_path / f"include-{i}"
            shadow.mkdir()
            for entry in directory.iterdir():
                if entry.name not in ("liburing.h", "liburing"):
                    (shadow / entry.name).symlink_to(entry)
            directory = shadow
        flags.append(f"-isystem{directory}")
    return flags, holders


def compiles(source: str, flags: list[str], tmp_path: Path) -> bool:
    c_file = tmp_path / "probe.c"
    c_file.write_text(source)
    done = subprocess.run(
        [*compiler(), *flags, "-c", str(c_file), "-o", str(tmp_path / "probe.o")],
        capture_output=True,
        text=True,
    )
    return done.returncode == 0


def build_ext(
    tmp_path: Path, env: dict[str, str], *options: str
) -> subprocess.CompletedProcess[str]:
    """``setup.py build_ext`` from the source tree into tmp_path."""
    return subprocess.run(
        [
            sys.executable,
            "setup.py",
            "build_ext",
            f"--build-lib={tmp_path / 'lib'}",
            f"--build-temp={tmp_path / 'temp'}",
            *options,
        ],
        cwd=SOURCE,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_build_without_liburings_header_says_what_to_install_in_one_line(
    tmp_path: Path,
) -> None:
    hidden, _ = include_flags_without_liburing(tmp_path)
    # The trick hides liburing's header and nothing else.
    assert compiles("#include <stdio.h>\n#include <linux/io_uring.h>\n", hidden, tmp_path)
    assert not compiles("#include <liburing.h>\n", hidden, tmp_path)

    done = build_ext(tmp_path, {"CPPFLAGS": shlex.join(hidden)})

    output = done.stdout + done.stderr
    assert done.returncode != 0
    lines = [line for line in output.splitlines() if "liburing.h" in line or "error" in line]
    assert len(lines) == 1, output
    assert lines[0].startswith("error: liburing.h not found")
    for package in PACKAGES:
        assert package in lines[0]
    assert "fatal error" not in output
    assert "No such file" not in output
    assert not (tmp_path / "lib").exists()  # stopped before compiling anything


@pytest.mark.parametrize("where", ["CPPFLAGS", "--include-dirs"])
def test_the_header_check_uses_the_include_directories_the_build_is_given(
    tmp_path: Path, where: str
) -> None:
    # liburing's header in a directory of its own that only the build's own
    # settings name; an unknown OURING_LIBURING then stops the build right
    # after the check, before any compiling.
    hidden, holders = include_flags_without_liburing(tmp_path)
    own = tmp_path / "own-include"
    own.mkdir()
    for name in ("liburing.h", "liburing"):
        (own / name).symlink_to(holders[0] / name)
    env = {"OURING_LIBURING": "neither", "CPPFLAGS": shlex.join(hidden)}
    if where == "CPPFLAGS":
        env["CPPFLAGS"] += f" -I{own}"
        done = build_ext(tmp_path, env)
    else:
        done = build_ext(tmp_path, env, f"--include-dirs={own}")

    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "liburing.h not found" not in output
    assert "error: OURING_LIBURING must be one of ('auto', 'static', 'shared'), not 'neither'" in (
        output
    )
    assert not (tmp_path / "lib").exists()
