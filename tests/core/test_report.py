"""Reports are derived from job rows: the reply table, check-run fields, `bot: status`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from layerbot.core.jobs import JobState
from layerbot.core.report import (
    BuildHeader,
    JobRow,
    build_comment,
    check_run_fields,
    last_build_comment,
    size,
    status_comment,
)

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
HEAD = "1234567890abcdef" * 2 + "12345678"


def row(job_id: int, state: JobState, **kw: object) -> JobRow:
    defaults: dict[str, object] = {"target": "x86_64/amd/zen2", "repo_target": "eessi-2023.06",
                                   "head_sha": HEAD}
    return JobRow(id=job_id, state=state, **{**defaults, **kw})  # type: ignore[arg-type]


def test_the_reply_table_counts_and_describes_each_job() -> None:
    header = BuildHeader("cluster-a", "alice", "bot: build", HEAD, "main", note="a note")
    rows = [
        row(1, JobState.SUCCEEDED, summary="built 3 packages\nmore", artifacts=[("a.tar.gz", 2048)],
            started_at=T0, ended_at=T0 + timedelta(minutes=3, seconds=5)),
        row(2, JobState.FAILED, reason="exit code 3", summary="no result file",
            target="x86_64/amd/zen3"),
        row(3, JobState.RUNNING, started_at=T0),
    ]
    text = build_comment(header, rows)
    assert "(2/3 done, 1 succeeded)" in text and "`1234567890ab`" in text
    assert "> a note" in text
    assert "| built 3 packages |" in text  # first line of the summary only
    assert "exit code 3" in text and "no result file" not in text  # why it failed, first
    assert "`a.tar.gz` 2.0 KiB" in text and "3m05s" in text and "running" in text


def test_pipes_in_user_text_cannot_break_the_table() -> None:
    text = build_comment(BuildHeader("a", "b", "c", HEAD, "main"),
                         [row(1, JobState.FAILED, reason="a | b")])
    assert "a \\| b" in text


def test_check_run_fields_follow_the_state() -> None:
    queued = check_run_fields("cluster-a", row(1, JobState.SUBMITTED))
    assert queued["status"] == "queued" and "conclusion" not in queued
    assert queued["external_id"] == "1" and queued["head_sha"] == HEAD
    failed = check_run_fields("cluster-a", row(2, JobState.FAILED, reason="boom", ended_at=T0,
                                               log_tail="\n".join(f"l{i}" for i in range(100))),
                              log_lines=5)
    assert (failed["status"], failed["conclusion"]) == ("completed", "failure")
    assert failed["completed_at"] == "2026-11-27T12:00:00Z"
    assert "l99" in failed["output"]["text"] and "l94" not in failed["output"]["text"]
    timed_out = check_run_fields("a", row(3, JobState.TIMED_OUT))
    assert timed_out["conclusion"] == "timed_out"


def test_status_shows_the_latest_job_per_target_of_the_current_head() -> None:
    rows = [row(1, JobState.FAILED), row(2, JobState.SUCCEEDED),
            row(3, JobState.FAILED, head_sha="f" * 40)]
    text = status_comment("a", HEAD, rows)
    assert "| 2 |" in text and "| 1 |" not in text and "| 3 |" not in text
    assert "no builds yet" in status_comment("a", "e" * 40, rows)


def test_last_build_lists_every_job_of_the_build_and_says_when_the_head_moved() -> None:
    old = "f" * 40
    rows = [row(4, JobState.FAILED, head_sha=old), row(5, JobState.SUCCEEDED, head_sha=old,
                                                          target="x86_64/amd/zen3")]
    text = last_build_comment("a", HEAD, rows)
    assert "| 4 |" in text and "| 5 |" in text
    assert f"the latest build, of `{old[:12]}`" in text and "head is now" in text
    assert "head is now" not in last_build_comment("a", old, rows)


def test_sizes() -> None:
    assert [size(5), size(2300), size(5 << 20), size(3 << 30)] == [
        "5 B", "2.2 KiB", "5.0 MiB", "3.0 GiB"]


def test_the_reply_names_the_cluster_of_each_job_once_one_is_known() -> None:
    header = BuildHeader("control", "alice", "bot: build", HEAD, "main")
    rows = [row(1, JobState.RUNNING, agent="a-1", cluster="cluster-a", started_at=T0),
            row(2, JobState.QUEUED),  # no agent has taken it yet
            row(3, JobState.SUCCEEDED, agent="b-1", cluster="cluster-b"),
            row(4, JobState.CANCELLED)]  # cancelled before any agent took it
    text = build_comment(header, rows)
    lines = text.splitlines()
    assert "| target | repository | cluster | job | state | result | artifacts | duration |" \
        in lines
    assert "|---|---|---|---|---|---|---|---|" in lines
    assert "| eessi-2023.06 | cluster-a | 1 |" in text
    assert "| eessi-2023.06 | waiting for an agent | 2 |" in text
    assert "| eessi-2023.06 | cluster-b | 3 |" in text
    assert "| eessi-2023.06 |  | 4 |" in text
    # Every row has as many cells as the header.
    table = [line for line in lines if line.startswith("|")]
    assert len({line.count(" | ") for line in table[2:]}) == 1


def test_without_agents_the_reply_has_no_cluster_column() -> None:
    text = build_comment(BuildHeader("a", "b", "c", HEAD, "main"),
                         [row(1, JobState.SUCCEEDED), row(2, JobState.FAILED)])
    assert "| target | repository | job | state |" in text and "cluster" not in text


def test_a_cluster_cannot_break_the_table() -> None:
    text = build_comment(BuildHeader("a", "b", "c", HEAD, "main"),
                         [row(1, JobState.RUNNING, agent="x", cluster="a | b\nc")])
    assert "| a \\| b c | 1 |" in text


def test_status_tables_name_the_cluster_too() -> None:
    rows = [row(1, JobState.SUCCEEDED, agent="a-1", cluster="cluster-a"),
            row(2, JobState.QUEUED, target="x86_64/amd/zen3")]
    text = status_comment("a", HEAD, rows)
    assert "| target | repository | cluster | job | state | result | duration |" in text
    assert "| cluster-a | 1 |" in text and "| waiting for an agent | 2 |" in text
    assert "cluster" not in last_build_comment("a", HEAD, [row(3, JobState.FAILED)])


def test_check_runs_name_the_cluster() -> None:
    running = check_run_fields("control", row(1, JobState.RUNNING, agent="a-1",
                                              cluster="cluster-a", started_at=T0))
    assert running["output"]["title"] == "running on cluster-a"
    assert "on cluster `cluster-a` (agent `a-1`): running" in running["output"]["summary"]
    same = check_run_fields("control", row(1, JobState.FAILED, agent="c", cluster="c",
                                           reason="boom"))
    assert same["output"]["title"] == "failed on c: boom"
    assert "(agent" not in same["output"]["summary"]
    waiting = check_run_fields("control", row(2, JobState.QUEUED))
    assert waiting["output"]["title"] == "queued (waiting for an agent)"
    assert waiting["output"]["summary"].endswith(", waiting for an agent: queued")
    leased = check_run_fields("control", row(3, JobState.QUEUED, agent="a-1",
                                             cluster="cluster-a"))
    assert leased["output"]["title"] == "queued on cluster-a"
    # The name stays the same as the job moves: GitHub shows one check per job.
    assert running["name"] == check_run_fields("control", row(1, JobState.QUEUED))["name"]
