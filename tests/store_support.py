"""Test support for spectask.store: a throwaway PostgreSQL database and task histories.

PostgreSQL policy (the same as the broker's, tests/brokers.py): the suite creates its own
uniquely named database on the server named by SPECTASK_TEST_POSTGRES_URL (default: the local
server, user postgres, trust auth) and drops it at the end. No server: skip locally, fail
under CI=true, where a silent skip would look green while testing nothing.

Histories are what the collector would see for one task in causal order: one list of
observations per scenario, with the final state each scenario must end in.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NoReturn

import psycopg
import pytest
from psycopg import sql

from spectask.store import ErrorDetail, EventKind, Observation, TaskState
from tests.brokers import in_ci

ADMIN_URL_ENV = "SPECTASK_TEST_POSTGRES_URL"
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
T0 = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def admin_url() -> str:
    return os.environ.get(ADMIN_URL_ENV, "").strip() or DEFAULT_ADMIN_URL


def no_postgres(reason: str) -> NoReturn:
    """Skip the test, or fail it under CI=true."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: PostgreSQL tests must not be skipped)", pytrace=False)
    pytest.skip(reason)


def database_url(name: str) -> str:
    """The admin URL pointed at another database on the same server."""
    base, _, _ = admin_url().rpartition("/")
    return f"{base}/{name}"


def create_database(prefix: str = "spectask_test") -> str:
    """A new, uniquely named database; returns its name."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url(), autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name


def drop_database(name: str) -> None:
    with psycopg.connect(admin_url(), autocommit=True, connect_timeout=5) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def require_postgres() -> None:
    """Skip (fail under CI) unless the admin URL answers."""
    try:
        with psycopg.connect(admin_url(), connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        no_postgres(
            f"no PostgreSQL at {admin_url()} ({' '.join(str(exc).split())}); install and start one "
            f"(apt-get install postgresql, or `docker run -e POSTGRES_HOST_AUTH_METHOD=trust "
            f"-p 5432:5432 postgres:16`) or set {ADMIN_URL_ENV}"
        )


@contextlib.contextmanager
def fresh_database(prefix: str = "spectask_test") -> Iterator[str]:
    """A throwaway database for one test (or the session); yields its URL."""
    require_postgres()
    name = create_database(prefix)
    try:
        yield database_url(name)
    finally:
        drop_database(name)


def session_postgres() -> Iterator[str]:
    """The session's PostgreSQL store URL, per the policy in the module docstring."""
    with fresh_database() as url:
        yield url


# --- histories ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """One task's life: how many attempts, how the last one ended, and its progress reports."""

    outcome: str
    attempts: int = 1
    progress: tuple[float, ...] = (30.0, 60.0)
    redelivered: bool = False


# outcome -> the state every arrival order must end in
EXPECTED: dict[str, TaskState] = {
    "queued": TaskState.QUEUED,
    "running": TaskState.STARTED,
    "retrying": TaskState.RETRYING,
    "succeeded": TaskState.SUCCEEDED,
    "failed": TaskState.FAILED,
    "dead": TaskState.DEAD,
    "dead_and_failed": TaskState.DEAD,
    "dead_by_worker": TaskState.DEAD,
    "succeeded_then_dead": TaskState.SUCCEEDED,
    "cancelled_queued": TaskState.CANCELLED,
    "cancelled_running": TaskState.CANCELLED,
}
OUTCOMES = tuple(EXPECTED)


class _History:
    """Builds one task's observations, each a few milliseconds after the one before."""

    def __init__(self, task_id: str, message_type: str) -> None:
        self.task_id = task_id
        self.message_type = message_type
        self.now = T0
        self.observations: list[Observation] = []

    def add(self, kind: EventKind, attempt: int, **fields: object) -> None:
        self.now += timedelta(milliseconds=7)
        self.observations.append(
            Observation(
                task_id=self.task_id,
                kind=kind,
                at=self.now,
                attempt=attempt,
                message_type=self.message_type,
                **fields,  # type: ignore[arg-type]
            )
        )

    def attempt(self, scenario: Scenario, attempt: int) -> None:
        worker = f"worker-{attempt}"
        if attempt > 1:
            self.add(EventKind.SUBMITTED, attempt)
        if scenario.redelivered:
            self.add(EventKind.STARTED, attempt, worker_id="crashed", started_at=self.now)
        self.add(EventKind.STARTED, attempt, worker_id=worker, started_at=self.now)
        for percent in scenario.progress:
            message = f"{percent:g}% of attempt {attempt}"
            self.add(
                EventKind.PROGRESS,
                attempt,
                worker_id=worker,
                progress=percent,
                progress_message=message,
            )
        if attempt < scenario.attempts or scenario.outcome == "retrying":
            error = ErrorDetail("ConnectionError", f"attempt {attempt} lost its database")
            self.add(EventKind.RETRYING, attempt, worker_id=worker, error=error)

    def finish(self, outcome: str, attempt: int) -> None:
        worker = f"worker-{attempt}"
        failure = ErrorDetail("ValueError", "no data", "Traceback (most recent call last): ...")
        cancel = ErrorDetail("cancelled", "by the user")
        if outcome in ("succeeded", "succeeded_then_dead"):
            result = {"mean": 2.5, "name": "Zoë", "nested": {"values": [1, 2.5, None]}}
            self.add(EventKind.SUCCEEDED, attempt, worker_id=worker, result=result)
        if outcome == "succeeded_then_dead":
            self.add(EventKind.DEAD, attempt, dead_reason="timeout", error=ErrorDetail("t", "s"))
        if outcome in ("failed", "dead_and_failed"):
            self.add(EventKind.FAILED, attempt, worker_id=worker, error=failure)
        if outcome in ("dead", "dead_and_failed"):
            self.add(EventKind.DEAD, attempt, dead_reason="attempts_exhausted")
        if outcome == "dead_by_worker":
            # spectask's worker: a dead letter, then a failed result naming its reason; both
            # are DEAD observations with the error in the dead letter's shape
            said = ErrorDetail("attempts_exhausted", "ValueError: no data", failure.traceback)
            self.add(EventKind.DEAD, attempt, dead_reason="attempts_exhausted", error=said)
            self.add(
                EventKind.DEAD,
                attempt,
                worker_id=worker,
                dead_reason="attempts_exhausted",
                error=said,
                started_at=self.now,
            )
        if outcome == "cancelled_running":
            self.add(EventKind.CANCELLED, attempt, error=cancel)
            self.add(EventKind.FAILED, attempt, worker_id=worker, error=ErrorDetail("X", "stop"))


def history(
    task_id: str, scenario: Scenario, *, message_type: str = "data_analysis.statistics"
) -> list[Observation]:
    """The observations of one task in causal order."""
    built = _History(task_id, message_type)
    built.add(EventKind.SUBMITTED, 1, submitted_at=built.now + timedelta(milliseconds=7))
    if scenario.outcome == "cancelled_queued":
        built.add(EventKind.CANCELLED, 1, error=ErrorDetail("cancelled", "by the user"))
    if scenario.outcome not in ("queued", "cancelled_queued"):
        for attempt in range(1, scenario.attempts + 1):
            built.attempt(scenario, attempt)
        built.finish(scenario.outcome, scenario.attempts)
    return built.observations
