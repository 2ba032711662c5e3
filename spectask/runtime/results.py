"""A task's result as the typed model its spec names (`x-spectask-result`), or a clear error.

The status reply carries a result as a plain JSON object (TaskStatusView.result, the handler's
return value as the collector stored it). A generated client's `result_of_<submit>` methods
wait for the task and hand it here with the model of the operation's result schema, so a
caller gets `ImageOutput`, not a dict, and a result that breaks its schema (a worker on an
older spec, a hand-made result) fails here, once, with one line, instead of in the caller's
attribute access later.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from spectask.errors import SpectaskError
from spectask.protocol.models import TaskState

M = TypeVar("M", bound=BaseModel)
MAX_SHOWN_ERRORS = 3


class FinalView(Protocol):
    """What a status view must offer (the protocol's TaskStatusView has all of it)."""

    @property
    def task_id(self) -> str: ...

    @property
    def state(self) -> enum.Enum: ...

    @property
    def result(self) -> Mapping[str, Any] | None: ...


class TaskNotSucceededError(SpectaskError):
    """The task ended, but not with a result: FAILED, DEAD or CANCELLED (`view` says why)."""

    def __init__(self, view: FinalView) -> None:
        error = getattr(view, "error", None)
        why = f": {error.type}: {error.message}" if error is not None else ""
        dead = getattr(view, "dead_reason", None)
        reason = f" (dead letter reason {dead})" if dead else ""
        super().__init__(
            f"task {view.task_id} ended {view.state.value}{reason}{why}; it has no result "
            f"(`spectask status {view.task_id}` shows its record)"
        )
        self.view = view


class ResultSchemaError(SpectaskError):
    """A SUCCEEDED task's result does not match its operation's result schema."""


def typed_result(view: FinalView, model: type[M]) -> M:
    """The SUCCEEDED task's result validated as `model`; raise one of the errors above."""
    if str(view.state.value) != TaskState.SUCCEEDED.value:
        raise TaskNotSucceededError(view)
    try:
        return model.model_validate(view.result or {})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or '(root)'}: {error['msg']}"
            for error in exc.errors()[:MAX_SHOWN_ERRORS]
        )
        raise ResultSchemaError(
            f"task {view.task_id}'s result is not a {model.__name__} as the spec's "
            f"x-spectask-result says ({exc.error_count()} errors: {problems}); is the worker "
            "running an older spec?"
        ) from None
