"""The staging area, key template and bucket of a repository target, as configured."""

from __future__ import annotations

from pathlib import Path

from layerbot.config import DeployConfig, S3Config
from layerbot.deploy.layout import layout_named
from layerbot.deploy.staging.directory import DirStaging
from layerbot.deploy.staging.errors import StagingError
from layerbot.deploy.staging.protocol import Staging
from layerbot.deploy.staging.retry import RetryPolicy
from layerbot.deploy.staging.s3 import S3Staging
from layerbot.deploy.staging.transfer import TransferSettings


def staging_for(
    deploy: DeployConfig, repo_target: str, *, staging_dir: Path, state_dir: Path
) -> Staging:
    """The staging area of a repository target as configured (``deploy.staging``).

    ``staging_dir`` is ``Config.staging_dir``; ``state_dir`` keeps multipart progress and
    must survive restarts (e.g. ``<data_dir>/uploads``).
    """
    layout = layout_named(deploy.layout)
    if deploy.staging == "dir":
        return DirStaging(staging_dir, layout=layout)
    transfer = TransferSettings(
        multipart_threshold=deploy.multipart_threshold_bytes,
        part_size=deploy.part_size_bytes,
        concurrency=deploy.upload_concurrency,
        checksum=deploy.s3.checksum,
    )
    retry = RetryPolicy(attempts=deploy.upload_retry_attempts,
                        deadline_seconds=deploy.upload_retry_deadline_seconds)
    bucket = bucket_for(deploy.s3, repo_target)
    return S3Staging(deploy.s3, bucket, state_dir=state_dir, transfer=transfer, retry=retry,
                     layout=layout)


def key_template(deploy: DeployConfig, repo_target: str) -> str:
    """``deploy.artifact_prefix`` of a repository target, else the layout's default (EESSI's
    bot, too, falls back to its legacy path when its prefixes are empty)."""
    return deploy.prefix_template(repo_target) or layout_named(deploy.layout).default_prefix


def bucket_for(settings: S3Config, repo_target: str) -> str:
    """The bucket of a repository target: ``deploy.s3.buckets[id]``, else ``["*"]``."""
    bucket = settings.buckets.get(repo_target) or settings.buckets.get("*")
    if not bucket:
        raise StagingError(
            f"no bucket for repository target '{repo_target}': add it (or \"*\") to "
            "deploy.s3.buckets"
        )
    return bucket
