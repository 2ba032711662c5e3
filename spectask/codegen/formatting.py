"""Formatting generated sources with ruff, the same way wherever the output goes.

ruff runs with `--isolated` and explicit settings (those of this project's pyproject), so the
bytes do not depend on which configuration file happens to sit above the output directory.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from spectask.errors import SpectaskError

LINE_LENGTH = 100
NOQA_LONG_LINES = (
    "# ruff: noqa: E501 - text from the spec (descriptions, patterns) stays on one line"
)
_SETTINGS = ["--isolated", "--line-length", str(LINE_LENGTH), "--target-version", "py311"]
_ISORT = [
    "--config",
    "lint.isort.known-first-party = ['spectask']",
    "--config",
    "lint.isort.combine-as-imports = true",
]


def _ruff(*args: str) -> None:
    command = [sys.executable, "-m", "ruff", *args]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SpectaskError(
            f"ruff failed on the generated code ({' '.join(args[:2])}):\n{done.stdout}{done.stderr}"
            "\nthis is a bug in a spectask template; please report it with the spec"
        )


def format_sources(files: Mapping[str, str]) -> dict[str, bytes]:
    """Sort imports (`ruff check --select I --fix`) and `ruff format` every file."""
    with tempfile.TemporaryDirectory(prefix="spectask-format-") as scratch:
        paths = []
        for name, source in files.items():
            path = Path(scratch) / name
            path.write_text(source, encoding="utf-8")
            paths.append(str(path))
        _ruff("check", "--fix", "--select", "I", *_SETTINGS, *_ISORT, *paths)
        _ruff("format", *_SETTINGS, *paths)
        return {
            name: _allow_spec_text((Path(scratch) / name).read_bytes()) for name in sorted(files)
        }


def _allow_spec_text(source: bytes) -> bytes:
    """Exempt a file from E501 only if it has lines ruff cannot shorten.

    Those are string literals from the spec (descriptions, patterns) that ruff will not split;
    the exemption goes after the two header lines, and only where needed (RUF100 flags others).
    """
    lines = source.decode().split("\n")
    if all(len(line) <= LINE_LENGTH for line in lines):
        return source
    return "\n".join([*lines[:2], NOQA_LONG_LINES, *lines[2:]]).encode()
