"""Issue 12: what the deployment enforces is written in the spec, in words a client in another
language reads (descriptions) and in JSON Schema where it can say it; each test pins the spec's
text or schema to what the runtime does, so neither can change alone."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from generated import models
from workloads import analysis, images
from workloads.errors import PermanentTaskError

SPEC = Path(__file__).resolve().parent.parent / "spec"


def schemas(document: str = "common.asyncapi.yaml") -> dict[str, Any]:
    loaded = yaml.safe_load((SPEC / document).read_text())
    found: dict[str, Any] = loaded["components"]["schemas"]
    return found


def words(text: str) -> str:
    """A description with its folded line breaks undone."""
    return " ".join(text.split())


def test_item3_image_source_takes_exactly_one_of_path_and_data() -> None:
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


def test_item3_readable_image_formats_are_listed_in_the_spec() -> None:
    spec = schemas()
    listed = tuple(spec["ImageFormat"]["enum"])
    assert listed == images.FORMATS  # the worker reads exactly the spec's formats
    assert f"({', '.join(listed)};" in words(spec["ImageSource"]["description"])


def test_item4_aggregation_records_must_hold_group_by_and_field() -> None:
    aggregate = schemas()["DataAggregate"]
    said = words(aggregate["description"])
    assert "Every record must contain both keys" in said
    assert aggregate["properties"]["records"]["minItems"] == 1
    for records, template in [
        ([{"v": 1}], "record <i> has no '<group_by>' field to group by"),
        ([{"g": "a"}], "record <i> has no '<field>' field to aggregate"),
    ]:
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


def test_item6_status_messages_name_reply_to_and_their_correlation_id() -> None:
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


def test_item7_final_states_and_their_precedence_are_in_words() -> None:
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


def test_item8_the_deployment_chooses_a_classic_queues_type() -> None:
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


def test_item9_submitting_is_publishing_to_the_tasks_exchange_with_cc0() -> None:
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


def test_item13_every_schema_is_titled_with_its_component_name() -> None:
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


def test_item10_a_dead_letter_keeps_the_tasks_type_and_content_type_as_the_spec_says() -> None:
    dead_letter = protocol()["components"]["messages"]["DeadLetter"]
    said = words(dead_letter["description"])
    assert "its `type` is the task's message type (not spectask.dead_letter" in said
    assert dead_letter["bindings"]["amqp"]["messageType"] == "spectask.dead_letter"
    # on the wire: tests/test_dlq.py::test_item10_a_dead_letter_travels_with_the_tasks_type
    copy = words(protocol()["components"]["messages"]["TaskCopy"]["description"])
    assert "A messageType ending in `*` is spectask's convention, not AMQP's" in copy


def test_item12_what_travels_vhosts_attempts_and_cancels_are_said() -> None:
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


def test_item11_every_operation_has_a_result_schema_its_handler_returns() -> None:
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
        assert "path" not in model_fields or "local to the worker" in words(
            found[result]["properties"]["path"]["description"]
        ), result
    real = analysis.aggregate([{"g": "a", "v": 1}, {"g": "b", "v": 2.5}], "g", "v")
    models.AggregateResult.model_validate(real.model_dump())
    patterns = analysis.detect_patterns([1.0, 2.0, 3.0, 40.0], threshold=1.0)
    models.PatternResult.model_validate(patterns.model_dump())
    models.StatisticsResult.model_validate(analysis.describe([1.0, 2.0]).model_dump())
