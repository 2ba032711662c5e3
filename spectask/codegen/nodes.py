"""A value from a spec document together with the place it was written.

Every check reports at a node's file and JSON path, so errors point at what a person edits,
even when the value was reached through `$ref`s from another document.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from spectask.codegen.diagnostics import JsonPath


@dataclass(frozen=True)
class Node:
    """A value in a spec document and where it was written (after following any `$ref`)."""

    value: Any
    file: str
    path: JsonPath

    def child(self, key: str | int) -> Node | None:
        """The raw child at `key` (a `$ref` in it is not followed), or None if absent."""
        if isinstance(self.value, dict) and isinstance(key, str) and key in self.value:
            return Node(self.value[key], self.file, (*self.path, key))
        if isinstance(self.value, list) and isinstance(key, int) and 0 <= key < len(self.value):
            return Node(self.value[key], self.file, (*self.path, key))
        return None

    def items(self) -> Iterator[tuple[str, Node]]:
        """The raw children of a mapping, in document order."""
        if isinstance(self.value, dict):
            for key in self.value:
                yield str(key), Node(self.value[key], self.file, (*self.path, key))

    def elements(self) -> Iterator[Node]:
        """The raw children of a list, in order."""
        if isinstance(self.value, list):
            for index, value in enumerate(self.value):
                yield Node(value, self.file, (*self.path, index))

    @property
    def ref(self) -> str | None:
        """The `$ref` this node holds, if it is a reference object."""
        if isinstance(self.value, dict):
            ref = self.value.get("$ref")
            return ref if isinstance(ref, str) else None
        return None
