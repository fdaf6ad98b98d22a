"""Approval: what a policy sees of a verified artifact, what it decides, and the automatic
policy (``deploy.approval`` has the GitHub one).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from layerbot.deploy.metadata import ArtifactMetadata


class Approval(StrEnum):
    APPROVED = "approved"
    REJECTED = "rejected"
    PENDING = "pending"


@dataclass(frozen=True)
class Decision:
    state: Approval
    reason: str = ""
    #: Who decided (a signer principal, a GitHub login).
    by: str | None = None

    @classmethod
    def approved(cls, by: str | None = None, reason: str = "") -> Decision:
        return cls(Approval.APPROVED, reason, by)

    @classmethod
    def rejected(cls, reason: str, by: str | None = None) -> Decision:
        return cls(Approval.REJECTED, reason, by)

    @classmethod
    def pending(cls, reason: str = "waiting for approval") -> Decision:
        return cls(Approval.PENDING, reason)


@dataclass(frozen=True)
class IngestItem:
    """A verified artifact, as an approval policy sees it."""

    id: str
    key: str
    sha256: str
    metadata: ArtifactMetadata
    #: The repository it goes into (e.g. software.eessi.io) and the target id it was built for.
    repository: str
    repo_target: str
    #: The allowed-signers principal whose key signed it.
    signer: str
    tarball: Path
    staged_at: datetime
    #: Warnings of the tarball check (e.g. setuid files), for a human approver.
    warnings: tuple[str, ...] = ()


class ApprovalPolicy(Protocol):
    """Decides whether a verified artifact may be ingested.

    Called again on every poll while it answers ``pending``; it should keep its own
    state (an issue it opened, say) and be idempotent.
    """

    async def decide(self, item: IngestItem) -> Decision: ...


class AutoApprove:
    """Approves whatever an allowed signer signed (or only the given principals)."""

    def __init__(self, principals: Collection[str] | None = None) -> None:
        self.principals = None if principals is None else frozenset(principals)

    async def decide(self, item: IngestItem) -> Decision:
        if self.principals is None or item.signer in self.principals:
            return Decision.approved(by=item.signer, reason="signed by an allowed signer")
        return Decision.rejected(f"signer '{item.signer}' is not approved automatically")
