"""Job states and the transitions allowed between them, written once.

Every change of a job's state goes through :func:`check_transition`; the store records
each change with its time. Reports are derived from these states, never patched by hand.
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    QUEUED = "queued"  # recorded, not yet handed to the backend
    SUBMITTED = "submitted"  # the backend has it, waiting for resources
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    LOST = "lost"  # the backend no longer knows it and left no result

    @property
    def terminal(self) -> bool:
        return self in TERMINAL

    @property
    def active(self) -> bool:
        return self not in TERMINAL


TERMINAL = frozenset(
    {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.TIMED_OUT, JobState.LOST}
)

_ENDS = {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.TIMED_OUT, JobState.LOST}

TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    # A pipeline step reused from another job's artifact ends without running: it succeeds
    # or fails as that job did (operations/pipelines.py).
    JobState.QUEUED: frozenset({JobState.SUBMITTED, JobState.SUCCEEDED, JobState.FAILED,
                                JobState.CANCELLED}),
    JobState.SUBMITTED: frozenset({JobState.RUNNING, *_ENDS}),
    JobState.RUNNING: frozenset(_ENDS),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
    JobState.TIMED_OUT: frozenset(),
    JobState.LOST: frozenset(),
}


class TransitionError(ValueError):
    def __init__(self, current: JobState, new: JobState) -> None:
        allowed = ", ".join(sorted(TRANSITIONS[current])) or "none (it has ended)"
        super().__init__(f"a {current} job cannot become {new}; allowed: {allowed}")
        self.current = current
        self.new = new


def can_transition(current: JobState, new: JobState) -> bool:
    return new in TRANSITIONS[current]


def check_transition(current: JobState, new: JobState) -> None:
    if not can_transition(current, new):
        raise TransitionError(current, new)
