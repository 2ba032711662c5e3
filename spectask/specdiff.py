"""Which changes between two spec directories break existing producers or consumers.

The rule behind every verdict: a change that lets fewer values through (a new required field, a
removed enum value, a narrowed type, a tightened bound) breaks producers written against the old
spec, whose messages the new one may refuse; a change that lets more values through (a new enum
value, a wider type, a looser bound, a field no longer required) breaks consumers written against
the old spec, which may now receive what they do not handle. So a new enum value is compatible for
producers and breaking for consumers (an exhaustive `match` meets a value it does not know). An
added optional field breaks no one: unknown fields are ignored unless `additionalProperties` is
false in the old schema: then an old consumer refuses a message that sets it, which breaks
consumers. Removing or renaming a channel, message or operation, or changing an address or a
binding, breaks both sides; adding one breaks no one. Descriptions, titles, examples and spectask's
per-queue retry policy are not part of the wire contract and are ignored. Sides are always the
task message's: its result (`x-spectask-result`) is produced by the task's consumers, so a
tightened result schema breaks consumers (workers whose old handlers return what is now refused).

Both directories are read with the generator's loader (`spectask.codegen.load`), so cross-file
`$ref`s resolve exactly as `spectask generate` resolves them. Each channel, operation, message and
schema belongs to the document that defines it (an entry that is only a `$ref` into another file
belongs to that file), and a breaking change is allowed when that document's `info.version` major
went up.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spectask.codegen.diagnostics import Diagnostics
from spectask.codegen.load import RefError, SpecSet, check_refs, load
from spectask.codegen.nodes import Node
from spectask.errors import SpectaskError

PRODUCERS = "producers"
CONSUMERS = "consumers"
BOTH = "producers and consumers"

# what a reader is told, not what a validator checks
ANNOTATIONS = frozenset(
    {"description", "title", "summary", "examples", "example", "$comment", "default", "name"}
)
# bounds: a lower maximum or a higher minimum lets fewer values through
UPPER_BOUNDS = ("maxLength", "maximum", "exclusiveMaximum", "maxItems", "maxProperties")
LOWER_BOUNDS = ("minLength", "minimum", "exclusiveMinimum", "minItems", "minProperties")
SCHEMA_KEYWORDS = frozenset(
    {
        "type",
        "enum",
        "const",
        "required",
        "properties",
        "additionalProperties",
        "items",
        "pattern",
        "format",
        "uniqueItems",
        "oneOf",
        "anyOf",
        "allOf",
        *UPPER_BOUNDS,
        *LOWER_BOUNDS,
    }
)
# spectask's retry policy is the deployment's choice, not something a client must match
POLICY_KEY = "x-spectask-policy"
# a task message's result schema; its producers are the task's consumers and the other way round
RESULT_KEY = "x-spectask-result"
SWAPPED = {PRODUCERS: CONSUMERS, CONSUMERS: PRODUCERS}
SECTIONS = (
    ("channel", ("channels",)),
    ("operation", ("operations",)),
    ("message", ("components", "messages")),
    ("schema", ("components", "schemas")),
)


class SpecDiffError(SpectaskError):
    """A directory that cannot be compared (missing, no spec, invalid YAML, broken `$ref`)."""


@dataclass(frozen=True)
class Change:
    """One difference; `breaks` is who it breaks (None: compatible), `owner` its document."""

    subject: str
    detail: str
    breaks: str | None
    owner: str

    def line(self, allowed: bool = False) -> str:
        verdict = "compatible" if self.breaks is None else f"breaking for {self.breaks}"
        suffix = f" (allowed: {self.owner} major version bumped)" if allowed else ""
        return f"{verdict}: {self.subject}: {self.detail}{suffix}"


@dataclass(frozen=True)
class Report:
    """Every change, and the documents whose `info.version` major went up."""

    changes: tuple[Change, ...]
    bumped: frozenset[str]

    def allowed(self, change: Change) -> bool:
        return change.breaks is not None and change.owner in self.bumped

    @property
    def blocking(self) -> list[Change]:
        """Breaking changes that no major version bump allows."""
        return [c for c in self.changes if c.breaks is not None and not self.allowed(c)]

    def lines(self) -> list[str]:
        return [change.line(self.allowed(change)) for change in self.changes]


def read_spec(directory: Path) -> SpecSet:
    """Load a spec directory; a one-line SpecDiffError for anything that stops a comparison."""
    if not directory.is_dir():
        raise SpecDiffError(f"{directory}: not a directory (pass a spec directory such as spec)")
    diagnostics = Diagnostics(directory)
    spec = load(directory, diagnostics)
    if not diagnostics.errors:
        check_refs(spec, diagnostics)
    if diagnostics.errors:
        first = diagnostics.errors[0]
        more = len(diagnostics.errors) - 1
        tail = (
            f" (and {more} more; `spectask generate --spec {directory}` lists all)" if more else ""
        )
        raise SpecDiffError(f"{first.file}: {first.json_path}: {first.message}{tail}")
    return spec


def major(version: object) -> int | None:
    """The major number of `1.2.3`; None when the version is not of that form."""
    head = str(version).split(".", 1)[0]
    return int(head) if head.isdigit() else None


def bumped_documents(old: SpecSet, new: SpecSet) -> frozenset[str]:
    """Documents in both sets whose `info.version` major is higher in `new`."""
    bumped = set()
    for name in old.documents.keys() & new.documents.keys():
        before = major(_info_version(old.documents[name].data))
        after = major(_info_version(new.documents[name].data))
        if before is not None and after is not None and after > before:
            bumped.add(name)
    return frozenset(bumped)


def _info_version(data: dict[str, Any]) -> object:
    info = data.get("info")
    return info.get("version") if isinstance(info, dict) else None


def plain(spec: SpecSet, node: Node, stack: tuple[tuple[str, tuple[Any, ...]], ...] = ()) -> Any:
    """The value at `node` with every `$ref` replaced by what it points at; a recursive schema
    becomes `{"$recursive": ref}` at the point it repeats, so comparison terminates."""
    if node.ref is not None:
        target = spec.deref(node)
        where = (target.file, target.path)
        if where in stack:
            return {"$recursive": f"{target.file}#{'/'.join(map(str, target.path))}"}
        return plain(spec, target, (*stack, where))
    if isinstance(node.value, dict):
        return {key: plain(spec, child, stack) for key, child in node.items()}
    if isinstance(node.value, list):
        return [plain(spec, child, stack) for child in node.elements()]
    return node.value


@dataclass(frozen=True)
class Entry:
    """A channel, operation, message or schema, resolved, with the document that defines it."""

    kind: str
    key: str
    owner: str
    value: Any
    # the channel/message keys an operation or channel points at (identity, not content)
    refs: tuple[str, ...] = ()


def entries(spec: SpecSet) -> dict[tuple[str, str], Entry]:
    """Every entry by (kind, key); one only `$ref`-ed from another file is its owner's."""
    found: dict[tuple[str, str], Entry] = {}
    for name in sorted(spec.documents):
        root = spec.documents[name].root
        for kind, path in SECTIONS:
            section: Node | None = root
            for key in path:
                section = section.child(key) if section is not None else None
            if section is None:
                continue
            for key, node in section.items():
                if node.ref is not None and not node.ref.startswith("#"):
                    continue  # defined in the file it points at
                try:
                    value = plain(spec, node)
                except RefError as exc:  # check_refs ran, so only a cycle can get here
                    raise SpecDiffError(f"{name}: {kind} {key}: {exc}") from None
                ident = (kind, key) if (kind, key) not in found else (kind, f"{key} ({name})")
                found[ident] = Entry(kind, ident[1], name, value, _pointers(node))
    return found


