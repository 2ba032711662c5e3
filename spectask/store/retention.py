"""How long the store keeps each task's events (its timeline), read from the environment.

The `tasks` rows are the history the status RPC answers from and are kept; `task_events` are
detail for the dashboard's task page and would otherwise grow by several rows per task
forever. Every collector's store deletes events older than this, a bounded batch at most
once a minute (see `spectask.store.events`); a task whose events are gone still shows the
timeline rebuilt from its record's times.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from spectask.store.errors import StoreUnavailableError

PRUNE_INTERVAL = 60.0

log = logging.getLogger(__name__)


class StoreSettings(BaseSettings):
    """SPECTASK_EVENTS_RETENTION_DAYS: read when a store is opened."""

    model_config = SettingsConfigDict(env_prefix="SPECTASK_", extra="ignore", frozen=True)

    events_retention_days: float = Field(
        default=14.0,
        ge=0,
        description="Delete task events (the task page's timeline and payload) older than "
        "this many days; 0 keeps them forever.",
    )

    @property
    def events_retention(self) -> timedelta | None:
        """The retention as a duration, None to keep events forever."""
        if self.events_retention_days == 0:
            return None
        return timedelta(days=self.events_retention_days)


class PruneClock:
    """When a store's next retention batch is due: at its first apply, then every interval."""

    def __init__(self, retention: timedelta | None, interval: float = PRUNE_INTERVAL) -> None:
        self.retention = retention
        self.interval = interval
        self._pruned_at = -float("inf")

    async def prune_if_due(self, prune: Callable[[datetime], Awaitable[int]]) -> None:
        """Run `prune(cutoff)` if a batch is due; a store that fails it only logs: the task
        is stored already, and old events wait for the next batch."""
        if self.retention is None or time.monotonic() - self._pruned_at < self.interval:
            return
        self._pruned_at = time.monotonic()
        try:
            await prune(datetime.now(UTC) - self.retention)
        except StoreUnavailableError as exc:
            log.warning("task events not pruned this time: %s", exc)
