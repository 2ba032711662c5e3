"""Third-party log records stay one line: a lost broker connection is no traceback."""

from __future__ import annotations

import subprocess
import sys


def test_a_third_party_traceback_becomes_one_line() -> None:
    """aiormq logged "Cancelling cause reader exited abnormally" with two chained tracebacks
    when the broker died under a producer (found by tests/test_chaos.py). aiormq is silenced
    now; any other library's record (asyncio's here) still gets folded into one line."""
    script = """
import logging
from spectask.logs import configure_logging
configure_logging()
try:
    try:
        raise ConnectionResetError(104, "Connection reset by peer")
    except ConnectionResetError as exc:
        raise RuntimeError("Server connection reset") from exc
except RuntimeError:
    logging.getLogger("asyncio").warning("Cancelling cause reader", exc_info=True)
    logging.getLogger("spectask.worker").error("ours", exc_info=True)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True
    )
    first, *rest = done.stderr.splitlines()
    assert first.endswith(
        "WARNING asyncio: Cancelling cause reader (RuntimeError: Server connection reset)"
    ), done.stderr
    assert "ERROR spectask.worker: ours" in rest[0]
    assert rest[1] == "Traceback (most recent call last):"  # ours keep theirs: a bug of ours
