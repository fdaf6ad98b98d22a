"""Deployment states move only along ``core.deployments.TRANSITIONS`` (issue 10, item 10)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import get_args, get_type_hints

import pytest

from layerbot.core.deployments import (
    TRANSITIONS,
    DeploymentState,
    DeploymentTransitionError,
    can_transition,
    check_transition,
)
from layerbot.deploy.staging import UploadOutcome
from layerbot.store.deployments import transition
from layerbot.store.models import Deployment

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def test_the_stored_values_are_those_of_before() -> None:
    assert {s.value for s in DeploymentState} == {
        "queued", "uploading", "uploaded", "skipped", "failed", "ingested", "rejected"}
    assert set(TRANSITIONS) == set(DeploymentState)


def test_what_an_upload_ends_in_is_a_state_an_upload_may_reach() -> None:
    for state in get_args(get_type_hints(UploadOutcome)["state"]):
        assert DeploymentState(state) in TRANSITIONS[DeploymentState.UPLOADING]


@pytest.mark.parametrize(("current", "new"), [
    ("queued", "uploading"), ("uploading", "uploaded"), ("uploading", "skipped"),
    ("uploading", "failed"), ("uploading", "queued"), ("failed", "queued"),
    ("uploaded", "ingested"), ("skipped", "rejected"), ("ingested", "rejected"),
    ("uploading", "uploading"),  # taken again after a crash
])
def test_allowed_moves(current: str, new: str) -> None:
    assert can_transition(DeploymentState(current), DeploymentState(new))


@pytest.mark.parametrize(("current", "new"), [
    ("queued", "uploaded"), ("queued", "ingested"), ("uploaded", "queued"),
    ("ingested", "queued"), ("failed", "uploaded"), ("rejected", "uploading"),
])
def test_refused_moves(current: str, new: str) -> None:
    with pytest.raises(DeploymentTransitionError, match=f"a {current} deployment cannot"):
        check_transition(DeploymentState(current), DeploymentState(new))


def test_the_store_refuses_an_illegal_move_and_leaves_the_row_as_it_was() -> None:
    row = Deployment(state="ingested", error=None, updated_at=NOW)
    with pytest.raises(DeploymentTransitionError):
        transition(row, DeploymentState.QUEUED, NOW.replace(hour=13))
    assert (row.state, row.updated_at) == ("ingested", NOW)


def test_the_store_records_an_allowed_move_with_its_time_and_error() -> None:
    row = Deployment(state="uploading", error=None, updated_at=NOW)
    later = NOW.replace(hour=13)
    transition(row, DeploymentState.FAILED, later, "the artifact is gone")
    assert (row.state, row.error, row.updated_at) == ("failed", "the artifact is gone", later)
