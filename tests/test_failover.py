"""Several broker URLs in AMQP_URL (spectask.runtime.failover): checked, split, first answering.

The cluster faults themselves (a node killed under load, the reconnect to a survivor) are in
tests/test_cluster.py; here the parts a single broker can show.
"""

from __future__ import annotations

import pytest

from spectask.devbroker import free_port
from spectask.errors import BrokerUnavailableError, ConfigError
from spectask.runtime.broker import Broker, redact_url
from spectask.runtime.config import RuntimeConfig
from spectask.runtime.connect_errors import check_urls
from spectask.runtime.failover import current_url, split_urls


def test_split_urls_takes_one_or_several_and_ignores_blanks() -> None:
    assert split_urls("amqp://a/") == ["amqp://a/"]
    assert split_urls(" amqp://a/ , amqp://b:5673/,") == ["amqp://a/", "amqp://b:5673/"]


def test_every_url_of_the_list_is_checked() -> None:
    with pytest.raises(ConfigError) as caught:
        check_urls("amqp://u:secret@a/,http://u:secret@b:5672/", redact_url)
    message = str(caught.value)
    assert "'http://u:***@b:5672/' has scheme 'http'" in message
    assert "secret" not in message
    with pytest.raises(ConfigError, match="names no broker"):
        check_urls(" , ", redact_url)


def test_passwords_of_every_node_are_redacted() -> None:
    shown = redact_url("amqp://u:p1@a:5672/,amqp://u:p2@b:5672/")
    assert shown == "amqp://u:***@a:5672/,amqp://u:***@b:5672/"


async def test_a_node_that_does_not_answer_is_skipped(amqp_url: str) -> None:
    """The first URL names a closed port: the connection is made to the second one."""
    dead = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    config = RuntimeConfig(amqp_url=f"{dead},{amqp_url}")
    async with await Broker.connect(config) as broker:
        assert current_url(broker.connection) == amqp_url


async def test_no_node_answering_is_one_clear_error() -> None:
    urls = ",".join(f"amqp://guest:pw@127.0.0.1:{free_port()}/" for _ in range(2))
    config = RuntimeConfig(amqp_url=urls, connect_timeout=5)
    with pytest.raises(BrokerUnavailableError) as caught:
        await Broker.connect(config)
    message = str(caught.value)
    assert message.startswith("cannot reach RabbitMQ at amqp://guest:***@127.0.0.1:")
    assert ":pw@" not in message
