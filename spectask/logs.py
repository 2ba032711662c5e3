"""Logging for people: one line per event that matters, on stderr, third-party chatter off.

aio-pika and aiormq log every reconnect attempt and, at DEBUG, every frame; spectask says what
happened in its own words, so their loggers stay at WARNING unless asked (`-v` shows spectask's
DEBUG lines, not theirs). aiosmtpd's `mail.log` (the demo's SMTP sink) likewise.
"""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
QUIET = ("aio_pika", "aiormq", "mail.log", "asyncio")


def configure_logging(level: int = logging.INFO) -> None:
    """Configure the root logger once (a no-op if the program configured logging already)."""
    if logging.getLogger().handlers:
        return
    logging.basicConfig(level=level, format=FORMAT, stream=sys.stderr)
    for name in QUIET:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
