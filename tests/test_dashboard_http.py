"""The dashboard over real HTTP (uvicorn in its own process), on a real broker and store.

A collector and a worker run as processes too; every check goes through the JSON API, the
server-sent events or /metrics, as a browser or Prometheus would.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from spectask.protocol.names import (
    ORIGIN_EXCHANGE_HEADER,
    ORIGIN_QUEUE_HEADER,
    ORIGIN_ROUTING_KEY_HEADER,
    REASON_HEADER,
)
from tests.cli_support import spectask
from tests.dashboard_support import DashboardProcess
from tests.test_collectors_compete import CollectorProcess
from tests.workqueue_support import WorkerProcess, queue_depth, reset_topology, wait_ready

pytestmark = pytest.mark.timeout(240)
TOKEN = "t0ken-" + "x" * 24
STATISTICS = "data_analysis.statistics"


def metric(text: str, name: str, **labels: str) -> float:
    """One sample of a Prometheus text exposition (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.fixture
async def stack(amqp_url: str, store_url: str, tmp_path: Path) -> AsyncIterator[DashboardProcess]:
    """A fresh topology, a collector on `store_url` and a dashboard on the same store."""
    await reset_topology(amqp_url)
    collector = CollectorProcess("collector", amqp_url, store_url, tmp_path)
    dashboard = DashboardProcess(amqp_url, store_url, tmp_path)
    try:
        await collector.wait_ready()
        await asyncio.to_thread(dashboard.wait_ready)
        yield dashboard
    finally:
        dashboard.stop()
        collector.stop()


def test_a_public_bind_needs_a_long_token(amqp_url: str) -> None:
    env = {**os.environ, "AMQP_URL": amqp_url}
    env.pop("SPECTASK_DASHBOARD_TOKEN", None)
    done = spectask(env, "dashboard", "--host", "0.0.0.0", "--port", "1")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]  # one line, no traceback
    assert "SPECTASK_DASHBOARD_TOKEN" in done.stderr
    short = spectask({**env, "SPECTASK_DASHBOARD_TOKEN": "abc"}, "dashboard", "--host", "0.0.0.0")
    assert short.returncode == 1 and "shorter than 16" in short.stderr


