#!/usr/bin/env bash
# One pipeline step (the plan's command: bot/step.sh <easyconfig>): installs that one
# easyconfig with EasyBuild and packs it into $LAYERBOT_STEP_OUTPUT/<easyconfig>.tar.gz.
#
# Its dependencies are not built here: they are either in the layer already
# ($LAYERBOT_EB_MODULEPATH) or artifacts of the steps it needs (cfg/needs.json), which are
# unpacked into _deps/ first. EasyBuild runs without --robot, so a dependency the plan forgot
# fails the step ("missing modules") instead of being built a second time, unseen.
#
# An artifact holds software/ and modules/all/ of the step's own --installpath, plus the file
# `installpath` naming it: EasyBuild writes absolute paths into module files, so a step that
# unpacks the artifact elsewhere rewrites them (the install is relocated, not rebuilt).
# EasyBuild comes from $LAYERBOT_EB (default /opt/layerbot-easybuild/bin/eb: scripts/easybuild.sh).
set -euo pipefail

ec=${1:?usage: bot/step.sh <easyconfig>}
: "${LAYERBOT_STEP_OUTPUT:?is not set: run as a step of a layerbot pipeline}"
EB=${LAYERBOT_EB:-/opt/layerbot-easybuild/bin/eb}
# The venv's own Python: the job's PATH may hold shims that need the bot's environment.
export EB_PYTHON=${EB_PYTHON:-$(dirname "$EB")/python}
python=$(command -v /usr/bin/python3 || command -v python3)
here=$(pwd)
prefix="$here/_install"  # this step's own installation, and nothing else: the artifact
deps="$here/_deps"       # the needed steps' artifacts, one prefix each
mkdir -p "$prefix" "$deps" _sources _tmp "$LAYERBOT_STEP_OUTPUT"

# Sources are kept as plain files in the repository; pack them as EasyBuild expects.
for dir in src/*/; do
  [ -d "$dir" ] && tar -C src -czf "_sources/$(basename "$dir").tar.gz" "$(basename "$dir")"
done

# The needed steps' artifact directories: cfg/needs.json ({"<id>": "<dir>"}), else the
# $LAYERBOT_NEED_<ID> variables.
needs_file=${LAYERBOT_NEEDS_FILE:-cfg/needs.json}
if [ -f "$needs_file" ]; then
  need_dirs=$("$python" -c '
import json, sys
for directory in json.load(open(sys.argv[1])).values():
    print(directory)' "$needs_file")
else
  need_dirs=$(for var in $(compgen -v LAYERBOT_NEED_ || true); do echo "${!var}"; done)
fi

dep_prefixes=()
n=0
while IFS= read -r dir; do
  [ -n "$dir" ] || continue
  for tarball in "$dir"/*.tar.gz; do
    [ -f "$tarball" ] || { echo "step: no artifact (*.tar.gz) in $dir" >&2; exit 1; }
    n=$((n + 1))
    dest="$deps/$n"
    mkdir -p "$dest"
    tar -xzf "$tarball" -C "$dest" --no-same-owner
    old=$(cat "$dest/installpath")
    # Relocate: the module files (and EasyBuild's devel module) name the prefix it was
    # installed in; point them at this one. Binaries are left alone (-I): nothing is
    # linked with an RPATH into the old prefix; libraries come from LD_LIBRARY_PATH.
    { grep -rlIF -- "$old" "$dest" || true; } | while IFS= read -r file; do
      "$python" -c '
import sys
path, old, new = sys.argv[1:]
with open(path) as f:
    text = f.read()
with open(path, "w") as f:
    f.write(text.replace(old, new))' "$file" "$old" "$dest"
    done
    echo "$dest" > "$dest/installpath"
    dep_prefixes+=("$dest")
  done
done <<< "$need_dirs"

set +u  # Lmod's init scripts use unset variables
source "$(ls -d /usr/share/lmod/*/init/bash | head -1)"
module --force purge
unset MODULEPATH
IFS=: read -ra site_modules <<< "${LAYERBOT_EB_MODULEPATH:-}"
for dir in "${site_modules[@]}" "${dep_prefixes[@]/%//modules/all}"; do
  [ -n "$dir" ] && module use "$dir"
done
set -u
echo "step: MODULEPATH=${MODULEPATH:-}"

as_root=()
[ "$(id -u)" = 0 ] && as_root=(--allow-use-as-root-and-accept-consequences)
# --prefix keeps EasyBuild's own files (ebfiles repository, ...) in the job directory
# whatever $HOME is.
"$EB" "${as_root[@]}" --prefix="$here/_eb" --installpath="$prefix" \
  --sourcepath="$here/_sources" --buildpath="$here/_tmp/build" --tmpdir="$here/_tmp" "$ec"

echo "$prefix" > "$prefix/installpath"
name=$(basename "$ec" .eb)
# modules/<class>/ holds links to modules/all/: the artifact keeps only the files.
tar -C "$prefix" --exclude=software/.locks -czf "$LAYERBOT_STEP_OUTPUT/$name.tar.gz" \
  installpath software modules/all
echo "step: packed $LAYERBOT_STEP_OUTPUT/$name.tar.gz"
