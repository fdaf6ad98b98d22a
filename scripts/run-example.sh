#!/usr/bin/env bash
# Quick start: install layerbot into .venv and build the example software layer with
# `layerbot run` on the embedded defaults (local executor, data under /var/lib/layerbot).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/layerbot run examples/software-layer "$@"
