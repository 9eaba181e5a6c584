"""Shared fixtures: real pipes, sockets and files; nothing of io_uring is mocked."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import os
import socket
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest

T = TypeVar("T")


def open_fds() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/fd")}


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """A connected TCP pair on 127.0.0.1: (client, server), both blocking."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    return client, server


@pytest.fixture
def socketpair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    with a, b:
        yield a, b


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    yield r, w
    for fd in (r, w):
        with contextlib.suppress(OSError):  # a test may have closed it
            os.close(fd)


@pytest.fixture(params=["c", "python"])
def executor_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The test runs twice: over the trio executor's hot paths in C
    (native/trio_await.c: perform and receive) and over the Python paths
    they mirror (what runs where trio's traps differ from what the C
    expects)."""
    from ouring._trio import _Driver

    if request.param == "python":
        monkeypatch.setattr(_Driver, "perform", _Driver._perform_in_python)
        monkeypatch.setattr(_Driver, "receive", _Driver._receive_in_python)
    return str(request.param)


# -- running one async test under each executor ------------------------------------------
#
# An ``async def`` test that asks for the ``executor`` fixture runs three
# times: under trio (pytest-trio, as every async test here), under
# ``asyncio.run`` on the default loop, and under ``uvloop.run``. The same test
# body, parametrized rather than copied; it may use sync fixtures and ouring's
# calls, nothing of trio or asyncio itself.

# Under OURING_FALLBACK too (tests/test_fallback.py runs the suite so): each
# executor drives the thread ring as it drives io_uring.
EXECUTORS = ("trio", "asyncio", "uvloop")


def run_under(executor: str, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
    """``fn(*args)`` to completion under ``executor``, from sync code."""
    if executor == "trio":
        import trio

        return trio.run(fn, *args)
    if executor == "asyncio":
        return asyncio.run(fn(*args))
    import uvloop

    return uvloop.run(fn(*args))


@pytest.fixture(params=EXECUTORS)
def executor(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # pytest-trio's trio_mode marks every async test; those of the asyncio
    # executors run in pytest_pyfunc_call below instead.
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("executor", "trio") != "trio":
            item.own_markers = [mark for mark in item.own_markers if mark.name != "trio"]


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    executor = pyfuncitem.funcargs.get("executor", "trio")
    if executor == "trio" or not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    kwargs = {name: pyfuncitem.funcargs[name] for name in names}
    run_under(str(executor), functools.partial(pyfuncitem.obj, **kwargs))
    return True
