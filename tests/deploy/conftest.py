"""Fixtures of the deploy tests: keys, tarballs, and a real S3 server (SeaweedFS).

The S3 tests use the server that ``scripts/s3.sh start`` runs, found through the variables
of its env file (``LAYERBOT_TEST_S3_ENDPOINT``, ``_KEY``, ``_SECRET``). Without them they
are skipped, except in CI (``CI`` set), where a missing server is a failure.

Tests that kill the server mid-upload start a private instance with the same script (own
directory and ports), so they never take the shared one away from other tests.
"""

from __future__ import annotations

import io
import os
import random
import socket
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import SecretStr

from layerbot.config import S3Config
from layerbot.deploy.metadata import LayerbotInfo, Link2PR, utcnow
from layerbot.deploy.signing import KeyPair, Signer, allowed_signers_line, generate_keypair
from layerbot.deploy.staging import RetryPolicy, S3Staging, TransferSettings

REPO_ROOT = Path(__file__).resolve().parents[2]
S3_SCRIPT = REPO_ROOT / "scripts" / "s3.sh"
INSTANCE = "cluster-a"
#: Enough to ride out a hiccup, short enough that a test fails in seconds.
QUICK_RETRY = RetryPolicy(attempts=6, initial_seconds=0.2, max_seconds=2, deadline_seconds=30)


# ----------------------------------------------------------------------------- S3 server


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    key: str
    secret: str
    #: Set for servers this test session controls (private instances).
    base_dir: Path | None = None
    port: int | None = None

    def settings(self, *, secret: str | None = None, key: str | None = None) -> S3Config:
        return S3Config(
            endpoint_url=self.endpoint,
            access_key_id=key or self.key,
            secret_access_key=SecretStr(secret or self.secret),
        )

    def _script(self, action: str) -> None:
        assert self.base_dir is not None and self.port is not None
        env = {
            **os.environ,
            "LAYERBOT_S3_DIR": str(self.base_dir),
            "LAYERBOT_S3_PORT": str(self.port),
        }
        subprocess.run(
            ["bash", str(S3_SCRIPT), action], env=env, check=True, capture_output=True, timeout=120
        )

    def stop(self) -> None:
        self._script("stop")

    def start(self) -> None:
        self._script("start")


