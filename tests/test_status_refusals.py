"""Issue 12 item 2, the Python client and a request without reply_to (items 1 and 2 themselves
are pinned in tests/test_contract_items.py, with the refusals listed here).

The requests are published with pika, a plain AMQP client that, unlike aio-pika's aiormq, sends
no message_id unless told to (amqplib, a Node.js client, does not either). Real broker, a real
collector on a real SQLite store. Each case checks the reply the caller reads, and that the
collector dead-lettered nothing (a request is not a task: the dead-letter queue holds tasks).
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from pydantic import BaseModel

from spectask.protocol.names import (
    STATUS_REQUEST_MESSAGE_TYPE,
)
from spectask.runtime.broker import Broker
from spectask.runtime.config import RuntimeConfig
from spectask.runtime.repeats import STATUS_ROUTE
from spectask.runtime.rpc import RpcError
from spectask.runtime.topology import RpcRoute
from tests.runtime_support import POLL_SECONDS
from tests.status_support import collector, publish_with_pika

pytestmark = [pytest.mark.asyncio, pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)]

JSON = "application/json"
REPLY_SECONDS = 10.0


class LooseRequest(BaseModel):
    """A request model that lets the caller send what the protocol refuses."""

    task_ids: list[str]


async def test_item2_the_python_client_raises_the_refusal_at_once(
    amqp_url: str, store_url: str
) -> None:
    loose = RpcRoute(
        operation="getStatus",
        exchange=STATUS_ROUTE.exchange,
        routing_key=STATUS_ROUTE.routing_key,
        message_type=STATUS_ROUTE.message_type,
        model=LooseRequest,
        reply=STATUS_ROUTE.reply,
    )
    async with (
        collector(amqp_url, store_url),
        await Broker.connect(RuntimeConfig(amqp_url=amqp_url)) as broker,
    ):
        started = time.monotonic()
        with pytest.raises(RpcError, match=r"getStatus: the request was refused: schema_viol"):
            await broker.rpc().call(loose, {"task_ids": []}, timeout=REPLY_SECONDS)
        assert time.monotonic() - started < REPLY_SECONDS / 2


async def test_item2_an_invalid_request_without_reply_to_is_acked_with_a_line(
    amqp_url: str, store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="spectask")
    properties = {"type": STATUS_REQUEST_MESSAGE_TYPE, "content_type": JSON}
    async with collector(amqp_url, store_url) as (_, stats):
        await asyncio.to_thread(publish_with_pika, amqp_url, b'{"task_ids": []}', properties)
        deadline = time.monotonic() + REPLY_SECONDS
        while "has no reply_to to say so: schema_violation" not in caplog.text:
            assert time.monotonic() < deadline, caplog.text
            await asyncio.sleep(POLL_SECONDS)
    assert stats[0].dead_lettered == 0
