"""Issue 12's thirteen items, each pinned by tests named after it (`test_item_NN_...`).

What the deployment enforces is written in the spec, in words a client in another language reads
(descriptions) and in JSON Schema where it can say it; each test pins the spec's text or schema
to what the runtime does (on a real broker, with a real worker and collector where the item is
behaviour), so neither can change alone. README "The contract's thirteen items" lists the choice
made for each. Item 2's other refusal paths are in tests/test_status_refusals.py, item 5's
store-level checks in tests/test_duplicate_ids.py.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import pytest
import yaml
from pydantic import ValidationError

from generated import models
from generated.worker import RECEIVE_ROUTES
from spectask.errors import PermanentTaskError as HandlerPermanentError
from spectask.protocol import names
from spectask.protocol.names import STATUS_REPLY_MESSAGE_TYPE, STATUS_REQUEST_MESSAGE_TYPE
from spectask.runtime.broker import Broker
from spectask.runtime.config import RuntimeConfig
from spectask.runtime.context import TaskContext
from spectask.runtime.execution import Handler
from spectask.runtime.results import ResultSchemaError, TaskNotSucceededError
from spectask.store import open_store
from tests.runtime_support import dead_letters_with, wait_consumed
from tests.status_support import (
    app_worker,
    ask_with_pika,
    collector,
    new_id,
    producer_client,
    publish_events,
    publish_results,
    wait_states,
    worker_cancelled,
)
from workloads import analysis, images
from workloads.app import build_worker
from workloads.errors import PermanentTaskError

SPEC = Path(__file__).resolve().parent.parent / "spec"
JSON = "application/json"
STATISTICS = "data_analysis.statistics"
DATA = [route for route in RECEIVE_ROUTES if route.task_type == "data_analysis"]
# and the worker's cancellation stream, so a data worker skips a cancelled task
DATA_WORKER = [*DATA, *(route for route in RECEIVE_ROUTES if route.runtime == "cancellations")]


def schemas(document: str = "common.asyncapi.yaml") -> dict[str, Any]:
    loaded = yaml.safe_load((SPEC / document).read_text())
    found: dict[str, Any] = loaded["components"]["schemas"]
    return found


def words(text: str) -> str:
    """A description with its folded line breaks undone."""
    return " ".join(text.split())


def test_item_03_image_source_takes_exactly_one_of_path_and_data() -> None:
    source = schemas()["ImageSource"]
    assert (source["minProperties"], source["maxProperties"]) == (1, 1)
    assert source["additionalProperties"] is False
    assert sorted(source["properties"]) == ["data_base64", "path"]
    for path, data, given in [(None, None, "neither"), ("a.png", "aGk=", "both")]:
        with pytest.raises(PermanentTaskError) as refused:
            images.image_source(path, data, input_root=Path("."), max_bytes=10)
        said = str(refused.value)
        assert said.endswith(f"got {given}")
        assert said.removesuffix(given) in words(source["description"]), said


def test_item_03_readable_image_formats_are_listed_in_the_spec() -> None:
    spec = schemas()
    listed = tuple(spec["ImageFormat"]["enum"])
    assert listed == images.FORMATS  # the worker reads exactly the spec's formats
    assert f"({', '.join(listed)};" in words(spec["ImageSource"]["description"])


def test_item_04_aggregation_records_must_hold_group_by_and_field() -> None:
    aggregate = schemas()["DataAggregate"]
    said = words(aggregate["description"])
    assert "Every record must contain both keys" in said
    assert aggregate["properties"]["records"]["minItems"] == 1
    cases: list[tuple[list[dict[str, Any]], str]] = [
        ([{"v": 1}], "record <i> has no '<group_by>' field to group by"),
        ([{"g": "a"}], "record <i> has no '<field>' field to aggregate"),
    ]
    for records, template in cases:
        assert template in said
        pattern = re.escape(template).replace("<i>", "0")
        pattern = pattern.replace("<group_by>", "g").replace("<field>", "v")
        with pytest.raises(PermanentTaskError, match=f"^{pattern}$"):
            analysis.aggregate(records, "g", "v")
    with pytest.raises(ValidationError, match="records"):  # no records: the schema refuses
        models.DataAggregate.model_validate({"records": [], "group_by": "g", "field": "v"})


def protocol() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((SPEC / "spectask.asyncapi.yaml").read_text())
    return loaded


def test_item_06_status_messages_name_reply_to_and_their_correlation_id() -> None:
    document = protocol()
    messages = document["components"]["messages"]
    for name in ("StatusRequest", "StatusReply"):
        correlation = messages[name]["correlationId"]
        assert correlation["location"] == "$message.header#/correlationId"
        assert "correlation-id property" in words(correlation["description"])
    assert "`reply_to` the caller's reply address" in words(
        messages["StatusRequest"]["description"]
    )
    assert "reply-to property" in words(document["channels"]["statusReplies"]["description"])
    # the runtime echoes it: tests/test_status_refusals.py reads the reply's correlation_id


def test_item_07_final_states_and_their_precedence_are_in_words() -> None:
    from spectask.protocol.names import FINAL_STATES
    from spectask.store import states

    task_state = protocol()["components"]["schemas"]["TaskState"]
    said = words(task_state["description"])
    assert set(task_state["x-spectask-final-states"]) == {state.value for state in FINAL_STATES}
    assert "are final (x-spectask-final-states" in said
    ordered = sorted(states._PRECEDENCE, key=states._PRECEDENCE.__getitem__, reverse=True)
    assert f"precedence: {' > '.join(state.value for state in ordered)} (" in said
    ranks = sorted(states._RANK, key=states._RANK.__getitem__)[1:]  # UNKNOWN is never stored
    assert " < ".join(state.value for state in ranks) in said


def test_item_08_the_deployment_chooses_a_classic_queues_type() -> None:
    from generated.topology import TOPOLOGY
    from spectask.runtime.broker import QUEUE_TYPE, queue_arguments

    said = words(protocol()["info"]["description"])
    assert "every spectask process (worker, producer, collector) declares all of it" in said
    assert "`x-queue-type: classic` is one whose type the deployment chooses" in said
    chosen = [
        queue for queue in TOPOLOGY.queues if queue.arguments_dict().get(QUEUE_TYPE) == "classic"
    ]
    assert chosen, "the application's task queues say x-queue-type: classic"
    for queue in chosen:
        assert queue_arguments(queue, "quorum", None)[QUEUE_TYPE] == "quorum", queue.name
        assert queue_arguments(queue, "classic", None)[QUEUE_TYPE] == "classic", queue.name


def test_item_09_submitting_is_publishing_to_the_tasks_exchange_with_cc0() -> None:
    common = yaml.safe_load((SPEC / "common.asyncapi.yaml").read_text())
    producer = yaml.safe_load((SPEC / "producer.asyncapi.yaml").read_text())
    assert "with its bindings.amqp.cc[0] as routing key" in words(producer["info"]["description"])
    assert "publish its message to the `tasks` topic exchange" in words(
        common["info"]["description"]
    )
    assert "Submitting a task means publishing it HERE" in words(
        protocol()["channels"]["tasks"]["description"]
    )
    for operation in producer["operations"].values():
        channel = common["channels"][operation["channel"]["$ref"].rsplit("/", 1)[-1]]
        (binding,) = channel["bindings"]["amqp"]["x-spectask-bindings"]
        assert binding["exchange"] == "tasks"
        pattern = binding["routingKey"]
        (key,) = operation["bindings"]["amqp"]["cc"]
        assert key.startswith(pattern.removesuffix("#")), (key, pattern)
        said = words(channel["description"])
        assert f"Bound to the `tasks` exchange with `{pattern}`" in said
        assert "not to this queue" in said


def test_item_13_every_schema_is_titled_with_its_component_name() -> None:
    """Other languages' generators (modelina) name a model after its schema's title, since a
    component name does not survive a cross-file $ref; the title is the component name, so
    datamodel-code-generator's Python class names stay what they were."""
    from spectask.protocol import models as protocol_models

    for document, generated in [
        ("common.asyncapi.yaml", models),
        ("spectask.asyncapi.yaml", protocol_models),
    ]:
        for name, schema in schemas(document).items():
            assert schema.get("title") == name, (document, name)
            if schema.get("type") == "object" and "properties" in schema:
                assert isinstance(getattr(generated, name), type), (document, name)


