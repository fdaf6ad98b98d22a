"""A bot that is not root runs local jobs as the job user through sudo (issue 9, item 1).

tests/support/nonroot_local.py runs as the stand-in bot account of scripts/sudo-bot.sh. The
local executor's launcher stays the bot's (so the job cannot touch its state) and starts
each job with ``sudo -n -u <job user>``; time limits, cancellation and the clean-up of
leftover processes signal the job user's processes through the same rule.
"""

from __future__ import annotations

import json
import os
import pwd
from pathlib import Path

import pytest

from layerbot.build.identity import DEDICATED_USER
from tests.support.nonroot import BOT_USER, REPO, as_bot, bot_dir, bot_python

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become the bot user")


def test_a_bot_without_root_runs_local_jobs_as_the_job_user(tmp_path: Path) -> None:
    python, env = bot_python()
    data = bot_dir(tmp_path / "bot-data")
    done = as_bot([python, str(REPO / "tests" / "support" / "nonroot_local.py"), str(data),
                   DEDICATED_USER], env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["bot_uid"] == pwd.getpwnam(BOT_USER).pw_uid
    assert seen["states"] == {"ok": "COMPLETED", "slow": "TIMEOUT", "cancelled": "CANCELLED",
                              "leftovers": "COMPLETED", "state": "COMPLETED"}, seen
    assert seen["whoami"] == DEDICATED_USER  # not the bot
    assert "out of the job" in seen["ok_log"]
    # The launcher's state is the bot's: the job could neither rewrite nor replace it.
    assert "tried" in seen["state_log"] and "STATE" not in seen["state_log"]
    assert seen["state_dir_mode"] == "0o700"
    assert seen["left_running"] == []  # time limit, cancel and leftovers: all stopped
    assert seen["removed"] is True
    assert seen["checks"][f"local launcher as {DEDICATED_USER} (sudo)"] is True, seen["checks"]
