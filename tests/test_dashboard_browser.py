"""The dashboard in real headless Chromium (Debian's), against a real broker, store and workers.

Playwright drives the system's chromium (`executable_path`); without it the test is skipped,
and under CI=true it fails, since a skip there would hide a broken setup (`make test` installs
chromium as root on Debian: tools/ensure-chromium.sh).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.brokers import in_ci
from tests.cli_support import spectask
from tests.dashboard_support import DashboardProcess
from tests.test_collectors_compete import CollectorProcess
from tests.test_dashboard_http import STATISTICS, publish_dead_letter
from tests.workqueue_support import WorkerProcess, queue_depth, reset_topology, wait_ready

pytestmark = pytest.mark.timeout(300)
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "dashboard.png"
WAIT_MS = 30_000


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        reason = "Debian's chromium is not installed (apt-get install chromium; make browser)"
        if in_ci():
            pytest.fail(f"{reason} (CI=true: the browser test must not be skipped)", pytrace=False)
        pytest.skip(reason)
    return path


@pytest.fixture
async def browser_page() -> AsyncIterator[tuple[object, list[str]]]:
    from playwright.async_api import async_playwright

    executable = chromium()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox"]
        )
        page = await browser.new_page(viewport={"width": 1400, "height": 1000})
        problems: list[str] = []
        page.on(
            "console",
            lambda message: problems.append(message.text) if message.type == "error" else None,
        )
        page.on("pageerror", lambda error: problems.append(str(error)))
        try:
            yield page, problems
        finally:
            await browser.close()


async def test_the_dashboard_in_chromium(
    browser_page: tuple[object, list[str]],
    amqp_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from playwright.async_api import Page, expect

    page, problems = browser_page
    assert isinstance(page, Page)
    expect.set_options(timeout=WAIT_MS)
    monkeypatch.setenv("SPECTASK_HEARTBEAT_INTERVAL", "0.5")  # the worker below
    store_url = f"sqlite:///{tmp_path}/tasks.db"
    await reset_topology(amqp_url)
    collector = CollectorProcess("collector", amqp_url, store_url, tmp_path)
    dashboard = DashboardProcess(amqp_url, store_url, tmp_path)
    worker: WorkerProcess | None = None
    try:
        await collector.wait_ready()
        await asyncio.to_thread(dashboard.wait_ready)
        await page.goto(dashboard.url + "/")
        await expect(page.locator("#live-status")).to_have_text("live")

        # the form: the schema's errors first, nothing published; then a valid task
        await page.goto(dashboard.url + "/#submit")
        await page.select_option("#submit-operation", STATISTICS)
        await page.fill("#field-values", "one, two")
        await page.click("#submit-button")
        await expect(page.locator("#submit-invalid")).to_be_visible()
        await expect(page.locator("#error-values")).to_contain_text("number")
        assert await queue_depth(amqp_url, "tasks.data_analysis") == 0
        await page.fill("#field-values", "1, 2, 3")
        await page.click("#submit-button")
        submitted = page.locator("#submitted a")
        await expect(submitted).to_be_visible()
        form_task = (await submitted.text_content() or "").strip()
        # and from the command line
        env = {**os.environ, "AMQP_URL": amqp_url}
        produced = await asyncio.to_thread(
            spectask, env, "produce", "--types", STATISTICS, "--count", "2", "--batch", "cli"
        )
        assert produced.returncode == 0, produced.stderr

        # counts and queue depths change on the overview, live
        await page.goto(dashboard.url + "/#overview")
        queued = page.locator(f'#counts tr[data-type="{STATISTICS}"] td.state-queued')
        await expect(queued).to_have_text("3")
        ready = page.locator('#queues tr[data-queue="tasks.data_analysis"] td:nth-child(3)')
        await expect(ready).to_have_text("3")
        await expect(page.locator("#queue-source")).to_have_text("source: passive")

        # cancel a queued task from its page
        await page.goto(dashboard.url + "/#tasks")
        await page.fill("#task-filters input[name=batch]", "cli")
        await page.click("#task-filters button[type=submit]")
        rows = page.locator("#task-list tr[data-task]")
        await expect(rows).to_have_count(2)
        doomed = await rows.first.get_attribute("data-task")
        assert doomed is not None
        await rows.first.click()
        await expect(page.locator("#task-state")).to_have_text("queued")
        await page.click("#cancel-task")
        await expect(page.locator("#task-message")).to_have_text("cancellation requested")

        worker = WorkerProcess("w-web", amqp_url, types="data_analysis", log_dir=tmp_path)
        await asyncio.to_thread(wait_ready, worker)
        await page.goto(dashboard.url + f"/#task/{doomed}")
        await expect(page.locator("#task-state")).to_have_text("cancelled")

        # the form's task ran: its page shows the timeline and the result
        await page.goto(dashboard.url + f"/#task/{form_task}")
        await expect(page.locator("#task-state")).to_have_text("succeeded")
        await expect(page.locator('#task-timeline li[data-event="succeeded"]')).to_be_visible()
        await expect(page.locator('#task-timeline li[data-event="queued"]')).to_be_visible()
        await expect(page.locator('#task-timeline li[data-event="started"]')).to_contain_text(
            "on w-web"
        )
        # its payload, from the stored copy, decoded and checked against its schema
        await expect(page.locator("#task-payload-check")).to_contain_text("valid")
        await expect(page.locator("#task-payload")).to_contain_text('"values"')

        # the overview: succeeded counts, the worker online, the throughput chart has data
        await page.goto(dashboard.url + "/#overview")
        succeeded = page.locator(f'#counts tr[data-type="{STATISTICS}"] td.state-succeeded')
        await expect(succeeded).to_have_text("2")
        worker_state = page.locator('#workers tr[data-worker="w-web"] td:nth-child(2)')
        await expect(worker_state).to_have_text("online")
        line = page.locator('#chart-throughput polyline[data-series="per_second"]')
        await expect(line).to_have_count(1)

        # replay a dead letter from the page and see it succeed
        good = f"dl-{uuid.uuid4().hex[:8]}"
        await publish_dead_letter(amqp_url, good, json.dumps({"values": [4.0]}).encode())
        await page.goto(dashboard.url + "/#dlq")
        await page.click("#dlq-refresh")
        await page.click(f'#dlq-groups tr[data-task="{good}"] .replay-one')
        await expect(page.locator("#confirm")).to_be_visible()
        await page.click("#confirm-yes")
        await expect(page.locator("#dlq-message")).to_have_text("replayed 1")
        await page.goto(dashboard.url + f"/#task/{good}")
        await expect(page.locator("#task-state")).to_have_text("succeeded")

        # the topology diagram, drawn from the spec
        await page.goto(dashboard.url + "/#topology")
        await expect(page.locator('#topology-svg rect[data-queue="dead_letter"]')).to_have_count(1)
        await expect(page.locator('#topology-svg rect[data-exchange="tasks"]')).to_have_count(1)

        # a killed worker shows as lost
        await page.goto(dashboard.url + "/#overview")
        worker.kill9()
        await expect(worker_state).to_have_text("lost")
        await page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
        if os.environ.get("SPECTASK_UPDATE_SCREENSHOT"):  # the README's picture, on request only:
            await page.screenshot(
                path=str(SCREENSHOT), full_page=True
            )  # a test run leaves git clean
        assert problems == []
    finally:
        if worker is not None:
            worker.stop()
        dashboard.stop()
        collector.stop()
