#!/usr/bin/env bash
# Install layerbot and its locked dependencies into .venv (idempotent, a few seconds when warm).
# Needs only python3 (3.11+) and network access to PyPI; installs uv with pip if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v uv >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check uv
fi
# With bytecode, as pip installs: where PYTHONDONTWRITEBYTECODE is set (as on the development
# machines) Python would compile everything it imports at every start (`layerbot jobs`: 0.6 s
# more). Done once here rather than as a uv setting, which re-checks it at every `uv run`.
uv sync --frozen --quiet --compile-bytecode
# The unprivileged user PR jobs run as (a no-op unless root).
scripts/jobuser.sh
