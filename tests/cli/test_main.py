"""The command line: configuration errors, doctor, replay (as an operator meets them)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from layerbot import clock
from layerbot.store.db import Store
from layerbot.store.inbox import Delivery, Inbox
from tests.support.botproc import free_port, write_config
from tests.support.fakegithub import FakeGitHub


def layerbot(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "layerbot", *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "COLUMNS": "200",
                                                       **(env or {})})


def test_an_invalid_file_names_every_problem_and_what_would_be_right(tmp_path: Path) -> None:
    config = tmp_path / "layerbot.toml"
    config.write_text(
        '[server]\nport = 99999\nhots = "x"\n'
        '[store]\nurl = "mysql://db"\n'
        '[access]\nbuild = ["role:writer"]\n'
        '[[node_types]]\nname = "a"\ncpu_target = "x86_64/generic"\nrepo_targets = ["nope"]\n')
    result = layerbot("doctor", "--config", str(config))
    assert result.returncode == 2
    err = result.stderr
    assert "server.port" in err and "99999" in err and "65535" in err
    assert "server.hots: unknown key" in err
    assert "store.url" in err and "postgresql+psycopg://" in err
    assert "access.build" in err and "role:maintain" in err


def test_secrets_never_show_in_errors(tmp_path: Path) -> None:
    (tmp_path / "key.pem").write_text("not-a-key-but-secret-material-12345")
    config = tmp_path / "layerbot.toml"
    config.write_text('[github]\napp_id = 1\nprivate_key_file = "key.pem"\n')
    result = layerbot("doctor", "--config", str(config))
    assert result.returncode == 2
    assert "not a PEM private key" in result.stderr
    assert "secret-material" not in result.stderr + result.stdout


def test_doctor_passes_against_a_working_setup_and_fails_with_remedies(
        tmp_path: Path, fake_github: FakeGitHub, github_app_key: tuple[str, str]) -> None:
    good = write_config(tmp_path / "good", api_url=fake_github.url, app_id=fake_github.app_id,
                        private_key_pem=github_app_key[0], port=free_port())
    result = layerbot("doctor", "--config", str(good))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAIL" not in result.stdout and "GitHub App" in result.stdout
    bad = write_config(tmp_path / "bad", api_url="http://127.0.0.1:9", app_id=1,
                       private_key_pem=github_app_key[0], port=free_port())
    result = layerbot("doctor", "--config", str(bad))
    assert result.returncode == 1
    assert "FAIL" in result.stdout and "github.api_url" in result.stdout


def test_replay_queues_a_stored_delivery_again(tmp_path: Path) -> None:
    config = tmp_path / "layerbot.toml"
    config.write_text(f'[instance]\nname = "a"\ndata_dir = "{tmp_path}"\n')
    inbox = Inbox(Store(f"sqlite:///{tmp_path / 'layerbot.db'}"), "a")
    inbox.accept([Delivery("1", "d-1", "issue_comment", "created", "k", 1, "{}")], clock.now())
    (event,) = inbox.claim("w", clock.now(), __import__("datetime").timedelta(seconds=9))
    inbox.fail(event.id, "boom", clock.now(), retry_at=None)
    assert layerbot("replay", "d-1", "--config", str(config)).returncode == 0
    assert inbox.get("d-1").status == "pending"  # type: ignore[union-attr]
    missing = layerbot("replay", "d-404", "--config", str(config))
    assert missing.returncode == 1 and "no delivery with this id" in missing.stderr
