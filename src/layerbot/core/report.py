"""What the bot says about jobs: the PR reply table, check-run fields, `bot: status`.

Pure functions over plain rows: the report is always derived from the jobs' states,
never patched by hand, so an edit after a crash or a coalesced edit is always right.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from layerbot.core import pipeline_report
from layerbot.core.jobs import JobState
from layerbot.core.pipeline_report import PipelineRow
from layerbot.core.rows import (
    ICONS,
    WAITING,
    JobRow,
    StepInfo,
    duration,
    size,
    waiting,
    where,
)
from layerbot.core.rows import cell as _cell

__all__ = ["ICONS", "WAITING", "BuildHeader", "JobRow", "PipelineRow", "StepInfo",
           "TargetRow", "build_comment", "check_run_fields", "check_run_name", "duration",
           "last_build_comment", "shows_cluster", "size", "status_comment", "waiting",
           "where"]

#: One row per target: a job, or a pipeline (its plan job and its steps' jobs).
TargetRow = JobRow | PipelineRow

CONCLUSIONS = {
    JobState.SUCCEEDED: "success",
    JobState.FAILED: "failure",
    JobState.CANCELLED: "cancelled",
    JobState.TIMED_OUT: "timed_out",
    JobState.LOST: "failure",
}


def shows_cluster(rows: Sequence[JobRow]) -> bool:
    """A table has a cluster column when one of its jobs has a cluster or waits for an
    agent (not for rows that know nothing of agents, e.g. jobs from before the fleet)."""
    return any(r.cluster or waiting(r) for r in rows)


@dataclass(frozen=True)
class BuildHeader:
    instance: str
    requested_by: str
    command: str
    head_sha: str
    base_ref: str
    note: str | None = None  # e.g. "2 waiting jobs for older commits were cancelled"


def _result(row: JobRow) -> str:
    if row.state in (JobState.QUEUED, JobState.SUBMITTED, JobState.RUNNING):
        return ""
    # Why a job did not succeed matters more than what its result file says.
    first = row.summary if row.state is JobState.SUCCEEDED else (row.reason or row.summary)
    text = (first or "").strip().splitlines()
    return _cell(text[0] if text else "")


def _artifacts(row: JobRow) -> str:
    deployed = dict(row.deploy_states)
    parts = []
    for name, n in row.artifacts:
        state = f" ({deployed[name]})" if name in deployed else ""
        parts.append(f"`{_cell(name)}` {size(n)}{state}")
    return "<br>".join(parts)


def _plan_of(row: TargetRow) -> JobRow:
    """The job that stands for the row's place (cluster, agent): a pipeline's plan job."""
    return row.plan if isinstance(row, PipelineRow) else row


@dataclass(frozen=True)
class _Cells:
    job: str
    state: str
    result: str
    artifacts: str
    duration: str


def _cells(row: TargetRow, now: datetime | None) -> _Cells:
    """A target's cells, whether it is one job or a pipeline."""
    if isinstance(row, PipelineRow):
        return _Cells(pipeline_report.job_cell(row), f"{ICONS[row.state]} {row.state.value}",
                      pipeline_report.result_cell(row, now),
                      pipeline_report.artifacts_cell(row), pipeline_report.duration_cell(row))
    job = f"{row.id}" + (
        f" (`{_cell(row.backend_id)}`)" if row.backend_id and len(row.backend_id) < 20 else "")
    return _Cells(job, f"{ICONS[row.state]} {row.state.value}", _result(row),
                  _artifacts(row), duration(row))


def build_comment(header: BuildHeader, rows: Sequence[JobRow],
                  now: datetime | None = None) -> str:
    """The one reply a `bot: build` gets from an instance, edited in place as jobs move.

    One row per target: a pipeline's plan job and steps are one row (its steps'
    progress); ``now`` gives running steps their time so far on the critical path."""
    targets = pipeline_report.group(rows)
    done = sum(1 for r in targets if r.state.terminal)
    ok = sum(1 for r in targets if r.state is JobState.SUCCEEDED)
    lines = [
        f"**layerbot `{header.instance}`**: build requested by @{header.requested_by}",
        f"for `{header.head_sha[:12]}` merged onto `{header.base_ref}` "
        f"({done}/{len(targets)} done, {ok} succeeded)",
        "",
    ]
    if header.note:
        lines += [f"> {header.note}", ""]
    places = [_plan_of(r) for r in targets]
    clusters = shows_cluster(places)
    lines += _header(["target", "repository", *(["cluster"] if clusters else []), "job",
                      "state", "result", "artifacts", "duration"])
    for r, place in zip(targets, places, strict=True):
        c = _cells(r, now)
        cluster = f" {where(place)} |" if clusters else ""
        lines.append(
            f"| `{r.target}` | {r.repo_target} |{cluster} {c.job} | {c.state} | "
            f"{c.result} | {c.artifacts} | {c.duration} |"
        )
    return "\n".join(lines)


def _header(columns: Sequence[str]) -> list[str]:
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def check_run_name(instance: str, row: TargetRow) -> str:
    return f"layerbot/{instance}: {row.target} ({row.repo_target})"


