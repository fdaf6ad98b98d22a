#!/usr/bin/env bash
# Install layerbot and its locked dependencies into .venv (idempotent, a few seconds when warm).
# Needs only python3 (3.11+) and network access to PyPI; installs uv with pip if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v uv >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check uv
fi
uv sync --frozen --quiet
# The unprivileged user PR jobs run as (a no-op unless root).
scripts/jobuser.sh
