"""S3Staging against a real S3 server (SeaweedFS started by scripts/s3.sh); no mocks.

The interrupted-upload tests kill a private server instance in the middle of a multipart
upload (paused at a known part through the progress callback) and check that the parts
stored before the kill are not sent again.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import SecretStr

from layerbot.config import S3Config
from layerbot.deploy.metadata import file_sha256
from layerbot.deploy.staging import (
    RetryPolicy,
    S3Staging,
    StagingError,
    TransferSettings,
    UploadProgress,
    stage_artifact,
)

from .conftest import Keys, S3Server, build_info, good_tarball, link_info, make_s3_staging

pytestmark = pytest.mark.s3

MIB = 1024 * 1024
#: The smallest parts S3 allows, one at a time: the upload is paused at a known part.
SMALL_PARTS = TransferSettings(multipart_threshold=5 * MIB, part_size=5 * MIB, concurrency=1)


def random_file(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path


def record_parts(staging: S3Staging) -> list[int]:
    """Part numbers as the client sends them (a botocore hook on the real client)."""
    sent: list[int] = []

    def on_upload_part(params: dict[str, Any], **_: Any) -> None:
        sent.append(int(params["PartNumber"]))

    staging.client.meta.events.register("provide-client-params.s3.UploadPart", on_upload_part)
    return sent


def stored_sha256(staging: S3Staging, key: str, tmp_path: Path) -> str:
    return staging.download(key, tmp_path / "downloaded")


# ----------------------------------------------------------------------------- basics


@pytest.mark.parametrize("checksum", ["crc32", "md5"])
def test_small_upload_then_skip(
    s3_server: S3Server, tmp_path: Path, checksum: Literal["crc32", "md5"]
) -> None:
    transfer = TransferSettings(checksum=checksum)
    staging = make_s3_staging(s3_server, tmp_path / "state", transfer=transfer)
    artifact = random_file(tmp_path / "a.tar.gz", 300_000)
    sha = file_sha256(artifact)
    first = staging.upload(artifact, "org/layer/pr-1/a.tar.gz", sha, {"pr": "1"})
    assert (first.state, first.bytes) == ("uploaded", 300_000)
    assert first.url == f"{s3_server.endpoint}/{staging.bucket}/org/layer/pr-1/a.tar.gz"
    head = staging.head("org/layer/pr-1/a.tar.gz")
    assert head is not None and head["Metadata"] == {"sha256": sha, "pr": "1"}
    again = staging.upload(artifact, "org/layer/pr-1/a.tar.gz", sha, {"pr": "1"})
    assert (again.state, again.bytes) == ("skipped", 0)


@pytest.mark.parametrize("checksum", ["crc32", "md5"])
def test_multipart_upload_is_complete_and_then_skipped(
    s3_server: S3Server, tmp_path: Path, checksum: Literal["crc32", "md5"]
) -> None:
    transfer = TransferSettings(
        multipart_threshold=5 * MIB, part_size=5 * MIB, concurrency=4, checksum=checksum
    )
    staging = make_s3_staging(s3_server, tmp_path / "state", transfer=transfer)
    artifact = random_file(tmp_path / "big.tar", 23 * MIB + 17)
    sha = file_sha256(artifact)
    sent = record_parts(staging)
    progress: list[UploadProgress] = []
    outcome = staging.upload(artifact, "big.tar", sha, {}, progress.append)
    assert outcome.state == "uploaded" and outcome.bytes == artifact.stat().st_size
    assert sorted(sent) == [1, 2, 3, 4, 5]
    assert progress[-1].done == progress[-1].total == artifact.stat().st_size
    assert stored_sha256(staging, "big.tar", tmp_path) == sha
    assert not staging.state_file("big.tar").exists()
    assert staging.upload(artifact, "big.tar", sha, {}).state == "skipped"
    assert sorted(sent) == [1, 2, 3, 4, 5]


def test_changed_content_is_uploaded_again(s3_server: S3Server, tmp_path: Path) -> None:
    staging = make_s3_staging(s3_server, tmp_path / "state")
    one = random_file(tmp_path / "one", 1000)
    two = random_file(tmp_path / "two", 1000)
    staging.upload(one, "k.tar", file_sha256(one), {})
    assert staging.upload(two, "k.tar", file_sha256(two), {}).state == "uploaded"
    assert staging.get_bytes("k.tar") == two.read_bytes()


def test_listing_and_signed_set(s3_server: S3Server, tmp_path: Path, keys: Keys) -> None:
    staging = make_s3_staging(s3_server, tmp_path / "state")
    artifact = good_tarball(tmp_path / "t.tar.gz")
    key = "org/layer/pr-7/software.example.org/x86_64/amd/zen2/t.tar.gz"
    stage_artifact(
        staging, artifact, key, link2pr=link_info(), info=build_info(), signer=keys.signer
    )
    [pending] = staging.list_pending("org/layer/")
    assert pending.key == key and pending.has_artifact and pending.has_sig and pending.has_meta_sig
    assert staging.list_pending("other/") == []


# ----------------------------------------------------------------------------- clear errors


@pytest.mark.parametrize("wrong", ["secret", "key"])
def test_wrong_credentials_say_so(s3_server: S3Server, tmp_path: Path, wrong: str) -> None:
    good = make_s3_staging(s3_server, tmp_path / "state")
    settings = (
        s3_server.settings(secret="not-the-secret")
        if wrong == "secret"
        else s3_server.settings(key="AKIDNOTKNOWN")
    )
    bad = S3Staging(settings, good.bucket, state_dir=tmp_path / "state")
    artifact = random_file(tmp_path / "a", 1000)
    with pytest.raises(StagingError) as err:
        bad.upload(artifact, "a", file_sha256(artifact), {})
    message = str(err.value)
    assert message.startswith(
        f"the S3 credentials were refused by {s3_server.endpoint}: check deploy.s3.access_key_id"
    ), message
    assert "not-the-secret" not in message


def test_missing_bucket_says_so(s3_server: S3Server, tmp_path: Path) -> None:
    staging = make_s3_staging(
        s3_server, tmp_path / "state", bucket="no-such-bucket-x", create=False
    )
    artifact = random_file(tmp_path / "a", 1000)
    with pytest.raises(StagingError, match="the bucket 'no-such-bucket-x' does not exist"):
        staging.upload(artifact, "a", file_sha256(artifact), {})


def test_unreachable_endpoint_says_so(tmp_path: Path) -> None:
    settings = S3Config(
        endpoint_url="http://127.0.0.1:9", access_key_id="k", secret_access_key=SecretStr("s")
    )
    quick = RetryPolicy(attempts=2, initial_seconds=0.05, max_seconds=0.1, deadline_seconds=5)
    staging = S3Staging(settings, "b", state_dir=tmp_path, retry=quick)
    artifact = random_file(tmp_path / "a", 10)
    started = time.monotonic()
    with pytest.raises(StagingError, match=r"cannot reach the S3 endpoint http://127\.0\.0\.1:9"):
        staging.upload(artifact, "a", file_sha256(artifact), {})
    assert time.monotonic() - started < 10


# ----------------------------------------------------------------------------- resume


class _Cancelled(Exception):
    pass


def test_stale_state_of_another_file_is_dropped(s3_server: S3Server, tmp_path: Path) -> None:
    staging = make_s3_staging(s3_server, tmp_path / "state", transfer=SMALL_PARTS)
    old = random_file(tmp_path / "old", 12 * MIB)

    def stop_at_part_1(p: UploadProgress) -> None:
        if p.part == 1:
            raise _Cancelled

    with pytest.raises(_Cancelled):
        staging.upload(old, "k.tar", file_sha256(old), {}, stop_at_part_1)
    old_id = json.loads(staging.state_file("k.tar").read_text())["upload_id"]
    new = random_file(tmp_path / "new", 11 * MIB)
    assert staging.upload(new, "k.tar", file_sha256(new), {}).state == "uploaded"
    assert stored_sha256(staging, "k.tar", tmp_path) == file_sha256(new)
    uploads = staging.client.list_multipart_uploads(Bucket=staging.bucket).get("Uploads", [])
    assert old_id not in {u["UploadId"] for u in uploads}


@pytest.mark.slow
def test_upload_rides_out_a_server_restart(private_s3: S3Server, tmp_path: Path) -> None:
    """The server is killed after part 3 and back a few seconds later: the same call
    finishes, and parts 1-3 are not sent again."""
    patient = RetryPolicy(attempts=40, initial_seconds=0.2, max_seconds=1.0, deadline_seconds=90)
    staging = make_s3_staging(private_s3, tmp_path / "state", transfer=SMALL_PARTS, retry=patient)
    artifact = random_file(tmp_path / "big.tar", 8 * 5 * MIB - 123)
    sha = file_sha256(artifact)
    sent = record_parts(staging)
    restarted = threading.Event()
    at_kill: dict[str, Any] = {}

    def kill_after_part_3(p: UploadProgress) -> None:
        if p.part == 3 and not at_kill:
            private_s3.stop()
            at_kill["sent"] = list(sent)
            at_kill["state"] = json.loads(staging.state_file("big.tar").read_text())
            threading.Thread(target=lambda: (private_s3.start(), restarted.set())).start()

    outcome = staging.upload(artifact, "big.tar", sha, {}, kill_after_part_3)
    assert restarted.wait(60)
    assert outcome.state == "uploaded"
    assert at_kill["sent"] == [1, 2, 3]
    assert sorted(at_kill["state"]["parts"]) == ["1", "2", "3"]
    after_kill = sent[3:]
    assert not {1, 2, 3} & set(after_kill), sent
    assert sorted(set(after_kill)) == [4, 5, 6, 7, 8]
    assert stored_sha256(staging, "big.tar", tmp_path) == sha


@pytest.mark.slow
def test_upload_resumes_in_a_new_process_after_the_server_died(
    private_s3: S3Server, tmp_path: Path
) -> None:
    """The server dies after part 3 and stays down: the upload fails with a clear message.
    A new S3Staging (as after a bot restart) with the same state dir resumes from the
    state file and list_parts, sending only the missing parts."""
    impatient = RetryPolicy(attempts=2, initial_seconds=0.1, max_seconds=0.2, deadline_seconds=2)
    state_dir = tmp_path / "state"
    first = make_s3_staging(private_s3, state_dir, transfer=SMALL_PARTS, retry=impatient)
    artifact = random_file(tmp_path / "big.tar", 7 * 5 * MIB + 99)
    sha = file_sha256(artifact)

    def kill_after_part_3(p: UploadProgress) -> None:
        if p.part == 3:
            private_s3.stop()

    with pytest.raises(StagingError, match="cannot reach the S3 endpoint"):
        first.upload(artifact, "big.tar", sha, {}, kill_after_part_3)
    state = json.loads(first.state_file("big.tar").read_text())
    assert sorted(state["parts"]) == ["1", "2", "3"]

    private_s3.start()
    second = S3Staging(
        private_s3.settings(), first.bucket, state_dir=state_dir, transfer=SMALL_PARTS
    )
    sent = record_parts(second)
    outcome = second.upload(artifact, "big.tar", sha, {})
    assert outcome.state == "uploaded"
    assert sorted(sent) == [4, 5, 6, 7, 8]
    assert outcome.bytes == artifact.stat().st_size - 3 * 5 * MIB
    assert stored_sha256(second, "big.tar", tmp_path) == sha
    assert not second.state_file("big.tar").exists()
