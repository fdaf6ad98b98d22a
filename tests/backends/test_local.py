"""The local executor with real processes and real files (no mocks).

Jobs that must stay alive for a while wait for a ``release`` file in their job directory,
so tests decide when they end instead of sleeping.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import pytest

from layerbot.backends.base import BackendState, JobStatus, SubmitError, SubmitRequest
from layerbot.backends.local import LOST_REASON, LocalBackend
from layerbot.backends.local_launcher import process_alive, read_state, state_file_for
from layerbot.config import LocalBackendConfig

T = TypeVar("T")
PATH = "/usr/local/bin:/usr/bin:/bin"
WAIT_FOR_RELEASE = "while [ ! -e release ]; do sleep 0.05; done\n"
ENDED = (
    BackendState.COMPLETED,
    BackendState.FAILED,
    BackendState.CANCELLED,
    BackendState.TIMEOUT,
)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


# --- helpers -------------------------------------------------------------------------------


def make_job(root: Path, name: str, body: str, *, executable: bool = True) -> Path:
    job_dir = root / name
    script = job_dir / "bot" / "build.sh"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/bash\n" + body)
    if executable:
        script.chmod(0o755)
    return job_dir


def request(
    job_dir: Path,
    job_id: int,
    *,
    env: Mapping[str, str] | None = None,
    time_limit: int | None = None,
    instance: str = "test",
) -> SubmitRequest:
    return SubmitRequest(
        job_id=job_id,
        instance=instance,
        job_dir=job_dir,
        script=Path("bot/build.sh"),
        env={"PATH": PATH} if env is None else env,
        time_limit_seconds=time_limit,
    )


async def wait_for(
    backend: LocalBackend, backend_id: str, *states: BackendState, timeout: float = 10.0
) -> JobStatus:
    deadline = time.monotonic() + timeout
    while True:
        status = (await backend.poll([backend_id]))[backend_id]
        if status.state in states:
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"still {status} after {timeout} s; wanted {states}")
        await asyncio.sleep(0.05)


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def state_of(job_dir: Path) -> dict[str, Any]:
    state = read_state(state_file_for(job_dir))
    assert state is not None
    return state


def live_group_members(pgid: int) -> list[int]:
    """Processes (not zombies) in process group ``pgid``, read from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rfind(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "state"
    # Whatever a failed test left running: kill it, so nothing outlives the test.
    for state_file in tmp_path.glob("*/.layerbot/local.json"):
        state = read_state(state_file) or {}
        job = state.get("job") or {}
        launcher = state.get("launcher") or {}
        if launcher and process_alive(launcher["pid"], launcher["start_ticks"]):
            os.kill(launcher["pid"], signal.SIGKILL)
        if job and live_group_members(job["pgid"]):
            os.killpg(job["pgid"], signal.SIGKILL)


def backend(state_dir: Path, max_concurrent: int = 2, grace: float = 2.0) -> LocalBackend:
    config = LocalBackendConfig(max_concurrent=max_concurrent)
    return LocalBackend(config, state_dir, kill_grace_seconds=grace)


# --- outcomes ------------------------------------------------------------------------------


def test_a_job_that_succeeds(tmp_path: Path, state_dir: Path) -> None:
    job_dir = make_job(tmp_path, "ok", "echo building; echo oops >&2\n")
    local = backend(state_dir)

    async def scenario() -> JobStatus:
        backend_id = await local.submit(request(job_dir, 1))
        assert backend_id == str(job_dir)
        return await wait_for(local, backend_id, *ENDED)

    status = run(scenario())
    assert status.state == BackendState.COMPLETED
    assert status.exit_code == 0
    assert status.started_at and status.ended_at and status.started_at <= status.ended_at
    assert status.elapsed_seconds is not None and status.elapsed_seconds >= 0
    assert status.max_rss_bytes and status.max_rss_bytes > 0
    assert status.cpus == 1
    assert status.node
    assert (job_dir / "job.log").read_text() == "building\noops\n"


def test_a_job_that_exits_3_failed(tmp_path: Path, state_dir: Path) -> None:
    job_dir = make_job(tmp_path, "three", "echo no; exit 3\n")
    local = backend(state_dir)

    async def scenario() -> JobStatus:
        return await wait_for(local, await local.submit(request(job_dir, 2)), *ENDED)

    status = run(scenario())
    assert status.state == BackendState.FAILED
    assert status.exit_code == 3
    assert status.reason == "exit code 3"


def test_missing_script_fails_with_a_clear_reason(tmp_path: Path, state_dir: Path) -> None:
    job_dir = tmp_path / "empty"
    job_dir.mkdir()
    local = backend(state_dir)

    async def scenario() -> JobStatus:
        return await wait_for(local, await local.submit(request(job_dir, 3)), *ENDED)

    status = run(scenario())
    assert status.state == BackendState.FAILED
    assert status.reason == "job script bot/build.sh not found in the job directory"
    assert status.exit_code == 127


def test_script_not_executable_fails_with_a_clear_reason(tmp_path: Path, state_dir: Path) -> None:
    job_dir = make_job(tmp_path, "noexec", "echo hi\n", executable=False)
    local = backend(state_dir)

    async def scenario() -> JobStatus:
        return await wait_for(local, await local.submit(request(job_dir, 4)), *ENDED)

    status = run(scenario())
    assert status.state == BackendState.FAILED
    assert status.reason is not None
    assert "job script bot/build.sh is not executable" in status.reason


# --- scheduling ----------------------------------------------------------------------------


def test_concurrency_limit_third_job_waits_for_a_free_slot(tmp_path: Path, state_dir: Path) -> None:
    jobs = [make_job(tmp_path, f"j{i}", WAIT_FOR_RELEASE) for i in range(3)]
    local = backend(state_dir, max_concurrent=2)

    async def scenario() -> None:
        ids = [await local.submit(request(job_dir, 10 + i)) for i, job_dir in enumerate(jobs)]
        await wait_for(local, ids[0], BackendState.RUNNING)
        await wait_for(local, ids[1], BackendState.RUNNING)
        await asyncio.sleep(0.3)
        third = (await local.poll(ids))[ids[2]]
        assert third.state == BackendState.PENDING
        assert third.reason is not None and "free slot" in third.reason
        assert state_of(jobs[2])["launched_at"] is None
        resources = await local.resources()
        assert resources.partitions[0].nodes_allocated == 1

        (jobs[0] / "release").touch()
        assert (await wait_for(local, ids[0], *ENDED)).state == BackendState.COMPLETED
        await wait_for(local, ids[2], BackendState.RUNNING)
        assert (await local.poll([ids[1]]))[ids[1]].state == BackendState.RUNNING
        for job_dir in jobs[1:]:
            (job_dir / "release").touch()
        for backend_id in ids[1:]:
            assert (await wait_for(local, backend_id, *ENDED)).state == BackendState.COMPLETED

    run(scenario())


def test_time_limit_gives_timeout_and_kills_the_group(tmp_path: Path, state_dir: Path) -> None:
    job_dir = make_job(tmp_path, "slow", "sleep 30 &\nsleep 30\n")
    local = backend(state_dir, grace=0.5)

    async def scenario() -> JobStatus:
        backend_id = await local.submit(request(job_dir, 20, time_limit=1))
        return await wait_for(local, backend_id, *ENDED, timeout=8)

    started = time.monotonic()
    status = run(scenario())
    assert status.state == BackendState.TIMEOUT
    assert time.monotonic() - started < 5
    assert live_group_members(state_of(job_dir)["job"]["pgid"]) == []


# --- cancel --------------------------------------------------------------------------------


def test_cancel_of_a_running_job_kills_the_whole_group(tmp_path: Path, state_dir: Path) -> None:
    job_dir = make_job(tmp_path, "bg", "sleep 60 &\necho $! > child.pid\nwait\n")
    local = backend(state_dir)

    async def scenario() -> JobStatus:
        backend_id = await local.submit(request(job_dir, 30))
        await wait_for(local, backend_id, BackendState.RUNNING)
        wait_until(
            lambda: (
                (job_dir / "child.pid").exists()
                and bool((job_dir / "child.pid").read_text().strip())
            )
        )
        started = time.monotonic()
        await local.cancel(backend_id)
        assert time.monotonic() - started < 2.0 + 1.0  # SIGTERM is enough: no grace used
        await local.cancel(backend_id)  # idempotent
        return (await local.poll([backend_id]))[backend_id]

    status = run(scenario())
    assert status.state == BackendState.CANCELLED
    pgid = state_of(job_dir)["job"]["pgid"]
    child = int((job_dir / "child.pid").read_text())
    assert live_group_members(pgid) == []
    assert not process_alive(child, None)


def test_cancel_escalates_to_sigkill_when_sigterm_is_ignored(
    tmp_path: Path, state_dir: Path
) -> None:
    job_dir = make_job(tmp_path, "stubborn", "trap '' TERM\nsleep 60 &\nwait\n")
    local = backend(state_dir, grace=0.5)

    async def scenario() -> JobStatus:
        backend_id = await local.submit(request(job_dir, 31))
        await wait_for(local, backend_id, BackendState.RUNNING)
        await asyncio.sleep(0.1)  # let bash set its trap
        started = time.monotonic()
        await local.cancel(backend_id)
        assert 0.4 < time.monotonic() - started < 3
        return (await local.poll([backend_id]))[backend_id]

    assert run(scenario()).state == BackendState.CANCELLED
    assert live_group_members(state_of(job_dir)["job"]["pgid"]) == []


def test_cancel_of_a_pending_job(tmp_path: Path, state_dir: Path) -> None:
    first = make_job(tmp_path, "first", WAIT_FOR_RELEASE)
    second = make_job(tmp_path, "second", "echo should not run > ran\n")
    local = backend(state_dir, max_concurrent=1)

    async def scenario() -> None:
        id1 = await local.submit(request(first, 40))
        id2 = await local.submit(request(second, 41))
        assert (await local.poll([id2]))[id2].state == BackendState.PENDING
        await local.cancel(id2)
        await local.cancel(id2)
        assert (await local.poll([id2]))[id2].state == BackendState.CANCELLED
        (first / "release").touch()
        await wait_for(local, id1, *ENDED)
        await local.poll([id1, id2])
        await asyncio.sleep(0.3)
        assert (await local.poll([id2]))[id2].state == BackendState.CANCELLED

    run(scenario())
    assert not (second / "ran").exists()
    assert state_of(second)["launched_at"] is None


# --- killed from outside -------------------------------------------------------------------


def test_job_group_killed_from_outside_is_failed_with_the_signal(
    tmp_path: Path, state_dir: Path
) -> None:
    job_dir = make_job(tmp_path, "victim", "sleep 60 &\nwait\n")
    local = backend(state_dir)

    async def scenario() -> JobStatus:
        backend_id = await local.submit(request(job_dir, 50))
        await wait_for(local, backend_id, BackendState.RUNNING)
        os.killpg(state_of(job_dir)["job"]["pgid"], signal.SIGKILL)
        return await wait_for(local, backend_id, *ENDED)

    status = run(scenario())
    assert status.state == BackendState.FAILED
    assert status.reason == "killed by signal SIGKILL"
    assert status.exit_code == 128 + 9


def test_launcher_killed_from_outside_is_failed_and_its_job_stopped(
    tmp_path: Path, state_dir: Path
) -> None:
    job_dir = make_job(tmp_path, "orphan", WAIT_FOR_RELEASE)
    local = backend(state_dir)

    async def scenario() -> JobStatus:
        backend_id = await local.submit(request(job_dir, 51))
        await wait_for(local, backend_id, BackendState.RUNNING)
        os.kill(state_of(job_dir)["launcher"]["pid"], signal.SIGKILL)
        return await wait_for(local, backend_id, *ENDED)

    status = run(scenario())
    assert status.state == BackendState.FAILED
    assert status.reason == LOST_REASON
    pgid = state_of(job_dir)["job"]["pgid"]
    wait_until(lambda: live_group_members(pgid) == [], timeout=2)


def test_launcher_stopped_from_outside_stops_its_job_and_says_so(
    tmp_path: Path, state_dir: Path
) -> None:
    job_dir = make_job(tmp_path, "stopped", WAIT_FOR_RELEASE)
    local = backend(state_dir)

    async def scenario() -> JobStatus:
        backend_id = await local.submit(request(job_dir, 52))
        await wait_for(local, backend_id, BackendState.RUNNING)
        os.kill(state_of(job_dir)["launcher"]["pid"], signal.SIGTERM)  # e.g. a shutdown
        return await wait_for(local, backend_id, *ENDED)

    status = run(scenario())
    assert status.state == BackendState.FAILED
    assert status.reason == "the launcher was stopped by SIGTERM; the job was terminated"
    assert live_group_members(state_of(job_dir)["job"]["pgid"]) == []


def test_a_launcher_that_cannot_start_fails_the_job(tmp_path: Path, state_dir: Path) -> None:
    job_dir = make_job(tmp_path, "nolauncher", "true\n")
    config = LocalBackendConfig(max_concurrent=1)
    local = LocalBackend(config, state_dir, python="/bin/false")

    async def scenario() -> JobStatus:
        return await wait_for(local, await local.submit(request(job_dir, 53)), *ENDED)

    status = run(scenario())
    assert status.state == BackendState.FAILED
    assert status.reason is not None
    assert status.reason.startswith("the launcher exited without starting the job")


# --- environment ---------------------------------------------------------------------------


def test_job_gets_exactly_the_given_environment(
    tmp_path: Path, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAYERBOT_WEBHOOK_SECRET", "s3cret-never-in-a-job")
    job_dir = tmp_path / "env"
    script = job_dir / "bot" / "build.sh"
    script.parent.mkdir(parents=True)
    # Python adds nothing to the environment it prints (bash would add PWD, SHLVL, _).
    script.write_text(
        f"#!{sys.executable}\nimport json, os, pathlib\n"
        "pathlib.Path('env.json').write_text(json.dumps(dict(os.environ)))\n"
        "import time\nwhile not pathlib.Path('release').exists(): time.sleep(0.05)\n"
    )
    script.chmod(0o755)
    env = {"PATH": PATH, "LANG": "C.UTF-8", "EESSI_VERSION": "2023.06"}
    local = backend(state_dir)

    async def scenario() -> JobStatus:
        backend_id = await local.submit(request(job_dir, 60, env=env))
        await wait_for(local, backend_id, BackendState.RUNNING)
        wait_until(lambda: (job_dir / "env.json").exists())
        # Not in the launcher's environment either: the job could read /proc/<pid>/environ.
        launcher_pid = state_of(job_dir)["launcher"]["pid"]
        assert b"s3cret" not in Path(f"/proc/{launcher_pid}/environ").read_bytes()
        (job_dir / "release").touch()
        return await wait_for(local, backend_id, *ENDED)

    assert run(scenario()).state == BackendState.COMPLETED
    seen = json.loads((job_dir / "env.json").read_text())
    seen.pop("LC_CTYPE", None)  # Python's C-locale coercion may set it; nothing else
    # Plus the Slurm variables EESSI's scripts use, with layerbot's job id (as on Slurm).
    assert seen == {**env, "SLURM_JOB_ID": "60", "SLURM_JOBID": "60",
                    "SLURM_SUBMIT_DIR": str(job_dir.absolute()), "SLURM_JOB_NAME": "layerbot-60"}


# --- restart -------------------------------------------------------------------------------

BOT = """
import asyncio, sys, time
from pathlib import Path
from layerbot.backends.base import SubmitRequest
from layerbot.backends.local import LocalBackend
from layerbot.config import LocalBackendConfig

async def main():
    local = LocalBackend(LocalBackendConfig(max_concurrent=2), Path(sys.argv[1]))
    backend_id = await local.submit(SubmitRequest(
        job_id=70, instance="restart", job_dir=Path(sys.argv[2]),
        script=Path("bot/build.sh"), env={"PATH": "/usr/bin:/bin"}))
    print(backend_id, flush=True)
    time.sleep(60)

asyncio.run(main())
"""


def test_job_survives_a_killed_bot_and_a_new_instance_finds_it(
    tmp_path: Path, state_dir: Path
) -> None:
    job_dir = make_job(tmp_path, "long", WAIT_FOR_RELEASE)
    bot = subprocess.Popen(
        [sys.executable, "-c", BOT, str(state_dir), str(job_dir)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert bot.stdout is not None
    backend_id = bot.stdout.readline().strip()
    bot.kill()  # SIGKILL: the bot gets no chance to clean up
    bot.wait()
    bot.stdout.close()

    local = backend(state_dir)  # "after the restart"

    async def scenario() -> JobStatus:
        assert await local.find(70, "restart", job_dir) == backend_id
        assert await local.find(70, "other-instance", job_dir) is None
        assert await local.find(71, "restart", job_dir) is None
        # Only the directory the bot asks about is proof: not an earlier one of this job.
        assert await local.find(70, "restart", job_dir.parent / "job-70-elsewhere") is None
        await wait_for(local, backend_id, BackendState.RUNNING)
        (job_dir / "release").touch()
        return await wait_for(local, backend_id, *ENDED)

    assert backend_id == str(job_dir)
    assert run(scenario()).state == BackendState.COMPLETED


# --- the batch: one pass for many jobs -----------------------------------------------------


def test_poll_of_many_jobs_is_one_pass(tmp_path: Path, state_dir: Path) -> None:
    blocker = make_job(tmp_path, "blocker", WAIT_FOR_RELEASE)
    many = [make_job(tmp_path, f"m{i:02}", WAIT_FOR_RELEASE) for i in range(40)]
    local = backend(state_dir, max_concurrent=1)

    async def scenario() -> None:
        first = await local.submit(request(blocker, 100))
        ids = [await local.submit(request(job_dir, 101 + i)) for i, job_dir in enumerate(many)]
        calls = local.calls
        started = time.monotonic()
        statuses = await local.poll([first, *ids])
        elapsed = time.monotonic() - started
        assert local.calls == calls + 1
        assert elapsed < 1.0, elapsed  # a few ms: files only, no subprocess per job
        assert set(statuses) == {first, *ids}
        assert {statuses[i].state for i in ids} == {BackendState.PENDING}
        # pending jobs start in submission order
        (blocker / "release").touch()
        await wait_for(local, ids[0], BackendState.RUNNING)
        second = (await local.poll([ids[1]]))[ids[1]]
        assert second.state == BackendState.PENDING
        assert second.reason is not None and "free slot" in second.reason
        for backend_id in [*ids[1:], ids[0]]:
            await local.cancel(backend_id)
        statuses = await local.poll(ids)
        assert {s.state for s in statuses.values()} == {BackendState.CANCELLED}

    run(scenario())


# --- odds and ends -------------------------------------------------------------------------


def test_unknown_job_and_refused_submissions(tmp_path: Path, state_dir: Path) -> None:
    local = backend(state_dir)
    job_dir = make_job(tmp_path, "busy", WAIT_FOR_RELEASE)

    async def scenario() -> None:
        ghost = str(tmp_path / "ghost")
        assert (await local.poll([ghost]))[ghost].state == BackendState.UNKNOWN
        await local.cancel(ghost)  # nothing to cancel: no error
        with pytest.raises(SubmitError, match="does not exist"):
            await local.submit(request(tmp_path / "nowhere", 90))
        backend_id = await local.submit(request(job_dir, 91))
        with pytest.raises(SubmitError, match="has not ended"):
            await local.submit(request(job_dir, 92))
        # Cancelled while its launcher is still starting: it must not wait for the grace.
        started = time.monotonic()
        await local.cancel(backend_id)
        assert time.monotonic() - started < 4.0  # not grace + 3 s: no wait for a timeout
        assert (await local.poll([backend_id]))[backend_id].state == BackendState.CANCELLED

    run(scenario())


def test_check_and_resources(tmp_path: Path, state_dir: Path) -> None:
    local = backend(state_dir)

    async def scenario() -> None:
        checks = await local.check()
        assert all(c.ok for c in checks), checks
        resources = await local.resources()
        (partition,) = resources.partitions
        assert partition.name == "local"
        assert partition.cpus_total == (os.cpu_count() or 1)
        assert partition.nodes_allocated == 0

    run(scenario())
