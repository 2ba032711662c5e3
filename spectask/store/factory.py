"""`open_store(url)`: the one way callers get a `TaskStore`, chosen by the URL's scheme.

The PostgreSQL driver is imported only when a PostgreSQL URL is opened, so the default SQLite
store works without it installed.
"""

from __future__ import annotations

import logging
import os

from spectask.store.protocol import TaskStore
from spectask.store.retention import StoreSettings
from spectask.store.sqlite import SqliteTaskStore
from spectask.store.url import (
    MEMORY,
    PostgresTarget,
    parse_store_url,
    redact,
    store_url_from_env,
)

log = logging.getLogger(__name__)


async def open_store(url: str | None = None) -> TaskStore:
    """Open (and migrate) the store `url` names; None means STORE_URL, else the default file.

    Raises StoreConfigError for a URL it cannot open (the message lists the supported forms),
    StoreUnavailableError when the database cannot be reached, StoreSchemaError when its
    schema is newer than this code.
    """
    target = parse_store_url(store_url_from_env() if url is None else url)
    retention = StoreSettings().events_retention
    if isinstance(target, PostgresTarget):
        from spectask.store.postgres import PostgresTaskStore

        log.info("task store: PostgreSQL %s", redact(target.url))
        return await PostgresTaskStore.open(target.url, events_retention=retention)
    # Said at start, with the absolute path: a STORE_URL with a relative path is per directory,
    # and collectors started in different directories would use different files without a word.
    log.info("task store: SQLite %s (STORE_URL to change it)", _absolute(target.path))
    return await SqliteTaskStore.open(target.path, events_retention=retention)


def _absolute(path: str) -> str:
    return path if path == MEMORY else os.path.abspath(path)
