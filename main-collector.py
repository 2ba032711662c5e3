#!/usr/bin/env python3
"""The collector: a thin wrapper around `spectask collect` (see `--help`)."""

import sys

from spectask.cli import main

if __name__ == "__main__":
    sys.exit(main(["collect", *sys.argv[1:]]))
