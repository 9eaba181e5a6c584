# cffi_modules is a setup() keyword with no pyproject.toml spelling; the C-API
# hot path (native/hot.c) is a plain extension built beside it.
from setuptools import Extension, setup

setup(
    cffi_modules=["native/build.py:ffibuilder"],
    ext_modules=[
        Extension(
            "ouring._hot",
            ["native/hot.c"],
            include_dirs=["native"],
            libraries=["uring"],
            extra_compile_args=["-O2", "-Wall"],
            depends=["native/shim.h"],
        )
    ],
)
