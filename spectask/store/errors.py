"""What the task store raises on purpose, rooted in `spectask.errors` so callers catch one tree.

Each message says how to fix the problem: a wrong `STORE_URL` is a configuration mistake the
user can correct, an unreachable database is an operational one, and a schema newer than the
code means an older spectask was started against a database a newer one already migrated.
"""

from __future__ import annotations

from spectask.errors import ConfigError, SpectaskError


class StoreConfigError(ConfigError):
    """`STORE_URL` (or the URL given to `open_store`) is not one the store can open."""


class StoreUnavailableError(SpectaskError):
    """The database named by the store URL could not be reached or opened."""


class StoreSchemaError(SpectaskError):
    """The database schema is not one this version of spectask can use."""
