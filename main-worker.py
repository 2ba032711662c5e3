#!/usr/bin/env python3
"""The worker: a thin wrapper around `spectask worker` (see `--help`)."""

import sys

from spectask.cli import main

if __name__ == "__main__":
    sys.exit(main(["worker", *sys.argv[1:]]))
