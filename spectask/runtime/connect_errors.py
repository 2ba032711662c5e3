"""What went wrong when connecting, in one line a person can act on.

aio-pika reports a wrong password as ACCESS_REFUSED, a missing virtual host as "Expected one of
['Connection.OpenOk'], got <Connection.Close ...>", and a URL that is not one as ten seconds of
reconnect attempts ending in TimeoutError. Here each becomes its cause and its fix; the URL is
checked before any attempt, so a typo fails at once.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import aiormq

from spectask.errors import BrokerUnavailableError, ConfigError
from spectask.runtime.failover import split_urls

SCHEMES = ("amqp", "amqps")
URL_SHAPE = (
    "amqp://USER:PASSWORD@HOST:5672/VHOST, or amqps:// for TLS; a cluster's nodes comma-separated"
)
# aio-pika/aiormq read TLS files from the URL's query (README: TLS)
TLS_FILES = ("cafile", "certfile", "keyfile")
TLS_SHAPE = (
    "amqps://USER:PASSWORD@HOST:5671/VHOST?cafile=ca.pem&certfile=client.pem&keyfile=client.key"
)
_SSL_REASON = re.compile(
    r"\[SSL: (?P<code>[A-Z0-9_]+)\] (?P<text>.+?)(?: \(_ssl\.c:\d+\))?['\")]*$"
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
    query = parse_qs(parts.query)
    for name in TLS_FILES:
        for value in query.get(name, []):
            if not Path(value).is_file():
                raise ConfigError(
                    f"AMQP_URL {shown!r}: {name} {value!r} is not a readable file; give the "
                    f"path of a PEM file: {TLS_SHAPE}"
                )
    if parts.scheme == "amqp" and any(name in query for name in TLS_FILES):
        raise ConfigError(
            f"AMQP_URL {shown!r} names TLS files but its scheme is amqp:// (plain text); "
            f"write amqps:// for TLS: {TLS_SHAPE}"
        )


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
    tls = _tls_problem(exc, parts.hostname or "", shown)
    if tls is not None:
        return tls
    reason = str(exc) or type(exc).__name__
    if parts.scheme == "amqp" and "reset" in reason.lower():
        return BrokerUnavailableError(
            f"cannot reach RabbitMQ at {shown}: {reason}"
            "\n  hint: the server closed the connection at once; if that port is a TLS "
            f"listener (5671), write amqps://: {TLS_SHAPE}"
        )
    return BrokerUnavailableError(
        f"cannot reach RabbitMQ at {shown}: {reason}"
        "\n  hint: run `make broker` (it finds or starts one) and set AMQP_URL to the URL it prints"
    )


def _tls_problem(exc: BaseException, host: str, shown: str) -> BrokerUnavailableError | None:
    """The one-line error for a failed TLS handshake, or None if `exc` is not one.

    aiormq wraps the `ssl.SSLError` in AMQPConnectionError, keeping only its text, so the
    OpenSSL reason code in that text ("[SSL: CERTIFICATE_VERIFY_FAILED] ...") decides.
    """
    match = _SSL_REASON.search(str(exc))
    if match is None:
        return None
    code, text = match.group("code"), match.group("text")
    if code == "CERTIFICATE_VERIFY_FAILED" and "mismatch" in text:
        return BrokerUnavailableError(
            f"RabbitMQ at {shown}: its TLS certificate is not valid for {host!r} ({text}); fix: "
            "connect with a host name the server certificate names, or reissue it for this one"
        )
    if code == "CERTIFICATE_VERIFY_FAILED":
        return BrokerUnavailableError(
            f"RabbitMQ at {shown}: its TLS certificate is not trusted ({text}); fix: give the "
            f"CA that signed it: {TLS_SHAPE.split('&', 1)[0]}"
        )
    if "CERTIFICATE_REQUIRED" in code or code in (
        "SSLV3_ALERT_BAD_CERTIFICATE",
        "TLSV1_ALERT_UNKNOWN_CA",
    ):
        return BrokerUnavailableError(
            f"RabbitMQ at {shown} refused this client's TLS certificate ({text}); fix: give a "
            "client certificate signed by a CA RabbitMQ trusts (ssl_options.cacertfile): "
            f"{TLS_SHAPE}"
        )
    if code == "WRONG_VERSION_NUMBER":
        return BrokerUnavailableError(
            f"{shown} does not speak TLS on that port ({text}); fix: use the port of RabbitMQ's "
            "TLS listener (listeners.ssl, usually 5671), or amqp:// for a plain one"
        )
    return BrokerUnavailableError(
        f"TLS with RabbitMQ at {shown} failed ({text}); fix: check the URL against {TLS_SHAPE}"
    )
