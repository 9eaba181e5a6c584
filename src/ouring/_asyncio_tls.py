"""TLS for ``ouring.asyncio``: asyncio's own ``SSLProtocol`` over a ring transport.

asyncio does TLS the same way over every transport it has (selector,
proactor): ``asyncio.sslproto.SSLProtocol`` is a ``BufferedProtocol`` (since
3.11) that sits on the raw transport, runs the handshake and the records
through ``ssl.MemoryBIO``s, and hands the user's protocol a transport of its
own (``_SSLProtocolTransport``). The raw transport here is a ``RingTransport``;
this module holds what the TLS forms of the calls add to the plain ones: the
argument rules of ``base_events.py``/``unix_events.py`` (3.11-3.13 agree), the
one call that builds an ``SSLProtocol``, the wait for the handshake, and
``start_tls``/``stream_start_tls`` for loops whose own ``start_tls`` refuses
foreign transports (uvloop's accepts only uvloop's).

The stdlib ``SSLProtocol`` is used on uvloop too: it needs of the loop only
``call_soon``, ``call_later``, ``create_future``, ``get_debug`` and
``call_exception_handler``.
"""

from __future__ import annotations

import asyncio
import ssl as _ssl
from asyncio import sslproto
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import _sync

__all__ = [
    "TLS",
    "check_socket",
    "client_tls",
    "handshake",
    "server_tls",
    "ssl_protocol",
    "start_tls",
    "stream_start_tls",
]


@dataclass(frozen=True)
class TLS:
    """What one connection's ``SSLProtocol`` is made with."""

    context: _ssl.SSLContext | None  # None: asyncio's default client context (ssl=True)
    server_side: bool
    server_hostname: str | None
    handshake_timeout: float | None  # None: asyncio's defaults (60 s, 30 s)
    shutdown_timeout: float | None


def _check_timeouts(handshake_timeout: float | None, shutdown_timeout: float | None) -> None:
    # SSLProtocol raises these only once the connection exists (asyncio then
    # leaves the connected socket to the garbage collector): here, at the call.
    for name, value in (
        ("ssl_handshake_timeout", handshake_timeout),
        ("ssl_shutdown_timeout", shutdown_timeout),
    ):
        if value is not None and value <= 0:
            raise ValueError(f"{name} should be a positive number, got {value}")


def _check_context(ssl: Any, allow_true: bool) -> None:
    # asyncio passes anything else on to SSLProtocol, which fails after the
    # connect with an AttributeError: refused here before anything is made.
    if ssl is None or ssl is False or isinstance(ssl, _ssl.SSLContext):
        return
    if ssl is True and allow_true:
        return
    raise TypeError(f"ssl argument must be an SSLContext or None, got {ssl!r}")


def check_socket(sock: Any) -> None:
    """``_check_ssl_socket``: a socket already wrapped by ``ssl`` is refused."""
    if isinstance(sock, _ssl.SSLSocket):
        raise TypeError("Socket cannot be of type SSLSocket")


def client_tls(
    ssl: Any,
    server_hostname: str | None,
    host: str | None,
    handshake_timeout: float | None,
    shutdown_timeout: float | None,
    *,
    unix: bool = False,
) -> TLS | None:
    """The TLS of ``create_connection`` (``unix``: ``create_unix_connection``),
    with asyncio's rules and messages; None without ``ssl``."""
    _check_context(ssl, allow_true=True)
    if unix:
        if ssl:
            if server_hostname is None:
                raise ValueError("you have to pass server_hostname when using ssl")
        elif server_hostname is not None:
            raise ValueError("server_hostname is only meaningful with ssl")
    else:
        if server_hostname is not None and not ssl:
            raise ValueError("server_hostname is only meaningful with ssl")
        if server_hostname is None and ssl:
            # asyncio's rule: the host is the name checked, and a connection
            # with no host (a sock) must say which ("" skips the check).
            if not host:
                raise ValueError("You must set server_hostname when using ssl without a host")
            server_hostname = host
    if handshake_timeout is not None and not ssl:
        raise ValueError("ssl_handshake_timeout is only meaningful with ssl")
    if shutdown_timeout is not None and not ssl:
        raise ValueError("ssl_shutdown_timeout is only meaningful with ssl")
    _check_timeouts(handshake_timeout, shutdown_timeout)
    if not ssl:
        return None
    context = None if ssl is True else ssl
    return TLS(context, False, server_hostname, handshake_timeout, shutdown_timeout)


def server_tls(
    ssl: Any,
    handshake_timeout: float | None,
    shutdown_timeout: float | None,
    *,
    unix: bool = False,
) -> TLS | None:
    """The TLS of ``create_server`` (``unix``: ``create_unix_server``), with
    asyncio's rules and messages; None without ``ssl``."""
    if isinstance(ssl, bool):
        raise TypeError("ssl argument must be an SSLContext or None")
    _check_context(ssl, allow_true=False)
    # create_server tests "ssl is None", create_unix_server "not ssl".
    absent = not ssl if unix else ssl is None
    if handshake_timeout is not None and absent:
        raise ValueError("ssl_handshake_timeout is only meaningful with ssl")
    if shutdown_timeout is not None and absent:
        raise ValueError("ssl_shutdown_timeout is only meaningful with ssl")
    _check_timeouts(handshake_timeout, shutdown_timeout)
    if not ssl:
        return None
    return TLS(ssl, True, None, handshake_timeout, shutdown_timeout)


