"""Reading a spec directory: the YAML documents and the `$ref`s that join them.

`$ref`s are followed lazily and every `Node` remembers the document and JSON path it was written
at, so an error can always point at the line a person has to change. A document with
`operations` is a service document; one without is a library document (`common`). The
document with `x-spectask-protocol` at its root is spectask's own protocol: a library whose
operations go to the services of their roles (see `roles`).
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from spectask.codegen.diagnostics import Diagnostics, JsonPath
from spectask.codegen.nodes import Node

SPEC_GLOB = "*.asyncapi.yaml"
PROTOCOL_KEY = "x-spectask-protocol"


@dataclass(frozen=True)
class Document:
    """One spec file: its name in the spec directory, its bytes and its parsed content."""

    name: str
    raw: bytes
    data: dict[str, Any]

    @property
    def is_protocol(self) -> bool:
        return PROTOCOL_KEY in self.data

    @property
    def is_service(self) -> bool:
        return "operations" in self.data and not self.is_protocol

    @property
    def root(self) -> Node:
        return Node(self.data, self.name, ())


class RefError(Exception):
    """A `$ref` that cannot be followed; the message says why (caught by `check_refs`)."""

    def __init__(self, message: str, hint: str, *, cycle: bool = False) -> None:
        super().__init__(message)
        self.hint = hint
        self.cycle = cycle


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


@dataclass(frozen=True)
class SpecSet:
    """All documents of a spec directory, keyed by file name, and the way between them."""

    directory: Path
    documents: dict[str, Document]
    # files that could not be read (reported by `load`; nothing else is checked then)
    broken: frozenset[str] = frozenset()

    @property
    def protocol(self) -> Document | None:
        """The protocol document, if the spec has one."""
        return next((doc for _, doc in sorted(self.documents.items()) if doc.is_protocol), None)

    @property
    def services(self) -> list[Document]:
        return [doc for name, doc in sorted(self.documents.items()) if doc.is_service]

    @property
    def libraries(self) -> list[Document]:
        return [doc for name, doc in sorted(self.documents.items()) if not doc.is_service]

    @property
    def sha256(self) -> str:
        """sha256 of all spec files' bytes in sorted name order (`cat spec/*.yaml | sha256sum`)."""
        digest = hashlib.sha256()
        for name in sorted(self.documents):
            digest.update(self.documents[name].raw)
        return digest.hexdigest()

    def target(self, node: Node, seen: frozenset[tuple[str, JsonPath]] = frozenset()) -> Node:
        """Where the `$ref` in `node` points; raises RefError if it points nowhere.

        `$ref`s met on the way are followed (`#/channels/x/messages/y` where channel `x` is
        itself a `$ref` into another file), as AsyncAPI tools do.
        """
        ref = node.ref
        assert ref is not None
        seen = seen | {(node.file, node.path)}
        file_part, _, pointer = ref.partition("#")
        file = node.file
        if file_part:
            file = posixpath.normpath(posixpath.join(posixpath.dirname(node.file), file_part))
            if file not in self.documents:
                raise RefError(
                    f"$ref {ref!r} points to a file that is not part of the spec",
                    f"only the {SPEC_GLOB} files of {self.directory} are read; "
                    f"known: {', '.join(sorted(self.documents))}",
                )
        if pointer and not pointer.startswith("/"):
            raise RefError(f"$ref {ref!r} has a malformed JSON pointer", "write '#/a/b/c'")
        current = self.documents[file].root
        for token in pointer.split("/")[1:] if pointer else []:
            try:
                current = self.deref(current, seen)
            except RefError as exc:
                raise RefError(
                    f"$ref {ref!r} leads through a $ref that cannot be followed ({exc})",
                    exc.hint,
                    cycle=exc.cycle,
                ) from None
            key = _unescape(token)
            is_index = isinstance(current.value, list) and key.isdigit()
            found = current.child(int(key) if is_index else key)
            if found is None:
                keys = [str(k) for k in current.value] if isinstance(current.value, dict) else []
                raise RefError(
                    f"$ref {ref!r} points to nothing: no {key!r} in {file}",
                    f"existing keys there: {', '.join(keys) or '(none)'}",
                )
            current = found
        return current

    def deref(self, node: Node, seen: frozenset[tuple[str, JsonPath]] = frozenset()) -> Node:
        """Follow `$ref`s until a value; raises RefError on a broken chain or a cycle."""
        while node.ref is not None:
            if (node.file, node.path) in seen:
                raise RefError(
                    f"$ref {node.ref!r} is part of a cycle of $refs that never reaches a value",
                    "make one $ref in the cycle point at the definition itself",
                    cycle=True,
                )
            seen = seen | {(node.file, node.path)}
            node = self.target(node, seen)
        return node

    def resolve(self, node: Node | None) -> Node | None:
        """Follow `$ref`s until a value; None if the chain breaks (`check_refs` reports it)."""
        try:
            return self.deref(node) if node is not None else None
        except RefError:
            return None

    def get(self, node: Node | None, key: str | int) -> Node | None:
        """The child at `key`, with its `$ref` followed."""
        return self.resolve(node.child(key)) if node is not None else None


def _walk(node: Node) -> Iterator[Node]:
    yield node
    for _, child in node.items():
        yield from _walk(child)
    for child in node.elements():
        yield from _walk(child)


def check_refs(spec: SpecSet, diagnostics: Diagnostics) -> None:
    """Report every `$ref` that points nowhere or into a cycle of `$ref`s."""
    for name in sorted(spec.documents):
        for node in _walk(spec.documents[name].root):
            if isinstance(node.value, dict) and "$ref" in node.value and node.ref is None:
                diagnostics.error(node, "$ref must be a string", "write $ref: '#/path/to/it'")
                continue
            if node.ref is None:
                continue
            try:
                spec.target(node)
            except RefError as exc:
                diagnostics.error(node, str(exc), exc.hint)  # its own $ref is broken
                continue
            try:
                spec.deref(node)
            except RefError as exc:
                if exc.cycle:  # a broken link further on is reported where it is written
                    diagnostics.error(node, str(exc), exc.hint)


def load(directory: Path, diagnostics: Diagnostics) -> SpecSet:
    """Read every `*.asyncapi.yaml` of `directory`; unreadable files are reported, not raised."""
    documents: dict[str, Document] = {}
    broken: set[str] = set()
    files = sorted(directory.glob(SPEC_GLOB)) if directory.is_dir() else []
    if not files:
        diagnostics.at(
            SPEC_GLOB, (), f"no {SPEC_GLOB} files in {directory}", "pass --spec DIR with the spec"
        )
    for path in files:
        raw = path.read_bytes()
        try:
            data = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            diagnostics.at(path.name, (), _yaml_problem(exc), _yaml_hint(exc))
            broken.add(path.name)
            continue
        if not isinstance(data, dict):
            diagnostics.at(
                path.name, (), "document is not a mapping", "start with `asyncapi: 3.1.0`"
            )
            broken.add(path.name)
            continue
        documents[path.name] = Document(path.name, raw, data)
    return SpecSet(directory, documents, frozenset(broken))


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """`not valid YAML at line 12, column 30: mapping values are not allowed here`."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is None:
        return f"not valid YAML: {problem}"
    return f"not valid YAML at line {mark.line + 1}, column {mark.column + 1}: {problem}"


def _yaml_hint(exc: yaml.YAMLError) -> str:
    problem = str(getattr(exc, "problem", "") or "")
    if "mapping values are not allowed" in problem:
        return "quote a value that contains ': ' (write description: 'a: b')"
    return "fix the YAML syntax there"
