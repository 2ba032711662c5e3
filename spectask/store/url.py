"""Which database a store URL names: `sqlite:///path` or `postgresql://...`, and the default.

Parsed once, up front, so a typo in STORE_URL fails at start-up with the accepted forms
instead of somewhere inside a driver.

The default is a SQLite file in the user's data directory (platformdirs:
`~/.local/share/spectask/tasks.db` on Linux, honouring XDG_DATA_HOME), the same whatever the
working directory: a default relative to it gave collectors started in different directories
different files, and `status` then alternated between SUCCEEDED and UNKNOWN for one task.
Not the project's root either: spectask is a library, and `spectask collect` runs wherever it
is started, with no project marker to look for.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import platformdirs

from spectask.store.errors import StoreConfigError

STORE_URL_ENV = "STORE_URL"
APP_DIR_NAME = "spectask"
DEFAULT_FILE_NAME = "tasks.db"
MEMORY = ":memory:"

SUPPORTED = (
    "supported store URLs: sqlite:///relative/path.db, sqlite:////absolute/path.db, "
    f"sqlite:///{MEMORY} (tests), postgresql://user:password@host:5432/dbname "
    "(postgres:// too); the default is a SQLite file in your data directory"
)


def default_store_path() -> Path:
    """The default SQLite file: absolute, in the user's data directory (see the module doc)."""
    return platformdirs.user_data_path(APP_DIR_NAME, appauthor=False) / DEFAULT_FILE_NAME


def default_store_url() -> str:
    return f"sqlite:///{default_store_path()}"


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
    return os.environ.get(STORE_URL_ENV, "").strip() or default_store_url()


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
