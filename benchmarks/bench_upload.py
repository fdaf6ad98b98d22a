"""Upload throughput of S3Staging beside a plain boto3 ``upload_file``, same file, same run.

    scripts/s3.sh start
    uv run python benchmarks/bench_upload.py [--size-mb 1024] [--rounds 2]

Prints ``name=value`` lines (MB = 10^6 bytes). The artifact (1 GiB of random bytes by
default) is made once under /var/tmp/layerbot-bench and reused. Each round uploads it with
both methods, alternating which goes first so that neither always meets a warmer server;
the best round of each is reported, as the server's own hiccups only ever slow a run down.
The sha256 that S3Staging needs is computed once beforehand (the deploy side knows it from
the metadata anyway) and not counted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from pathlib import Path

import boto3
from boto3.s3.transfer import TransferConfig
from pydantic import SecretStr

from layerbot.config import S3Config
from layerbot.deploy.metadata import file_sha256
from layerbot.deploy.staging import S3Staging, TransferSettings

BENCH_DIR = Path(os.environ.get("LAYERBOT_BENCH_DIR", "/var/tmp/layerbot-bench"))
MIB = 1024 * 1024
#: S3Staging's defaults (deploy.multipart_threshold_bytes / part_size_bytes): 16 MiB parts,
#: 8 in flight (128 MiB of buffers at most), CRC32 checked by the server.
OURS = TransferSettings()


def server_env() -> dict[str, str]:
    names = ("LAYERBOT_TEST_S3_ENDPOINT", "LAYERBOT_TEST_S3_KEY", "LAYERBOT_TEST_S3_SECRET")
    if os.environ.get(names[0]):
        return {n: os.environ[n] for n in names}
    env_file = Path(os.environ.get("LAYERBOT_S3_DIR", "/var/tmp/layerbot-s3")) / "env"
    if not env_file.is_file():
        raise SystemExit("no S3 server: run scripts/s3.sh start first")
    found = {}
    for line in env_file.read_text().splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        found[name] = value
    return found


def artifact(size: int) -> Path:
    """Random bytes (incompressible, like a tarball), written once and kept."""
    path = BENCH_DIR / f"artifact-{size // MIB}m.bin"
    if path.is_file() and path.stat().st_size == size:
        return path
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as fh:
        for _ in range(size // MIB):
            fh.write(os.urandom(MIB))
        fh.write(os.urandom(size % MIB))
    tmp.replace(path)
    return path


def timed_ours(staging: S3Staging, path: Path, sha: str, key: str) -> float:
    start = time.perf_counter()
    outcome = staging.upload(path, key, sha, {})
    elapsed = time.perf_counter() - start
    assert outcome.state == "uploaded", outcome
    staging.delete(key)
    return elapsed


def timed_boto3(env: dict[str, str], bucket: str, path: Path, key: str) -> float:
    """boto3 as most code uses it: a default client and upload_file's default transfer."""
    client = boto3.client(
        "s3",
        endpoint_url=env["LAYERBOT_TEST_S3_ENDPOINT"],
        aws_access_key_id=env["LAYERBOT_TEST_S3_KEY"],
        aws_secret_access_key=env["LAYERBOT_TEST_S3_SECRET"],
        region_name="us-east-1",
    )
    start = time.perf_counter()
    client.upload_file(str(path), bucket, key, Config=TransferConfig())
    elapsed = time.perf_counter() - start
    client.delete_object(Bucket=bucket, Key=key)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=1024, help="artifact size in MiB")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    env = server_env()
    path = artifact(args.size_mb * MIB)
    size = path.stat().st_size
    sha = file_sha256(path)
    settings = S3Config(
        endpoint_url=env["LAYERBOT_TEST_S3_ENDPOINT"],
        access_key_id=env["LAYERBOT_TEST_S3_KEY"],
        secret_access_key=SecretStr(env["LAYERBOT_TEST_S3_SECRET"]),
    )
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    staging = S3Staging(settings, bucket, state_dir=BENCH_DIR / "state", transfer=OURS)
    staging.ensure_bucket()
    ours: list[float] = []
    plain: list[float] = []
    try:
        for round_ in range(args.rounds):
            if round_ % 2 == 0:
                ours.append(timed_ours(staging, path, sha, "ours.bin"))
                plain.append(timed_boto3(env, bucket, path, "plain.bin"))
            else:
                plain.append(timed_boto3(env, bucket, path, "plain.bin"))
                ours.append(timed_ours(staging, path, sha, "ours.bin"))
    finally:
        staging.client.delete_bucket(Bucket=bucket)
    ours_rate = size / min(ours) / 1e6
    plain_rate = size / min(plain) / 1e6
    print(f"file_bytes={size}")
    print(f"rounds={args.rounds}")
    print(f"s3staging_part_size_bytes={OURS.part_size}")
    print(f"s3staging_concurrency={OURS.concurrency}")
    print(f"s3staging_checksum={OURS.checksum}")
    print(f"s3staging_seconds={min(ours):.2f}")
    print(f"boto3_upload_file_seconds={min(plain):.2f}")
    print(f"s3staging_mb_per_s={ours_rate:.1f}")
    print(f"boto3_upload_file_mb_per_s={plain_rate:.1f}")
    print(f"ratio_s3staging_over_boto3={ours_rate / plain_rate:.2f}")
    print(f"ratio_of_medians={statistics.median(plain) / statistics.median(ours):.2f}")
    print("all_s3staging_seconds=" + ",".join(f"{t:.2f}" for t in ours))
    print("all_boto3_upload_file_seconds=" + ",".join(f"{t:.2f}" for t in plain))


if __name__ == "__main__":
    main()