def check_run_key(row: TargetRow) -> str:
    """The outbox key of a target's check run: its job's (a pipeline's: its plan job's,
    whose check run it was while the plan ran, so planning and steps update one run)."""
    return f"job:{row.id}"


def check_runs_changed(rows: Sequence[JobRow], changed: set[int]) -> list[TargetRow]:
    """The targets whose check run a change of the jobs ``changed`` moves: a step's change
    moves its pipeline's run; steps have none of their own."""
    out: list[TargetRow] = []
    for t in pipeline_report.group(rows):
        ids = t.job_ids if isinstance(t, PipelineRow) else {t.id}
        if ids & changed:
            out.append(t)
    return out


def check_run_fields(instance: str, row: TargetRow, log_lines: int = 30, base_url: str = "",
                     now: datetime | None = None) -> dict[str, Any]:
    """The body of a check-runs create or update request for one target: its job, or its
    pipeline (``base_url``: the control center's, to link each step's page)."""
    if isinstance(row, PipelineRow):
        return pipeline_report.check_run_fields(check_run_name(instance, row), row,
                                                log_lines, base_url, now)
    fields: dict[str, Any] = {
        "name": check_run_name(instance, row),
        "head_sha": row.head_sha,
        "external_id": str(row.id),
    }
    if row.state is JobState.QUEUED or row.state is JobState.SUBMITTED:
        fields["status"] = "queued"
    elif row.state is JobState.RUNNING:
        fields["status"] = "in_progress"
        if row.started_at:
            fields["started_at"] = row.started_at.isoformat().replace("+00:00", "Z")
    else:
        fields["status"] = "completed"
        fields["conclusion"] = CONCLUSIONS[row.state]
        if row.ended_at:
            fields["completed_at"] = row.ended_at.isoformat().replace("+00:00", "Z")
    place = (f" on {where(row)}" if row.cluster else f" ({WAITING})" if waiting(row) else "")
    title = f"{row.state.value}{place}" + (f": {_cell(row.reason)}" if row.reason else "")
    text_parts = [row.summary or ""]
    if row.state in (JobState.FAILED, JobState.TIMED_OUT, JobState.LOST) and row.log_tail:
        tail = "\n".join(row.log_tail.splitlines()[-log_lines:])
        text_parts.append(f"Last lines of the job's log:\n\n```\n{tail[-60000:]}\n```")
    fields["output"] = {
        "title": title[:250],
        "summary": f"Job {row.id} for `{row.target}` / {row.repo_target}{_on(row)}: "
                   f"{row.state.value}"[:65000],
        "text": "\n\n".join(p for p in text_parts if p)[:65000] or "(no result yet)",
    }
    return fields


def _on(row: JobRow) -> str:
    if row.cluster:
        agent = f" (agent `{_cell(row.agent)}`)" if row.agent and row.agent != row.cluster else ""
        return f" on cluster `{where(row)}`{agent}"
    return f", {WAITING}" if waiting(row) else ""


def status_comment(instance: str, head_sha: str, rows: Sequence[JobRow],
                   now: datetime | None = None) -> str:
    """`bot: status`: the latest job per target for the PR's current head (a pipeline's
    steps count as their target's, one line with their progress)."""
    latest: dict[tuple[str, str], TargetRow] = {}
    for r in sorted(pipeline_report.group(rows), key=lambda r: r.id):
        if r.head_sha == head_sha:
            latest[(r.target, r.repo_target)] = r
    if not latest:
        return f"**layerbot `{instance}`**: no builds yet for the current head `{head_sha[:12]}`."
    title = f"**layerbot `{instance}`**: latest result per target for `{head_sha[:12]}`"
    return _status_table(title, list(latest.values()), now)


def last_build_comment(instance: str, head_sha: str, rows: Sequence[JobRow],
                       now: datetime | None = None) -> str:
    """`bot: status last_build`: every target of the latest build (``rows``), whatever
    commit it built; says so when that is no longer the PR's head."""
    ordered = sorted(rows, key=lambda r: r.id)
    built = ordered[0].head_sha if ordered else head_sha
    title = f"**layerbot `{instance}`**: the latest build, of `{built[:12]}`"
    if built != head_sha:
        title += f" (the PR's head is now `{head_sha[:12]}`)"
    return _status_table(title, pipeline_report.group(ordered), now)


def _status_table(title: str, rows: Sequence[TargetRow], now: datetime | None) -> str:
    places = [_plan_of(r) for r in rows]
    clusters = shows_cluster(places)
    lines = [title, "", *_header(["target", "repository", *(["cluster"] if clusters else []),
                                  "job", "state", "result", "duration"])]
    for r, place in zip(rows, places, strict=True):
        c = _cells(r, now)
        job = pipeline_report.job_cell(r) if isinstance(r, PipelineRow) else str(r.id)
        cluster = f" {where(place)} |" if clusters else ""
        lines.append(f"| `{r.target}` | {r.repo_target} |{cluster} {job} | {c.state} | "
                     f"{c.result} | {c.duration} |")
    return "\n".join(lines)
