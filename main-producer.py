#!/usr/bin/env python3
"""The producer of this application: `spectask produce --app workloads.app:app` (see `--help`)."""

import sys

from spectask.cli import main
from workloads.app import APP_NAME

if __name__ == "__main__":
    sys.exit(main(["produce", "--app", APP_NAME, *sys.argv[1:]]))
