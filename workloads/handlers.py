"""Adapters from the generated payload models to the task functions, and their registration.

Each adapter is a sync `handler(payload, context)`: the runtime runs it off the event loop.
It unpacks the payload into plain values, calls the core function and returns its result
model. `register_all` binds the settings and registers all nine on a generated `WorkerApp`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from generated import models
from generated.worker import WorkerApp
from spectask.runtime.context import TaskContext
from workloads import analysis, images, mail, reports
from workloads.output import safe_name
from workloads.settings import TaskSettings

PayloadT = TypeVar("PayloadT", bound=BaseModel)
ResultT = TypeVar("ResultT", bound=BaseModel)


@functools.cache
def _environment_settings() -> TaskSettings:
    return TaskSettings()


def _settings(settings: TaskSettings | None) -> TaskSettings:
    return settings if settings is not None else _environment_settings()


def _plain(value: Any) -> Any:
    """An enum member's value or a root model's root (generated models use both), else as is."""
    if isinstance(value, Enum):
        return value.value
    return getattr(value, "root", value)


def _plain_list(values: Iterable[Any] | None) -> list[Any] | None:
    return None if values is None else [_plain(value) for value in values]


def _or(value: Any, default: Any) -> Any:
    return default if value is None else _plain(value)


def _out_dir(settings: TaskSettings, kind: str) -> Path:
    return settings.output_dir / kind


def _source(image: models.ImageSource, settings: TaskSettings) -> images.Source:
    return images.image_source(
        image.path,
        image.data_base64,
        input_root=settings.image_input_root,
        max_bytes=settings.max_image_bytes,
    )


def image_resize(
    payload: models.ImageResize, context: TaskContext, settings: TaskSettings | None = None
) -> images.ImageOutput:
    cfg = _settings(settings)
    return images.resize_image(
        _source(payload.image, cfg),
        width=payload.width,
        height=payload.height,
        keep_aspect=bool(_or(payload.keep_aspect, True)),
        output_format=_or(payload.output_format, None),
        out_dir=_out_dir(cfg, "images"),
        name=safe_name(context.task_id),
        max_pixels=cfg.max_image_pixels,
    )


def image_convert(
    payload: models.ImageConvert, context: TaskContext, settings: TaskSettings | None = None
) -> images.ImageOutput:
    cfg = _settings(settings)
    return images.convert_image(
        _source(payload.image, cfg),
        output_format=str(_plain(payload.format)),
        quality=int(_or(payload.quality, images.DEFAULT_QUALITY)),
        out_dir=_out_dir(cfg, "images"),
        name=safe_name(context.task_id),
        max_pixels=cfg.max_image_pixels,
    )


def image_filter(
    payload: models.ImageFilter, context: TaskContext, settings: TaskSettings | None = None
) -> images.ImageOutput:
    cfg = _settings(settings)
    return images.filter_image(
        _source(payload.image, cfg),
        filter_name=str(_plain(payload.filter)),
        radius=float(_or(payload.radius, 2.0)),
        out_dir=_out_dir(cfg, "images"),
        name=safe_name(context.task_id),
        max_pixels=cfg.max_image_pixels,
    )


def data_aggregate(
    payload: models.DataAggregate, context: TaskContext, settings: TaskSettings | None = None
) -> analysis.AggregateResult:
    return analysis.aggregate(
        payload.records,
        group_by=payload.group_by,
        field=payload.field,
        function=str(_or(payload.function, "sum")),
    )


def data_statistics(
    payload: models.DataStatistics, context: TaskContext, settings: TaskSettings | None = None
) -> analysis.StatisticsResult:
    percentiles = _plain_list(payload.percentiles)
    return analysis.describe(
        payload.values,
        analysis.DEFAULT_PERCENTILES if percentiles is None else percentiles,
    )


def data_detect_patterns(
    payload: models.DataDetectPatterns, context: TaskContext, settings: TaskSettings | None = None
) -> analysis.PatternResult:
    return analysis.detect_patterns(
        payload.values,
        method=str(_or(payload.method, "zscore")),
        threshold=float(_or(payload.threshold, 3.0)),
    )


def report_pdf(
    payload: models.ReportPdf, context: TaskContext, settings: TaskSettings | None = None
) -> reports.PdfOutput:
    cfg = _settings(settings)
    return reports.pdf_report(
        payload.title,
        payload.series,
        payload.notes,
        out_dir=_out_dir(cfg, "reports"),
        name=safe_name(context.task_id),
        progress=context.progress,
    )


def report_chart(
    payload: models.ReportChart, context: TaskContext, settings: TaskSettings | None = None
) -> reports.ChartOutput:
    cfg = _settings(settings)
    return reports.write_chart(
        payload.series,
        title=payload.title,
        kind=str(_or(payload.kind, "line")),
        out_dir=_out_dir(cfg, "charts"),
        name=safe_name(context.task_id),
    )


def report_email(
    payload: models.ReportEmail, context: TaskContext, settings: TaskSettings | None = None
) -> mail.EmailOutput:
    cfg = _settings(settings)
    return mail.email_report(
        title=payload.title,
        series=payload.series,
        to=[str(address) for address in _plain_list(payload.to) or []],
        subject=payload.subject,
        out_dir=_out_dir(cfg, "reports"),
        name=safe_name(context.task_id),
        smtp=cfg.smtp_settings(),
        policy=cfg.recipient_policy(),
        progress=context.progress,
        idempotency_key=context.idempotency_key,
    )


def _with_settings(
    handler: Callable[[PayloadT, TaskContext, TaskSettings | None], ResultT],
    settings: TaskSettings,
    payload: PayloadT,
    context: TaskContext,
) -> ResultT:
    return handler(payload, context, settings)


def bind(
    handler: Callable[[PayloadT, TaskContext, TaskSettings | None], ResultT],
    settings: TaskSettings,
) -> Callable[[PayloadT, TaskContext], ResultT]:
    """The handler with `settings` bound: a plain sync `(payload, context)` callable.

    A `functools.partial` over module-level functions, not a closure, so it pickles: the
    worker runs sync handlers in child processes (`spectask.runtime.isolation`).
    """
    bound = functools.partial(_with_settings, handler, settings)
    # Named like the handler for logs and tests; not functools.wraps, whose __wrapped__
    # would make inspect.signature show three parameters.
    vars(bound).update(
        __name__=handler.__name__, __qualname__=handler.__qualname__, __doc__=handler.__doc__
    )
    return bound


def register_all(app: WorkerApp, settings: TaskSettings) -> None:
    """Register the nine task handlers on a generated worker app."""
    app.process_image_resize(bind(image_resize, settings))
    app.process_image_convert(bind(image_convert, settings))
    app.process_image_filter(bind(image_filter, settings))
    app.process_data_aggregate(bind(data_aggregate, settings))
    app.process_data_statistics(bind(data_statistics, settings))
    app.process_data_detect_patterns(bind(data_detect_patterns, settings))
    app.process_report_pdf(bind(report_pdf, settings))
    app.process_report_chart(bind(report_chart, settings))
    app.process_report_email(bind(report_email, settings))