def _pointers(node: Node) -> tuple[str, ...]:
    """The `$ref` strings inside a channel or operation: which messages/channel it names."""
    refs: list[str] = []
    if isinstance(node.value, dict):
        for key in ("channel", "messages"):
            child = node.child(key)
            if child is None:
                continue
            for item in [child, *child.elements(), *(c for _, c in child.items())]:
                if item.ref is not None:
                    refs.append(f"{key}={item.ref.rsplit('/', 1)[-1]}")
    return tuple(sorted(set(refs)))


def diff(old: SpecSet, new: SpecSet) -> Report:
    """Every change from `old` to `new`, in a stable order."""
    before, after = entries(old), entries(new)
    changes: list[Change] = []
    for ident in sorted(before.keys() | after.keys()):
        kind, key = ident
        subject = f"{kind} {key}"
        if ident not in after:
            changes.append(Change(subject, "removed", BOTH, before[ident].owner))
        elif ident not in before:
            changes.append(Change(subject, "added", None, after[ident].owner))
        else:
            owner = after[ident].owner
            for where, detail, breaks in _compare_entry(before[ident], after[ident]):
                changes.append(Change(f"{subject}{where}", detail, breaks, owner))
    return Report(tuple(changes), bumped_documents(old, new))


Finding = tuple[str, str, str | None]  # (where inside the entry, what changed, who it breaks)


