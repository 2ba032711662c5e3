"""Failures a retry cannot fix (the runtime's `PermanentTaskError`, re-exported for handlers)."""

from __future__ import annotations

from spectask.errors import PermanentTaskError

__all__ = ["PermanentTaskError"]
