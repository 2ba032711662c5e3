"""The protocol document the framework ships, and its copy in an application's spec directory.

An application's spec carries a byte-for-byte copy of `spectask.asyncapi.yaml`, so a client in
any language reads the whole contract from the application's spec alone, and `$ref`s to it
resolve with any AsyncAPI tool. The generator refuses a copy that differs from what this
spectask ships; `spectask protocol DIR` writes or refreshes it.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import yaml

DOCUMENT_NAME = "spectask.asyncapi.yaml"
PATH = Path(__file__).with_name(DOCUMENT_NAME)


@cache
def shipped_bytes() -> bytes:
    """The protocol document's bytes, as this spectask ships them."""
    return PATH.read_bytes()


@cache
def version() -> int:
    """The protocol's version (`x-spectask-protocol` at the document's root)."""
    found = yaml.safe_load(shipped_bytes()).get("x-spectask-protocol")
    assert isinstance(found, int), "the shipped protocol document names its version"
    return found


def write_copy(spec_dir: Path) -> tuple[Path, bool]:
    """Write the protocol document into `spec_dir`; (its path, whether anything changed)."""
    target = spec_dir / DOCUMENT_NAME
    if target.is_file() and target.read_bytes() == shipped_bytes():
        return target, False
    spec_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{DOCUMENT_NAME}.tmp")
    partial.write_bytes(shipped_bytes())
    partial.replace(target)
    return target, True
