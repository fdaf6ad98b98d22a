"""DirStaging, the embedded default, and staging a signed artifact into it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from layerbot.config import DeployConfig, S3Config
from layerbot.deploy.metadata import (
    ArtifactMetadata,
    MetadataError,
    file_sha256,
    parse_metadata,
)
from layerbot.deploy.signing import Verifier
from layerbot.deploy.staging import (
    DirStaging,
    ObjectNotFound,
    S3Staging,
    StagingError,
    UploadProgress,
    artifact_key,
    bucket_for,
    check_key,
    render_key,
    stage_artifact,
    staging_for,
)

from .conftest import INSTANCE, Keys, build_info, good_tarball, link_info


@pytest.fixture
def staging(tmp_path: Path) -> DirStaging:
    return DirStaging(tmp_path / "staging")


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    path = tmp_path / "build" / "eessi-2025.06-software-linux-x86_64-amd-zen2-1.tar.gz"
    path.parent.mkdir()
    return good_tarball(path)


def test_upload_then_skip_same_content(staging: DirStaging, artifact: Path) -> None:
    sha = file_sha256(artifact)
    seen: list[UploadProgress] = []
    first = staging.upload(artifact, "a/b/t.tar.gz", sha, {"pr": "7"}, seen.append)
    assert first.state == "uploaded" and first.bytes == artifact.stat().st_size
    assert first.url.startswith("file://") and first.url.endswith("/a/b/t.tar.gz")
    assert seen[-1].done == seen[-1].total == artifact.stat().st_size
    assert staging.object_metadata("a/b/t.tar.gz")["sha256"] == sha
    second = staging.upload(artifact, "a/b/t.tar.gz", sha, {"pr": "7"})
    assert (second.state, second.bytes) == ("skipped", 0)


def test_changed_content_is_uploaded_again(staging: DirStaging, tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    one.write_bytes(b"1" * 100)
    two.write_bytes(b"2" * 100)
    staging.upload(one, "k", file_sha256(one), {})
    outcome = staging.upload(two, "k", file_sha256(two), {})
    assert outcome.state == "uploaded"
    assert staging.get_bytes("k") == b"2" * 100


def test_download_returns_sha256(staging: DirStaging, artifact: Path, tmp_path: Path) -> None:
    staging.upload(artifact, "x/t.tar.gz", file_sha256(artifact), {})
    got = staging.download("x/t.tar.gz", tmp_path / "copy")
    assert (
        got == file_sha256(artifact) == hashlib.sha256((tmp_path / "copy").read_bytes()).hexdigest()
    )
    with pytest.raises(ObjectNotFound):
        staging.download("x/missing", tmp_path / "m")
    with pytest.raises(ObjectNotFound):
        staging.get_bytes("x/missing")


def test_listing_hides_bookkeeping(staging: DirStaging, artifact: Path) -> None:
    staging.upload(artifact, "p/t.tar.gz", file_sha256(artifact), {})
    staging.put_bytes("p/t.tar.gz.meta.json", b"{}")
    assert [o.key for o in staging.list_objects()] == ["p/t.tar.gz", "p/t.tar.gz.meta.json"]
    assert [o.key for o in staging.list_objects("q/")] == []
    pending = staging.list_pending()
    assert len(pending) == 1
    p = pending[0]
    assert (p.key, p.has_artifact, p.has_sig, p.has_meta_sig) == ("p/t.tar.gz", True, False, False)


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "./a", "a/.", "sp ace", "a\\b"])
def test_unsafe_keys_are_refused(key: str) -> None:
    with pytest.raises(StagingError, match="not usable"):
        check_key(key)


def test_key_templates() -> None:
    key = artifact_key(
        "{repo}/pr-{pr}/{repo_target}/{target}",
        "t.tar.gz",
        repo="org/layer",
        pr=12,
        repo_target="software.example.org",
        target="x86_64/amd/zen2",
    )
    assert key == "org/layer/pr-12/software.example.org/x86_64/amd/zen2/t.tar.gz"
    with pytest.raises(StagingError, match="unknown placeholder"):
        render_key("{nope}/x")
    with pytest.raises(StagingError, match="no value"):
        render_key("{repo}/x")
    with pytest.raises(StagingError, match="not usable"):
        render_key("{repo}/x", repo="..")


def test_bucket_per_repository_target() -> None:
    s3 = S3Config(buckets={"software.example.org": "sw", "*": "fallback"})
    assert bucket_for(s3, "software.example.org") == "sw"
    assert bucket_for(s3, "dev.example.org") == "fallback"
    with pytest.raises(StagingError, match=r"deploy\.s3\.buckets"):
        bucket_for(S3Config(), "x")


def test_staging_from_config(tmp_path: Path) -> None:
    dirs = {"staging_dir": tmp_path / "staging", "state_dir": tmp_path / "uploads"}
    local = staging_for(DeployConfig(), "software.example.org", **dirs)
    assert isinstance(local, DirStaging) and local.root == tmp_path / "staging"
    s3 = DeployConfig(
        staging="s3",
        s3=S3Config(endpoint_url="http://127.0.0.1:9", buckets={"*": "stage"}),
        part_size_bytes=8 * 1024 * 1024,
    )
    remote = staging_for(s3, "software.example.org", **dirs)
    assert isinstance(remote, S3Staging)
    assert (remote.bucket, remote.transfer.part_size) == ("stage", 8 * 1024 * 1024)


def test_stage_artifact_writes_signed_set(staging: DirStaging, artifact: Path, keys: Keys) -> None:
    key = f"org/layer/pr-7/{artifact.name}"
    staged = stage_artifact(
        staging, artifact, key, link2pr=link_info(), info=build_info(), signer=keys.signer
    )
    assert staged.outcome.state == "uploaded" and staged.signed
    names = sorted(o.key for o in staging.list_objects())
    assert names == sorted([key, key + ".meta.json", key + ".meta.json.sig", key + ".sig"])
    # The metadata keeps EESSI's fields and adds ours.
    raw = json.loads(staging.get_bytes(key + ".meta.json"))
    assert set(raw) == {"uploader", "payload", "link2pr", "layerbot"}
    assert raw["payload"]["sha256sum"] == file_sha256(artifact)
    assert raw["payload"]["filename"] == artifact.name
    assert raw["payload"]["url"] == staging.url_for(key)
    assert raw["link2pr"] == {"repo": "org/software-layer", "pr": 7, "pr_comment_id": 1234}
    assert raw["layerbot"]["key"] == key and raw["layerbot"]["head_sha"] == "a" * 40
    meta = parse_metadata(staging.get_bytes(key + ".meta.json"))
    assert meta.render() == staging.get_bytes(key + ".meta.json")
    # Both signatures verify against the allowed signers.
    verifier = Verifier(keys.allowed_signers)
    meta_bytes = staging.get_bytes(key + ".meta.json")
    assert verifier.verify_bytes(meta_bytes, staging.get_bytes(key + ".meta.json.sig"), INSTANCE).ok
    assert verifier.verify_file(artifact, staging.get_bytes(key + ".sig"), INSTANCE).ok
    # The metadata is written last, so its time is not before the artifact's.
    times = {o.key: o.modified for o in staging.list_objects()}
    assert times[key + ".meta.json"] >= times[key]


# ----------------------------------------------------------------------------- metadata

SHA = "ab" * 32


def eessi_style() -> dict[str, object]:
    """What EESSI's upload script writes: every value a string."""
    return {
        "uploader": {"username": "bot", "ip": "192.0.2.1", "hostname": "login1"},
        "payload": {
            "filename": "eessi-2023.06-software-linux-x86_64-generic-1.tar.gz",
            "size": "1234",
            "ctime": "1700000000",
            "sha256sum": SHA,
            "url": "https://bucket.example/eessi-2023.06.tar.gz",
        },
        "link2pr": {"repo": "EESSI/software-layer", "pr": "42", "pr_comment_id": "99"},
    }


