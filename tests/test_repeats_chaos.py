"""Issue 9 item 11 on a real broker killed -9: e-mails (sideEffects policy) are each delivered
once, while PDF tasks (no policy) repeat finished work, as the README's guarantees say.

A throwaway RabbitMQ node of its own (the session's broker is shared), a real collector and two
real worker processes, a real SMTP server (the mailsink). The broker is killed -9 once half of
the tasks are final in the store, then started again; the run ends when every task is final.
Duplicate executions of PDF tasks are counted from a durable tap of the results exchange (one
result per execution); they show the fault did repeat finished work, so the e-mail count of
exactly one each is the mechanism's doing, not luck.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import pytest

from generated import models
from generated.producer import ProducerClient
from spectask.devbroker.node import LocalNode
from spectask.protocol.names import FINAL_STATES
from spectask.runtime.broker import Broker
from spectask.runtime.config import RuntimeConfig
from spectask.store import open_store
from tests.brokers import require_rabbitmq_installed, throwaway_node
from workloads.mailsink import MailSink, free_port

pytestmark = pytest.mark.timeout(400)
ROOT = Path(__file__).resolve().parents[1]
EMAILS = PDFS = 120
TAP = "test.results-tap"


@pytest.fixture
def node() -> Iterator[LocalNode]:
    require_rabbitmq_installed()
    yield from throwaway_node("spectask-repeats")


def spawn(script: str, *args: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, str(ROOT / script), *args], env=env, stderr=out, stdout=out
        )


async def submit(url: str) -> tuple[list[str], list[str]]:
    """Declare a durable tap of every result, then submit the e-mails and the PDFs (confirmed)."""
    broker = await Broker.connect(RuntimeConfig(amqp_url=url), name="test-chaos-producer")
    async with broker:
        client = await ProducerClient.open(broker)
        channel = await broker.connection.channel()
        tap = await channel.declare_queue(TAP, durable=True)
        await tap.bind("results", "#")
        emails = [
            client.prepare_submit_report_email(
                models.ReportEmail(title=f"r{i}", series=[1.0, 2.0], to=["ops@example.test"])
            )
            for i in range(EMAILS)
        ]
        pdfs = [
            client.prepare_submit_report_pdf(models.ReportPdf(title=f"p{i}", series=[1.0, 2.0]))
            for i in range(PDFS)
        ]
        await client.submit_many([m for pair in zip(emails, pdfs, strict=True) for m in pair])
    return [m.message_id for m in emails], [m.message_id for m in pdfs]


async def final_count(store_url: str, ids: list[str]) -> int:
    store = await open_store(store_url)
    try:
        records = await store.get_many(ids)
    finally:
        await store.close()
    return sum(1 for record in records.values() if record.state in FINAL_STATES)


async def wait_final(store_url: str, ids: list[str], at_least: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while (done := await final_count(store_url, ids)) < at_least:
        assert time.monotonic() < deadline, f"only {done} of {len(ids)} tasks final"
        await asyncio.sleep(0.2)
    return done


async def results_per_task(url: str) -> Counter[str]:
    """Drain the tap: how many results (executions) each task id had."""
    seen: Counter[str] = Counter()
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        tap = await channel.declare_queue(TAP, durable=True)
        while (message := await tap.get(no_ack=True, fail=False)) is not None:
            seen[models.TaskResult.model_validate_json(message.body).task_id] += 1
    return seen


async def test_broker_kill_repeats_pdfs_but_no_email(node: LocalNode, tmp_path: Path) -> None:
    sink = MailSink(free_port())
    sink.start()
    store_url = f"sqlite:///{tmp_path / 'tasks.db'}"
    env = {
        **os.environ,
        "AMQP_URL": node.url,
        "STORE_URL": store_url,
        "SPECTASK_SMTP_HOST": "127.0.0.1",
        "SPECTASK_SMTP_PORT": str(sink.port),
        "SPECTASK_MAIL_ALLOWED_DOMAINS": "example.test",
        "SPECTASK_OUTPUT_DIR": str(tmp_path / "out"),
    }
    emails, pdfs = await submit(node.url)
    every = emails + pdfs
    logs = [tmp_path / name for name in ("collector.log", "w1.log", "w2.log")]
    processes = [spawn("main-collector.py", "--quiet", env=env, log=logs[0])]
    processes += [
        spawn("main-worker.py", f"w{i}", "--types", "report_generation", env=env, log=logs[i])
        for i in (1, 2)
    ]
    try:
        before = await wait_final(store_url, every, len(every) // 2, timeout=180)
        node.kill()
        node.start(timeout=120)
        await wait_final(store_url, every, len(every), timeout=180)
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(timeout=60)
        sink.stop()
    results = await results_per_task(node.url)
    sent = Counter(message["message_id"] for message in sink.messages)
    # one result per execution: more than one means finished work ran again
    email_reruns = sum(results[task_id] - 1 for task_id in emails)
    pdf_reruns = sum(results[task_id] - 1 for task_id in pdfs)
    interrupted = sum(sent.values()) - len(sent)
    skipped = sum(log.read_text().count("not run again") for log in logs)
    print(
        f"\nbroker kill -9 with {before} of {len(every)} tasks final: finished PDFs run again "
        f"{pdf_reruns} (no policy), finished e-mails run again {email_reruns} (sideEffects; "
        f"{skipped} redeliveries skipped); {sum(sent.values())} SMTP sends for {EMAILS} "
        f"e-mails, {interrupted} repeats of attempts the kill interrupted, same Message-ID"
    )
    assert email_reruns == 0, "a finished e-mail ran again"
    # PDFs declare no sideEffects: a finished one may run again after the kill (counted above)
    assert all(results[task_id] >= 1 for task_id in every), "a task has no result"
    # every e-mail reached the inbox under its own Message-ID, so a receiver that drops a
    # Message-ID it has seen holds each one exactly once
    assert set(sent) == {f"<{task_id}@localhost>" for task_id in emails}
    # sent twice only if the kill cut the attempt between its SMTP send and its result: at
    # most the attempts running at that moment (two workers, SPECTASK_CONCURRENCY each)
    assert interrupted <= 2 * RuntimeConfig().concurrency
