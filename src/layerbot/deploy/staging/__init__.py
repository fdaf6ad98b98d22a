"""The staging area: where built artifacts wait, with their metadata and signatures, until the
repository server ingests them.

Two implementations of one small protocol:

- ``DirStaging(root)``: a local (or shared) directory, the embedded default;
- ``S3Staging(settings, bucket)``: an S3 bucket (any S3-compatible server).

For an artifact at ``<key>`` the area holds, written in this order so that a reader never
sees a half-staged artifact (``<key>.meta.json`` is the marker and comes last):

    <key>                 the tarball
    <key>.sig             its detached SSH signature
    <key>.meta.json.sig   the metadata's signature
    <key>.meta.json       the metadata (EESSI's fields + layerbot's)

(with ``deploy.layout = "eessi"``: ``.meta.txt`` in place of ``.meta.json``, the names
EESSI's automated ingestion reads; see ``layout``).

S3 uploads above a threshold go multipart, several parts at a time. The upload id and the
ETags of finished parts are kept in a small JSON file in a caller-given state directory, so
an upload cut by a crash, a restart or a dead server resumes (``list_parts``) instead of
starting over. An object already there with the same sha256 (kept as object metadata) is
not uploaded again. Transient failures (connection errors, 5xx, throttling) are retried with
exponential backoff; permanent ones become a ``StagingError`` that says what to fix.

The package, one concern a module:

- ``errors``: ``StagingError`` and its kinds;
- ``protocol``: the ``Staging`` protocol, the names beside an artifact, upload and listing values;
- ``keys``: object keys and key templates; ``listing``: which artifacts are staged whole;
- ``streams``: chunked reads, hashing downloads;
- ``directory``: ``DirStaging``;
- ``retry``, ``transfer``, ``multipart``, ``s3``: ``S3Staging`` and how it talks to S3;
- ``factory``: the staging area of a repository target as configured;
- ``stage``: staging a build (``stage_artifact``).
"""

from __future__ import annotations

from layerbot.deploy.staging.directory import DirStaging
from layerbot.deploy.staging.errors import AccessDenied, ObjectNotFound, StagingError
from layerbot.deploy.staging.factory import bucket_for, key_template, staging_for
from layerbot.deploy.staging.keys import artifact_key, check_key, render_key
from layerbot.deploy.staging.protocol import (
    META_SIG_SUFFIX,
    META_SUFFIX,
    SHA256_META,
    SIG_SUFFIX,
    PendingArtifact,
    ProgressCallback,
    StagedObject,
    Staging,
    UploadOutcome,
    UploadProgress,
)
from layerbot.deploy.staging.retry import RetryPolicy, is_transient
from layerbot.deploy.staging.s3 import S3Staging
from layerbot.deploy.staging.stage import StagedArtifact, stage_artifact
from layerbot.deploy.staging.transfer import MAX_PARTS, MIN_PART_SIZE, TransferSettings

__all__ = [
    "MAX_PARTS",
    "META_SIG_SUFFIX",
    "META_SUFFIX",
    "MIN_PART_SIZE",
    "SHA256_META",
    "SIG_SUFFIX",
    "AccessDenied",
    "DirStaging",
    "ObjectNotFound",
    "PendingArtifact",
    "ProgressCallback",
    "RetryPolicy",
    "S3Staging",
    "StagedArtifact",
    "StagedObject",
    "Staging",
    "StagingError",
    "TransferSettings",
    "UploadOutcome",
    "UploadProgress",
    "artifact_key",
    "bucket_for",
    "check_key",
    "is_transient",
    "key_template",
    "render_key",
    "stage_artifact",
    "staging_for",
]
