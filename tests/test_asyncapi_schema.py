"""Issue 12: every spec document, alone and bundled, is valid against the official JSON Schema.

A second validator, independent of the official parser (tests/test_official_parser.py, ajv and
Spectral inside node): Python's `jsonschema` against the AsyncAPI JSON Schema that
`@asyncapi/specs` publishes (tools/asyncapi, pinned by its lock file; `make asyncapi-tools`).
The schema is the one of each document's own `asyncapi` version, so a move to another version
is checked against that version's schema. "Bundled" is a service document with every `$ref`
(into the other files too) replaced by what it points at: the one self-contained document a
tool that cannot follow files would read. Without the schemas the test is skipped, and fails
under CI=true.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator

from spectask.protocol.document import PATH as PROTOCOL_PATH
from tests.node_support import require
from tests.test_official_parser import check

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "tools" / "asyncapi" / "node_modules" / "@asyncapi" / "specs" / "schemas"
SPEC = ROOT / "spec"
DOCUMENTS = sorted(SPEC.glob("*.asyncapi.yaml"))


def load(path: Path) -> dict[str, Any]:
    """A document as the JSON a validator sees (YAML dates would not be strings)."""
    data: dict[str, Any] = json.loads(json.dumps(yaml.safe_load(path.read_text())))
    return data


def validator(version: str) -> Draft7Validator:
    """The official schema of one AsyncAPI version, with its formats checked."""
    path = SCHEMAS / f"{version}.json"
    require(SCHEMAS, "asyncapi-tools")
    assert path.is_file(), f"@asyncapi/specs has no schema for AsyncAPI {version}"
    schema = json.loads(path.read_text())
    return Draft7Validator(schema, format_checker=Draft7Validator.FORMAT_CHECKER)


def errors(document: dict[str, Any]) -> list[str]:
    """Every violation, one line each: where it is and what is wrong."""
    found = validator(str(document.get("asyncapi"))).iter_errors(document)
    return sorted(f"{'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in found)


def pointer(data: Any, fragment: str) -> Any:
    """Follow a JSON pointer (`/components/schemas/X`) into a document."""
    for token in filter(None, fragment.split("/")):
        data = data[token.replace("~1", "/").replace("~0", "~")]
    return data


def place(root: dict[str, Any], fragment: str, value: Any) -> None:
    """Put `value` at `fragment` in `root`, creating the mappings on the way."""
    *parents, last = [t.replace("~1", "/").replace("~0", "~") for t in fragment.split("/") if t]
    for token in parents:
        root = root.setdefault(token, {})
    root[last] = value


def bundle(path: Path) -> dict[str, Any]:
    """`path`'s document with what its `$ref`s reach in other files copied in.

    As the official bundler does for AsyncAPI 3: an object another file holds at
    `#/components/schemas/X` (or `#/channels/Y`) lands at the same place in this document and
    the reference becomes local, so what AsyncAPI requires to be a reference (an operation's
    channel and messages) stays one. A root entry that only referred there is replaced by
    what it referred to; two different objects for one place fail the bundle.
    """
    path = path.resolve()
    root = load(path)
    copied: set[str] = set()

    def localise(node: Any, file: Path) -> Any:
        if isinstance(node, list):
            return [localise(item, file) for item in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if not isinstance(ref, str):
            return {name: localise(value, file) for name, value in node.items()}
        name, _, fragment = ref.partition("#")
        target = (file.parent / name).resolve() if name else file
        if target != path and fragment not in copied:
            copied.add(fragment)
            value = localise(pointer(load(target), fragment), target)
            try:
                there = pointer(root, fragment)
            except (KeyError, TypeError):
                there = None
            moved = isinstance(there, dict) and isinstance(there.get("$ref"), str)
            assert there is None or moved or there == value, f"two objects for #{fragment}"
            place(root, fragment, value)
        return {"$ref": f"#{fragment}"}

    places: list[tuple[str, ...]] = [("channels", name) for name in root.get("channels", {})]
    places += [("operations", name) for name in root.get("operations", {})]
    for kind, entries in root.get("components", {}).items():
        places += [("components", kind, name) for name in entries]
    for place_ in places:
        *parents, name = place_
        entries = pointer(root, "/".join(parents))
        value = localise(entries[name], path)
        if value != {"$ref": "#/" + "/".join(place_)}:  # else it was moved here: keep that
            entries[name] = value
    return root


@pytest.mark.parametrize("path", [*DOCUMENTS, PROTOCOL_PATH], ids=lambda p: p.name)
def test_each_document_is_valid_against_the_official_schema(path: Path) -> None:
    assert errors(load(path)) == []


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: p.name)
def test_each_bundled_document_is_valid_against_the_official_schema(path: Path) -> None:
    bundled = bundle(path)
    assert '"$ref": "#' in json.dumps(bundled), "the references inside stay references"
    assert '"$ref": "./' not in json.dumps(bundled), "no reference leads to another file"
    assert errors(bundled) == []


def test_the_documents_are_on_the_latest_asyncapi_version() -> None:
    """3.1.0 is the newest schema @asyncapi/specs ships; the parser and spectask's generator
    both read it, so the spec moved (README: Official tooling)."""
    newest = max(
        (p.name.removesuffix(".json") for p in SCHEMAS.glob("3.*.json") if "$id" not in p.name),
        key=lambda v: tuple(map(int, v.split("."))),
        default="(none installed)",
    )
    versions = {load(p)["asyncapi"] for p in [*DOCUMENTS, PROTOCOL_PATH]}
    assert versions == {newest}


def test_the_schema_check_catches_a_broken_document() -> None:
    """The check can fail: a missing info.version, a channel address that is not a string and
    an operation whose action is neither send nor receive are each reported."""
    broken = load(SPEC / "producer.asyncapi.yaml")
    del broken["info"]["version"]
    broken["channels"]["imageProcessing"] = {"address": 5}
    broken["operations"]["submitImageResize"]["action"] = "publish"
    found = "\n".join(errors(broken))
    assert "info: 'version' is a required property" in found, found
    assert "channels.imageProcessing" in found, found
    assert "operations.submitImageResize" in found, found


def test_bundling_follows_references_across_files() -> None:
    """The bundled producer holds the channel, message and headers written in common and
    protocol documents, reached by local references only."""
    bundled = bundle(SPEC / "producer.asyncapi.yaml")

    def follow(node: Any) -> Any:
        while "$ref" in node:
            node = pointer(bundled, node["$ref"].removeprefix("#"))
        return node

    message = follow(bundled["operations"]["submitImageResize"]["messages"][0])
    assert message["bindings"]["amqp"]["messageType"] == "image_processing.resize"
    assert follow(message["headers"])["title"] == "TaskHeaders"
    assert bundled["channels"]["imageProcessing"]["bindings"]["amqp"]["is"] == "queue"


def test_the_official_parser_reads_the_bundled_documents(tmp_path: Path) -> None:
    """The bundles are documents the parser takes too: 0 errors, 0 warnings, nothing else."""
    paths = []
    for path in DOCUMENTS:
        paths.append(tmp_path / path.name)
        paths[-1].write_text(json.dumps(bundle(path)))
    done = check(*paths)
    expected = [*(f"{path}: parsed" for path in paths), "0 errors or warnings"]
    assert done.stdout.splitlines() == expected, done.stdout + done.stderr
