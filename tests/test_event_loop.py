"""Which event loop `spectask ...` runs on: uvloop by default, asyncio on request (issue 13)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(120)


def status_run(amqp_url: str, loop: str | None) -> subprocess.CompletedProcess[str]:
    """A short `spectask -v status` (no collector needs to answer: the loop is named first)."""
    env = {k: v for k, v in os.environ.items() if k != "SPECTASK_EVENT_LOOP"}
    if loop is not None:
        env["SPECTASK_EVENT_LOOP"] = loop
    return subprocess.run(
        [sys.executable, "-m", "spectask.cli", "-v", "status", "no-such-task", "--timeout", "0.5"],
        cwd=ROOT,
        env={**env, "AMQP_URL": amqp_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_commands_run_on_uvloop_by_default(amqp_url: str) -> None:
    done = status_run(amqp_url, None)
    assert "spectask.eventloop: event loop: uvloop" in done.stderr, done.stderr


def test_asyncio_on_request(amqp_url: str) -> None:
    done = status_run(amqp_url, "asyncio")
    assert "spectask.eventloop: event loop: asyncio" in done.stderr, done.stderr


def test_an_unknown_loop_is_one_line_naming_the_variable(amqp_url: str) -> None:
    done = status_run(amqp_url, "trio")
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "error: SPECTASK_EVENT_LOOP='trio': Input should be 'auto', 'uvloop' or 'asyncio'"
    )
