"""The Slurm backend against the real daemons of scripts/slurm.sh (no mocks of Slurm).

Each test tags its jobs with its own instance name and cancels what is left of them.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Coroutine, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import pytest

from layerbot.backends.base import (
    BackendState,
    BackendUnavailable,
    JobStatus,
    SubmitError,
    SubmitRequest,
)
from layerbot.backends.slurm import SlurmBackend
from layerbot.build.identity import DEDICATED_USER, lookup
from layerbot.config import NodeType, SlurmBackendConfig
from tests.backends.conftest import SlurmCluster

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm")]

T = TypeVar("T")
PATH = "/usr/local/bin:/usr/bin:/bin"
FINAL = (BackendState.COMPLETED, BackendState.FAILED, BackendState.CANCELLED,
         BackendState.TIMEOUT, BackendState.OUT_OF_MEMORY, BackendState.NODE_FAIL,
         BackendState.UNKNOWN)
NODE_TYPES = [
    NodeType(name="zen2", cpu_target="x86_64/amd/zen2",
             options={"partition": "debug", "constraint": "zen2", "memory": "200M"}),
    NodeType(name="generic", cpu_target="x86_64/generic",
             options={"partition": "build", "cpus": "1"}),
]


JOB_USER = lookup(DEDICATED_USER)  # scripts/jobuser.sh, run by bootstrap


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@pytest.fixture
def instance(slurm: SlurmCluster) -> Iterator[str]:
    name = f"t{uuid.uuid4().hex[:8]}"
    yield name
    if slurm.ping():
        slurm.cancel_tagged(name)


def backend(**config: Any) -> SlurmBackend:
    """As the bot runs here: root, submitting as the dedicated job user."""
    return SlurmBackend(SlurmBackendConfig(**config), NODE_TYPES, unavailable_wait_seconds=5,
                        job_user=JOB_USER)


def job(root: Path, instance: str, job_id: int, body: str, *,
        env: Mapping[str, str] | None = None, script: Path | None = None,
        options: Mapping[str, str] | None = None, time_limit: int | None = 600) -> SubmitRequest:
    job_dir = root / f"job{job_id}"
    (job_dir / "bot").mkdir(parents=True)
    build = job_dir / "bot" / "build.sh"
    build.write_text("#!/bin/bash\n" + body)
    build.chmod(0o755)
    return SubmitRequest(job_id=job_id, instance=instance, job_dir=job_dir,
                         script=script or Path("bot/build.sh"),
                         env={"PATH": PATH} if env is None else env,
                         time_limit_seconds=time_limit,
                         options={"partition": "debug"} if options is None else options,
                         log_file=job_dir / "job.log")


async def wait_for(b: SlurmBackend, backend_id: str, *states: BackendState,
                   timeout: float = 60) -> JobStatus:
    deadline = time.monotonic() + timeout
    while True:
        status = (await b.poll([backend_id])).get(backend_id)
        if status is not None and status.state in states:
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"{backend_id} never reached {states}; last: {status}")
        await asyncio.sleep(0.3)


# --- the whole life of a job ---------------------------------------------------------------


def test_held_job_is_found_released_and_completes_with_accounting(
        tmp_path: Path, instance: str, slurm: SlurmCluster) -> None:
    async def main() -> None:
        b = backend()
        req = job(tmp_path, instance, 1, "echo built; sleep 3\n")
        assert await b.find(1, instance, req.job_dir) is None
        backend_id = await b.submit(req)
        assert backend_id.endswith("/1") and backend_id.split("/")[0].isdigit()
        held = (await b.poll([backend_id]))[backend_id]
        assert held.state is BackendState.PENDING and held.reason == "JobHeldUser"
        # a restarted bot would not resubmit
        assert await b.find(1, instance, req.job_dir) == backend_id
        assert await backend().find(1, instance, req.job_dir) == backend_id
        await b.release([backend_id])
        done = await wait_for(b, backend_id, *FINAL)
        assert done.state is BackendState.COMPLETED and done.exit_code == 0
        assert done.cpus == 1 and done.node and done.elapsed_seconds is not None
        assert done.elapsed_seconds >= 2 and done.started_at and done.ended_at
        assert done.max_rss_bytes and done.max_rss_bytes > 0  # sampled every 2 s here
        assert "built" in (req.job_dir / "job.log").read_text()
        # still found once ended (a crash after submit, noticed late)
        assert await b.find(1, instance, req.job_dir) == backend_id

    run(main())
    info = slurm.tagged(instance)[0]
    assert info["name"] == f"layerbot-{instance}-1"
    assert info["comment"] == f"layerbot:{instance}:1"
    assert info["partition"] == "debug" and info["time_limit"] == 10


def test_the_job_gets_exactly_its_environment(tmp_path: Path, instance: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAYERBOT_WEBHOOK_SECRET", "bot-secret-must-not-leak")
    monkeypatch.setenv("SBATCH_PARTITION", "nope")  # would change what sbatch does
    env = {"PATH": PATH, "A": "x,y", "MULTI": "line one\nline 'two'", "EMPTY": ""}

    async def main() -> None:
        b = backend()
        req = job(tmp_path, instance, 2, "", env=env, script=Path("/usr/bin/env"))
        backend_id = await b.submit(req)
        await b.release([backend_id])
        assert (await wait_for(b, backend_id, *FINAL)).state is BackendState.COMPLETED
        text = (req.job_dir / "job.log").read_text()
        assert "bot-secret-must-not-leak" not in text and "LMOD" not in text
        own = {}
        for line in text.split("\n"):
            if "=" in line and not line.startswith(("SLURM_", "SLURMD_")):
                key, _, value = line.partition("=")
                own[key] = value
        assert own == {"PATH": PATH, "A": "x,y", "MULTI": "line one", "EMPTY": ""}
        assert "line 'two'" in text  # the rest of MULTI, on its own line
        assert f"SLURM_JOB_NAME=layerbot-{instance}-2" in text  # Slurm's own are kept

    run(main())


def test_delayed_begin_submits_a_job_that_starts_by_itself(
        tmp_path: Path, instance: str, slurm: SlurmCluster) -> None:
    async def main() -> str:
        b = backend(handover="delayed_begin", delayed_begin_seconds=30)
        backend_id = await b.submit(job(tmp_path, instance, 3, "true\n"))
        first = (await b.poll([backend_id]))[backend_id]
        assert first.state is BackendState.PENDING and first.reason == "BeginTime"
        before = b.calls
        await b.release([backend_id])  # nothing to do for this protocol
        assert b.calls == before
        return backend_id

    # Not held: eligible on its own 30 s after the submission. (Waiting for it to run
    # would cost up to a minute more: slurmctld starts such jobs in its periodic pass.)
    info = slurm.job(run(main()))
    assert info["state_reason"] == "BeginTime"
    assert 29 <= info["eligible_time"] - info["submit_time"] <= 31


def test_site_defaults_then_node_type_options_reach_sbatch(tmp_path: Path, instance: str,
                                                          slurm: SlurmCluster) -> None:
    async def main() -> str:
        b = backend(defaults={"partition": "build", "time": "00:07:00", "qos": "normal"})
        req = job(tmp_path, instance, 4, "true\n",
                  options={"partition": "debug", "constraint": "zen2", "memory": "300M"})
        return await b.submit(req)

    info = slurm.job(run(main()))
    assert (info["partition"], info["qos"], info["time_limit"]) == ("debug", "normal", 7)
    assert info["features"] == "zen2" and "mem=300M" in info["tres_req_str"]


# --- outcomes ------------------------------------------------------------------------------


def test_failure_memory_kill_and_cancel_each_get_their_state(
        tmp_path: Path, instance: str, slurm: SlurmCluster) -> None:
    hog = "python3 -c 'import time; x = b\"x\" * (400 << 20); time.sleep(8)'\n"

    async def main() -> None:
        b = backend()
        failing = await b.submit(job(tmp_path, instance, 5, "echo oops; exit 3\n"))
        oom = await b.submit(job(tmp_path, instance, 6, hog,
                                 options={"partition": "debug", "memory": "100M"}))
        sleeper = await b.submit(job(tmp_path, instance, 7, "sleep 120\n"))
        await b.release([failing, oom])
        failed = await wait_for(b, failing, *FINAL)
        assert failed.state is BackendState.FAILED and failed.exit_code == 3
        assert failed.reason == "exit code 3 (Slurm: NonZeroExitCode)"
        killed = await wait_for(b, oom, *FINAL)
        assert killed.state is BackendState.OUT_OF_MEMORY, killed
        assert killed.exit_code == 137 and "100 MiB memory limit" in (killed.reason or "")
        await b.release([sleeper])
        await wait_for(b, sleeper, BackendState.RUNNING)
        await b.cancel(sleeper)
        cancelled = await wait_for(b, sleeper, *FINAL)
        assert cancelled.state is BackendState.CANCELLED
        assert JOB_USER is not None  # cancelled as the job user, like every change to a job
        assert cancelled.reason == f"by {JOB_USER.name}, uid {JOB_USER.uid}"

    run(main())


def test_cancel_and_release_never_touch_jobs_that_are_not_ours(
        tmp_path: Path, instance: str, slurm: SlurmCluster) -> None:
    foreign = slurm.run("sbatch", "--parsable", "--hold", "-o", "/dev/null",
                        f"--comment=someone-else:{instance}", "--wrap", "true").strip()
    try:
        async def main() -> None:
            b = backend()
            mine = await b.submit(job(tmp_path, instance, 8, "true\n"))
            # a Slurm id recorded for layerbot job 99 that now names someone else's job
            await b.cancel(f"{foreign}/99")
            await backend().release([f"{foreign}/99"])
            assert (await b.poll([f"{foreign}/99"]))[f"{foreign}/99"].state is \
                BackendState.UNKNOWN
            await b.cancel(mine)
            assert (await wait_for(b, mine, *FINAL)).state is BackendState.CANCELLED

        run(main())
        info = slurm.job(foreign)
        assert (info["job_state"], info["state_reason"]) == ("PENDING", "JobHeldUser")
    finally:
        slurm.run("scancel", foreign, check=False)


def test_sbatch_refusals_carry_slurms_own_message(tmp_path: Path, instance: str) -> None:
    async def main() -> None:
        b = backend()
        with pytest.raises(SubmitError, match="Invalid partition name specified"):
            await b.submit(job(tmp_path, instance, 9, "true\n", options={"partition": "nope"}))
        with pytest.raises(SubmitError, match="Requested time limit is invalid"):
            await b.submit(job(tmp_path, instance, 10, "true\n", time_limit=7200))
        with pytest.raises(SubmitError, match="set by layerbot"):
            await b.submit(job(tmp_path, instance, 11, "true\n",
                               options={"partition": "debug", "job-name": "mine"}))
        assert b.calls == 2  # the last one never reached sbatch

    run(main())


def test_with_clusters_every_command_names_them(tmp_path: Path, instance: str) -> None:
    async def main() -> None:
        b = backend(clusters=["layerbot"])  # the only cluster here; -M all the same
        req = job(tmp_path, instance, 12, "true\n")
        backend_id = await b.submit(req)
        assert backend_id.endswith(";layerbot/12")
        assert await b.find(12, instance, req.job_dir) == backend_id
        await b.release([backend_id])
        assert (await wait_for(b, backend_id, *FINAL)).state is BackendState.COMPLETED
        other = await b.submit(job(tmp_path, instance, 13, "true\n"))
        await b.cancel(other)
        assert (await wait_for(b, other, *FINAL)).state is BackendState.CANCELLED
        names = [p.name for p in (await b.resources()).partitions]
        assert "layerbot:debug" in names

    run(main())


# --- monitoring cost -----------------------------------------------------------------------


def test_a_poll_is_one_squeue_plus_one_sacct_only_for_ended_jobs(
        tmp_path: Path, instance: str) -> None:
    async def main() -> None:
        b = backend()
        ids = [await b.submit(job(tmp_path, instance, 20 + i, "true\n")) for i in range(5)]
        before = b.calls
        statuses = await b.poll(ids)
        assert b.calls - before == 1  # all held: squeue alone
        assert {s.state for s in statuses.values()} == {BackendState.PENDING}
        await b.release(ids[:1])
        await wait_for(b, ids[0], *FINAL)
        before = b.calls
        await b.poll(ids)
        assert b.calls - before == 2  # one ended: squeue + one sacct for it

    run(main())


# --- resources and doctor ------------------------------------------------------------------


def test_resources_list_partitions_from_sinfo() -> None:
    resources = run(backend().resources())
    by_name = {p.name: p for p in resources.partitions}
    assert {"debug", "build"} <= set(by_name)
    debug = by_name["debug"]
    assert debug.default and debug.cpus_total >= 1 and "zen2" in debug.features
    assert debug.nodes_idle + debug.nodes_allocated + debug.nodes_down >= 1
    assert debug.max_time == "1:00:00" and by_name["build"].max_time is None


def test_check_reports_commands_and_every_node_type() -> None:
    checks = run(backend().check())
    assert all(c.ok for c in checks), checks
    names = [c.name for c in checks]
    assert names[:4] == ["slurm commands", "slurmctld (squeue)", "accounting (sacct)",
                         "partitions"]
    assert "node type zen2" in names and "node type generic" in names
    bad = SlurmBackend(SlurmBackendConfig(), [
        NodeType(name="ghost", cpu_target="x86_64/generic", options={"partition": "nope"}),
        NodeType(name="avx", cpu_target="x86_64/generic",
                 options={"partition": "debug", "constraint": "avx512"})])
    failed = {c.name: c for c in run(bad.check()) if not c.ok}
    assert "nope" in failed["partitions"].detail
    assert "Invalid feature specification" in failed["node type avx"].detail
    missing = SlurmBackend(SlurmBackendConfig(squeue="/nonexistent/squeue"))
    first = run(missing.check())[0]
    assert not first.ok and "/nonexistent/squeue" in first.detail


# --- slurmctld down ------------------------------------------------------------------------


def test_slurmctld_killed_then_started_again(tmp_path: Path, instance: str,
                                             slurm: SlurmCluster) -> None:
    # With slurmctld down every Slurm command retries for ~9 s before it fails (measured),
    # so the calls that must fail run side by side.
    async def main() -> None:
        b = backend()
        submitted = time.time()
        held = await b.submit(job(tmp_path, instance, 30, "sleep 2\n"))
        # Killed before it saved its state, slurmctld would lose the job.
        await asyncio.to_thread(slurm.wait_saved, submitted)
        slurm.kill_ctld()
        impatient = SlurmBackend(SlurmBackendConfig(), unavailable_wait_seconds=0.5,
                                 job_user=JOB_USER)
        patient = SlurmBackend(SlurmBackendConfig(), unavailable_wait_seconds=120,
                               job_user=JOB_USER)
        try:
            waiting = asyncio.create_task(patient.submit(job(tmp_path, instance, 32, "true\n")))
            outcomes: tuple[Any, ...] = await asyncio.gather(
                b.poll([held]), b.resources(),
                impatient.submit(job(tmp_path, instance, 31, "true\n")),
                b.release([held]),  # deferred, not raised
                return_exceptions=True)
            polled, resources, refused, released = outcomes
            assert released is None
            assert isinstance(polled, BackendUnavailable), polled
            assert "Failed while looking for jobs" in str(polled)
            assert isinstance(resources, BackendUnavailable)
            assert isinstance(refused, BackendUnavailable)
            assert "Unable to contact slurm controller" in str(refused)
            assert not waiting.done()  # waits for slurmctld instead of failing the job
        finally:
            await asyncio.to_thread(slurm.start)
        late = await asyncio.wait_for(waiting, 60)
        # the deferred release went out with the first poll after the restart
        assert (await wait_for(b, held, *FINAL)).state is BackendState.COMPLETED
        await b.release([late])
        assert (await wait_for(b, late, *FINAL)).state is BackendState.COMPLETED

    run(main())
