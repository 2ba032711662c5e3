"""Reports: PNG charts with matplotlib and PDF reports with reportlab.

matplotlib is used only through its object-oriented API (`Figure` on an Agg canvas), never
pyplot, so no GUI backend is selected and no global current-figure state is shared between
the handler threads; rendering is additionally serialized by a lock because matplotlib does
not promise thread safety for its shared caches (fonts, text layout).
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final
from xml.sax.saxutils import escape

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from pydantic import BaseModel, ConfigDict
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.lib.units import cm
from reportlab.platypus import Image, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle
from reportlab.platypus.flowables import Flowable

from workloads.analysis import as_series, describe, trend
from workloads.errors import PermanentTaskError
from workloads.output import write_atomic

CHART_KINDS: Final = ("line", "bar")
MAX_DRAWN_BARS: Final = 1000
"""Longer bar charts are drawn as one line collection (one vertical line per value)."""

_RENDER_LOCK = threading.Lock()

# A stage reached: (percent, what happens now). TaskContext.progress is one; it raises
# TaskCancelledError when the task was cancelled, so a stage boundary is a cancellation point.
Progress = Callable[[float, str], None]


class ChartOutput(BaseModel):
    model_config = ConfigDict(frozen=True)

    path: str
    width: int
    height: int
    format: str
    points: int
    bytes: int


class PdfOutput(BaseModel):
    model_config = ConfigDict(frozen=True)

    path: str
    pages: int
    bytes: int


class PdfDocument(BaseModel):
    """A rendered PDF, not yet written anywhere."""

    model_config = ConfigDict(frozen=True)

    data: bytes
    pages: int


def _plain_text(text: str) -> str:
    """Text for matplotlib with `$` escaped, so user text is never parsed as mathtext."""
    return text.replace("$", r"\$")


def render_chart(
    series: Iterable[float],
    *,
    title: str,
    kind: str = "line",
    width_inches: float = 8.0,
    height_inches: float = 4.5,
    dpi: int = 100,
) -> bytes:
    """A PNG chart of the series against its index."""
    if kind not in CHART_KINDS:
        raise PermanentTaskError(
            f"unknown chart kind {kind!r}; use one of {', '.join(CHART_KINDS)}"
        )
    values = as_series(series, "series")
    x = np.arange(values.size)
    with _RENDER_LOCK:
        figure = Figure(figsize=(width_inches, height_inches), dpi=dpi, layout="constrained")
        FigureCanvasAgg(figure)  # attach the Agg canvas: no backend selection, no pyplot
        axes = figure.add_subplot()
        if kind == "line":
            axes.plot(x, values, color="tab:blue", linewidth=1.2, marker="o" if x.size == 1 else "")
        elif values.size <= MAX_DRAWN_BARS:
            axes.bar(x, values, color="tab:blue", width=0.8)
        else:
            axes.vlines(x, 0.0, values, color="tab:blue", linewidth=0.5)
        axes.set_title(_plain_text(title))
        axes.set_xlabel("index")
        axes.set_ylabel("value")
        axes.grid(True, alpha=0.3)
        buffer = io.BytesIO()
        # No "Software" text chunk: the same input gives the same bytes.
        figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def write_chart(
    series: Iterable[float],
    *,
    title: str,
    kind: str = "line",
    out_dir: Path,
    name: str,
    width_inches: float = 8.0,
    height_inches: float = 4.5,
    dpi: int = 100,
) -> ChartOutput:
    """Render a chart and write it atomically to `out_dir/<name>.png`."""
    values = as_series(series, "series")
    data = render_chart(
        values,
        title=title,
        kind=kind,
        width_inches=width_inches,
        height_inches=height_inches,
        dpi=dpi,
    )
    path = write_atomic(out_dir / f"{name}.png", data)
    return ChartOutput(
        path=str(path),
        width=round(width_inches * dpi),
        height=round(height_inches * dpi),
        format="PNG",
        points=int(values.size),
        bytes=len(data),
    )


def _number(value: float) -> str:
    return f"{value:.6g}"


def build_pdf(title: str, series: Iterable[float], notes: str | None = None) -> PdfDocument:
    """An A4 PDF: the title, a table of summary statistics, a chart of the series, notes.

    The PDF is built with reportlab's invariant mode (no creation date or random id), so the
    same input gives the same bytes.
    """
    if not title.strip():
        raise PermanentTaskError("the report title is empty")
    values = as_series(series, "series")
    stats = describe(values, percentiles=(5.0, 25.0, 75.0, 95.0))
    line = trend(values)
    chart = render_chart(values, title=title, kind="line", width_inches=8.0, height_inches=4.5)

    styles = getSampleStyleSheet()
    rows: list[list[str]] = [
        ["Statistic", "Value"],
        ["Count", str(stats.count)],
        ["Mean", _number(stats.mean)],
        ["Median", _number(stats.median)],
        ["Standard deviation", _number(stats.stdev)],
        ["Minimum", _number(stats.min)],
        ["Maximum", _number(stats.max)],
        *[[f"Percentile {p.percentile:g}", _number(p.value)] for p in stats.percentiles],
        ["Trend", f"{line.direction} (slope {_number(line.slope)} per value)"],
    ]
    table = Table(rows, colWidths=[6 * cm, 8 * cm], hAlign="LEFT")
    table.setStyle(
        TableStyle(
            [
                ("FONTNAME", (0, 0), (-1, 0), "Helvetica-Bold"),
                ("BACKGROUND", (0, 0), (-1, 0), colors.lightgrey),
                ("GRID", (0, 0), (-1, -1), 0.5, colors.grey),
                ("ALIGN", (1, 1), (1, -1), "RIGHT"),
            ]
        )
    )
    chart_width = 16 * cm
    story: list[Flowable] = [
        Paragraph(escape(title), styles["Title"]),
        Paragraph("Summary statistics", styles["Heading2"]),
        table,
        Spacer(1, 0.5 * cm),
        Paragraph("Series", styles["Heading2"]),
        Image(io.BytesIO(chart), width=chart_width, height=chart_width * 4.5 / 8.0),
    ]
    if notes and notes.strip():
        story.append(Paragraph("Notes", styles["Heading2"]))
        for block in notes.strip().split("\n\n"):
            if block.strip():
                text = escape(block.strip()).replace("\n", "<br/>")
                story.append(Paragraph(text, styles["BodyText"]))

    buffer = io.BytesIO()
    document = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        title=title,
        author="spectask",
        leftMargin=2 * cm,
        rightMargin=2 * cm,
        topMargin=2 * cm,
        bottomMargin=2 * cm,
        invariant=True,
    )
    document.build(story)
    return PdfDocument(data=buffer.getvalue(), pages=int(document.page))


def write_pdf(document: PdfDocument, *, out_dir: Path, name: str) -> PdfOutput:
    """Write a rendered PDF atomically to `out_dir/<name>.pdf`."""
    path = write_atomic(out_dir / f"{name}.pdf", document.data)
    return PdfOutput(path=str(path), pages=document.pages, bytes=len(document.data))


def pdf_report(
    title: str,
    series: Iterable[float],
    notes: str | None = None,
    *,
    out_dir: Path,
    name: str,
    progress: Progress | None = None,
) -> PdfOutput:
    """Build a PDF report and write it to `out_dir/<name>.pdf`, reporting each stage."""
    report = progress or no_progress
    report(0.0, "rendering the chart and the PDF")
    document = build_pdf(title, series, notes)
    report(80.0, "writing the PDF")
    return write_pdf(document, out_dir=out_dir, name=name)


def no_progress(percent: float, message: str) -> None:
    """Progress goes nowhere when the caller does not ask for it."""
