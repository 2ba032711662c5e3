#!/usr/bin/env bash
# Create the project's virtualenv with a Python >= 3.11, installing Debian's venv module if
# that is what is missing (as root on Debian/Ubuntu); otherwise say exactly what to install.
set -euo pipefail
venv=${1:-.venv}
python=${PYTHON:-}
if [ -z "$python" ]; then
  for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      python=$candidate; break
    fi
  done
fi
if [ -z "$python" ]; then
  echo "error: spectask needs Python >= 3.11; install it (Debian/Ubuntu: apt-get install python3)" >&2
  exit 1
fi
if "$python" -m venv "$venv" 2>/dev/null; then exit 0; fi
rm -rf "$venv"
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  version=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  echo "installing Debian's python${version}-venv (python3 -m venv is missing)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "python${version}-venv" ||
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
  exec "$python" -m venv "$venv"
fi
echo "error: '$python -m venv' failed; install the venv module (Debian/Ubuntu: sudo apt-get install python3-venv)" >&2
exit 1
