"""What went wrong when connecting, in one line a person can act on.

aio-pika reports a wrong password as ACCESS_REFUSED, a missing virtual host as "Expected one of
['Connection.OpenOk'], got <Connection.Close ...>", and a URL that is not one as ten seconds of
reconnect attempts ending in TimeoutError. Here each becomes its cause and its fix; the URL is
checked before any attempt, so a typo fails at once.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import unquote, urlsplit

import aiormq

from spectask.errors import BrokerUnavailableError, ConfigError
from spectask.runtime.failover import split_urls

SCHEMES = ("amqp", "amqps")
URL_SHAPE = (
    "amqp://USER:PASSWORD@HOST:5672/VHOST, or amqps:// for TLS; a cluster's nodes comma-separated"
)


def check_urls(urls: str, redact: Callable[[str], str]) -> None:
    """Refuse `AMQP_URL` unless it is one broker URL or several comma-separated ones (a
    cluster's nodes, `spectask.runtime.failover`), each of which passes `check_url`; errors
    show a URL as `redact(url)` (without its password)."""
    parts = split_urls(urls)
    if not parts:
        raise ConfigError(f"AMQP_URL {urls!r} names no broker; write {URL_SHAPE}")
    for url in parts:
        check_url(url, redact(url))


def check_url(url: str, shown: str) -> None:
    """Refuse, before connecting, a URL that cannot name a RabbitMQ broker."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"AMQP_URL {shown!r} is not a URL ({exc}); write {URL_SHAPE}") from None
    if parts.scheme not in SCHEMES:
        got = f"scheme {parts.scheme!r}" if parts.scheme else "no scheme"
        raise ConfigError(f"AMQP_URL {shown!r} has {got}; write {URL_SHAPE}")
    if not parts.hostname:
        raise ConfigError(f"AMQP_URL {shown!r} names no host; write {URL_SHAPE}")
    del port  # parsed only to refuse a port that is not a number


def vhost_of(url: str) -> str:
    """The virtual host a URL names (`/` when its path is empty)."""
    path = urlsplit(url).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def explain(exc: BaseException, url: str, shown: str) -> BrokerUnavailableError:
    """The one-line error (and hint) for a failed first connection to `url` (several URLs:
    the credentials and vhost named are those of the last one, whose error `exc` is)."""
    url = split_urls(url)[-1] if split_urls(url) else url
    parts = urlsplit(url)
    user = unquote(parts.username) if parts.username else "guest"
    if isinstance(exc, aiormq.exceptions.ProbableAuthenticationError):
        return BrokerUnavailableError(
            f"RabbitMQ at {shown} refused the login of user {user!r}: wrong user name or password"
            f"\n  hint: fix the credentials in AMQP_URL: {URL_SHAPE}"
        )
    if isinstance(exc, aiormq.exceptions.InvalidFrameError) and "Connection.Close" in str(exc):
        vhost = vhost_of(url)
        return BrokerUnavailableError(
            f"RabbitMQ at {shown} would not open virtual host {vhost!r} for user {user!r}: it "
            "does not exist, or the user may not use it"
            f"\n  hint: rabbitmqctl add_vhost {vhost} && rabbitmqctl set_permissions -p {vhost} "
            f"{user} '.*' '.*' '.*', or fix the path of AMQP_URL"
        )
    reason = str(exc) or type(exc).__name__
    return BrokerUnavailableError(
        f"cannot reach RabbitMQ at {shown}: {reason}"
        "\n  hint: run `make broker` (it finds or starts one) and set AMQP_URL to the URL it prints"
    )
