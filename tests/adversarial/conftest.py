"""The adversarial harness: a real `layerbot serve` with real secrets, and PRs that attack it.

Every attack of issue 9 is attempted for real, as a PR's own ``bot/build.sh`` (or PR content)
built by a real bot; afterwards :meth:`Adversary.assert_bot_intact` checks what the issue
demands after each attack:

- the bot's secret files and its configuration are unchanged (content hash *and* mode);
- the database passes ``PRAGMA integrity_check``;
- the mirrors are untouched (config, hooks, ``info/attributes``) since the last
  :meth:`Adversary.snapshot`;
- no secret string appears in anything the bot sent to GitHub (comments, check runs, any
  request body), in the answers of its REST API, or in its own log;
- the instance keeps handling other jobs: a normal build afterwards still succeeds.

The secrets are real files in the bot's configuration directory: the App private key, the
webhook secret, the dashboard session secret and the deploy signing key (an ssh key), and,
as far as practical, secrets in the bot's environment (``LAYERBOT_SESSION_SECRET`` set in
the environment of ``serve``; it wins over the file, so the bot reads it from there). All
their values are in :attr:`Adversary.secrets`.

Use (one bot per test module; PR numbers must differ between tests of a module)::

    def test_job_reads_key(adversary: Adversary) -> None:
        adversary.snapshot()
        reply = adversary.attack(101, '''#!/usr/bin/env bash
    cat "$BOT_KEY" > stolen.txt
    echo '{"status": "success", "summary": "x"}' > result.json
    ''')
        assert "..." in reply.body
        adversary.assert_bot_intact()

Attack scripts may use the placeholders of :meth:`Adversary.render` (``{key_file}``,
``{config}``, ``{db}``, ``{data_dir}``, ``{marker_dir}``, ...), filled in before the PR is
opened, so a script knows where to aim without guessing. Extra bot configuration for a whole
module: override the ``adversary_config`` fixture (a dict merged into the TOML).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.botproc import SECRET, BotProcess, free_port, write_config
from tests.support.e2e import Session
from tests.support.fakegithub import FakeGitHub, generate_app_key
from tests.support.origin import Origin
from tests.support.webhooks import DEFAULT_APP_ID, DEFAULT_INSTALLATION_ID, DEFAULT_REPO

OWNER, NAME = DEFAULT_REPO.split("/")

#: A job script that builds nothing and succeeds: the "normal build" after an attack.
NORMAL_BUILD = """#!/usr/bin/env bash
echo '{"status": "success", "summary": "normal build", "artifacts": []}' > result.json
"""

#: The session secret passed through the environment only (never written to a file).
ENV_SESSION_SECRET = "env-session-secret-7f3a9c1e5b2d4068"


@dataclass(frozen=True)
class FileFacts:
    """What must not change about a protected file: its content and its mode."""

    sha256: str
    mode: int


def file_facts(path: Path) -> FileFacts:
    st = path.lstat()
    data = path.read_bytes() if stat.S_ISREG(st.st_mode) else os.readlink(path).encode()
    return FileFacts(hashlib.sha256(data).hexdigest(), stat.S_IMODE(st.st_mode)
                     | stat.S_IFMT(st.st_mode))


def mirror_facts(mirrors: Path) -> dict[str, str]:
    """Config, HEAD, hooks and attributes of every mirror, as path -> hash.

    Refs are left out: fetching the next PR changes them legitimately, and a job cannot
    write them (the mirror is the bot's). What a job would plant to run code in the bot's
    next git call (a filter in the config, an attributes file, a hook) is all here.
    """
    out: dict[str, str] = {}
    if not mirrors.is_dir():
        return out
    for mirror in sorted(p for p in mirrors.rglob("*") if (p / "HEAD").is_file()):
        for rel in ("config", "info/attributes", "HEAD"):
            p = mirror / rel
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "-"
        for p in sorted((mirror / "hooks").rglob("*")):
            if p.is_file() or p.is_symlink():
                out[str(p)] = file_facts(p).sha256
    return out


@dataclass
class Adversary(Session):
    """A :class:`Session` whose bot has real secrets, and the checks made after an attack."""

    fake: FakeGitHub
    origin: Origin
    bot: BotProcess
    root: Path
    protected: dict[Path, FileFacts] = field(default_factory=dict)
    secrets: list[str] = field(default_factory=list)
    mirrors_before: dict[str, str] = field(default_factory=dict)
    next_normal: int = 9000

    @property
    def bot_dir(self) -> Path:
        return self.bot.config.parent

    @property
    def data_dir(self) -> Path:
        return self.bot_dir / "data"

    @property
    def db_path(self) -> Path:
        return self.bot_dir / "layerbot.db"

    def places(self) -> dict[str, str]:
        """Where an attack aims: the placeholders :meth:`render` fills in."""
        return {
            "config": str(self.bot.config), "key_file": str(self.bot_dir / "app.pem"),
            "webhook_secret_file": str(self.bot_dir / "secret"),
            "session_secret_file": str(self.bot_dir / "session-secret"),
            "signing_key_file": str(self.bot_dir / "deploy-key"),
            "db": str(self.db_path), "data_dir": str(self.data_dir),
            "bot_dir": str(self.bot_dir), "marker_dir": str(self.root / "markers"),
            "bot_pid": str(self.bot.proc.pid if self.bot.proc else 0),
        }

    def render(self, script: str) -> str:
        out = script
        for name, value in self.places().items():
            out = out.replace("{" + name + "}", value)
        return out

    def attack(self, number: int, script: str, files: dict[str, str] | None = None,
               command: str = "bot: build", timeout: float = 90) -> Any:
        """Open PR ``number`` whose ``bot/build.sh`` is ``script``, build it, return the
        bot's finished build reply (a fake-GitHub comment with ``.body``)."""
        self.pr(number, files={"bot/build.sh": self.render(script), **(files or {})})
        self.comment(number, command)
        return self.build_reply(number, timeout=timeout)

    def snapshot(self) -> None:
        """Remember the mirrors as they are now (they change legitimately by fetching)."""
        self.mirrors_before = mirror_facts(self.data_dir / "mirrors")

    def api_answers(self) -> list[str]:
        texts: list[str] = []
        for path in ("/api/overview", "/api/jobs", "/api/pulls", "/api/instances"):
            texts.append(httpx.get(self.bot.url + path, timeout=10).text)
        for row in self._all_jobs():
            for sub in ("", "/log"):
                texts.append(httpx.get(f"{self.bot.url}/api/jobs/{row}{sub}", timeout=10).text)
        return texts

    def _all_jobs(self) -> list[int]:
        with self.db() as conn:
            return [int(r[0]) for r in conn.execute("SELECT id FROM jobs")]

    def assert_no_secret_leaked(self) -> None:
        sent = [repr(r.json) for r in self.fake.requests]
        places = {"GitHub requests": "\n".join(sent), "API answers": "\n".join(self.api_answers()),
                  "bot log": self.bot.log()}
        for where, text in places.items():
            for secret in self.secrets:
                for line in secret.splitlines():
                    if len(line) >= 16 and not line.startswith("-----"):
                        assert line not in text, f"a secret appears in the {where}"

    def assert_bot_intact(self, normal_build: bool = True) -> None:
        """Everything issue 9 asks to hold after an attack (see the module docstring)."""
        for path, facts in self.protected.items():
            assert path.exists() or path.is_symlink(), f"{path} is gone"
            assert file_facts(path) == facts, f"{path} changed (content or mode)"
        with sqlite3.connect(self.db_path) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        if self.mirrors_before:
            assert mirror_facts(self.data_dir / "mirrors") == self.mirrors_before, \
                "a mirror's config, hooks or attributes changed"
        self.assert_no_secret_leaked()
        if normal_build:
            self.next_normal += 1
            reply = self.attack(self.next_normal, NORMAL_BUILD)
            assert "normal build" in reply.body, reply.body


def _ssh_key(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "layerbot-deploy",
                    "-f", str(path)], check=True)


