"""The adapters from generated payload models to the task functions, and their registration."""

from __future__ import annotations

import base64
import io
import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pytest
from PIL import Image

import generated.models as models
import generated.worker as worker
import workloads.handlers as handlers
from spectask.errors import TaskCancelledError
from spectask.runtime.context import TaskContext
from workloads.errors import PermanentTaskError
from workloads.settings import TaskSettings

pytestmark = pytest.mark.timeout(60)

OPERATIONS = {
    "image_resize": ("image_processing", "resize", "ImageResize"),
    "image_convert": ("image_processing", "convert", "ImageConvert"),
    "image_filter": ("image_processing", "filter", "ImageFilter"),
    "data_aggregate": ("data_analysis", "aggregate", "DataAggregate"),
    "data_statistics": ("data_analysis", "statistics", "DataStatistics"),
    "data_detect_patterns": ("data_analysis", "detect_patterns", "DataDetectPatterns"),
    "report_pdf": ("report_generation", "pdf", "ReportPdf"),
    "report_chart": ("report_generation", "chart", "ReportChart"),
    "report_email": ("report_generation", "email", "ReportEmail"),
}


def context(name: str, task_id: str = "task-1") -> TaskContext:
    task_type, operation, _ = OPERATIONS[name]
    return TaskContext(
        task_id=task_id,
        message_type=f"{task_type}.{operation}",
        task_type=task_type,
        operation=operation,
        attempt=1,
        worker_id="w1",
        routing_key=f"{task_type}.{operation}",
        redelivered=False,
        submitted_at=None,
        priority=5,
    )


def call(name: str, body: dict[str, Any], settings: TaskSettings, task_id: str = "task-1") -> Any:
    """Validate `body` into the generated model and run the adapter, as the runtime would."""
    payload = getattr(models, OPERATIONS[name][2]).model_validate(body)
    result = getattr(handlers, name)(payload, context(name, task_id), settings)
    # The runtime publishes model_dump(mode="json"): it must be a JSON object.
    dumped = result.model_dump(mode="json", by_alias=True)
    assert isinstance(json.loads(json.dumps(dumped)), dict)
    return dumped


@pytest.fixture
def settings(tmp_path: Path) -> TaskSettings:
    return TaskSettings(output_dir=tmp_path, image_input_root=tmp_path, max_image_pixels=1_000_000)


@pytest.fixture
def png_base64() -> str:
    buffer = io.BytesIO()
    Image.linear_gradient("L").resize((40, 20)).convert("RGB").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_image_handlers(settings: TaskSettings, png_base64: str, tmp_path: Path) -> None:
    source = {"data_base64": png_base64}
    resized = call("image_resize", {"image": source, "width": 20, "height": 20}, settings, "r")
    assert resized["path"] == str(tmp_path / "images" / "r.png")
    assert (resized["width"], resized["height"], resized["format"]) == (20, 10, "PNG")

    converted = call("image_convert", {"image": source, "format": "WEBP"}, settings, "c")
    assert converted["path"] == str(tmp_path / "images" / "c.webp")
    with Image.open(converted["path"]) as written:
        assert written.format == "WEBP"

    path = tmp_path / "in.png"
    path.write_bytes(base64.b64decode(png_base64))
    gray = call(
        "image_filter", {"image": {"path": str(path)}, "filter": "grayscale"}, settings, "f"
    )
    with Image.open(gray["path"]) as written:
        assert written.mode == "L"


def test_image_paths_are_confined_to_the_input_root(
    settings: TaskSettings, png_base64: str, tmp_path: Path
) -> None:
    (tmp_path / "in.png").write_bytes(base64.b64decode(png_base64))
    relative = call("image_convert", {"image": {"path": "in.png"}, "format": "GIF"}, settings)
    assert relative["path"] == str(tmp_path / "images" / "task-1.gif")
    for path in ["/etc/passwd", "/proc/self/environ", "/etc/hostname"]:
        with pytest.raises(PermanentTaskError, match="not inside the worker's image input dir"):
            call("image_resize", {"image": {"path": path}, "width": 5, "height": 5}, settings)
    with pytest.raises(PermanentTaskError, match=r"must not contain '\.\.'"):
        body = {"image": {"path": "../../../../etc/hostname"}, "filter": "blur"}
        call("image_filter", body, settings)


