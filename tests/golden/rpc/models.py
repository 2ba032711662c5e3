# generated from rpc_spec/common.asyncapi.yaml by spectask — do not edit
# spec sha256: c21cdb0608eace005e63ce2cff3aa28572cd5856826d7eadb66c9c07d896343c
# ruff: noqa: E501 - text from the spec (descriptions, patterns) stays on one line
"""Message payload models (pydantic), one class per schema in components.schemas."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import TypeAliasType

DeadBody = TypeAliasType(
    "DeadBody",
    Annotated[
        Any,
        Field(
            description="A request that cannot be answered, unchanged (a stand-alone spec brings its own dead letters)."
        ),
    ],
)


class PingRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
    )
    text: Annotated[str, Field(min_length=1)]
    count: Annotated[int, Field(ge=1)]
    tags: list[str]


class PingReply(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
    )
    text: str
    count: int | None = None


class LookupRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
    )
    key: str
    limit: Annotated[int | None, Field(ge=1)] = 10


class LookupReply(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
    )
    found: bool
    value: str | None = None
