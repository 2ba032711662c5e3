"""How long the store keeps each task's events (its timeline), read from the environment.

The `tasks` rows are the history the status RPC answers from and are kept; `task_events` are
detail for the dashboard's task page and would otherwise grow by several rows per task
forever. Every collector's store deletes events older than this, a bounded batch at most
once a minute (see `spectask.store.events`); a task whose events are gone still shows the
timeline rebuilt from its record's times.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PRUNE_INTERVAL = 60.0


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