def test_the_default_input_root_is_in_under_the_working_directory() -> None:
    assert TaskSettings().image_input_root == Path("in")


def test_settings_byte_limit_applies_to_files_and_inline_images(
    png_base64: str, tmp_path: Path
) -> None:
    (tmp_path / "in.png").write_bytes(base64.b64decode(png_base64))
    small = TaskSettings(output_dir=tmp_path, image_input_root=tmp_path, max_image_bytes=100)
    for source in ({"path": "in.png"}, {"data_base64": png_base64}):
        with pytest.raises(PermanentTaskError, match=r"more than the limit of 100 bytes"):
            call("image_convert", {"image": source, "format": "PNG"}, small)


def test_image_source_must_be_exactly_one(settings: TaskSettings) -> None:
    with pytest.raises(PermanentTaskError, match="exactly one"):
        call("image_resize", {"image": {}, "width": 5, "height": 5}, settings)


def test_settings_pixel_limit_applies(png_base64: str, tmp_path: Path) -> None:
    small = TaskSettings(output_dir=tmp_path, max_image_pixels=100)
    with pytest.raises(PermanentTaskError, match="more than the limit of 100"):
        call("image_convert", {"image": {"data_base64": png_base64}, "format": "PNG"}, small)


def test_analysis_handlers(settings: TaskSettings) -> None:
    records = [{"g": "a", "v": 1}, {"g": "b", "v": 2}, {"g": "a", "v": 3}]
    aggregated = call(
        "data_aggregate",
        {"records": records, "group_by": "g", "field": "v", "function": "max"},
        settings,
    )
    assert [(g["key"], g["value"]) for g in aggregated["groups"]] == [("a", 3), ("b", 2)]

    stats = call("data_statistics", {"values": [1, 2, 3, 4]}, settings)
    assert (stats["mean"], stats["median"]) == (2.5, 2.5)
    assert [p["percentile"] for p in stats["percentiles"]] == [25, 50, 75, 95]
    custom = call("data_statistics", {"values": [1, 2, 3, 4], "percentiles": [50]}, settings)
    assert custom["percentiles"] == [{"percentile": 50.0, "value": 2.5}]

    patterns = call(
        "data_detect_patterns",
        {"values": [1, 2, 1, 2, 1, 2, 40, 2, 1], "method": "iqr", "threshold": 1.5},
        settings,
    )
    assert [a["index"] for a in patterns["anomalies"]] == [6]


def test_empty_values_are_permanent(settings: TaskSettings) -> None:
    with pytest.raises(PermanentTaskError, match="no values"):
        call("data_statistics", {"values": []}, settings)


def test_report_handlers(settings: TaskSettings, tmp_path: Path) -> None:
    pdf = call("report_pdf", {"title": "T", "series": [1, 3, 2]}, settings, "p")
    assert pdf["path"] == str(tmp_path / "reports" / "p.pdf")
    assert Path(pdf["path"]).read_bytes().startswith(b"%PDF-")
    chart = call("report_chart", {"title": "T", "series": [1, 3, 2], "kind": "bar"}, settings, "c")
    assert chart["path"] == str(tmp_path / "charts" / "c.png")


