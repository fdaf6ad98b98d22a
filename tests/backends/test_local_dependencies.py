"""Job dependencies (``SubmitRequest.after_ok``) on the local executor: real launchers, real
processes, real state files (no mocks).

Each job writes a file when it runs, so a job that must never run is checked by the
absence of its file; start and end times come from the backend's own statuses.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from layerbot.backends.base import BackendState, JobStatus, SubmitError
from layerbot.backends.local import LocalBackend
from tests.backends.test_local import (
    ENDED,
    WAIT_FOR_RELEASE,
    backend,
    make_job,
    request,
    run,
    state_dir,  # noqa: F401  (the fixture: kills what a failed test left running)
    state_of,
    wait_for,
    wait_until,
)

RECORD = "touch ran\n"


async def submit(local: LocalBackend, job_dir: Path, job_id: int, *needs: str) -> str:
    return await local.submit(dataclasses.replace(request(job_dir, job_id), after_ok=needs))


def started_after(later: JobStatus, earlier: JobStatus) -> bool:
    assert later.started_at is not None and earlier.ended_at is not None
    return later.started_at >= earlier.ended_at


def test_a_dependent_starts_only_after_its_dependency_succeeded(
    tmp_path: Path, state_dir: Path  # noqa: F811
) -> None:
    first = make_job(tmp_path, "a", WAIT_FOR_RELEASE)
    second = make_job(tmp_path, "b", RECORD)
    local = backend(state_dir, max_concurrent=2)

    async def scenario() -> tuple[JobStatus, JobStatus]:
        a = await submit(local, first, 1)
        b = await submit(local, second, 2, a)
        await wait_for(local, a, BackendState.RUNNING)
        waiting = (await local.poll([b]))[b]
        assert waiting.state is BackendState.PENDING  # a free slot, and still it waits
        assert waiting.reason == f"Dependency: waiting for job {a} it needs"
        assert state_of(second)["launched_at"] is None
        assert state_of(second)["after_ok"] == [a]
        (first / "release").touch()
        done_a = await wait_for(local, a, *ENDED)
        done_b = await wait_for(local, b, *ENDED)
        return done_a, done_b

    done_a, done_b = run(scenario())
    assert done_a.state is BackendState.COMPLETED and done_b.state is BackendState.COMPLETED
    assert started_after(done_b, done_a)
    assert (second / "ran").exists()


def test_a_failed_dependency_cancels_the_dependent_which_never_runs(
    tmp_path: Path, state_dir: Path  # noqa: F811
) -> None:
    first = make_job(tmp_path, "a", "sleep 0.3; exit 3\n")
    second = make_job(tmp_path, "b", RECORD)
    third = make_job(tmp_path, "c", RECORD)  # needs b: cancelled in turn
    local = backend(state_dir)

    async def scenario() -> tuple[str, str, dict[str, JobStatus]]:
        a = await submit(local, first, 1)
        b = await submit(local, second, 2, a)
        c = await submit(local, third, 3, b)
        assert (await wait_for(local, a, *ENDED)).state is BackendState.FAILED
        await wait_for(local, c, *ENDED)
        return a, b, dict(await local.poll([b, c]))

    a, b, statuses = run(scenario())
    assert statuses[b].state is BackendState.CANCELLED
    assert statuses[b].reason == f"not started: job {a} it needs did not succeed (FAILED)"
    assert statuses[str(third)].state is BackendState.CANCELLED
    assert statuses[str(third)].reason == (
        f"not started: job {b} it needs did not succeed (CANCELLED)")
    for job_dir in (second, third):
        assert not (job_dir / "ran").exists()
        assert state_of(job_dir)["launched_at"] is None


def test_a_missing_or_cancelled_dependency_cancels_the_dependent(
    tmp_path: Path, state_dir: Path  # noqa: F811
) -> None:
    first = make_job(tmp_path, "a", WAIT_FOR_RELEASE)
    second = make_job(tmp_path, "b", RECORD)
    third = make_job(tmp_path, "c", RECORD)
    local = backend(state_dir)
    nowhere = str(tmp_path / "never-submitted")

    async def scenario() -> tuple[str, dict[str, JobStatus]]:
        a = await submit(local, first, 1)
        b = await submit(local, second, 2, a)
        c = await submit(local, third, 3, nowhere)
        await local.cancel(a)
        return a, dict(await local.poll([b, c]))

    a, statuses = run(scenario())
    assert {s.state for s in statuses.values()} == {BackendState.CANCELLED}
    assert statuses[str(second)].reason == (
        f"not started: job {a} it needs did not succeed (CANCELLED)")
    assert statuses[str(third)].reason == (
        f"not started: job {nowhere} it needs did not succeed (UNKNOWN)")
    assert not (second / "ran").exists() and not (third / "ran").exists()


def test_a_diamond_runs_each_job_after_all_it_needs(
    tmp_path: Path, state_dir: Path  # noqa: F811
) -> None:
    dirs = {name: make_job(tmp_path, name, f"sleep 0.3; {RECORD}") for name in "abcd"}
    local = backend(state_dir, max_concurrent=2)

    async def scenario() -> dict[str, JobStatus]:
        a = await submit(local, dirs["a"], 1)
        b = await submit(local, dirs["b"], 2, a)
        c = await submit(local, dirs["c"], 3, a)
        d = await submit(local, dirs["d"], 4, b, c)
        ids = {"a": a, "b": b, "c": c, "d": d}
        await wait_for(local, d, *ENDED, timeout=20)
        statuses = await local.poll(list(ids.values()))
        return {name: statuses[backend_id] for name, backend_id in ids.items()}

    done = run(scenario())
    assert {s.state for s in done.values()} == {BackendState.COMPLETED}
    assert started_after(done["b"], done["a"]) and started_after(done["c"], done["a"])
    assert started_after(done["d"], done["b"]) and started_after(done["d"], done["c"])


def test_dependencies_survive_a_restart_and_are_found_long_after_they_ended(
    tmp_path: Path, state_dir: Path  # noqa: F811
) -> None:
    early = make_job(tmp_path, "early", RECORD)
    first = make_job(tmp_path, "a", WAIT_FOR_RELEASE)
    second = make_job(tmp_path, "b", RECORD)

    async def before_restart() -> tuple[str, str, str]:
        local = backend(state_dir)
        e = await submit(local, early, 1)
        await wait_for(local, e, *ENDED)
        await local.poll([e])  # its queue entry is gone: only its state file is left
        assert not any(p.name.endswith("-1") for p in (state_dir / "queue").iterdir())
        a = await submit(local, first, 2)
        b = await submit(local, second, 3, a, e)
        await wait_for(local, a, BackendState.RUNNING)
        return e, a, b

    _, a, b = run(before_restart())
    restarted = backend(state_dir)  # a new object over the same directories

    async def after_restart() -> JobStatus:
        assert (await restarted.poll([b]))[b].state is BackendState.PENDING
        (first / "release").touch()
        await wait_for(restarted, a, *ENDED)
        return await wait_for(restarted, b, *ENDED)

    done = run(after_restart())
    assert done.state is BackendState.COMPLETED and (second / "ran").exists()


def test_a_waiting_job_takes_no_slot(tmp_path: Path, state_dir: Path) -> None:  # noqa: F811
    """With max_concurrent = 1, a job submitted after one that waits for its dependency
    (running under another backend's slot) runs at once."""
    first = make_job(tmp_path, "a", WAIT_FOR_RELEASE)
    second = make_job(tmp_path, "b", RECORD)
    third = make_job(tmp_path, "c", WAIT_FOR_RELEASE)
    elsewhere = backend(tmp_path / "other-state", max_concurrent=1)
    local = backend(state_dir, max_concurrent=1)

    async def scenario() -> None:
        a = await submit(elsewhere, first, 1)
        await wait_for(elsewhere, a, BackendState.RUNNING)
        b = await submit(local, second, 2, a)
        c = await submit(local, third, 3)
        await wait_for(local, c, BackendState.RUNNING)
        assert (await local.poll([b]))[b].state is BackendState.PENDING
        (third / "release").touch()
        (first / "release").touch()
        await wait_for(elsewhere, a, *ENDED)
        assert (await wait_for(local, b, *ENDED)).state is BackendState.COMPLETED

    run(scenario())


def test_a_dependent_starts_when_its_dependency_ends_without_a_poll(
    tmp_path: Path, state_dir: Path  # noqa: F811
) -> None:
    """The bot runs a pass when a launcher it started exits: no wait for the next poll."""
    first = make_job(tmp_path, "a", "sleep 0.2\n")
    second = make_job(tmp_path, "b", RECORD)
    local = backend(state_dir)

    async def scenario() -> None:
        a = await submit(local, first, 1)
        await submit(local, second, 2, a)

    run(scenario())
    # No poll from here on: only the launcher's exit can start b.
    wait_until(lambda: (second / "ran").exists(), timeout=10.0)
    ended = state_of(first)["outcome"]["ended_at"]
    started = state_of(second)["job"]["started_at"]
    assert started >= ended


def test_a_job_cannot_need_itself(tmp_path: Path, state_dir: Path) -> None:  # noqa: F811
    job_dir = make_job(tmp_path, "a", RECORD)
    local = backend(state_dir)

    with pytest.raises(SubmitError, match="itself"):
        run(submit(local, job_dir, 1, str(job_dir)))
