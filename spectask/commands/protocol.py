"""`spectask protocol DIR`: write (or refresh) spectask's protocol document into a spec.

The application's spec carries a byte-for-byte copy of the protocol the installed spectask
ships, so `$ref`s to it resolve and a client in any language reads the whole contract from the
spec directory alone; `spectask generate` refuses a copy that differs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from spectask.protocol import document


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec_dir", type=Path, help="the spec directory (e.g. spec)")


def run(args: argparse.Namespace) -> int:
    path, changed = document.write_copy(args.spec_dir)
    state = "wrote" if changed else "up to date:"
    print(f"spectask: {state} {path} (protocol version {document.version()})")
    return 0
