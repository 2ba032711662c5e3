"""Issue 12: a client in another language, written from spec/ alone, works against spectask.

tools/ts-client is TypeScript on amqplib; its message models are generated from spec/ by
@asyncapi/modelina (named by the schemas' titles) and compiled by tsc (`make ts-client`, all
pinned by its lock file). It reads nothing but spec/: the exchanges, routing keys, message
types and final states come from the documents. Here it runs against real worker and
collector processes on the session's broker, with an SMTP sink for the e-mail report:
1. with the collector only, it submits a task, sees it QUEUED through the status RPC and
   cancels it;
2. with two workers, it submits one task of every operation and one that breaks its schema,
   asks for a status the schema refuses, and polls the status RPC until all are final.
Its JSON output says what it saw, typed by its generated models. Without node or the built
client the test is skipped, and fails under CI=true.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.mail_support import Inbox, serving
from tests.node_support import node, require
from tests.test_collectors_compete import CollectorProcess
from tests.workqueue_support import WorkerProcess, reset_topology, wait_ready

ROOT = Path(__file__).resolve().parent.parent
CLIENT = ROOT / "tools" / "ts-client"
SPEC = ROOT / "spec"
MODELS = CLIENT / "src" / "models"
MAIN = CLIENT / "dist" / "main.js"

pytestmark = pytest.mark.timeout(420)


def client(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the built client (skipped, or failed in CI, if it is not built)."""
    require(MAIN, "ts-client")
    return node(MAIN, *args, timeout=timeout)


def client_json(*args: str) -> dict[str, Any]:
    """The client's one line of JSON, or the test fails with its stderr."""
    done = client(*args)
    assert done.returncode == 0, done.stdout + done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def task_operations() -> dict[str, str]:
    """The producer's operations -> the title of their message's result schema."""
    common = yaml.safe_load((SPEC / "common.asyncapi.yaml").read_text())
    producer = yaml.safe_load((SPEC / "producer.asyncapi.yaml").read_text())
    found = {}
    for name, operation in producer["operations"].items():
        channel = operation["channel"]["$ref"].rsplit("/", 1)[1]
        message = operation["messages"][0]["$ref"].rsplit("/", 1)[1]
        ref = common["channels"][channel]["messages"][message]["$ref"].rsplit("/", 1)[1]
        result = common["components"]["messages"][ref]["x-spectask-result"]["$ref"]
        found[name] = common["components"]["schemas"][result.rsplit("/", 1)[1]]["title"]
    return found


def test_every_generated_model_is_named_by_a_title() -> None:
    """Item 13: modelina names every model (no AnonymousSchema_N) after the schemas."""
    require(MAIN, "ts-client")
    names = {path.stem for path in MODELS.glob("*.ts")} - {"index"}
    assert not {n for n in names if n.startswith("AnonymousSchema")}, sorted(names)
    assert set(task_operations().values()) <= names
    assert {"ImageResize", "TaskStatusView", "StatusReply", "TaskCancel", "TaskState"} <= names


async def test_the_typescript_client_runs_every_operation(
    amqp_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await reset_topology(amqp_url)
    store = f"sqlite:///{tmp_path / 'tasks.db'}"
    inbox = Inbox()
    collector = CollectorProcess("collector", amqp_url, store, tmp_path)
    workers: list[WorkerProcess] = []
    with serving(inbox) as smtp_port:
        monkeypatch.setenv("SPECTASK_SMTP_HOST", "127.0.0.1")
        monkeypatch.setenv("SPECTASK_SMTP_PORT", str(smtp_port))
        monkeypatch.setenv("SPECTASK_MAIL_ALLOWED_DOMAINS", "example.org")
        try:
            await collector.wait_ready()
            queued = await asyncio.to_thread(client_json, "queue-and-cancel", str(SPEC), amqp_url)
            workers = [
                WorkerProcess(f"ts-w{i}", amqp_url, output_dir=tmp_path, log_dir=tmp_path)
                for i in (1, 2)
            ]
            await asyncio.to_thread(wait_ready, *workers)
            seen = await asyncio.to_thread(
                client_json, "run", str(SPEC), amqp_url, queued["cancelled"]
            )
        finally:
            for worker in workers:
                worker.stop()
            collector.stop()

    expected = task_operations()
    submitted = seen["submitted"]
    assert set(submitted) == set(expected), "every operation of the spec was submitted"
    for operation, title in expected.items():
        task = submitted[operation]
        assert task["state"] == "SUCCEEDED", (operation, task)
        assert task["model"] == title, (operation, task)
    resized = submitted["submitImageResize"]["result"]
    assert (resized["width"], resized["height"], resized["format"]) == (4, 3, "PNG")
    assert submitted["submitImageConvert"]["result"]["format"] == "JPEG"
    assert submitted["submitDataStatistics"]["result"]["count"] == 8
    groups = submitted["submitDataAggregate"]["result"]["groups"]
    assert [(g["key"], g["value"]) for g in groups] == [("a", 4), ("b", 2)]
    assert submitted["submitReportEmail"]["result"]["recipients"] == ["ts-client@example.org"]
    assert [to for _, to, _ in inbox.messages] == [["ts-client@example.org"]]

    assert queued["state_when_cancelled"] == "QUEUED"
    assert seen["cancelled"] == {"task_id": queued["cancelled"], "state": "CANCELLED"}
    invalid = seen["invalid"]
    assert (invalid["state"], invalid["dead_reason"]) == ("DEAD", "schema_violation"), invalid
    refused = seen["refused_status"]
    assert refused["tasks"] == [] and refused["error"]["type"] == "schema_violation", refused


def test_a_schema_without_a_title_fails_the_model_build(tmp_path: Path) -> None:
    """The build refuses what would be an AnonymousSchema_N model, naming the message."""
    require(MAIN, "ts-client")
    (tmp_path / "x.asyncapi.yaml").write_text(
        "asyncapi: 3.1.0\ninfo: {title: t, version: 1.0.0}\n"
        "channels: {c: {address: c, messages: {m: {$ref: '#/components/messages/M'}}}}\n"
        "components:\n  messages:\n    M:\n      payload: {type: object, properties: {a: "
        "{type: object, properties: {b: {type: string}}}}}\n"
    )
    done = node(CLIENT / "generate-models.mjs", tmp_path, tmp_path / "out", timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "x.asyncapi.yaml m has a schema without a title" in done.stderr, done.stderr


def test_a_broken_spec_or_broker_is_one_line(tmp_path: Path) -> None:
    """No stack trace for a user's mistake: one line that says what is wrong."""
    (tmp_path / "broken.asyncapi.yaml").write_text("asyncapi: 3.1.0\ninfo: {title: t}\n")
    cases = {
        "broken.asyncapi.yaml does not parse: ": ("run", str(tmp_path), "amqp://127.0.0.1:1/"),
        "ECONNREFUSED": ("run", str(SPEC), "amqp://127.0.0.1:1/", "x"),
        "usage: main.js queue-and-cancel|run": ("nonsense", str(SPEC), "amqp://127.0.0.1:1/"),
    }
    for expected, args in cases.items():
        done = client(*args, timeout=120)
        assert done.returncode == 1 and done.stdout == "", done.stdout + done.stderr
        lines = done.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("ts-client: "), done.stderr
        assert expected in lines[0], lines[0]
