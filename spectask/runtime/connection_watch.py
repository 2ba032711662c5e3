"""One line when the broker goes away, one when it is back: the connection as a person sees it.

aio-pika reconnects by itself, but says so as raw aiormq tracebacks, then three lines every
five seconds while the broker stays down, and nothing when it comes back (its loggers are
quiet now, see `spectask.logs`). Here the robust connection's own callbacks give one WARNING
with the cause when the connection is lost, nothing more while it stays down, and one INFO
line with how long it took when it is back.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

import aio_pika

from spectask.runtime.failover import current_url
from spectask.runtime.transport import Connection

log = logging.getLogger(__name__)


# `ConnectionResetError(104, 'Connection reset by peer')` inside aiormq's reason: a Python
# repr, library text to a reader. The message in it is what a person needs.
EXCEPTION_REPR = re.compile(r"\b\w+(?:Error|Exception)\((?:\d+, )?(['\"])(.*?)\1\)")


def cause_of(exc: BaseException | None) -> str:
    """A short cause for a lost connection ("CONNECTION_FORCED - broker forced ...", or
    "Server connection reset: Connection reset by peer" for a broker killed -9)."""
    if exc is None:
        return "closed by the broker"
    text = str(exc.args[-1] if exc.args else exc) or type(exc).__name__
    return EXCEPTION_REPR.sub(lambda match: match.group(2), text).strip()


class ConnectionWatch:
    """Logs the losses and recoveries of one robust connection (see the module docstring)."""

    def __init__(self, shown_url: str, reconnect_interval: float) -> None:
        self.shown_url = shown_url
        self.reconnect_interval = reconnect_interval
        self.lost_at: float | None = None

    def lost(self, exc: BaseException | None) -> None:
        if self.lost_at is not None:
            return  # still down: said once already
        self.lost_at = time.monotonic()
        log.warning(
            "lost the connection to RabbitMQ at %s (%s); reconnecting every %gs, unfinished "
            "deliveries go back to their queues",
            self.shown_url,
            cause_of(exc),
            self.reconnect_interval,
        )

    def reconnected(self) -> None:
        if self.lost_at is None:
            return
        seconds = time.monotonic() - self.lost_at
        self.lost_at = None
        log.info("reconnected to RabbitMQ at %s after %.1fs", self.shown_url, seconds)


def watch_connection(
    connection: Connection, shown_url: str, shown: Callable[[str], str] = str
) -> ConnectionWatch | None:
    """Attach a `ConnectionWatch` to an aio-pika robust connection (None for other kinds).

    With several broker URLs (`spectask.runtime.failover`) each line names the node it is
    about, `shown(url)` (the URL without its password): the one lost, the one reached.
    """
    if not isinstance(connection, aio_pika.abc.AbstractRobustConnection):
        return None
    interval = float(getattr(connection, "reconnect_interval", 5))
    watch = ConnectionWatch(shown_url, interval)

    def node() -> None:
        url = current_url(connection)
        if url is not None:
            watch.shown_url = shown(url)

    def on_close(sender: object, exc: BaseException | None = None) -> None:
        if getattr(connection, "_close_called", False) or connection.is_closed:
            return  # our own close: not a loss
        if watch.lost_at is None:
            node()
        watch.lost(exc)

    def on_reconnect(sender: object) -> None:
        node()
        watch.reconnected()

    node()
    connection.close_callbacks.add(on_close)
    connection.reconnect_callbacks.add(on_reconnect)
    return watch
