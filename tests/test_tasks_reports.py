"""Charts, PDF reports and e-mail, checked with tools independent of the ones that made them."""

from __future__ import annotations

import io
import math
import smtplib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image
from pypdf import PdfReader

from tests.mail_support import POLICY, Inbox, send_report, serving
from workloads import mail, reports
from workloads.errors import PermanentTaskError
from workloads.mailsink import free_port
from workloads.smtp import SmtpSettings

pytestmark = pytest.mark.timeout(60)

SERIES = [3.0, 5.0, 4.0, 6.0, 8.0, 7.0, 9.0, 12.0, 10.0, 30.0, 11.0, 13.0]


def png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        assert image.format == "PNG"
        return image.size


# --- charts ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", reports.CHART_KINDS)
def test_chart_is_a_png_of_the_requested_size(kind: str, tmp_path: Path) -> None:
    result = reports.write_chart(SERIES, title="Sales", kind=kind, out_dir=tmp_path, name="c1")
    assert result.path == str(tmp_path / "c1.png")
    data = Path(result.path).read_bytes()
    assert len(data) == result.bytes
    assert png_size(data) == (result.width, result.height) == (800, 450)
    assert (result.format, result.points) == ("PNG", len(SERIES))


def test_line_and_bar_charts_differ() -> None:
    line = reports.render_chart(SERIES, title="t", kind="line")
    bar = reports.render_chart(SERIES, title="t", kind="bar")
    assert line != bar
    assert reports.render_chart(SERIES, title="t", kind="line") == line  # deterministic


def test_long_bar_chart_and_single_point() -> None:
    many = [math.sin(i / 50) for i in range(5000)]
    assert png_size(reports.render_chart(many, title="many", kind="bar")) == (800, 450)
    assert png_size(reports.render_chart([1.0], title="one", kind="line")) == (800, 450)


def test_dollar_signs_in_titles_are_not_mathtext() -> None:
    # Unbalanced "$" would make matplotlib's mathtext parser raise if it were not escaped.
    assert png_size(reports.render_chart(SERIES, title="cost $5 and $x^", kind="line"))


def test_charts_render_concurrently_in_threads() -> None:
    def render(i: int) -> bytes:
        return reports.render_chart([float(v * i) for v in SERIES], title=f"t{i}", kind="line")

    with ThreadPoolExecutor(max_workers=4) as pool:
        charts = list(pool.map(render, range(1, 9)))
    assert all(png_size(chart) == (800, 450) for chart in charts)
    assert len(set(charts)) == 8


@pytest.mark.parametrize(
    ("series", "kind", "reason"),
    [
        ([], "line", r"there are no series to analyse"),
        ([1.0, math.inf], "line", r"series must be finite numbers: index 1 is inf"),
        ([1.0], "pie", r"unknown chart kind 'pie'"),
    ],
)
def test_bad_chart_input_is_permanent(
    series: list[float], kind: str, reason: str, tmp_path: Path
) -> None:
    with pytest.raises(PermanentTaskError, match=reason):
        reports.write_chart(series, title="t", kind=kind, out_dir=tmp_path, name="x")
    assert not list(tmp_path.iterdir())


# --- PDF ---------------------------------------------------------------------------------


def test_pdf_report_has_title_statistics_and_an_image(tmp_path: Path) -> None:
    result = reports.pdf_report(
        "Quarterly <sales> & returns",
        SERIES,
        "First note.\n\nSecond note\nwith a line break.",
        out_dir=tmp_path,
        name="r1",
    )
    path = Path(result.path)
    assert path == tmp_path / "r1.pdf"
    data = path.read_bytes()
    assert data.startswith(b"%PDF-")
    assert len(data) == result.bytes
    assert b"/Subtype /Image" in data

    reader = PdfReader(io.BytesIO(data))
    assert len(reader.pages) == result.pages == 1
    text = reader.pages[0].extract_text()
    for expected in (
        "Quarterly <sales> & returns",
        "Summary statistics",
        "Mean",
        "9.83333",  # 118 / 12
        "Median",
        "8.5",
        "Second note",
    ):
        assert expected in text
    assert len(reader.pages[0].images) == 1
    chart = reader.pages[0].images[0].image
    assert chart is not None and chart.width >= 400
    assert reader.metadata is not None and reader.metadata.title == "Quarterly <sales> & returns"


def test_pdf_is_deterministic() -> None:
    first = reports.build_pdf("Same", SERIES, "notes")
    assert reports.build_pdf("Same", SERIES, "notes").data == first.data


def test_long_notes_make_more_pages(tmp_path: Path) -> None:
    notes = "\n\n".join(f"Paragraph {i}: " + "lorem ipsum " * 40 for i in range(40))
    result = reports.pdf_report("Long", SERIES, notes[:10000], out_dir=tmp_path, name="long")
    assert result.pages > 1
    assert len(PdfReader(result.path).pages) == result.pages


