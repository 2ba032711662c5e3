"""The dashboard's ASGI app: the page, its JSON API (OpenAPI at /docs), SSE and /metrics.

Everything the page shows has an API route; the page itself is static files of this package
(no CDN) that read the API. Replay and purge call `spectask.dlq`, the code `spectask dlq`
runs, so the page and the command line cannot drift apart.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field, ValidationError

from spectask import dlq
from spectask.app import Application
from spectask.collector import status_view
from spectask.commands.cancel import _requester as requester
from spectask.dashboard.auth import token_middleware
from spectask.dashboard.history import History
from spectask.dashboard.live import Live
from spectask.dashboard.metrics import DashboardMetrics
from spectask.dashboard.topology import topology_json
from spectask.errors import SpectaskError
from spectask.protocol import models
from spectask.protocol.names import FINAL_STATES
from spectask.runtime.broker import Broker
from spectask.runtime.config import RuntimeConfig
from spectask.runtime.producer import TaskPublisher
from spectask.runtime.topology import SendRoute
from spectask.store import TaskStore, open_store
from spectask.store.batches import list_tasks
from spectask.store.events import StoredEvent
from spectask.store.states import STORED_STATES

STATIC = resources.files("spectask.dashboard") / "static"
PAGE_LIMIT = 500
DLQ_LIMIT = 1000
STATES = {state.value.lower(): state for state in STORED_STATES}


@dataclass(frozen=True)
class DashboardSettings:
    """Where the dashboard reads from; `token` None means loopback only (see auth)."""

    app: Application
    dead_letter_queue: str
    store_url: str | None = None
    token: str | None = None
    runtime: RuntimeConfig | None = None


class Services:
    """What the routes share: one broker connection, one store, the live snapshot."""

    def __init__(self, settings: DashboardSettings) -> None:
        self.settings = settings
        self.metrics = DashboardMetrics()
        self.broker: Broker
        self.store: TaskStore
        self.live: Live
        self.publisher: TaskPublisher
        app = settings.app
        self.task_routes: dict[str, SendRoute] = {
            route.message_type: route
            for route in app.module("producer").SEND_ROUTES
            if route.task_type in app.policies
        }
        self.cancel_route: SendRoute = next(
            route
            for route in app.module("producer").SEND_ROUTES
            if route.model is models.TaskCancel
        )

    async def start(self) -> None:
        config = self.settings.runtime or RuntimeConfig()
        self.broker = await Broker.connect(config, name="spectask-dashboard")
        try:
            await self.broker.declare(self.settings.app.topology)  # the stream, the queues
            self.store = await open_store(self.settings.store_url)
            self.live = Live(
                self.broker, self.store, self.settings.app.topology, History(self.metrics.observe)
            )
            self.metrics.watch(self.live)
            self.publisher = TaskPublisher(
                await self.broker.publisher(), self.settings.app.topology
            )
            await self.live.start()
        except BaseException:
            await self.broker.close()
            raise

    async def close(self) -> None:
        await self.live.close()
        await self.store.close()
        await self.broker.close()


class SubmitRequest(BaseModel):
    message_type: str = Field(description="`<task_type>.<operation>`, see /api/operations")
    payload: dict[str, Any]
    priority: str | None = None


class ReplayRequest(BaseModel):
    task_ids: list[str] = Field(default_factory=list, max_length=DLQ_LIMIT)
    reason: str | None = None
    all: bool = False
    confirm: bool = Field(False, description="must be true: the page asks first")


class PurgeRequest(BaseModel):
    reason: str | None = None
    expected: int = Field(ge=1, description="how many the user saw and agreed to delete")
    confirm: bool = False


def _mount_spec_docs(api: FastAPI, folder: Path) -> None:
    """The spec's HTML documentation at /docs/spec/ (README: The spec as HTML), if `make docs`
    wrote it; otherwise that address says how to get it instead of a bare 404."""
    if (folder / "index.html").is_file():
        api.mount("/docs/spec", StaticFiles(directory=str(folder), html=True), name="spec-docs")
        return

    @api.get("/docs/spec", include_in_schema=False)
    @api.get("/docs/spec/", include_in_schema=False)
    async def no_spec_docs() -> Response:
        return PlainTextResponse(
            f"no spec documentation in {folder}: run `make docs` there", status_code=404
        )


def _record_json(record: Any) -> dict[str, Any]:
    view = status_view(record.task_id, record).model_dump(mode="json", exclude_none=True)
    view["state"] = view["state"].lower()
    return view


def _timeline(record: Any, stored: list[StoredEvent]) -> list[dict[str, Any]]:
    """The task's stored events in order; rebuilt from its record's times when it has none
    (a task stored before events were kept, or whose events the retention deleted)."""
    if stored:
        return [event.to_json() for event in stored]
    return _timeline_from_times(record)


def _timeline_from_times(record: Any) -> list[dict[str, Any]]:
    """What the record's times say of a task's life, in order."""
    steps: list[dict[str, Any]] = []
    if record.submitted_at:
        steps.append({"event": "queued", "at": record.submitted_at.isoformat()})
    if record.started_at:
        steps.append(
            {"event": "started", "at": record.started_at.isoformat(), "attempt": record.attempts}
        )
    if record.attempts > 1 and record.error is not None and not record.is_final:
        steps.append(
            {
                "event": "retrying",
                "attempt": record.attempts - 1,
                "error": f"{record.error.type}: {record.error.message}",
            }
        )
    if record.progress is not None and not record.is_final:
        steps.append(
            {"event": "progress", "progress": record.progress, "message": record.progress_message}
        )
    if record.is_final:
        final = {
            "event": record.state.value.lower(),
            "at": (record.finished_at or record.state_at or record.updated_at).isoformat(),
        }
        if record.error is not None:
            final["error"] = f"{record.error.type}: {record.error.message}"
        steps.append(final)
    return steps


def _errors(exc: ValidationError) -> list[dict[str, str]]:
    return [
        {
            "path": ".".join(str(part) for part in error["loc"]) or "(payload)",
            "message": error["msg"],
        }
        for error in exc.errors()
    ]


def create_app(settings: DashboardSettings) -> FastAPI:
    services = Services(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await services.start()
        try:
            yield
        finally:
            await services.close()

    api = FastAPI(
        title="spectask dashboard",
        description="Everything the dashboard page shows, as JSON.",
        lifespan=lifespan,
    )
    if settings.token:
        api.middleware("http")(token_middleware(settings.token))
    api.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    _mount_spec_docs(api, Path((settings.runtime or RuntimeConfig()).spec_docs_dir))

    @api.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(str(STATIC / "index.html"), media_type="text/html")

    @api.get("/api/summary", summary="The live snapshot: counts, queues, workers, charts")
    async def summary() -> dict[str, Any]:
        return services.live.snapshot.to_json()

    @api.get("/api/live", summary="The snapshot as server-sent events, about once a second")
    async def live(request: Request) -> StreamingResponse:
        async def stream() -> AsyncIterator[str]:
            version = -1
            while not await request.is_disconnected():
                snapshot = await services.live.wait_newer(version)
                version = snapshot.version
                yield f"id: {version}\nevent: snapshot\ndata: {json.dumps(snapshot.to_json())}\n\n"

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @api.get("/api/tasks", summary="Recent tasks, newest first, filtered and paged")
    async def tasks(
        state: str | None = None,
        message_type: str | None = Query(None, alias="type"),
        batch: str | None = None,
        q: str | None = Query(None, description="task id, or the start of one"),
        limit: int = Query(50, ge=1, le=PAGE_LIMIT),
        offset: int = Query(0, ge=0),
    ) -> dict[str, Any]:
        if state is not None and state not in STATES:
            raise HTTPException(422, f"unknown state {state!r}; one of {', '.join(STATES)}")
        records = await list_tasks(
            services.store,
            state=STATES[state] if state else None,
            message_type=message_type or None,
            batch=batch,
            id_prefix=q,
            limit=limit,
            offset=offset,
        )
        return {"tasks": [_record_json(r) for r in records], "limit": limit, "offset": offset}

    @api.get("/api/tasks/{task_id}", summary="One task: record, timeline, dead letter if any")
    async def task(task_id: str) -> dict[str, Any]:
        record = await services.store.get(task_id)
        if record is None:
            raise HTTPException(404, f"no task {task_id!r} in the store")
        document = _record_json(record)
        stored = await services.store.events(task_id)
        document["timeline"] = _timeline(record, stored)
        copy = next((event for event in reversed(stored) if event.payload is not None), None)
        if copy is not None and copy.payload is not None:
            document["task_payload"] = _payload_json(
                copy.payload, copy.payload_truncated, record.message_type, services
            )
        if record.dead_reason is not None:
            found = await dlq.list_dead_letters(
                services.broker, settings.dead_letter_queue, task_ids=[task_id], limit=1
            )
            if found:
                document["dead_letter"] = _dead_letter_json(found[0], services)
        return document

    @api.post("/api/tasks/{task_id}/cancel", summary="Cancel a queued, retrying or running task")
    async def cancel(task_id: str) -> dict[str, Any]:
        record = await services.store.get(task_id)
        if record is None:
            raise HTTPException(404, f"no task {task_id!r} in the store")
        if record.state in FINAL_STATES:
            raise HTTPException(409, f"{task_id} is already {record.state.value.lower()}")
        payload = models.TaskCancel(
            task_ids=[task_id],
            requested_at=datetime.now(UTC),
            requested_by=f"dashboard {requester()}",
            reason="cancelled from the dashboard",
        )
        await services.publisher.submit(services.cancel_route, payload)
        return {"cancelled": task_id}

    @api.get("/api/dead-letters", summary="The dead-letter queue, decoded, grouped by reason")
    async def dead_letters() -> dict[str, Any]:
        views = await dlq.list_dead_letters(
            services.broker, settings.dead_letter_queue, limit=DLQ_LIMIT
        )
        groups: dict[str, list[dict[str, Any]]] = {}
        for view in views:
            groups.setdefault(view.reason, []).append(_dead_letter_json(view, services))
        return {
            "queue": settings.dead_letter_queue,
            "total": len(views),
            "truncated": len(views) >= DLQ_LIMIT,
            "by_reason": {reason: groups[reason] for reason in sorted(groups)},
        }

    @api.post("/api/dead-letters/replay", summary="Replay dead letters (one, by reason, all)")
    async def replay(body: ReplayRequest) -> dict[str, Any]:
        if not body.confirm:
            raise HTTPException(400, "replaying needs confirm: true (the page asks first)")
        try:
            report = await dlq.replay(
                services.broker,
                settings.dead_letter_queue,
                task_ids=body.task_ids,
                reason=body.reason,
                replay_all=body.all,
            )
        except SpectaskError as exc:
            raise HTTPException(409, str(exc)) from None
        return {
            "replayed": [view.task_id for view in report.replayed],
            "failed": [{"task_id": view.task_id, "error": why} for view, why in report.failed],
        }

    @api.post("/api/dead-letters/purge", summary="Delete dead letters (of one reason)")
    async def purge(body: PurgeRequest) -> dict[str, Any]:
        if not body.confirm:
            raise HTTPException(400, "purging needs confirm: true (the page asks first)")

        async def same_count(count: int) -> bool:
            return count == body.expected  # new ones arrived: the user did not see those

        deleted = await dlq.purge(
            services.broker, settings.dead_letter_queue, reason=body.reason, confirm=same_count
        )
        if deleted == 0:
            raise HTTPException(
                409, "the dead letters changed since the page showed them; nothing was deleted"
            )
        return {"deleted": deleted}

    @api.get("/api/topology", summary="Exchanges, queues, bindings, retry tiers of the spec")
    async def topology() -> dict[str, Any]:
        naming = (settings.runtime or RuntimeConfig()).naming  # the names on this broker
        return topology_json(naming.topology(settings.app.topology))

    @api.get("/api/operations", summary="Each task operation with its payload's JSON Schema")
    async def operations() -> list[dict[str, Any]]:
        return [
            {
                "message_type": message_type,
                "operation": route.operation,
                "task_type": route.task_type,
                "schema": route.model.model_json_schema(),
            }
            for message_type, route in sorted(services.task_routes.items())
        ]

    @api.post("/api/submit", summary="Validate a payload against its schema, then publish it")
    async def submit(body: SubmitRequest) -> JSONResponse:
        route = services.task_routes.get(body.message_type)
        if route is None:
            raise HTTPException(404, f"no task operation {body.message_type!r}")
        try:
            payload = route.model.model_validate(body.payload)
        except ValidationError as exc:
            return JSONResponse(
                {"detail": "the payload does not match its schema", "errors": _errors(exc)},
                status_code=422,
            )
        try:
            task_id = await services.publisher.submit(route, payload, priority=body.priority)
        except (KeyError, SpectaskError) as exc:
            raise HTTPException(422, str(exc).strip("'\"")) from None
        return JSONResponse({"task_id": task_id}, status_code=201)

    @api.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response(generate_latest(services.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    api.state.services = services
    return api


def _dead_letter_json(view: dlq.DeadLetterView, services: Services) -> dict[str, Any]:
    document = view.summary()
    document["traceback"] = view.traceback
    document["headers"] = dlq.plain_headers(view)
    try:
        payload: Any = json.loads(view.body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        document["body_preview"] = dlq.body_preview(view.body)
        return document
    document["payload"] = payload
    document.update(_checked(payload, view.message_type, services))
    return document


def _payload_json(
    text: str, truncated: bool, message_type: str | None, services: Services
) -> dict[str, Any]:
    """A stored payload decoded and checked against its operation's schema; a truncated one
    (over spectask.store.events.PAYLOAD_LIMIT) is not JSON any more: shown as its text."""
    if truncated:
        return {"truncated": True, "preview": text}
    try:
        payload: Any = json.loads(text)
    except json.JSONDecodeError:
        return {"truncated": False, "preview": text}
    return {"truncated": False, "payload": payload, **_checked(payload, message_type, services)}


def _checked(payload: Any, message_type: str | None, services: Services) -> dict[str, Any]:
    """Whether `payload` passes its operation's schema, with the schema's errors if not."""
    route = services.task_routes.get(message_type or "")
    if route is None:
        return {}
    try:
        route.model.model_validate(payload)
    except ValidationError as exc:
        return {"payload_valid": False, "payload_errors": _errors(exc)}
    return {"payload_valid": True, "schema": route.model.__name__}
