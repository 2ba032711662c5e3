#!/usr/bin/env python3
"""The worker of this application: `spectask worker --app workloads.app:app` (see `--help`)."""

import sys

from spectask.cli import main
from workloads.app import APP_NAME

if __name__ == "__main__":
    sys.exit(main(["worker", "--app", APP_NAME, *sys.argv[1:]]))
