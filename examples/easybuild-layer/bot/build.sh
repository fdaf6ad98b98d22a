#!/usr/bin/env bash
# Builds every easyconfig of the PR with EasyBuild under Lmod, tests the modules, packs the
# installation into a tarball and writes result.json (layerbot's result format).
# EasyBuild comes from $LAYERBOT_EB (default /opt/layerbot-easybuild/bin/eb: scripts/easybuild.sh).
set -euo pipefail

EB=${LAYERBOT_EB:-/opt/layerbot-easybuild/bin/eb}
# The venv's own Python: the job's PATH may hold shims that need the bot's environment.
export EB_PYTHON=${EB_PYTHON:-$(dirname "$EB")/python}
target=$(sed -n 's/^software_subdir *= *//p' cfg/job.cfg)
repo_id=$(sed -n 's/^repo_id *= *//p' cfg/job.cfg)
here=$(pwd)
prefix="$here/_software/$target"
mkdir -p "$prefix" _sources _tmp

# Sources are kept as plain files in the repository; pack them as EasyBuild expects.
tar -C src -czf _sources/hello-1.0.tar.gz hello-1.0

set +u  # Lmod's init scripts use unset variables
source "$(ls -d /usr/share/lmod/*/init/bash | head -1)"
set -u
as_root=()
[ "$(id -u)" = 0 ] && as_root=(--allow-use-as-root-and-accept-consequences)

"$EB" "${as_root[@]}" --installpath="$prefix" --sourcepath="$here/_sources" \
  --buildpath="$here/_tmp/build" --tmpdir="$here/_tmp" --robot=easyconfigs \
  --disable-cleanup-tmpdir easyconfigs/*.eb

module use "$prefix/modules/all"
module load hello/1.0
test "$(hello)" = "hello from an EasyBuild-installed module"

tarball="easybuild-layer-${repo_id}-${target//\//-}.tar.gz"
tar -C "$here/_software" -czf "$tarball" "$target"
size=$(stat -c %s "$tarball")
sha=$(sha256sum "$tarball" | cut -d' ' -f1)
cat > result.json <<JSON
{
  "status": "success",
  "summary": "EasyBuild installed hello/1.0 for ${target}; \`module load hello/1.0\` works",
  "artifacts": [{"path": "${tarball}", "size": ${size}, "sha256": "${sha}"}],
  "tests": {"status": "success", "summary": "module loads and runs", "passed": 1, "failed": 0}
}
JSON
