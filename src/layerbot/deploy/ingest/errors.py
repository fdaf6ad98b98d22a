"""Why the ingestor cannot run, or will not ingest an artifact."""

from __future__ import annotations


class IngestError(Exception):
    """The ingestor cannot run (bad template, another ingestor on the same state)."""


class _Refused(Exception):
    """An artifact that will not be ingested; the message is the reason shown on the PR."""
