"""What the bot says about jobs: the PR reply table, check-run fields, `bot: status`.

Pure functions over plain rows: the report is always derived from the jobs' states,
never patched by hand, so an edit after a crash or a coalesced edit is always right.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

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

CONCLUSIONS = {
    JobState.SUCCEEDED: "success",
    JobState.FAILED: "failure",
    JobState.CANCELLED: "cancelled",
    JobState.TIMED_OUT: "timed_out",
    JobState.LOST: "failure",
}


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


#: What a queued job no agent has taken yet shows where its cluster would be.
WAITING = "waiting for an agent"


def waiting(row: JobRow) -> bool:
    return row.state is JobState.QUEUED and row.agent is None and row.cluster is None


def where(row: JobRow) -> str:
    """The job's cluster as a table cell: the cluster, ``WAITING``, or empty."""
    if row.cluster:
        return _cell(row.cluster[:100])
    return WAITING if waiting(row) else ""


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


def duration(row: JobRow) -> str:
    if row.started_at is None:
        return ""
    if row.ended_at is None:
        return "running"
    seconds = int((row.ended_at - row.started_at).total_seconds())
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def _result(row: JobRow) -> str:
    if row.state in (JobState.QUEUED, JobState.SUBMITTED, JobState.RUNNING):
        return ""
    # Why a job did not succeed matters more than what its result file says.
    first = row.summary if row.state is JobState.SUCCEEDED else (row.reason or row.summary)
    text = (first or "").strip().splitlines()
    return _cell(text[0] if text else "")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")[:200]


def _artifacts(row: JobRow) -> str:
    deployed = dict(row.deploy_states)
    parts = []
    for name, n in row.artifacts:
        state = f" ({deployed[name]})" if name in deployed else ""
        parts.append(f"`{_cell(name)}` {size(n)}{state}")
    return "<br>".join(parts)


def build_comment(header: BuildHeader, rows: Sequence[JobRow]) -> str:
    """The one reply a `bot: build` gets from an instance, edited in place as jobs move."""
    done = sum(1 for r in rows if r.state.terminal)
    ok = sum(1 for r in rows if r.state is JobState.SUCCEEDED)
    lines = [
        f"**layerbot `{header.instance}`**: build requested by @{header.requested_by}",
        f"for `{header.head_sha[:12]}` merged onto `{header.base_ref}` "
        f"({done}/{len(rows)} done, {ok} succeeded)",
        "",
    ]
    if header.note:
        lines += [f"> {header.note}", ""]
    clusters = shows_cluster(rows)
    lines += _header(["target", "repository", *(["cluster"] if clusters else []), "job",
                      "state", "result", "artifacts", "duration"])
    for r in rows:
        job = f"{r.id}" + (
            f" (`{_cell(r.backend_id)}`)" if r.backend_id and len(r.backend_id) < 20 else ""
        )
        cluster = f" {where(r)} |" if clusters else ""
        lines.append(
            f"| `{r.target}` | {r.repo_target} |{cluster} {job} | {ICONS[r.state]} "
            f"{r.state.value} | {_result(r)} | {_artifacts(r)} | {duration(r)} |"
        )
    return "\n".join(lines)


def _header(columns: Sequence[str]) -> list[str]:
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def check_run_name(instance: str, row: JobRow) -> str:
    return f"layerbot/{instance}: {row.target} ({row.repo_target})"


def check_run_fields(instance: str, row: JobRow, log_lines: int = 30) -> dict[str, Any]:
    """The body of a check-runs create or update request for one job."""
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


def status_comment(instance: str, head_sha: str, rows: Sequence[JobRow]) -> str:
    """`bot: status`: the latest job per target for the PR's current head."""
    latest: dict[tuple[str, str], JobRow] = {}
    for r in sorted(rows, key=lambda r: r.id):
        if r.head_sha == head_sha:
            latest[(r.target, r.repo_target)] = r
    if not latest:
        return f"**layerbot `{instance}`**: no builds yet for the current head `{head_sha[:12]}`."
    title = f"**layerbot `{instance}`**: latest result per target for `{head_sha[:12]}`"
    return _status_table(title, list(latest.values()))


def last_build_comment(instance: str, head_sha: str, rows: Sequence[JobRow]) -> str:
    """`bot: status last_build`: every job of the latest build (``rows``), whatever commit
    it built; says so when that is no longer the PR's head."""
    ordered = sorted(rows, key=lambda r: r.id)
    built = ordered[0].head_sha if ordered else head_sha
    title = f"**layerbot `{instance}`**: the latest build, of `{built[:12]}`"
    if built != head_sha:
        title += f" (the PR's head is now `{head_sha[:12]}`)"
    return _status_table(title, ordered)


def _status_table(title: str, rows: Sequence[JobRow]) -> str:
    clusters = shows_cluster(rows)
    lines = [title, "", *_header(["target", "repository", *(["cluster"] if clusters else []),
                                  "job", "state", "result", "duration"])]
    for r in rows:
        cluster = f" {where(r)} |" if clusters else ""
        lines.append(
            f"| `{r.target}` | {r.repo_target} |{cluster} {r.id} | {ICONS[r.state]} "
            f"{r.state.value} | {_result(r)} | {duration(r)} |"
        )
    return "\n".join(lines)
