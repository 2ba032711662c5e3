"""E-mail: send a PDF report as an attachment over SMTP (`smtplib`).

The recipients are checked first (`workloads.recipients`: valid addresses, allowed domains, a
capped count), so nothing is rendered or sent for a task that may not send. The connection
(TLS, login) is `workloads.smtp`'s. Failures are split the SMTP way: a refused connection, a
timeout, a dropped connection or a 4xx (temporary) reply propagate unchanged and count as
transient; a 5xx (permanent) refusal of the sender, a recipient or the message raises
`PermanentTaskError`.
"""

from __future__ import annotations

import re
import smtplib
from collections.abc import Iterable, Mapping, Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from workloads.analysis import describe
from workloads.errors import PermanentTaskError
from workloads.output import safe_name
from workloads.recipients import RecipientPolicy, check_recipients
from workloads.reports import Progress, build_pdf, no_progress, write_pdf
from workloads.smtp import SmtpSettings, connection, reply_text


class EmailOutput(BaseModel):
    model_config = ConfigDict(frozen=True)

    path: str
    pages: int
    bytes: int
    recipients: list[str]
    subject: str
    message_id: str


def _one_line(text: str) -> str:
    """Header-safe text: no CR/LF (header injection), runs of whitespace collapsed."""
    return " ".join(text.split())


def attachment_name(title: str) -> str:
    """A file name for the attached report, derived from its title."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", title).strip("-.")[:80]
    return f"{stem or 'report'}.pdf"


def build_message(
    *,
    sender: str,
    recipients: Sequence[str],
    subject: str,
    body: str,
    attachment: bytes,
    filename: str,
    message_id: str,
) -> EmailMessage:
    """A text message with one PDF attachment."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Subject"] = _one_line(subject)
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = message_id
    message.set_content(body)
    message.add_attachment(
        attachment, maintype="application", subtype="pdf", filename=_one_line(filename)
    )
    return message


def _replies(refused: Mapping[str, tuple[int, bytes]]) -> str:
    return "; ".join(
        f"{address}: {code} {reply_text(reply)}" for address, (code, reply) in refused.items()
    )


def _temporary(code: int) -> bool:
    return 400 <= code < 500


def send(message: EmailMessage, *, smtp: SmtpSettings, recipients: Sequence[str]) -> None:
    """Send the message to `recipients` through the SMTP relay.

    Raises `PermanentTaskError` when the relay refuses for good (5xx) the sender, the message
    or any recipient. If only some recipients are refused the others have received the
    message, so that is permanent too: a retry would send them a second copy.
    """
    try:
        with connection(smtp) as client:
            refused = client.send_message(message, from_addr=smtp.sender, to_addrs=recipients)
    except smtplib.SMTPRecipientsRefused as exc:
        codes = exc.recipients
        if codes and all(_temporary(code) for code, _ in codes.values()):
            raise
        raise PermanentTaskError(
            f"the SMTP server refused every recipient: {_replies(codes)}"
        ) from exc
    except smtplib.SMTPSenderRefused as exc:
        if _temporary(exc.smtp_code):
            raise
        raise PermanentTaskError(
            f"the SMTP server refused the sender {exc.sender!r} (SPECTASK_SMTP_FROM): "
            f"{exc.smtp_code} {reply_text(exc.smtp_error)}"
        ) from exc
    except smtplib.SMTPDataError as exc:
        if _temporary(exc.smtp_code):
            raise
        raise PermanentTaskError(
            f"the SMTP server refused the message: {exc.smtp_code} {reply_text(exc.smtp_error)}"
        ) from exc
    except smtplib.SMTPNotSupportedError as exc:
        raise PermanentTaskError(f"the SMTP server cannot take this message: {exc}") from exc
    if refused:
        raise PermanentTaskError(
            f"the SMTP server refused {len(refused)} of {len(recipients)} recipients "
            f"({_replies(refused)}); the others were sent the report, so it is not retried"
        )


def email_report(
    *,
    title: str,
    series: Iterable[float],
    to: Sequence[str],
    subject: str | None = None,
    out_dir: Path,
    name: str,
    smtp: SmtpSettings,
    policy: RecipientPolicy,
    progress: Progress | None = None,
    idempotency_key: str | None = None,
) -> EmailOutput:
    """Build the PDF report, write it to `out_dir/<name>.pdf` and e-mail it to `to`.

    `to` is checked against `policy` before anything else happens.
    """
    recipients = check_recipients(to, policy)
    values = list(series)
    report = progress or no_progress
    report(0.0, "rendering the report")
    document = build_pdf(title, values)
    report(60.0, "writing the PDF")
    written = write_pdf(document, out_dir=out_dir, name=name)
    stats = describe(values)
    subject_line = _one_line(subject) if subject and subject.strip() else _one_line(title)
    domain = smtp.sender.rpartition("@")[2] or "localhost"
    # the task's idempotency key as Message-ID: a repeat spectask could not prevent is the same
    # message to the receiver (spectask.runtime.context.TaskContext.idempotency_key)
    key = idempotency_key and safe_name(idempotency_key)
    message_id = f"<{key}@{domain}>" if key else make_msgid(idstring=name, domain=domain)
    body = (
        f"{title}\n\n"
        f"{stats.count} values: mean {stats.mean:.6g}, median {stats.median:.6g}, "
        f"min {stats.min:.6g}, max {stats.max:.6g}.\n"
        f"The full report is attached ({document.pages} page(s)).\n"
    )
    message = build_message(
        sender=smtp.sender,
        recipients=recipients,
        subject=subject_line,
        body=body,
        attachment=document.data,
        filename=attachment_name(title),
        message_id=message_id,
    )
    report(70.0, f"sending to {len(recipients)} recipient(s) via {smtp.host}:{smtp.port}")
    send(message, smtp=smtp, recipients=recipients)
    return EmailOutput(
        path=written.path,
        pages=written.pages,
        bytes=written.bytes,
        recipients=recipients,
        subject=subject_line,
        message_id=message_id,
    )
