"""Job dependencies (``SubmitRequest.after_ok``) on the real Slurm of scripts/slurm.sh (no
mocks): afterok with --kill-on-invalid-dep, combined with the hold/release handover.

Each job writes a file when it runs, so a job that must never run is checked by the
absence of its file; start and end times come from the backend's own statuses.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from layerbot.backends import slurm_parse as sp
from layerbot.backends.base import BackendState, JobStatus, SubmitError, SubmitRequest
from layerbot.backends.slurm import SlurmBackend
from tests.backends.conftest import SlurmCluster
from tests.backends.test_slurm import FINAL, backend, instance, job, run, wait_for

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm")]
__all__ = ["instance"]  # the fixture: tags each test's jobs and cancels what is left

RECORD = "touch ran\n"


def needing(request: SubmitRequest, *needs: str) -> SubmitRequest:
    return dataclasses.replace(request, after_ok=needs)


def slurm_id(backend_id: str) -> str:
    sid = sp.parse_backend_id(backend_id)
    assert sid is not None
    return sid.job


def started_after(later: JobStatus, earlier: JobStatus) -> bool:
    assert later.started_at is not None and earlier.ended_at is not None
    return later.started_at >= earlier.ended_at  # whole seconds, as Slurm keeps them


def test_sbatch_gets_afterok_and_kill_on_invalid_dep_with_the_hold(
        tmp_path: Path, instance: str) -> None:
    b = backend()
    req = needing(job(tmp_path, instance, 1, RECORD), "101/7", "102;other/8", "101/7")
    args, _ = b.sbatch_command(req)
    assert "--hold" in args
    assert "--dependency=afterok:101:102" in args and "--kill-on-invalid-dep=yes" in args
    plain, _ = b.sbatch_command(job(tmp_path, instance, 2, RECORD))
    assert not any(a.startswith(("--dependency", "--kill-on-invalid-dep")) for a in plain)
    with pytest.raises(sp.OptionError, match="not a Slurm job"):
        b.sbatch_command(needing(job(tmp_path, instance, 3, RECORD), "/some/local/dir"))


def test_batch_options_cannot_set_or_override_the_dependency(
        tmp_path: Path, instance: str) -> None:
    async def main() -> None:
        b = backend()
        for option in ("dependency", "kill-on-invalid-dep", "Dependency"):
            with pytest.raises(SubmitError, match="set by layerbot"):
                await b.submit(job(tmp_path / option, instance, 4, RECORD,
                                   options={"partition": "debug", option: "afterany:1"}))
        assert b.calls == 0  # refused before sbatch
    run(main())
    with pytest.raises(sp.OptionError, match="may not be overridden"):
        sp.merge_options({}, {}, {"dependency": "afterany:1"}, overridable=["time"])


def test_a_dependent_released_first_still_waits_for_its_dependency(
        tmp_path: Path, instance: str, slurm: SlurmCluster) -> None:
    first = job(tmp_path, instance, 10, "sleep 3\n")
    second = job(tmp_path, instance, 11, RECORD)

    async def main() -> tuple[JobStatus, JobStatus]:
        b = backend()
        a = await b.submit(first)
        dependent = await b.submit(needing(second, a))
        assert slurm.job(dependent)["dependency"] == f"afterok:{slurm_id(a)}(unfulfilled)"
        await b.release([dependent])  # before a is even released
        waiting = (await b.poll([dependent]))[dependent]
        assert waiting.state is BackendState.PENDING and waiting.reason == "Dependency"
        await b.release([a])
        done_a = await wait_for(b, a, *FINAL)
        return done_a, await wait_for(b, dependent, *FINAL)

    done_a, done = run(main())
    assert done_a.state is BackendState.COMPLETED and done.state is BackendState.COMPLETED
    assert started_after(done, done_a)
    assert (second.job_dir / "ran").exists()


def test_a_failed_dependency_cancels_the_dependent_which_never_runs(
        tmp_path: Path, instance: str) -> None:
    first = job(tmp_path, instance, 20, "exit 3\n")
    second = job(tmp_path, instance, 21, RECORD)

    async def main() -> tuple[str, JobStatus]:
        b = backend()
        a = await b.submit(first)
        dependent = await b.submit(needing(second, a))
        await b.release([a, dependent])
        assert (await wait_for(b, a, *FINAL)).state is BackendState.FAILED
        return a, await wait_for(b, dependent, *FINAL)

    a, done = run(main())
    assert done.state is BackendState.CANCELLED
    assert done.reason == f"not started: job {a} it needs did not succeed (FAILED)"
    assert done.elapsed_seconds in (None, 0.0)
    assert not (second.job_dir / "ran").exists()


def test_a_diamond_runs_each_job_after_all_it_needs(tmp_path: Path, instance: str) -> None:
    reqs = {name: job(tmp_path, instance, 30 + i, f"sleep 1; {RECORD}")
            for i, name in enumerate("abcd")}

    async def main() -> dict[str, JobStatus]:
        b = backend()
        a = await b.submit(reqs["a"])
        bb = await b.submit(needing(reqs["b"], a))
        c = await b.submit(needing(reqs["c"], a))
        d = await b.submit(needing(reqs["d"], bb, c))
        ids = {"a": a, "b": bb, "c": c, "d": d}
        await b.release(list(ids.values()))
        await wait_for(b, d, *FINAL, timeout=120)
        statuses = await b.poll(list(ids.values()))
        return {name: statuses[backend_id] for name, backend_id in ids.items()}

    done = run(main())
    assert {s.state for s in done.values()} == {BackendState.COMPLETED}, done
    assert started_after(done["b"], done["a"]) and started_after(done["c"], done["a"])
    assert started_after(done["d"], done["b"]) and started_after(done["d"], done["c"])


def test_a_dependency_slurm_no_longer_knows_is_refused(tmp_path: Path, instance: str) -> None:
    """Slurm takes an id it does not know (purged after MinJobAge) as satisfied and would
    run the job at once (measured); the backend refuses unless accounting says the job
    completed."""

    async def main() -> None:
        b: SlurmBackend = backend()
        with pytest.raises(SubmitError) as refused:
            await b.submit(needing(job(tmp_path, instance, 40, RECORD), "99999999/5"))
        assert str(refused.value) == (
            "not started: job 99999999/5 it needs did not succeed (UNKNOWN)")

    run(main())
