"""The code generator: AsyncAPI 3 documents in `spec/` -> typed Python package in `generated/`.

A pipeline of one concept per module: load (YAML + `$ref`s) -> validate (all errors as values)
-> IR (frozen, sorted) -> models (datamodel-code-generator) -> render (jinja2, ruff) -> write
(atomic swap). `main` is what `make generate` and `spectask generate` run.
"""

from __future__ import annotations

from spectask.codegen.cli import build, main

__all__ = ["build", "main"]