def test_eessi_metadata_is_read() -> None:
    meta = parse_metadata(json.dumps(eessi_style()).encode())
    assert meta.payload.size == 1234 and meta.link2pr.pr == 42 and meta.layerbot is None


def test_render_is_deterministic_and_round_trips() -> None:
    meta = ArtifactMetadata.model_validate(
        {**eessi_style(), "layerbot": build_info().model_dump(mode="json")}
    )
    data = meta.render()
    assert data == parse_metadata(data).render()
    assert data.endswith(b"\n")
    assert parse_metadata(data).layerbot == meta.layerbot


def test_unknown_fields_are_kept() -> None:
    raw = {**eessi_style(), "extra": {"from": "a newer writer"}}
    assert json.loads(parse_metadata(json.dumps(raw).encode()).render())["extra"] == raw["extra"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r["payload"].update(sha256sum="xyz"), "payload.sha256sum"),
        (lambda r: r["payload"].update(filename="../evil"), "payload.filename"),
        (lambda r: r.pop("link2pr"), "link2pr"),
        (lambda r: r["link2pr"].update(pr="many"), "link2pr.pr"),
    ],
)
def test_bad_fields_are_named(change: Callable[[Any], object], message: str) -> None:
    raw = eessi_style()
    change(raw)
    with pytest.raises(MetadataError, match=message.replace(".", r"\.")):
        parse_metadata(json.dumps(raw).encode(), "k.meta.json")


def test_not_json() -> None:
    with pytest.raises(MetadataError, match="not valid JSON"):
        parse_metadata(b"{nope")
    with pytest.raises(MetadataError, match="JSON object"):
        parse_metadata(b"[]")


def test_link_model() -> None:
    assert link_info(pr=3, comment=None).pr_comment_id is None
