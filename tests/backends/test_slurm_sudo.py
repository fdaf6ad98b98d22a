"""A bot that is not root submits as the job user through sudo (issue 9, item 1, on Slurm).

scripts/sudo-bot.sh creates the stand-in bot account ``layerbot-bot`` and the sudoers rule
docs/security.md gives a site. tests/support/nonroot_slurm.py runs *as that account* against
the real Slurm: the job must run as the job user, write into its directory (shared with
the job user's group, since a bot without root cannot chown), be found again by proof, and
be cancellable, with no command run as the bot's own user creating a job.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import site
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from layerbot.build.identity import DEDICATED_USER, lookup
from tests.backends.conftest import SlurmCluster

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm"),
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become the bot user")]

BOT_USER = "layerbot-bot"
REPO = Path(__file__).resolve().parents[2]


def as_bot(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["runuser", "-u", BOT_USER, "--", *argv], capture_output=True,
                          text=True, cwd="/", **kwargs)  # type: ignore[call-overload]


def bot_python() -> tuple[list[str], dict[str, str]]:
    """An interpreter the bot account can run, with layerbot importable (this venv's Python
    may live in root's home, out of reach)."""
    env = {**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'src'}"}
    if as_bot([sys.executable, "-c", "pass"]).returncode == 0:
        return [sys.executable], env
    system = shutil.which("python3.11", path="/usr/bin") or "/usr/bin/python3"
    env["PYTHONPATH"] += ":" + ":".join(site.getsitepackages())
    probe = as_bot([system, "-c", "import layerbot, pydantic"], env=env)
    if probe.returncode != 0:
        pytest.skip(f"the bot account cannot reach this checkout's code: {probe.stderr[-300:]}")
    return [system], env


def test_a_bot_without_root_submits_as_the_job_user(tmp_path: Path, slurm: SlurmCluster) -> None:
    if shutil.which("sudo") is None or lookup(BOT_USER) is None:
        pytest.fail("run scripts/sudo-bot.sh (scripts/test.sh does) for the non-root setup")
    job_user = lookup(DEDICATED_USER)
    assert job_user is not None
    jobs = tmp_path / "bot-data"
    jobs.mkdir()
    bot = pwd.getpwnam(BOT_USER)
    os.chown(jobs, bot.pw_uid, bot.pw_gid)
    python, env = bot_python()
    instance = f"sudo{uuid.uuid4().hex[:6]}"
    try:
        done = as_bot([*python, str(REPO / "tests" / "support" / "nonroot_slurm.py"),
                       str(jobs / "jobs"), instance, DEDICATED_USER], env=env, timeout=300)
    finally:
        slurm.cancel_tagged(instance)
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["bot_uid"] == bot.pw_uid
    assert seen["state"] == "COMPLETED" and seen["found"] is True, seen
    assert seen["whoami"] == DEDICATED_USER  # the job ran as the job user, not the bot
    assert seen["made_by_uid"] == job_user.uid and seen["made_by_gid"] == job_user.gid
    assert seen["job_dir_mode"] == "0o3770"  # the job user's group; setgid and sticky
    assert seen["cancelled"] == "CANCELLED"
    assert seen["removed"] is True  # including what the job made in 0755 dirs of its own
