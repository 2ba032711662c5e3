"""Logging for people: one line per event that matters, on stderr, third-party chatter off.

aio-pika and aiormq log every reconnect attempt as tracebacks and, at DEBUG, every frame;
spectask says what happened to the connection in its own words
(`spectask.runtime.connection_watch`), so theirs are silenced. Other libraries (aiosmtpd's
`mail.log`, the demo's SMTP sink; matplotlib's font cache) stay at WARNING. The level
(`--log-level`, SPECTASK_LOG_LEVEL; `-v` is DEBUG) applies to spectask's own loggers: DEBUG
never turns the third-party ones on. The format is text for a terminal, or one JSON object per
line for a log pipeline (`--log-format json`, SPECTASK_LOG_FORMAT), with time, level, logger,
message and the record's structured fields (a task outcome's id, type, attempt, ...).
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal

from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s"
JSON_NAMES = {"asctime": "time", "levelname": "level", "name": "logger"}
OWN = "spectask"
SILENT = ("aio_pika", "aiormq")
QUIET = ("mail.log", "asyncio", "matplotlib", "PIL")

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
LogFormat = Literal["text", "json"]
LEVELS: tuple[LogLevel, ...] = ("DEBUG", "INFO", "WARNING", "ERROR")
FORMATS: tuple[LogFormat, ...] = ("text", "json")


class LogSettings(BaseSettings):
    """SPECTASK_LOG_LEVEL and SPECTASK_LOG_FORMAT: read before anything else is configured."""

    model_config = SettingsConfigDict(env_prefix="SPECTASK_", extra="ignore", frozen=True)

    log_level: LogLevel = "INFO"
    log_format: LogFormat = "text"

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _any_case(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        return value.strip().upper() if value.strip().upper() in LEVELS else value.strip().lower()


def formatter(log_format: LogFormat) -> logging.Formatter:
    """The text formatter, or python-json-logger's with spectask's field names."""
    if log_format == "text":
        return logging.Formatter(FORMAT)
    from pythonjsonlogger.json import JsonFormatter

    return JsonFormatter(JSON_FIELDS, rename_fields=JSON_NAMES, datefmt="%Y-%m-%dT%H:%M:%S%z")


def configure_logging(level: int | str | None = None, log_format: LogFormat | None = None) -> None:
    """Configure logging once (a no-op if the program configured it already).

    `level` and `log_format` default to SPECTASK_LOG_LEVEL and SPECTASK_LOG_FORMAT.
    """
    root = logging.getLogger()
    if root.handlers:
        return
    if level is None or log_format is None:
        settings = LogSettings()
        level = settings.log_level if level is None else level
        log_format = settings.log_format if log_format is None else log_format
    number = level if isinstance(level, int) else logging.getLevelNamesMapping()[level.upper()]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format))
    root.addHandler(handler)
    # Others' INFO (an application's own handlers) still shows; their DEBUG does not.
    root.setLevel(max(number, logging.INFO))
    logging.getLogger(OWN).setLevel(number)
    for name in SILENT:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    for name in QUIET:
        logging.getLogger(name).setLevel(max(number, logging.WARNING))
