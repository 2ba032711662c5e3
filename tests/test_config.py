"""RuntimeConfig: settings from SPECTASK_* variables, and no silent typo in code."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from spectask.runtime.config import RuntimeConfig


def test_a_misspelt_keyword_is_an_error_not_a_default() -> None:
    """`RuntimeConfig(any_url=...)` once connected a test to the default broker silently."""
    with pytest.raises(ValidationError, match="any_url"):
        RuntimeConfig(any_url="amqp://elsewhere/")  # type: ignore[call-arg]


def test_other_spectask_variables_in_the_environment_are_left_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SPECTASK_OUTPUT_DIR and SPECTASK_APP belong to other settings; they must not break it."""
    monkeypatch.setenv("SPECTASK_OUTPUT_DIR", "/tmp/out")
    monkeypatch.setenv("SPECTASK_APP", "shop.app:app")
    monkeypatch.setenv("SPECTASK_PREFETCH", "7")
    assert RuntimeConfig().prefetch == 7
