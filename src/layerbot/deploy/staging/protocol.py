"""What a staging area is: the protocol both implementations follow, the names beside an
artifact, and the values uploads and listings return.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal, Protocol

from layerbot.deploy.layout import Layout

META_SUFFIX = ".meta.json"
SIG_SUFFIX = ".sig"
META_SIG_SUFFIX = META_SUFFIX + SIG_SUFFIX
#: Object metadata key holding the artifact's sha256 (S3 stores it as x-amz-meta-sha256).
SHA256_META = "sha256"


@dataclass(frozen=True)
class UploadOutcome:
    state: Literal["uploaded", "skipped"]
    key: str
    url: str
    #: Bytes sent in this call (0 when skipped; less than the size when resumed).
    bytes: int


@dataclass(frozen=True)
class UploadProgress:
    key: str
    #: Bytes of the artifact known to be stored (finished parts, resumed ones included).
    done: int
    total: int
    #: The part just finished (None for single-request uploads).
    part: int | None = None


ProgressCallback = Callable[[UploadProgress], None]


@dataclass(frozen=True)
class StagedObject:
    key: str
    size: int
    modified: datetime


@dataclass(frozen=True)
class PendingArtifact:
    """An artifact whose metadata is in the staging area (the set is complete)."""

    key: str
    meta_key: str
    sig_key: str
    meta_sig_key: str
    #: When the metadata (the last file written) arrived.
    staged_at: datetime
    has_artifact: bool
    has_sig: bool
    has_meta_sig: bool
    size: int | None


class Staging(Protocol):
    """What the deploy side and the ingestion side need of a staging area."""

    #: Where it is, for messages (``s3://bucket`` or a directory).
    location: str
    #: How metadata and signatures are named beside an artifact.
    layout: Layout

    def url_for(self, key: str) -> str: ...

    def upload(
        self,
        artifact: Path,
        key: str,
        sha256: str,
        metadata: Mapping[str, str],
        progress: ProgressCallback | None = None,
    ) -> UploadOutcome: ...

    def put_bytes(self, key: str, data: bytes, content_type: str = ...) -> None: ...

    def get_bytes(self, key: str) -> bytes: ...

    def download(self, key: str, dest: Path, max_bytes: int | None = None) -> str:
        """Write the object to ``dest``; returns the sha256 of what was written. An object
        larger than ``max_bytes`` is refused (StagingError) before more is written."""
        ...

    def delete(self, key: str) -> None: ...

    def list_objects(self, prefix: str = "") -> Iterator[StagedObject]: ...

    def list_pending(self, prefix: str = "") -> list[PendingArtifact]: ...
