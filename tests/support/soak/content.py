"""What the soak's pull requests contain: their job scripts, from well-behaved to hostile.

Every script appends ``start``/``end`` lines to ``$RUNS_FILE`` (the job directory and the
agent), which is how the invariants tell that no job ran twice. Scripts never see the bot's
secrets; the hostile one tries anyway and prints what it finds, so a leak would surface in
the log tails the bot reports.
"""

from __future__ import annotations

import json
from enum import StrEnum


class Content(StrEnum):
    """The kind of a PR's job script."""

    OK = "ok"  # builds and packs a small tarball (deployable)
    FAIL = "fail"  # reports failure
    HANG = "hang"  # never ends: the time limit stops it
    FILL_DISK = "fill-disk"  # writes until the job directory's disk is full
    NOSY = "nosy"  # looks for the bot's secrets and prints whatever it finds
    PIPELINE = "pipeline"  # a plan of dependent steps


_RECORD = 'echo "start $PWD ${AGENT_NAME:-?}" >> "$RUNS_FILE"\n'
_RECORD_END = 'echo "end $PWD ${AGENT_NAME:-?}" >> "$RUNS_FILE"\n'

_PACK = r"""target=$(sed -n 's/^software_subdir *= *//p' cfg/job.cfg)
mkdir -p _build/software && echo "soak $target $(date +%s%N)" > _build/software/README
tarball="soak-1.0-${target//\//-}.tar.gz"
tar -C _build -czf "$tarball" software
"""



def _result(status: str, summary: str, artifact: str = "") -> str:
    """The line that writes result.json (``artifact``: a shell word naming the tarball)."""
    artifacts = f'[{{"path": "\'"{artifact}"\'"}}]' if artifact else "[]"
    return (f"echo '{{\"status\": \"{status}\", \"summary\": \"{summary}\", "
            f"\"artifacts\": {artifacts}}}' > result.json\n")


_SCRIPTS: dict[Content, str] = {
    Content.OK: _RECORD + 'sleep "${SLEEP:-2}"\n' + _PACK + _RECORD_END
    + _result("success", "soak build", "$tarball"),
    Content.FAIL: _RECORD + "sleep 1\necho 'a test failed' >&2\n" + _RECORD_END
    + _result("failure", "soak: tests failed"),
    Content.HANG: _RECORD + "while true; do sleep 5; done\n",
    # On local-b the job directories are on a small disk: the write fails when it is full,
    # and so does the job, with what df says. Elsewhere the write stops at 256 MiB.
    Content.FILL_DISK: _RECORD + "head -c 256M /dev/zero > filler; df -h . >&2; rm -f filler\n"
    + "exit 1\n",
    Content.NOSY: _RECORD
    + "env | sort\n"
    + "cat ../../*.toml ../../app.pem ../../secret ../../token ../*.toml 2>&1 | head -5\n"
    + 'cat "$HOME"/.aws/credentials /proc/1/environ 2>&1 | head -3\n'
    + _PACK + _RECORD_END + _result("success", "nosy build"),
}

#: A step's command (its exit status is its outcome; its output directory its artifact).
_STEP = _RECORD + 'sleep 1\necho "step $LAYERBOT_STEP_ID" > "$LAYERBOT_STEP_OUTPUT/done"\n' \
    + _RECORD_END

_PLAN = {"version": 1, "steps": [
    {"id": "toolchain", "name": "toolchain", "command": "bash bot/step.sh"},
    {"id": "libs", "name": "libraries", "command": "bash bot/step.sh", "needs": ["toolchain"]},
    {"id": "tools", "name": "tools", "command": "bash bot/step.sh", "needs": ["toolchain"]},
    {"id": "app", "name": "application", "command": "bash bot/step.sh",
     "needs": ["libs", "tools"]},
]}


def files(kind: Content, revision: int) -> dict[str, str]:
    """The files a PR of ``kind`` changes (``revision`` makes each push a new commit)."""
    marker = {"soak-revision.txt": f"{kind.value} {revision}\n"}
    if kind is Content.PIPELINE:
        plan = ("#!/usr/bin/env bash\n" + _RECORD
                + f"cat > \"$LAYERBOT_PLAN_FILE\" <<'JSON'\n{json.dumps(_PLAN)}\nJSON\n"
                + _RECORD_END)
        return {"bot/plan.sh": plan, "bot/step.sh": _STEP, **marker}
    return {"bot/build.sh": "#!/usr/bin/env bash\nset -uo pipefail\n" + _SCRIPTS[kind],
            **marker}
