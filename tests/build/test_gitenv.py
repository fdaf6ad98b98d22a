"""Every git of the bot runs with an environment of its own and ignores foreign config."""

from __future__ import annotations

from pathlib import Path

import pytest

from layerbot.build import gitenv


def test_nothing_of_the_bots_environment_reaches_git_or_what_it_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAYERBOT_WEBHOOK_SECRET", "s3cr3t-from-the-environment")
    monkeypatch.setenv("GIT_SSH_COMMAND", "touch /tmp/should-not-run")
    # An alias runs a shell command with git's environment: what any program git starts sees.
    seen = gitenv.run_git(["-c", "alias.envdump=!env", "envdump"], cwd=tmp_path)
    names = {line.partition("=")[0] for line in seen.splitlines()}
    assert "s3cr3t-from-the-environment" not in seen
    assert "GIT_SSH_COMMAND" not in names
    path = next(line for line in seen.splitlines() if line.startswith("PATH="))
    assert path.endswith(f":{gitenv.FIXED_PATH}")  # git puts its exec-path first
    assert "HOME=/nonexistent" in seen.splitlines()


def test_global_and_system_config_are_not_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text('[filter "x"]\n\tsmudge = touch /tmp/should-not-run\n')
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_PARAMETERS", "'filter.y.smudge=false'")
    shown = gitenv.run_git(["config", "--list", "--show-scope"], cwd=tmp_path)
    assert "filter." not in shown
    scopes = {line.split("\t", 1)[0] for line in shown.splitlines()}
    assert scopes == {"command"}  # only the bot's own -c options
    assert "command\tcore.hookspath=/dev/null" in shown.splitlines()