def test_item_10_the_spec_says_a_dead_letter_keeps_the_tasks_type_and_content_type() -> None:
    dead_letter = protocol()["components"]["messages"]["DeadLetter"]
    said = words(dead_letter["description"])
    assert "its `type` is the task's message type (not spectask.dead_letter" in said
    assert dead_letter["bindings"]["amqp"]["messageType"] == "spectask.dead_letter"
    # on the wire: tests/test_dlq.py::test_item10_a_dead_letter_travels_with_the_tasks_type
    copy = words(protocol()["components"]["messages"]["TaskCopy"]["description"])
    assert "A messageType ending in `*` is spectask's convention, not AMQP's" in copy


def test_item_12_what_travels_vhosts_attempts_and_cancels_are_said() -> None:
    from dataclasses import fields

    from spectask.runtime.topology import ExchangeSpec, QueueSpec

    document = protocol()
    found = document["components"]["schemas"]
    kinds = words(found["EventKind"]["description"])
    assert "only started, progress, retrying and cancelled travel" in kinds
    assert "submitted, succeeded, failed and dead name what the collector learns" in kinds
    travelling = {"started", "progress", "retrying", "cancelled"}
    untravelling = {"submitted", "succeeded", "failed", "dead"}
    assert set(found["EventKind"]["enum"]) == travelling | untravelling
    # the vhost is the AMQP URL's: the runtime's topology has no vhost to declare into
    assert "virtual host of its AMQP URL" in words(document["info"]["description"])
    declared = {f.name for spec in (ExchangeSpec, QueueSpec) for f in fields(spec)}
    assert "vhost" not in declared
    attempt = found["TaskHeaders"]["properties"]["x-spectask-attempt"]
    assert "On a fresh submit it is ignored, whatever it says" in words(
        attempt["description"]
    )  # tests/test_contract_items.py's item 12 submits attempt 3 and sees attempt 1 run
    cancel = words(document["operations"]["cancelTasks"]["summary"])
    assert "a status request right after the cancel reads CANCELLED, not QUEUED" in cancel


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def fields_of(schema: dict[str, Any]) -> tuple[set[str], set[str]]:
    return set(schema["properties"]), set(schema.get("required", []))


