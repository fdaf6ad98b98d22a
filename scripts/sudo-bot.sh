#!/usr/bin/env bash
# For the tests of a bot that does not run as root: the user `layerbot-bot` (a stand-in for
# a site's bot account), a member of the job user's group, allowed by sudo to run Slurm's
# job commands as the job user, exactly as docs/security.md tells a site. Idempotent; root.
set -euo pipefail
BOT=${LAYERBOT_BOT_USER:-layerbot-bot}
JOB=${LAYERBOT_JOB_USER:-layerbot-job}
if [ "$(id -u)" != 0 ]; then
  echo "sudo-bot.sh: not root; skipped (the non-root tests are skipped too)"
  exit 0
fi
command -v sudo >/dev/null || (apt-get update -qq && apt-get install -y -qq sudo >/dev/null)
"$(dirname "$0")/jobuser.sh" >/dev/null
if ! id -u "$BOT" >/dev/null 2>&1; then
  useradd --system --user-group --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin "$BOT"
fi
usermod -aG "$JOB" "$BOT"  # the bot reads what jobs leave; never the other way round
rule=/etc/sudoers.d/layerbot-bot
tmp=$(mktemp)
{
  # Only where the site's slurm.conf is not the default one (as in scripts/slurm.sh).
  echo "Defaults:$BOT env_keep += \"SLURM_CONF\""
  # ALL, as docs/security.md gives it for the local executor (the launcher starts the PR's
  # job through it): the job user runs PR code anyway. A Slurm-only site can narrow it.
  echo "$BOT ALL=($JOB) NOPASSWD: ALL"
} > "$tmp"
visudo -cqf "$tmp"
install -m 0440 "$tmp" "$rule"
rm -f "$tmp"
echo "bot user: $(id "$BOT")"; cat "$rule"
