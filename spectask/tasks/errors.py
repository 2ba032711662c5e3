"""Failures a retry cannot fix."""

from __future__ import annotations

from spectask.errors import SpectaskError


class PermanentTaskError(SpectaskError):
    """The task's input is bad (or refused for good): retrying it would fail the same way.

    Raise it from a handler to send the task straight to the dead-letter exchange; any other
    exception is treated as transient and retried under the task type's policy.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
