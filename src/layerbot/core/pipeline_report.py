"""A target's pipeline as ONE row of the reports: its plan job and its steps' jobs.

A 20-step pipeline shown as 21 rows would flood the PR reply, the check runs and
`bot: status`; they show one row per target instead, derived (like every report) from the
job rows alone: the progress of the steps (``core.pipeline.progress``), the critical path
with durations, and the failed steps' names and reasons, bounded. A rebuilt step counts by
its latest attempt (the step job with the highest id for its step id), as
``operations.pipelines.latest_attempts`` does on the store.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from layerbot.core import pipeline
from layerbot.core.jobs import JobState
from layerbot.core.pipeline import StepStatus
from layerbot.core.rows import ICONS, WAITING, JobRow, cell, seconds_text, size, waiting, where

#: How many steps the critical path names before it elides the middle, how many failed
#: steps a row names, and how long a name or reason may be there: a row stays one line.
PATH_SHOWN = 6
FAILED_SHOWN = 3
NAME_CHARS = 40
REASON_CHARS = 80
#: Check runs: the log lines of at most this many failed steps.
LOGS_SHOWN = 3

_STATUS = {
    JobState.QUEUED: StepStatus.WAITING,
    JobState.SUBMITTED: StepStatus.RUNNING,
    JobState.RUNNING: StepStatus.RUNNING,
    JobState.SUCCEEDED: StepStatus.DONE,
    JobState.FAILED: StepStatus.FAILED,
    JobState.TIMED_OUT: StepStatus.FAILED,
    JobState.LOST: StepStatus.FAILED,
    JobState.CANCELLED: StepStatus.CANCELLED,
}


def step_status(row: JobRow) -> StepStatus:
    """A step job's state as the progress counts it: submitted counts as running (it is
    the batch system's now), a success from another job's artifact as reused, and a
    time-out or a lost job as failed."""
    status = _STATUS[row.state]
    if status is StepStatus.DONE and row.step is not None and row.step.reused_from:
        return StepStatus.REUSED
    return status


def step_seconds(row: JobRow, now: datetime | None = None) -> float | None:
    """How long a step ran; for one still running, how long so far (with ``now``), else
    None. A reused step never ran: 0."""
    if row.step is not None and row.step.reused_from:
        return 0.0
    if row.started_at is None:
        return None
    end = row.ended_at or (now if not row.state.terminal else None)
    return max(0.0, (end - row.started_at).total_seconds()) if end else None


@dataclass(frozen=True)
class PipelineRow:
    """A target whose job ran a plan: the plan job's row and every step job's row (all
    attempts: a rebuilt step has several)."""

    plan: JobRow
    attempts: tuple[JobRow, ...]

    # The target's identity and place are its plan job's.
    @property
    def id(self) -> int:
        return self.plan.id

    @property
    def target(self) -> str:
        return self.plan.target

    @property
    def repo_target(self) -> str:
        return self.plan.repo_target

    @property
    def head_sha(self) -> str:
        return self.plan.head_sha

    @property
    def job_ids(self) -> set[int]:
        return {self.plan.id, *(a.id for a in self.attempts)}

    def steps(self) -> list[JobRow]:
        """The latest attempt of each step, in the order the steps were first created
        (the plan's topological order)."""
        first: dict[str, int] = {}
        latest: dict[str, JobRow] = {}
        for row in sorted(self.attempts, key=lambda r: r.id):
            first.setdefault(_sid(row), row.id)
            latest[_sid(row)] = row
        return sorted(latest.values(), key=lambda r: first[_sid(r)])

    def statuses(self) -> dict[str, StepStatus]:
        return {_sid(r): step_status(r) for r in self.steps()}

    def progress(self, now: datetime | None = None) -> pipeline.Progress:
        steps = self.steps()
        seconds = {_sid(r): s for r in steps if (s := step_seconds(r, now)) is not None}
        needs = {_sid(r): list(r.step.needs) if r.step else [] for r in steps}
        return pipeline.progress(self.statuses(), needs, seconds)

    @property
    def state(self) -> JobState:
        """The target's state: running while a step is unfinished, succeeded when every
        step is done or reused, failed when one failed (timed out, was lost), else
        cancelled (only cancellations: someone cancelled it; nothing failed)."""
        statuses = set(self.statuses().values())
        if not all(s.final for s in statuses):
            return JobState.RUNNING
        if statuses <= {StepStatus.DONE, StepStatus.REUSED}:
            return JobState.SUCCEEDED
        return JobState.FAILED if StepStatus.FAILED in statuses else JobState.CANCELLED

    @property
    def started_at(self) -> datetime | None:
        return self.plan.started_at

    @property
    def ended_at(self) -> datetime | None:
        """When its last step ended, once every step has."""
        if not self.state.terminal:
            return None
        ends = [e for r in [self.plan, *self.steps()] if (e := r.ended_at) is not None]
        return max(ends) if ends else None

    @property
    def core_hours(self) -> float:
        """What the target cost: its plan job and every attempt of every step (a failed
        attempt cost as much as it ran); a reused step ran nowhere and costs nothing."""
        return round(sum(r.core_hours or 0.0 for r in [self.plan, *self.attempts]
                         if not (r.step and r.step.reused_from)), 6)


def _sid(row: JobRow) -> str:
    assert row.step is not None
    return row.step.step_id


def group(rows: Sequence[JobRow]) -> list[JobRow | PipelineRow]:
    """One row per target: a plan job with steps among ``rows`` becomes a PipelineRow
    holding them; other rows stay as they are (a plan job without steps, e.g. one still
    planning or whose plan failed, is a job like any other). A step whose plan job is not
    among ``rows`` keeps its own row rather than vanish."""
    steps: dict[int, list[JobRow]] = {}
    ids = {r.id for r in rows}
    for r in rows:
        if r.step is not None and r.step.pipeline_id in ids:
            steps.setdefault(r.step.pipeline_id, []).append(r)
    out: list[JobRow | PipelineRow] = []
    for r in rows:
        if r.step is not None and r.step.pipeline_id in ids:
            continue
        out.append(PipelineRow(r, tuple(steps[r.id])) if r.id in steps else r)
    return out


# --- text -----------------------------------------------------------------------------------

def _name(row: JobRow) -> str:
    name = row.step.name if row.step else str(row.id)
    return cell(name, NAME_CHARS)


def critical_path_text(row: PipelineRow, now: datetime | None = None) -> str:
    """E.g. ``GCC 12m03s → HDF5 5m10s (running) → app``: the chain of steps that decides
    how long the target takes, each with how long it ran (so far), the middle elided."""
    prog = row.progress(now)
    by_id = {_sid(r): r for r in row.steps()}
    parts = []
    for sid in prog.critical_path:
        step = by_id[sid]
        seconds = step_seconds(step, now)
        text = _name(step)
        if step_status(step) is StepStatus.REUSED:
            text += " (reused)"
        else:
            if seconds is not None:
                text += " " + seconds_text(seconds)
            if step_status(step) is StepStatus.RUNNING:
                text += " (running)"
        parts.append(text)
    if len(parts) > PATH_SHOWN:
        hidden = len(parts) - PATH_SHOWN + 1
        parts = [*parts[:2], f"… {hidden} more …", *parts[-(PATH_SHOWN - 3):]]
    return " → ".join(parts)


def failed_text(row: PipelineRow) -> str:
    """The failed and cancelled steps: names and (short) reasons, the first few."""
    bad = [r for r in row.steps()
           if step_status(r) in (StepStatus.FAILED, StepStatus.CANCELLED)]
    # Failures first: a cancellation only follows one.
    bad.sort(key=lambda r: step_status(r) is StepStatus.CANCELLED)
    parts = [_name(r) + (f" ({cell(r.reason, REASON_CHARS)})" if r.reason else "")
             for r in bad[:FAILED_SHOWN]]
    if len(bad) > FAILED_SHOWN:
        parts.append(f"and {len(bad) - FAILED_SHOWN} more")
    return "; ".join(parts)


def result_cell(row: PipelineRow, now: datetime | None = None) -> str:
    """The reply's and `bot: status`'s result cell: progress, critical path, failures."""
    lines = [row.progress(now).summary()]
    if path := critical_path_text(row, now):
        lines.append(f"critical path: {path}")
    if failed := failed_text(row):
        lines.append(f"not built: {failed}")
    return "<br>".join(lines)


def duration_cell(row: PipelineRow) -> str:
    """From the plan's start to the last step's end (``running`` until then)."""
    if row.started_at is None:
        return ""
    end = row.ended_at
    return seconds_text((end - row.started_at).total_seconds()) if end else "running"


def artifacts_cell(row: PipelineRow, shown: int = 3) -> str:
    found = [(n, s) for r in [row.plan, *row.steps()] for n, s in r.artifacts]
    parts = [f"`{cell(n)}` {size(s)}" for n, s in found[:shown]]
    if len(found) > shown:
        parts.append(f"and {len(found) - shown} more")
    return "<br>".join(parts)


def job_cell(row: PipelineRow) -> str:
    return f"{row.id} (pipeline, {len(row.steps())} steps)"


# --- the check run --------------------------------------------------------------------------

def job_link(job_id: int, base_url: str) -> str:
    """The job's page in the control center, if the bot knows where that is."""
    return f"[{job_id}]({base_url.rstrip('/')}/jobs/{job_id})" if base_url else str(job_id)


def steps_table(row: PipelineRow, base_url: str = "", now: datetime | None = None) -> str:
    names = {_sid(r): _name(r) for r in row.steps()}
    lines = ["| step | state | duration | needs | job | core-h |", "|---|---|---|---|---|---|"]
    for r in row.steps():
        assert r.step is not None
        status = step_status(r)
        seconds = step_seconds(r, now)
        took = "" if seconds is None or status is StepStatus.REUSED else seconds_text(seconds)
        state = f"{ICONS[r.state]} {status}"
        if status is StepStatus.REUSED:
            state += f" (job {r.step.reused_from})"
        if r.redo_of:
            state += " (rebuilt)"
        needs = ", ".join(names.get(n, cell(n, NAME_CHARS)) for n in r.step.needs)
        hours = "" if r.core_hours is None else f"{r.core_hours:.2f}"
        lines.append(f"| {names[r.step.step_id]} | {state} | {took} | {needs} | "
                     f"{job_link(r.id, base_url)} | {hours} |")
    return "\n".join(lines)


def _on(row: JobRow) -> str:
    if row.cluster:
        agent = f" (agent `{cell(row.agent)}`)" if row.agent and row.agent != row.cluster else ""
        return f" on cluster `{where(row)}`{agent}"
    return f", {WAITING}" if waiting(row) else ""


def _stamp(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


CONCLUSIONS = {JobState.SUCCEEDED: "success", JobState.FAILED: "failure",
               JobState.CANCELLED: "cancelled"}


def check_run_fields(name: str, row: PipelineRow, log_lines: int = 30, base_url: str = "",
                     now: datetime | None = None) -> dict[str, Any]:
    """The target's one check run (``name``: as a job's would be named; its external id
    is the plan job's, so GitHub's Re-run rebuilds the target): in progress while a step
    is unfinished, then a success, a failure or (only cancellations) cancelled; its text
    lists the steps, with links to their pages in the control center (``base_url``)."""
    state = row.state
    fields: dict[str, Any] = {"name": name, "head_sha": row.head_sha,
                              "external_id": str(row.id)}
    if not state.terminal:
        fields["status"] = "in_progress"
        if row.started_at:
            fields["started_at"] = _stamp(row.started_at)
    else:
        fields["status"] = "completed"
        fields["conclusion"] = CONCLUSIONS[state]
        if row.ended_at:
            fields["completed_at"] = _stamp(row.ended_at)
    prog = row.progress(now)
    summary = [f"Pipeline of job {job_link(row.id, base_url)} for `{row.target}` / "
               f"{row.repo_target}{_on(row.plan)}: {prog.summary()}."]
    if path := critical_path_text(row, now):
        summary.append(f"Critical path ({seconds_text(prog.critical_seconds)}): {path}")
    if failed := failed_text(row):
        summary.append(f"Not built: {failed}")
    text = [steps_table(row, base_url, now), *_failed_logs(row, log_lines)]
    fields["output"] = {
        "title": f"{state.value}: {prog.summary()}"[:250],
        "summary": "\n\n".join(summary)[:65000],
        "text": "\n\n".join(text)[:65000],
    }
    return fields


def _failed_logs(row: PipelineRow, log_lines: int) -> list[str]:
    out = []
    failed = [r for r in row.steps() if step_status(r) is StepStatus.FAILED and r.log_tail]
    for r in failed[:LOGS_SHOWN]:
        tail = "\n".join((r.log_tail or "").splitlines()[-log_lines:])
        out.append(f"Last lines of the log of step {_name(r)} (job {r.id}):\n\n"
                   f"```\n{tail[-20000:]}\n```")
    return out

