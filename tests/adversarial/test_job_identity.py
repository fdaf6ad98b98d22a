"""A PR's job script goes for the bot's secrets (issue 9, item 1), on a real `layerbot serve`.

Before isolation, jobs ran with the bot's uid: the script below read the bot's environment
(``/proc/<pid>/environ`` of every layerbot process), the configuration, the App private key,
the webhook secret, the session secret, the deploy signing key and the database, and wrote
into the data directory. Now the job runs as the unprivileged job user: every read fails,
nothing is written, and no secret reaches the PR, the API or the bot's log.

Whatever the job could read it copies to a marker directory *and* prints into its log and
result summary (which the bot shows), so a leak shows up in both checks.
"""

from __future__ import annotations

import os

import pytest

from tests.adversarial.attacks import STEAL, assert_nothing_stolen
from tests.adversarial.conftest import Adversary

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="isolation drops privileges (root)")


def test_job_cannot_read_or_write_the_bots_secrets(adversary: Adversary) -> None:
    adversary.snapshot()
    adversary.attack(201, STEAL)
    assert_nothing_stolen(adversary)
    adversary.assert_bot_intact()

