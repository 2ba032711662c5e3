"""`spectask spec diff OLD NEW`: is the new spec compatible with the old one?

Prints one line per change (`breaking for producers: message DataStatistics payload: field 'x'
became required`) and exits 0 when nothing breaks (or every breaking change's document had its
`info.version` major bumped), 1 when a change breaks producers or consumers, 2 when a directory
cannot be read. The rules are in `spectask.specdiff`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from spectask.specdiff import SpecDiffError, diff, read_spec

EXIT_COMPATIBLE, EXIT_BREAKING, EXIT_USAGE = 0, 1, 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="spec_action", required=True, metavar="ACTION")
    diff_parser = actions.add_parser("diff", help="classify the changes from OLD to NEW")
    diff_parser.add_argument("old", type=Path, help="the released spec directory")
    diff_parser.add_argument("new", type=Path, help="the changed spec directory (e.g. spec)")
    diff_parser.add_argument(
        "--breaking-only", action="store_true", help="print only the breaking changes"
    )


def run(args: argparse.Namespace) -> int:
    try:
        report = diff(read_spec(args.old), read_spec(args.new))
    except SpecDiffError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for change, line in zip(report.changes, report.lines(), strict=True):
        if change.breaks is not None or not args.breaking_only:
            print(line)
    blocking = report.blocking
    if blocking:
        owners = ", ".join(sorted({change.owner for change in blocking}))
        print(
            f"spec diff: {len(blocking)} breaking change(s); bump the info.version major of "
            f"{owners}, or make the change compatible",
            file=sys.stderr,
        )
        return EXIT_BREAKING
    print(f"spec diff: compatible ({len(report.changes)} change(s))")
    return EXIT_COMPATIBLE
