"""Settings of the task handlers, read from the environment (prefix `SPECTASK_`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class TaskSettings(BaseSettings):
    """Where handlers read and write files, how large an image may be, how to send e-mail."""

    model_config = SettingsConfigDict(env_prefix="SPECTASK_", extra="ignore", frozen=True)

    output_dir: Path = Field(
        default=Path("./out"),
        description="Root of the outputs: images/, reports/ and charts/ are created below it.",
    )
    image_input_root: Path = Field(
        default=Path("./in"),
        description=(
            "The only directory image tasks may read files from: a task's `path` is taken "
            "relative to it and refused if it leads outside (by '..' or a symbolic link)."
        ),
    )
    max_image_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1,
        description="Image files and decoded inline images larger than this are refused unread.",
    )
    max_image_pixels: int = Field(
        default=50_000_000,
        ge=1,
        description="Images with more pixels (width x height) are refused before decoding.",
    )
    smtp_host: str = Field(default="localhost", min_length=1, description="SMTP relay host.")
    smtp_port: int = Field(default=25, ge=1, le=65535, description="SMTP relay port.")
    smtp_from: str = Field(
        default="spectask@localhost", min_length=3, description="Envelope and From: sender."
    )
    smtp_timeout: float = Field(
        default=30.0, gt=0, description="Seconds to connect to and talk with the SMTP relay."
    )
