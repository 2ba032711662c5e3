# generated from spec/common.asyncapi.yaml by spectask — do not edit
# spec sha256: f2113008eb22008f40130d783c1dac8d7b13ca8c4717af9084601a21699e2c34
"""Message payload models (pydantic), one class per schema in components.schemas."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import TypeAliasType


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