def test_item_11_every_operation_has_a_result_schema_its_handler_returns() -> None:
    """Each task message names its result schema (x-spectask-result); the handler of that
    operation returns a model with exactly those fields, and a real result validates against
    the generated model."""
    import typing

    from workloads import handlers

    messages = yaml.safe_load((SPEC / "common.asyncapi.yaml").read_text())["components"]["messages"]
    found = schemas()
    for name, message in messages.items():
        result = message["x-spectask-result"]["$ref"].rsplit("/", 1)[-1]
        returned = typing.get_type_hints(getattr(handlers, snake(name)))["return"]
        assert returned.__name__ == result, (name, returned, result)
        model_fields = set(returned.model_fields)
        required = {n for n, f in returned.model_fields.items() if f.is_required()}
        assert (model_fields, required) == fields_of(found[result]), name
        if "path" in model_fields:  # a file on the worker's disk, marked for tools too
            path = found[result]["properties"]["path"]
            assert "local to the worker" in words(path["description"]), result
            assert path["x-spectask-locality"] == "worker", result
            assert "bytes" in model_fields, result
    real = analysis.aggregate([{"g": "a", "v": 1}, {"g": "b", "v": 2.5}], "g", "v")
    models.AggregateResult.model_validate(real.model_dump())
    patterns = analysis.detect_patterns([1.0, 2.0, 3.0, 40.0], threshold=1.0)
    models.PatternResult.model_validate(patterns.model_dump())
    models.StatisticsResult.model_validate(analysis.describe([1.0, 2.0]).model_dump())


# --- on a real broker: a real collector (SQLite store) and the application's worker ------------


def sqlite_store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'tasks.db'}"


def raw_task(task_id: str, **properties: Any) -> aio_pika.Message:
    """A data_analysis.statistics task as any AMQP client would publish it by hand."""
    return aio_pika.Message(
        b'{"values": [1.0, 2.0, 3.0]}',
        content_type=JSON,
        message_id=task_id,
        type=STATISTICS,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        **properties,
    )


