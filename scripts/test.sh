#!/usr/bin/env bash
# The whole test suite, with every real service it needs: PostgreSQL, an S3 server, Slurm.
# Usage: scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
scripts/postgres.sh start
scripts/s3.sh start
scripts/slurm.sh install
scripts/slurm.sh start
scripts/sudo-bot.sh  # a stand-in bot account that is not root, for the sudo tests
scripts/easybuild.sh
command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)
mkdir -p test-artifacts
uv run ruff check src tests benchmarks
uv run mypy
exec uv run pytest -p no:cacheprovider "$@"
