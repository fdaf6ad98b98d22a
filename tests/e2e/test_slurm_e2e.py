"""From a signed webhook to finished jobs on the real Slurm of scripts/slurm.sh.

A real `layerbot serve` with ``backend.kind = "slurm"``, three node types over the
partitions debug and build (plus one naming a partition that does not exist), a fake
GitHub and real git. Each robustness case of issue 4 is caused for real: slurmctld
SIGKILLed by its pid and started again, ``scancel`` from outside, a time limit of one
minute, a memory limit exceeded, a nonexistent partition, the bot killed while jobs run.

The time-limit case takes 60-90 s in Slurm (its time limits are checked every 30 s), so
its command is sent when the bot starts and its reply is checked by the last test.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.backends.conftest import SlurmCluster, discover
from tests.support.botproc import BotProcess, free_port, write_config
from tests.support.e2e import Session
from tests.support.fakegithub import FakeGitHub, generate_app_key
from tests.support.origin import Origin
from tests.support.webhooks import (
    DEFAULT_APP_ID,
    DEFAULT_INSTALLATION_ID,
    DEFAULT_REPO,
)

pytestmark = pytest.mark.slurm

OWNER, NAME = DEFAULT_REPO.split("/")
TIMEOUT_PR = 20

SLOW_BUILD = """#!/usr/bin/env bash
echo started
sleep ${SLEEP:-30}
echo '{"status": "success", "summary": "slow build done", "artifacts": []}' > result.json
"""

# 500 MB resident, on a node type that asks for 200M: killed by Slurm's memory check.
HOG_BUILD = """#!/usr/bin/env bash
/usr/bin/python3 -c 'import time; x = b"x" * (500 << 20); time.sleep(10)'
echo '{"status": "success", "summary": "should not get here", "artifacts": []}' > result.json
"""

NODE_TYPES = [
    {"name": "zen2", "cpu_target": "x86_64/amd/zen2",
     "options": {"partition": "debug", "constraint": "zen2", "memory": "300M"}},
    {"name": "generic", "cpu_target": "x86_64/generic",
     "options": {"partition": "build", "memory": "300M"}},
    {"name": "haswell", "cpu_target": "x86_64/intel/haswell",
     "options": {"partition": "build", "memory": "200M"}},
    {"name": "ghost", "cpu_target": "aarch64/neoverse_v1",
     "options": {"partition": "nope"}},
]


class Env(Session):
    def __init__(self, fake: FakeGitHub, origin: Origin, bot: BotProcess, slurm: SlurmCluster,
                 instance: str) -> None:
        super().__init__(fake, origin, bot)
        self.slurm = slurm
        self.instance = instance

    def build_reply(self, number: int, timeout: float = 90, done: bool = True) -> Any:
        return super().build_reply(number, timeout, done)


def slurm_id(backend_id: str) -> str:
    return backend_id.split("/")[0].split(";")[0]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    slurm = discover()
    tmp = tmp_path_factory.mktemp("slurm-e2e")
    instance = f"e2e-{uuid.uuid4().hex[:6]}"
    private, _ = generate_app_key()
    fake = FakeGitHub(DEFAULT_APP_ID, private)
    fake.add_installation(DEFAULT_INSTALLATION_ID, OWNER)
    fake.set_permission(OWNER, NAME, "alice", "write")
    fake.start()
    origin = Origin(tmp / "origin", DEFAULT_REPO)
    port = free_port()
    config = write_config(tmp / "bot", api_url=fake.url, app_id=DEFAULT_APP_ID,
                          private_key_pem=private, port=port, instance=instance, extra={
                              "build": {"clone_url": str(tmp / "origin" / "{repo}"),
                                        "allowed_exportvars": ["SLEEP"],
                                        "time_limit_minutes": 1},
                              "backend": {"kind": "slurm", "poll_seconds": 0.3,
                                          "slurm": {"handover": "hold_release",
                                                    "defaults": {"qos": "normal"},
                                                    "overridable": ["time"]}},
                              "reporting": {"min_edit_interval_seconds": 0},
                              "node_types": NODE_TYPES,
                              "repo_targets": [{"id": "eessi-2023.06",
                                                "name": "software.eessi.io",
                                                "version": "2023.06"}]})
    bot = BotProcess(config, port, env={"SLURM_CONF": slurm.conf})
    bot.start()
    e = Env(fake, origin, bot, slurm, instance)
    try:
        # The slowest case first, so that it runs while the others do (see the docstring).
        e.pr(TIMEOUT_PR, files={"bot/build.sh": SLOW_BUILD})
        e.comment(TIMEOUT_PR, "bot: build for:arch=x86_64/generic exportvariable:SLEEP=300")
        yield e
    finally:
        bot.stop()
        fake.stop()
        if slurm.ping():
            slurm.cancel_tagged(instance)
    fake.assert_no_violations()


def test_a_build_runs_on_three_node_types_over_two_partitions(env: Env) -> None:
    head = env.pr(1)
    env.comment(1, "bot: build for:arch=x86_64/.*")
    reply = env.build_reply(1)
    assert "3/3 done, 3 succeeded" in reply.body, reply.body
    jobs = env.jobs(1)
    for target in ("x86_64/amd/zen2", "x86_64/generic", "x86_64/intel/haswell"):
        assert f"`{target}`" in reply.body
    for j in jobs:  # the PR shows Slurm's job ids
        assert f"`{j['backend_id']}`" in reply.body
    slurm_jobs = {str(s["job_id"]): s for s in env.slurm.tagged(env.instance)}
    seen = {slurm_jobs[slurm_id(j["backend_id"])]["partition"] for j in jobs}
    assert seen == {"debug", "build"}
    for j in jobs:
        info = slurm_jobs[slurm_id(j["backend_id"])]
        assert info["comment"] == f"layerbot:{env.instance}:{j['id']}"
        assert info["name"] == f"layerbot-{env.instance}-{j['id']}"
        assert j["cpus"] == 1 and j["node"] and j["elapsed_seconds"] is not None
        assert j["core_hours"] is not None and j["exit_code"] == 0
    runs = [r for r in env.fake.check_runs(OWNER, NAME) if r.head_sha == head]
    env.fake.wait_for(lambda: all(r.conclusion == "success" for r in runs) and len(runs) == 3,
                      timeout=30)


def test_an_sbatch_refusal_is_shown_with_slurms_message(env: Env) -> None:
    env.pr(2)
    env.comment(2, "bot: build for:arch=aarch64/neoverse_v1")
    reply = env.build_reply(2)
    assert "1/1 done, 0 succeeded" in reply.body
    assert "slurm refused the job" in reply.body
    assert "Invalid partition name specified" in reply.body


def test_a_command_may_set_the_options_the_site_allows(env: Env) -> None:
    env.pr(9)
    env.comment(9, "bot: build for:arch=x86_64/amd/zen2 batch:time=00:07:00")
    reply = env.build_reply(9)
    assert "1/1 done, 1 succeeded" in reply.body, reply.body
    (job,) = env.jobs(9)
    tagged = {str(s["job_id"]): s for s in env.slurm.tagged(env.instance)}
    info = tagged[slurm_id(job["backend_id"])]
    assert info["time_limit"] == 7  # minutes: the command's value, not the node type's
    env.comment(9, "bot: build for:arch=x86_64/amd/zen2 batch:partition=debug")
    refusal = env.fake.wait_for(lambda: next((c for c in env.replies(9)
                                              if "may not be set" in c.body), None), timeout=30)
    assert "`partition`" in refusal.body and "`time`" in refusal.body


def test_show_config_lists_the_slurm_partitions(env: Env) -> None:
    env.pr(8)
    env.comment(8, "bot: show_config")
    reply: Any = env.fake.wait_for(lambda: next(iter(env.replies(8)), None), timeout=30)
    assert "(slurm backend)" in reply.body and "**Partitions**" in reply.body
    assert "| `debug` (default) | up |" in reply.body and "| `build` | up |" in reply.body
    assert "zen2" in reply.body


def test_a_job_cancelled_from_outside_is_reported_cancelled(env: Env) -> None:
    env.pr(3, files={"bot/build.sh": SLOW_BUILD})
    env.comment(3, "bot: build for:arch=x86_64/amd/zen2 exportvariable:SLEEP=120")
    job = env.wait_jobs(3, "running", 1)[0]
    env.slurm.run("scancel", slurm_id(job["backend_id"]))
    reply = env.build_reply(3)
    assert "cancelled" in reply.body and "cancelled in the batch system" in reply.body
    assert "by root" in reply.body


def test_a_job_over_its_memory_limit_fails_with_out_of_memory(env: Env) -> None:
    env.pr(4, files={"bot/build.sh": HOG_BUILD})
    env.comment(4, "bot: build for:arch=x86_64/intel/haswell")
    reply = env.build_reply(4)
    assert "failed" in reply.body and "out of memory" in reply.body, reply.body
    job = env.jobs(4)[0]
    assert job["max_rss_bytes"] and job["max_rss_bytes"] > 200 << 20


def test_the_bot_killed_while_slurm_jobs_run_picks_them_up(env: Env) -> None:
    env.pr(5, files={"bot/build.sh": SLOW_BUILD})
    env.comment(5, "bot: build for:arch=x86_64/(amd/zen2|generic) exportvariable:SLEEP=4")
    # One of the two CPUs is taken by the time-limit job: one runs, one waits in Slurm.
    env.fake.wait_for(lambda: {j["state"] for j in env.jobs(5)} == {"running", "submitted"}
                      or {j["state"] for j in env.jobs(5)} == {"running"}, timeout=60)
    env.bot.kill()
    time.sleep(0.5)
    env.bot.start()
    reply = env.build_reply(5)
    assert "2/2 done, 2 succeeded" in reply.body


def test_slurmctld_down_then_back_everything_resumes(env: Env) -> None:
    env.pr(6, files={"bot/build.sh": SLOW_BUILD})
    env.comment(6, "bot: build for:arch=x86_64/amd/zen2 exportvariable:SLEEP=8")
    job = env.wait_jobs(6, "running", 1, timeout=90)[0]
    env.pr(7)
    # Killed before it saved its state, slurmctld would lose the job (docs/slurm.md §6).
    env.slurm.wait_saved(env.slurm.job(job["backend_id"])["start_time"])
    env.slurm.kill_ctld()
    down = time.monotonic()
    try:
        env.comment(7, "bot: build for:arch=x86_64/generic")  # 202 while slurmctld is down
        assert httpx.get(env.bot.url + "/healthz", timeout=5).status_code == 200
        # Slurm commands retry for ~9 s before they fail: stay down longer than that, so
        # the reconciler really gets its BackendUnavailable.
        env.fake.wait_for(lambda: "backend unavailable" in env.bot.log(), timeout=30)
        assert time.monotonic() - down > 8
        assert env.jobs(6)[0]["state"] == "running"  # kept its state, not "lost"
        assert env.jobs(7)[0]["state"] == "queued"  # waits for slurmctld
    finally:
        env.slurm.start()
    assert "1/1 done, 1 succeeded" in env.build_reply(6, timeout=120).body
    assert "1/1 done, 1 succeeded" in env.build_reply(7, timeout=120).body
    assert env.jobs(6)[0]["backend_id"] == job["backend_id"]


def test_a_job_over_its_time_limit_is_reported_timed_out(env: Env) -> None:
    reply = env.build_reply(TIMEOUT_PR, timeout=150)
    assert "timed_out" in reply.body and "hit its time limit" in reply.body, reply.body
    job = env.jobs(TIMEOUT_PR)[0]
    assert job["state"] == "timed_out" and job["elapsed_seconds"] >= 60
