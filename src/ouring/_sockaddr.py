"""Python socket addresses <-> the ``struct sockaddr`` bytes the kernel reads
(connect) and writes (accept), in the same shapes the ``socket`` module uses.

Only numeric hosts are encoded here: name resolution may block, so it belongs
to the event-loop adapter (trio resolves in a worker thread), not to the core.
"""

from __future__ import annotations

import os
import socket
import struct
from typing import Any

__all__ = ["MAX_SOCKADDR", "decode", "encode", "is_numeric"]

MAX_SOCKADDR = 128  # sizeof(struct sockaddr_storage)
_SUN_PATH = 108

_IN4 = struct.Struct("=H2s4s8x")  # family, port (network order), address
_IN6 = struct.Struct("=H2s4s16sI")  # family, port, flowinfo (network order), address, scope_id


def encode(family: int, address: Any) -> bytes:
    """The sockaddr for ``address`` in ``family``; ``ValueError``/``TypeError``
    for addresses that are malformed or not numeric."""
    if family == socket.AF_UNIX:
        path = os.fsencode(address) if isinstance(address, str | os.PathLike) else address
        if not isinstance(path, bytes):
            raise TypeError(
                f"an AF_UNIX address is a str or bytes path, not {type(address).__name__}"
            )
        if path[:1] != b"\0":
            path += b"\0"  # a filesystem path is NUL-terminated; an abstract name is not
        if len(path) > _SUN_PATH:
            raise ValueError("AF_UNIX path too long")
        return struct.pack("=H", family) + path
    if family == socket.AF_INET:
        host, port = _host_port(address, 2)
        return _IN4.pack(family, _port(port), _numeric(socket.AF_INET, host or "0.0.0.0"))
    if family == socket.AF_INET6:
        host, port, *rest = _host_port(address, 4)
        flowinfo = _u32(rest[0], "flowinfo") if rest else 0
        scope_id = _u32(rest[1], "scope_id") if len(rest) > 1 else 0
        host, _, scope = host.partition("%")
        if scope:
            scope_id = int(scope) if scope.isdigit() else socket.if_nametoindex(scope)
        return _IN6.pack(
            family,
            _port(port),
            struct.pack("!I", flowinfo),
            _numeric(socket.AF_INET6, host or "::"),
            scope_id,
        )
    raise ValueError(f"address family {family} is not supported")


def decode(data: bytes) -> Any:
    """The ``socket``-module shape of a sockaddr the kernel wrote."""
    (family,) = struct.unpack_from("=H", data)
    if family == socket.AF_INET:
        _, port, addr = _IN4.unpack_from(data)
        return socket.inet_ntop(socket.AF_INET, addr), int.from_bytes(port, "big")
    if family == socket.AF_INET6:
        _, port, flow, addr, scope_id = _IN6.unpack_from(data)
        host = socket.inet_ntop(socket.AF_INET6, addr)
        return host, int.from_bytes(port, "big"), int.from_bytes(flow, "big"), scope_id
    if family == socket.AF_UNIX:
        path = data[2:]
        if path[:1] == b"\0":
            return path  # Linux abstract namespace: bytes, as socket.accept returns it
        return os.fsdecode(path.split(b"\0", 1)[0])
    return data


def is_numeric(family: int, address: Any) -> bool:
    """False only for an IP address whose host is a name to resolve."""
    if family not in (socket.AF_INET, socket.AF_INET6):
        return True
    _host_port(address, 4 if family == socket.AF_INET6 else 2)  # malformed: say so, don't resolve
    host = address[0].partition("%")[0]
    if not host:
        return True
    try:
        socket.inet_pton(family, host)
    except OSError:
        return False
    return True


def _host_port(address: Any, most: int) -> tuple[Any, ...]:
    if not isinstance(address, tuple) or not 2 <= len(address) <= most:
        raise TypeError(f"an address is a (host, port) tuple, not {address!r}")
    if not isinstance(address[0], str):
        raise TypeError(f"host must be a str, not {type(address[0]).__name__}")
    return address


def _u32(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not 0 <= value <= 0xFFFFFFFF:
        raise OverflowError(f"{name} must be 0-4294967295")
    return value


def _port(port: Any) -> bytes:
    if not isinstance(port, int) or isinstance(port, bool):
        raise TypeError(f"port must be an int, not {type(port).__name__}")
    if not 0 <= port <= 0xFFFF:
        raise OverflowError("port must be 0-65535")
    return port.to_bytes(2, "big")


def _numeric(family: int, host: str) -> bytes:
    try:
        return socket.inet_pton(family, host)
    except OSError:
        raise ValueError(f"{host!r} is not a numeric address; resolve it first") from None
