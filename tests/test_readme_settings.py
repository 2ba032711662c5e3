"""The README's configuration table matches the settings classes: every variable, every default.

The table is written for people (`16 MiB`, `30`), the defaults live in code; this test keeps
the two one thing. A new setting without a row, or a changed default, fails here.
"""

from __future__ import annotations

import enum
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import AliasChoices
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

from spectask.logs import LogSettings
from spectask.runtime.config import RuntimeConfig
from spectask.store.retention import StoreSettings
from workloads.settings import TaskSettings

README = Path(__file__).resolve().parents[1] / "README.md"
SETTINGS: tuple[type[BaseSettings], ...] = (RuntimeConfig, LogSettings, TaskSettings, StoreSettings)
UNITS = {"KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}
ROW = re.compile(r"^\| (`[A-Z_]+`(?: / `_[A-Z_]+`)*) \| ([^|]*) \|", re.M)


def readme_defaults() -> dict[str, str]:
    """`SPECTASK_X` -> its default cell; `A_HOST` / `_PORT` rows expand to `A_PORT`."""
    section = README.read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    table: dict[str, str] = {}
    for names, defaults in ROW.findall(section):
        variables = [name.strip("`") for name in names.split(" / ")]
        stem = variables[0].rsplit("_", 1)[0]
        variables = [stem + v if v.startswith("_") else v for v in variables]
        cells = defaults.strip().split(" / ")
        if len(cells) != len(variables):
            cells = [defaults.strip()] * len(variables)
        table.update(zip(variables, (c.strip().strip("`") for c in cells), strict=True))
    return table


def variable(settings: type[BaseSettings], name: str, field: FieldInfo) -> str:
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    prefix = str(settings.model_config.get("env_prefix", ""))
    return (prefix + name).upper()


def matches(cell: str, default: Any) -> bool:
    """Does the README's `16 MiB` / `30` / `true` / `./out` say this default?"""
    if isinstance(default, bool):
        return cell.lower() == str(default).lower()
    if isinstance(default, int | float):
        number, _, unit = cell.replace(",", "").partition(" ")
        try:
            return float(number) * UNITS.get(unit, 1) == default
        except ValueError:
            return False
    if isinstance(default, Path):
        return Path(cell) == default
    if isinstance(default, enum.Enum):
        return cell == str(default.value)
    return cell.lower() == str(default).lower()


FIELDS = [
    (variable(settings, name, field), field.default)
    for settings in SETTINGS
    for name, field in settings.model_fields.items()
]


@pytest.mark.parametrize(("name", "default"), FIELDS, ids=[name for name, _ in FIELDS])
def test_every_setting_has_a_row_with_its_default(name: str, default: Any) -> None:
    table = readme_defaults()
    assert name in table, f"README's configuration table has no row for {name}"
    if default is None or default == frozenset():
        return  # "unset", "empty: none": said in words
    assert matches(table[name], default), f"README says {name} defaults to {table[name]!r}"
