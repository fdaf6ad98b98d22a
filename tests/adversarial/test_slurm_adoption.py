"""Slurm adoption by proof, not by name (issue 9, item 6), on the real Slurm of scripts/slurm.sh.

After a crash between ``sbatch`` and recording its id, the submitter asks Slurm whether the
job is already there, so it is never submitted twice. Before this fix the answer was any job
whose *name and comment* carried the tag, and anyone can choose those: another cluster user,
or a PR's job (which runs as the job user), could plant a held job under the tag of a coming
layerbot job, and the bot skipped its own submission and reported the planted job instead.

Each attack here plants such jobs for real with ``sbatch`` and then lets the real submitter
(real store, real git, real Slurm) handle the job. A planted job must never be adopted,
released or cancelled, and the bot's own job must run, as the job user, in a directory that
nobody could have named in advance.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from layerbot import clock
from layerbot.backends import slurm_parse as sp
from layerbot.backends.base import (
    BackendUnavailable,
    Check,
    JobStatus,
    Resources,
    SubmitRequest,
)
from layerbot.backends.slurm import SlurmBackend
from layerbot.build.identity import DEDICATED_USER, JobUser, lookup
from layerbot.build.workspace import Mirrors
from layerbot.config import Config, load
from layerbot.core.jobs import JobState
from layerbot.jobs.planner import BuildRequest, PlannedTarget, record_build
from layerbot.operations.agent_ledger import builtin_agent
from layerbot.store.db import Store
from layerbot.store.models import Job
from tests.adversarial.attacks import STEAL, assert_nothing_stolen
from tests.adversarial.conftest import Adversary
from tests.backends.conftest import SlurmCluster, discover
from tests.support.origin import Origin

pytestmark = [pytest.mark.slurm,
              pytest.mark.skipif(os.geteuid() != 0, reason="submits as other users (root)")]

OTHER_USER = "nobody"  # "another cluster user"


@pytest.fixture(scope="module")
def slurm() -> SlurmCluster:
    return discover()


@pytest.fixture
def instance(slurm: SlurmCluster) -> Iterator[str]:
    name = f"adopt{uuid.uuid4().hex[:6]}"
    yield name
    if slurm.ping():
        slurm.cancel_tagged(name)


@pytest.fixture
def job_user() -> JobUser:
    user = lookup(DEDICATED_USER)
    assert user is not None, "scripts/jobuser.sh creates the job user"
    return user


class CrashBeforeSbatch:
    """The first attempt dies after the job directory was made and recorded, before sbatch
    (slurmctld unreachable: the job stays queued, as after a crash at that point)."""

    name = "slurm"
    calls = 0
    job_user = None

    async def submit(self, request: SubmitRequest) -> str:
        raise BackendUnavailable("slurmctld went away")

    async def release(self, backend_ids: list[str]) -> None:
        return None

    async def find(self, job_id: int, instance: str, job_dir: Path) -> str | None:
        return None

    async def poll(self, backend_ids: list[str]) -> dict[str, JobStatus]:
        return {}

    async def cancel(self, backend_id: str) -> None:
        return None

    async def resources(self) -> Resources:
        return Resources("slurm", ())

    async def check(self) -> list[Check]:
        return []


def config_for(tmp_path: Path, instance: str) -> Config:
    return load(None, overrides={
        "instance": {"name": instance, "data_dir": str(tmp_path / "data")},
        "backend": {"kind": "slurm", "slurm": {"handover": "hold_release"}},
        "node_types": [{"name": "n", "cpu_target": "x86_64/generic",
                        "options": {"partition": "debug", "time": "00:10:00"}}]})


def queued_job(config: Config, origin: Origin) -> tuple[Store, int]:
    head = origin.git("rev-parse", "HEAD")
    store = Store(config.store_url)
    node, repo = config.node_types[0], config.repo_targets[0]
    request = BuildRequest(repo="o/r", pr=None, installation_id=None, head_sha=head,
                           base_ref="main", clone_url=str(origin.path), command="test",
                           requested_by="alice")
    with store.transaction() as s:
        _, (job,) = record_build(s, config, request,
                                 [PlannedTarget(node, repo, node.cpu_target, None, "x")],
                                 clock.now())
        return store, job.id


def the_job(store: Store, job_id: int) -> Job:
    with store.read() as s:
        job = s.get(Job, job_id)
        assert job is not None
        s.expunge(job)
        return job


def plant(slurm: SlurmCluster, user: str, instance: str, job_id: int, work_dir: Path) -> str:
    """As ``user``: a held job carrying the tag of layerbot's job ``job_id``."""
    out = subprocess.run(
        ["runuser", "-u", user, "--", "env", f"SLURM_CONF={slurm.conf}", "sbatch",
         "--parsable", "--hold", f"--job-name={sp.job_name(instance, job_id)}",
         f"--comment={sp.job_tag(instance, job_id)}", f"--chdir={work_dir}",
         "--output=/dev/null", "--partition=debug", "--wrap", "echo planted"],
        cwd="/", capture_output=True, text=True, check=True)
    return out.stdout.strip().split(";")[0]


