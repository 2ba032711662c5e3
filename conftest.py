"""Shared fixtures: the session broker (policy: tests/brokers.py), task stores, and `any_url`.

`any_url` runs a behaviour test twice: on a fresh in-memory broker (marked `memory`, so
`make test-fast` = `pytest -m memory` runs that tier alone in seconds) and on the session's
RabbitMQ. The in-memory run is an addition, never a replacement: `make test` runs both.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from spectask.app import APP_VARIABLE
from spectask.devbroker.cluster import LocalCluster
from spectask.runtime import memory
from tests.brokers import BrokerNode, session_broker, throwaway_cluster
from tests.runtime_support import InProcessWorkers
from tests.store_support import fresh_database

# `python -m spectask.cli collect` and friends in the tests serve this repo's application
os.environ.setdefault(APP_VARIABLE, "workloads.app:app")
# A command started without STORE_URL uses the default store in the user's data directory:
# the suite's own, never the user's (spectask.store.url.default_store_path).
os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="spectask-test-data-")


@pytest.fixture(scope="session")
def broker_node() -> Iterator[BrokerNode]:
    """The session's RabbitMQ: a throwaway `LocalNode`, or an `ExternalBroker` from AMQP_URL."""
    yield from session_broker()


@pytest.fixture(scope="session")
def rabbitmq_cluster() -> Iterator[LocalCluster]:
    """A local 3-node RabbitMQ cluster for the cluster tests, formed once per session."""
    yield from throwaway_cluster()


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


FULL_COLLECTION = "SPECTASK_TEST_FULL_COLLECTION"  # set: `-m memory` imports every module


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """`-m memory` alone (make test-fast): skip importing test modules with no memory test.

    Importing (and assertion-rewriting) every module costs seconds, most of the fast tier's
    budget. A memory test is one that takes `any_url` or is marked `memory`, so a module whose
    text names neither holds none; tests/test_memory_tier.py checks the rule selects the same
    tests as a full collection.
    """
    if config.getoption("markexpr", "") != "memory" or os.environ.get(FULL_COLLECTION):
        return None
    if collection_path.suffix == ".py" and collection_path.name.startswith("test_"):
        text = collection_path.read_text(encoding="utf-8")
        if "any_url" not in text and "memory" not in text:
            return True
    return None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "memory: runs on the in-memory transport (make test-fast runs only these)"
    )
    config.addinivalue_line(
        "markers", "chaos: faults during live batches on a throwaway node (make chaos)"
    )


@pytest.fixture(params=[pytest.param("memory", marks=pytest.mark.memory), "rabbitmq"])
def any_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A broker URL of either transport: `memory://<fresh hub>`, then the session's RabbitMQ."""
    if request.param == "memory":
        hub = memory.new_hub(prefix="test", clock=memory.SkippingClock())  # real time, unless
        # a test skips it (tests/runtime_support.py: pass_time, fast_forward)
        try:
            yield hub.url
        finally:
            memory.forget(hub.url)
    else:
        yield request.getfixturevalue("amqp_url")


@pytest.fixture
async def workers() -> AsyncIterator[InProcessWorkers]:
    """In-process workers a test starts; every one is stopped when the test ends."""
    started = InProcessWorkers()
    try:
        yield started
    finally:
        await started.stop_all()