def _compare_entry(old: Entry, new: Entry) -> Iterator[Finding]:
    if old.kind == "schema":
        yield from compare_schema(old.value, new.value, "")
        return
    a, b = old.value, new.value
    if not (isinstance(a, dict) and isinstance(b, dict)):
        if a != b:
            yield "", "changed", BOTH
        return
    if old.kind == "message":
        for part in ("payload", "headers"):
            if part in a or part in b:
                yield from compare_schema(a.get(part, {}), b.get(part, {}), f" {part}")
        if RESULT_KEY in a or RESULT_KEY in b:
            # the result travels back: the task's consumers (workers) produce it
            for where, detail, breaks in compare_schema(
                a.get(RESULT_KEY, {}), b.get(RESULT_KEY, {}), " result"
            ):
                yield where, detail, SWAPPED.get(breaks, breaks) if breaks else None
        for field in ("contentType", "bindings", "correlationId"):
            if a.get(field) != b.get(field):
                yield "", f"{field} changed from {a.get(field)!r} to {b.get(field)!r}", BOTH
        return
    # channels and operations: where they live, what they carry, how they are bound
    for field in ("address", "action"):
        if a.get(field) != b.get(field):
            yield "", f"{field} changed from {a.get(field)!r} to {b.get(field)!r}", BOTH
    if _wire_bindings(a) != _wire_bindings(b):
        yield "", "bindings changed (exchange, queue, routing or arguments)", BOTH
    if old.refs != new.refs:
        gone = sorted(set(old.refs) - set(new.refs))
        came = sorted(set(new.refs) - set(old.refs))
        if gone:
            yield "", f"no longer references {', '.join(gone)}", BOTH
        if came:
            # a receiver now gets a message type it was not written for
            yield "", f"now references {', '.join(came)}", CONSUMERS
    if ("reply" in a or "reply" in b) and a.get("reply") != b.get("reply"):
        yield "", "reply changed", BOTH


def _wire_bindings(value: dict[str, Any]) -> Any:
    bindings = value.get("bindings")
    if not isinstance(bindings, dict):
        return bindings
    amqp = bindings.get("amqp")
    if isinstance(amqp, dict):
        amqp = {k: v for k, v in amqp.items() if k != POLICY_KEY}
    return {**bindings, "amqp": amqp}


def _types(schema: dict[str, Any]) -> set[str] | None:
    kind = schema.get("type")
    if kind is None:
        return None
    return set(kind) if isinstance(kind, list) else {str(kind)}


def _accepts(types: set[str], kind: str) -> bool:
    return kind in types or (kind == "integer" and "number" in types)


