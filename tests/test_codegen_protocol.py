"""The generator and spectask's protocol document: the copy in a spec, roles, derived copies.

An application's spec holds its task types and a byte-for-byte copy of the protocol; the
generator adds the protocol's operations to each role's service and refuses what the runtime
would refuse. Each case copies this repo's own spec/ and changes one thing.
"""

from __future__ import annotations

import importlib
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from spectask.codegen import main
from spectask.protocol import document

APP_SPEC = Path(__file__).resolve().parents[1] / "spec"
COMMON = "common.asyncapi.yaml"


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    copied = tmp_path / "spec"
    shutil.copytree(APP_SPEC, copied)
    return copied


def _edit(path: Path, change: Any) -> None:
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _generate(spec: Path, out: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["--spec", str(spec), "--out", str(out)])
    return code, capsys.readouterr().err


@pytest.fixture
def importable(tmp_path: Path) -> Iterator[Path]:
    """A directory on sys.path for a package generated under it; cleaned up after the test."""
    sys.path.insert(0, str(tmp_path))
    yield tmp_path
    sys.path.remove(str(tmp_path))
    for name in [m for m in sys.modules if m == "appgen" or m.startswith("appgen.")]:
        del sys.modules[name]


def test_the_spec_carries_the_shipped_protocol() -> None:
    assert (APP_SPEC / document.DOCUMENT_NAME).read_bytes() == document.shipped_bytes()


def test_an_edited_protocol_copy_is_refused(
    spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = spec / document.DOCUMENT_NAME
    copy.write_bytes(copy.read_bytes().replace(b"maxItems: 1000\n", b"maxItems: 5000\n", 1))
    code, err = _generate(spec, tmp_path / "out", capsys)
    assert code == 1
    assert f"{copy}: $: spectask.asyncapi.yaml differs from the protocol this spectask ships" in err
    assert f"spectask protocol {spec}" in err
    assert not (tmp_path / "out").exists()


def test_spectask_protocol_writes_the_copy(spec: Path, tmp_path: Path) -> None:
    from spectask.cli import main as cli

    (spec / document.DOCUMENT_NAME).write_text("stale")
    assert cli(["protocol", str(spec)]) == 0
    assert (spec / document.DOCUMENT_NAME).read_bytes() == document.shipped_bytes()
    assert main(["--spec", str(spec), "--out", str(tmp_path / "out")]) == 0


def test_roles_get_the_protocols_operations(
    spec: Path, importable: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No collector document, yet a collector service; the worker's sends are the runtime's."""
    assert not (spec / "collector.asyncapi.yaml").exists()
    code, err = _generate(spec, importable / "appgen", capsys)
    assert code == 0, err
    collector = importlib.import_module("appgen.collector")
    worker = importlib.import_module("appgen.worker")
    producer = importlib.import_module("appgen.producer")
    assert {r.operation for r in collector.RECEIVE_ROUTES} == {
        "answerStatus",
        "collectCancel",
        "collectDeadLetter",
        "collectEvent",
        "collectResult",
        "collectResultBatch",
        "collectSubmitted",
    }
    assert {r.operation for r in worker.SEND_ROUTES} == {
        "publishDeadLetter",
        "publishEvent",
        "publishHeartbeat",
        "publishResult",
        "publishResultBatch",
    }
    assert not hasattr(worker, "WorkerClient")  # nobody but the runtime publishes results
    assert not hasattr(collector, "CollectorClient")
    assert hasattr(producer.ProducerClient, "cancel_tasks")
    assert hasattr(producer.ProducerClient, "get_status")
    models = importlib.import_module("appgen.models")
    from spectask.protocol import models as protocol_models

    assert models.TaskResult is protocol_models.TaskResult  # one class, from one source


def test_the_collectors_copy_queue_follows_the_task_queues(
    spec: Path, importable: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A task type added to the spec is copied to collector.tasks without a word about it."""

    def add_queue(data: dict[str, Any]) -> None:
        channel = dict(data["channels"]["dataAnalysis"])
        amqp = dict(channel["bindings"]["amqp"])
        amqp["queue"] = {**amqp["queue"], "name": "tasks.video"}
        amqp["x-spectask-bindings"] = [{"exchange": "tasks", "routingKey": "video.#"}]
        channel["bindings"] = {"amqp": amqp}
        channel["messages"] = {}
        channel["address"] = "tasks/video"
        data["channels"]["video"] = channel

    _edit(spec / COMMON, add_queue)
    code, err = _generate(spec, importable / "appgen", capsys)
    assert code == 0, err
    topology = importlib.import_module("appgen.topology").TOPOLOGY
    copies = next(q for q in topology.queues if q.name == "collector.tasks")
    assert sorted(b.routing_key for b in copies.bindings) == [
        "data_analysis.#",
        "image_processing.#",
        "report_generation.#",
        "video.#",
    ]


def test_a_worker_without_the_protocol_is_refused(
    spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The runtime refuses a worker with nowhere to dead-letter: so does the generator."""
    (spec / document.DOCUMENT_NAME).unlink()

    def inline_headers(data: dict[str, Any]) -> None:
        for message in data["components"]["messages"].values():
            message.pop("headers", None)
        data["channels"]["tasks"] = {
            "address": "tasks",
            "bindings": {
                "amqp": {"is": "routingKey", "exchange": {"name": "tasks", "type": "topic"}}
            },
        }

    _edit(spec / COMMON, inline_headers)
    code, err = _generate(spec, tmp_path / "out", capsys)
    assert code == 1
    assert "service 'worker' receives messages but has no send operation of message type " in err
    assert "spectask.dead_letter" in err
    assert "spectask protocol" in err


def test_roles_belong_to_the_protocol_only(
    spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def add_roles(data: dict[str, Any]) -> None:
        data["operations"]["submitImageResize"]["x-spectask-roles"] = ["worker"]

    _edit(spec / "producer.asyncapi.yaml", add_roles)
    code, err = _generate(spec, tmp_path / "out", capsys)
    assert code == 1
    assert "x-spectask-roles belongs to the protocol document's operations only" in err


def test_an_operation_named_like_a_protocol_one_is_refused(
    spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def add(data: dict[str, Any]) -> None:
        data["operations"]["publishResult"] = data["operations"]["processImageResize"]

    _edit(spec / "worker.asyncapi.yaml", add)
    code, err = _generate(spec, tmp_path / "out", capsys)
    assert code == 1
    assert "operation id 'publishResult' is already one of the protocol's worker operations" in err


def test_a_yaml_syntax_error_is_reported_once_at_its_line(
    spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One unquoted `: ` in a description: one error, at the line, not one per $ref to it."""
    common = spec / COMMON
    lines = common.read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if "description: A single RabbitMQ node" in line)
    lines[at] = lines[at].replace("A single RabbitMQ node", "note: one RabbitMQ node")
    common.write_text("\n".join(lines) + "\n")
    code, err = _generate(spec, tmp_path / "out", capsys)
    assert code == 1
    errors = [line for line in err.splitlines() if line.startswith(str(spec))]
    assert errors == [
        f"{common}: $: not valid YAML at line {at + 1}, column {lines[at].index('note:') + 5}: "
        "mapping values are not allowed here"
    ], err
    assert "quote a value that contains ': '" in err
