#!/usr/bin/env bash
# EasyBuild under Lmod, for the EasyBuild example and its test: install (idempotent).
# Lmod from Debian; EasyBuild from PyPI in its own venv at ${LAYERBOT_EB_DIR:-/opt/layerbot-easybuild}.
set -euo pipefail
EB_DIR=${LAYERBOT_EB_DIR:-/opt/layerbot-easybuild}
if [ ! -f /usr/share/lmod/lmod/init/bash ] && ! ls /usr/share/lmod/*/init/bash >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq --no-install-recommends lmod >/dev/null
fi
# Jobs run as an unprivileged user (build.run_as, scripts/jobuser.sh): the venv must be built
# on a Python that user can run (the system's, not one under root's home).
PY=$(command -v /usr/bin/python3 || command -v python3)
usable() {
  [ -x "$EB_DIR/bin/eb" ] || return 1
  [ "$(id -u)" = 0 ] || return 0
  runuser -u nobody -- "$EB_DIR/bin/python" -c '' 2>/dev/null
}
if ! usable; then
  rm -rf "$EB_DIR"  # a venv records its own path: rebuild it in place
  "$PY" -m venv "$EB_DIR"
  "$EB_DIR/bin/pip" install --quiet --disable-pip-version-check 'easybuild==5.4.1'
fi
echo "EasyBuild: $EB_DIR/bin/eb; Lmod: $(ls -d /usr/share/lmod/*/init/bash | head -1)"
