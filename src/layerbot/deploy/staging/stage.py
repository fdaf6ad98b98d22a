"""Staging a build: the artifact, its signature and its signed metadata, metadata last."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from layerbot.deploy.metadata import (
    ArtifactMetadata,
    LayerbotInfo,
    Link2PR,
    Uploader,
    build_metadata,
    file_sha256,
)
from layerbot.deploy.signing import Signer
from layerbot.deploy.staging.protocol import ProgressCallback, Staging, UploadOutcome


@dataclass(frozen=True)
class StagedArtifact:
    outcome: UploadOutcome
    meta_key: str
    metadata: ArtifactMetadata
    signed: bool


def stage_artifact(
    staging: Staging,
    artifact: Path,
    key: str,
    *,
    link2pr: Link2PR,
    info: LayerbotInfo,
    signer: Signer | None,
    sha256: str | None = None,
    uploader: Uploader | None = None,
    progress: ProgressCallback | None = None,
) -> StagedArtifact:
    """Upload an artifact with its signature and signed metadata (metadata last).

    Without a signer nothing is signed; ingestion refuses such artifacts unless it is
    configured otherwise, so only tests and trusted setups go without.
    """
    sha256 = sha256 or file_sha256(artifact)
    object_meta = {
        "pr": str(link2pr.pr),
        "head-sha": info.head_sha,
        "instance": info.instance,
        "job": info.job_id,
    }
    outcome = staging.upload(artifact, key, sha256, object_meta, progress)
    metadata = build_metadata(
        artifact,
        sha256=sha256,
        url=outcome.url,
        link2pr=link2pr,
        info=info.model_copy(update={"key": key}),
        uploader=uploader,
    )
    rendered = metadata.render()
    layout = staging.layout
    meta_key = key + layout.meta_suffix
    if signer is not None:
        staging.put_bytes(key + layout.sig_suffix, signer.sign_file(artifact), "text/plain")
        staging.put_bytes(key + layout.meta_sig_suffix, signer.sign_bytes(rendered),
                          "text/plain")
    staging.put_bytes(meta_key, rendered, "application/json")
    return StagedArtifact(outcome, meta_key, metadata, signer is not None)
