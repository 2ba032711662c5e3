"""Shared fixtures: the session broker (policy: tests/brokers.py) and task stores."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from spectask.app import APP_VARIABLE
from tests.brokers import BrokerNode, session_broker
from tests.store_support import fresh_database

# `python -m spectask.cli collect` and friends in the tests serve this repo's application
os.environ.setdefault(APP_VARIABLE, "workloads.app:app")


@pytest.fixture(scope="session")
def broker_node() -> Iterator[BrokerNode]:
    """The session's RabbitMQ: a throwaway `LocalNode`, or an `ExternalBroker` from AMQP_URL."""
    yield from session_broker()


@pytest.fixture(scope="session")
def amqp_url(broker_node: BrokerNode) -> str:
    return broker_node.url


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh task store: an SQLite file, then a throwaway PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'tasks.db'}"
    else:
        with fresh_database("spectask_rpc") as url:
            yield url
