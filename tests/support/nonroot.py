"""Running test programs as the stand-in bot account that is not root (scripts/sudo-bot.sh)."""

from __future__ import annotations

import os
import pwd
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

from layerbot.build.identity import lookup

BOT_USER = "layerbot-bot"
REPO = Path(__file__).resolve().parents[2]


def as_bot(argv: list[str], env: dict[str, str] | None = None,
           timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["runuser", "-u", BOT_USER, "--", *argv], capture_output=True,
                          text=True, cwd="/", env=env, timeout=timeout, check=False)


def bot_python() -> tuple[str, dict[str, str]]:
    """An interpreter the bot account (and the job user) can run, with layerbot importable:
    this venv's Python may live in root's home, out of their reach."""
    if shutil.which("sudo") is None or lookup(BOT_USER) is None:
        pytest.fail("run scripts/sudo-bot.sh (scripts/test.sh does) for the non-root setup")
    env = {**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'src'}"}
    if as_bot([sys.executable, "-c", "pass"]).returncode == 0:
        return sys.executable, env
    system = shutil.which("python3.11", path="/usr/bin") or "/usr/bin/python3"
    env["PYTHONPATH"] += ":" + ":".join(site.getsitepackages())
    probe = as_bot([system, "-c", "import layerbot, pydantic"], env=env)
    if probe.returncode != 0:
        pytest.skip(f"the bot account cannot reach this checkout's code: {probe.stderr[-300:]}")
    return system, env


def bot_dir(path: Path) -> Path:
    """A directory of the bot account's own (its data directory in these tests)."""
    path.mkdir()
    bot = pwd.getpwnam(BOT_USER)
    os.chown(path, bot.pw_uid, bot.pw_gid)
    return path
