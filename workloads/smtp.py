"""The SMTP connection e-mail reports go out on: plain, STARTTLS or implicit TLS, and AUTH.

Settings come from the environment (`workloads.settings`). The server's certificate is always
verified, against the system's CAs or `SPECTASK_SMTP_CA_FILE`; there is no switch to turn that
off. A login is only ever sent over TLS: a user name with `SPECTASK_SMTP_TLS=none` is refused
before anything connects. A connection that cannot be made safe (an untrusted certificate, no
STARTTLS offered, TLS spoken to a plain port, a refused login) is a `PermanentTaskError` that
names the setting to fix; a refused connection or a timeout stays transient, as do 4xx replies.
"""

from __future__ import annotations

import contextlib
import smtplib
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from workloads.errors import PermanentTaskError


class SmtpTls(StrEnum):
    """How the connection to the SMTP server is protected (`SPECTASK_SMTP_TLS`)."""

    NONE = "none"  # plain SMTP: a relay on the same host or network only
    STARTTLS = "starttls"  # plain connect, then STARTTLS before anything else (port 587)
    TLS = "tls"  # TLS from the first byte, "SMTPS" (port 465)


def reply_text(reply: bytes | str) -> str:
    """An SMTP reply's text, for a one-line message."""
    return (reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply).strip()


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    """Where, how and as whom to send."""

    host: str = "localhost"
    port: int = 25
    sender: str = "spectask@localhost"
    timeout: float = 30.0
    tls: SmtpTls = SmtpTls.NONE
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: Path | None = None

    def __post_init__(self) -> None:
        if self.username is not None and self.tls is SmtpTls.NONE:
            raise ValueError(
                "SPECTASK_SMTP_USER is set but SPECTASK_SMTP_TLS=none: the password would "
                "cross the network in clear; use SPECTASK_SMTP_TLS=starttls or tls"
            )

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


def tls_context(settings: SmtpSettings) -> ssl.SSLContext:
    """A verifying client context: the system's CAs, or only those of `ca_file`."""
    cafile = None if settings.ca_file is None else str(settings.ca_file)
    try:
        return ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise PermanentTaskError(
            f"SPECTASK_SMTP_CA_FILE={cafile!r} cannot be used as a CA bundle: {exc}"
        ) from exc


def _open(settings: SmtpSettings, context: ssl.SSLContext) -> smtplib.SMTP:
    if settings.tls is SmtpTls.TLS:
        return smtplib.SMTP_SSL(
            settings.host, settings.port, timeout=settings.timeout, context=context
        )
    return smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)


def _secure_and_log_in(
    client: smtplib.SMTP, settings: SmtpSettings, context: ssl.SSLContext
) -> None:
    if settings.tls is SmtpTls.STARTTLS:
        try:
            client.starttls(context=context)
        except smtplib.SMTPNotSupportedError as exc:
            raise PermanentTaskError(
                f"the SMTP server {settings.where} does not offer STARTTLS "
                "(SPECTASK_SMTP_TLS=starttls): use tls for a port that speaks TLS at once, "
                "or another server"
            ) from exc
    if settings.username is None:
        return
    try:
        client.login(settings.username, settings.password or "")
    except smtplib.SMTPAuthenticationError as exc:
        if 400 <= exc.smtp_code < 500:
            raise
        raise PermanentTaskError(
            f"the SMTP server {settings.where} refused the login of {settings.username!r}: "
            f"{exc.smtp_code} {reply_text(exc.smtp_error)} (check SPECTASK_SMTP_USER and "
            "SPECTASK_SMTP_PASSWORD)"
        ) from exc
    except smtplib.SMTPNotSupportedError as exc:
        raise PermanentTaskError(
            f"the SMTP server {settings.where} offers no login (AUTH), but SPECTASK_SMTP_USER "
            "is set: unset it, or use the server's submission port"
        ) from exc
    except smtplib.SMTPServerDisconnected:
        raise  # the connection dropped: transient, like any other dropped connection
    except smtplib.SMTPException as exc:  # no mechanism both sides know
        raise PermanentTaskError(
            f"the SMTP server {settings.where} cannot log in {settings.username!r}: {exc}"
        ) from exc


@contextlib.contextmanager
def connection(settings: SmtpSettings) -> Iterator[smtplib.SMTP]:
    """An SMTP session, over TLS and logged in as the settings say; closed (QUIT) on exit."""
    context = tls_context(settings)
    try:
        client = _open(settings, context)
    except ssl.SSLCertVerificationError as exc:
        raise _untrusted(settings, exc) from exc
    except ssl.SSLError as exc:
        raise _not_tls(settings, exc) from exc
    with client:
        try:
            _secure_and_log_in(client, settings, context)
        except ssl.SSLCertVerificationError as exc:
            raise _untrusted(settings, exc) from exc
        except ssl.SSLError as exc:
            raise _not_tls(settings, exc) from exc
        yield client


def _untrusted(settings: SmtpSettings, exc: ssl.SSLCertVerificationError) -> PermanentTaskError:
    return PermanentTaskError(
        f"the SMTP server {settings.where} presented a certificate that is not trusted "
        f"({exc.verify_message}): set SPECTASK_SMTP_CA_FILE to the CA that signed it"
    )


def _not_tls(settings: SmtpSettings, exc: ssl.SSLError) -> PermanentTaskError:
    return PermanentTaskError(
        f"TLS with the SMTP server {settings.where} failed ({exc.reason or exc}): check that "
        f"SPECTASK_SMTP_TLS={settings.tls.value} fits this port (tls: 465, starttls: 587)"
    )
