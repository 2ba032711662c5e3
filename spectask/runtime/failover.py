"""Several broker URLs, one connection: reach the first node that answers, move on when it dies.

Why: on a RabbitMQ cluster any node serves any queue, so a process told about every node
(`AMQP_URL=amqp://n1,amqp://n2,amqp://n3`, see `split_urls`) should survive losing the one it
is connected to. aio-pika's robust connection reconnects, but only to its one URL: this
subclass keeps the list and moves `url` to the next node at the two moments aio-pika gives
us, when the connection is lost and when a reconnect attempt fails. The next attempt then goes
to a surviving node (the first one at once, the others after `reconnect_interval` each), and
aio-pika restores channels, queues and consumers there as it would on the same node.

The hook for "an attempt failed" is aio-pika's private `__connect_transport` (10.x): the
version is pinned in constraints.txt, and tests/test_cluster.py fails if the hook stops being
called (a killed node's clients would never reach another one).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aio_pika.connection import make_url
from aio_pika.robust_connection import RobustConnection

from spectask.runtime.deliveries import DeliveryChannel

URL_SEPARATOR = ","
# Between attempts when there are other nodes to try: aio-pika's 5 s is for one broker that
# has to come back; a surviving node is there now (measured: 11 s to reach the third node at 5 s).
FAILOVER_RECONNECT_SECONDS = 1.0


def split_urls(url: str) -> list[str]:
    """The broker URLs of `AMQP_URL`: one, or several separated by commas (blanks ignored)."""
    return [part.strip() for part in url.split(URL_SEPARATOR) if part.strip()]


# aio-pika's one connection attempt, as RobustConnection's reconnect loop calls it.
_CONNECT_TRANSPORT = RobustConnection._RobustConnection__connect_transport  # type: ignore[attr-defined]


class FailoverConnection(RobustConnection):
    """A robust connection over `urls`, starting with `urls[start]` (see the module docstring).

    Connection options in a URL's query (heartbeat, TLS files) are read from the URL in use at
    construction; give every node the same options. Its channels hand consumers spectask's
    light `Delivery` objects (`spectask.runtime.deliveries`).
    """

    CHANNEL_CLASS = DeliveryChannel

    def __init__(self, urls: list[str], start: int, kwargs: dict[str, Any], **options: Any):
        self.urls = urls
        self.index = start
        self._url_kwargs = kwargs
        super().__init__(make_url(urls[start], **kwargs), **kwargs, **options)

    @property
    def current_url(self) -> str:
        """The URL (as the user wrote it) of the node this connection uses or tries next."""
        return self.urls[self.index]

    def rotate(self) -> None:
        """Aim the next attempt at the next node in the list (wrapping around)."""
        self.index = (self.index + 1) % len(self.urls)
        self.url = make_url(self.urls[self.index], **self._url_kwargs)

    async def _on_connection_close(self, closing: asyncio.Future[Any]) -> None:
        # Close callbacks (the "lost the connection to <node>" line) still see the lost node.
        await super()._on_connection_close(closing)
        if not (self._close_called or self.is_closed):
            self.rotate()

    async def _RobustConnection__connect_transport(self) -> None:
        try:
            await _CONNECT_TRANSPORT(self)
        except BaseException:
            self.rotate()
            raise


def current_url(connection: object) -> str | None:
    """The URL a `FailoverConnection` is on; None for any other connection."""
    return connection.current_url if isinstance(connection, FailoverConnection) else None
