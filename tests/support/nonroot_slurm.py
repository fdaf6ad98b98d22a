"""Run by tests as a bot user that is not root: submit one job to Slurm as the job user.

``python nonroot_slurm.py <jobs dir> <instance> <job user>`` prepares a job directory the way
the submitter does (exclusive, unpredictable name; handed to the job user's group), submits
with ``sudo -n -u <job user>`` (the rule of scripts/sudo-bot.sh), releases it, waits for
the end, checks that ``find`` adopts it and that a second held job can be cancelled, and
removes both job directories, and prints one JSON line of what it saw.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from layerbot.backends.base import BackendState, SubmitRequest
from layerbot.backends.slurm import SlurmBackend
from layerbot.build.handover import remove_job_dir
from layerbot.build.identity import resolve
from layerbot.build.jobdir import create_job_dir
from layerbot.config import SlurmBackendConfig

SCRIPT = """#!/bin/bash
id -un > whoami
echo written by the job > made-by-job
mkdir -p own/deeper && echo x > own/deeper/file && chmod 0755 own own/deeper
"""


def prepare(jobs_dir: Path, instance: str, job_id: int) -> SubmitRequest:
    job_dir = create_job_dir(jobs_dir, "o/r", job_id, pr=1)
    (job_dir / "bot").mkdir()
    (job_dir / "bot" / "build.sh").write_text(SCRIPT)
    (job_dir / "bot" / "build.sh").chmod(0o755)
    return SubmitRequest(job_id=job_id, instance=instance, job_dir=job_dir,
                         script=Path("bot/build.sh"), env={"PATH": "/usr/bin:/bin"},
                         time_limit_seconds=120, options={"partition": "debug"},
                         log_file=job_dir / "slurm-%j.out")


async def main(jobs_dir: Path, instance: str, job_user: str) -> dict[str, object]:
    user = resolve(job_user, allow_unisolated=False)
    assert user is not None
    backend = SlurmBackend(SlurmBackendConfig(), job_user=user, unavailable_wait_seconds=5)
    request = prepare(jobs_dir, instance, 1)
    backend_id = await backend.submit(request)
    found = await backend.find(1, instance, request.job_dir)
    await backend.release([backend_id])
    state = None
    for _ in range(240):
        status = (await backend.poll([backend_id])).get(backend_id)
        state = status.state if status else None
        if state not in (None, BackendState.PENDING, BackendState.RUNNING):
            break
        await asyncio.sleep(0.5)
    other = prepare(jobs_dir, instance, 2)
    held = await backend.submit(other)
    await backend.cancel(held)
    cancelled = None
    for _ in range(60):
        status = (await backend.poll([held])).get(held)
        cancelled = status.state if status else None
        if cancelled is BackendState.CANCELLED:
            break
        await asyncio.sleep(0.5)
    made = request.job_dir / "made-by-job"
    facts = {"bot_uid": os.geteuid(), "state": str(state), "found": found == backend_id,
            "whoami": (request.job_dir / "whoami").read_text().strip(),
            "made_by_uid": made.stat().st_uid, "made_by_gid": made.stat().st_gid,
            "job_dir_mode": oct(request.job_dir.stat().st_mode & 0o7777),
            "cancelled": str(cancelled)}
    # What the job made in directories of its own is not the bot's to remove: the job user
    # removes it through sudo, then the bot the rest.
    for job_dir in (request.job_dir, other.job_dir):
        remove_job_dir(job_dir, user)
    return {**facts, "removed": not request.job_dir.exists() and not other.job_dir.exists()}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(Path(sys.argv[1]), sys.argv[2], sys.argv[3]))))