def _answers(endpoint: str) -> bool:
    host, port = endpoint.split("://", 1)[1].rstrip("/").split(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except OSError:
        return False


def _s3_env() -> dict[str, str]:
    """The server's variables: from the environment, else from the env file s3.sh wrote
    (as scripts/test.sh starts the server without exporting them)."""
    names = ("LAYERBOT_TEST_S3_ENDPOINT", "LAYERBOT_TEST_S3_KEY", "LAYERBOT_TEST_S3_SECRET")
    if os.environ.get(names[0]):
        return {n: os.environ.get(n, "") for n in names}
    env_file = Path(os.environ.get("LAYERBOT_S3_DIR", "/var/tmp/layerbot-s3")) / "env"
    found: dict[str, str] = {}
    if env_file.is_file():
        for line in env_file.read_text().splitlines():
            name, _, value = line.removeprefix("export ").partition("=")
            if name in names:
                found[name] = value.strip().strip("'\"")
    return found


def _require_s3() -> S3Server:
    env = _s3_env()
    endpoint = env.get("LAYERBOT_TEST_S3_ENDPOINT")
    in_ci = bool(os.environ.get("CI"))
    if not endpoint:
        why = (
            "no S3 server: LAYERBOT_TEST_S3_ENDPOINT is unset and there is no env file; "
            "run `scripts/s3.sh start`"
        )
        if in_ci:
            pytest.fail(f"CI is set but {why}")
        pytest.skip(why)
    if not _answers(endpoint):
        why = f"the S3 server at {endpoint} (LAYERBOT_TEST_S3_ENDPOINT) does not answer"
        if in_ci:
            pytest.fail(why)
        pytest.skip(why)
    return S3Server(
        endpoint, env.get("LAYERBOT_TEST_S3_KEY", ""), env.get("LAYERBOT_TEST_S3_SECRET", "")
    )


@pytest.fixture(scope="session")
def s3_server() -> S3Server:
    return _require_s3()


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port_block() -> int:
    """A port P with P..P+3 and P+10000..P+10003 free (weed's HTTP and gRPC ports)."""
    rng = random.Random(os.getpid() ^ time.time_ns())
    for _ in range(200):
        port = rng.randrange(20000, 30000, 10)
        wanted = [*range(port, port + 4), *range(port + 10000, port + 10004)]
        if all(_port_free(p) for p in wanted):
            return port
    raise RuntimeError("no free block of ports for a private S3 server")


@pytest.fixture(scope="module")
def private_s3(s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A SeaweedFS of our own, to kill and restart mid-upload."""
    base = tmp_path_factory.mktemp("s3-private")
    port = _free_port_block()
    server = S3Server(f"http://127.0.0.1:{port}", "", "", base, port)
    server.start()
    env = dict(
        line.removeprefix("export ").split("=", 1)
        for line in (base / "env").read_text().splitlines()
        if "=" in line
    )
    server = S3Server(
        server.endpoint, env["LAYERBOT_TEST_S3_KEY"], env["LAYERBOT_TEST_S3_SECRET"], base, port
    )
    try:
        yield server
    finally:
        server.stop()


_CREATED: list[S3Staging] = []


def make_s3_staging(
    server: S3Server,
    state_dir: Path,
    *,
    bucket: str | None = None,
    transfer: TransferSettings | None = None,
    retry: RetryPolicy | None = None,
    create: bool = True,
) -> S3Staging:
    """A staging on a new bucket of its own, removed after the test (``drop_buckets``)."""
    staging = S3Staging(
        server.settings(),
        bucket or f"t-{uuid.uuid4().hex[:12]}",
        state_dir=state_dir,
        transfer=transfer,
        retry=retry or QUICK_RETRY,
    )
    if create:
        staging.ensure_bucket()
        _CREATED.append(staging)
    return staging


def drop_bucket(staging: S3Staging) -> None:
    """Empty and delete a bucket: SeaweedFS gives each bucket volumes of its own, and a
    long-lived test server would run out of them."""
    client, bucket = staging.client, staging.bucket
    for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    for obj in list(staging.list_objects()):
        client.delete_object(Bucket=bucket, Key=obj.key)
    client.delete_bucket(Bucket=bucket)


@pytest.fixture(autouse=True)
def drop_buckets() -> Iterator[None]:
    yield
    while _CREATED:
        staging = _CREATED.pop()
        try:
            drop_bucket(staging)
        except Exception as exc:  # a test that killed its server: nothing left to drop
            print(f"could not drop bucket {staging.bucket}: {exc}")


# ----------------------------------------------------------------------------- keys


@dataclass(frozen=True)
class Keys:
    pair: KeyPair
    signer: Signer
    allowed_signers: Path


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    """A bot key pinned to its instance's namespace in an allowed_signers file."""
    d = tmp_path_factory.mktemp("keys")
    pair = generate_keypair(d / "bot_key", comment="layerbot@cluster-a")
    allowed = d / "allowed_signers"
    allowed.write_text(allowed_signers_line("cluster-a-bot", pair.public_key(), [INSTANCE]))
    return Keys(pair, Signer(pair.private, INSTANCE), allowed)


@pytest.fixture(scope="session")
def stranger(tmp_path_factory: pytest.TempPathFactory) -> Signer:
    """A key that is in no allowed_signers file."""
    pair = generate_keypair(tmp_path_factory.mktemp("stranger") / "key", comment="stranger")
    return Signer(pair.private, INSTANCE)


# ----------------------------------------------------------------------------- artifacts


def add_file(tar: tarfile.TarFile, name: str, data: bytes = b"x\n", mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    tar.addfile(info, io.BytesIO(data))


def add_special(
    tar: tarfile.TarFile, name: str, kind: bytes, linkname: str = "", mode: int = 0o755
) -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mode = mode
    tar.addfile(info)


def good_tarball(path: Path, version: str = "2025.06") -> Path:
    """A small software tree like EESSI's: files, a directory, an internal symlink."""
    with tarfile.open(path, "w:gz") as tar:
        add_special(tar, f"{version}/software", tarfile.DIRTYPE)
        add_file(tar, f"{version}/software/hello/bin/hello", b"#!/bin/sh\necho hi\n", 0o755)
        add_file(tar, f"{version}/software/hello/README", b"hello 1.0\n")
        add_special(tar, f"{version}/software/hello/latest", tarfile.SYMTYPE, "bin")
    return path


def link_info(pr: int = 7, comment: int | None = 1234) -> Link2PR:
    return Link2PR(repo="org/software-layer", pr=pr, pr_comment_id=comment)


def build_info(job: str = "42", repo_target: str = "software.example.org") -> LayerbotInfo:
    return LayerbotInfo(
        instance=INSTANCE,
        head_sha="a" * 40,
        base_sha="b" * 40,
        job_id=job,
        target="x86_64/amd/zen2",
        repo_target=repo_target,
        build_time=utcnow(),
        uploaded_at=utcnow(),
        key="",
        sequence=int(job) if job.isdigit() else None,
    )
