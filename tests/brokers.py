"""Which RabbitMQ the test suite talks to, and whether a test may kill or restart it.

The policy (kept here, out of conftest, so other fixture files can reuse it):
- rabbitmq-server installed: one throwaway `LocalNode` per session in a temp dir, ours to kill.
  The shared broker on :5672 is never used by tests, so a test that breaks a broker breaks only
  its own.
- otherwise `AMQP_URL` answering AMQP: use it, but tests that kill/restart cannot run.
- otherwise no broker: skip locally, fail under `CI=true` (a CI run that silently skips every
  broker test would look green while testing nothing).

Isolation between tests is by unique queue/exchange names (`unique_name`), not vhosts.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, TypeAlias, TypeVar

import pytest

from spectask.devbroker import LocalNode, amqp_url_reachable, find_rabbitmq_script
from spectask.devbroker.cluster import LocalCluster

Node = TypeVar("Node", bound=LocalNode)


@dataclass(frozen=True)
class ExternalBroker:
    """A broker named by `AMQP_URL`: usable, but not ours to kill or restart."""

    url: str


BrokerNode: TypeAlias = LocalNode | ExternalBroker


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def no_broker(reason: str) -> NoReturn:
    """Skip the test, or fail it under CI=true, where a skip would hide a broken setup."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: broker tests must not be skipped)", pytrace=False)
    pytest.skip(reason)


def rabbitmq_installed() -> bool:
    return find_rabbitmq_script("rabbitmq-server") is not None


def require_rabbitmq_installed() -> None:
    if not rabbitmq_installed():
        no_broker("rabbitmq-server is not installed (apt-get install rabbitmq-server)")


def require_controllable(node: BrokerNode) -> LocalNode:
    """The node, if this session owns it; otherwise skip (fail under CI): it cannot be killed."""
    if isinstance(node, LocalNode):
        return node
    no_broker(
        "this test kills or restarts the broker, which needs rabbitmq-server installed; "
        "a broker from AMQP_URL is not ours to kill"
    )


def _local_node(base: Path, name: str) -> LocalNode:
    return LocalNode(base, name=name)


def throwaway_node(
    name: str = "spectask-test",
    make: Callable[[Path, str], Node] = _local_node,  # type: ignore[assignment]
) -> Iterator[Node]:
    """Start an isolated node in a fresh temp dir; on exit stop it, its epmd, and delete the dir.

    `make(base, name)` builds the node: a LocalNode, or a subclass set up before it starts."""
    base = Path(tempfile.mkdtemp(prefix="spectask-rmq-"))
    node = make(base, name)
    try:
        node.start(timeout=120)
        yield node
    finally:
        node.close()
        shutil.rmtree(base, ignore_errors=True)


def throwaway_cluster() -> Iterator[LocalCluster]:
    """A local 3-node cluster in a fresh temp dir (~30 s to form); on exit stopped and deleted."""
    require_rabbitmq_installed()
    base = Path(tempfile.mkdtemp(prefix="spectask-cluster-"))
    cluster = LocalCluster(base)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()
        shutil.rmtree(base, ignore_errors=True)


def session_broker() -> Iterator[BrokerNode]:
    """The session's broker, per the policy in the module docstring."""
    if rabbitmq_installed():
        yield from throwaway_node()
        return
    url = os.environ.get("AMQP_URL", "").strip()
    if url:
        if not amqp_url_reachable(url):
            no_broker("AMQP_URL is set but no AMQP broker answers there")
        yield ExternalBroker(url)
        return
    no_broker(
        "no RabbitMQ: rabbitmq-server is not installed and AMQP_URL is not set "
        "(run `make broker` and export the URL it prints as AMQP_URL)"
    )


def unique_name(prefix: str = "test") -> str:
    """A queue/exchange name no other test (or earlier run on a shared broker) uses."""
    return f"{prefix}.{uuid.uuid4().hex[:12]}"