def test_planted_jobs_are_never_adopted(tmp_path: Path, instance: str, slurm: SlurmCluster,
                                        job_user: JobUser) -> None:
    config = config_for(tmp_path, instance)
    store, job_id = queued_job(config, Origin(tmp_path / "origin", "o/r"))
    mirrors = Mirrors(config.instance.data_dir / "mirrors")

    # The first attempt makes and records the job directory, then "crashes".
    asyncio.run(builtin_agent(config, store, CrashBeforeSbatch(), mirrors).submit_ready())
    first = the_job(store, job_id)
    assert first.state == JobState.QUEUED.value and first.job_dir
    recorded = Path(first.job_dir)

    # Another cluster user plants a job with our tag *in our very directory*, and a job of
    # the job user (a PR's job) plants one in a directory of its own.
    foreign = plant(slurm, OTHER_USER, instance, job_id, recorded)
    own_dir = tmp_path / "pr-job-dir"
    own_dir.mkdir(mode=0o777)
    same_user = plant(slurm, job_user.name, instance, job_id, own_dir)

    backend = SlurmBackend(config.backend.slurm, config.node_types, job_user=job_user,
                           unavailable_wait_seconds=5)
    asyncio.run(builtin_agent(config, store, backend, mirrors).submit_ready())

    job = the_job(store, job_id)
    assert job.state == JobState.SUBMITTED.value, job.reason
    sid = sp.parse_backend_id(job.backend_id or "")
    assert sid is not None and sid.job not in (foreign, same_user), "a planted job was adopted"
    assert job.job_dir and Path(job.job_dir) != recorded  # a fresh directory for the new try
    ours = slurm.job(sid.job)
    assert ours["user_name"] == job_user.name and ours["current_working_directory"] == job.job_dir
    for planted in (foreign, same_user):  # left exactly as they were: held, never released
        info = slurm.job(planted)
        assert info["job_state"] == "PENDING" and info["state_reason"] == "JobHeldUser", info


# --- the same attack from a PR's own job, against a real `layerbot serve` on Slurm --------

E2E_INSTANCE = f"adv{uuid.uuid4().hex[:6]}"

#: Runs as the job user on Slurm. It plants held jobs under the tags of the next layerbot
#: jobs: in its own directory, and in the directories the bot used to name predictably.
PLANT = r"""#!/usr/bin/env bash
id -un > {marker_dir}/slurm-job-user
me=$(sed -n 's/^ *"job_id": *\([0-9]*\).*/\1/p' cfg/job.json | head -1)
for next in $((me + 1)) $((me + 2)) $((me + 3)); do
  for dir in "$PWD" "{data_dir}/jobs/octo-org/stack/pr-9000/job-$next" \
             "{data_dir}/jobs/octo-org/stack/pr-9001/job-$next"; do
    SLURM_CONF={slurm_conf} /usr/bin/sbatch --parsable --hold --partition=debug \
      --job-name=layerbot-{instance}-$next --comment=layerbot:{instance}:$next \
      --chdir="$dir" --output=/dev/null --wrap 'echo planted' >> {marker_dir}/planted
  done
done
echo '{"status": "success", "summary": "planted"}' > result.json
"""


@pytest.fixture(scope="module")
def adversary_config(slurm: SlurmCluster) -> dict[str, object]:
    """This module's bot submits to the real Slurm (discover() exported SLURM_CONF)."""
    return {"instance": {"name": E2E_INSTANCE},
            "backend": {"kind": "slurm", "poll_seconds": 0.3,
                        "slurm": {"handover": "hold_release", "defaults": {"partition": "debug"}}}}


def test_a_prs_job_cannot_plant_the_next_jobs(adversary: Adversary, slurm: SlurmCluster) -> None:
    adversary.snapshot()
    script = PLANT.replace("{instance}", E2E_INSTANCE).replace("{slurm_conf}", slurm.conf)
    try:
        reply = adversary.attack(301, script, timeout=120)
        assert "planted" in reply.body
        markers = Path(adversary.places()["marker_dir"])
        assert (markers / "slurm-job-user").read_text().strip() == DEDICATED_USER
        planted = (markers / "planted").read_text().split()
        assert len(planted) == 9, "the job could not plant its jobs"
        # The next build's job carries one of the planted tags: it must run itself (the
        # normal build of assert_bot_intact reports its own result), and the planted
        # jobs stay held, never adopted or released.
        adversary.assert_bot_intact()
        recorded = {(sp.parse_backend_id(r["backend_id"]) or sp.SlurmId("")).job
                    for r in adversary.jobs(adversary.next_normal)}
        assert recorded and not recorded & set(planted), "a planted job was adopted"
        for job in planted:
            assert slurm.job(job)["job_state"] == "PENDING", "a planted job was released"
    finally:
        slurm.cancel_tagged(E2E_INSTANCE)


def test_a_job_on_slurm_cannot_read_or_write_the_bots_secrets(adversary: Adversary) -> None:
    adversary.snapshot()
    adversary.attack(302, STEAL, timeout=120)
    assert_nothing_stolen(adversary)
    adversary.assert_bot_intact()
