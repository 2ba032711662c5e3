"""Rendering the IR through jinja2 templates: one template per emitted file.

Templates only place values; every decision (names, order, which imports) is made in the IR or
here, so a template reads like the file it produces.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import jinja2

from spectask.codegen.formatting import LINE_LENGTH
from spectask.codegen.ir import Project, ReceiveOp, SendOp, Service
from spectask.codegen.models import GeneratedModels

TEMPLATES = Path(__file__).parent / "templates"


def py(value: Any) -> str:
    """A Python literal for a value from the spec (str, int, float, bool, None)."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # double quotes, as ruff format wants
    if value is None or isinstance(value, bool | int | float):
        return repr(value)
    raise TypeError(f"no literal for {value!r}")


def docstring(text: str, indent: int) -> str:
    """Docstring body for spec text: escaped, and wrapped to fit the line length."""
    text = text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    if len(text) <= LINE_LENGTH - indent - 6:
        return text
    pad = "\n" + " " * indent
    return pad.join(textwrap.wrap(text, LINE_LENGTH - indent - 3)) + pad


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # Python source, not HTML
    )
    env.filters["py"] = py
    env.filters["docstring"] = docstring
    return env


def header(project: Project, sources: str) -> str:
    """The two comment lines every emitted file starts with."""
    return f"# generated from {sources} by spectask — do not edit\n# spec sha256: {project.sha256}"


def _service_context(service: Service, models: GeneratedModels) -> dict[str, Any]:
    abc: set[str] = set()
    if service.has_client:
        abc |= {"AsyncGenerator", "Callable", "Iterable", "Sequence"}
    if service.receive_ops:
        abc |= {"Awaitable", "Callable", "Collection", "Mapping"}

    def model(op: SendOp | ReceiveOp) -> str:
        return models.reference(op.model)

    return {
        "service": service,
        "source": service.source,
        "client": f"{service.class_prefix}Client",
        "app": f"{service.class_prefix}App",
        "model": model,
        "models": models,
        "abc_imports": sorted(abc),
        "root_model": any(models.reference(m).startswith("RootModel[") for m in service.models),
        "uses_policies": any(op.policy for op in service.receive_ops),
        "handler_models": sorted({op.model for op in service.handler_ops}),
        "status_view": _status_view(service, models),
        "reply_models": {op.model: op.reply_model for op in service.receive_ops if op.reply_model},
        "uses_replies": any(op.reply_model for op in service.send_ops)
        or any(op.reply_model for op in service.receive_ops),
    }


def _status_view(service: Service, models: GeneratedModels) -> str:
    """The item model of the status reply's `tasks` (what `wait()` returns per task)."""
    op = service.status_op
    return models.reference(op.status_view) if op is not None and op.status_view else ""


def render(project: Project, models: GeneratedModels) -> dict[str, str]:
    """File name -> unformatted source, for every file of the generated package."""
    env = _environment()
    spec = project.spec_dir
    libraries = ", ".join(f"{spec}/{name}" for name in project.libraries) or f"{spec}/"
    files = {
        "__init__.py": env.get_template("__init__.py.j2").render(
            header=header(project, f"{spec}/*.asyncapi.yaml"),
            spec_dir=spec,
            services=[service.stem for service in project.services],
        ),
        "models.py": env.get_template("models.py.j2").render(
            header=header(project, libraries), body=models.source
        ),
        "topology.py": env.get_template("topology.py.j2").render(
            header=header(project, libraries), project=project
        ),
    }
    template = env.get_template("service.py.j2")
    for service in project.services:
        files[f"{service.stem}.py"] = template.render(
            header=header(project, f"{spec}/{service.source}"),
            spec_dir=spec,
            **_service_context(service, models),
        )
    return files
