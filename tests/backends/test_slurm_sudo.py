"""A bot that is not root submits as the job user through sudo (issue 9, item 1, on Slurm).

scripts/sudo-bot.sh creates the stand-in bot account ``layerbot-bot`` and the sudoers rule
docs/security.md gives a site. tests/support/nonroot_slurm.py runs *as that account* against
the real Slurm: the job must run as the job user, write into its directory (shared with
the job user's group, since a bot without root cannot chown), be found again by proof, be
cancellable, and be removable although the job made directories of its own.
"""

from __future__ import annotations

import json
import os
import pwd
import uuid
from pathlib import Path

import pytest

from layerbot.build.identity import DEDICATED_USER, lookup
from tests.backends.conftest import SlurmCluster
from tests.support.nonroot import BOT_USER, REPO, as_bot, bot_dir, bot_python

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm"),
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become the bot user")]


def test_a_bot_without_root_submits_as_the_job_user(tmp_path: Path, slurm: SlurmCluster) -> None:
    python, env = bot_python()
    job_user = lookup(DEDICATED_USER)
    assert job_user is not None
    jobs = bot_dir(tmp_path / "bot-data") / "jobs"
    instance = f"sudo{uuid.uuid4().hex[:6]}"
    try:
        done = as_bot([python, str(REPO / "tests" / "support" / "nonroot_slurm.py"),
                       str(jobs), instance, DEDICATED_USER], env=env)
    finally:
        slurm.cancel_tagged(instance)
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["bot_uid"] == pwd.getpwnam(BOT_USER).pw_uid
    assert seen["state"] == "COMPLETED" and seen["found"] is True, seen
    assert seen["whoami"] == DEDICATED_USER  # the job ran as the job user, not the bot
    assert seen["made_by_uid"] == job_user.uid and seen["made_by_gid"] == job_user.gid
    assert seen["job_dir_mode"] == "0o3770"  # the job user's group; setgid and sticky
    assert seen["cancelled"] == "CANCELLED"
    assert seen["removed"] is True  # including what the job made in 0755 dirs of its own
