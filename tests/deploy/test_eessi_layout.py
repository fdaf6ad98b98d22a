"""Issue 10, item 6: with EESSI's settings, what layerbot stages is what EESSI's automated
ingestion (EESSI/filesystem-layer ``scripts/automated_ingestion``) reads, unchanged.

The contract, as that ingestion applies it to each bucket of its ``staging_buckets`` map:

- a tarball is an object whose key ends in ``.tar.gz`` and for which ``<key>.meta.txt``
  exists in the same bucket;
- signatures are ``<key>.sig`` and ``<key>.meta.txt.sig``;
- the metadata is JSON with ``uploader`` (username, ip, hostname), ``payload`` (filename,
  size, ctime, sha256sum, url) and ``link2pr`` (repo, pr), and ``payload.sha256sum`` is the
  tarball's sha256;
- keys follow EESSI's bot: ``<artefact_prefix>/<tarball>`` with ``${github_repository}``,
  ``${pull_request_number}`` and ``${legacy_aws_path}`` expanded, the legacy path when the
  prefix is empty, in the bucket mapped to the repository id.

Run against the real S3 server (SeaweedFS); the objects are listed and matched.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import pytest

from layerbot.config import DeployConfig, S3Config
from layerbot.deploy.ingest import AutoApprove, Ingestor
from layerbot.deploy.metadata import Link2PR
from layerbot.deploy.staging import (
    S3Staging,
    artifact_key,
    key_template,
    stage_artifact,
    staging_for,
)

from .conftest import _CREATED, Keys, S3Server, build_info, good_tarball

SOFTWARE = "eessi.io-2023.06-software"
DEV = "dev.eessi.io-2024.09"
TARBALL = "eessi-2023.06-software-linux-x86_64-amd-zen2-1700000000.tar.gz"


def eessi_deploy(server: S3Server, buckets: dict[str, str]) -> DeployConfig:
    """What ``layerbot init --from-eessi`` makes of EESSI's [deploycfg]."""
    settings = server.settings()
    return DeployConfig(
        staging="s3",
        layout="eessi",
        s3=S3Config(**{**settings.model_dump(), "buckets": buckets}),
        artifact_prefix={SOFTWARE: "new/${github_repository}/${pull_request_number}", DEV: ""},
        metadata_prefix={SOFTWARE: "new/${github_repository}/${pull_request_number}"},
    )


def stage(deploy: DeployConfig, repo_target: str, tarball: Path, keys: Keys,
          tmp: Path) -> tuple[S3Staging, str]:
    staging = staging_for(deploy, repo_target, staging_dir=tmp / "unused", state_dir=tmp / "s3")
    assert isinstance(staging, S3Staging)
    staging.ensure_bucket()
    _CREATED.append(staging)
    key = artifact_key(key_template(deploy, repo_target), tarball.name, repo="EESSI/software-layer",
                       pr=123, repo_target=repo_target, target="x86_64/amd/zen2", job=5)
    info = build_info(job="5", repo_target=repo_target)
    stage_artifact(staging, tarball, key, link2pr=Link2PR(repo="EESSI/software-layer", pr=123),
                   info=info, signer=keys.signer)
    return staging, key


def eessi_finds(staging: S3Staging) -> list[str]:
    """The tarballs EESSI's ingestion would process in this bucket (its listing rule)."""
    listed = staging.client.list_objects_v2(Bucket=staging.bucket).get("Contents", [])
    names = {o["Key"] for o in listed}
    return sorted(k for k in names if k.endswith(".tar.gz") and k + ".meta.txt" in names)


def test_staged_objects_match_eessi_layout(s3_server: S3Server, keys: Keys, tmp_path: Path
                                           ) -> None:
    buckets = {SOFTWARE: f"eessi-sw-{tmp_path.name[-8:].lower()}".replace("_", "-"),
               DEV: f"eessi-dev-{tmp_path.name[-8:].lower()}".replace("_", "-")}
    deploy = eessi_deploy(s3_server, buckets)
    tarball = good_tarball(tmp_path / TARBALL, "2023.06")

    software, key = stage(deploy, SOFTWARE, tarball, keys, tmp_path)
    assert key == f"new/EESSI/software-layer/123/{TARBALL}"
    objects = {o.key for o in software.list_objects()}
    assert objects == {key, key + ".sig", key + ".meta.txt", key + ".meta.txt.sig"}
    assert eessi_finds(software) == [key]

    meta = json.loads(software.get_bytes(key + ".meta.txt"))
    assert set(meta["uploader"]) >= {"username", "ip", "hostname"}
    assert set(meta["payload"]) >= {"filename", "size", "ctime", "sha256sum", "url"}
    assert meta["payload"]["filename"] == TARBALL
    assert meta["payload"]["sha256sum"] == hashlib.sha256(tarball.read_bytes()).hexdigest()
    assert meta["payload"]["size"] == tarball.stat().st_size
    assert meta["payload"]["url"].endswith(f"/{buckets[SOFTWARE]}/{key}")
    assert (meta["link2pr"]["repo"], meta["link2pr"]["pr"]) == ("EESSI/software-layer", 123)
    # layerbot's own fields sit in a section of their own, which EESSI's tools ignore.
    assert meta["layerbot"]["key"] == key and meta["layerbot"]["sequence"] == 5

    # An empty prefix is EESSI's legacy path; the bucket is the one mapped to the repo id.
    dev, dev_key = stage(deploy, DEV, tarball, keys, tmp_path)
    assert dev.bucket == buckets[DEV]
    assert dev_key == f"2023.06/software/linux/x86_64/amd/zen2/1700000000/{TARBALL}"
    assert eessi_finds(dev) == [dev_key]
    assert key not in {o.key for o in dev.list_objects()}


def test_layerbot_ingest_reads_the_eessi_layout(s3_server: S3Server, keys: Keys,
                                                tmp_path: Path) -> None:
    buckets = {SOFTWARE: f"eessi-in-{tmp_path.name[-8:].lower()}".replace("_", "-")}
    deploy = eessi_deploy(s3_server, buckets)
    staging, key = stage(deploy, SOFTWARE, good_tarball(tmp_path / TARBALL, "2023.06"), keys,
                         tmp_path)
    repo = tmp_path / "cvmfs"
    repo.mkdir()
    ingestor = Ingestor(staging, keys.allowed_signers, AutoApprove(),
                        ["tar", "-xf", "{tarball}", "-C", str(repo)], tmp_path / "state")
    try:
        [record] = asyncio.run(ingestor.run_once())
    finally:
        ingestor.close()
    assert (record.key, record.state) == (key, "ingested"), record.reason
    assert (repo / "2023.06/software/hello/README").is_file()


def test_metadata_elsewhere_is_refused_at_load() -> None:
    with pytest.raises(ValueError, match=r"metadata_prefix .* differs from"):
        DeployConfig(artifact_prefix="a/${pull_request_number}",
                     metadata_prefix="m/${pull_request_number}")


def test_unknown_eessi_variable_is_a_clear_error() -> None:
    from layerbot.deploy.staging import StagingError, render_key

    with pytest.raises(StagingError, match=r"unknown variable\(s\) \['nope'\]"):
        render_key("new/${nope}", repo="o/r")
