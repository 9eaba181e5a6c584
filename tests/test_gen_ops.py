"""tools/gen_ops.py: the public calls written from the operations of _ops.py.

Each class with ``public = Public(name, doc)`` is ``ouring.name`` and
``Ring.name``, with the constructor's signature; the generated modules must be
what the generator writes from today's _ops.py.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import ouring
from ouring import _ops

# The source tree (OURING_SOURCE_TREE when the suite runs against an installed wheel).
SOURCE = Path(os.environ.get("OURING_SOURCE_TREE", Path(__file__).resolve().parents[1]))
GENERATOR = SOURCE / "tools" / "gen_ops.py"


@functools.cache
def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_ops", GENERATOR)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_ops"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@functools.cache
def declared_exports() -> list[Any]:
    exported, _ = load_generator().exports((SOURCE / "src" / "ouring" / "_ops.py").read_text())
    return list(exported)


def public_classes() -> list[type[Any]]:
    return [
        cls
        for cls in vars(_ops).values()
        if isinstance(cls, type) and "public" in vars(cls) and vars(cls)["public"] is not None
    ]


def test_the_generated_modules_are_current() -> None:
    done = subprocess.run(
        [sys.executable, str(GENERATOR), "--check"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


def test_a_stale_module_is_found_and_rewritten(tmp_path: Path) -> None:
    package = tmp_path / "ouring"
    shutil.copytree(SOURCE / "src" / "ouring", package, ignore=shutil.ignore_patterns("*.so"))
    gen = load_generator()
    ops = package / "_ops.py"
    # A new public operation, as CONTRIBUTING's worked example adds one.
    ops.write_text(
        ops.read_text()
        + '''

class Example(_Status):
    __slots__ = ()
    opcode = lib.IORING_OP_NOP
    public = Public("example", """An example.""")

    def __init__(self, fd: Any, *, level: int = 0o7) -> None:
        super().__init__(fd, 0, 0, 0, level)
'''
    )
    texts = gen.generated(package)
    api = texts[package / "_generated_api.py"]
    ring = texts[package / "_generated_ring.py"]
    assert "def example(fd: Any, *, level: int = 0o7) -> Coroutine[Any, Any, None]:" in api
    assert "return ring.perform(Example(fd, level=level))" in api
    assert '"example"' in api.split("__all__", 1)[1].split("]", 1)[0]
    assert "def example(self, fd: Any, *, level: int = 0o7) -> Coroutine[Any, Any, None]:" in ring
    assert "return self.perform(Example(fd, level=level))" in ring
    for path, text in texts.items():
        assert path.read_text() != text  # the copy's modules predate Example


def test_the_result_type_follows_generic_bases() -> None:
    gen = load_generator()
    exported, type_vars = gen.exports((SOURCE / "src" / "ouring" / "_ops.py").read_text())
    by_name = {e.name: e for e in exported}
    # Read(_FileOperation[B]), _FileOperation(..., Operation[tuple[B, int]])
    assert by_name["read"].returns == "tuple[B, int]"
    assert by_name["readv"].returns == "tuple[S, int]"
    assert by_name["stat"].returns == "os.stat_result"
    assert by_name["fsync"].returns == "None"  # Fsync(_Status), _Status(Operation[None])
    assert set(type_vars) == {"B", "S"}


def test_a_public_class_without_an_operation_base_is_refused() -> None:
    gen = load_generator()
    source = '''
class Odd(object):
    public = Public("odd", """Odd.""")

    def __init__(self, fd: Any) -> None: ...
'''
    with pytest.raises(SystemExit, match="Odd declares `public` but inherits no Operation"):
        gen.exports(source)


@pytest.mark.parametrize("cls", public_classes(), ids=lambda cls: cls.__name__)
def test_each_public_operation_is_a_call_and_a_ring_method(cls: type[Any]) -> None:
    name = cls.public.name
    assert name in ouring.__all__
    function = getattr(ouring, name)
    method = getattr(ouring.Ring, name)
    # The constructor as _ops.py declares it (the hot ones are built in C and
    # typed in an `if TYPE_CHECKING:` block): names, kinds and defaults.
    (declared,) = [e for e in declared_exports() if e.cls == cls.__name__]
    want = [
        (p.name, p.keyword_only, eval(p.default, vars(_ops)) if p.default else None)
        for p in declared.params
    ]

    def shape(params: list[inspect.Parameter]) -> list[tuple[str, bool, Any]]:
        return [
            (
                p.name,
                p.kind is inspect.Parameter.KEYWORD_ONLY,
                None if p.default is inspect.Parameter.empty else p.default,
            )
            for p in params
        ]

    assert shape(list(inspect.signature(function).parameters.values())) == want
    assert shape(list(inspect.signature(method).parameters.values())[1:]) == want
    if "__init__" in vars(cls):  # a Python constructor: its runtime signature too
        assert shape(list(inspect.signature(cls.__init__).parameters.values())[1:]) == want
    assert inspect.getdoc(function) == inspect.cleandoc(cls.public.doc)
    assert inspect.getdoc(method) == inspect.getdoc(function)


def test_every_operation_of_the_api_is_exported_once() -> None:
    names = [cls.public.name for cls in public_classes()]
    assert len(names) == len(set(names))
    assert len(ouring.__all__) == len(set(ouring.__all__))
