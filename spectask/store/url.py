"""Which database a store URL names: `sqlite:///path` or `postgresql://...`.

Parsed once, up front, so a typo in STORE_URL fails at start-up with the accepted forms
instead of somewhere inside a driver.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from spectask.store.errors import StoreConfigError

STORE_URL_ENV = "STORE_URL"
DEFAULT_STORE_URL = "sqlite:///.spectask/tasks.db"
MEMORY = ":memory:"

SUPPORTED = (
    "supported store URLs: sqlite:///relative/path.db, sqlite:////absolute/path.db, "
    f"sqlite:///{MEMORY} (tests), postgresql://user:password@host:5432/dbname "
    f"(postgres:// too); the default is {DEFAULT_STORE_URL}"
)


@dataclass(frozen=True)
class SqliteTarget:
    """A SQLite database file (or `:memory:`)."""

    path: str


@dataclass(frozen=True)
class PostgresTarget:
    """A PostgreSQL database, as a libpq connection URL."""

    url: str


StoreTarget = SqliteTarget | PostgresTarget


def store_url_from_env() -> str:
    """STORE_URL if set and not blank, else the default SQLite file."""
    return os.environ.get(STORE_URL_ENV, "").strip() or DEFAULT_STORE_URL


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def parse_store_url(url: str) -> StoreTarget:
    """The target a URL names; StoreConfigError (saying what is supported) for anything else."""
    scheme, sep, rest = url.strip().partition("://")
    scheme = scheme.lower()
    if not sep:
        raise StoreConfigError(f"store URL {redact(url)!r} has no scheme; {SUPPORTED}")
    if scheme == "sqlite":
        return _sqlite(url, rest)
    if scheme in ("postgresql", "postgres"):
        if not urlsplit(url).hostname and "host=" not in url:
            raise StoreConfigError(f"store URL {redact(url)!r} names no host; {SUPPORTED}")
        return PostgresTarget(url.strip())
    raise StoreConfigError(f"store URL scheme {scheme!r} is not supported; {SUPPORTED}")


def _sqlite(url: str, rest: str) -> SqliteTarget:
    if not rest.startswith("/"):
        raise StoreConfigError(
            f"store URL {redact(url)!r} has a host part; a SQLite URL has three slashes "
            f"before a relative path; {SUPPORTED}"
        )
    path = rest[1:]
    if not path:
        raise StoreConfigError(f"store URL {url!r} names no database file; {SUPPORTED}")
    if "?" in path or "#" in path:
        raise StoreConfigError(f"store URL {url!r}: SQLite URLs take no options; {SUPPORTED}")
    return SqliteTarget(path if path == MEMORY else str(Path(path)))
