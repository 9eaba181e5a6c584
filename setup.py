"""Builds ``ouring._native`` (cffi, from native/build.py) and ``ouring._ringcore``
(native/ringcore.c). cffi_modules is a setup() keyword with no pyproject.toml
spelling; the C-API hot path is a plain extension built beside it.

Both link liburing. ``build_ext`` first asks the configured compiler (CC,
CFLAGS, CPPFLAGS, ``--include-dirs``) to compile ``#include <liburing.h>`` and,
if it cannot find it, stops with one line naming the package to install. It
then links liburing statically when the compiler finds ``liburing.a`` (Debian's
and Ubuntu's liburing-dev ship it): the extensions then need no liburing at run
time, which is what lets a wheel work on machines without it. Its symbols stay
private to each extension (``--exclude-libs``), so they can never bind to, or
be bound by, another copy of liburing in the process.
``OURING_LIBURING=static`` requires the archive, ``=shared`` links
``liburing.so`` (for distributions that package ouring), the default ``auto``
takes the archive when there is one.
"""

from __future__ import annotations

import os
import subprocess
import tempfile

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CompileError, PlatformError

MISSING_HEADER = (
    "liburing.h not found: install liburing's development files "
    "(Debian/Ubuntu: liburing-dev, Fedora: liburing-devel, Alpine: liburing-dev, "
    "Arch: liburing) or add its include directory to CPPFLAGS"
)
LINK_MODES = ("auto", "static", "shared")


class BuildExt(build_ext):
    """build_ext with the liburing header check and the static-link choice.
    cffi subclasses whatever ``build_ext`` setup() is given, so this also
    builds the cffi module."""

    def build_extensions(self) -> None:
        # self.compiler is configured here (CC, CFLAGS, CPPFLAGS, -I options).
        self._check_liburing_header()
        mode = os.environ.get("OURING_LIBURING", "auto")
        if mode not in LINK_MODES:
            raise PlatformError(f"OURING_LIBURING must be one of {LINK_MODES}, not {mode!r}")
        archive = None if mode == "shared" else self._liburing_archive()
        if archive is None and mode == "static":
            raise PlatformError(
                "OURING_LIBURING=static, but the C compiler finds no liburing.a "
                "(Debian's and Ubuntu's liburing-dev ship it)"
            )
        if archive is not None:
            for ext in self.extensions:
                if "uring" in ext.libraries:
                    ext.libraries = [lib for lib in ext.libraries if lib != "uring"]
                    ext.extra_objects = [*ext.extra_objects, archive]
                    ext.extra_link_args = [*ext.extra_link_args, "-Wl,--exclude-libs,liburing.a"]
                    ext.depends = [*ext.depends, archive]
        super().build_extensions()

    def _check_liburing_header(self) -> None:
        """Compile ``#include <liburing.h>`` the way the extensions will be
        compiled; the compiler's own output is shown only when it fails for
        another reason than the missing header."""
        with tempfile.TemporaryDirectory() as tmp:
            source = os.path.join(tmp, "probe.c")
            with open(source, "w") as f:
                f.write("#include <liburing.h>\nint main(void) { return 0; }\n")
            command = [
                *self.compiler.compiler_so,
                *(f"-I{d}" for d in self.compiler.include_dirs),
                "-c",
                source,
                "-o",
                os.path.join(tmp, "probe.o"),
            ]
            try:
                done = subprocess.run(command, capture_output=True, text=True, check=False)
            except OSError as exc:
                raise CompileError(f"cannot run the C compiler {command[0]!r}: {exc}") from None
        if done.returncode == 0:
            return
        if "liburing.h" in done.stderr:
            raise PlatformError(MISSING_HEADER)
        raise CompileError(f"the C compiler failed on #include <liburing.h>:\n{done.stderr}")

    def _liburing_archive(self) -> str | None:
        """``liburing.a`` where the linker would find it: the -L directories
        given to the build, then the compiler's own search path."""
        dirs = [*self.compiler.library_dirs]
        dirs += [arg[2:] for arg in self.compiler.linker_so if arg.startswith("-L")]
        for directory in dirs:
            candidate = os.path.join(directory, "liburing.a")
            if os.path.isfile(candidate):
                return os.path.normpath(candidate)
        try:
            found = subprocess.run(
                [*self.compiler.compiler_so, "-print-file-name=liburing.a"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()
        except OSError:
            return None
        # gcc and clang print the bare name back when they find nothing.
        return os.path.normpath(found) if os.path.isabs(found) and os.path.isfile(found) else None


setup(
    cmdclass={"build_ext": BuildExt},
    cffi_modules=["native/build.py:ffibuilder"],
    ext_modules=[
        Extension(
            "ouring._ringcore",
            ["native/ringcore.c"],
            include_dirs=["native"],
            libraries=["uring"],
            extra_compile_args=["-O2", "-Wall"],
            # ringcore.c includes internal.h and every part: one translation unit.
            depends=[
                "native/shim.h",
                "native/internal.h",
                "native/lease.c",
                "native/ops.c",
                "native/pool.c",
                "native/receive.c",
                "native/core.c",
                "native/trio_await.c",
                "native/asyncio_await.c",
            ],
        )
    ],
)
