#!/usr/bin/env bash
# Debian's docker-compose (1.29, a Python client) for `docker-compose config` in
# tests/test_deploy_compose.py: it validates and interpolates the file without an engine.
# hadolint, kubernetes-validate and yamllint come from PyPI with the dev extra.
set -euo pipefail
if command -v docker-compose >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  apt-get install -y docker-compose >/dev/null || { apt-get update >/dev/null && apt-get install -y docker-compose >/dev/null; }
  exit 0
fi
# not root: say so; the compose test then fails under CI=true and is skipped elsewhere
echo "warning: docker-compose is missing; install Debian's docker-compose (apt-get install docker-compose) or the compose plugin" >&2
