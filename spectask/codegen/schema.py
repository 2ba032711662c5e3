"""All `components.schemas` as one JSON Schema document (`$defs`) for the model generator.

Schema names become class names, so a `$ref` to another schema stays a `$ref` (`#/$defs/Name`),
whichever file it was written in; a `$ref` to anything else is inlined.
"""

from __future__ import annotations

import json
import keyword
import re
from typing import Any

from spectask.codegen.diagnostics import Diagnostics
from spectask.codegen.load import SpecSet
from spectask.codegen.nodes import Node

_CLASS_NAME = re.compile(r"^[A-Z][A-Za-z0-9_]*$")


def schema_name(node: Node) -> str | None:
    """`Name` if `node` is the definition `components.schemas.Name`, else None."""
    if len(node.path) == 3 and node.path[:2] == ("components", "schemas"):
        return str(node.path[2])
    return None


class _Converter:
    """Copies schemas, rewriting `$ref`s; guards against inlining a node into itself."""

    def __init__(self, spec: SpecSet, d: Diagnostics) -> None:
        self._spec = spec
        self._d = d
        self._inlining: list[tuple[str, tuple[str | int, ...]]] = []

    def convert(self, node: Node) -> Any:
        if node.ref is not None:
            return self._reference(node)
        if isinstance(node.value, dict):
            return {key: self.convert(child) for key, child in node.items()}
        if isinstance(node.value, list):
            return [self.convert(child) for child in node.elements()]
        return node.value

    def _reference(self, node: Node) -> Any:
        target = self._spec.resolve(node)
        if target is None:
            return {}  # the broken $ref is reported by load.check_refs
        name = schema_name(target)
        if name is not None:
            return {"$ref": f"#/$defs/{name}"}
        where = (target.file, target.path)
        if where in self._inlining:
            self._d.error(
                node,
                "recursive $ref to a schema that is not in components.schemas",
                "move the recursive part to components.schemas and $ref it there",
            )
            return {}
        self._inlining.append(where)
        try:
            return self.convert(target)
        finally:
            self._inlining.pop()


def collect_schemas(spec: SpecSet, d: Diagnostics, *, skip: str | None = None) -> str:
    """The `{"$defs": ...}` JSON text of every schema defined in any document but `skip`.

    The protocol document is skipped for an application: its models ship with spectask
    (`spectask.protocol.models`), and the generated models module re-exports them.
    """
    defs: dict[str, Any] = {}
    defined_in: dict[str, str] = {}
    converter = _Converter(spec, d)
    for name in sorted(spec.documents):
        if name == skip:
            continue
        schemas = spec.get(spec.get(spec.documents[name].root, "components"), "schemas")
        for key, child in schemas.items() if schemas is not None else ():
            if child.ref is not None:
                continue  # a re-export of a schema defined elsewhere
            if not _CLASS_NAME.match(key) or keyword.iskeyword(key):
                d.error(
                    child,
                    f"schema name {key!r} is not a class name",
                    "it becomes a Python class; use CamelCase, e.g. ImageResize",
                )
            elif key in defs:
                d.error(
                    child,
                    f"schema {key!r} is also defined in {defined_in[key]}",
                    "schema names are class names and must be unique; rename one",
                )
            else:
                defs[key] = converter.convert(child)
                defined_in[key] = name
    return json.dumps({"$defs": defs}, indent=1, ensure_ascii=False, default=str)