def compare_schema(old: Any, new: Any, where: str) -> Iterator[Finding]:
    """What changed from one JSON Schema to another and whom it breaks (see module docstring)."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        if old != new:
            yield where, "schema changed", BOTH
        return
    yield from _compare_types(old, new, where)
    yield from _compare_enum(old, new, where)
    yield from _compare_object(old, new, where)
    yield from _compare_bounds(old, new, where)
    for keyword in ("pattern", "format", "const"):
        if old.get(keyword) != new.get(keyword):
            yield _keyword_change(keyword, old.get(keyword), new.get(keyword), where)
    if bool(old.get("uniqueItems")) != bool(new.get("uniqueItems")):
        yield where, "uniqueItems changed", PRODUCERS if new.get("uniqueItems") else CONSUMERS
    if "items" in old or "items" in new:
        yield from compare_schema(old.get("items", {}), new.get("items", {}), f"{where}[]")
    for keyword in ("oneOf", "anyOf", "allOf"):
        yield from _compare_alternatives(keyword, old.get(keyword), new.get(keyword), where)
    for keyword in sorted((old.keys() | new.keys()) - SCHEMA_KEYWORDS - ANNOTATIONS):
        if keyword.startswith("x-") or keyword == "$recursive":
            continue
        if old.get(keyword) != new.get(keyword):
            yield where, f"keyword {keyword!r} changed", BOTH


def _compare_types(old: dict[str, Any], new: dict[str, Any], where: str) -> Iterator[Finding]:
    a, b = _types(old), _types(new)
    if a == b:
        return
    if a is None or b is None:
        shown = "added" if a is None else "removed"
        yield (
            where,
            f"type {sorted(b or a or set())} {shown}",
            PRODUCERS if a is None else CONSUMERS,
        )
        return
    lost = sorted(t for t in a if not _accepts(b, t))
    gained = sorted(t for t in b if not _accepts(a, t))
    if lost:
        yield where, f"type narrowed from {sorted(a)} to {sorted(b)}", PRODUCERS
    if gained:
        yield where, f"type widened from {sorted(a)} to {sorted(b)}", CONSUMERS


def _compare_enum(old: dict[str, Any], new: dict[str, Any], where: str) -> Iterator[Finding]:
    a, b = old.get("enum"), new.get("enum")
    if a == b:
        return
    if a is None:
        yield where, "enum added", PRODUCERS
        return
    if b is None:
        yield where, "enum removed", CONSUMERS
        return
    for value in [v for v in a if v not in b]:
        yield where, f"enum value {value!r} removed", PRODUCERS
    for value in [v for v in b if v not in a]:
        yield where, f"enum value {value!r} added", CONSUMERS


def _compare_object(old: dict[str, Any], new: dict[str, Any], where: str) -> Iterator[Finding]:
    old_props = old.get("properties") or {}
    new_props = new.get("properties") or {}
    old_required = set(old.get("required") or [])
    new_required = set(new.get("required") or [])
    closed = new.get("additionalProperties") is False
    for field in sorted(new_required - old_required):
        yield where, f"field {field!r} became required", PRODUCERS
    for field in sorted(old_required - new_required):
        if field in new_props:
            yield where, f"field {field!r} is no longer required", CONSUMERS
    for field in sorted(old_props.keys() - new_props.keys()):
        if field in old_required:
            yield where, f"required field {field!r} removed", PRODUCERS if closed else CONSUMERS
            if closed:
                yield where, f"required field {field!r} removed", CONSUMERS
        else:
            yield where, f"optional field {field!r} removed", PRODUCERS if closed else None
    for field in sorted(new_props.keys() - old_props.keys()):
        if field not in new_required:
            # old consumers ignore an unknown field, unless the old schema refused them: then a
            # new producer that sets it is dead-lettered by an old consumer
            was_closed = old.get("additionalProperties") is False
            yield where, f"optional field {field!r} added", CONSUMERS if was_closed else None
    for field in sorted(old_props.keys() & new_props.keys()):
        yield from compare_schema(old_props[field], new_props[field], f"{where}.{field}")
    a, b = old.get("additionalProperties"), new.get("additionalProperties")
    if isinstance(a, dict) and isinstance(b, dict):
        yield from compare_schema(a, b, f"{where}{{*}}")
    elif (a is False) != (b is False):
        if b is False:
            yield where, "additionalProperties became false", PRODUCERS
        else:
            yield where, "additionalProperties no longer false", CONSUMERS
    elif isinstance(a, dict) != isinstance(b, dict):
        yield where, "additionalProperties changed", BOTH


def _keyword_change(keyword: str, a: Any, b: Any, where: str) -> Finding:
    """A constraint added narrows (producers), one removed widens (consumers), else both."""
    if a is None:
        return where, f"{keyword} {b!r} added", PRODUCERS
    if b is None:
        return where, f"{keyword} {a!r} removed", CONSUMERS
    return where, f"{keyword} changed from {a!r} to {b!r}", BOTH


def _compare_bounds(old: dict[str, Any], new: dict[str, Any], where: str) -> Iterator[Finding]:
    for keyword, tighter in [(k, -1) for k in UPPER_BOUNDS] + [(k, 1) for k in LOWER_BOUNDS]:
        a, b = old.get(keyword), new.get(keyword)
        if a == b:
            continue
        if not (isinstance(a, int | float) and isinstance(b, int | float)):
            yield _keyword_change(keyword, a, b, where)
        elif (b - a) * tighter > 0:
            yield where, f"{keyword} tightened from {a!r} to {b!r}", PRODUCERS
        else:
            yield where, f"{keyword} loosened from {a!r} to {b!r}", CONSUMERS


def _compare_alternatives(keyword: str, old: Any, new: Any, where: str) -> Iterator[Finding]:
    a = old if isinstance(old, list) else []
    b = new if isinstance(new, list) else []
    if a == b:
        return
    for index in range(min(len(a), len(b))):
        yield from compare_schema(a[index], b[index], f"{where}.{keyword}[{index}]")
    if len(b) > len(a):
        # more alternatives let more through; allOf is the exception: every part must hold
        yield where, f"{keyword} alternative added", PRODUCERS if keyword == "allOf" else CONSUMERS
    elif len(a) > len(b):
        yield (
            where,
            f"{keyword} alternative removed",
            CONSUMERS if keyword == "allOf" else PRODUCERS,
        )
