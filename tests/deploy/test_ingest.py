"""The ingestion core: verification, refusals, approval, ordering, idempotency.

A directory stands in for the CernVM-FS repository and ``tar -xf`` for ``cvmfs_server
ingest``. Most tests stage into a directory (fast); the whole path also runs over the real
S3 server.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import tarfile
from pathlib import Path
from typing import Any

import pytest

from layerbot.deploy.ingest import (
    ApprovalPolicy,
    AutoApprove,
    Decision,
    IngestError,
    IngestEvent,
    IngestItem,
    Ingestor,
)
from layerbot.deploy.metadata import file_sha256
from layerbot.deploy.signing import Signer
from layerbot.deploy.staging import DirStaging, Staging, stage_artifact

from .conftest import (
    Keys,
    S3Server,
    add_file,
    build_info,
    good_tarball,
    link_info,
    make_s3_staging,
)
from .test_tarsafety import HOSTILE

REPOSITORY = "software.example.org"


class Env:
    """A staging area, a stand-in repository, and an ingestor over them."""

    def __init__(self, tmp: Path, staging: Staging, keys: Keys) -> None:
        self.tmp = tmp
        self.staging = staging
        self.keys = keys
        self.repo = tmp / "cvmfs"
        (self.repo / REPOSITORY).mkdir(parents=True)
        self.events: list[IngestEvent] = []
        self.count = 0

    def command(self) -> list[str]:
        return ["tar", "-xf", "{tarball}", "-C", f"{self.repo}/{{repository}}"]

    def ingestor(
        self,
        approval: ApprovalPolicy | None = None,
        command: list[str] | None = None,
        **kwargs: Any,
    ) -> Ingestor:
        kwargs.setdefault("on_event", self.events.append)
        return Ingestor(
            self.staging,
            self.keys.allowed_signers,
            approval or AutoApprove(),
            command or self.command(),
            self.tmp / "ingest-state",
            **kwargs,
        )

    def stage(
        self,
        tarball: Path | None = None,
        *,
        signer: Signer | str | None = "default",
        pr: int = 7,
        name: str | None = None,
    ) -> str:
        self.count += 1
        if tarball is None:
            tarball = good_tarball(self.tmp / f"build-{self.count}.tar.gz", f"v{self.count}")
        key = f"org/layer/pr-{pr}/{REPOSITORY}/x86_64/amd/zen2/{name or tarball.name}"
        chosen = self.keys.signer if signer == "default" else signer
        assert not isinstance(chosen, str)
        stage_artifact(
            self.staging,
            tarball,
            key,
            link2pr=link_info(pr=pr),
            info=build_info(job=str(self.count), repo_target=REPOSITORY),
            signer=chosen,
        )
        return key

    def run(self, ingestor: Ingestor) -> list[str]:
        return [f"{r.state}: {r.reason}" for r in asyncio.run(ingestor.run_once())]


@pytest.fixture
def env(tmp_path: Path, keys: Keys) -> Env:
    return Env(tmp_path, DirStaging(tmp_path / "staging"), keys)


def repo_files(env: Env) -> list[str]:
    root = env.repo / REPOSITORY
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


# ----------------------------------------------------------------------------- the good path


def test_good_tarball_is_ingested_once(env: Env) -> None:
    key = env.stage()
    ingestor = env.ingestor()
    assert env.run(ingestor) == [f"ingested: ingested into {REPOSITORY}"]
    assert "v1/software/hello/bin/hello" in repo_files(env)
    assert (env.repo / REPOSITORY / "v1/software/hello/latest").is_symlink()
    [event] = env.events
    assert (event.state, event.key, event.repository) == ("ingested", key, REPOSITORY)
    assert event.metadata is not None and event.metadata_verified
    assert event.metadata.link2pr.pr == 7 and event.metadata.layerbot is not None
    # Nothing more on the next poll, nor after a restart of the ingest service.
    assert env.run(ingestor) == []
    ingestor.close()
    assert env.run(env.ingestor()) == []
    assert len(env.events) == 1


def test_same_artifact_staged_again_is_not_ingested_twice(env: Env) -> None:
    tarball = good_tarball(env.tmp / "t.tar.gz", "v1")
    env.stage(tarball)
    ingestor = env.ingestor()
    env.run(ingestor)
    (env.repo / REPOSITORY / "v1").rename(env.repo / "moved-away")
    env.stage(tarball)  # the same content again, with new metadata (a second bot:deploy)
    [outcome] = env.run(ingestor)
    assert outcome.startswith("duplicate: already ingested")
    assert repo_files(env) == []


def test_artifacts_are_ingested_in_staging_order(env: Env) -> None:
    log = env.tmp / "order.log"
    keys = [env.stage() for _ in range(3)]
    command = ["sh", "-c", f'echo "$LAYERBOT_INGEST_KEY" >> {log}']
    assert len(env.run(env.ingestor(command=command))) == 3
    assert log.read_text().split() == keys


# ----------------------------------------------------------------------------- refusals


def test_tampered_tarball_is_refused(env: Env) -> None:
    key = env.stage()
    good_sha = file_sha256(env.tmp / "build-1.tar.gz")
    tampered = env.tmp / "evil.tar.gz"
    with tarfile.open(tampered, "w:gz") as tar:
        add_file(tar, "v1/software/hello/bin/hello", b"#!/bin/sh\nrm -rf ~\n")
    (env.tmp / "staging" / key).write_bytes(tampered.read_bytes())
    [outcome] = env.run(env.ingestor())
    assert outcome == (
        f"rejected: checksum mismatch: metadata says {good_sha}, file has {file_sha256(tampered)}"
    )
    assert repo_files(env) == []
    assert env.events[0].state == "rejected"


def test_unsigned_artifact_is_refused(env: Env) -> None:
    env.stage(signer=None)
    [outcome] = env.run(env.ingestor())
    assert outcome.startswith("rejected: no valid signature by an allowed signer")
    assert ".meta.json.sig is missing" in outcome
    assert repo_files(env) == []
    # The PR named in unsigned metadata is only a claim: the event says so.
    assert not env.events[0].metadata_verified


def test_artifact_signed_by_a_stranger_is_refused(env: Env, stranger: Signer) -> None:
    env.stage(signer=stranger)
    [outcome] = env.run(env.ingestor())
    assert outcome.startswith("rejected: no valid signature by an allowed signer on the metadata")
    assert "not in allowed signers" in outcome


def test_tarball_signature_missing_is_refused(env: Env) -> None:
    key = env.stage()
    (env.tmp / "staging" / (key + ".sig")).unlink()
    [outcome] = env.run(env.ingestor())
    assert outcome == f"rejected: no valid signature by an allowed signer: {key}.sig is missing"


def test_edited_metadata_is_refused(env: Env) -> None:
    key = env.stage()
    meta = env.tmp / "staging" / (key + ".meta.json")
    meta.write_text(meta.read_text().replace('"pr": 7', '"pr": 8'))
    [outcome] = env.run(env.ingestor())
    assert outcome.startswith("rejected: no valid signature by an allowed signer on the metadata")


def test_namespace_of_another_instance_is_refused(env: Env) -> None:
    env.stage()
    [outcome] = env.run(env.ingestor(namespaces=["cluster-b"]))
    assert "instance 'cluster-a' is not an accepted namespace" in outcome


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_tarball_is_refused(env: Env, case: str) -> None:
    build, expected = HOSTILE[case]
    tarball = env.tmp / "hostile.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        add_file(tar, "v1/ok")
        build(tar)
    env.stage(tarball)
    [outcome] = env.run(env.ingestor())
    assert outcome.startswith("rejected: unsafe tarball: member '"), outcome
    assert expected in outcome
    assert repo_files(env) == []


def test_unsafe_tarball_reason_reads_well(env: Env) -> None:
    tarball = env.tmp / "t.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        add_file(tar, "../etc/passwd")
    env.stage(tarball)
    [outcome] = env.run(env.ingestor())
    assert (
        outcome
        == "rejected: unsafe tarball: member '../etc/passwd' leaves the tree (a '..' component)"
    )


# ----------------------------------------------------------------------------- approval


class Gate:
    """An approval policy a test opens and closes by hand."""

    def __init__(self) -> None:
        self.answers: dict[str, Decision] = {}
        self.asked: list[str] = []

    async def decide(self, item: IngestItem) -> Decision:
        self.asked.append(item.key)
        assert item.signer == "cluster-a-bot" and item.tarball.is_file()
        return self.answers.get(item.key, Decision.pending("waiting for a maintainer"))


def test_pending_holds_later_artifacts_of_the_repository(env: Env) -> None:
    gate = Gate()
    first, second = env.stage(), env.stage()
    ingestor = env.ingestor(gate)
    assert env.run(ingestor) == ["pending: waiting for a maintainer"]
    assert gate.asked == [first]  # the second waits behind the first
    assert [e.state for e in env.events] == ["pending"]
    assert env.run(ingestor) == []  # still pending: reported once only
    gate.answers[first] = Decision.approved(by="maintainer")
    gate.answers[second] = Decision.rejected("not this one", by="maintainer")
    assert env.run(ingestor) == [
        f"ingested: ingested into {REPOSITORY}",
        "rejected: not approved: not this one",
    ]
    assert [e.state for e in env.events] == ["pending", "ingested", "rejected"]
    assert [r.decided_by for r in ingestor.outcomes()] == ["maintainer", "maintainer"]


def test_auto_approve_can_be_limited_to_principals(env: Env) -> None:
    env.stage()
    [outcome] = env.run(env.ingestor(AutoApprove(["someone-else"])))
    assert outcome == "rejected: not approved: signer 'cluster-a-bot' is not approved automatically"


# ----------------------------------------------------------------------------- failures


def test_failing_command_is_recorded_with_its_output(env: Env) -> None:
    env.stage()
    command = ["sh", "-c", "echo 'cvmfs_server: transaction failed' >&2; exit 3"]
    [outcome] = env.run(env.ingestor(command=command))
    assert (
        outcome == "failed: the ingest command sh exited with 3: cvmfs_server: transaction failed"
    )


def test_crash_during_ingest_is_not_run_again(env: Env) -> None:
    env.stage()
    ingestor = env.ingestor()
    env.run(ingestor)
    # As if the process had died while the command ran.
    db = sqlite3.connect(env.tmp / "ingest-state" / "ingest.sqlite")
    db.execute("UPDATE items SET state = 'ingesting'")
    db.commit()
    db.close()
    [outcome] = env.run(env.ingestor())
    assert outcome.startswith("failed: interrupted while the ingest command ran")


def test_reports_are_retried_until_delivered(env: Env) -> None:
    env.stage()
    calls: list[str] = []

    def flaky(event: IngestEvent) -> None:
        calls.append(event.state)
        if len(calls) == 1:
            raise RuntimeError("GitHub is down")

    ingestor = env.ingestor(on_event=None)
    ingestor.on_event = flaky
    env.run(ingestor)
    env.run(ingestor)
    env.run(ingestor)
    assert calls == ["ingested", "ingested"]


def test_one_ingestor_per_state_dir(env: Env) -> None:
    env.stage()
    first, second = env.ingestor(), env.ingestor()

    async def both() -> None:
        with first._exclusive():
            await second.run_once()

    with pytest.raises(IngestError, match="another ingest process"):
        asyncio.run(both())


def test_templates_are_checked(env: Env) -> None:
    with pytest.raises(IngestError, match="unknown placeholder"):
        env.ingestor(command=["tar", "-xf", "{tarbal}"])


def test_default_command_fields(env: Env) -> None:
    """The cvmfs_server command line the default template makes (run through echo)."""
    env.stage()
    out = env.tmp / "argv"
    command = ["sh", "-c", f'printf "%s\\n" "$@" > {out}', "sh", "cvmfs_server", "ingest"]
    command += ["--tar_file", "{tarball}", "--base_dir", "{base_dir}", "{repository}"]
    env.run(env.ingestor(command=command, base_dir_template="versions/{target}"))
    argv = out.read_text().split("\n")
    assert argv[:3] == ["cvmfs_server", "ingest", "--tar_file"]
    assert argv[3].endswith(".tar.gz") and Path(argv[3]).name == "build-1.tar.gz"
    assert argv[4:7] == ["--base_dir", "versions/x86_64/amd/zen2", REPOSITORY]


# ----------------------------------------------------------------------------- over real S3


@pytest.mark.s3
def test_whole_path_over_s3(s3_server: S3Server, tmp_path: Path, keys: Keys) -> None:
    """Build a tarball, stage it signed into S3, ingest it into the stand-in repository;
    a tampered and an unsigned artifact in the same bucket are refused."""
    staging = make_s3_staging(s3_server, tmp_path / "upload-state")
    env = Env(tmp_path, staging, keys)
    # "build": a real tree packed by tar, as a job's build script would.
    tree = tmp_path / "installation" / "2025.06" / "software" / "zlib" / "lib"
    tree.mkdir(parents=True)
    (tree / "libz.so.1.3").write_bytes(b"\x7fELF" + b"\0" * 1000)
    (tree / "libz.so").symlink_to("libz.so.1.3")
    tarball = tmp_path / "eessi-2025.06-software-linux-x86_64-amd-zen2-1.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(tmp_path / "installation" / "2025.06", arcname="2025.06")
    good = env.stage(tarball)
    unsigned = env.stage(signer=None, pr=8)
    tampered = env.stage(pr=9)
    staging.put_bytes(tampered, b"not what was signed", "application/octet-stream")

    outcomes = env.run(env.ingestor())
    assert len(outcomes) == 3
    by_key = {e.key: e for e in env.events}
    assert by_key[good].state == "ingested"
    assert by_key[unsigned].reason.startswith("no valid signature by an allowed signer")
    assert by_key[tampered].reason.startswith("checksum mismatch: metadata says")
    root = env.repo / REPOSITORY / "2025.06" / "software" / "zlib" / "lib"
    assert (root / "libz.so.1.3").read_bytes().startswith(b"\x7fELF")
    assert (root / "libz.so").readlink() == Path("libz.so.1.3")
    assert env.run(env.ingestor()) == []


class FlakyApproval:
    """Fails to answer once (GitHub down), then approves."""

    def __init__(self) -> None:
        self.calls = 0

    async def decide(self, item: IngestItem) -> Decision:
        self.calls += 1
        if self.calls == 1:
            raise ConnectionError("api.github.com unreachable")
        return Decision.approved(by="maintainer")


def test_approval_failure_waits_and_asks_again(env: Env) -> None:
    env.stage()
    ingestor = env.ingestor(FlakyApproval())
    [outcome] = env.run(ingestor)
    assert outcome == "pending: waiting for approval (could not ask: api.github.com unreachable)"
    # Verified once: the next poll only asks again.
    work = next((env.tmp / "ingest-state" / "work").iterdir())
    assert (work / "checks.json").is_file()
    assert env.run(ingestor) == [f"ingested: ingested into {REPOSITORY}"]


def test_eessi_metadata_without_layerbot_section(env: Env) -> None:
    """Metadata as EESSI's tools write it (no layerbot section) goes to the configured
    repository when signed in a configured namespace."""
    tarball = good_tarball(env.tmp / "eessi.tar.gz", "v1")
    key = "eessi/eessi.tar.gz"
    sha = file_sha256(tarball)
    env.staging.upload(tarball, key, sha, {})
    meta = {
        "uploader": {"username": "bot", "ip": "", "hostname": "login1"},
        "payload": {
            "filename": tarball.name,
            "size": str(tarball.stat().st_size),
            "ctime": "1700000000",
            "sha256sum": sha,
            "url": env.staging.url_for(key),
        },
        "link2pr": {"repo": "EESSI/software-layer", "pr": "42", "pr_comment_id": "99"},
    }
    data = json.dumps(meta).encode()
    env.staging.put_bytes(key + ".sig", env.keys.signer.sign_file(tarball))
    env.staging.put_bytes(key + ".meta.json.sig", env.keys.signer.sign_bytes(data))
    env.staging.put_bytes(key + ".meta.json", data)
    assert env.run(env.ingestor()) == [
        "rejected: the metadata names no repository target and no default is configured"
    ]
    env.ingestor().forget(key)
    ingestor = env.ingestor(default_repository=REPOSITORY, namespaces=["cluster-a"])
    assert env.run(ingestor) == [f"ingested: ingested into {REPOSITORY}"]
    assert "v1/software/hello/README" in repo_files(env)
