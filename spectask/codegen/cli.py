"""`spectask generate`: spec directory in, typed package out, or a list of what is wrong.

Exit codes: 0 done (or up to date with `--check`), 1 spec errors or stale output. Errors go to
stderr, one per problem, each with the file, the JSON path and a hint.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from spectask.codegen.diagnostics import Diagnostics, SpecInvalidError
from spectask.codegen.formatting import format_sources
from spectask.codegen.load import load
from spectask.codegen.models import generate_models, merge, protocol_models
from spectask.codegen.render import render
from spectask.codegen.validate import validate
from spectask.codegen.write import stale_files, write_atomically
from spectask.errors import SpectaskError


def build(spec_dir: Path) -> dict[str, bytes]:
    """The generated package for a spec directory: file name -> formatted bytes."""
    diagnostics = Diagnostics(spec_dir)
    project = validate(load(spec_dir, diagnostics), diagnostics)
    if project is None:
        raise SpecInvalidError(diagnostics.errors)
    payloads = {model for service in project.services for model in service.models}
    shipped = set(project.protocol_schemas)
    models = merge(
        protocol_models(project.protocol_schemas, payloads & shipped),
        generate_models(project.json_schema, payloads - shipped),
    )
    return format_sources(render(project, models))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spectask generate",
        description="Generate typed spectask clients from AsyncAPI 3 documents.",
    )
    parser.add_argument("--spec", default="spec", help="directory of *.asyncapi.yaml (spec)")
    parser.add_argument("--out", default="generated", help="package to write (generated)")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if --out is not up to date; write nothing"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the generator; returns the process exit code."""
    args = _parser().parse_args(argv)
    spec, out = Path(args.spec), Path(args.out)
    try:
        files = build(spec)
        if args.check:
            stale = stale_files(out, files)
            if stale:
                print(
                    f"spectask: {out} is out of date ({', '.join(stale)}); run `make generate`",
                    file=sys.stderr,
                )
                return 1
            print(f"spectask: {out} is up to date with {spec} ({len(files)} files)")
            return 0
        write_atomically(out, files)
    except SpecInvalidError as exc:
        for error in exc.errors:
            print(error, file=sys.stderr)
        print(
            f"spectask: {len(exc.errors)} error(s) in {spec}; {out} was not changed",
            file=sys.stderr,
        )
        return 1
    except SpectaskError as exc:
        print(f"spectask: {exc}", file=sys.stderr)
        return 1
    print(f"spectask: wrote {out} ({len(files)} files: {', '.join(sorted(files))}) from {spec}")
    return 0
