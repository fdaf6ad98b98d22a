"""Run by tests as a bot user that is not root: the local executor through sudo.

``python nonroot_local.py <data dir> <job user>`` runs a few jobs with the local executor,
whose launcher stays the bot's and starts each job as the job user with ``sudo -n -u``: one
that succeeds, one past its time limit, one cancelled, one that leaves processes behind,
and one that goes for the launcher's state. It prints one JSON line of what it saw, then
removes the job directories (what the job made, the job user removes through sudo).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from layerbot.backends.base import BackendState, JobStatus, SubmitRequest
from layerbot.backends.local import LocalBackend
from layerbot.build.handover import remove_job_dir
from layerbot.build.identity import JobUser, resolve
from layerbot.build.jobdir import create_job_dir
from layerbot.config import LocalBackendConfig

MARK = f"layerbot-nonroot-{os.getpid()}"

SCRIPTS = {
    "ok": "id -un > whoami\necho out of the job\nmkdir own && chmod 0755 own && touch own/f\n",
    "slow": f"exec -a {MARK}-slow sleep 300\n",
    "cancelled": f"exec -a {MARK}-cancelled sleep 300\n",
    "leftovers": f"(exec -a {MARK}-left1 sleep 300) &\nsetsid bash -c 'exec -a {MARK}-left2 "
                 "sleep 300' &\nsleep 0.5\necho done\n",
    "state": "echo forged > .layerbot/local.json 2>/dev/null && echo WROTE-STATE\n"
             "ln -sf /etc/shadow .layerbot/local.json 2>/dev/null && echo LINKED-STATE\n"
             "echo tried\n",
}


def submit_request(jobs: Path, job_id: int, name: str) -> SubmitRequest:
    job_dir = create_job_dir(jobs, "o/r", job_id, pr=1)
    script = job_dir / "build.sh"
    script.write_text("#!/bin/bash\n" + SCRIPTS[name])
    script.chmod(0o755)
    return SubmitRequest(job_id=job_id, instance="nonroot", job_dir=job_dir,
                         script=Path("build.sh"), env={"PATH": "/usr/bin:/bin"},
                         time_limit_seconds=3 if name == "slow" else 120,
                         log_file=job_dir / "slurm-%j.out")


async def until_ended(backend: LocalBackend, backend_id: str) -> JobStatus:
    for _ in range(400):
        status = (await backend.poll([backend_id]))[backend_id]
        if status.state not in (BackendState.PENDING, BackendState.RUNNING):
            return status
        await asyncio.sleep(0.1)
    raise AssertionError(f"{backend_id} did not end")


async def until_running(backend: LocalBackend, backend_id: str) -> None:
    for _ in range(200):
        if (await backend.poll([backend_id]))[backend_id].state is BackendState.RUNNING:
            return
        await asyncio.sleep(0.1)


def left_running() -> list[str]:
    found = subprocess.run(["pgrep", "-a", "-f", MARK], capture_output=True, text=True)
    return [line for line in found.stdout.splitlines() if "pgrep" not in line]


async def main(data: Path, user: JobUser) -> dict[str, object]:
    backend = LocalBackend(LocalBackendConfig(max_concurrent=8), data / "local-backend",
                           job_user=user, kill_grace_seconds=2)
    requests = {name: submit_request(data / "jobs", n, name)
                for n, name in enumerate(SCRIPTS, start=1)}
    ids = {name: await backend.submit(r) for name, r in requests.items()}
    await until_running(backend, ids["cancelled"])
    await backend.cancel(ids["cancelled"])
    ended = {name: await until_ended(backend, backend_id) for name, backend_id in ids.items()}
    ok_dir = requests["ok"].job_dir
    seen: dict[str, object] = {
        "bot_uid": os.geteuid(),
        "states": {name: str(s.state) for name, s in ended.items()},
        "whoami": (ok_dir / "whoami").read_text().strip(),
        "ok_log": (ok_dir / "slurm-1.out").read_text(),
        "state_log": (requests["state"].job_dir / "slurm-5.out").read_text(),
        "state_dir_mode": oct((requests["state"].job_dir / ".layerbot").stat().st_mode & 0o777),
        "left_running": left_running(),
        "checks": {c.name: c.ok for c in await backend.check()},  # what doctor shows
    }
    for request in requests.values():
        remove_job_dir(request.job_dir, user)
    seen["removed"] = not any(r.job_dir.exists() for r in requests.values())
    return seen


if __name__ == "__main__":
    job_user = resolve(sys.argv[2], allow_unisolated=False)
    assert job_user is not None
    print(json.dumps(asyncio.run(main(Path(sys.argv[1]), job_user))))
