"""`make test-fast` (`pytest -m memory`) skips importing modules that hold no memory test
(root conftest.py, pytest_ignore_collect). This checks the shortcut selects the same tests as a
full collection would, so a memory test in a module the rule skips cannot go unnoticed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import FULL_COLLECTION

ROOT = Path(__file__).resolve().parent.parent


def collected(*, full: bool) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != FULL_COLLECTION}
    if full:
        env[FULL_COLLECTION] = "1"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "memory", "--collect-only", "-q"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return sorted(line for line in done.stdout.splitlines() if "::" in line)


def test_memory_tier_collection_is_complete() -> None:
    shortcut, full = collected(full=False), collected(full=True)
    assert full, "no memory tests at all?"
    assert shortcut == full
