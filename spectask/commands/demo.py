"""`spectask demo`: a collector and three workers as real processes, a mixed batch, a summary.

The batch uses every operation of all three task types, plus urgent tasks submitted after the
backlog, a poison task that is dead-lettered, and e-mail reports whose SMTP server starts only
once the first e-mail attempt has failed, so the retry path runs for real. Everything it
starts, it stops; it exits 0 when every task ended as expected.
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
from datetime import datetime
from pathlib import Path
from typing import Any

from generated.topology import TOPOLOGY
from spectask.commands.mailsink import MailSink, free_port
from spectask.commands.summary import percentile
from spectask.dlq import list_dead_letters
from spectask.runtime.broker import Broker
from spectask.runtime.config import RuntimeConfig
from spectask.samples import SAMPLES

WORKERS = ("worker1", "worker2", "worker3")
STOP_SECONDS = 30.0
URGENT = 5
RETRY_WAIT_SECONDS = 60.0
DEAD_LETTER_QUEUE = "dead_letter"
# A base64 string that decodes to bytes which are not an image: a permanent failure.
POISON = {"image": {"data_base64": "bm90IGFuIGltYWdlIGF0IGFsbA=="}, "format": "PNG"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--count", type=int, default=90, help="mixed tasks (default 90)")
    parser.add_argument("--types", default=",".join(SAMPLES), help="task types in the mix")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for results")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "spectask.cli", *args]


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


def _produce(env: dict[str, str], *args: str) -> None:
    done = subprocess.run(_cli("produce", *args), env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"demo: the producer failed ({done.returncode}); stopping")


async def _wait_for_a_retry(deadline: float) -> bool:
    """True once a task waits in a retry tier (a queue with a TTL that dead-letters back)."""
    tiers = [
        queue.name
        for queue in TOPOLOGY.queues
        if {"x-message-ttl", "x-dead-letter-exchange"} <= queue.arguments_dict().keys()
    ]
    async with await Broker.connect(RuntimeConfig(), name="spectask-demo") as broker:
        # The raw channel: a robust channel answers repeated passive declares from its cache.
        channel = await (await broker.connection.channel()).get_underlay_channel()
        while time.monotonic() < deadline:
            for name in tiers:
                declared = await channel.queue_declare(name, passive=True)
                if declared.message_count:
                    return True
            await asyncio.sleep(0.1)
    return False


async def _dead_letters(task_ids: list[str]) -> list[str]:
    async with await Broker.connect(RuntimeConfig(), name="spectask-demo") as broker:
        views = await list_dead_letters(broker, DEAD_LETTER_QUEUE, task_ids=task_ids)
    return [
        f"{view.task_id} {view.message_type}: {view.reason}: {view.error_line}" for view in views
    ]


def _report(results_file: Path, batch: str, sink: MailSink, dead: list[str]) -> None:
    results = [json.loads(line) for line in results_file.read_text().splitlines() if line]
    mine = [r for r in results if r["task_id"].startswith(f"{batch}-")]

    def latency(result: dict[str, Any]) -> float:
        start = result.get("submitted_at")
        return (_ts(result["finished_at"]) - _ts(start)) * 1000 if start else float("nan")

    urgent = sorted(latency(r) for r in mine if r["task_id"].startswith(f"{batch}-urgent-"))
    normal = sorted(latency(r) for r in mine if r["task_id"].startswith(f"{batch}-0"))
    retried = [r for r in mine if r["attempt"] > 1 and r["status"] == "succeeded"]
    print()
    if urgent and normal:
        print(
            f"urgent tasks (submitted after the backlog): p50 {percentile(urgent, 50):.0f} ms "
            f"vs backlog p50 {percentile(normal, 50):.0f} ms"
        )
    print(
        f"retried: {len(retried)} tasks succeeded after more than one attempt "
        f"(up to attempt {max((r['attempt'] for r in retried), default=1)})"
    )
    with_pdf = sum(
        1 for m in sink.messages if any(str(a).endswith(".pdf") for a in m["attachments"])
    )
    print(
        f"e-mails received by the local SMTP server: {len(sink.messages)} ({with_pdf} with a PDF)"
    )
    print(f"dead-lettered: {len(dead)}")
    for line in dead:
        print(f"  {line}")


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


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
    }
    results_file = Path(tempfile.mkdtemp(prefix="spectask-demo-")) / "results.jsonl"
    print(f"demo: batch {batch}: collector + {len(WORKERS)} workers, {total} tasks", flush=True)
    collector = subprocess.Popen(
        _cli(
            "collect",
            "--expect",
            str(total),
            "--batch",
            batch,
            "--timeout",
            str(args.timeout),
            "--quiet",
            "--output",
            str(results_file),
            "--expected-failures",
            "1",
        ),
        env=env,
    )
    workers = [subprocess.Popen(_cli("worker", name), env=env) for name in WORKERS]
    try:
        _produce(env, "--count", str(args.count), "--types", args.types, "--batch", batch)
        _produce(
            env,
            "--count",
            str(URGENT),
            "--types",
            "data_analysis.statistics",
            "--priority",
            "urgent",
            "--batch",
            f"{batch}-urgent",
        )
        _produce(
            env,
            "--task",
            "image_processing.convert",
            "--params",
            json.dumps(POISON),
            "--batch",
            f"{batch}-poison",
        )
        if "report_generation.email" in args.types or "report_generation" in args.types:
            retried = asyncio.run(_wait_for_a_retry(time.monotonic() + RETRY_WAIT_SECONDS))
            print(
                "demo: "
                + ("an e-mail attempt failed and waits for retry; " if retried else "")
                + f"starting the SMTP server on 127.0.0.1:{smtp_port}",
                flush=True,
            )
        sink.start()
        code = collector.wait(timeout=args.timeout + STOP_SECONDS)
        dead = asyncio.run(_dead_letters([f"{batch}-poison-000000"]))
    finally:
        _stop([*workers, collector])
        sink.stop()
    _report(results_file, batch, sink, dead)
    ok = code == 0 and len(dead) == 1
    print(f"demo: {'done' if ok else f'collector exited {code}, {len(dead)} dead letters'}")
    return 0 if ok else 1
