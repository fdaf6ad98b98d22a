"""Deployment states and the transitions allowed between them, written once (as for jobs
in ``core/jobs.py``).

A deployment (one per artifact) moves::

    queued ──▶ uploading ──▶ uploaded | skipped ──▶ ingested ⇄ rejected
      ▲  ▲         │    └──▶ failed
      │  └─────────┘  a transient failure: queued again, retried later
      └─────────────── failed: queued again by a new deploy request

Every write of a deployment's state goes through :func:`check_transition` (by way of
``store.deployments.transition``), so a state the agents' uploads, the ingest report and
the deploy requests do not agree on cannot be written. The stored values are these strings.
"""

from __future__ import annotations

from enum import StrEnum


class DeploymentState(StrEnum):
    QUEUED = "queued"  # recorded; the agent of its job has not taken it yet
    UPLOADING = "uploading"  # taken by the agent of its job (again after a crash or a stop)
    UPLOADED = "uploaded"  # in the staging area
    SKIPPED = "skipped"  # the staging area held it already (same sha256)
    FAILED = "failed"  # cannot succeed as it is; a new request queues it again
    INGESTED = "ingested"  # the repository server took it in
    REJECTED = "rejected"  # the repository server refused it

    @property
    def pending(self) -> bool:
        """The agent of its job still has to stage it."""
        return self in PENDING

    @property
    def staged(self) -> bool:
        """It reached the staging area (and perhaps the repository server)."""
        return self in STAGED


PENDING = frozenset({DeploymentState.QUEUED, DeploymentState.UPLOADING})
STAGED = frozenset({DeploymentState.UPLOADED, DeploymentState.SKIPPED, DeploymentState.INGESTED,
                    DeploymentState.REJECTED})

_INGEST_OUTCOMES = frozenset({DeploymentState.INGESTED, DeploymentState.REJECTED})

TRANSITIONS: dict[DeploymentState, frozenset[DeploymentState]] = {
    DeploymentState.QUEUED: frozenset({DeploymentState.UPLOADING}),
    DeploymentState.UPLOADING: frozenset({DeploymentState.UPLOADED, DeploymentState.SKIPPED,
                                          DeploymentState.FAILED, DeploymentState.QUEUED}),
    DeploymentState.UPLOADED: _INGEST_OUTCOMES,
    DeploymentState.SKIPPED: _INGEST_OUTCOMES,
    DeploymentState.FAILED: frozenset({DeploymentState.QUEUED}),
    # A later report of the repository server overrides an earlier one (an ingest run again).
    DeploymentState.INGESTED: frozenset({DeploymentState.REJECTED}),
    DeploymentState.REJECTED: frozenset({DeploymentState.INGESTED}),
}


class DeploymentTransitionError(ValueError):
    def __init__(self, current: DeploymentState, new: DeploymentState) -> None:
        allowed = ", ".join(sorted(TRANSITIONS[current])) or "none"
        super().__init__(f"a {current} deployment cannot become {new}; allowed: {allowed}")
        self.current = current
        self.new = new


def can_transition(current: DeploymentState, new: DeploymentState) -> bool:
    """Staying in a state is allowed (an upload resumed after a crash, an outcome repeated)."""
    return new is current or new in TRANSITIONS[current]


def check_transition(current: DeploymentState, new: DeploymentState) -> None:
    if not can_transition(current, new):
        raise DeploymentTransitionError(current, new)
