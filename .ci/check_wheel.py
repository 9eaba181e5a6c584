"""`make wheel`'s check of the wheel it built: a manylinux tag, the two
extensions (ouring._ringcore and the cffi module ouring._native), and no
liburing.so anywhere: neither extension lists it in its DT_NEEDED entries nor
exports liburing's symbols (it is linked in, and kept private), and auditwheel
had nothing to graft. No extension carries an RPATH/RUNPATH of the build
machine. Exits non-zero, naming each problem, otherwise."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path


def readelf(option: str, path: str) -> list[str]:
    done = subprocess.run(["readelf", option, "-W", path], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"readelf {option} {path} failed: {done.stderr.strip()}")
    return done.stdout.splitlines()


def problems_of(wheel: Path) -> list[str]:
    problems = []
    if "-manylinux" not in wheel.name:
        problems.append(f"{wheel.name}: no manylinux tag")
    with zipfile.ZipFile(wheel) as archive, tempfile.TemporaryDirectory() as tmp:
        members = archive.namelist()
        problems += [f"{name}: bundled in the wheel" for name in members if "liburing" in name]
        extensions = [name for name in members if name.startswith("ouring/") and ".so" in name]
        modules = sorted(Path(name).name.split(".")[0] for name in extensions)
        if modules != ["_native", "_ringcore"]:
            problems.append(f"extensions {modules}, expected ['_native', '_ringcore']")
        for name in extensions:
            path = archive.extract(name, tmp)
            dynamic = readelf("-d", path)
            needed = [line.split("[")[1].rstrip("]") for line in dynamic if "(NEEDED)" in line]
            print(f"{name}: needs {', '.join(needed)}")
            problems += [f"{name} needs {lib}" for lib in needed if "uring" in lib]
            problems += [f"{name}: {line.split(None, 1)[1]}" for line in dynamic if "PATH)" in line]
            exported = [
                fields[7]
                for fields in map(str.split, readelf("--dyn-syms", path))
                if len(fields) >= 8 and fields[0].endswith(":") and fields[6] != "UND"
            ]
            problems += [f"{name} exports {symbol}" for symbol in exported if "uring" in symbol]
    return problems


def main() -> None:
    wheels = [Path(arg) for arg in sys.argv[1:]]
    if len(wheels) != 1:
        raise SystemExit(f"usage: check_wheel.py WHEEL (got {len(wheels)} wheels)")
    problems = problems_of(wheels[0])
    for problem in problems:
        print(f"check_wheel: {problem}", file=sys.stderr)
    if problems:
        raise SystemExit(1)
    print(f"check_wheel: {wheels[0].name}: manylinux, liburing linked in")


if __name__ == "__main__":
    main()
