"""The metadata JSON that goes with each staged artifact.

It keeps the three sections of EESSI's bot (``uploader``, ``payload``, ``link2pr``) with
the same field names, so their ingestion tools read ours, and adds a ``layerbot`` section
with what EESSI lacked: the exact commits built (head and base SHA), the job, the instance,
the targets and the build time.

The file is rendered deterministically (sorted keys, fixed indentation) and signed as
bytes: the signature covers exactly what was uploaded, and parsing never re-renders.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

SCHEMA_VERSION = 1
_CHUNK = 4 * 1024 * 1024


class MetadataError(Exception):
    """A metadata file that cannot be used; the message says which field is wrong."""


class _Model(BaseModel):
    # Unknown fields are kept (a newer writer or EESSI's own tools may add some).
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class Uploader(_Model):
    username: str
    ip: str = ""
    hostname: str


class Payload(_Model):
    filename: str
    size: int = Field(ge=0)
    #: Seconds since the epoch (EESSI writes ``date -r FILE +%s``).
    ctime: int
    sha256sum: str
    url: str

    @field_validator("sha256sum")
    @classmethod
    def _hex(cls, value: str) -> str:
        value = value.lower()
        if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
            raise ValueError("must be 64 hexadecimal digits")
        return value

    @field_validator("filename")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not value or "/" in value or value in (".", ".."):
            raise ValueError("must be a plain file name")
        return value


class Link2PR(_Model):
    #: ``owner/name`` of the repository the PR belongs to.
    repo: str
    pr: int
    pr_comment_id: int | None = None


class LayerbotInfo(_Model):
    schema_version: int = SCHEMA_VERSION
    instance: str
    head_sha: str
    base_sha: str
    job_id: str
    #: CPU (and accelerator) target, e.g. x86_64/amd/zen2.
    target: str
    #: The repository target id (which repository the artifact is for).
    repo_target: str
    build_time: datetime | None = None
    uploaded_at: datetime
    #: The artifact's object key in the staging area. Signed, so that ingestion can refuse
    #: the artifact found under any other key (a copy made to replay an old build).
    key: str
    #: Orders the builds of one target: ingestion never takes a lower one after a higher
    #: one (no rollback). The job id in the bot's store: monotonic across the instance,
    #: it survives restarts, and a later build always has a higher one. None in metadata
    #: of layerbot versions before it existed (ingestion refuses those).
    sequence: int | None = None


class ArtifactMetadata(_Model):
    uploader: Uploader
    payload: Payload
    link2pr: Link2PR
    #: Absent in metadata written by EESSI's tools.
    layerbot: LayerbotInfo | None = None

    def render(self) -> bytes:
        """The exact bytes to upload and sign."""
        data = self.model_dump(mode="json", exclude_none=False)
        return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


def parse_metadata(data: bytes, source: str = "metadata") -> ArtifactMetadata:
    """Read a metadata file; ``MetadataError`` names the bad fields."""
    try:
        raw: Any = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MetadataError(f"{source}: not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise MetadataError(f"{source}: expected a JSON object")
    try:
        return ArtifactMetadata.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise MetadataError(f"{source}: {problems}") from None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def default_uploader() -> Uploader:
    """Who uploads: this process's user and host (EESSI also records a public IP; we do
    not look one up, as that needs a call to an outside service)."""
    host = socket.gethostname()
    return Uploader(username=getpass.getuser(), ip="", hostname=host)


def build_metadata(
    artifact: Path,
    *,
    sha256: str,
    url: str,
    link2pr: Link2PR,
    info: LayerbotInfo,
    uploader: Uploader | None = None,
) -> ArtifactMetadata:
    """Metadata for a local artifact about to be staged."""
    stat = artifact.stat()
    payload = Payload(
        filename=artifact.name,
        size=stat.st_size,
        ctime=int(stat.st_ctime),
        sha256sum=sha256,
        url=url,
    )
    return ArtifactMetadata(
        uploader=uploader or default_uploader(), payload=payload, link2pr=link2pr, layerbot=info
    )


def utcnow() -> datetime:
    return datetime.now(UTC)
