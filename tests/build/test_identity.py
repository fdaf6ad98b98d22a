"""Who a job runs as: decided once from the bot's uid and the configuration (issue 9, item 1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from layerbot.build.handover import HandOverFailed, hand_over
from layerbot.build.identity import (
    DEDICATED_USER,
    FALLBACK_USER,
    IsolationRefused,
    JobUser,
    Switch,
    lookup,
    resolve,
)

BOT_UID = 4242  # a bot that is not root (no such user is needed: the uid is passed in)


def test_as_root_the_bot_drops_privileges_itself() -> None:
    user = resolve("", allow_unisolated=False, euid=0)
    assert user is not None and user.uid != 0 and user.switch is Switch.DROP
    assert user.name in (DEDICATED_USER, FALLBACK_USER) and user.sudo_prefix() == []
    with pytest.raises(IsolationRefused, match="is root"):
        resolve("root", allow_unisolated=False, euid=0)


def test_without_root_the_switch_goes_through_sudo() -> None:
    user = resolve(FALLBACK_USER, allow_unisolated=False, euid=BOT_UID)
    assert user is not None and user.switch is Switch.SUDO
    assert user.sudo_prefix() == ["sudo", "-n", "-u", FALLBACK_USER, "--"]


def test_the_job_user_is_never_the_bot_or_root() -> None:
    nobody = lookup(FALLBACK_USER)
    assert nobody is not None
    for name, euid in (("root", BOT_UID), (FALLBACK_USER, nobody.uid)):
        with pytest.raises(IsolationRefused, match="root or the bot's own user"):
            resolve(name, allow_unisolated=False, euid=euid)
    with pytest.raises(IsolationRefused, match="no user"):
        resolve("no-such-user-here", allow_unisolated=False, euid=BOT_UID)


def test_without_root_or_run_as_only_an_explicit_allowance_runs_unisolated() -> None:
    with pytest.raises(IsolationRefused, match=r"build\.allow_unisolated"):
        resolve("", allow_unisolated=False, euid=BOT_UID)
    assert resolve("", allow_unisolated=True, euid=BOT_UID) is None


def test_a_hand_over_that_cannot_be_done_says_what_to_fix(tmp_path: Path) -> None:
    user = JobUser("someone", 4242, 4242, (), Switch.SUDO)
    with pytest.raises(HandOverFailed, match="member of the group of someone"):
        hand_over(tmp_path / "gone", user)
