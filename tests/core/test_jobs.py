"""The job state machine: the transitions written once, and what they allow."""

from __future__ import annotations

import itertools

import pytest

from layerbot.core.jobs import TERMINAL, TRANSITIONS, JobState, TransitionError, check_transition


def test_every_state_has_its_transitions_written() -> None:
    assert set(TRANSITIONS) == set(JobState)


@pytest.mark.parametrize("ended", sorted(TERMINAL))
def test_an_ended_job_never_moves_again(ended: JobState) -> None:
    for state in JobState:
        with pytest.raises(TransitionError, match="it has ended"):
            check_transition(ended, state)


def test_the_usual_path_and_the_shortcuts() -> None:
    path = [JobState.QUEUED, JobState.SUBMITTED, JobState.RUNNING, JobState.SUCCEEDED]
    for current, new in itertools.pairwise(path):
        check_transition(current, new)
    check_transition(JobState.QUEUED, JobState.FAILED)  # preparing the job failed
    check_transition(JobState.SUBMITTED, JobState.TIMED_OUT)  # ended between two polls
    with pytest.raises(TransitionError, match="allowed: "):
        check_transition(JobState.QUEUED, JobState.RUNNING)  # never without the backend


def test_every_state_is_reachable_from_queued() -> None:
    seen, frontier = {JobState.QUEUED}, [JobState.QUEUED]
    while frontier:
        for nxt in TRANSITIONS[frontier.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                frontier.append(nxt)
    assert seen == set(JobState)
