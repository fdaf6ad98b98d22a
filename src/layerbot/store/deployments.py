"""Deployments in the store; every state written goes through the state machine."""

from __future__ import annotations

from datetime import datetime

from layerbot.core.deployments import DeploymentState, check_transition
from layerbot.store.models import Deployment


def transition(deployment: Deployment, new: DeploymentState, now: datetime,
               error: str | None = None) -> None:
    """Move ``deployment`` to ``new`` with ``error`` (None clears it), stamped ``now``;
    :class:`~layerbot.core.deployments.DeploymentTransitionError` if the move is not allowed."""
    check_transition(DeploymentState(deployment.state), new)
    deployment.state = new.value
    deployment.error = error
    deployment.updated_at = now
