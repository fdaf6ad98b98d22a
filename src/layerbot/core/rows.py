"""The rows the reports are rendered from, and the cells every report formats alike.

Pure data: the store's adapter (``store.jobs.rows_for_jobs``) turns jobs into these rows;
``core.report`` (the PR reply, check runs, `bot: status`) and ``core.pipeline_report`` (a
pipeline's steps as one row) render them. Kept apart from both so that the pipeline
rendering can use them without the reply importing it back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from layerbot.core.jobs import JobState

ICONS = {
    JobState.QUEUED: "⏳",
    JobState.SUBMITTED: "🕒",
    JobState.RUNNING: "🔄",
    JobState.SUCCEEDED: "✅",
    JobState.FAILED: "❌",
    JobState.CANCELLED: "🚫",
    JobState.TIMED_OUT: "⌛",
    JobState.LOST: "❓",
}


@dataclass(frozen=True)
class StepInfo:
    """What a pipeline's step job adds to its row (docs/pipelines.md)."""

    #: The plan job of the step's target.
    pipeline_id: int
    step_id: str
    name: str
    #: The ids of the steps it needs (in its plan).
    needs: tuple[str, ...] = ()
    #: 1 for a step that needs nothing, else one more than the deepest step it needs.
    depth: int = 1
    #: The job whose artifact it reuses (it never runs), if any.
    reused_from: int | None = None


@dataclass(frozen=True)
class JobRow:
    id: int
    target: str  # cpu target [+ accelerator]
    repo_target: str
    state: JobState
    head_sha: str
    backend_id: str | None = None
    reason: str | None = None
    summary: str | None = None  # the job's own result summary (markdown)
    artifacts: Sequence[tuple[str, int]] = ()  # (name, size)
    started_at: datetime | None = None
    ended_at: datetime | None = None
    log_tail: str | None = None
    deploy_states: Sequence[tuple[str, str]] = field(default_factory=tuple)  # (name, state)
    #: The agent that holds (or held) the job's lease and its cluster (None: not yet).
    agent: str | None = None
    cluster: str | None = None
    #: Set for a step of a pipeline: which, and where in its plan.
    step: StepInfo | None = None
    core_hours: float | None = None
    redo_of: int | None = None


#: What a queued job no agent has taken yet shows where its cluster would be.
WAITING = "waiting for an agent"


def waiting(row: JobRow) -> bool:
    return row.state is JobState.QUEUED and row.agent is None and row.cluster is None


def cell(text: str, limit: int = 200) -> str:
    """``text`` as one markdown table cell: no pipes, no line breaks, bounded."""
    return text.replace("|", "\\|").replace("\n", " ")[:limit]


def where(row: JobRow) -> str:
    """The job's cluster as a table cell: the cluster, ``WAITING``, or empty."""
    if row.cluster:
        return cell(row.cluster[:100])
    return WAITING if waiting(row) else ""


def seconds_text(seconds: float) -> str:
    """A duration as the reports write it: ``42s``, ``3m05s``, ``2h07m``."""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def duration(row: JobRow) -> str:
    if row.started_at is None:
        return ""
    if row.ended_at is None:
        return "running"
    return seconds_text((row.ended_at - row.started_at).total_seconds())


def size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"
