"""Session broker fixtures, shared by tests/ and test_workqueue.py (policy: tests/brokers.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.brokers import BrokerNode, session_broker


@pytest.fixture(scope="session")
def broker_node() -> Iterator[BrokerNode]:
    """The session's RabbitMQ: a throwaway `LocalNode`, or an `ExternalBroker` from AMQP_URL."""
    yield from session_broker()


@pytest.fixture(scope="session")
def amqp_url(broker_node: BrokerNode) -> str:
    return broker_node.url
