"""A target's pipeline is one row of the reports: progress, critical path, failures; one
check run per target whose state follows the latest attempt of every step."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from layerbot.core.jobs import JobState
from layerbot.core.pipeline import StepStatus
from layerbot.core.pipeline_report import PipelineRow, group, step_status
from layerbot.core.report import (
    BuildHeader,
    JobRow,
    StepInfo,
    build_comment,
    check_run_fields,
    check_run_key,
    check_runs_changed,
    last_build_comment,
    status_comment,
)

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
HEAD = "abcdef0123456789" * 2 + "abcdef01"
PLAN = 10


def job(job_id: int, state: JobState, **kw: object) -> JobRow:
    defaults: dict[str, object] = {"target": "x86_64/amd/zen2", "repo_target": "eessi-2023.06",
                                   "head_sha": HEAD, "agent": "alpha", "cluster": "c-a"}
    return JobRow(id=job_id, state=state, **{**defaults, **kw})  # type: ignore[arg-type]


def step(job_id: int, sid: str, state: JobState, needs: tuple[str, ...] = (),
         minutes: float | None = None, started: timedelta = timedelta(0),
         reused_from: int | None = None, **kw: object) -> JobRow:
    """A step job; ``minutes``: how long it ran (None: not started; with ``state``
    running: started and still running)."""
    times: dict[str, object] = {}
    if minutes is not None:
        times["started_at"] = T0 + started
        if state.terminal:
            times["ended_at"] = T0 + started + timedelta(minutes=minutes)
    info = StepInfo(pipeline_id=PLAN, step_id=sid, name=sid.upper(), needs=needs,
                    depth=1 + len(needs), reused_from=reused_from)
    return job(job_id, state, step=info, **{**times, **kw})


def plan_job(**kw: object) -> JobRow:
    return job(PLAN, JobState.SUCCEEDED, started_at=T0 - timedelta(minutes=1),
               ended_at=T0, core_hours=0.01, **kw)


def mixed() -> list[JobRow]:
    """done, reused, running, waiting, failed and cancelled steps; ``b`` was rebuilt."""
    return [
        plan_job(),
        step(11, "a", JobState.SUCCEEDED, minutes=10, core_hours=1.5),
        step(12, "b", JobState.FAILED, ("a",), minutes=2, started=timedelta(minutes=10),
             reason="exit code 1", core_hours=0.25),
        step(13, "lib", JobState.SUCCEEDED, reused_from=3),
        step(14, "c", JobState.RUNNING, ("a",), minutes=5, started=timedelta(minutes=10)),
        step(15, "d", JobState.QUEUED, ("c", "lib")),
        step(16, "e", JobState.FAILED, minutes=1, reason="exit code 2\nmore | text",
             log_tail="\n".join(f"e{i}" for i in range(50)), core_hours=0.5),
        step(17, "f", JobState.CANCELLED, ("e",), reason="not run: it needs step e, "
             "which failed"),
        # b rebuilt: its latest attempt succeeded (20 minutes: the longest chain now).
        step(18, "b", JobState.SUCCEEDED, ("a",), minutes=20, started=timedelta(minutes=13),
             redo_of=12, core_hours=2.0),
    ]


def the_pipeline(rows: list[JobRow]) -> PipelineRow:
    (target,) = group(rows)
    assert isinstance(target, PipelineRow)
    return target


def test_a_plan_and_its_steps_are_one_row_counting_each_steps_latest_attempt() -> None:
    row = the_pipeline(mixed())
    assert [s.id for s in row.steps()] == [11, 18, 13, 14, 15, 16, 17]
    assert row.statuses() == {"a": StepStatus.DONE, "b": StepStatus.DONE,
                              "lib": StepStatus.REUSED, "c": StepStatus.RUNNING,
                              "d": StepStatus.WAITING, "e": StepStatus.FAILED,
                              "f": StepStatus.CANCELLED}
    assert row.progress().summary() == ("3/7 done (1 reused), 1 running, 1 waiting, "
                                        "1 failed, 1 cancelled")
    assert row.state is JobState.RUNNING  # a step is unfinished
    # Every attempt cost what it ran; the reused step nothing; the plan job counts too.
    assert row.core_hours == 0.01 + 1.5 + 0.25 + 0.5 + 2.0


def test_the_reply_shows_one_row_per_target_with_progress_path_and_failures() -> None:
    other = job(30, JobState.SUCCEEDED, target="aarch64/a64fx", summary="built 2",
                started_at=T0, ended_at=T0 + timedelta(minutes=3))
    text = build_comment(BuildHeader("inst", "alice", "bot: build", HEAD, "main"),
                         [*mixed(), other], now=T0 + timedelta(minutes=16))
    table = [line for line in text.splitlines() if line.startswith("| `")]
    assert len(table) == 2  # two targets, not ten jobs
    pipe, plain = table
    assert "(1/2 done, 1 succeeded)" in text
    assert "10 (pipeline, 7 steps)" in pipe and "🔄 running" in pipe
    assert "3/7 done (1 reused), 1 running, 1 waiting, 1 failed, 1 cancelled" in pipe
    # The longest chain by durations: a (10 min), then the rebuilt b (20 min).
    assert "critical path: A 10m00s → B 20m00s" in pipe
    assert "not built: E (exit code 2 more \\| text); F (not run: it needs step e" in pipe
    assert "| c-a |" in pipe
    assert plain.startswith("| `aarch64/a64fx` |") and "built 2" in plain  # unchanged


def test_a_running_step_on_the_critical_path_shows_its_time_so_far() -> None:
    rows = [plan_job(), step(11, "a", JobState.SUCCEEDED, minutes=1),
            step(12, "b", JobState.RUNNING, ("a",), minutes=0, started=timedelta(minutes=1))]
    text = build_comment(BuildHeader("i", "a", "c", HEAD, "main"), rows,
                         now=T0 + timedelta(minutes=31))
    assert "critical path: A 1m00s → B 30m00s (running)" in text
    # Without a clock, a running step has no duration yet.
    assert "critical path: A 1m00s → B (running) |" in build_comment(
        BuildHeader("i", "a", "c", HEAD, "main"), rows)


def test_a_long_critical_path_and_many_failures_stay_bounded() -> None:
    chain = [step(11 + i, f"s{i}", JobState.FAILED, (f"s{i - 1}",) if i else (), minutes=1,
                  started=timedelta(minutes=i), reason="x" * 500) for i in range(20)]
    text = build_comment(BuildHeader("i", "a", "c", HEAD, "main"), [plan_job(), *chain])
    row = next(line for line in text.splitlines() if line.startswith("| `"))
    assert "S0 1m00s → S1 1m00s → … 15 more … → S17 1m00s → S18 1m00s → S19 1m00s" in row
    assert "and 17 more" in row and "x" * 81 not in row
    assert len(row) < 1000


def test_check_run_of_a_pipeline_follows_all_latest_attempts() -> None:
    running = check_run_fields("inst", the_pipeline(mixed()), base_url="https://bot.example")
    assert running["status"] == "in_progress" and "conclusion" not in running
    assert running["external_id"] == str(PLAN)  # Re-run rebuilds the target
    assert running["name"] == "layerbot/inst: x86_64/amd/zen2 (eessi-2023.06)"
    out = running["output"]
    assert out["title"].startswith("running: 3/7 done (1 reused)")
    text = out["text"]
    assert "| step | state | duration | needs | job | core-h |" in text
    assert "| B | ✅ done (rebuilt) | 20m00s | A | [18](https://bot.example/jobs/18) | 2.00 |" \
        in text
    assert "| LIB | ✅ reused (job 3) |  |  | [13](https://bot.example/jobs/13) |  |" in text
    assert "| D | ⏳ waiting |  | C, LIB |" in text
    assert "[12]" not in text  # the first attempt of b is not a step any more
    assert "e49" in text and "e10" not in text  # the failed step's last log lines
    assert "Critical path (30m00s): A 10m00s → B 20m00s" in out["summary"]
    assert "[10](https://bot.example/jobs/10)" in out["summary"]


def test_check_run_conclusions_of_a_finished_pipeline() -> None:
    def finished(*last: JobRow) -> dict[str, object]:
        rows = [plan_job(), step(11, "a", JobState.SUCCEEDED, minutes=3), *last]
        return check_run_fields("inst", the_pipeline(rows))

    ok = finished(step(12, "b", JobState.SUCCEEDED, ("a",), minutes=2,
                       started=timedelta(minutes=3)),
                  step(13, "r", JobState.SUCCEEDED, reused_from=2))
    assert (ok["status"], ok["conclusion"]) == ("completed", "success")
    assert ok["completed_at"] == "2026-12-01T12:05:00Z"
    for bad in (JobState.FAILED, JobState.TIMED_OUT, JobState.LOST):
        failed = finished(step(12, "b", bad, ("a",), minutes=1),
                          step(13, "c", JobState.CANCELLED, ("b",)))
        assert failed["conclusion"] == "failure", bad
    cancelled = finished(step(12, "b", JobState.CANCELLED, ("a",)))
    assert cancelled["conclusion"] == "cancelled"  # only cancellations: nothing failed
    # Without links when the control center's address is not configured.
    assert "| 11 |" in str(ok["output"]["text"])  # type: ignore[index]


def test_steps_have_no_check_run_of_their_own() -> None:
    rows = mixed()
    changed = check_runs_changed(rows, {14})  # a step moved
    assert [check_run_key(t) for t in changed] == [f"job:{PLAN}"]
    assert isinstance(changed[0], PipelineRow)
    assert check_runs_changed(rows, {999}) == []
    # A plan job still planning is a job like any other, with the same key.
    planning = job(PLAN, JobState.RUNNING, started_at=T0)
    (alone,) = check_runs_changed([planning], {PLAN})
    assert check_run_key(alone) == f"job:{PLAN}"
    assert check_run_fields("inst", alone)["status"] == "in_progress"


def test_status_shows_one_line_per_target_for_a_pipeline() -> None:
    rows = mixed()
    text = status_comment("inst", HEAD, rows)
    lines = [line for line in text.splitlines() if line.startswith("| `")]
    assert len(lines) == 1
    assert "10 (pipeline, 7 steps)" in lines[0] and "3/7 done (1 reused)" in lines[0]
    last = last_build_comment("inst", HEAD, rows)
    assert len([line for line in last.splitlines() if line.startswith("| `")]) == 1


def test_step_status_of_each_job_state() -> None:
    assert step_status(step(1, "x", JobState.SUBMITTED)) is StepStatus.RUNNING
    assert step_status(step(1, "x", JobState.QUEUED, reused_from=5)) is StepStatus.WAITING
    assert step_status(step(1, "x", JobState.TIMED_OUT)) is StepStatus.FAILED
    assert step_status(step(1, "x", JobState.SUCCEEDED, reused_from=5)) is StepStatus.REUSED
