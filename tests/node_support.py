"""The node programs under tools/ that the suite runs (the official AsyncAPI tooling, the
TypeScript client): found, or skipped with the make target to run, and failed under CI=true,
where a skip would hide a broken setup."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.brokers import in_ci

TOOLS = Path(__file__).resolve().parent.parent / "tools"


def require(installed: Path, make_target: str) -> None:
    """Skip (fail under CI) unless node and `installed` (what the target makes) are there."""
    if shutil.which("node") is None or not installed.exists():
        reason = f"{installed.relative_to(TOOLS.parent)} is missing (make {make_target})"
        if in_ci():
            pytest.fail(f"{reason} (CI=true: it must not be skipped)", pytrace=False)
        pytest.skip(reason)


def node(
    script: Path, *args: object, timeout: float = 300, wrapper: Sequence[str] = ()
) -> subprocess.CompletedProcess[str]:
    """Run `[WRAPPER...] node SCRIPT ARGS...`, its output as text, whatever its exit code."""
    command = [*wrapper, shutil.which("node") or "node", str(script), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
