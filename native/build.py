"""cffi build script: compiles ``ouring._native`` against liburing (API mode).

The declarations Python sees live in ``ouring_cdef.h``; the C that implements
them in ``shim.h`` and ``shim.c``. The per-operation path (operations, buffer
leases, the operation table with submit and reap) is a separate CPython
extension, ``ouring._ringcore`` (``ringcore.c``, built by setup.py), because every cffi
call releases and re-takes the GIL. liburing comes from Debian's ``liburing-dev``;
``libraries=["uring"]`` is what setup.py's build_ext checks the header for and
turns into a static link against ``liburing.a`` when there is one.
"""

from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent

ffibuilder = FFI()
ffibuilder.cdef((HERE / "ouring_cdef.h").read_text())
ffibuilder.set_source(
    "ouring._native",
    (HERE / "shim.h").read_text() + (HERE / "shim.c").read_text(),
    libraries=["uring"],
    extra_compile_args=["-O2", "-Wall"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
