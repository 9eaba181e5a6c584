# cffi_modules is a setup() keyword with no pyproject.toml spelling.
from setuptools import setup

setup(cffi_modules=["native/build.py:ffibuilder"])
