"""Staging one deployment from its record (``deploy/upload.py``): the work an agent does with
its own ``[deploy]``, into a real directory staging area, signed with a real key."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from layerbot.config import Config, load
from layerbot.core.protocol import ArtifactInfo, UploadSpec
from layerbot.deploy.metadata import file_sha256, parse_metadata
from layerbot.deploy.signing import Verifier
from layerbot.deploy.staging import DirStaging, StagingError
from layerbot.deploy.upload import Stager, Stagings, unconfigured

from .conftest import INSTANCE, Keys, good_tarball


def config(tmp_path: Path, keys: Keys) -> Config:
    return load(None, overrides={
        "instance": {"name": "cluster-a-agent", "data_dir": str(tmp_path / "data")},
        "deploy": {"staging": "dir", "staging_dir": str(tmp_path / "staging"),
                   "signing_key_file": str(keys.pair.private)}})


def artifact_in_a_job(cfg: Config, name: str = "hello-1.0.tar.gz") -> Path:
    job_dir = cfg.jobs_dir / "job-7-abc"
    job_dir.mkdir(parents=True)
    return good_tarball(job_dir / name)


def spec_of(path: Path, **changes: object) -> UploadSpec:
    spec = UploadSpec(
        deployment_id=3, attempt=1, instance=INSTANCE, repo="org/software-layer", pr=42,
        job_id=7, head_sha="a" * 40, base_sha="b" * 40, cpu_target="x86_64/amd/zen2",
        repo_target="eessi-2023.06", comment_id=99,
        artifact=ArtifactInfo(name=path.name, path=str(path), size=path.stat().st_size,
                              sha256=file_sha256(path)))
    return spec.model_copy(update=dict(changes))


def test_a_deployment_is_staged_signed_in_the_instances_namespace_with_its_metadata(
        tmp_path: Path, keys: Keys) -> None:
    cfg = config(tmp_path, keys)
    spec = spec_of(artifact_in_a_job(cfg))
    report = Stager(cfg).stage(spec)
    assert (report.outcome, report.attempt, report.error) == ("uploaded", 1, None)
    key = "org/software-layer/pr-42/eessi-2023.06/x86_64/amd/zen2/hello-1.0.tar.gz"
    assert report.key == key
    staging = DirStaging(tmp_path / "staging")
    meta_bytes = staging.get_bytes(key + ".meta.json")
    meta = parse_metadata(meta_bytes)
    assert meta.layerbot is not None
    # The control plane's instance, not the agent's name: one namespace for the fleet.
    assert (meta.layerbot.instance, meta.layerbot.job_id, meta.layerbot.sequence) == (
        INSTANCE, "7", 7)
    assert (meta.link2pr.pr, meta.link2pr.pr_comment_id) == (42, 99)
    verifier = Verifier(keys.allowed_signers)
    assert verifier.verify_bytes(meta_bytes, staging.get_bytes(key + ".meta.json.sig"),
                                 INSTANCE).ok
    # Staged again (a crash before the report): the same object is found, nothing is sent.
    assert Stager(cfg).stage(spec).outcome == "skipped"


def test_a_file_outside_the_job_directories_is_never_staged(tmp_path: Path,
                                                            keys: Keys) -> None:
    cfg = config(tmp_path, keys)
    secret = tmp_path / "data" / "agent-token"
    secret.parent.mkdir(parents=True, exist_ok=True)
    secret.write_text("lba_secret")
    report = Stager(cfg).stage(spec_of(secret))
    assert report.outcome == "failed" and not report.transient
    assert "not in a job directory" in (report.error or "")
    # Nor through a link planted in a job directory.
    link = cfg.jobs_dir / "job-8-def" / "hello.tar.gz"
    link.parent.mkdir(parents=True)
    link.symlink_to(secret)
    assert "not in a job directory" in (Stager(cfg).stage(spec_of(link)).error or "")
    assert not (tmp_path / "staging").exists() or not any((tmp_path / "staging").rglob("*"))


@pytest.mark.parametrize(("change", "why"), [
    ("gone", "is gone"), ("edited", "changed since its job recorded it")])
def test_a_missing_or_changed_artifact_fails_for_good(tmp_path: Path, keys: Keys,
                                                      change: str, why: str) -> None:
    cfg = config(tmp_path, keys)
    path = artifact_in_a_job(cfg)
    spec = spec_of(path)
    if change == "gone":
        path.unlink()
    else:
        path.write_bytes(b"something else")
    report = Stager(cfg).stage(spec)
    assert report.outcome == "failed" and not report.transient
    assert why in (report.error or "")


class Unreachable(DirStaging):
    def upload(self, *args: object, **kwargs: object) -> object:  # type: ignore[override]
        try:
            raise ConnectionError("connection refused")
        except ConnectionError as exc:
            raise StagingError("the staging area did not answer") from exc


class Refusing(DirStaging):
    def upload(self, *args: object, **kwargs: object) -> object:  # type: ignore[override]
        raise StagingError("the S3 credentials were refused: check deploy.s3.secret_access_key")


@pytest.mark.parametrize(("staging", "transient"), [(Unreachable, True), (Refusing, False)])
def test_failures_say_whether_a_later_try_may_work(
        tmp_path: Path, keys: Keys, staging: type[DirStaging], transient: bool) -> None:
    cfg = config(tmp_path, keys)
    stager = Stager(cfg, staging=lambda _target: staging(tmp_path / "staging"))
    report = stager.stage(spec_of(artifact_in_a_job(cfg)))
    assert (report.outcome, report.transient) == ("failed", transient)


def test_an_agent_without_a_deploy_section_says_so_instead_of_staging(
        tmp_path: Path, keys: Keys) -> None:
    cfg = config(tmp_path, keys)
    report = Stager(cfg, configured=False).stage(spec_of(artifact_in_a_job(cfg)))
    assert report.outcome == "failed" and not report.transient
    assert report.error == unconfigured("cluster-a-agent")
    assert "[deploy]" in report.error


def _stages(config_text: str, tmp_path: Path) -> bool:
    from layerbot.agent.main import stager_of

    path = tmp_path / "layerbot.toml"
    path.write_text(config_text)
    return stager_of(load(path)).configured


def test_the_agent_stages_only_with_a_deploy_section_of_its_own(tmp_path: Path) -> None:
    assert not _stages('[instance]\nname = "a"\n', tmp_path)
    assert _stages('[instance]\nname = "a"\n[deploy]\nstaging = "dir"\n', tmp_path)


def s3_config(tmp_path: Path, endpoint: str, buckets: dict[str, str]) -> Config:
    return load(None, overrides={
        "instance": {"name": "cluster-a-agent", "data_dir": str(tmp_path / "data")},
        "deploy": {"staging": "s3", "s3": {
            "endpoint_url": endpoint, "region": "us-east-1", "access_key_id": "k",
            "secret_access_key": "s", "buckets": buckets}}})


def test_repository_targets_of_one_bucket_share_one_staging_area(tmp_path: Path) -> None:
    """Each S3 staging holds a client that loads S3's description anew (13 MB): one per
    bucket, not per repository target and user, or an agent's memory grows per target."""
    stagings = Stagings(s3_config(tmp_path, "http://127.0.0.1:9",
                                  {"*": "shared", "eessi-2025.06": "own"}))
    assert stagings("eessi-2023.06") is stagings("software.eessi.io")
    assert stagings("eessi-2025.06") is not stagings("eessi-2023.06")
    assert stagings("eessi-2025.06") is stagings("eessi-2025.06")


def test_an_agents_staging_area_is_made_at_start_so_a_bad_one_shows_there(
        tmp_path: Path) -> None:
    from layerbot.agent.main import AgentError, prepared_stagings

    bad = s3_config(tmp_path, "not a url", {"*": "shared"})
    with pytest.raises(AgentError, match=r"\[deploy\]: the staging area cannot be used: .*"
                       "endpoint"):
        asyncio.run(prepared_stagings(bad))
    good = s3_config(tmp_path, "http://127.0.0.1:9", {"*": "shared"})
    assert asyncio.run(prepared_stagings(good))("any-target").bucket == "shared"
