#!/usr/bin/env bash
# The job script layerbot runs in the job directory (the PR's content merged onto its base).
# It builds the program for the job's target, tests it, packs it, and writes result.json.
set -euo pipefail

target=$(sed -n 's/^software_subdir *= *//p' cfg/job.cfg)
repo_id=$(sed -n 's/^repo_id *= *//p' cfg/job.cfg)
echo "building for ${target} (repository ${repo_id})"

rm -rf _build && mkdir -p _build/software/bin
cc -O2 -Wall -o _build/software/bin/hello src/hello.c
test "$(_build/software/bin/hello)" = "hello from the software layer"

tarball="hello-1.0-${repo_id}-${target//\//-}.tar.gz"
tar -C _build -czf "$tarball" software
size=$(stat -c %s "$tarball")
sha=$(sha256sum "$tarball" | cut -d' ' -f1)

cat > result.json <<JSON
{
  "status": "success",
  "summary": "built \`hello\` for ${target}; its test passed",
  "artifacts": [{"path": "${tarball}", "size": ${size}, "sha256": "${sha}"}],
  "tests": {"status": "success", "summary": "1 test passed", "passed": 1, "failed": 0}
}
JSON
echo "packed ${tarball} (${size} bytes)"
