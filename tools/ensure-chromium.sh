#!/usr/bin/env bash
# Debian's chromium for the dashboard's headless browser test: present, or installed as root.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  apt-get install -y chromium >/dev/null || { apt-get update >/dev/null && apt-get install -y chromium >/dev/null; }
  exit 0
fi
# not root: say so; the browser test then fails under CI=true and is skipped elsewhere
echo "warning: chromium is missing; install Debian's chromium (apt-get install chromium) for the dashboard browser test" >&2
