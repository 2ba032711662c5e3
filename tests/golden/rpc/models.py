# generated from rpc_spec/common.asyncapi.yaml by spectask — do not edit
# spec sha256: 5c867ee37c8df42fb5f3c915f243c6558e75b06fc13b26ae7841bd1520491ae7
"""Message payload models (pydantic), one class per schema in components.schemas."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


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
