"""`python -m spectask.codegen.protocol_models`: write spectask/protocol/models.py.

The protocol's models ship inside the framework (an application's generated package
re-exports them), so they are generated here, from the protocol document alone, and committed;
`tests/test_protocol.py` fails when the committed file is not what this writes. Run it (or
`make protocol`) after changing spectask/protocol/spectask.asyncapi.yaml.
"""

from __future__ import annotations

import sys

from spectask.codegen.diagnostics import Diagnostics, SpecInvalidError
from spectask.codegen.formatting import format_sources
from spectask.codegen.load import load
from spectask.codegen.models import generate_models
from spectask.codegen.schema import collect_schemas
from spectask.protocol import document

TARGET = document.PATH.with_name("models.py")
HEADER = (
    f"# generated from spectask/protocol/{document.DOCUMENT_NAME} by `make protocol`"
    " — do not edit\n"
    '"""The protocol\'s message models and enums (pydantic), one class per schema."""\n\n'
)


def render() -> bytes:
    """The formatted source of spectask/protocol/models.py."""
    diagnostics = Diagnostics(document.PATH.parent)
    spec = load(document.PATH.parent, diagnostics)
    json_schema = collect_schemas(spec, diagnostics)
    if diagnostics.errors:
        raise SpecInvalidError(diagnostics.errors)
    models = generate_models(json_schema, ())
    return format_sources({"models.py": HEADER + models.source})["models.py"]


def main(argv: list[str] | None = None) -> int:
    del argv
    source = render()
    if TARGET.is_file() and TARGET.read_bytes() == source:
        print(f"spectask: {TARGET} is up to date")
        return 0
    TARGET.write_bytes(source)
    print(f"spectask: wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