def ssl_protocol(
    loop: asyncio.AbstractEventLoop,
    app_protocol: asyncio.BaseProtocol,
    tls: TLS,
    waiter: asyncio.Future[None],
    call_connection_made: bool = True,
) -> sslproto.SSLProtocol:
    """asyncio's ``SSLProtocol`` for ``app_protocol``: the one place that
    calls its constructor. Its signature is the same on 3.11, 3.12 and 3.13
    (3.11 rewrote it on uvloop's model: a BufferedProtocol with
    ``ssl_shutdown_timeout``); a version that changes it changes this call."""
    # (typeshed's stub is narrower than the code: a None context, float timeouts)
    make: Any = sslproto.SSLProtocol
    protocol: sslproto.SSLProtocol = make(
        loop,
        app_protocol,
        tls.context,
        waiter,
        server_side=tls.server_side,
        server_hostname=tls.server_hostname,
        call_connection_made=call_connection_made,
        ssl_handshake_timeout=tls.handshake_timeout,
        ssl_shutdown_timeout=tls.shutdown_timeout,
    )
    return protocol


async def handshake(waiter: asyncio.Future[None], abort: Callable[[], None]) -> None:
    """Wait for the handshake that ``waiter`` reports. If it fails, or the
    caller is cancelled before it completed, ``abort()`` ends the connection
    (the socket is closed; a peer mid-handshake sees it end) and the error or
    ``CancelledError`` is raised: the call did not happen. A cancel that
    arrives once it completed is delivered at the caller's next await, and
    the connection is the caller's, as a connect that completed is."""
    try:
        await waiter
    except asyncio.CancelledError as exc:
        if waiter.cancelled() or not waiter.done() or waiter.exception() is not None:
            abort()
            raise
        # Completed in the iteration the cancel arrived in (asyncio throws the
        # cancel in although the awaited future is done).
        _sync._rearm(exc)
    except BaseException:
        abort()
        raise


async def start_tls(
    transport: asyncio.BaseTransport,
    protocol: asyncio.BaseProtocol,
    sslcontext: _ssl.SSLContext,
    *,
    server_side: bool = False,
    server_hostname: str | None = None,
    ssl_handshake_timeout: float | None = None,
    ssl_shutdown_timeout: float | None = None,
) -> asyncio.Transport:
    """``loop.start_tls`` on any loop: upgrade ``transport`` (a
    ``RingTransport``) to TLS and return the transport that ``protocol``
    uses from now on. asyncio's own ``loop.start_tls`` does the same on the
    default loop; uvloop's accepts only uvloop's transports."""
    if not isinstance(sslcontext, _ssl.SSLContext):
        raise TypeError(
            f"sslcontext is expected to be an instance of ssl.SSLContext, got {sslcontext!r}"
        )
    if not getattr(transport, "_start_tls_compatible", False):
        raise TypeError(f"transport {transport!r} is not supported by start_tls()")
    _check_timeouts(ssl_handshake_timeout, ssl_shutdown_timeout)
    raw: Any = transport
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    tls = TLS(sslcontext, server_side, server_hostname, ssl_handshake_timeout, ssl_shutdown_timeout)
    ssl_proto = ssl_protocol(loop, protocol, tls, waiter, call_connection_made=False)
    # asyncio's sequence: nothing is read between pause_reading and
    # resume_reading, so no byte reaches the old protocol after the swap and
    # none reaches the SSLProtocol before its connection_made.
    raw.pause_reading()
    raw.set_protocol(ssl_proto)
    conmade = loop.call_soon(ssl_proto.connection_made, raw)
    resume = loop.call_soon(raw.resume_reading)

    def abort() -> None:
        # The upgrade failed or was cancelled mid-handshake: the connection
        # ends, and the protocol that had it learns so (an SSLProtocol still
        # in its handshake tells its application nothing: a StreamWriter's
        # wait_closed would never return). The SSLProtocol is told too, so
        # that its handshake timer goes with it.
        conmade.cancel()
        resume.cancel()
        raw.set_protocol(protocol)
        raw.abort()
        ssl_proto.connection_lost(None)

    await handshake(waiter, abort)
    app: asyncio.Transport = ssl_proto._app_transport
    return app


async def stream_start_tls(
    writer: asyncio.StreamWriter,
    sslcontext: _ssl.SSLContext,
    *,
    server_hostname: str | None = None,
    ssl_handshake_timeout: float | None = None,
    ssl_shutdown_timeout: float | None = None,
) -> None:
    """``writer.start_tls(...)`` on any loop (``StreamWriter.start_tls`` calls
    ``loop.start_tls``, which uvloop refuses for a ``RingTransport``): the same
    steps as asyncio's. The writer's side is the server's when its protocol
    has a ``client_connected_cb`` (``start_server``'s connections)."""
    stream: Any = writer
    protocol = stream._protocol
    server_side = protocol._client_connected_cb is not None
    await writer.drain()
    transport = await start_tls(
        writer.transport,
        protocol,
        sslcontext,
        server_side=server_side,
        server_hostname=server_hostname,
        ssl_handshake_timeout=ssl_handshake_timeout,
        ssl_shutdown_timeout=ssl_shutdown_timeout,
    )
    stream._transport = transport
    # StreamReaderProtocol learns the new transport: 3.13 named the hook
    # _replace_transport, 3.11 and 3.12 _replace_writer.
    if hasattr(protocol, "_replace_transport"):
        protocol._replace_transport(transport)
    else:
        protocol._replace_writer(writer)
