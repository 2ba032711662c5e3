"""A task's headers, checked against the protocol's `TaskHeaders` before its handler runs.

A header the protocol defines may be absent (a missing `x-spectask-attempt` is attempt 1: a
first submission from a client that does not set it); a present one must match its schema
exactly as JSON Schema reads it, with no coercion: `"1"`, `1.5`, `true` and `""` are not an
integer, and an attempt outside the schema's minimum..maximum is refused. Headers the protocol
does not define are left alone.

The checks are built once, from the generated model (`spectask.protocol.models.TaskHeaders`),
so the bounds live in the protocol document only: one strict pydantic validator per header,
and for a header whose JSON type is `string` (date-times, the last error) the value must be a
`str` that validates as a JSON string would. Per delivery it costs a dict lookup per defined
header and a validation per present one (well under a microsecond each).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from spectask.protocol.models import TaskHeaders
from spectask.protocol.names import ATTEMPT_HEADER

MAX_SHOWN_CHARS = 60
# the broker's dead-lettering record, and its reason for a message whose TTL ran out
X_DEATH_HEADER = "x-death"
EXPIRED_REASON = "expired"

_STRICT = ConfigDict(strict=True)


class _Check:
    """One header of a headers model: its validator and a phrase for what it must be."""

    __slots__ = ("adapter", "is_string", "name", "wanted")

    def __init__(self, name: str, annotation: Any, metadata: list[Any]) -> None:
        base = _without_none(annotation)
        typed: Any = Annotated[(base, *metadata)] if metadata else base
        self.name = name
        self.adapter: TypeAdapter[Any] = TypeAdapter(typed, config=_STRICT)
        schema = self.adapter.json_schema()
        self.is_string = schema.get("type") == "string"
        self.wanted = _describe(schema)

    def valid(self, value: Any) -> bool:
        return self.error(value) is None

    def error(self, value: Any) -> str | None:
        """None if `value` is valid, else one line naming the header, the value and the rule."""
        try:
            if self.is_string:
                if not isinstance(value, str):
                    raise TypeError
                self.adapter.validate_strings(value, strict=True)
            else:
                self.adapter.validate_python(value, strict=True)
        except ValidationError as exc:
            detail = exc.errors()[0]["msg"]
        except TypeError:
            detail = "Input should be a string"
        else:
            return None
        shown = repr(value)
        if len(shown) > MAX_SHOWN_CHARS:
            shown = shown[: MAX_SHOWN_CHARS - 3] + "..."
        return (
            f"header {self.name} is {shown} ({type(value).__name__}); "
            f"the protocol wants {self.wanted}: {detail}"
        )


class HeaderCheck:
    """The checks of one headers model (by default the protocol's TaskHeaders)."""

    __slots__ = ("_checks",)

    def __init__(self, model: type[BaseModel] = TaskHeaders) -> None:
        self._checks = tuple(
            _Check(field.alias or name, field.annotation, list(field.metadata))
            for name, field in model.model_fields.items()
        )

    def error(self, headers: Mapping[str, Any] | None) -> str | None:
        """None if every defined header present in `headers` is valid, else why not (one line)."""
        if not headers:
            return None
        for check in self._checks:
            if check.name in headers:
                error = check.error(headers[check.name])
                if error is not None:
                    return error
        return None

    def check(self, name: str) -> _Check:
        for check in self._checks:
            if check.name == name:
                return check
        raise KeyError(name)


def _without_none(annotation: Any) -> Any:
    """`int | None` -> `int`: an optional header is checked only when present, never as null."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        kept = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(kept) == 1:
            return kept[0]
        return typing.Union[tuple(kept)]  # noqa: UP007 (built at run time)
    return annotation


def _describe(schema: Mapping[str, Any]) -> str:
    """`an integer in 1..1000000`, `a date-time string`: what a JSON schema asks for."""
    kind = schema.get("type", "value")
    if "format" in schema:
        kind = f"{schema['format']} {kind}"
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None and high is not None:
        kind = f"{kind} in {low}..{high}"
    elif low is not None:
        kind = f"{kind} >= {low}"
    elif high is not None:
        kind = f"{kind} <= {high}"
    article = "an" if kind[0] in "aeiou" else "a"
    return f"{article} {kind}"


TASK_HEADERS = HeaderCheck()
_ATTEMPT = TASK_HEADERS.check(ATTEMPT_HEADER)


def attempt_of(headers: Mapping[str, Any]) -> int:
    """The delivery's attempt: its `x-spectask-attempt` if valid and earned, else 1.

    So a context, a dead letter or a retry never carries an attempt the protocol refuses (a
    task with an invalid one is dead-lettered before it runs; a tap still reads it as 1), and
    a fresh submit always starts at attempt 1: only a delivery that came back from a delay
    tier (see `came_back_from_delay`) keeps the attempt its retrying worker wrote, so a
    client cannot shrink its task's retry budget by setting the header itself.
    """
    value = headers.get(ATTEMPT_HEADER)
    if value is None or not _ATTEMPT.valid(value) or not came_back_from_delay(headers):
        return 1
    attempt: int = value
    return attempt


def came_back_from_delay(headers: Mapping[str, Any]) -> bool:
    """Whether the broker's newest `x-death` record is an expired delay (a retry tier's TTL).

    The broker writes that record when it dead-letters the task from its delay tier back to
    the tasks exchange; a task a client published has none (the protocol's TaskHeaders say
    so; a client that forges the broker's record is on its own).
    """
    deaths = headers.get(X_DEATH_HEADER)
    if not isinstance(deaths, list | tuple) or not deaths or not isinstance(deaths[0], Mapping):
        return False
    reason = deaths[0].get("reason")
    return (reason.decode() if isinstance(reason, bytes) else reason) == EXPIRED_REASON
