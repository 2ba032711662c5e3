"""A local SMTP server that keeps what it receives, so the demo's e-mail reports go somewhere.

It stands in for a mail relay: the demo starts it late on purpose, so the first e-mail
attempts meet a refused connection (a transient failure) and show a real retry.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from email import message_from_bytes
from typing import Any

from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class _Inbox:
    messages: list[dict[str, Any]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = message_from_bytes(envelope.content)
        attachments = [part.get_filename() for part in parsed.walk() if part.get_filename()]
        self.messages.append(
            {
                "to": list(envelope.rcpt_tos),
                "subject": parsed["Subject"],
                "message_id": parsed["Message-ID"],
                "attachments": attachments,
            }
        )
        return "250 OK"


class MailSink:
    """`start()` listens on 127.0.0.1:port in a background thread; `messages` is what arrived."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._inbox = _Inbox()
        self._controller = Controller(
            self._inbox, hostname="127.0.0.1", port=port, ready_timeout=10
        )
        self.running = False

    @property
    def messages(self) -> list[dict[str, Any]]:
        return self._inbox.messages

    def start(self) -> None:
        self._controller.start()
        self.running = True

    def stop(self) -> None:
        if self.running:
            self._controller.stop()
            self.running = False
