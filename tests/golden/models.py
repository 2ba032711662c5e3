# generated from spec/common.asyncapi.yaml by spectask — do not edit
# spec sha256: c1589044804cc869cd898520312d4012b1c0c7add9f994ce18050d4910da88d2
# ruff: noqa: E501 - text from the spec (descriptions, patterns) stays on one line
"""Message payload models (pydantic), one class per schema in components.schemas."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import TypeAliasType

DeadBody = TypeAliasType(
    "DeadBody",
    Annotated[
        Any,
        Field(
            description="The task's body, unchanged (a stand-alone spec brings its own dead letters)."
        ),
    ],
)


class EchoHeaders(BaseModel):
    x_trace_id: Annotated[
        str | None, Field(alias="x-trace-id", description="Correlates the logs of one request.")
    ] = None


class Style(StrEnum):
    PLAIN = "plain"
    SHOUT = "shout"


Tag = TypeAliasType("Tag", Annotated[str, Field(pattern="^[a-z]+$")])


class EchoSay(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
    )
    text: Annotated[str, Field(max_length=1000, min_length=1)]
    repeat: Annotated[int | None, Field(ge=1, le=10)] = 1
    style: Style | None = None
    tags: list[Tag] | None = ["greeting"]


class EchoReply(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
    )
    text: str
    x_echo_count: Annotated[int, Field(alias="x-echo-count", ge=0)]
    extra: Annotated[
        Any | None, Field(description="Anything the echoer wants to add (any JSON).")
    ] = None
