"""`spectask init DIR`: a minimal working project, ready for `make generate` and a worker.

It writes a spec with one task type (`text.wordcount`) and spectask's protocol document, a
package with its handler and the `Application` that `--app` names, a handler test that needs
no broker, a Makefile with the commands and a README. It refuses to overwrite files.
"""

from __future__ import annotations

import argparse
import keyword
import re
from pathlib import Path

import jinja2

from spectask.errors import ConfigError
from spectask.protocol import document

SCAFFOLD = Path(__file__).with_name("scaffold")
_PACKAGE = re.compile(r"^[a-z_][a-z0-9_]*$")
# scaffold template -> where it goes (PACKAGE is the project's package)
FILES = {
    "common.asyncapi.yaml.j2": "spec/common.asyncapi.yaml",
    "worker.asyncapi.yaml.j2": "spec/worker.asyncapi.yaml",
    "producer.asyncapi.yaml.j2": "spec/producer.asyncapi.yaml",
    "app.py.j2": "PACKAGE/app.py",
    "test_app.py.j2": "tests/test_app.py",
    "Makefile.j2": "Makefile",
    "README.md.j2": "README.md",
    "gitignore.j2": ".gitignore",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", type=Path, help="where the project goes (created if needed)")
    parser.add_argument(
        "--package", help="the Python package of its code (default: from the directory name)"
    )


def package_name(directory: Path, given: str | None) -> str:
    """`my-tasks` -> `my_tasks`; refused when it cannot be a Python package name."""
    name = given or re.sub(r"[^a-z0-9_]", "_", directory.resolve().name.lower())
    if not _PACKAGE.match(name) or keyword.iskeyword(name) or name in {"generated", "spectask"}:
        raise ConfigError(
            f"{name!r} cannot be the project's package name; pass --package a_python_name"
        )
    return name


def render(directory: Path, package: str) -> dict[Path, str]:
    """Every file of the project: path -> text."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(SCAFFOLD),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # Python, YAML and Markdown, not HTML
    )
    context = {"project": directory.resolve().name, "package": package}
    files = {
        directory / target.replace("PACKAGE", package): env.get_template(source).render(context)
        for source, target in FILES.items()
    }
    files[directory / package / "__init__.py"] = f'"""{context["project"]}: task handlers."""\n'
    files[directory / "tests" / "__init__.py"] = ""
    return files


def run(args: argparse.Namespace) -> int:
    directory: Path = args.directory
    package = package_name(directory, args.package)
    files = render(directory, package)
    protocol = directory / "spec" / document.DOCUMENT_NAME
    existing = [str(path) for path in [*files, protocol] if path.exists()]
    if existing:
        raise ConfigError(f"{directory} already has {', '.join(existing)}; nothing was written")
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    document.write_copy(directory / "spec")
    print(f"spectask: wrote a project in {directory} (package {package}); next:")
    print(f"  cd {directory} && make generate && make test")
    print("  make collector   # and in other shells: make worker, make produce")
    return 0
