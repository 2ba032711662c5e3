"""A real SMTP server for the e-mail tests (aiosmtpd), and one way to send a report to it."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from workloads import mail
from workloads.mailsink import free_port
from workloads.recipients import RecipientPolicy
from workloads.smtp import SmtpSettings

POLICY = RecipientPolicy(frozenset({"example.org"}))
"""The tests' allow-list: example.org only."""


@dataclass
class Inbox:
    """An aiosmtpd handler that keeps what it receives and refuses chosen recipients."""

    refuse: dict[str, str] = field(default_factory=dict)
    messages: list[tuple[str, list[str], EmailMessage]] = field(default_factory=list)
    sessions: list[Any] = field(default_factory=list)
    encrypted: list[bool] = field(default_factory=list)  # per message: did it arrive over TLS

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), parsed))
        self.sessions.append(session)
        self.encrypted.append(server.transport.get_extra_info("ssl_object") is not None)
        return "250 Message accepted"


@contextmanager
def serving(handler: Inbox, **options: Any) -> Iterator[int]:
    """Run an aiosmtpd server for `handler` on 127.0.0.1 (Controller `options`); its port."""
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, ready_timeout=10, **options)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


def send_report(
    smtp: SmtpSettings,
    out_dir: Path,
    to: Sequence[str],
    name: str = "e",
    policy: RecipientPolicy = POLICY,
    **options: Any,
) -> mail.EmailOutput:
    """A small report e-mailed to `to`."""
    return mail.email_report(
        title=options.pop("title", "T"),
        series=options.pop("series", [1.0]),
        to=to,
        out_dir=out_dir,
        name=name,
        smtp=smtp,
        policy=policy,
        **options,
    )
