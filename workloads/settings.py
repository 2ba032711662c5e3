"""Settings of the task handlers, read from the environment (prefix `SPECTASK_`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from workloads.recipients import DEFAULT_MAX_RECIPIENTS, RecipientPolicy, normalize_domain
from workloads.smtp import SmtpSettings, SmtpTls


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
        default="spectask@localhost",
        min_length=3,
        pattern=r"^[^@\s,<>]+@[^@\s,<>]+$",
        description="Envelope and From: sender (one bare address: no name, no line breaks).",
    )
    smtp_timeout: float = Field(
        default=30.0, gt=0, description="Seconds to connect to and talk with the SMTP relay."
    )
    smtp_tls: SmtpTls = Field(
        default=SmtpTls.NONE,
        description="none (a local relay), starttls (usually port 587) or tls (SMTPS, port 465).",
    )
    smtp_user: str | None = Field(
        default=None, min_length=1, description="Log in (AUTH) as this user; needs TLS."
    )
    smtp_password: SecretStr | None = Field(default=None, description="The login's password.")
    smtp_ca_file: Path | None = Field(
        default=None,
        description="Trust only the CAs in this PEM file for the server's certificate.",
    )
    mail_allowed_domains: Annotated[frozenset[str], NoDecode] = Field(
        default=frozenset(),
        description=(
            "Comma-separated domains reports may be e-mailed to (exact domains); "
            "empty (the default): every recipient is refused."
        ),
    )
    mail_max_recipients: int = Field(
        default=DEFAULT_MAX_RECIPIENTS,
        ge=1,
        description="Most recipients one e-mail task may name (the schema caps it too).",
    )

    @field_validator("mail_allowed_domains", mode="before")
    @classmethod
    def _split_domains(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part for part in value.replace(",", " ").split() if part]
        if isinstance(value, list | tuple | set | frozenset):
            return frozenset(normalize_domain(str(domain)) for domain in value)
        return value

    @field_validator("smtp_user")
    @classmethod
    def _login_needs_tls(cls, value: str | None, info: ValidationInfo) -> str | None:
        # SmtpSettings holds the rule; checked here so a worker refuses to start, naming it.
        SmtpSettings(tls=info.data.get("smtp_tls", SmtpTls.NONE), username=value)
        return value

    def smtp_settings(self) -> SmtpSettings:
        """The SMTP connection settings e-mail tasks use."""
        password = None if self.smtp_password is None else self.smtp_password.get_secret_value()
        return SmtpSettings(
            host=self.smtp_host,
            port=self.smtp_port,
            sender=self.smtp_from,
            timeout=self.smtp_timeout,
            tls=self.smtp_tls,
            username=self.smtp_user,
            password=password,
            ca_file=self.smtp_ca_file,
        )

    def recipient_policy(self) -> RecipientPolicy:
        """Whom e-mail tasks may send to."""
        return RecipientPolicy(self.mail_allowed_domains, self.mail_max_recipients)