async def test_the_token_guards_page_api_and_metrics(amqp_url: str, tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/tasks.db"
    dashboard = DashboardProcess(amqp_url, store, tmp_path, host="0.0.0.0", token=TOKEN)
    try:
        await asyncio.to_thread(dashboard.wait_ready)
        anonymous = DashboardProcess.__new__(DashboardProcess)
        anonymous.port, anonymous.token = dashboard.port, None
        for path in ("/", "/api/summary", "/metrics", "/api/tasks", "/static/app.js"):
            status, body = anonymous.get(path)
            assert status == 401, (path, body)
        wrong = anonymous.get("/api/summary", headers={"Authorization": "Bearer " + "y" * 30})
        assert wrong[0] == 401
        assert dashboard.get("/api/summary")[0] == 200
        assert dashboard.get("/metrics")[0] == 200
        # the page: /?token= once sets an HttpOnly cookie and drops the token from the URL
        connection = http.client.HTTPConnection("127.0.0.1", dashboard.port, timeout=10)
        connection.request("GET", f"/?token={TOKEN}")
        response = connection.getresponse()
        response.read()
        assert response.status == 303 and response.getheader("Location") == "/"
        cookie = response.getheader("Set-Cookie") or ""
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        connection.request("GET", "/", headers={"Cookie": cookie.split(";")[0]})
        page = connection.getresponse()
        assert page.status == 200 and b"spectask" in page.read()
        connection.close()
    finally:
        dashboard.stop()


def read_events(dashboard: DashboardProcess, count: int) -> list[dict[str, Any]]:
    """The first `count` snapshots of /api/live, as a browser's EventSource reads them."""
    connection = http.client.HTTPConnection("127.0.0.1", dashboard.port, timeout=20)
    connection.request("GET", "/api/live", headers={"Accept": "text/event-stream"})
    response = connection.getresponse()
    assert response.status == 200
    assert response.getheader("Content-Type", "").startswith("text/event-stream")
    events: list[dict[str, Any]] = []
    while len(events) < count:
        line = response.fp.readline().decode()
        if line.startswith("data: "):
            events.append(json.loads(line[6:]))
    connection.close()
    return events


async def test_work_shows_up_in_api_events_and_metrics(
    stack: DashboardProcess, amqp_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dashboard = stack
    monkeypatch.setenv("SPECTASK_HEARTBEAT_INTERVAL", "0.5")  # the worker below
    batch = f"web{uuid.uuid4().hex[:6]}"
    # the schema's errors come back before anything is published
    status, invalid = dashboard.post(
        "/api/submit", {"message_type": STATISTICS, "payload": {"values": "many"}}
    )
    assert status == 422 and invalid["errors"][0]["path"] == "values"
    assert dashboard.post("/api/submit", {"message_type": "no.such", "payload": {}})[0] == 404
    assert await queue_depth(amqp_url, "tasks.data_analysis") == 0
    ids = []
    for _ in range(3):
        status, done = dashboard.post(
            "/api/submit", {"message_type": STATISTICS, "payload": {"values": [1.0, 2.0]}}
        )
        assert status == 201, done
        ids.append(done["task_id"])
    # from the CLI too, as a batch
    env = {**os.environ, "AMQP_URL": amqp_url}
    produced = await asyncio.to_thread(
        spectask, env, "produce", "--types", STATISTICS, "--count", "2", "--batch", batch
    )
    assert produced.returncode == 0, produced.stderr
    queued = dashboard.wait_summary(
        lambda s: (
            s["counts"].get(STATISTICS, {}).get("queued", 0) >= 5
            and any(
                q["name"] == "tasks.data_analysis" and q["ready"] == 5
                for q in s["queues"]["queues"]
            )
        )
    )
    assert queued["queues"]["source"] == "passive"
    before = dashboard.get("/metrics")[1]
    assert metric(before, "spectask_tasks", task_type="data_analysis", state="queued") >= 5
    assert metric(before, "spectask_queue_messages", queue="tasks.data_analysis") == 5
    status, listed = dashboard.get(f"/api/tasks?batch={batch}")
    assert status == 200 and len(listed["tasks"]) == 2
    assert {t["state"] for t in listed["tasks"]} == {"queued"}
    # a queued task can be cancelled from the API; a worker then skips it
    status, cancelled = dashboard.post(f"/api/tasks/{ids[0]}/cancel")
    assert status == 200, cancelled
    worker = WorkerProcess("w-dash", amqp_url, types="data_analysis", log_dir=tmp_path)
    try:
        await asyncio.to_thread(wait_ready, worker)
        done = dashboard.wait_summary(
            lambda s: (
                s["counts"].get(STATISTICS, {}).get("succeeded", 0) >= 4
                and s["counts"][STATISTICS].get("cancelled", 0) == 1
                and any(w["worker_id"] == "w-dash" and w["processed"] >= 4 for w in s["workers"])
            )
        )
        assert any(b["finished"] for b in done["history"])  # the chart's data moved
        events = await asyncio.to_thread(read_events, dashboard, 2)
        assert events[1]["version"] > events[0]["version"]
        assert events[1]["counts"][STATISTICS]["succeeded"] >= 4
        status, task = dashboard.get(f"/api/tasks/{ids[1]}")
        assert status == 200 and task["state"] == "succeeded" and task["result"]
        # the timeline of its stored events: the broker's copy, the worker's, the result
        steps = [(step["event"], step["source"]) for step in task["timeline"]]
        assert steps[0] == ("queued", "copy"), steps
        assert ("started", "event") in steps and steps[-1] == ("succeeded", "result"), steps
        started = next(step for step in task["timeline"] if step["event"] == "started")
        assert started["worker_id"] == "w-dash" and started["attempt"] == 1
        # its payload, from the collector's copy, decoded and checked with its schema
        assert task["task_payload"]["payload"] == {"values": [1.0, 2.0]}
        assert task["task_payload"]["payload_valid"] is True
        status, skipped = dashboard.get(f"/api/tasks/{ids[0]}")
        assert [step["event"] for step in skipped["timeline"]][-1] == "cancelled"
        assert dashboard.post(f"/api/tasks/{ids[1]}/cancel")[0] == 409  # final: nothing to do
        assert dashboard.get("/api/tasks/no-such-task")[0] == 404
        after = dashboard.get("/metrics")[1]
        assert (
            metric(after, "spectask_tasks_total", task_type="data_analysis", state="succeeded") >= 4
        )
        assert metric(after, "spectask_workers", state="online") >= 1
        assert metric(after, "spectask_task_latency_seconds_count", task_type="data_analysis") >= 4
    finally:
        worker.stop()


async def test_dead_letters_replay_and_purge_through_the_api(
    stack: DashboardProcess, amqp_url: str, tmp_path: Path
) -> None:
    dashboard = stack
    good = f"dl-{uuid.uuid4().hex[:8]}"
    await publish_dead_letter(amqp_url, good, json.dumps({"values": [3.0]}).encode())
    await publish_dead_letter(amqp_url, "broken-1", b"\xff not json", reason="undecodable")
    status, letters = await asyncio.to_thread(dashboard.get, "/api/dead-letters")
    assert status == 200 and letters["total"] == 2
    assert sorted(letters["by_reason"]) == ["exception", "undecodable"]
    assert letters["by_reason"]["exception"][0]["payload"] == {"values": [3.0]}
    assert letters["by_reason"]["exception"][0]["payload_valid"] is True
    assert "not JSON" in letters["by_reason"]["undecodable"][0]["body_preview"]
    assert dashboard.post("/api/dead-letters/replay", {"task_ids": [good]})[0] == 400  # no confirm
    assert dashboard.post("/api/dead-letters/purge", {"expected": 1})[0] == 400
    status, refused = dashboard.post(
        "/api/dead-letters/purge", {"reason": "undecodable", "expected": 5, "confirm": True}
    )
    assert status == 409 and "nothing was deleted" in refused["detail"]
    assert await queue_depth(amqp_url, "dead_letter") == 2
    status, unknown = dashboard.post(
        "/api/dead-letters/replay", {"task_ids": ["nope"], "confirm": True}
    )
    assert status == 409 and "nothing was replayed" in unknown["detail"]
    worker = WorkerProcess("w-dlq", amqp_url, types="data_analysis", log_dir=tmp_path)
    try:
        await asyncio.to_thread(wait_ready, worker)
        status, replayed = dashboard.post(
            "/api/dead-letters/replay", {"task_ids": [good], "confirm": True}
        )
        assert status == 200 and replayed == {"replayed": [good], "failed": []}
        deadline = time.monotonic() + 30
        while (task := dashboard.get(f"/api/tasks/{good}"))[1].get("state") != "succeeded":
            assert time.monotonic() < deadline, task
            await asyncio.sleep(0.2)
    finally:
        worker.stop()
    status, purged = dashboard.post(
        "/api/dead-letters/purge", {"reason": "undecodable", "expected": 1, "confirm": True}
    )
    assert status == 200 and purged == {"deleted": 1}
    assert await queue_depth(amqp_url, "dead_letter") == 0


async def publish_raw_to(
    url: str, exchange: str, routing_key: str, messages: list[tuple[bytes, dict[str, Any]]]
) -> None:
    import aio_pika

    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        target = await channel.get_exchange(exchange)
        for body, properties in messages:
            await target.publish(aio_pika.Message(body, **properties), routing_key=routing_key)


async def publish_dead_letter(
    url: str, task_id: str, body: bytes, *, reason: str = "exception"
) -> None:
    """A dead letter of a data_analysis.statistics task, as a worker would have sent it."""
    headers = {
        REASON_HEADER: reason,
        ORIGIN_QUEUE_HEADER: "tasks.data_analysis",
        ORIGIN_EXCHANGE_HEADER: "tasks",
        ORIGIN_ROUTING_KEY_HEADER: STATISTICS,
    }
    properties = {"message_id": task_id, "type": STATISTICS, "headers": headers}
    await publish_raw_to(url, "dead_letter", "dead", [(body, properties)])
