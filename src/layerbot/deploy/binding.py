"""What ties a staged artifact to what was signed: its key, and its place in the order of
builds of its target. Pure checks; the ingestor supplies the store's answers.

Without these, anyone who can write to the staging area (but has no signing key) could
copy an old, validly signed tarball with its metadata and signatures under a new key, and
ingestion would take the old build again: a rollback. So ingestion refuses

- an artifact found under another key than the one its signed metadata names (for EESSI's
  metadata, which has no ``layerbot`` section, the signed ``payload.url`` must end in the
  key: EESSI's upload script writes the object's URL there);
- an artifact whose sha256 was ingested before (unless an admin forces it, see
  ``layerbot ingest --force``), wherever it was staged;
- a build whose signed sequence is lower than the newest ingested for the same target (an
  older build never replaces a newer one; force does not override this, a rebuild does).
  Equal is allowed: one job may stage several artifacts (the sha256 rule stops a replay).
"""

from __future__ import annotations

from dataclasses import dataclass

from layerbot.deploy.metadata import ArtifactMetadata


@dataclass(frozen=True)
class SequenceScope:
    """Builds whose sequences are compared: one instance's counter, one target."""

    instance: str
    repo_target: str
    target: str

    def describe(self) -> str:
        return f"{self.target} of {self.repo_target} (instance {self.instance})"


def key_problem(found_key: str, metadata: ArtifactMetadata) -> str | None:
    """Why the artifact at ``found_key`` is not the one the metadata was signed for."""
    info = metadata.layerbot
    if info is not None:
        if info.key != found_key:
            return (f"staged under {found_key}, but its signed metadata names {info.key}: "
                    "a copy of a signed artifact under another key is not ingested")
        if info.sequence is None:
            return ("the signed metadata has no build sequence (staged by an older layerbot); "
                    "deploy the build again")
    elif not metadata.payload.url.endswith("/" + found_key):
        return (f"staged under {found_key}, but its signed metadata's payload.url is "
                f"{metadata.payload.url}: a copy under another key is not ingested")
    if found_key.rsplit("/", 1)[-1] != metadata.payload.filename:
        return (f"staged under {found_key}, but its signed metadata names the file "
                f"{metadata.payload.filename}")
    return None


def sequence_scope(metadata: ArtifactMetadata) -> SequenceScope | None:
    """None for metadata that carries no sequence (EESSI's own)."""
    info = metadata.layerbot
    if info is None or info.sequence is None:
        return None
    return SequenceScope(info.instance, info.repo_target, info.target)


def rollback_problem(metadata: ArtifactMetadata, newest: int | None) -> str | None:
    """Why this build must not follow ``newest``, the highest ingested sequence of its scope."""
    scope = sequence_scope(metadata)
    if scope is None or newest is None:
        return None
    assert metadata.layerbot is not None and metadata.layerbot.sequence is not None
    sequence = metadata.layerbot.sequence
    if sequence < newest:
        return (f"build sequence {sequence} is older than {newest}, already ingested for "
                f"{scope.describe()}: an older build never replaces a newer one")
    return None
