"""`make demo`: a collector and three workers as real processes, a mixed batch, a summary.

The batch uses every operation of all three task types, plus urgent tasks submitted after the
backlog, a poison task that is dead-lettered, and e-mail reports whose SMTP server starts only
once the first e-mail attempt has failed, so the retry path runs for real.

The demo keeps the ids it submitted (`spectask produce --ids-file`), waits until every one is
final by asking the status operation (`ProducerClient.wait`, answered by the collector from its
task store), and builds its summary from those status views: tasks by type and final state with
latency percentiles, tasks per worker, urgent vs backlog latency, retried tasks, the e-mails the
local SMTP server received and the dead-lettered task with its reason. Everything it starts, it
stops; it exits 0 only when every task but the poison one succeeded, the poison one is DEAD
with reason `permanent`, and all of them were final within --timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from generated import models
from generated.producer import ProducerClient
from generated.topology import TOPOLOGY
from spectask import eventloop
from spectask.commands.summary import percentile
from spectask.commands.waiting import render_final
from spectask.errors import RpcTimeoutError, SpectaskError
from spectask.logs import configure_logging
from spectask.runtime.broker import Broker
from spectask.runtime.config import RuntimeConfig
from spectask.runtime.waiting import WaitTimeoutError
from workloads.app import APP_NAME
from workloads.mailsink import MailSink, free_port
from workloads.samples import SAMPLES

WORKERS = ("worker1", "worker2", "worker3")
STOP_SECONDS = 30.0
URGENT = 5
RETRY_WAIT_SECONDS = 60.0
POISON_REASON = "permanent"
# A path outside the workers' image input directory: refused unread, a permanent failure.
POISON = {"image": {"path": "/etc/passwd"}, "format": "PNG"}

View = models.TaskStatusView


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--count", type=int, default=90, help="mixed tasks (default 90)")
    parser.add_argument("--types", default=",".join(SAMPLES), help="task types in the mix")
    parser.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="seconds to wait for every task to be final (default 300)",
    )


@dataclass(frozen=True)
class Submitted:
    """The ids the demo submitted, by group."""

    backlog: list[str]
    urgent: list[str]
    poison: str

    @property
    def all(self) -> list[str]:
        return [*self.backlog, *self.urgent, self.poison]


@dataclass(frozen=True)
class Outcome:
    """What the status operation said: final views (in submission order) and pending ids."""

    views: dict[str, View]
    pending: list[str]


def _cli(command: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "spectask.cli", command, "--app", APP_NAME, *args]


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_SECONDS
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _produce(env: dict[str, str], ids_file: Path, expected: int, *args: str) -> list[str]:
    """Run `spectask produce ... --ids-file`; the ids it submitted (all confirmed)."""
    done = subprocess.run(
        _cli("produce", *args, "--ids-file", str(ids_file)),
        env=env,
        stdout=subprocess.DEVNULL,  # a single task's id; the demo reads the ids file instead
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"demo: the producer failed ({done.returncode}); stopping")
    ids = [line for line in ids_file.read_text().splitlines() if line]
    if len(ids) != expected:
        raise SystemExit(f"demo: the producer reported {len(ids)} task ids, not {expected}")
    return ids


async def _wait_for_a_retry(deadline: float) -> bool:
    """True once a task waits in a retry tier (a queue with a TTL that dead-letters back)."""
    async with await Broker.connect(RuntimeConfig(), name="spectask-demo") as broker:
        tiers = [
            queue.name
            for queue in broker.naming.topology(TOPOLOGY).queues  # SPECTASK_NAME_PREFIX
            if {"x-message-ttl", "x-dead-letter-exchange"} <= queue.arguments_dict().keys()
        ]
        # The raw channel: a robust channel answers repeated passive declares from its cache.
        channel = await (await broker.connection.channel()).get_underlay_channel()
        while time.monotonic() < deadline:
            for name in tiers:
                declared = await channel.queue_declare(name, passive=True)
                if declared.message_count:
                    return True
            await asyncio.sleep(0.1)
    return False


async def _wait_until_final(task_ids: Sequence[str], timeout: float) -> Outcome:
    """Every task's final status view, from the status operation (the collector's store).

    A final state is final: a task that failed for good is DEAD from the first of its dead
    letter and its failed result (which names the dead reason) that the collector stores.
    """
    async with await Broker.connect(RuntimeConfig(), name="spectask-demo") as broker:
        client = await ProducerClient.open(broker)
        pending: list[str] = []
        try:
            views = await client.wait(task_ids, timeout)
        except WaitTimeoutError as exc:
            views, pending = dict(exc.final), list(exc.pending)
    return Outcome(views={i: views[i] for i in task_ids if i in views}, pending=pending)


def _latencies_ms(views: Iterable[View]) -> list[float]:
    return sorted(
        (view.finished_at - view.submitted_at).total_seconds() * 1000
        for view in views
        if view.finished_at is not None and view.submitted_at is not None
    )


def _error_line(view: View) -> str:
    if view.error is None:
        return "-"
    if view.error.type == view.dead_reason:  # a dead letter's error: the reason, then the error
        return view.error.message
    return f"{view.error.type}: {view.error.message}"


def _report(outcome: Outcome, submitted: Submitted, sink: MailSink) -> None:
    """The summary, from the status views alone (plus what the SMTP server received)."""
    views = outcome.views
    print()
    shown = f"{len(views)} of {len(views) + len(outcome.pending)}" if outcome.pending else ""
    print(f"summary from the task store (status RPC, {shown or len(views)} tasks)")
    print(render_final(list(views.values())))
    workers = Counter(view.worker_id or "?" for view in views.values())
    names = [*WORKERS, *sorted(set(workers) - set(WORKERS))]
    print(
        "tasks per worker (the last to run each): " + "  ".join(f"{n} {workers[n]}" for n in names)
    )
    urgent = _latencies_ms(views[i] for i in submitted.urgent if i in views)
    backlog = _latencies_ms(views[i] for i in submitted.backlog if i in views)
    if urgent and backlog:
        print(
            f"urgent tasks (submitted after the backlog): p50 {percentile(urgent, 50):.0f} ms "
            f"vs backlog p50 {percentile(backlog, 50):.0f} ms"
        )
    retried = [
        view
        for view in views.values()
        if view.state is models.TaskState.SUCCEEDED and (view.attempts or 1) > 1
    ]
    print(
        f"retried: {len(retried)} tasks succeeded after more than one attempt "
        f"(up to attempt {max((view.attempts or 1 for view in retried), default=1)})"
    )
    with_pdf = sum(
        1 for m in sink.messages if any(str(a).endswith(".pdf") for a in m["attachments"])
    )
    print(
        f"e-mails received by the local SMTP server: {len(sink.messages)} ({with_pdf} with a PDF)"
    )
    dead = [view for view in views.values() if view.state is models.TaskState.DEAD]
    print(f"dead-lettered: {len(dead)}")
    for view in dead:
        print(f"  {view.task_id} {view.message_type}: {view.dead_reason}: {_error_line(view)}")


def _problems(outcome: Outcome, submitted: Submitted, timeout: float) -> list[str]:
    """Why the demo did not end as expected (nothing when it did)."""
    problems: list[str] = []
    if outcome.pending:
        problems.append(
            f"{len(outcome.pending)} tasks not final after {timeout:g}s: "
            f"{_some(outcome.pending)} (`spectask status ID` shows where one is)"
        )
    unsuccessful = [
        f"{i} {view.state.value}"
        for i in [*submitted.backlog, *submitted.urgent]
        if (view := outcome.views.get(i)) is not None
        and view.state is not models.TaskState.SUCCEEDED
    ]
    if unsuccessful:
        problems.append(f"{len(unsuccessful)} tasks did not succeed: {_some(unsuccessful)}")
    poison = outcome.views.get(submitted.poison)
    if poison is not None and (
        poison.state is not models.TaskState.DEAD or poison.dead_reason != POISON_REASON
    ):
        problems.append(
            f"the poison task {poison.task_id} ended {poison.state.value} "
            f"(reason {poison.dead_reason or '-'}), expected DEAD ({POISON_REASON})"
        )
    return problems


def _some(items: Sequence[str], shown: int = 5) -> str:
    more = len(items) - shown
    return ", ".join(items[:shown]) + (f" and {more} more" if more > 0 else "")


def run(args: argparse.Namespace) -> int:
    batch = f"demo{os.getpid()}x{int(time.time())}"
    total = args.count + URGENT + 1
    smtp_port = free_port()
    sink = MailSink(smtp_port)
    env = {
        **os.environ,
        "SPECTASK_PREFETCH": os.environ.get("SPECTASK_PREFETCH", "2"),
        "SPECTASK_SMTP_HOST": "127.0.0.1",
        "SPECTASK_SMTP_PORT": str(smtp_port),
        "SPECTASK_MAIL_ALLOWED_DOMAINS": "example.test",  # the samples' recipients
    }
    print(f"demo: batch {batch}: collector + {len(WORKERS)} workers, {total} tasks", flush=True)
    # A long-lived collector: it stores results, task copies, events and dead letters, and
    # answers the status operation until stopped. Its own results table (stdout) is not the
    # demo's summary; --batch/--expected-failures only keep it from complaining on exit that
    # the poison task failed.
    collector = subprocess.Popen(
        _cli("collect", "--quiet", "--batch", batch, "--expected-failures", "1"),
        env=env,
        stdout=subprocess.DEVNULL,
    )
    workers = [subprocess.Popen(_cli("worker", name), env=env) for name in WORKERS]
    try:
        with tempfile.TemporaryDirectory(prefix="spectask-demo-") as scratch:
            ids = Path(scratch)
            backlog = _produce(
                env,
                ids / "backlog",
                args.count,
                *("--count", str(args.count), "--types", args.types, "--batch", batch),
            )
            urgent = _produce(
                env,
                ids / "urgent",
                URGENT,
                *("--count", str(URGENT), "--types", "data_analysis.statistics"),
                *("--priority", "urgent", "--batch", f"{batch}-urgent"),
            )
            (poison,) = _produce(
                env,
                ids / "poison",
                1,
                *("--task", "image_processing.convert", "--params", json.dumps(POISON)),
                *("--batch", f"{batch}-poison"),
            )
        submitted = Submitted(backlog=backlog, urgent=urgent, poison=poison)
        if "report_generation.email" in args.types or "report_generation" in args.types:
            retried = eventloop.run(_wait_for_a_retry(time.monotonic() + RETRY_WAIT_SECONDS))
            print(
                "demo: "
                + ("an e-mail attempt failed and waits for retry; " if retried else "")
                + f"starting the SMTP server on 127.0.0.1:{smtp_port}",
                flush=True,
            )
        sink.start()
        print(
            f"demo: waiting until all {len(submitted.all)} tasks are final "
            f"(status RPC, up to {args.timeout:g}s)",
            flush=True,
        )
        try:
            outcome = eventloop.run(_wait_until_final(submitted.all, args.timeout))
        except RpcTimeoutError as exc:
            code = collector.poll()
            why = "it is running" if code is None else f"it exited {code}"
            print(f"demo: no collector answered the status operation ({exc}); {why}")
            return 1
    finally:
        _stop([*workers, collector])
        sink.stop()
    _report(outcome, submitted, sink)
    problems = _problems(outcome, submitted, args.timeout)
    for problem in problems:
        print(f"demo: {problem}")
    if problems:
        return 1
    print("demo: done")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m workloads.demo`: the demo as a command of its own (the application's, not
    the framework's)."""
    parser = argparse.ArgumentParser(prog="demo", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    configure_logging()
    try:
        return run(args)
    except SpectaskError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
