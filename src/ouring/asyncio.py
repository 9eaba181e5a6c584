"""ouring for asyncio users: transports, servers and streams over the running
loop's ring (the default loop or uvloop; nothing replaces the loop).

``open_connection``/``start_server`` (and their Unix forms) return asyncio's
own ``StreamReader``/``StreamWriter``; ``create_connection``/``create_server``
take a protocol factory (``asyncio.Protocol`` or ``asyncio.BufferedProtocol``)
as the loop's methods of the same names do, and return an
``asyncio.Transport`` and an ``asyncio.AbstractServer``.
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
    start_unix_server,
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
    "start_unix_server",
]
