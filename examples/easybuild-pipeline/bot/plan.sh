#!/usr/bin/env bash
# The pipeline's plan script (layerbot.toml: pipelines.plan_script): runs instead of a job
# script, in the checkout, and writes the plan to $LAYERBOT_PLAN_FILE. The work is done by
# bot/plan.py; this wrapper only sets up what EasyBuild needs: Lmod (EasyBuild asks it which
# modules exist) and the modules the layer already has ($LAYERBOT_EB_MODULEPATH).
# EasyBuild comes from $LAYERBOT_EB (default /opt/layerbot-easybuild/bin/eb: scripts/easybuild.sh).
set -euo pipefail

export LAYERBOT_EB=${LAYERBOT_EB:-/opt/layerbot-easybuild/bin/eb}
# The venv's own Python: the job's PATH may hold shims that need the bot's environment.
export EB_PYTHON=${EB_PYTHON:-$(dirname "$LAYERBOT_EB")/python}

set +u  # Lmod's init scripts use unset variables
source "$(ls -d /usr/share/lmod/*/init/bash | head -1)"
# Only what the layer already has counts as installed, not whatever the host's default
# MODULEPATH holds.
module --force purge
unset MODULEPATH
IFS=: read -ra site_modules <<< "${LAYERBOT_EB_MODULEPATH:-}"
for dir in "${site_modules[@]}"; do
  [ -n "$dir" ] && module use "$dir"
done
set -u
export MODULEPATH=${MODULEPATH:-}

# The system's Python, stdlib only: the job's PATH is not trusted to hold the right one.
python=$(command -v /usr/bin/python3 || command -v python3)
exec "$python" "$(dirname "$0")/plan.py"
