"""Logging for people: one line per event that matters, on stderr, third-party chatter off.

aio-pika and aiormq log every reconnect attempt and, at DEBUG, every frame; spectask says what
happened in its own words, so their loggers stay at WARNING unless asked (`-v` shows spectask's
DEBUG lines, not theirs). aiosmtpd's `mail.log` (the demo's SMTP sink) likewise. What they do
log at WARNING and above stays one line: a broker that goes away made aiormq print a whole
traceback ("Cancelling cause reader exited abnormally" and two chained exceptions) in the
middle of a producer's output; `OneLine` folds the exception into the line instead.
"""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
QUIET = ("aio_pika", "aiormq", "mail.log", "asyncio")


class OneLine(logging.Filter):
    """Turns a third-party record's traceback into `message (ExceptionType: text)`, one line.

    A handler filter, since a logger's own filters never see its children's records
    (`aiormq.connection`); spectask's own records keep their tracebacks (a bug of ours).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        third_party = record.name.split(".", 1)[0] in QUIET
        if third_party and record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            text = " ".join(str(error).split())
            record.msg = f"{record.getMessage()} ({type(error).__name__}: {text})"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


def configure_logging(level: int = logging.INFO) -> None:
    """Configure the root logger once (a no-op if the program configured logging already)."""
    if logging.getLogger().handlers:
        return
    logging.basicConfig(level=level, format=FORMAT, stream=sys.stderr)
    for handler in logging.getLogger().handlers:
        handler.addFilter(OneLine())
    for name in QUIET:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
