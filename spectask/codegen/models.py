"""Message models: the spec's JSON Schemas turned into pydantic classes by datamodel-code-generator.

Beyond the options design.md names, three are needed for code that passes `mypy --strict`:
`skip_root_model` (the `$defs` container is not a model), `capitalise_enum_members` (a member
called `count` would shadow `str.count`) and `use_type_alias` (constrained array items become
`Annotated` aliases instead of root models, so `to: list[str]` stays a list of `str` and a
default like `[25, 50]` type-checks). A payload schema that becomes an alias (no `type: object`,
like DeadLetterBody) is used as `RootModel[models.X]` where a pydantic model class is needed.
"""

from __future__ import annotations

import importlib
import json
import re
import sys
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from types import ModuleType

from datamodel_code_generator import generate
from datamodel_code_generator.enums import DataModelType, InputFileType
from datamodel_code_generator.format import PythonVersion
from pydantic import BaseModel

from spectask.codegen.diagnostics import SpecError, SpecInvalidError

_CLASS = re.compile(r"^class (\w+)\((\w+)", re.MULTILINE)
_ALIAS = re.compile(r"^(\w+) = TypeAliasType\(", re.MULTILINE)
_MODEL_BASES = ("BaseModel", "RootModel")


@dataclass(frozen=True)
class GeneratedModels:
    """The models module body and how to refer to each payload schema's model class."""

    source: str
    references: dict[str, str]

    def reference(self, schema: str) -> str:
        """`models.ImageResize`, or `RootModel[models.DeadLetterBody]` for an alias."""
        return self.references[schema]


def _run_generator(json_schema: str) -> str:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        source = generate(
            json_schema,
            input_file_type=InputFileType.JsonSchema,
            output_model_type=DataModelType.PydanticV2BaseModel,
            field_constraints=True,
            use_annotated=True,
            set_default_enum_member=True,
            disable_timestamp=True,
            target_python_version=PythonVersion.PY_311,
            use_standard_collections=True,
            use_union_operator=True,
            skip_root_model=True,
            capitalise_enum_members=True,
            use_type_alias=True,
            formatters=[],  # ruff formats the whole generated tree afterwards
        )
    for warning in caught:
        print(f"datamodel-code-generator: {warning.message}", file=sys.stderr)
    assert isinstance(source, str), "one schema document gives one module"
    # Drop the generator's own comment header; ours says where the code came from.
    lines = source.splitlines()
    while lines and (not lines[0].strip() or lines[0].startswith("#")):
        lines.pop(0)
    return "\n".join(lines) + "\n"


PROTOCOL_MODULE = "spectask.protocol.models"


def protocol_models(
    names: Iterable[str], payloads: Iterable[str], module: ModuleType | None = None
) -> GeneratedModels:
    """Re-exports of the protocol's models, which ship with spectask, for an application.

    The application's `models` module imports them (`TaskResult as TaskResult`), so
    `generated.models.TaskResult is spectask.protocol.models.TaskResult`: one class, one source.
    """
    module = module or importlib.import_module(PROTOCOL_MODULE)
    exported = sorted(set(names))
    references: dict[str, str] = {}
    for schema in sorted(set(payloads) & set(exported)):
        found = getattr(module, schema)
        is_model = isinstance(found, type) and issubclass(found, BaseModel)
        references[schema] = f"models.{schema}" if is_model else f"RootModel[models.{schema}]"
    if not exported:
        return GeneratedModels("", references)
    lines = [f"    {name} as {name}," for name in exported]
    source = "\n".join([f"from {PROTOCOL_MODULE} import (", *lines, ")"]) + "\n"
    return GeneratedModels(source, references)


def merge(first: GeneratedModels, second: GeneratedModels) -> GeneratedModels:
    """One models module from two parts (the protocol's re-exports, the application's own)."""
    future = "from __future__ import annotations\n"
    parts = [part.source.replace(future, "", 1) for part in (first, second)]
    body = "\n\n".join(part for part in parts if part.strip())
    source = f"{future}\n{body}" if future in first.source + second.source else body
    return GeneratedModels(source, {**first.references, **second.references})


def generate_models(json_schema: str, payloads: Iterable[str]) -> GeneratedModels:
    """Generate the models; raises SpecInvalidError if a payload schema got no model."""
    if not json.loads(json_schema).get("$defs"):
        if payloads := sorted(set(payloads)):
            raise SpecInvalidError(
                [
                    SpecError(
                        "components.schemas",
                        "$.components.schemas",
                        f"no schema defines payload(s) {', '.join(payloads)}",
                        "define them in components.schemas",
                    )
                ]
            )
        return GeneratedModels("", {})
    source = _run_generator(json_schema)
    classes = dict(_CLASS.findall(source))
    aliases = set(_ALIAS.findall(source))
    references: dict[str, str] = {}
    errors: list[SpecError] = []
    for schema in sorted(set(payloads)):
        if classes.get(schema) in _MODEL_BASES:
            references[schema] = f"models.{schema}"
        elif schema in classes or schema in aliases:
            references[schema] = f"RootModel[models.{schema}]"
        else:
            errors.append(
                SpecError(
                    "components.schemas",
                    f"$.components.schemas.{schema}",
                    f"datamodel-code-generator produced no class named {schema}",
                    "rename the schema so it does not clash with a name the generator makes up",
                )
            )
    if errors:
        raise SpecInvalidError(errors)
    return GeneratedModels(source, references)
