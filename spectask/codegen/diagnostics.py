"""Spec errors as values: where (file + JSON path), what, and how to fix it.

The generator collects every problem before it stops, so one run shows the whole list instead of
one error per attempt; nothing under `generated/` is touched while any error remains.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from spectask.errors import SpectaskError

JsonPath = tuple[str | int, ...]

_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_$-]+$")


def format_json_path(path: JsonPath) -> str:
    """`$.operations.processX.channel`; odd keys in brackets, list indexes as `[0]`."""
    parts = ["$"]
    for key in path:
        if isinstance(key, int):
            parts.append(f"[{key}]")
        elif _PLAIN_KEY.match(key):
            parts.append(f".{key}")
        else:
            parts.append(f"[{key!r}]")
    return "".join(parts)


class Located(Protocol):
    """Anything that knows the document and JSON path it was written at."""

    @property
    def file(self) -> str: ...

    @property
    def path(self) -> JsonPath: ...


@dataclass(frozen=True, order=True)
class SpecError:
    """One problem in the spec; `file` is the path as the user knows it (`spec/worker...`)."""

    file: str
    json_path: str
    message: str
    hint: str

    def __str__(self) -> str:
        return f"{self.file}: {self.json_path}: {self.message}\n  hint: {self.hint}"


class SpecInvalidError(SpectaskError):
    """The spec has errors; `errors` holds every one of them."""

    def __init__(self, errors: Sequence[SpecError]) -> None:
        self.errors = tuple(errors)
        super().__init__("\n".join(str(error) for error in self.errors))


class Diagnostics:
    """Collects errors while the spec is read; the first error reported at a location wins.

    Checks that know more (an operation's channel) run before generic ones (a dangling `$ref`),
    so each location gets the most specific message once.
    """

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._errors: dict[tuple[str, str], SpecError] = {}

    def display(self, file: str) -> str:
        """The file as the user passed it in: `spec/worker.asyncapi.yaml`."""
        return str(self._directory / file)

    def at(self, file: str, path: JsonPath, message: str, hint: str) -> None:
        """Record an error at `file` and `path`."""
        error = SpecError(self.display(file), format_json_path(path), message, hint)
        self._errors.setdefault((error.file, error.json_path), error)

    def error(self, where: Located, message: str, hint: str) -> None:
        """Record an error at a node (or anything else that knows where it came from)."""
        self.at(where.file, where.path, message, hint)

    def extend(self, errors: Sequence[SpecError]) -> None:
        """Add errors found elsewhere (unless a location already has a more specific one)."""
        for error in errors:
            self._errors.setdefault((error.file, error.json_path), error)

    @property
    def errors(self) -> list[SpecError]:
        """All errors, sorted by file and JSON path so the output is stable."""
        return sorted(self._errors.values())