async def publish(broker: Broker, exchange: str, key: str, message: aio_pika.Message) -> None:
    """One confirmed publish to `exchange` ("" is the default exchange)."""
    channel = await broker.connection.channel(publisher_confirms=True)
    target = channel.default_exchange if not exchange else await channel.get_exchange(exchange)
    await target.publish(message, routing_key=key)
    await channel.close()


@asynccontextmanager
async def data_worker(broker: Broker, handler: Handler) -> AsyncIterator[None]:
    """A data_analysis worker running `handler` for each of its operations, for the block."""
    stop = asyncio.Event()
    handlers = {route.operation: handler for route in DATA}
    worker = asyncio.create_task(
        app_worker(broker, DATA_WORKER, handlers, worker_id="w-items", stop=stop)
    )
    try:
        await wait_consumed(broker.config.amqp_url, [DATA[0].queue])
        yield
    finally:
        stop.set()
        await worker


on_broker = pytest.mark.asyncio


REFUSALS: list[tuple[bytes, dict[str, Any], str, str]] = [
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


@on_broker
async def test_item_01_status_request_without_message_id_is_answered(
    amqp_url: str, tmp_path: Path
) -> None:
    store_url = sqlite_store(tmp_path)
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


@on_broker
async def test_item_02_invalid_status_request_gets_an_error_reply(
    amqp_url: str, tmp_path: Path
) -> None:
    async with collector(amqp_url, sqlite_store(tmp_path)) as (_, stats):
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


@on_broker
@pytest.mark.timeout(120)
async def test_item_05_a_reused_id_is_a_duplicate_id_dead_letter_and_keeps_the_first_task(
    amqp_url: str, tmp_path: Path
) -> None:
    headers = words(protocol()["components"]["schemas"]["TaskHeaders"]["description"])
    assert "It is the task's key in the store and its idempotency key" in headers
    assert "refused by the collector as a dead letter with reason duplicate_id" in headers
    task_id = f"dup-{uuid.uuid4().hex[:10]}"
    store_url = sqlite_store(tmp_path)
    async with collector(amqp_url, store_url):
        broker = await Broker.connect(RuntimeConfig(amqp_url=amqp_url), name="test-dup")
        async with broker:
            client = await producer_client(broker)
            channel = await broker.connection.channel()
            await (await channel.get_queue("dead_letter", ensure=False)).purge()
            stop = asyncio.Event()
            handlers = build_worker().handlers
            worker = asyncio.create_task(
                app_worker(broker, DATA, handlers, worker_id="w-dup", stop=stop)
            )
            try:
                payload = models.DataStatistics(values=[1.0, 2.0, 3.0])
                await client.submit_data_statistics(payload, task_id=task_id)
                await wait_states(client, {task_id: "SUCCEEDED"})
                # the same task again: an ordinary repeat, no dead letter, same record
                await client.submit_data_statistics(payload, task_id=task_id)
                # other tasks under the same id: another body, then another type
                other = models.DataStatistics(values=[10.0, 20.0])
                await client.submit_data_statistics(other, task_id=task_id)
                patterns = models.DataDetectPatterns(values=[1.0, 2.0, 3.0, 4.0])
                await client.submit_data_detect_patterns(patterns, task_id=task_id)
                dead = await dead_letters_with(amqp_url, "duplicate_id", 4, task_id=task_id)
            finally:
                stop.set()
                stats = await worker
    assert stats.processed == 4  # every one ran: a worker cannot know
    types = Counter(message.type for message in dead)
    assert types == {
        "data_analysis.statistics": 1,
        "data_analysis.detect_patterns": 1,
        names.RESULT_MESSAGE_TYPE: 2,
    }
    copy = next(m for m in dead if m.type == "data_analysis.statistics")
    assert json.loads(copy.body) == {"values": [10.0, 20.0]}
    results = [
        models.TaskResult.model_validate_json(m.body)
        for m in dead
        if m.type == names.RESULT_MESSAGE_TYPE
    ]
    # the second tasks' results are kept in the dead letters, not dropped
    assert sorted(r.message_type for r in results) == [
        "data_analysis.detect_patterns",
        "data_analysis.statistics",
    ]
    store = await open_store(store_url)
    try:
        record = await store.get(task_id)
    finally:
        await store.close()
    assert record is not None and record.message_type == "data_analysis.statistics"
    assert record.result is not None and record.result["mean"] == 2.0
    assert record.worker_id == "w-dup" and record.attempts == 1


@on_broker
async def test_item_09_a_task_published_to_its_queue_is_dead_lettered_and_seen_dead(
    amqp_url: str, tmp_path: Path
) -> None:
    """The standard reading of an `is: queue` channel (default exchange, the queue's name) is
    refused with reason default_exchange: the collector stores it DEAD, the handler never runs.
    Before: it ran and succeeded, and the collector never saw it QUEUED."""
    said = words(protocol()["channels"]["tasks"]["description"])
    assert "is refused: the worker dead-letters it unrun with reason `default_exchange`" in said
    reasons = protocol()["components"]["schemas"]["DeadLetterReason"]
    assert "default_exchange" in reasons["enum"]
    ran: list[str] = []

    async def handle(payload: object, context: TaskContext) -> dict[str, object]:
        ran.append(context.task_id)
        return {}

    task_id = new_id("item9")
    async with (
        collector(amqp_url, sqlite_store(tmp_path)),
        await Broker.connect(RuntimeConfig(amqp_url=amqp_url), name="test-item9") as broker,
        data_worker(broker, handle),
    ):
        client = await producer_client(broker)
        await publish(broker, "", DATA[0].queue, raw_task(task_id))
        views = await wait_states(client, {task_id: "DEAD"})
        [dead] = await dead_letters_with(amqp_url, "default_exchange", 1, task_id=task_id)
    assert views[task_id].dead_reason == "default_exchange"
    assert task_id not in ran
    error = (dead.headers or {})[names.ERROR_HEADER]
    assert "published through the default exchange straight to tasks.data_analysis" in str(error)


@on_broker
async def test_item_10_a_dead_letter_travels_with_the_tasks_type_and_content_type(
    amqp_url: str, tmp_path: Path
) -> None:
    """As the protocol's DeadLetter description says: on the wire the task's own AMQP type and
    content type, not the spec's spectask.dead_letter / application/octet-stream; told apart
    by its channel and reason header."""
    copy = words(protocol()["components"]["messages"]["DeadLetterCopy"]["description"])
    assert "A messageType ending in `*` is spectask's convention" in copy

    async def doomed(payload: object, context: TaskContext) -> dict[str, object]:
        raise HandlerPermanentError("these numbers are hopeless")

    task_id = new_id("item10")
    async with (
        await Broker.connect(RuntimeConfig(amqp_url=amqp_url), name="test-item10") as broker,
        data_worker(broker, doomed),
    ):
        client = await producer_client(broker)
        await client.submit_data_statistics(models.DataStatistics(values=[1.0]), task_id=task_id)
        [dead] = await dead_letters_with(amqp_url, "permanent", 1, task_id=task_id)
    assert (dead.message_id, dead.type, dead.content_type) == (task_id, STATISTICS, JSON)
    assert dead.type != names.DEAD_LETTER_MESSAGE_TYPE


@on_broker
async def test_item_11_typed_results_from_the_generated_client(
    amqp_url: str, tmp_path: Path
) -> None:
    """`result_of_<submit>` returns the operation's x-spectask-result model, validated; a task
    that did not succeed, or a result that breaks its schema, is a one-line error."""
    succeeded, failed, broken = new_id("typed"), new_id("typed-failed"), new_id("typed-broken")
    async with (
        collector(amqp_url, sqlite_store(tmp_path)),
        await Broker.connect(RuntimeConfig(amqp_url=amqp_url), name="test-item11") as broker,
        data_worker(broker, build_worker().handlers["processDataStatistics"]),
    ):
        client = await producer_client(broker)
        payload = models.DataStatistics(values=[1.0, 2.0, 3.0])
        await client.submit_data_statistics(payload, task_id=succeeded)
        result = await client.result_of_submit_data_statistics(succeeded, 30)
        assert isinstance(result, models.StatisticsResult)
        assert (result.count, result.mean, result.median) == (3, 2.0, 2.0)
        # results published as a worker would: a failure, and a result of another shape
        await publish_results(broker, [(failed, "failed"), (broken, "succeeded")])
        with pytest.raises(TaskNotSucceededError, match=f"task {failed} ended FAILED: ValueE"):
            await client.result_of_submit_data_statistics(failed, 30)
        with pytest.raises(ResultSchemaError, match=f"task {broken}'s result is not a Statis"):
            await client.result_of_submit_data_statistics(broken, 30)


@on_broker
async def test_item_12_a_submitted_attempt_is_ignored_and_a_cancel_shows_at_once(
    amqp_url: str, tmp_path: Path
) -> None:
    """A client's x-spectask-attempt 3 (of maxAttempts 3) no longer takes the task's retries
    away: it runs as attempt 1, fails, and is retried (attempt 2, back from its delay tier).
    Before: it ran as attempt 3 and was dead at its first failure. And a cancel makes a QUEUED
    task CANCELLED with no worker running (before: QUEUED until a worker read the stream)."""
    attempts: list[int] = []

    async def flaky(payload: object, context: TaskContext) -> dict[str, object]:
        attempts.append(context.attempt)
        if context.attempt == 1:
            raise ConnectionError("flaky upstream")
        return {"attempt": context.attempt}

    retried, cancelled = new_id("item12-attempt"), new_id("item12-cancel")
    async with (
        collector(amqp_url, sqlite_store(tmp_path)) as (store, _),
        await Broker.connect(RuntimeConfig(amqp_url=amqp_url), name="test-item12") as broker,
    ):
        client = await producer_client(broker)
        await client.submit_data_statistics(models.DataStatistics(values=[1.0]), task_id=cancelled)
        await wait_states(client, {cancelled: "QUEUED"})
        await client.cancel_tasks(
            models.TaskCancel(task_ids=[cancelled], requested_at=datetime.now(UTC), reason="t")
        )
        views = await wait_states(client, {cancelled: "CANCELLED"})  # no worker yet
        error = views[cancelled].error
        assert error is not None
        assert (error.type, error.message) == ("cancelled", "cancel requested by a client: t")

        copy = raw_task(retried, headers={names.ATTEMPT_HEADER: 3})
        async with data_worker(broker, flaky):
            await publish(broker, "tasks", STATISTICS, copy)
            views = await wait_states(client, {retried: "SUCCEEDED", cancelled: "CANCELLED"}, 30)
            said = await worker_cancelled(store, cancelled)
    assert attempts == [1, 2]  # the cancelled task never ran: the worker skipped it
    assert views[retried].attempts == 2
    assert "skipped before it ran" in said


async def test_item_12_an_event_of_a_kind_that_never_travels_is_dead_lettered(
    amqp_url: str, tmp_path: Path
) -> None:
    """The spec says only started, progress, retrying and cancelled travel on the events
    exchange; a `succeeded` or `dead` event from any publisher is dead-lettered (permanent) and
    the task stays as it was. Before: the collector stored it, so one event could mark a task
    SUCCEEDED without a result, or DEAD without a dead letter."""
    wire = protocol()["components"]["schemas"]["EventKind"]["x-spectask-on-the-events-exchange"]
    assert sorted(wire) == ["cancelled", "progress", "retrying", "started"]
    task_id = new_id("item12-event")
    async with (
        collector(amqp_url, sqlite_store(tmp_path)),
        await Broker.connect(RuntimeConfig(amqp_url=amqp_url), name="test-item12e") as broker,
    ):
        client = await producer_client(broker)
        await client.submit_data_statistics(models.DataStatistics(values=[1.0]), task_id=task_id)
        await wait_states(client, {task_id: "QUEUED"})
        await publish_events(
            broker,
            [
                {"task_id": task_id, "event": "succeeded", "attempt": 1},
                {"task_id": task_id, "event": "dead", "attempt": 1, "message": "forged"},
            ],
        )
        refused = await dead_letters_with(amqp_url, "permanent", 2, task_id=task_id)
        views = await wait_states(client, {task_id: "QUEUED"})
    errors = [str((dead.headers or {})[names.ERROR_HEADER]) for dead in refused]
    assert all("does not travel on the events exchange" in error for error in errors), errors
    assert views[task_id].result is None and views[task_id].dead_reason is None
