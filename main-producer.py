#!/usr/bin/env python3
"""The producer: a thin wrapper around `spectask produce` (see `--help`)."""

import sys

from spectask.cli import main

if __name__ == "__main__":
    sys.exit(main(["produce", *sys.argv[1:]]))
