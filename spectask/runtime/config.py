"""Runtime settings, read from the environment so no credentials live in code.

`AMQP_URL` is the broker; everything else is prefixed `SPECTASK_` (for example
`SPECTASK_PREFETCH=64`). Defaults suit one worker process on a small machine.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from spectask.runtime.topology import Naming


class RuntimeConfig(BaseSettings):
    """How a spectask process talks to RabbitMQ and how much work it takes on."""

    model_config = SettingsConfigDict(
        env_prefix="SPECTASK_", extra="forbid", frozen=True, populate_by_name=True
    )

    amqp_url: str = Field(
        default="amqp://localhost:5672/",
        validation_alias=AliasChoices("AMQP_URL", "SPECTASK_AMQP_URL"),
        description="Broker URL; credentials belong here (guest only works on localhost).",
    )
    prefetch: int = Field(
        default=32, ge=1, le=65535, description="Unacked deliveries per consumer."
    )
    concurrency: int = Field(default=4, ge=1, le=1024, description="Handlers running at once.")
    heartbeat: int = Field(default=30, ge=0, le=3600, description="AMQP heartbeat (seconds).")
    connect_timeout: float = Field(default=10.0, gt=0, description="Seconds to reach the broker.")
    shutdown_timeout: float = Field(
        default=30.0,
        ge=0,
        description="Seconds in-flight tasks get to finish on SIGTERM; the process exits "
        "within this plus spectask.runtime.shutdown.CLOSE_GRACE_SECONDS, broker up or not.",
    )
    max_message_bytes: int = Field(
        default=16 * 1024 * 1024, ge=1, description="Larger task bodies are dead-lettered."
    )
    queue_type: Literal["classic", "quorum"] = Field(
        default="classic",
        description="Type of the spec's task queues (those whose arguments name an x-queue-type): "
        "quorum replicates them across a cluster; priorities on quorum queues need RabbitMQ 4.0.",
    )
    topology: Literal["declare", "check"] = Field(
        default="declare",
        description="declare: every process declares the spec's exchanges, queues and bindings "
        "(needs configure permission); check: it only checks passively that they exist and "
        "fails naming what is missing (run `spectask topology apply` first).",
    )
    name_prefix: str = Field(
        default="",
        max_length=64,
        pattern=r"^[A-Za-z0-9_.:-]*$",
        description="Put before the name of every exchange and queue spectask declares or uses "
        "(e.g. `shop.`), so two applications can share a vhost; every process of one "
        "application needs the same prefix.",
    )
    confirm_timeout: float = Field(
        default=60.0,
        gt=0,
        description="Seconds a publish waits for the broker's confirm before it fails as "
        "not stored (a quorum queue without a majority of its nodes confirms nothing).",
    )
    status_timeout: float = Field(
        default=15.0,
        gt=0,
        description="Seconds one status call of `produce --wait` (ProducerClient.wait) waits "
        "for a collector's reply before it fails saying none answered; a collector busy with a "
        "backlog, or a broker stopping, answers late rather than never.",
    )
    quorum_without_priorities: bool = Field(
        default=False,
        description="With SPECTASK_QUEUE_TYPE=quorum on RabbitMQ < 4.0: declare the task queues "
        "without x-max-priority (priorities are then ignored, with a warning) instead of refusing "
        "to start; replication over priorities, chosen explicitly.",
    )
    started_after: float = Field(
        default=0.2,
        ge=0,
        description="Send a task's `started` event once it has run this long (0: at once); "
        "shorter tasks go from QUEUED straight to their result, saving a publish each.",
    )
    heartbeat_interval: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="Seconds between a worker's WorkerHeartbeats (one publish per worker, "
        "never per task); watchers count a worker lost after three missed ones.",
    )
    management_url: str | None = Field(
        default=None,
        description="RabbitMQ management HTTP API (http://user:pass@host:15672) for queue "
        "rates and unacked counts; unset: tried at AMQP_URL's host on port 15672 with its "
        "credentials, else queue views use passive declarations (ready and consumers only).",
    )
    metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Serve this worker's Prometheus /metrics on this port (off when unset; "
        "127.0.0.1 unless SPECTASK_METRICS_HOST says otherwise).",
    )
    metrics_host: str = Field(default="127.0.0.1", description="Address of /metrics.")
    progress_interval: float = Field(
        default=0.5,
        ge=0,
        description="At most one progress event per task per this many seconds (reports in "
        "between are dropped; the final result supersedes them anyway).",
    )
    cancel_sync_timeout: float = Field(
        default=30.0,
        gt=0,
        description="How long a starting worker may take to read the cancellation stream "
        "before it takes tasks (it then starts anyway, with a warning).",
    )
    event_loop: Literal["auto", "uvloop", "asyncio"] = Field(
        default="auto",
        description="The event loop of spectask's commands: auto takes uvloop where it is "
        "installed (Linux and macOS; about a quarter less worker CPU per task) and asyncio "
        "elsewhere; asyncio opts out.",
    )
    log_tasks: bool = Field(
        default=True,
        description="One INFO line per task a worker finishes (id, type, attempt, duration, "
        "outcome); retries and failures are logged either way.",
    )
    result_batch_size: int = Field(
        default=64,
        ge=1,
        le=10000,
        description="Result mode batched: a ResultBatch is flushed once it holds this many "
        "results (keep it at most SPECTASK_PREFETCH, or the timer flushes every batch).",
    )
    result_batch_ms: float = Field(
        default=5.0,
        gt=0,
        le=60000,
        description="Result mode batched: a ResultBatch is flushed at the latest this many "
        "milliseconds after its first result.",
    )
    spec_docs_dir: str = Field(
        default="out/spec-docs",
        description="Where `make docs` writes the spec's HTML documentation and the dashboard "
        "serves it from (/docs/spec/), relative to the working directory.",
    )
    isolation: Literal["process", "thread"] = Field(
        default="process",
        description="Where sync handlers run: a pool of processes (a time limit stops the "
        "handler, a crash fails only the task) or threads (cheaper; a time limit only stops "
        "waiting). Async handlers always run on the event loop.",
    )

    @property
    def naming(self) -> Naming:
        """The spec's names as this deployment's broker holds them (`name_prefix`)."""
        return Naming(self.name_prefix)
