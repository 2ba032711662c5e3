"""Sample payloads an application offers, so `spectask produce` submits real work without inputs.

An application names a factory per message type (`Application.samples`); these helpers pick
and cycle through them. The payloads are validated against the spec before anything is sent.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

PayloadFactory = Callable[[random.Random], dict[str, Any]]


def expand_selection(samples: Mapping[str, PayloadFactory], selection: Sequence[str]) -> list[str]:
    """`image_processing` means all its operations; `image_processing.resize` just that one."""
    chosen: list[str] = []
    for item in selection:
        matches = [name for name in samples if name == item or name.split(".")[0] == item]
        if not matches:
            known = ", ".join(sorted(samples)) or "(this application has no samples)"
            raise ValueError(f"unknown task {item!r}; choose from {known}")
        chosen.extend(name for name in matches if name not in chosen)
    return chosen


def mixed_batch(
    samples: Mapping[str, PayloadFactory], count: int, message_types: Sequence[str], seed: int = 7
) -> Iterator[tuple[str, dict[str, Any]]]:
    """`count` sample payloads cycling through the given message types."""
    rng = random.Random(seed)
    for index in range(count):
        message_type = message_types[index % len(message_types)]
        yield message_type, samples[message_type](rng)
