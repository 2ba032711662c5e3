#!/usr/bin/env python3
"""The collector of this application: `spectask collect --app workloads.app:app` (see `--help`)."""

import sys

from spectask.cli import main
from workloads.app import APP_NAME

if __name__ == "__main__":
    sys.exit(main(["collect", "--app", APP_NAME, *sys.argv[1:]]))
