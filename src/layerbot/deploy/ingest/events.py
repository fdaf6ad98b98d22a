"""Events: the outcomes reported on the source PR."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from layerbot.deploy.metadata import ArtifactMetadata

EventState = Literal["pending", "ingested", "rejected", "failed", "duplicate"]


@dataclass(frozen=True)
class IngestEvent:
    """An outcome to report on the source PR."""

    item_id: str
    key: str
    state: EventState
    reason: str
    repository: str | None
    #: None when the metadata could not be read.
    metadata: ArtifactMetadata | None
    #: False when the metadata's signature was missing or wrong: its ``link2pr`` is then
    #: only a claim (anyone able to write to the staging area could have made it up).
    metadata_verified: bool
    at: datetime


EventCallback = Callable[[IngestEvent], Awaitable[None] | None]
