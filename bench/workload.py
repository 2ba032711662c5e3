"""The task both sides run: a short list of numbers in, a few statistics out.

The work is deliberately tiny, so the benchmark measures the messaging framework rather than
the task; both sides send the same payload bytes and call the same function on them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

MESSAGE_TYPE = "data_analysis.statistics"
"""A real task type of the spec (its queue has x-max-priority 10, like every task queue)."""

PAYLOAD: dict[str, Any] = {
    "values": [round(1.25 * i + 0.5, 2) for i in range(16)],
    "percentiles": [50.0, 90.0, 99.0],
}


def payload_body() -> bytes:
    """The payload as compact JSON, byte for byte what pydantic's `model_dump_json` writes."""
    return json.dumps(PAYLOAD, separators=(",", ":")).encode()


def summarize(values: Sequence[float]) -> dict[str, float | int]:
    """The 'work': a handful of statistics of a 16-element list (microseconds)."""
    total = sum(values)
    return {
        "count": len(values),
        "sum": total,
        "mean": total / len(values) if values else 0.0,
        "min": min(values, default=0.0),
        "max": max(values, default=0.0),
    }