def test_pdf_of_bad_series_is_permanent(tmp_path: Path) -> None:
    with pytest.raises(PermanentTaskError, match=r"index 2 is nan"):
        reports.pdf_report("t", [1.0, 2.0, math.nan], out_dir=tmp_path, name="x")


# --- e-mail ------------------------------------------------------------------------------


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, SmtpSettings]]:
    handler = Inbox()
    with serving(handler) as port:
        yield (
            handler,
            SmtpSettings(host="127.0.0.1", port=port, sender="reports@example.org", timeout=10),
        )


def test_report_is_emailed_with_the_pdf_attached(
    inbox: tuple[Inbox, SmtpSettings], tmp_path: Path
) -> None:
    handler, smtp = inbox
    result = mail.email_report(
        title="Weekly report",
        series=SERIES,
        to=["ann@example.org", "bob@example.org"],
        out_dir=tmp_path,
        name="e1",
        smtp=smtp,
        policy=POLICY,
    )
    assert result.recipients == ["ann@example.org", "bob@example.org"]
    assert result.subject == "Weekly report"
    assert result.path == str(tmp_path / "e1.pdf")

    assert len(handler.messages) == 1
    assert handler.encrypted == [False], "plain SMTP unless configured"
    sender, recipients, message = handler.messages[0]
    assert sender == "reports@example.org"
    assert recipients == ["ann@example.org", "bob@example.org"]
    assert message["Subject"] == "Weekly report"
    assert message["To"] == "ann@example.org, bob@example.org"
    assert message["Message-ID"] == result.message_id
    body = message.get_body(preferencelist=("plain",))
    assert body is not None and "12 values" in body.get_content()
    attachments = list(message.iter_attachments())
    assert len(attachments) == 1
    attachment = attachments[0]
    assert attachment.get_content_type() == "application/pdf"
    assert attachment.get_filename() == "Weekly-report.pdf"
    pdf = attachment.get_content()
    assert isinstance(pdf, bytes)
    assert pdf == Path(result.path).read_bytes()
    assert pdf.startswith(b"%PDF-") and b"/Subtype /Image" in pdf


def test_subject_comes_from_the_payload_and_cannot_inject_headers(
    inbox: tuple[Inbox, SmtpSettings], tmp_path: Path
) -> None:
    handler, smtp = inbox
    result = mail.email_report(
        title="T",
        series=[1.0],
        to=["ann@example.org"],
        subject="Hello\r\nBcc: eve@example.org",
        out_dir=tmp_path,
        name="e2",
        smtp=smtp,
        policy=POLICY,
    )
    assert result.subject == "Hello Bcc: eve@example.org"
    _, recipients, message = handler.messages[0]
    assert recipients == ["ann@example.org"]
    assert message["Bcc"] is None


def test_every_recipient_refused_is_permanent(
    inbox: tuple[Inbox, SmtpSettings], tmp_path: Path
) -> None:
    handler, smtp = inbox
    handler.refuse["nobody@example.org"] = "550 5.1.1 No such user"
    with pytest.raises(
        PermanentTaskError, match=r"refused every recipient: nobody@example.org: 550"
    ):
        send_report(smtp, tmp_path, ["nobody@example.org"], "e3")
    assert handler.messages == []


def test_some_recipients_refused_is_permanent_after_sending(
    inbox: tuple[Inbox, SmtpSettings], tmp_path: Path
) -> None:
    handler, smtp = inbox
    handler.refuse["nobody@example.org"] = "550 5.1.1 No such user"
    with pytest.raises(PermanentTaskError, match=r"refused 1 of 2 recipients .*not retried"):
        send_report(smtp, tmp_path, ["ann@example.org", "nobody@example.org"], "e4")
    assert [recipients for _, recipients, _ in handler.messages] == [["ann@example.org"]]


def test_temporary_refusal_is_transient(inbox: tuple[Inbox, SmtpSettings], tmp_path: Path) -> None:
    handler, smtp = inbox
    handler.refuse["busy@example.org"] = "450 4.2.1 Mailbox busy, try later"
    with pytest.raises(smtplib.SMTPRecipientsRefused) as raised:
        send_report(smtp, tmp_path, ["busy@example.org"], "e5")
    assert not isinstance(raised.value, PermanentTaskError)


def test_connection_refused_is_transient(tmp_path: Path) -> None:
    smtp = SmtpSettings(host="127.0.0.1", port=free_port(), timeout=5)
    with pytest.raises(ConnectionRefusedError):
        send_report(smtp, tmp_path, ["ann@example.org"], "e6")


def test_attachment_name_is_a_safe_file_name() -> None:
    assert mail.attachment_name("Q3 / sales: final?") == "Q3-sales-final.pdf"
    assert mail.attachment_name("///") == "report.pdf"
