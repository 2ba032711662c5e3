#!/usr/bin/env python3
"""The dashboard of this application: `spectask dashboard --app workloads.app:app` (`--help`)."""

import sys

from spectask.cli import main
from workloads.app import APP_NAME

if __name__ == "__main__":
    sys.exit(main(["dashboard", "--app", APP_NAME, *sys.argv[1:]]))
