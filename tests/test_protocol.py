"""Every Python name of the protocol against the protocol document: one source, checked.

The enums are generated from the document (`make protocol`), the header and message-type
constants are written in `spectask.protocol.names`; both must say what the document says,
and the committed models must be what the document generates today.
"""

from __future__ import annotations

import enum
from typing import Any

import pytest
import yaml

from spectask.codegen import protocol_models
from spectask.protocol import document, models, names
from spectask.runtime.deadletter import DeadReason
from spectask.runtime.waiting import BATCH, FINAL_STATES


def _doc() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(document.shipped_bytes())
    return data


def _schema(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = _doc()["components"]["schemas"][name]
    return schema


def _constants(suffix: str) -> dict[str, str]:
    return {
        key: value
        for key, value in vars(names).items()
        if key.endswith(suffix) and isinstance(value, str)
    }


def test_the_committed_models_are_what_the_document_generates() -> None:
    assert protocol_models.TARGET.read_bytes() == protocol_models.render(), (
        "spectask/protocol/models.py is stale: run `make protocol`"
    )


@pytest.mark.parametrize(
    ("enum_class", "schema"),
    [
        (models.TaskState, "TaskState"),
        (models.TaskStatus, "TaskStatus"),
        (models.EventKind, "EventKind"),
        (models.DeadLetterReason, "DeadLetterReason"),
        (DeadReason, "DeadLetterReason"),
    ],
)
def test_every_enum_has_the_documents_values(enum_class: type[enum.Enum], schema: str) -> None:
    assert [member.value for member in enum_class] == _schema(schema)["enum"]


def test_the_message_types_are_the_documents() -> None:
    documented = {
        message["bindings"]["amqp"]["messageType"]
        for message in _doc()["components"]["messages"].values()
    }
    assert set(_constants("_MESSAGE_TYPE").values()) == documented


def test_the_status_route_is_the_documents() -> None:
    """The worker asks the status operation itself (spectask.runtime.repeats): same address."""
    doc = _doc()
    bindings = doc["channels"]["statusRequests"]["bindings"]["amqp"]["x-spectask-bindings"]
    assert bindings == [{"exchange": names.STATUS_EXCHANGE, "routingKey": names.STATUS_ROUTING_KEY}]
    assert doc["operations"]["getStatus"]["bindings"]["amqp"]["cc"] == [names.STATUS_ROUTING_KEY]


def test_the_header_names_are_the_documents() -> None:
    task = list(_schema("TaskHeaders")["properties"])
    dead = list(_schema("DeadLetterHeaders")["properties"])
    assert list(names.TASK_HEADERS) == task
    assert sorted(names.DEAD_LETTER_HEADERS) == sorted(dead)
    assert set(_constants("_HEADER").values()) == set(task) | set(dead)


def test_final_states_and_batch_are_the_documents() -> None:
    final = _schema("TaskState")["x-spectask-final-states"]
    assert sorted(state.value for state in names.FINAL_STATES) == sorted(final)
    assert sorted(FINAL_STATES) == sorted(final)
    assert _schema("StatusRequest")["properties"]["task_ids"]["maxItems"] == BATCH


def test_the_events_on_the_wire_are_the_documents() -> None:
    wire = _schema("EventKind")["x-spectask-on-the-events-exchange"]
    assert sorted(kind.value for kind in names.EVENTS_ON_THE_WIRE) == sorted(wire)


def test_the_protocol_names_its_version() -> None:
    assert document.version() == _doc()["x-spectask-protocol"] == 1


def test_the_store_and_the_runtime_use_the_protocols_own_enums() -> None:
    """No second copy: the store's and the dead-letter code's enums are the protocol's."""
    from spectask.store import EventKind, TaskState

    assert TaskState is models.TaskState
    assert EventKind is models.EventKind
    assert DeadReason is models.DeadLetterReason
