"""One control plane (two replicas on PostgreSQL) and three agents as separate processes:
two on the local executor with different node types, one on the real Slurm.

Every test reads what really happened from outside the bot: the job scripts append a line
to a shared file when they start and when they end (so a job that ran twice, or ran on two
agents, shows), the fake GitHub records every request, the database holds the leases.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from layerbot.agent.client import ControlPlane, Refused
from layerbot.core.protocol import (
    PREFIX,
    PROTOCOL_HEADER,
    Capabilities,
    RegisterRequest,
    Report,
)
from tests.support.databases import fresh_database
from tests.support.fleet import NAME, OWNER, AgentSpec, Fleet, start_fleet, wait

pytestmark = [pytest.mark.slurm, pytest.mark.postgres, pytest.mark.slow]

BUILD = """#!/usr/bin/env bash
echo "start $PWD $AGENT_NAME" >> "$RUNS_FILE"
echo "building on $AGENT_NAME"
sleep "${SLEEP:-1}"
echo "end $PWD $AGENT_NAME" >> "$RUNS_FILE"
echo '{"status": "success", "summary": "built by '"$AGENT_NAME"'", "artifacts": []}' > result.json
"""

AGENTS = [
    # alpha goes first where it can (priority 1): zen2 is built by alpha while it lives.
    AgentSpec("alpha", {"kind": "local", "local": {"max_concurrent": 4}},
              [{"name": "zen2", "cpu_target": "x86_64/amd/zen2"},
               {"name": "generic", "cpu_target": "x86_64/generic"}], priority=1),
    AgentSpec("beta", {"kind": "local", "local": {"max_concurrent": 4}},
              [{"name": "zen2", "cpu_target": "x86_64/amd/zen2"},
               {"name": "haswell", "cpu_target": "x86_64/intel/haswell"}]),
    AgentSpec("gamma", {"kind": "slurm"},
              [{"name": "zen4", "cpu_target": "x86_64/amd/zen4",
                "options": {"partition": "debug", "memory": "200M"}}]),
]
JOB_ID = re.compile(r"/job-(\d+)-[0-9a-f]+ ")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, pg_admin_url: str) -> Iterator[Fleet]:
    with fresh_database(pg_admin_url, "fleet") as url, start_fleet(
            tmp_path_factory.mktemp("fleet"), url, AGENTS,
            extra={"build": {"allowed_exportvars": ["SLEEP"]},
                   "reporting": {"check_runs": "final"}}) as f:
        yield f
        f.fake.assert_no_violations()


def runs_of(fleet: Fleet, job_id: int) -> list[str]:
    return [ln for ln in fleet.runs() if (m := JOB_ID.search(ln + " ")) and
            int(m.group(1)) == job_id]


def open_pr(fleet: Fleet, number: int) -> str:
    return fleet.pr(number, files={"bot/build.sh": BUILD})


def job_states(fleet: Fleet, number: int) -> dict[int, str]:
    return {j["id"]: j["state"] for j in fleet.jobs(number)}


def token_of(fleet: Fleet, agent: str) -> str:
    return (fleet.agents[agent].config.parent / "token").read_text().strip()


def test_each_target_of_a_fleet_wide_build_is_built_exactly_once(fleet: Fleet) -> None:
    open_pr(fleet, 1)
    fleet.comment(1, "bot: build")
    fleet.fake.wait_for(lambda: fleet.replies(1), timeout=30, message="no reply")
    assert fleet.jobs(1), [c.body for c in fleet.replies(1)]
    reply = fleet.build_reply(1, timeout=120)
    jobs = fleet.jobs(1)
    assert sorted(j["node_type"] for j in jobs) == ["generic", "haswell", "zen2", "zen4"]
    assert {j["state"] for j in jobs} == {"succeeded"}, fleet.logs()
    built_by = {j["node_type"]: j["agent"] for j in jobs}
    assert built_by == {"zen2": "alpha", "generic": "alpha", "haswell": "beta",
                        "zen4": "gamma"}
    for job in jobs:  # each job's script ran once, start and end, on one agent
        lines = runs_of(fleet, job["id"])
        assert [ln.split()[0] for ln in lines] == ["start", "end"], lines
        assert {ln.split()[-1] for ln in lines} == {job["agent"]}
    # One reply for the whole fleet, naming each job's cluster.
    assert len(fleet.replies(1)) == 1
    for cluster in ("cluster-alpha", "cluster-beta", "cluster-gamma"):
        assert cluster in reply.body


def test_an_agent_token_sees_and_reports_only_its_own_jobs(fleet: Fleet) -> None:
    jobs = fleet.jobs(1)
    betas = [j for j in jobs if j["agent"] == "beta"]
    assert betas
    url = fleet.replicas[-1].url + PREFIX
    headers = {"Authorization": f"Bearer {token_of(fleet, 'alpha')}", PROTOCOL_HEADER: "1",
               "Content-Type": "application/json"}
    theirs = betas[0]
    got = httpx.get(f"{url}/jobs/{theirs['id']}", headers=headers)
    assert got.status_code == 404 and "not leased to agent alpha" in got.text
    report = Report(seq=99, lease_id=theirs["lease_id"], kind="failed", reason="stolen")
    sent = httpx.post(f"{url}/jobs/{theirs['id']}/reports", headers=headers,
                      content=report.model_dump_json())
    assert sent.status_code == 404
    assert fleet.jobs(1) == jobs  # nothing changed
    anonymous = httpx.post(f"{url}/heartbeat", headers={PROTOCOL_HEADER: "1"},
                           json={"free_slots": 1})
    assert anonymous.status_code == 401
    forged = httpx.post(f"{url}/heartbeat", json={"free_slots": 1},
                        headers={"Authorization": "Bearer lba_forged", PROTOCOL_HEADER: "1"})
    assert forged.status_code == 401


def test_the_protocol_is_in_the_control_planes_openapi_description(fleet: Fleet) -> None:
    spec = httpx.get(fleet.replicas[0].url + "/api/openapi.json").json()
    paths = {p for p in spec["paths"] if p.startswith(PREFIX)}
    assert {f"{PREFIX}/{p}" for p in ("register", "heartbeat", "claim", "jobs/{job_id}",
                                       "jobs/{job_id}/reports")} <= paths
    report = spec["components"]["schemas"]["Report"]
    assert set(report["properties"]) == set(Report.model_fields)


def test_an_agent_of_an_older_protocol_is_refused_clearly(fleet: Fleet) -> None:
    old = ControlPlane(fleet.replicas[0].url, token_of(fleet, "beta"), protocol=0)
    with pytest.raises(Refused) as refused:
        old.register(RegisterRequest(protocol=0, version="0.0.1", cluster="old",
                                     capabilities=Capabilities(backend="local",
                                                               concurrency=1)))
    message = str(refused.value)
    assert "426" in message and "agent protocol 0 is not supported" in message
    assert "speaks agent protocol 1" in message


def test_inst_names_an_agent_and_a_target_nobody_builds_is_explained(fleet: Fleet) -> None:
    open_pr(fleet, 5)
    # zen2 goes to alpha by priority; inst: names beta's cluster, so beta builds it.
    fleet.comment(5, "bot: build for:arch=x86_64/amd/zen2 inst:cluster-beta")
    fleet.build_reply(5, timeout=60)
    (job,) = fleet.jobs(5)
    assert job["agent"] == "beta" and job["agent_filter"] == "cluster-beta"
    fleet.comment(5, "bot: build for:arch=aarch64/a64fx")
    fleet.comment(5, "bot: show_config")

    def answers() -> list[str]:
        bodies = [c.body for c in fleet.replies(5)]
        nothing = [b for b in bodies if "has nothing to build for" in b]
        config = [b for b in bodies if "(control plane)" in b]
        return nothing + config if nothing and config else []
    nothing, config = fleet.fake.wait_for(answers, timeout=30, message="no answers")
    for body in (nothing, config):  # who builds what, and who is alive, fleet-wide
        assert "| `gamma` | `cluster-gamma` | connected | `zen4` | `x86_64/amd/zen4` |" in body
        assert "| `beta` | `cluster-beta` | connected | `haswell` |" in body
    assert len(fleet.jobs(5)) == 1


def test_a_cancel_reaches_the_agent_that_runs_the_job(fleet: Fleet) -> None:
    open_pr(fleet, 6)
    fleet.comment(6, "bot: build for:arch=x86_64/intel/haswell exportvariable:SLEEP=30")
    running = _wait_state(fleet, 6, "running")
    assert running["agent"] == "beta"
    # While it runs, the control center shows the tail of its output, sent by the agent.
    log = f"{fleet.replicas[-1].url}/api/jobs/{running['id']}/log"
    wait(lambda: "building on beta" in httpx.get(log).text, 20, "no live log tail")
    fleet.comment(6, "bot: cancel")
    cancelled = _wait_state(fleet, 6, "cancelled", timeout=30)
    assert cancelled["id"] == running["id"]
    time.sleep(1)
    assert [ln.split()[0] for ln in runs_of(fleet, running["id"])] == ["start"]


def test_an_agent_cut_off_shorter_than_its_lease_keeps_its_job(fleet: Fleet) -> None:
    open_pr(fleet, 7)
    fleet.comment(7, "bot: build for:arch=x86_64/intel/haswell exportvariable:SLEEP=4")
    running = _wait_state(fleet, 7, "running")
    beta = fleet.agents["beta"]
    beta.pause()
    time.sleep(2)  # under the lease: nothing is given away
    beta.unpause()
    done = _wait_state(fleet, 7, "succeeded", timeout=60)
    assert done["id"] == running["id"] and done["agent"] == "beta"
    assert [ln.split()[0] for ln in runs_of(fleet, done["id"])] == ["start", "end"]


def _wait_state(fleet: Fleet, number: int, state: str, timeout: float = 60) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        jobs = fleet.jobs(number)
        return next((dict(j) for j in jobs if j["state"] == state), None)
    result: dict[str, Any] = wait(found, timeout,
                                  f"PR {number}: no job {state}: {job_states(fleet, number)}"
                                  f"\n{fleet.logs()}")
    return result


def test_a_killed_agents_job_becomes_lost_and_a_rebuild_runs_elsewhere(fleet: Fleet) -> None:
    open_pr(fleet, 2)
    fleet.comment(2, "bot: build for:arch=x86_64/amd/zen2 exportvariable:SLEEP=25")
    running = _wait_state(fleet, 2, "running")
    assert running["agent"] == "alpha"
    fleet.agents["alpha"].kill()
    lost = _wait_state(fleet, 2, "lost", timeout=30)
    assert "agent alpha stopped answering" in lost["reason"]
    fleet.fake.wait_for(lambda: any("lost" in c.body for c in fleet.replies(2)), timeout=20,
                        message="the lost job was not reported on the PR")
    fleet.comment(2, "bot: rebuild failed")
    redone = _wait_state(fleet, 2, "succeeded", timeout=60)
    assert redone["agent"] == "beta" and redone["redo_of"] == lost["id"]
    # alpha comes back: the server says its job is gone; it is stopped, never finished.
    fleet.agents["alpha"].start()
    wait(lambda: not (fleet.agents["alpha"].config.parent / "data" / "agent" / "jobs"
                      / f"{lost['id']}.json").exists(), 30,
         f"alpha kept the lost job:\n{fleet.agents['alpha'].log()[-3000:]}")
    time.sleep(1)
    assert [ln.split()[0] for ln in runs_of(fleet, lost["id"])] == ["start"]
    assert job_states(fleet, 2)[lost["id"]] == "lost"


def test_an_agent_cut_off_longer_than_its_lease_runs_nothing_twice(fleet: Fleet) -> None:
    open_pr(fleet, 3)
    fleet.comment(3, "bot: build for:arch=x86_64/generic exportvariable:SLEEP=20")
    running = _wait_state(fleet, 3, "running")
    assert running["agent"] == "alpha"
    alpha = fleet.agents["alpha"]
    alpha.pause()  # cut off: no heartbeat, no reports
    try:
        lost = _wait_state(fleet, 3, "lost", timeout=30)
    finally:
        alpha.unpause()
    assert lost["id"] == running["id"]
    # Back: the job is not the agent's any more; it is cancelled there, not finished.
    wait(lambda: not (alpha.config.parent / "data" / "agent" / "jobs"
                      / f"{lost['id']}.json").exists(), 30,
         f"alpha kept the job:\n{alpha.log()[-3000:]}")
    time.sleep(1)
    assert [ln.split()[0] for ln in runs_of(fleet, lost["id"])] == ["start"]
    assert job_states(fleet, 3) == {lost["id"]: "lost"}


def test_a_replica_killed_while_jobs_run_leaves_the_other_to_carry_on(fleet: Fleet) -> None:
    open_pr(fleet, 4)
    fleet.comment(4, "bot: build exportvariable:SLEEP=6")
    wait(lambda: len([j for j in fleet.jobs(4) if j["state"] == "running"]) >= 2, 60,
         f"jobs did not start: {job_states(fleet, 4)}\n{fleet.logs()}")
    fleet.replicas[0].kill()
    other = fleet.replicas[1]
    fleet.bot = other
    reply = fleet.build_reply(4, timeout=120)
    assert set(job_states(fleet, 4).values()) == {"succeeded"}, fleet.logs()
    # Every report reached GitHub once: one reply comment, one check run per job.
    assert len(fleet.replies(4)) == 1
    created = [r for r in fleet.fake.calls("issues/create-comment")
               if r.path.endswith("/issues/4/comments")]
    assert len(created) == 1, [r.path for r in created]
    names = Counter(c.external_id for c in fleet.fake.check_runs(OWNER, NAME)
                    if c.external_id in {str(j["id"]) for j in fleet.jobs(4)})
    assert names and set(names.values()) == {1}, names
    assert "succeeded" in reply.body
    for job in fleet.jobs(4):
        assert [ln.split()[0] for ln in runs_of(fleet, job["id"])] == ["start", "end"]

