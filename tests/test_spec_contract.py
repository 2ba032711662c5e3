"""Issue 12: what the deployment enforces is written in the spec, in words a client in another
language reads (descriptions) and in JSON Schema where it can say it; each test pins the spec's
text or schema to what the runtime does, so neither can change alone."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from generated import models
from workloads import analysis, images
from workloads.errors import PermanentTaskError

SPEC = Path(__file__).resolve().parent.parent / "spec"


def schemas(document: str = "common.asyncapi.yaml") -> dict[str, Any]:
    loaded = yaml.safe_load((SPEC / document).read_text())
    found: dict[str, Any] = loaded["components"]["schemas"]
    return found


def words(text: str) -> str:
    """A description with its folded line breaks undone."""
    return " ".join(text.split())


def test_item3_image_source_takes_exactly_one_of_path_and_data() -> None:
    source = schemas()["ImageSource"]
    assert (source["minProperties"], source["maxProperties"]) == (1, 1)
    assert source["additionalProperties"] is False
    assert sorted(source["properties"]) == ["data_base64", "path"]
    for path, data, given in [(None, None, "neither"), ("a.png", "aGk=", "both")]:
        with pytest.raises(PermanentTaskError) as refused:
            images.image_source(path, data, input_root=Path("."), max_bytes=10)
        said = str(refused.value)
        assert said.endswith(f"got {given}")
        assert said.removesuffix(given) in words(source["description"]), said


def test_item3_readable_image_formats_are_listed_in_the_spec() -> None:
    spec = schemas()
    listed = tuple(spec["ImageFormat"]["enum"])
    assert listed == images.FORMATS  # the worker reads exactly the spec's formats
    assert f"({', '.join(listed)};" in words(spec["ImageSource"]["description"])


def test_item3_aggregation_records_must_hold_group_by_and_field() -> None:
    aggregate = schemas()["DataAggregate"]
    said = words(aggregate["description"])
    assert "Every record must contain both keys" in said
    assert aggregate["properties"]["records"]["minItems"] == 1
    for records, template in [
        ([{"v": 1}], "record <i> has no '<group_by>' field to group by"),
        ([{"g": "a"}], "record <i> has no '<field>' field to aggregate"),
    ]:
        assert template in said
        pattern = re.escape(template).replace("<i>", "0")
        pattern = pattern.replace("<group_by>", "g").replace("<field>", "v")
        with pytest.raises(PermanentTaskError, match=f"^{pattern}$"):
            analysis.aggregate(records, "g", "v")
    with pytest.raises(ValidationError, match="records"):  # no records: the schema refuses
        models.DataAggregate.model_validate({"records": [], "group_by": "g", "field": "v"})