def test_email_handler_connection_refused_is_transient(tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = TaskSettings(
        output_dir=tmp_path,
        smtp_host="127.0.0.1",
        smtp_port=port,
        mail_allowed_domains="example.org",  # a string, as the environment gives it
    )
    with pytest.raises(ConnectionRefusedError):
        call("report_email", {"title": "T", "series": [1], "to": ["a@example.org"]}, settings)


def test_email_handler_sends_nowhere_by_default(tmp_path: Path) -> None:
    """No allow-list configured: every recipient is refused before anything is rendered."""
    settings = TaskSettings(output_dir=tmp_path)
    with pytest.raises(PermanentTaskError) as raised:
        call("report_email", {"title": "T", "series": [1], "to": ["a@example.org"]}, settings)
    assert str(raised.value) == (
        "1 of 1 recipients refused, nothing was sent: 'a@example.org': the domain "
        "'example.org' is not allowed (no domain is allowed yet: set "
        "SPECTASK_MAIL_ALLOWED_DOMAINS=example.org,...)"
    )
    assert not (tmp_path / "reports").exists()


def test_email_schema_refuses_lists_in_one_address_and_too_many_recipients() -> None:
    for to in (["x,evil@attacker.test"], ["a@example.org\r\nBcc: e@example.org"]):
        with pytest.raises(ValueError, match="String should match pattern"):
            models.ReportEmail.model_validate({"title": "T", "series": [1], "to": to})
    many = [f"u{i}@example.org" for i in range(101)]
    with pytest.raises(ValueError, match="at most 20 items"):
        models.ReportEmail.model_validate({"title": "T", "series": [1], "to": many})


def test_unsafe_task_id_is_permanent(settings: TaskSettings) -> None:
    with pytest.raises(PermanentTaskError, match="cannot name an output file"):
        call("report_chart", {"title": "T", "series": [1]}, settings, task_id="../../etc/x")


def test_register_all_registers_nine_sync_handlers(settings: TaskSettings) -> None:
    registered: dict[str, Any] = {}

    class RecordingApp:
        def __getattr__(self, attribute: str) -> Any:
            assert attribute.startswith("process_")

            def register(handler: Any) -> Any:
                registered[attribute.removeprefix("process_")] = handler
                return handler

            return register

    handlers.register_all(cast(worker.WorkerApp, RecordingApp()), settings)
    assert set(registered) == set(OPERATIONS)
    body = {"title": "T", "series": [1.0, 2.0]}
    result = registered["report_chart"](
        models.ReportChart.model_validate(body), context("report_chart")
    )
    assert result.path == str(settings.output_dir / "charts" / "task-1.png")
    assert registered["report_chart"].__name__ == "report_chart"


def test_register_all_on_the_generated_app(settings: TaskSettings) -> None:
    app = worker.WorkerApp()
    handlers.register_all(app, settings)
    assert len(app.handlers) == 9


class _Recorder:
    """TaskContext signals that record progress and cancel after `cancel_after` reports."""

    def __init__(self, cancel_after: int | None = None) -> None:
        self.reports: list[tuple[float, str | None]] = []
        self.cancel_after = cancel_after

    def report(self, percent: float, message: str | None) -> None:
        self.reports.append((percent, message))

    def cancelled(self) -> bool:
        return self.cancel_after is not None and len(self.reports) >= self.cancel_after


def test_report_handlers_report_their_stages_and_stop_when_cancelled(
    settings: TaskSettings, tmp_path: Path
) -> None:
    payload = models.ReportPdf.model_validate({"title": "T", "series": [1, 3, 2]})
    recorder = _Recorder()
    ctx = replace(context("report_pdf", "staged"), signals=recorder)
    handlers.report_pdf(payload, ctx, settings)
    assert [percent for percent, _ in recorder.reports] == [0.0, 80.0]
    assert recorder.reports[1][1] == "writing the PDF"

    cancelled = replace(context("report_pdf", "cancelled"), signals=_Recorder(cancel_after=1))
    with pytest.raises(TaskCancelledError):
        handlers.report_pdf(payload, cancelled, settings)
    assert not (tmp_path / "reports" / "cancelled.pdf").exists(), "stopped before writing"


def test_every_setting_a_message_names_exists() -> None:
    """Error messages name SPECTASK_* variables to fix: each must be a real setting."""
    named: set[str] = set()
    for module in ("images", "inputs", "mail", "recipients", "smtp"):
        source = (Path(handlers.__file__).parent / f"{module}.py").read_text()
        named |= set(re.findall(r"SPECTASK_([A-Z_]+[A-Z])", source))
    assert {"IMAGE_INPUT_ROOT", "MAX_IMAGE_BYTES", "MAIL_ALLOWED_DOMAINS"} <= named
    assert {name.lower() for name in named} <= set(TaskSettings.model_fields)
