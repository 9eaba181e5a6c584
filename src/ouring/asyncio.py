"""ouring for asyncio users: transports, servers and streams over the running
loop's ring (the default loop or uvloop; nothing replaces the loop).

``open_connection``/``start_server`` (and their Unix forms) return asyncio's
own ``StreamReader``/``StreamWriter``; ``create_connection``/``create_server``
take a protocol factory (``asyncio.Protocol`` or ``asyncio.BufferedProtocol``)
as the loop's methods of the same names do, and return an
``asyncio.Transport`` and an ``asyncio.AbstractServer``. ``ssl=`` and its
arguments as asyncio's: asyncio's own ``SSLProtocol`` over the ring transport.
``start_tls``/``stream_start_tls`` upgrade a connection on any loop
(``loop.start_tls`` and ``StreamWriter.start_tls`` do on the default loop;
uvloop's refuse transports not its own).
"""

from ._asyncio_streams import (
    RingServer,
    RingTransport,
    create_connection,
    create_server,
    create_unix_connection,
    create_unix_server,
    open_connection,
    open_unix_connection,
    start_server,
    start_tls,
    start_unix_server,
    stream_start_tls,
)

__all__ = [
    "RingServer",
    "RingTransport",
    "create_connection",
    "create_server",
    "create_unix_connection",
    "create_unix_server",
    "open_connection",
    "open_unix_connection",
    "start_server",
    "start_tls",
    "start_unix_server",
    "stream_start_tls",
]
