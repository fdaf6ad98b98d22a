#!/usr/bin/env bash
# The dedicated unprivileged user that PR job scripts run as (build.run_as's default when the
# bot runs as root): no login shell, no home, its own group. Idempotent; needs root (skipped
# with a note otherwise). See docs/security.md.
set -euo pipefail
USER_NAME=${LAYERBOT_JOB_USER:-layerbot-job}
if [ "$(id -u)" != 0 ]; then
  echo "jobuser.sh: not root; create the user '$USER_NAME' as root (see docs/security.md)"
  exit 0
fi
if ! getent group "$USER_NAME" >/dev/null; then
  groupadd --system "$USER_NAME"
fi
if ! id -u "$USER_NAME" >/dev/null 2>&1; then
  useradd --system --gid "$USER_NAME" --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin "$USER_NAME"
fi
echo "job user: $(id "$USER_NAME")"
