"""Issue 12 items 1 and 2: a status request from any AMQP client is answered, an invalid one too.

The requests are published with pika, a plain AMQP client that, unlike aio-pika's aiormq, sends
no message_id unless told to (amqplib, a Node.js client, does not either). Real broker, a real
collector on a real SQLite store. Each case checks the reply the caller reads, and that the
collector dead-lettered nothing (a request is not a task: the dead-letter queue holds tasks).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

import pika
import pytest
from pydantic import BaseModel

from generated import models
from spectask.protocol.names import (
    STATUS_EXCHANGE,
    STATUS_REPLY_MESSAGE_TYPE,
    STATUS_REQUEST_MESSAGE_TYPE,
    STATUS_ROUTING_KEY,
)
from spectask.runtime.broker import Broker
from spectask.runtime.config import RuntimeConfig
from spectask.runtime.repeats import STATUS_ROUTE
from spectask.runtime.rpc import REPLY_TO, RpcError
from spectask.runtime.topology import RpcRoute
from tests.runtime_support import POLL_SECONDS
from tests.status_support import collector, new_id

pytestmark = [pytest.mark.asyncio, pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)]

JSON = "application/json"
REPLY_SECONDS = 10.0


def ask_with_pika(
    url: str, body: bytes, properties: Mapping[str, Any]
) -> tuple[pika.BasicProperties, bytes]:
    """One status request published with pika to where getStatus sends it; its reply."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        replies: list[tuple[pika.BasicProperties, bytes]] = []
        channel.basic_consume(
            REPLY_TO, lambda _ch, _m, props, reply: replies.append((props, reply)), auto_ack=True
        )
        channel.basic_publish(
            STATUS_EXCHANGE,
            STATUS_ROUTING_KEY,
            body,
            pika.BasicProperties(reply_to=REPLY_TO, correlation_id="call-1", **properties),
        )
        deadline = time.monotonic() + REPLY_SECONDS
        while not replies:
            if time.monotonic() > deadline:
                raise AssertionError(f"no reply within {REPLY_SECONDS} s to {body!r}")
            connection.process_data_events(time_limit=POLL_SECONDS)
        return replies[0]
    finally:
        connection.close()


def publish_with_pika(url: str, body: bytes, properties: Mapping[str, Any]) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish(
            STATUS_EXCHANGE, STATUS_ROUTING_KEY, body, pika.BasicProperties(**properties)
        )
    finally:
        connection.close()


async def test_item1_a_status_request_without_message_id_is_answered(
    amqp_url: str, store_url: str
) -> None:
    task_id = new_id("no-message-id")
    body = json.dumps({"task_ids": [task_id]}).encode()
    async with collector(amqp_url, store_url) as (_, stats):
        props, reply = await asyncio.to_thread(
            ask_with_pika,
            amqp_url,
            body,
            {"type": STATUS_REQUEST_MESSAGE_TYPE, "content_type": JSON},
        )
    assert props.type == STATUS_REPLY_MESSAGE_TYPE
    assert props.correlation_id == "call-1"
    answer = models.StatusReply.model_validate_json(reply)
    assert answer.error is None
    assert [(view.task_id, view.state) for view in answer.tasks] == [
        (task_id, models.TaskState.UNKNOWN)
    ]
    assert stats[0].dead_lettered == 0


REFUSALS = [
    # (body, properties, the reason the caller reads, a piece of its message)
    (b'{"task_ids": []}', {"type": STATUS_REQUEST_MESSAGE_TYPE}, "schema_violation", "task_ids"),
    (b"{not json", {"type": STATUS_REQUEST_MESSAGE_TYPE}, "undecodable", "JSON"),
    (b'{"task_ids": ["a"]}', {}, "unknown_type", "message type None"),
    (
        b'{"task_ids": ["a"]}',
        {"type": STATUS_REQUEST_MESSAGE_TYPE, "content_type": "text/plain"},
        "undecodable",
        "content type 'text/plain'",
    ),
    (
        b'{"task_ids": ["a"]}',
        {"type": STATUS_REQUEST_MESSAGE_TYPE, "headers": {"x-spectask-attempt": "one"}},
        "invalid_headers",
        "x-spectask-attempt",
    ),
]


async def test_item2_an_invalid_status_request_gets_an_error_reply(
    amqp_url: str, store_url: str
) -> None:
    async with collector(amqp_url, store_url) as (_, stats):
        for body, properties, reason, says in REFUSALS:
            props, reply = await asyncio.to_thread(
                ask_with_pika, amqp_url, body, {"content_type": JSON, **properties}
            )
            assert props.type == STATUS_REPLY_MESSAGE_TYPE and props.correlation_id == "call-1"
            answer = models.StatusReply.model_validate_json(reply)
            assert answer.tasks == [], body
            assert answer.error is not None, body
            assert (answer.error.type, says in answer.error.message) == (reason, True), answer.error
    assert stats[0].dead_lettered == 0


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
