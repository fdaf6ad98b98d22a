"""Issue 9, item 7: someone who can write to the staging area, but has no signing key,
replays old signed builds by copying them (tarball, metadata, both signatures) under another
key. Ingestion must refuse the copy, refuse an already ingested sha256 without an admin's
force, and never let an older build replace a newer one of the same target.

Everything is real: ssh signatures by the bot's key, the staging directory, the ingestor
with its SQLite state, ``tar`` standing in for ``cvmfs_server ingest``, and the
``layerbot ingest --force`` command line for the admin.

Without the fix each attack succeeds: the ingestor checked neither the signed key nor a
sequence, and recognised a duplicate only by key *and* sha256, so a copy under a new key
was ingested again (verified by running this module against the commit before the fix).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from layerbot.deploy.ingest import AutoApprove, Ingestor
from layerbot.deploy.metadata import LayerbotInfo, Link2PR, file_sha256, utcnow
from layerbot.deploy.signing import Signer, allowed_signers_line, generate_keypair
from layerbot.deploy.staging import DirStaging, stage_artifact
from tests.deploy.conftest import good_tarball

INSTANCE = "cluster-a"
REPOSITORY = "software.example.org"
TARGET = "x86_64/amd/zen2"


class Site:
    """The bot's staging side and the repository server's ingestion side."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        pair = generate_keypair(tmp / "bot_key", comment="layerbot@cluster-a")
        self.signer = Signer(pair.private, INSTANCE)
        self.allowed = tmp / "allowed_signers"
        self.allowed.write_text(allowed_signers_line("bot", pair.public_key(), [INSTANCE]))
        self.staging = DirStaging(tmp / "staging")
        self.repo = tmp / "cvmfs" / REPOSITORY
        self.repo.mkdir(parents=True)
        self.state = tmp / "ingest-state"

    def ingestor(self, force: tuple[str, ...] = ()) -> Ingestor:
        command = ["tar", "-xf", "{tarball}", "-C", str(self.repo)]
        return Ingestor(self.staging, self.allowed, AutoApprove(), command, self.state,
                        force_sha256=force)

    def stage(self, version: str, job: int, pr: int = 7, target: str = TARGET) -> str:
        tarball = good_tarball(self.tmp / f"eessi-{version}-software-{job}.tar.gz", version)
        key = f"org/layer/pr-{pr}/{REPOSITORY}/{target}/{tarball.name}"
        info = LayerbotInfo(instance=INSTANCE, head_sha="a" * 40, base_sha="b" * 40,
                            job_id=str(job), target=target, repo_target=REPOSITORY,
                            uploaded_at=utcnow(), key="", sequence=job)
        stage_artifact(self.staging, tarball, key, link2pr=Link2PR(repo="org/layer", pr=pr),
                       info=info, signer=self.signer)
        return key

    def copy(self, key: str, new_key: str) -> None:
        """The attacker: copies every staged file of ``key`` under ``new_key``."""
        root = self.staging.root
        layout = self.staging.layout
        for suffix in ("", layout.sig_suffix, layout.meta_sig_suffix, layout.meta_suffix):
            dest = root / (new_key + suffix)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / (key + suffix), dest)

    def run(self, ingestor: Ingestor | None = None) -> dict[str, tuple[str, str]]:
        ing = ingestor or self.ingestor()
        try:
            return {r.key: (r.state, r.reason) for r in asyncio.run(ing.run_once())}
        finally:
            ing.close()

    def versions(self) -> list[str]:
        return sorted(p.name for p in self.repo.iterdir())


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The admin's command line, as a real process."""
    exe = Path(sys.executable).parent / "layerbot"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=120,
                          check=False)


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return Site(tmp_path)


def test_signed_artifact_copied_under_another_key_is_refused(site: Site) -> None:
    key = site.stage("v1", job=1)
    copy = key.replace("pr-7", "pr-8")
    site.copy(key, copy)
    outcome = site.run()
    assert outcome[key][0] == "ingested"
    state, reason = outcome[copy]
    assert state == "rejected"
    assert f"staged under {copy}" in reason and key in reason


def test_copy_of_ingested_artifact_is_not_ingested_again(site: Site) -> None:
    key = site.stage("v1", job=1)
    assert site.run()[key][0] == "ingested"
    shutil.rmtree(site.repo / "v1")  # so that a second ingest would show
    # The same tarball signed again for another key (a second deploy, another PR, a changed
    # prefix): the content was ingested already, wherever it is staged now.
    state, reason = _replay(site, key.replace("pr-7", "pr-9"), pr=9)
    assert state == "duplicate", reason
    assert "layerbot ingest --force" in reason
    assert site.versions() == []
    # A replay of the whole signed set at the original key (new upload time) likewise.
    state, reason = _replay(site, key)
    assert state == "duplicate", reason


def _replay(site: Site, key: str, pr: int = 7) -> tuple[str, str]:
    """Stage the very same tarball again (a new upload of an already ingested sha256)."""
    tarball = site.tmp / key.rsplit("/", 1)[-1]
    info = LayerbotInfo(instance=INSTANCE, head_sha="a" * 40, base_sha="b" * 40, job_id="1",
                        target=TARGET, repo_target=REPOSITORY, uploaded_at=utcnow(), key="",
                        sequence=1)
    stage_artifact(site.staging, tarball, key, link2pr=Link2PR(repo="org/layer", pr=pr),
                   info=info, signer=site.signer)
    return site.run()[key]


def test_admin_force_ingests_a_known_sha256_again(site: Site, tmp_path: Path) -> None:
    key = site.stage("v1", job=1)
    assert site.run()[key][0] == "ingested"
    shutil.rmtree(site.repo / "v1")
    state, _ = _replay(site, key)
    assert state == "duplicate"
    sha256 = file_sha256(site.tmp / key.rsplit("/", 1)[-1])
    config = tmp_path / "layerbot.toml"
    config.write_text(
        f'[deploy]\nstaging = "dir"\nstaging_dir = "{site.staging.root}"\n'
        f'[ingest]\nallowed_signers_file = "{site.allowed}"\nstate_dir = "{site.state}"\n'
        f'command = ["tar", "-xf", "{{tarball}}", "-C", "{site.repo}"]\n'
    )
    bad = _cli("ingest", "--config", str(config), "--force", "nothex")
    assert bad.returncode == 2 and "64 hex digits" in bad.stderr
    result = _cli("ingest", "--config", str(config), "--force", sha256)
    assert result.returncode == 0, result.stderr
    assert "ingested" in result.stdout
    assert site.versions() == ["v1"]


def test_older_build_never_replaces_a_newer_one(site: Site) -> None:
    old = site.stage("v1", job=1)
    first = site.run()
    assert first[old][0] == "ingested"
    new = site.stage("v2", job=2)
    assert site.run()[new][0] == "ingested"
    # An older build of the same target (job 1's sequence), staged after the newer one was
    # ingested: whether staged by the bot late or replayed, it is refused.
    late = site.stage("v0", job=1)
    state, reason = site.run()[late]
    assert state == "rejected"
    assert "older than 2" in reason
    assert site.versions() == ["v1", "v2"]
    # Another target keeps its own order.
    other = site.stage("v3", job=1, target="aarch64/neoverse_v1")
    assert site.run()[other][0] == "ingested"