@pytest.fixture(scope="module")
def adversary_config() -> dict[str, Any]:
    """Extra configuration for the module's bot; override in a test module."""
    return {}


@pytest.fixture(scope="module")
def adversary(tmp_path_factory: pytest.TempPathFactory,
              adversary_config: dict[str, Any]) -> Iterator[Adversary]:
    tmp = tmp_path_factory.mktemp("adversary")
    (tmp / "markers").mkdir(mode=0o777)
    (tmp / "markers").chmod(0o777)  # attacks leave proof here, whoever they run as
    private, _ = generate_app_key()
    fake = FakeGitHub(DEFAULT_APP_ID, private)
    fake.add_installation(DEFAULT_INSTALLATION_ID, OWNER)
    fake.set_permission(OWNER, NAME, "alice", "write")
    fake.start()
    origin = Origin(tmp / "origin", DEFAULT_REPO)
    port = free_port()
    bot_dir = tmp / "bot"
    bot_dir.mkdir()
    (bot_dir / "session-secret").write_text("file-session-secret-" + os.urandom(12).hex())
    _ssh_key(bot_dir / "deploy-key")
    extra: dict[str, Any] = {
        "build": {"clone_url": str(tmp / "origin" / "{repo}"), "time_limit_minutes": 2},
        "backend": {"poll_seconds": 0.3},
        "node_types": [{"name": "zen2", "cpu_target": "x86_64/amd/zen2"}],
        "repo_targets": [{"id": "eessi-2023.06", "name": "software.eessi.io",
                          "version": "2023.06"}],
        "web": {"session_secret_file": "session-secret"},
        "deploy": {"signing_key_file": "deploy-key"},
    }
    for key, value in adversary_config.items():
        extra[key] = {**extra[key], **value} if isinstance(extra.get(key), dict) else value
    config = write_config(bot_dir, api_url=fake.url, app_id=DEFAULT_APP_ID,
                          private_key_pem=private, port=port, extra=extra)
    for name in ("app.pem", "secret", "session-secret", "deploy-key", "deploy-key.pub"):
        (bot_dir / name).chmod(0o600 if name != "deploy-key.pub" else 0o644)
    # As docs/security.md tells an operator (and `layerbot doctor` checks): the config is
    # the bot's alone, its directory only traversable (the data dir inside holds job dirs).
    config.chmod(0o600)
    bot_dir.chmod(0o711)
    bot = BotProcess(config, port, env={"LAYERBOT_SESSION_SECRET": ENV_SESSION_SECRET})
    bot.start(timeout=90)  # a loaded CI machine can take long to start Python
    adv = Adversary(fake, origin, bot, root=tmp)
    adv.secrets = [private, SECRET, ENV_SESSION_SECRET,
                   (bot_dir / "session-secret").read_text(),
                   (bot_dir / "deploy-key").read_text()]
    adv.protected = {p: file_facts(p) for p in (
        config, bot_dir / "app.pem", bot_dir / "secret", bot_dir / "session-secret",
        bot_dir / "deploy-key")}
    try:
        yield adv
    finally:
        bot.stop()
        fake.stop()
    fake.assert_no_violations()
